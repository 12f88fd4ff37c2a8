"""RadFact protocol, its offline approximation, and the SynthCXR oracle (saerad.metrics.radfact / .oracle)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from saerad.llm import Completion, Prompt, make_client
from saerad.metrics.oracle import (
    SentenceFacts,
    compare_to_oracle,
    oracle_radfact,
    study_truth,
)
from saerad.metrics.radfact import (
    entailment_prompt,
    make_offline_radfact_client,
    normalise_text,
    offline_radfact_responder,
    parse_entailment,
    parse_phrases,
    phrase_split_prompt,
    radfact,
    radfact_means,
    radfact_prompts,
    radfact_summary,
    read_entailment_prompt,
    split_sentences,
)
from saerad.synthcxr.catalogue import FINDINGS

DEMO_DATA = Path(__file__).resolve().parents[1] / "artifacts" / "demo" / "data"
DEMO_FACTS = DEMO_DATA / "synthcxr" / "synthcxr-report-facts.jsonl.gz"
DEMO_TRUTH = DEMO_DATA / "ground_truth.csv"

# A tiny keyword labeler, so the known answers below do not depend on the rule-based labeler's coverage.
_KEYWORDS = {"effusion": "pleural_effusion", "pneumothorax": "pneumothorax", "heart": "cardiomegaly",
             "cardiomegaly": "cardiomegaly", "edema": "edema"}


def keyword_findings(text: str) -> set[tuple[str, bool]]:
    lowered = text.lower()
    negated = lowered.startswith("no ") or "normal" in lowered
    return {(finding, not negated) for word, finding in _KEYWORDS.items() if word in lowered}


# (candidate, reference, precision, recall)
KNOWN_PAIRS = [
    ("Small left pleural effusion. No pneumothorax. Heart size is normal.",
     "Left pleural effusion. No pneumothorax.", 2 / 3, 1.0),
    ("No acute cardiopulmonary process.", "No acute cardiopulmonary process.", 1.0, 1.0),
    ("", "Cardiomegaly.", math.nan, 0.0),
    ("Pneumothorax.", "No pneumothorax.", 0.0, 0.0),
    ("Mild pulmonary edema. No acute cardiopulmonary process.",
     "Pulmonary edema. No pleural effusion. No acute process.", 0.5, 1 / 3),
]


class RecordingClient:
    """A minimal stand-in for a saerad.llm client: canned replies, every prompt recorded."""

    def __init__(self, reply):
        self.reply = reply
        self.sent: list[Prompt] = []

    def complete_many(self, prompts, progress=True):
        self.sent.extend(prompts)
        return [Completion(text=self.reply(p), error=None if self.reply(p) is not None else "failed for good",
                           cached=False, input_tokens=0, output_tokens=0, backend="fake", model="fake", key=p.key)
                for p in prompts]


def _scores(table):
    return list(zip(table.precision, table.recall))


def _assert_scores(table, expected):
    for (p, r), (want_p, want_r) in zip(_scores(table), expected):
        assert (math.isnan(p) and math.isnan(want_p)) or p == pytest.approx(want_p)
        assert (math.isnan(r) and math.isnan(want_r)) or r == pytest.approx(want_r)


# ---------------------------------------------------------------------------
# Text and reply parsing


def test_sentence_split_keeps_decimals_and_normalises():
    assert split_sentences("Unchanged 4.5 cm mass.  No effusion, e.g. none.\nHeart normal.") == [
        "Unchanged 4.5 cm mass.", "No effusion, e.g. none.", "Heart normal."]
    assert split_sentences("   ") == []
    assert normalise_text("  No  Pneumothorax. ") == "no pneumothorax"


def test_parse_phrases_is_robust():
    assert parse_phrases('```json\n["No effusion.", "No pneumothorax."]\n```\nHope this helps!') == [
        "No effusion.", "No pneumothorax."]
    assert parse_phrases('Here you go: {"phrases": ["Cardiomegaly."]} done') == ["Cardiomegaly."]
    assert parse_phrases("Sure! [see below] ['single quotes']") is None
    assert parse_phrases("[]") is None
    assert parse_phrases('[1, 2]') is None
    assert parse_phrases(None) is None


def test_parse_entailment_is_robust():
    assert parse_entailment('```json\n{"status": "entailed", "evidence": [1]}\n```') is True
    assert parse_entailment('Answer: {"status": "Not entailed", "evidence": []} because...') is False
    assert parse_entailment('{"status": "maybe"}') is None
    assert parse_entailment("entailed") is None
    assert parse_entailment(None) is None


def test_entailment_prompt_round_trips_through_its_delimiters():
    prompt = entailment_prompt("Small\nleft effusion.", ["No pneumothorax.", "Left pleural effusion [1]."])
    assert read_entailment_prompt(prompt) == ("Small left effusion.", ["No pneumothorax.", "Left pleural effusion [1]."])


# ---------------------------------------------------------------------------
# The protocol with the offline responders


def test_offline_radfact_known_precision_and_recall():
    client = make_client("offline", model="radfact-test", responder=offline_radfact_responder(keyword_findings))
    candidates = [c for c, _, _, _ in KNOWN_PAIRS]
    references = [r for _, r, _, _ in KNOWN_PAIRS]
    table = radfact(candidates, references, client, progress=False, details=True)
    _assert_scores(table, [(p, r) for _, _, p, r in KNOWN_PAIRS])
    assert list(table.n_candidate_phrases) == [3, 1, 0, 1, 2]
    assert list(table.n_reference_phrases) == [2, 1, 1, 1, 3]
    assert table.failures.sum() == 0
    assert table.f1.iloc[0] == pytest.approx(0.8)
    assert math.isnan(table.f1.iloc[2]) and table.f1.iloc[3] == 0.0
    assert table.candidate_entailed.iloc[0] == [True, True, False]
    means = radfact_means(table)
    p = np.nanmean([p for _, _, p, _ in KNOWN_PAIRS])
    r = np.mean([r for _, _, _, r in KNOWN_PAIRS])
    assert means["precision"] == pytest.approx(100 * p)
    assert means["recall"] == pytest.approx(100 * r)
    assert means["f1"] == pytest.approx(100 * 2 * p * r / (p + r))
    assert means["n_precision_defined"] == 4
    table["system"] = "offline"
    summary = radfact_summary(table, n_resamples=200).set_index("metric")
    for metric in ("precision", "recall", "f1"):
        row = summary.loc[f"radfact_{metric}"]
        assert row.value == pytest.approx(means[metric])
        assert row.ci_low <= row.value <= row.ci_high


def test_offline_radfact_with_the_rule_based_labeler():
    pytest.importorskip("saerad.metrics.chexpert_rules")
    client = make_offline_radfact_client()
    table = radfact(
        ["There is no pleural effusion. Cardiomegaly. Pneumothorax.", "No pneumothorax."],
        ["No pleural effusion or pneumothorax. The heart is enlarged.", "No pneumothorax."],
        client, progress=False)
    _assert_scores(table, [(2 / 3, 1 / 2), (1.0, 1.0)])


def test_garbage_and_failed_replies_count_as_not_entailed():
    garbage = RecordingClient(lambda prompt: "I am not sure what you mean.")
    table = radfact([c for c, *_ in KNOWN_PAIRS], [r for _, r, *_ in KNOWN_PAIRS], garbage, progress=False)
    # Phrase splits fell back to sentences, so the phrase counts are the sentence counts...
    assert list(table.n_candidate_phrases) == [3, 1, 0, 1, 2]
    # ...and nothing was entailed.
    assert table.n_candidate_entailed.sum() == 0 and table.n_reference_entailed.sum() == 0
    assert list(table.split_failures) == [2, 2, 1, 2, 2]
    # Every entailment call failed: one per phrase against a non-empty other side.
    assert list(table.entailment_failures) == [5, 2, 0, 2, 5]
    assert (table.failures == table.split_failures + table.entailment_failures).all()
    _assert_scores(table, [(0.0, 0.0), (0.0, 0.0), (math.nan, 0.0), (0.0, 0.0), (0.0, 0.0)])

    failed = RecordingClient(lambda prompt: None)
    table = radfact(["No pneumothorax."], ["No pneumothorax."], failed, progress=False)
    # Both sides fell back and both directions failed, though identical prompts were sent once:
    # one split request for the shared text and one entailment question asked both ways.
    assert (table.precision.iloc[0], table.recall.iloc[0]) == (0.0, 0.0)
    assert (table.split_failures.iloc[0], table.entailment_failures.iloc[0]) == (2, 2)
    assert len(failed.sent) == 1 + 1


def test_llm_phrases_replace_sentences_and_prompts_are_sent_once():
    responder = offline_radfact_responder(keyword_findings)

    def reply(prompt):
        if "<report>" in prompt.user:  # an LLM that splits "No effusion or pneumothorax." into two phrases
            text = prompt.user.split("<report>\n")[1].split("\n</report>")[0]
            if text == "No effusion or pneumothorax.":
                return '```json\n["No effusion.", "No pneumothorax."]\n```'
        return responder(prompt)

    client = RecordingClient(reply)
    reference = "No effusion or pneumothorax."
    table = radfact(["No pneumothorax.", "No pneumothorax."], [reference, reference], client, progress=False)
    _assert_scores(table, [(1.0, 0.5), (1.0, 0.5)])
    assert list(table.n_reference_phrases) == [2, 2]
    # Two distinct texts to split, then 1 + 2 entailment questions: the second study repeats the first.
    assert len(client.sent) == 2 + 3
    assert len({(p.system, p.user) for p in client.sent}) == len(client.sent)


def test_radfact_prompts_match_what_an_offline_run_sends():
    candidates = [c for c, *_ in KNOWN_PAIRS]
    references = [r for _, r, *_ in KNOWN_PAIRS]
    planned = radfact_prompts(candidates, references)
    client = RecordingClient(offline_radfact_responder(keyword_findings))
    radfact(candidates, references, client, progress=False)
    # The offline splitter returns sentences, which is what the dry-run assumes.
    assert sorted(p.user for p in planned) == sorted(p.user for p in client.sent)
    assert all(isinstance(p, Prompt) and p.temperature == 0.0 for p in planned)
    assert sum("<report>" in p.user for p in planned) == len({t for t in candidates + references if t})


def test_second_run_is_served_from_the_cache(tmp_path):
    pairs = KNOWN_PAIRS[:2]
    first_client = make_offline_radfact_client(cache_dir=tmp_path / "cache", findings_of=keyword_findings)
    first = radfact([c for c, *_ in pairs], [r for _, r, *_ in pairs], first_client, progress=False)
    usage = first_client.usage()
    assert usage["requests"] > 0 and usage["cache_hits"] == 0
    second_client = make_offline_radfact_client(cache_dir=tmp_path / "cache", findings_of=keyword_findings)
    second = radfact([c for c, *_ in pairs], [r for _, r, *_ in pairs], second_client, progress=False)
    assert second_client.usage()["cache_hits"] == usage["requests"]
    assert second_client.usage()["requests"] == 0
    pd.testing.assert_frame_equal(first, second)


def test_bad_input_is_named():
    client = RecordingClient(lambda prompt: "[]")
    with pytest.raises(ValueError, match=r"candidates\[1\]"):
        radfact(["a.", float("nan")], ["a.", "b."], client, progress=False)
    with pytest.raises(ValueError, match="2 candidates but 1 references"):
        radfact(["a.", "b."], ["a."], client, progress=False)
    with pytest.raises(ValueError, match="neither"):
        offline_radfact_responder(keyword_findings)(Prompt(user="hello"))
    assert phrase_split_prompt("x").max_tokens >= 256


# ---------------------------------------------------------------------------
# Oracle on hand-built facts


def _fact(finding, present, certainty="definite"):
    return {"finding": finding, "present": present, "certainty": certainty, "attributes": {}, "comparison": None}


HAND_STUDIES = [
    {"study_id": 1, "subject_id": 10, "sentences": [
        {"text": "Small left pleural effusion.", "section": "findings", "facts": [_fact("pleural_effusion", True)]},
        {"text": "No pneumothorax.", "section": "findings", "facts": [_fact("pneumothorax", False)]},
        {"text": "Support devices as described above.", "section": "impression",
         "facts": [_fact("central_line", True)]},
    ]},
    {"study_id": 2, "subject_id": 20, "sentences": [
        {"text": "The heart is enlarged.", "section": "findings", "facts": [_fact("cardiomegaly", True)]},
        {"text": "Opacity may reflect atelectasis or pneumonia.", "section": "findings",
         "facts": [_fact("atelectasis", True, "uncertain"), _fact("consolidation", True, "uncertain")]},
        {"text": "No acute cardiopulmonary process.", "section": "impression", "facts": []},
        {"text": "Support devices as described above.", "section": "impression",
         "facts": [_fact("endotracheal_tube", True)]},
    ]},
    {"study_id": 3, "subject_id": 30, "sentences": [
        {"text": "Heart size is normal.", "section": "findings", "facts": [_fact("cardiomegaly", False)]},
        {"text": "No pleural effusion or pneumothorax.", "section": "findings",
         "facts": [_fact("pleural_effusion", False), _fact("pneumothorax", False)]},
    ]},
]


@pytest.fixture
def hand_facts(tmp_path):
    path = tmp_path / "facts.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in HAND_STUDIES:
            handle.write(json.dumps(record) + "\n")
    return path


@pytest.fixture
def hand_truth(tmp_path):
    rows = []
    planted = {1: {"pleural_effusion", "central_line", "cardiomegaly"},  # cardiomegaly omitted by the report
               2: {"cardiomegaly", "atelectasis", "endotracheal_tube"},
               3: set()}
    for study, present in planted.items():
        for view, dicom in (("PA", f"{study}a"), ("LATERAL", f"{study}b")):
            row = {"dicom_id": dicom, "subject_id": study * 10, "study_id": study, "view_position": view}
            row.update({f: int(f in present and view == "PA") for f in FINDINGS})
            row.update(piercing=0, scoliosis="none")
            rows.append(row)
    path = tmp_path / "ground_truth.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_sentence_facts_lookup(hand_facts):
    facts = SentenceFacts.from_synthcxr(hand_facts)
    assert facts.lookup("  no PNEUMOTHORAX ") == frozenset({("pneumothorax", False)})
    assert facts.lookup("Lungs are clear.") is None
    # Context-dependent text: ambiguous corpus-wide, exact within its own study.
    assert facts.lookup("Support devices as described above.") is None
    assert facts.lookup("Support devices as described above.", study_id=2) == frozenset({("endotracheal_tube", True)})
    assert dict(facts.misses) == {"unknown": 1, "ambiguous": 1}
    dropped = SentenceFacts.from_synthcxr(hand_facts, uncertain="drop")
    assert dropped.lookup("Opacity may reflect atelectasis or pneumonia.") == frozenset()


def test_study_truth_is_any_frontal_image(hand_truth):
    truth = study_truth(hand_truth)
    assert ("cardiomegaly", True) in truth[1] and ("pneumothorax", False) in truth[1]
    assert ("scoliosis", False) in truth[3]
    assert len(truth[3]) == len(FINDINGS) + 2
    assert len(study_truth(hand_truth, include_nuisance=False)[3]) == len(FINDINGS)


def test_reference_oracle_known_answers(hand_facts):
    facts = SentenceFacts.from_synthcxr(hand_facts)
    table = oracle_radfact(
        ["Small left pleural effusion. Heart size is normal. Lungs are clear.",
         "The heart is enlarged. No acute cardiopulmonary process.",
         "No pleural effusion or pneumothorax."],
        facts,
        references=[" ".join(s["text"] for s in study["sentences"]) for study in HAND_STUDIES],
        study_ids=[1, 2, 3],
    )
    # Study 1: effusion entailed, normal heart not stated in the reference, clear lungs unknown (left out).
    # Recall: effusion yes, no-pneumothorax no, devices no.
    # Study 2: both entailed (the fact-less one by equal text); recall 2/4.
    # Study 3: the candidate states no effusion and no pneumothorax; normal heart is not recalled.
    _assert_scores(table, [(1 / 2, 1 / 3), (1.0, 1 / 2), (1.0, 1 / 2)])
    assert list(table.n_candidate_unknown) == [1, 0, 0]
    assert list(table.study_id) == [1, 2, 3]
    # Sentence lists (generated.jsonl's sentences) give the same scores as report strings.
    as_lists = oracle_radfact(
        [["Small left pleural effusion.", "Heart size is normal.", "Lungs are clear."],
         ["The heart is enlarged.", "No acute cardiopulmonary process."],
         ["No pleural effusion or pneumothorax."]],
        facts, references=[[s["text"] for s in study["sentences"]] for study in HAND_STUDIES], study_ids=[1, 2, 3])
    pd.testing.assert_frame_equal(as_lists, table)


def test_truth_oracle_shows_reference_omissions(hand_facts, hand_truth):
    facts = SentenceFacts.from_synthcxr(hand_facts)
    truth = study_truth(hand_truth)
    references = [" ".join(s["text"] for s in study["sentences"]) for study in HAND_STUDIES]
    reference_vs_truth = oracle_radfact(references, facts, truth=truth, study_ids=[1, 2, 3], own_reports=True)
    # Study 1's report is correct but omits the planted cardiomegaly; study 2's hedge names a pneumonia
    # that is not planted; study 3 is a normal image (nothing to recall).
    _assert_scores(reference_vs_truth, [(1.0, 2 / 3), (2 / 3, 1.0), (1.0, math.nan)])
    assert list(reference_vs_truth.n_candidate_unverifiable) == [0, 1, 0]
    # Appendix G: a correct candidate that mentions the omitted finding is penalised against the reference only.
    candidate = ["Small left pleural effusion. The heart is enlarged."]
    against_reference = oracle_radfact(candidate, facts, references=references[:1], study_ids=[1])
    against_truth = oracle_radfact(candidate, facts, truth=truth, study_ids=[1])
    assert against_reference.precision.iloc[0] == 0.5
    assert against_truth.precision.iloc[0] == 1.0
    # Hedged facts dropped: study 2's hedge is left unverifiable and precision is exact.
    dropped = SentenceFacts.from_synthcxr(hand_facts, uncertain="drop")
    again = oracle_radfact(references, dropped, truth=truth, study_ids=[1, 2, 3], own_reports=True)
    assert again.precision.iloc[1] == 1.0


def test_oracle_bad_input_is_named(hand_facts, tmp_path):
    facts = SentenceFacts.from_synthcxr(hand_facts)
    with pytest.raises(ValueError, match="exactly one"):
        oracle_radfact(["a."], facts)
    with pytest.raises(ValueError, match="study_ids are required"):
        oracle_radfact(["a."], facts, truth={})
    with pytest.raises(ValueError, match=r"candidates\[0\]"):
        oracle_radfact([float("nan")], facts, references=["a."])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"study_id": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: "):
        SentenceFacts.from_synthcxr(bad)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        SentenceFacts.from_synthcxr(tmp_path / "missing.jsonl")


def test_compare_to_oracle():
    oracle = pd.DataFrame({"precision": [1.0, 0.5, 0.0, math.nan], "recall": [1.0, 0.5, 0.25, 1.0],
                           "f1": [1.0, 0.5, 0.0, math.nan]})
    approximation = oracle.copy()
    approximation.loc[2, "recall"] = 0.75
    comparison = compare_to_oracle(approximation, oracle).set_index("metric")
    assert comparison.loc["precision", "n"] == 3
    assert comparison.loc["precision", "mean_abs_difference"] == 0.0
    assert comparison.loc["precision", "pearson_r"] == pytest.approx(1.0)
    assert comparison.loc["recall", "mean_abs_difference"] == pytest.approx(0.5 / 4)
    assert comparison.loc["recall", "exact_share"] == pytest.approx(0.75)


# ---------------------------------------------------------------------------
# Smoke test on the demo world


@pytest.mark.skipif(not (DEMO_FACTS.exists() and DEMO_TRUTH.exists()), reason="demo SynthCXR facts not built")
def test_demo_references_against_truth_and_offline_radfact_against_oracle():
    pytest.importorskip("saerad.metrics.chexpert_rules")
    studies = pd.read_csv(DEMO_DATA / "studies.csv")
    facts = SentenceFacts.from_synthcxr(DEMO_FACTS)
    truth = study_truth(DEMO_TRUTH)
    test = studies[(studies.split == "test") & studies.findings.map(lambda t: isinstance(t, str) and t != "___")]
    test = test[test.study_id.isin(truth)].head(60)
    references = test.findings.tolist()
    ids = test.study_id.tolist()
    versus_truth = oracle_radfact(references, facts, truth=truth, study_ids=ids, own_reports=True)
    assert versus_truth.n_candidate_unknown.sum() == 0
    assert versus_truth.precision.mean() > 0.97
    assert versus_truth.recall.mean() < 1.0
    # A nearest-neighbour-like candidate: the next study's report.
    candidates = references[1:] + references[:1]
    oracle = oracle_radfact(candidates, facts, references=references, study_ids=ids)
    approximation = radfact(candidates, references, make_offline_radfact_client(), progress=False)
    comparison = compare_to_oracle(approximation, oracle).set_index("metric")
    assert comparison.loc["precision", "pearson_r"] > 0.7
    assert comparison.loc["recall", "pearson_r"] > 0.7
    assert comparison.loc["f1", "mean_abs_difference"] < 0.15


def test_word_overlap_judge_is_blind_to_negation_and_measurably_off_the_findings_judge():
    from saerad.metrics.radfact import FindingsEntailmentJudge, WordOverlapEntailmentJudge

    overlap, findings = WordOverlapEntailmentJudge(), FindingsEntailmentJudge()
    premises = ["Small left pleural effusion.", "The heart size is normal."]
    # The naive judge takes shared words for meaning; the findings judge reads the negation.
    assert overlap.judge("No pleural effusion.", premises) == (True, [1])
    assert findings.judge("No pleural effusion.", premises)[0] is False
    assert overlap.judge("Heart size is normal.", premises) == (True, [2])
    assert overlap.judge("Cardiomegaly.", premises) == (False, [])
    with pytest.raises(ValueError, match="threshold"):
        WordOverlapEntailmentJudge(threshold=0)


def test_offline_client_with_the_word_overlap_judge_scores_through_the_protocol(tmp_path):
    from saerad.metrics.radfact import make_offline_radfact_client, offline_radfact_responder, radfact

    client = make_offline_radfact_client(cache_dir=tmp_path, judge="word_overlap")
    table = radfact(["No pleural effusion. Cardiomegaly."], ["Small left pleural effusion."], client, progress=False)
    # "No pleural effusion." passes (2 of 2 content words); the reference has 2 of 4 words in it: below 0.6.
    assert table.loc[0, "precision"] == 0.5 and table.loc[0, "recall"] == 0.0
    with pytest.raises(ValueError, match="word_overlap"):
        offline_radfact_responder(judge="embedding")
