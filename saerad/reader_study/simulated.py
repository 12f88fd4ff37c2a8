"""A simulated reader for SynthCXR: annotates the review page's reports from the planted truth.

On SynthCXR the facts of every corpus sentence (``synthcxr-report-facts.jsonl.gz``)
and the findings planted in every image (``ground_truth.csv``) are known, so a
reader that "knows the answer" can fill in the reader study automatically and
write an export in the format of ``export_schema.json``.  It exercises the
page -> export -> analysis path end to end, and two simulated readers with
different ``error_rate`` give a non-trivial inter-reader agreement.

Rules (per case, i.e. one generated report of one study)
--------------------------------------------------------
Facts of a sentence are looked up corpus-wide by normalised text
(:meth:`SentenceFacts.lookup` without a study, as the truth oracle does for
generated sentences); a fact is *checkable* when the truth covers its item
(the 16 findings, plus piercing / scoliosis).

1. **Keep** a sentence whose checkable facts all agree with the truth, and a
   sentence without checkable facts (unknown text, ambiguous text, a
   fact-less sentence such as "No acute cardiopulmonary process.", or facts
   about items the truth does not cover): the truth cannot fault it.  Such
   sentences are listed in the case comment as unjudged.
2. A sentence with a wrong fact is a **misclassification**:

   * it is **deleted** when it states nothing true (every checkable fact is
     wrong and at least one is a finding stated present that is absent: a
     hallucinated finding);
   * otherwise it is **edited** (a present finding denied, or a wrong fact
     beside correct ones): ``edited_text`` notes the correction.

   Its clinical significance is the highest :data:`SEVERITY` of the wrongly
   stated items.
3. **Omission**: a planted finding (one of the 16) that no sentence states
   present and no sentence denies (a denial is already corrected by rule 2)
   is added to the report by editing its last sentence that is not deleted
   (or, when all are deleted, the last sentence, turned from delete into an
   edit that replaces it): category ``omission`` is added, the significance
   raised to the omitted findings' highest severity.  A case without
   sentences cannot record an omission; the comment names it.
4. Location, over-specific and "other" errors are not simulated (the facts
   carry (finding, present) only).
5. Reader noise, ``error_rate`` (default 0): independently per sentence, with
   probability ``error_rate`` the action is replaced by one of the two other
   actions (a new edit / delete gets category ``other`` and significance
   ``none`` when the sentence had none; a new keep drops categories and
   significance), and with probability ``error_rate`` the significance of an
   edited or deleted sentence is replaced by one of the two other levels.
   Seeded by ``seed``: the same inputs give the same export.

Severity map (:data:`SEVERITY`): findings that change management now are
``significant`` (pneumothorax, consolidation, edema, pleural effusion, lung
mass, lung nodule); other pathology and the devices are ``minor``; the
nuisance items (piercing, scoliosis) ``none``.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from saerad.io import write_json
from saerad.metrics.oracle import Facts, SentenceFacts
from saerad.synthcxr.catalogue import FINDINGS

SCHEMA_ID = "saerad-reader-study-export/1"
ROLE = "simulated (SynthCXR truth)"
LEVELS = ("none", "minor", "significant")
SEVERITY: dict[str, str] = {
    "pneumothorax": "significant",
    "consolidation": "significant",
    "edema": "significant",
    "pleural_effusion": "significant",
    "lung_mass": "significant",
    "lung_nodule": "significant",
    "cardiomegaly": "minor",
    "enlarged_cardiomediastinum": "minor",
    "atelectasis": "minor",
    "rib_fracture": "minor",
    "pleural_thickening": "minor",
    "pacemaker": "minor",
    "central_line": "minor",
    "endotracheal_tube": "minor",
    "nasogastric_tube": "minor",
    "sternotomy_wires": "minor",
    "piercing": "none",
    "scoliosis": "none",
}
_ACTIONS = ("keep", "edit", "delete")


def _highest(levels: Iterable[str | None]) -> str | None:
    ranked = [LEVELS.index(level) for level in levels if level is not None]
    return LEVELS[max(ranked)] if ranked else None


def _name(finding: str) -> str:
    return finding.replace("_", " ")


def judge_sentence(facts: Facts | None, truth: Facts, severity: Mapping[str, str] = SEVERITY) -> dict:
    """Rules 1-2 for one sentence: ``{"action", "error_categories", "clinical_significance", "edited_text",
    "wrong", "checkable"}`` (``wrong``: the wrongly stated (finding, present) facts)."""
    covered = {finding: present for finding, present in truth}
    checkable = [(f, p) for f, p in (facts or ()) if f in covered]
    wrong = sorted((f, p) for f, p in checkable if covered[f] != p)
    if not wrong:
        return {"action": "keep", "error_categories": [], "clinical_significance": None, "edited_text": None,
                "wrong": [], "checkable": bool(checkable)}
    significance = _highest(severity.get(f, "minor") for f, _ in wrong)
    hallucinated_only = len(wrong) == len(checkable) and any(p for _, p in wrong)
    if hallucinated_only:
        return {"action": "delete", "error_categories": ["misclassification"],
                "clinical_significance": significance, "edited_text": None, "wrong": wrong, "checkable": True}
    corrections = "; ".join(f"{_name(f)} {'absent' if p else 'present'}" for f, p in wrong)
    return {"action": "edit", "error_categories": ["misclassification"], "clinical_significance": significance,
            "edited_text": f"[corrected: {corrections}]", "wrong": wrong, "checkable": True}


def case_sentences(record: Mapping) -> list[str]:
    """The sentences the review page shows for a generated record (whitespace-normalised, non-blank)."""
    sentences = record.get("sentences")
    if not isinstance(sentences, (list, tuple)):
        raise ValueError(f"generated record of study {record.get('study_id')} ({record.get('system')}): "
                         f"sentences is {type(sentences).__name__}, expected a list")
    texts = []
    for sentence in sentences:
        text = sentence.get("text") if isinstance(sentence, Mapping) else sentence
        if isinstance(text, str) and text.strip():
            texts.append(" ".join(text.split()))
    return texts


def _records(generated: pd.DataFrame | str | os.PathLike | Sequence[Mapping]) -> dict[tuple, Mapping]:
    if isinstance(generated, (str, os.PathLike)):
        from saerad.reports.generate import read_generated

        generated = read_generated(generated)
    if isinstance(generated, pd.DataFrame):
        generated = generated.to_dict("records")
    records = {}
    for record in generated:
        key = (str(record["study_id"]), str(record["system"]), str(record["config"]))
        if key in records:
            raise ValueError(f"generated: two reports for study {key[0]}, system {key[1]!r}, config {key[2]!r}")
        records[key] = record
    return records


def simulate_reader(
    generated: pd.DataFrame | str | os.PathLike | Sequence[Mapping],
    unblinding: Mapping | str | os.PathLike,
    facts: SentenceFacts,
    truth: Mapping[int, Facts],
    reader_id: str,
    seed: int = 0,
    error_rate: float = 0.0,
    severity: Mapping[str, str] | None = None,
    exported_at: str | None = None,
) -> dict:
    """Annotate every case of a review page from the SynthCXR truth; return the export (a dict).

    Parameters
    ----------
    generated
        ``reports/generated.jsonl`` (path, DataFrame of
        :func:`~saerad.reports.generate.read_generated`, or records).
    unblinding
        The page's ``unblinding.json`` (path or dict): case id -> study,
        system, config.
    facts, truth
        :meth:`SentenceFacts.from_synthcxr` and :func:`saerad.metrics.oracle.study_truth`.
    reader_id
        The export's ``reader.id``.
    seed, error_rate
        Reader noise (module docstring, rule 5); ``error_rate=0`` is the
        noiseless oracle reader.
    severity
        Item -> significance level; default :data:`SEVERITY`.
    exported_at
        ISO 8601 time stamp; default now (UTC).  Give one for byte-identical
        exports.
    """
    from saerad.reader_study.schema import read_unblinding

    if not 0.0 <= float(error_rate) <= 1.0:
        raise ValueError(f"simulate_reader: error_rate must be in [0, 1], got {error_rate!r}")
    mapping, source = read_unblinding(unblinding)
    severity = dict(SEVERITY if severity is None else severity)
    records = _records(generated)
    rng = np.random.default_rng(seed)
    cases = []
    for case_id in sorted(mapping["cases"]):
        case = mapping["cases"][case_id]
        key = (str(case["study_id"]), str(case["system"]), str(case["config"]))
        if key not in records:
            raise ValueError(f"{source}: case {case_id} (study {key[0]}, {key[1]!r}, config {key[2]!r}) "
                             "has no report in generated")
        texts = case_sentences(records[key])
        if "n_sentences" in case and case["n_sentences"] != len(texts):
            raise ValueError(f"{source}: case {case_id} has n_sentences={case['n_sentences']} but the report "
                             f"has {len(texts)} sentences")
        study = int(case["study_id"])
        if study not in truth:
            raise ValueError(f"simulate_reader: study {study} (case {case_id}) has no ground truth")
        cases.append(_annotate_case(case_id, texts, facts, truth[study], severity, rng, float(error_rate)))
    stamp = exported_at or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")
    return {"schema": SCHEMA_ID, "study_seed": int(mapping["seed"]), "page_id": mapping["page_id"],
            "reader": {"id": str(reader_id), "role": ROLE}, "started_at": stamp, "exported_at": stamp,
            "cases": cases}


def _annotate_case(case_id: str, texts: Sequence[str], facts: SentenceFacts, truth: Facts,
                   severity: Mapping[str, str], rng: np.random.Generator, error_rate: float) -> dict:
    judged = [judge_sentence(facts.lookup(text), truth, severity) for text in texts]
    comments = []
    unjudged = [k for k, j in enumerate(judged) if not j["checkable"]]
    if unjudged:
        comments.append(f"sentences {unjudged} have no checkable facts: kept unjudged")
    # Rule 3: planted findings neither stated present nor denied anywhere in the report.
    mentioned = {f for text in texts for f, _ in (facts.lookup(text) or ())}
    omitted = [f for f in FINDINGS if (f, True) in truth and f not in mentioned]
    if omitted:
        added = "; ".join(f"{_name(f)} present" for f in omitted)
        level = _highest(severity.get(f, "minor") for f in omitted)
        target = next((k for k in reversed(range(len(judged))) if judged[k]["action"] != "delete"),
                      len(judged) - 1)
        if target < 0:
            comments.append(f"omitted {', '.join(omitted)} (no sentence to record it on)")
        else:
            j = judged[target]
            replaced = j["action"] == "delete"
            j["action"] = "edit"
            j["error_categories"] = j["error_categories"] + ["omission"]
            j["clinical_significance"] = _highest([j["clinical_significance"], level])
            base = "" if replaced else (j["edited_text"] or texts[target])
            j["edited_text"] = (base + " " if base else "") + f"[added: {added}]"
            comments.append(f"omitted {', '.join(omitted)}: added on sentence {target}")
    sentences = []
    for index, (text, j) in enumerate(zip(texts, judged)):
        action, categories, significance, edited_text = (
            j["action"], list(j["error_categories"]), j["clinical_significance"], j["edited_text"])
        if error_rate and rng.random() < error_rate:
            action = str(rng.choice([a for a in _ACTIONS if a != action]))
            if action == "keep":
                categories, significance, edited_text = [], None, None
            else:
                categories = categories or ["other"]
                significance = significance or "none"
                edited_text = None if action == "delete" else (edited_text or text)
        if error_rate and action != "keep" and rng.random() < error_rate:
            significance = str(rng.choice([level for level in LEVELS if level != significance]))
        sentences.append({"index": index, "text": text, "action": action, "edited_text": edited_text,
                          "error_categories": categories, "clinical_significance": significance})
    case = {"case_id": case_id, "complete": True, "sentences": sentences}
    if comments:
        case["comment"] = "simulated: " + "; ".join(comments)
    return case


def write_export(export: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Validate an export against the schema and write it as JSON, atomically."""
    from saerad.reader_study.analysis import check_export

    check_export(export, str(path))
    return write_json(path, dict(export))
