"""The counterfactual chapter's reading of ``axioms.csv``: one paragraph per intervened feature, computed from the table.

The measure names are the constants of :mod:`saerad.counterfactual.axioms`, which
:func:`saerad.counterfactual.experiment.measure_feature` writes; a measure missing from the table (no judge on MIMIC-CXR, no mask)
leaves its sentence out instead of inventing a value, and a measure the table marks n/a (no test
image with the finding, say) is named with its reason.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from saerad.counterfactual.axioms import (
    ADD_TEST, CYCLE_DISTANCE, DETECTED_AFTER_ADD, DETECTED_AFTER_REMOVE, DETECTED_IN_RECONSTRUCTIONS_WITH,
    DETECTED_IN_RECONSTRUCTIONS_WITHOUT, EFFECT_SIZE, NULL_DISTANCE, REMOVE_TEST, SEGMENTATION_IOU,
)

#: How a row of ``axioms.csv`` that holds no value starts its note (``experiment.na_row``).
NA_PREFIX = "n/a:"


def measure_row(table: pd.DataFrame, finding: str, measure: str) -> pd.Series | None:
    """The first row of ``table`` (``axioms.csv``) for ``finding`` and ``measure`` that holds a value, or None.

    A row marked n/a (its note starts with ``n/a:``) counts as no row; :func:`na_reason` says why.
    """
    hit = _rows(table, finding, measure)
    hit = hit[~hit["note"].astype(str).str.startswith(NA_PREFIX)]
    return hit.iloc[0] if len(hit) else None


def na_reason(table: pd.DataFrame, finding: str, measure: str) -> str | None:
    """The reason of ``finding``'s n/a row for ``measure`` ("no held-out image with the finding"), or None."""
    hit = _rows(table, finding, measure)
    notes = [note for note in hit["note"].astype(str) if note.startswith(NA_PREFIX)]
    return notes[0][len(NA_PREFIX):].strip() if notes else None


def _rows(table: pd.DataFrame, finding: str, measure: str) -> pd.DataFrame:
    return table[(table["finding"] == finding) & (table["measure"] == measure)]


def _test_verdict(row: pd.Series) -> str:
    # The note starts with the verdict in words ("changed what the judge sees"), then says what n and N count;
    # a threshold the verdict names in brackets ("(p >= 0.05)") is left to the p-value that follows.
    import re

    verdict = re.sub(r"\s*\(p\s*[<>]=?[^)]*\)\s*$", "", str(row["note"]).split(";")[0])
    if int(row["N"]) == 0:
        return f"{verdict}: no image's decision changed"
    p_value = "p < 0.001" if row["value"] < 0.001 else f"p = {row['value']:.2g}"
    return (f"{verdict}: {row['n']} of the {row['N']} images whose decision changed went the expected way "
            f"(exact McNemar test, {p_value})")


def feature_paragraph(table: pd.DataFrame, finding: str, feature: int) -> str:
    """What adding and removing ``feature`` did to images without and with ``finding``, in sentences (Markdown).

    A measure the table marks n/a is named with its reason (e.g. no test image shows the finding, so
    nothing could be removed); one missing from the table leaves its sentence out.
    """
    name = finding.replace("_", " ")

    def row(measure: str) -> pd.Series | None:
        return measure_row(table, finding, measure)

    def na(measure: str) -> str | None:
        return na_reason(table, finding, measure)

    text = f"**Feature {feature} ({name}).** "
    add, add_base = row(DETECTED_AFTER_ADD), row(DETECTED_IN_RECONSTRUCTIONS_WITHOUT)
    remove, remove_base = row(DETECTED_AFTER_REMOVE), row(DETECTED_IN_RECONSTRUCTIONS_WITH)
    add_part = remove_part = None
    if add is not None and add_base is not None:
        add_part = (f"Adding it made the judge see {name} in {add['n']} of {add['N']} images without it "
                    f"(reconstructions: {add_base['n']} of {add_base['N']})")
    elif na(DETECTED_AFTER_ADD):
        add_part = f"Adding it: n/a ({na(DETECTED_AFTER_ADD)})"
    if remove is not None and remove_base is not None:
        remove_part = (f"removing it left {remove['n']} of {remove['N']} images with it detected "
                       f"(reconstructions: {remove_base['n']} of {remove_base['N']})")
    elif na(DETECTED_AFTER_REMOVE):
        remove_part = f"removing it: n/a ({na(DETECTED_AFTER_REMOVE)})"
    text += _sentence(add_part, remove_part)

    add_test, remove_test = row(ADD_TEST), row(REMOVE_TEST)
    add_part = (f"Adding it {_test_verdict(add_test)}" if add_test is not None
                else f"Adding it: n/a ({na(ADD_TEST)})" if na(ADD_TEST) else None)
    remove_part = (f"removing it {_test_verdict(remove_test)}" if remove_test is not None
                   else f"removing it: n/a ({na(REMOVE_TEST)})" if na(REMOVE_TEST) else None)
    if add_test is not None or remove_test is not None:
        text += _sentence(add_part, remove_part)

    null, cycle, effect = row(NULL_DISTANCE), row(CYCLE_DISTANCE), row(EFFECT_SIZE)
    if null is not None:
        moved = "not at all (0 exactly)" if null["value"] == 0 else f"by {null['value']:.4f} on average"
        if cycle is not None and effect is not None:
            text += (f"The null intervention moved the image {moved}; the cycle ended "
                     f"{cycle['value']:.4f} from the reconstruction, against {effect['value']:.4f} for the addition "
                     "itself. ")
        else:
            reason = na(CYCLE_DISTANCE)
            text += f"The null intervention moved the image {moved}" + (
                f"; the add-then-remove cycle: n/a ({reason}). " if reason else ". ")
    iou = row(SEGMENTATION_IOU)
    if iou is not None and iou["n"] > 0:
        text += (f"The thresholded difference map overlaps the planted mask with mean IoU {iou['value']:.2f} "
                 f"over {iou['n']} images.")
    return text


def _sentence(first: str | None, second: str | None) -> str:
    """``first; second. `` with either part left out when None."""
    parts = [part for part in (first, second) if part]
    if not parts:
        return ""
    joined = "; ".join(parts)
    return joined[0].upper() + joined[1:] + ". "


def axiom_paragraphs(table: pd.DataFrame, features: Mapping[str, int]) -> str:
    """:func:`feature_paragraph` of every ``finding -> feature``, separated by blank lines."""
    return "\n\n".join(feature_paragraph(table, finding, feature) for finding, feature in features.items())
