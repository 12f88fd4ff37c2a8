"""A sentence against the findings planted in a SynthCXR image: the finding, its side and its size.

The finding-level F1 of :func:`saerad.reports.generate.finding_f1_against_truth` asks only whether a report
names a planted finding. A reader asks more: "New 20 mm nodule in the left mid lung" does not describe an
image whose nodule is 15 mm and in the right lung, although both name a nodule. This module judges a
sentence the way that reader does, from its text alone (so it works for any writer, a language model
included):

- **finding** and **polarity**: :func:`saerad.metrics.chexpert_rules.sentence_findings`, the same rule
  labeler the finding F1 uses;
- **side**: the side words of the sentence ("left", "right", "bilateral", "bibasilar", "lingula", the
  line abbreviations "RIJ", "LSC", ...). "Right atrium" and "right ventricle" are anatomy, not a side, and
  are ignored. A finding the truth places on a side agrees only when the sentence names the same side(s):
  bilateral and bibasilar mean both sides, and "left effusion" does not describe bilateral effusions;
- **size**: the size or grade the sentence states, in the classes of :data:`SIZE_WORDS` (small, moderate,
  large effusion; mild to severe cardiomegaly and edema; patchy or extensive consolidation) and, for
  nodules and masses, the millimetre size in the classes of :data:`LESION_SIZE_EDGES_MM`. A sentence that
  states no size (or two) is not judged on size.

A sentence that names a side or a size applies it to every finding it states present (a sentence that
names two findings usually places both: "Opacity in the right lower lobe may represent atelectasis or
consolidation"). A finding stated *absent* needs only to be absent. ``tests/test_planted.py`` checks the
side and size readings on every sentence of the SynthCXR corpus against the facts it was written from.

:func:`sentence_marks` colours the reports chapter's side-by-side table and :func:`finding_f1_by_side_and_size`
scores whole reports by the same rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

#: Ground-truth column (``<finding>_<attribute>``) holding the side of a finding SynthCXR places on a side.
SIDE_ATTRIBUTE: dict[str, str] = {
    "pleural_effusion": "laterality", "pneumothorax": "laterality", "consolidation": "laterality",
    "atelectasis": "laterality", "lung_nodule": "laterality", "lung_mass": "laterality",
    "rib_fracture": "laterality", "pleural_thickening": "laterality",
    "pacemaker": "generator_side", "central_line": "side",
}

#: Ground-truth column holding a finding's size or grade, and the words a sentence states it with
#: (regular expressions on lower-case text -> the ground truth's value).
SIZE_WORDS: dict[str, tuple[str, dict[str, str]]] = {
    "pleural_effusion": ("size", {r"\b(?:small|tiny|trace)\b": "small", r"\bmoderate\b": "moderate",
                                  r"\blarge\b": "large"}),
    "pneumothorax": ("size", {r"\b(?:small|tiny)\b": "small", r"\blarge\b": "large"}),
    "consolidation": ("extent", {r"\bpatchy\b": "small", r"\bextensive\b": "large"}),
    "cardiomegaly": ("severity", {r"\bmild(?:ly)?\b": "mild", r"\bmoderate(?:ly)?\b": "moderate",
                                  r"\b(?:severe|severely|marked|markedly)\b": "severe"}),
    "edema": ("severity", {r"\bmild(?:ly)?\b": "mild", r"\bmoderate(?:ly)?\b": "moderate",
                           r"\b(?:severe|severely)\b": "severe"}),
}

#: Findings whose size is stated in millimetres or centimetres, and the class edges (mm) it is judged in.
LESION_SIZE_COLUMN = {"lung_nodule": "size_mm", "lung_mass": "size_mm"}
LESION_SIZE_EDGES_MM = (10, 20, 30, 50)

BOTH = frozenset({"left", "right"})
_SIDE_VALUES = {"left": frozenset({"left"}), "right": frozenset({"right"}), "bilateral": BOTH, "bibasilar": BOTH}
#: Anatomy named with a side word that says nothing about the side of a finding.
_NOT_A_SIDE = re.compile(r"\b(?:upper\s+)?right\s+(?:atri(?:um|al)|ventric(?:le|ular)|heart)\b")
#: Side words (matched on lower-case text) and line abbreviations (matched as written: "RIJ", "LSC").
_SIDE_WORDS = (
    (re.compile(r"\b(?:bilateral(?:ly)?|bibasilar|biapical|both)\b"), BOTH),
    (re.compile(r"\b(?:left|lingula|lingular)\b"), frozenset({"left"})),
    (re.compile(r"\bright\b"), frozenset({"right"})),
)
_SIDE_ABBREVIATIONS = ((re.compile(r"\bL(?:IJ|SC)\b"), frozenset({"left"})),
                       (re.compile(r"\bR(?:IJ|SC)\b"), frozenset({"right"})))
_LESION_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(mm|cm)\b")


@dataclass(frozen=True)
class Claim:
    """What one sentence says about one finding.

    Attributes
    ----------
    finding
        A name of :data:`saerad.synthcxr.FINDINGS`.
    present
        True when the sentence states it present (or possible), False when it denies it.
    sides
        The sides the sentence names (``{"left"}``, ``{"right"}``, both), or None when it names none.
    size
        The size class the sentence states (``"small"``, ``"10-19 mm"``, ...), or None.
    """

    finding: str
    present: bool
    sides: frozenset | None = None
    size: str | None = None


def sentence_sides(text: str) -> frozenset | None:
    """The sides a sentence names: ``{"left"}``, ``{"right"}``, both, or None when it names no side."""
    lower = _NOT_A_SIDE.sub(" ", text.lower())
    sides: set[str] = set()
    for pattern, named in _SIDE_WORDS:
        if pattern.search(lower):
            sides |= named
    for pattern, named in _SIDE_ABBREVIATIONS:
        if pattern.search(text):
            sides |= named
    return frozenset(sides) or None


def lesion_size_class(size_mm: float) -> str:
    """The class of :data:`LESION_SIZE_EDGES_MM` a nodule or mass size falls in, e.g. ``"10-19 mm"``."""
    edges = LESION_SIZE_EDGES_MM
    if size_mm < edges[0]:
        return f"< {edges[0]} mm"
    for low, high in zip(edges, edges[1:]):
        if size_mm < high:
            return f"{low}-{high - 1} mm"
    return f">= {edges[-1]} mm"


def sentence_size(text: str, finding: str) -> str | None:
    """The size class ``text`` states for ``finding``; None when it states none or more than one."""
    lower = text.lower()
    if finding in LESION_SIZE_COLUMN:
        sizes = {lesion_size_class(float(number) * (10 if unit == "cm" else 1))
                 for number, unit in _LESION_SIZE.findall(lower)}
        return next(iter(sizes)) if len(sizes) == 1 else None
    if finding not in SIZE_WORDS:
        return None
    words = {value for pattern, value in SIZE_WORDS[finding][1].items() if re.search(pattern, lower)}
    return next(iter(words)) if len(words) == 1 else None


def sentence_claims(text: str, findings_of: Callable[[str], set] | None = None) -> list[Claim]:
    """Every SynthCXR finding ``text`` states, with the side and size it gives, in :data:`FINDINGS` order."""
    from saerad.metrics.chexpert_rules import sentence_findings
    from saerad.synthcxr import FINDINGS

    stated = dict((findings_of or sentence_findings)(text))
    sides = sentence_sides(text)
    return [Claim(name, bool(stated[name]),
                  sides if stated[name] and name in SIDE_ATTRIBUTE else None,
                  sentence_size(text, name) if stated[name] else None)
            for name in FINDINGS if name in stated]


def planted_findings(ground_truth: pd.DataFrame | str | Path) -> dict[int, dict[str, dict]]:
    """Per study, the planted findings with their side and size: ``{study: {finding: {"sides", "size"}}}``.

    A finding is planted in a study when it is planted in any of its images (as in
    :func:`saerad.reports.generate.study_truth`); its side and size are read from the first image that has it.
    """
    from saerad.synthcxr import FINDINGS

    source = "ground truth table" if isinstance(ground_truth, pd.DataFrame) else str(ground_truth)
    table = ground_truth if isinstance(ground_truth, pd.DataFrame) else pd.read_csv(ground_truth, low_memory=False)
    missing = [c for c in ("study_id", *FINDINGS) if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing columns {missing} (expected study_id and one 0/1 column per finding)")
    planted: dict[int, dict[str, dict]] = {}
    for study_id, rows in table.groupby("study_id", sort=False):
        findings = {}
        for name in FINDINGS:
            flags = pd.to_numeric(rows[name], errors="coerce").fillna(0) > 0
            if not flags.any():
                continue
            first = rows[flags.to_numpy()].iloc[0]
            findings[name] = {"sides": _truth_sides(first, name), "size": _truth_size(first, name)}
        planted[int(study_id)] = findings
    return planted


def _truth_sides(row: pd.Series, finding: str) -> frozenset | None:
    column = f"{finding}_{SIDE_ATTRIBUTE[finding]}" if finding in SIDE_ATTRIBUTE else None
    if column is None or column not in row.index or pd.isna(row[column]):
        return None
    value = str(row[column]).strip().lower()
    if value not in _SIDE_VALUES:
        raise ValueError(f"ground truth column {column}: side {value!r} is not one of {sorted(_SIDE_VALUES)}")
    return _SIDE_VALUES[value]


def _truth_size(row: pd.Series, finding: str) -> str | None:
    if finding in LESION_SIZE_COLUMN:
        column = f"{finding}_{LESION_SIZE_COLUMN[finding]}"
        value = pd.to_numeric(row.get(column), errors="coerce")
        return None if pd.isna(value) else lesion_size_class(float(value))
    if finding in SIZE_WORDS:
        column = f"{finding}_{SIZE_WORDS[finding][0]}"
        value = row.get(column)
        return None if value is None or pd.isna(value) else str(value).strip().lower()
    return None


def claim_error(claim: Claim, planted: Mapping[str, Mapping]) -> tuple[str, str] | None:
    """None when the claim agrees with the planted findings, else ``(kind, why)``.

    ``kind`` is ``"not planted"``, ``"denied"``, ``"side"`` or ``"size"``; ``why`` reads e.g.
    "lung nodule: says left, planted right".
    """
    name = claim.finding.replace("_", " ")
    if not claim.present:
        return None if claim.finding not in planted else ("denied", f"{name} denied, but planted")
    if claim.finding not in planted:
        return "not planted", f"{name} not planted"
    truth = planted[claim.finding]
    if claim.sides is not None and truth.get("sides") is not None and claim.sides != truth["sides"]:
        return "side", f"{name}: says {_side_text(claim.sides)}, planted {_side_text(truth['sides'])}"
    if claim.size is not None and truth.get("size") is not None and claim.size != truth["size"]:
        return "size", f"{name}: says {claim.size}, planted {truth['size']}"
    return None


def judge_claim(claim: Claim, planted: Mapping[str, Mapping]) -> str | None:
    """None when the claim agrees with the planted findings, else why not (see :func:`claim_error`)."""
    error = claim_error(claim, planted)
    return None if error is None else error[1]


def sentence_errors(text: str, planted: Mapping[str, Mapping], findings_of: Callable[[str], set] | None = None
                    ) -> list[tuple[str, str]]:
    """Every ``(kind, why)`` of :func:`claim_error` for the findings one sentence states."""
    return [error for claim in sentence_claims(text, findings_of)
            if (error := claim_error(claim, planted)) is not None]


def _side_text(sides: frozenset) -> str:
    return "both sides" if sides == BOTH else next(iter(sides))


def judge_sentence(text: str, planted: Mapping[str, Mapping], findings_of: Callable[[str], set] | None = None
                   ) -> tuple[str, list[str], set[str]]:
    """Mark one sentence: ``("shared" | "extra" | "none", reasons it disagrees, findings it states correctly)``.

    ``"shared"``: every finding it states agrees with the image (finding, side, size); ``"extra"``: at
    least one does not; ``"none"``: it states no SynthCXR finding, so the truth cannot judge it.
    """
    claims = sentence_claims(text, findings_of)
    if not claims:
        return "none", [], set()
    reasons = [reason for claim in claims if (reason := judge_claim(claim, planted)) is not None]
    correct = {claim.finding for claim in claims if claim.present and judge_claim(claim, planted) is None}
    return ("extra" if reasons else "shared"), reasons, correct


def sentence_marks(report_sentences: Iterable[str | Mapping], planted: Mapping[str, Mapping],
                   findings_of: Callable[[str], set] | None = None
                   ) -> tuple[list[tuple[str, str, list[str]]], list[str]]:
    """Mark every sentence of a report and list the planted findings no sentence states correctly.

    Parameters
    ----------
    report_sentences
        Sentence texts, or ``{"text": ...}`` records from ``generated.jsonl``.
    planted
        One study's entry of :func:`planted_findings`.

    Returns
    -------
    (marks, missed)
        ``[(text, mark, reasons)]`` as :func:`judge_sentence`, and the planted findings (in
        :data:`FINDINGS` order) that no sentence states present with the right side and size.
    """
    from saerad.synthcxr import FINDINGS

    unknown = set(planted) - set(FINDINGS)
    if unknown:
        raise ValueError(f"unknown SynthCXR findings {sorted(unknown)}; expected names from FINDINGS")
    marks, found = [], set()
    for item in report_sentences:
        text = item["text"] if isinstance(item, Mapping) else item
        mark, reasons, correct = judge_sentence(text, planted, findings_of)
        marks.append((text, mark, reasons))
        found |= correct
    return marks, [name for name in FINDINGS if name in planted and name not in found]


def finding_f1_by_side_and_size(generated: pd.DataFrame, ground_truth: pd.DataFrame | str | Path,
                                findings_of: Callable[[str], set] | None = None) -> pd.DataFrame:
    """Finding F1 of each system/config where a finding counts as found only with its side and size right.

    Per study and finding: a true positive when a sentence states the planted finding with the right side
    and size (:func:`judge_claim`); a false positive when the report states it present but never correctly
    (wrong side or size, or not planted); a false negative when it is planted and never stated correctly.
    A finding stated on the wrong side is therefore both a false positive and a false negative, as a
    reader would count it. Returns ``system, config, n_studies, macro_f1, micro_f1,
    n_findings_in_macro, wrong_side_or_size`` (study-finding pairs named but misplaced or mis-sized).
    """
    from saerad.reports.provenance import split_sentences
    from saerad.synthcxr import FINDINGS

    planted = planted_findings(ground_truth)
    rows = []
    for (system, config), group in generated.groupby(["system", "config"], sort=True):
        absent = sorted(set(group["study_id"]) - set(planted))
        if absent:
            raise ValueError(f"{len(absent)} studies of {system}/{config} have no ground truth (e.g. {absent[:3]})")
        truth = np.zeros((len(group), len(FINDINGS)), bool)
        stated = np.zeros_like(truth)
        correct = np.zeros_like(truth)
        for position, (study_id, report) in enumerate(zip(group["study_id"], group["report"])):
            study = planted[int(study_id)]
            for column, name in enumerate(FINDINGS):
                truth[position, column] = name in study
            for sentence in split_sentences(report) if isinstance(report, str) else []:
                for claim in sentence_claims(sentence, findings_of):
                    if claim.present:
                        column = FINDINGS.index(claim.finding)
                        stated[position, column] = True
                        correct[position, column] |= judge_claim(claim, study) is None
        scores = _f1_from_counts(truth & correct, stated & ~(truth & correct), truth & ~correct)
        rows.append({"system": system, "config": config, "n_studies": len(group), **scores,
                     "wrong_side_or_size": int((truth & stated & ~correct).sum())})
    return pd.DataFrame(rows)


def _f1_from_counts(true_positive: np.ndarray, false_positive: np.ndarray, false_negative: np.ndarray) -> dict:
    """Macro and micro F1 from 0/1 matrices ``[n_studies, n_findings]`` of TP, FP and FN.

    As :func:`saerad.reports.generate.f1_scores`, a finding with nothing planted and nothing stated has no
    F1 and is left out of the macro average.
    """
    tp, fp, fn = (np.asarray(m, bool).sum(0) for m in (true_positive, false_positive, false_negative))
    denominator = 2 * tp + fp + fn
    defined = denominator > 0
    per_finding = 2 * tp[defined] / denominator[defined]
    total = int(denominator.sum())
    return {"macro_f1": float(per_finding.mean()) if defined.any() else float("nan"),
            "micro_f1": float(2 * tp.sum() / total) if total else float("nan"),
            "n_findings_in_macro": int(defined.sum())}
