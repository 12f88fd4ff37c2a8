"""Solutions of the metrics chapter's exercises (``notebooks/05_metrics.ipynb``).

Reports are composed and scored in Python, on the test studies the chapter scores; nothing is written to
the chapter's artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from saerad.book.solutions import solution
from saerad.book.solutions._format import fixed, table_cells

#: The metric families of the chapter and the Table 1 metrics that stand for each here.
FAMILIES = {"lexical": ("BL4", "RG-L"), "clinical": ("Ma-5", "Ma-14", "Mi-5", "Mi-14"), "factual": ("RadFact F1",)}


def _scoring_inputs(artifacts_root: Path) -> dict[str, Any]:
    from saerad import evaluation as ev
    from saerad.metrics.oracle import SentenceFacts, study_truth
    from saerad.reports.generate import read_generated

    data_dir = artifacts_root / "data"
    facts_path = data_dir / "synthcxr" / "synthcxr-report-facts.jsonl.gz"
    if not facts_path.exists() or not (data_dir / "ground_truth.csv").exists():
        raise ValueError("the metrics chapter's exercises need SynthCXR's sentence facts and planted truth")
    generated = read_generated(artifacts_root / "reports" / "generated.jsonl")
    sets, _ = ev.scoring_sets(generated)
    return {"generated": generated, "sets": sets, "facts": SentenceFacts.from_synthcxr(facts_path),
            "truth": study_truth(data_dir / "ground_truth.csv")}


def _point_estimates(scores) -> dict[tuple[str, str], float]:
    """Each measured metric of one system on all its studies (no bootstrap), in %."""
    values = {}
    for measure in scores.measures:
        if measure.na is not None:
            continue
        statistic = measure.statistic
        everything = np.arange(scores.n_studies)
        value = statistic(everything) if callable(statistic) else float(np.nanmean(np.asarray(statistic, float)))
        values[(measure.metric, measure.method)] = 100 * float(value)
    return values


def offline_reports_at(artifacts_root: Path, tau: float, study_ids, references: Mapping[int, str]) -> pd.DataFrame:
    """SAE-Rad's offline reports for ``study_ids`` at threshold ``tau``, in ``generated.jsonl``'s columns."""
    from saerad.features.descriptions import read_descriptions
    from saerad.params import stage_parameters
    from saerad.reports.active import active_features, load_activations, study_activations
    from saerad.reports.composer import compose_report

    settings = stage_parameters(artifacts_root, "reports")
    per_feature = None if settings["statements_per_feature"] == 0 else int(settings["statements_per_feature"])
    descriptions = read_descriptions(artifacts_root / "features" / "descriptions.jsonl")
    activations, index = load_activations(artifacts_root / "features")
    ids = [int(s) for s in study_ids if int(s) in set(index["study_id"])]
    matrix, ids = study_activations(activations, index, ids)
    rows = []
    for position, study_id in enumerate(ids):
        composed = compose_report(active_features(matrix[position], tau), descriptions,
                                  int(settings["max_sentences"]), settings["aggregate"],
                                  statements_per_feature=per_feature)
        rows.append({"study_id": int(study_id), "system": "sae_rad", "config": "no_aux", "report": composed.text,
                     "reference": references[int(study_id)], "sentences": composed.sentence_records(),
                     "reason": None if composed.text else "no active described feature"})
    return pd.DataFrame(rows)


@solution("05.1", keys=("tau_default", "table", "family_most", "extra_sentences", "extra_true", "extra_false",
                        "extra_unchecked", "extra_verdict"),
          reads=("features", "reports"), reports__tau=1.0)
def lower_threshold_scores(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Every metric family at the chapter's tau and at 1.0, and whether the extra sentences are true."""
    from saerad import evaluation as ev
    from saerad.params import stage_parameters

    inputs = _scoring_inputs(artifacts_root)
    sae_label = next(label for label, s in inputs["sets"].items() if s.system == "sae_rad")
    chapter = inputs["sets"][sae_label]
    references = dict(zip(chapter.frame["study_id"].astype(int), chapter.frame["reference"]))
    default_tau = float(stage_parameters(artifacts_root, "reports")["tau"])
    changed_tau = float(parameters["reports.tau"])
    rules = ev.rule_labeler()
    measured, verdicts = {}, {}
    for tau in (default_tau, changed_tau):
        frame = offline_reports_at(artifacts_root, tau, chapter.study_ids, references)
        (scoring,) = ev.scoring_sets(frame)[0].values()
        scores = ev.score_system(scoring, [rules], facts=inputs["facts"], meteor=False)
        measured[tau] = _point_estimates(scores)
        verdicts[tau] = ev.judged_sentences(scoring.frame, inputs["facts"], inputs["truth"])["verdict"]
    rows, moves = [], {}
    for family, metrics in FAMILIES.items():
        for (metric, method), before in measured[default_tau].items():
            if metric in metrics:
                after = measured[changed_tau][(metric, method)]
                rows.append({"family": family, "metric": metric, "method": method, f"tau {default_tau:g}": before,
                             f"tau {changed_tau:g}": after, "change (points)": after - before})
                moves.setdefault(family, []).append(abs(after - before))
    family_most = max(moves, key=lambda family: np.mean(moves[family]))

    def count(tau, *names):
        return int(verdicts[tau].isin(names).sum())

    true_names, false_names = ("true_and_entailed", "true_not_entailed"), ("false_but_entailed", "false_not_entailed")
    extra_true = count(changed_tau, *true_names) - count(default_tau, *true_names)
    extra_false = count(changed_tau, *false_names) - count(default_tau, *false_names)
    extra_all = len(verdicts[changed_tau]) - len(verdicts[default_tau])
    verdict = ("mostly true" if extra_true > extra_false else "mostly false" if extra_false > extra_true
               else "as often true as false")
    numbers = {key: 1 for key in rows[0] if key.startswith("tau ") or key == "change (points)"} if rows else {}
    return {"tau_default": f"{default_tau:g}", "table": table_cells(rows, numbers),
            "family_most": family_most, "extra_sentences": extra_all, "extra_true": extra_true,
            "extra_false": extra_false, "extra_unchecked": extra_all - extra_true - extra_false,
            "extra_verdict": verdict}


@solution("05.2", keys=("table", "findings_difference", "best_overlap_difference", "best_threshold", "reaches"),
          reads=("features", "reports"), word_overlap_thresholds=(0.4, 0.6, 0.8))
def judging_the_judges(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The word-overlap judge at several thresholds against the oracle, beside the findings judge."""
    from saerad.metrics.oracle import compare_to_oracle, oracle_radfact
    from saerad.metrics.radfact import make_offline_radfact_client, radfact

    inputs = _scoring_inputs(artifacts_root)
    scoring = next(s for s in inputs["sets"].values() if s.system == "sae_rad")
    reports, references = scoring.frame["report"].tolist(), scoring.frame["reference"].tolist()
    oracle = oracle_radfact(reports, inputs["facts"], references=references, study_ids=scoring.study_ids)
    judges = [("findings judge", "findings", None)] + [
        (f"word overlap ≥ {threshold:g}", "word_overlap", float(threshold))
        for threshold in parameters["word_overlap_thresholds"]]
    rows = []
    for name, judge, threshold in judges:
        options = {} if threshold is None else {"threshold": threshold}
        client = make_offline_radfact_client(judge=judge, **options)
        gap = compare_to_oracle(radfact(reports, references, client, progress=False), oracle).set_index("metric")
        rows.append({"judge": name, "precision: mean |difference|": float(gap.loc["precision", "mean_abs_difference"]),
                     "recall: mean |difference|": float(gap.loc["recall", "mean_abs_difference"]),
                     "studies scored exactly (precision)": float(gap.loc["precision", "exact_share"])})
    findings = rows[0]["precision: mean |difference|"]
    best = min(rows[1:], key=lambda row: row["precision: mean |difference|"])
    return {"table": table_cells(rows, {"precision: mean |difference|": 3, "recall: mean |difference|": 3,
                                        "studies scored exactly (precision)": 3}),
            "findings_difference": findings, "best_overlap_difference": best["precision: mean |difference|"],
            "best_threshold": best["judge"].split("≥ ")[1],
            "reaches": "yes" if best["precision: mean |difference|"] <= findings else "no"}


def _finding_sentences(report: str) -> str:
    """Only the sentences that state a finding present (the rest is boilerplate both systems share)."""
    from saerad.metrics.chexpert_rules import sentence_findings
    from saerad.metrics.radfact import split_sentences

    return " ".join(s for s in split_sentences(report) if any(p for _, p in sentence_findings(s)))


def _sorted_sentences(report: str) -> str:
    from saerad.metrics.radfact import split_sentences

    return " ".join(sorted(split_sentences(report)))


@solution("05.3", keys=("table", "gap_default", "smallest_gap_variant", "smallest_gap"),
          reads=("reports",))
def bleu_gap(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The nearest neighbour's BLEU lead over SAE-Rad under one changed setting or normalisation at a time."""
    from pycocoevalcap.bleu.bleu import Bleu

    from saerad.metrics.nlg import normalise

    inputs = _scoring_inputs(artifacts_root)
    systems = {s.system: s.frame for s in inputs["sets"].values() if s.config in ("no_aux", "-")}

    def bleu(frame: pd.DataFrame, order: int, transform=lambda text: text) -> float:
        references = {k: [normalise(transform(t)) or "empty"] for k, t in enumerate(frame["reference"])}
        hypotheses = {k: [normalise(transform(t)) or "empty"] for k, t in enumerate(frame["report"])}
        scores, _ = Bleu(4).compute_score(references, hypotheses, verbose=0)
        return 100 * float(scores[order - 1])

    variants = [("BLEU-4, as in Table 1", 4, lambda t: t),
                ("BLEU-1 (single words: setting)", 1, lambda t: t),
                ("BLEU-4, sentences sorted (normalisation)", 4, _sorted_sentences),
                ("BLEU-4, finding sentences only (normalisation)", 4, _finding_sentences)]
    rows = []
    for name, order, transform in variants:
        nn = bleu(systems["nearest_neighbour"], order, transform)
        sae = bleu(systems["sae_rad"], order, transform)
        rows.append({"variant": name, "nearest neighbour": nn, "SAE-Rad": sae, "gap (points)": nn - sae})
    smallest = min(rows[1:], key=lambda row: abs(row["gap (points)"]))
    return {"table": table_cells(rows, {"nearest neighbour": 1, "SAE-Rad": 1, "gap (points)": 1}),
            "gap_default": fixed(rows[0]["gap (points)"], 1), "smallest_gap_variant": smallest["variant"],
            "smallest_gap": fixed(smallest["gap (points)"], 1)}


#: Sentences a radiologist might write, and the CheXpert observation each means (positive).
RADIOLOGIST_SENTENCES = (
    ("There is blunting of the left costophrenic angle.", "Pleural Effusion"),
    ("There is volume loss in the left lower lobe.", "Atelectasis"),
    ("No pneumothorax, effusion is present.", "Pleural Effusion"),
)


@solution("05.4", keys=("table", "n_mislabelled"), reads=())
def labeler_blind_spots(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """What the rule labeler reads in three sentences a radiologist might write."""
    from saerad.metrics import label_report

    rows = []
    for sentence, observation in RADIOLOGIST_SENTENCES:
        labels = label_report(sentence)
        value = labels.get(observation)
        read = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}.get(value, "not mentioned")
        others = ", ".join(f"{name} {'positive' if v == 1 else 'negative' if v == 0 else 'uncertain'}"
                           for name, v in labels.items() if v == v and name != observation)
        rows.append({"sentence": sentence, "a radiologist means": f"{observation} positive",
                     "the labeler reads": f"{observation} {read}" + (f" ({others})" if others else ""),
                     "mislabelled": read not in ("positive", "uncertain")})
    return {"table": rows, "n_mislabelled": sum(row["mislabelled"] for row in rows)}
