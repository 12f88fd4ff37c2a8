"""The counterfactual chapter's reading of ``axioms.csv``: one paragraph per intervened feature, computed from the table.

The measure names are the constants of :mod:`saerad.counterfactual.axioms`, which
:func:`saerad.counterfactual.experiment.measure_feature` writes; a measure missing from the table (no judge on MIMIC-CXR, no mask)
leaves its sentence out instead of inventing a value.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from saerad.counterfactual.axioms import (
    ADD_TEST, CYCLE_DISTANCE, DETECTED_AFTER_ADD, DETECTED_AFTER_REMOVE, DETECTED_IN_RECONSTRUCTIONS_WITH,
    DETECTED_IN_RECONSTRUCTIONS_WITHOUT, EFFECT_SIZE, NULL_DISTANCE, REMOVE_TEST, SEGMENTATION_IOU,
)


def measure_row(table: pd.DataFrame, finding: str, measure: str) -> pd.Series | None:
    """The first row of ``table`` (``axioms.csv``) for ``finding`` and ``measure``, or None."""
    hit = table[(table["finding"] == finding) & (table["measure"] == measure)]
    return hit.iloc[0] if len(hit) else None


def _test_verdict(row: pd.Series) -> str:
    # The note starts with the verdict in words ("changed what the judge sees"), then says what n and N count.
    return (f"{row['note'].split(';')[0]} (exact McNemar p = {row['value']:.2g}; {row['n']} of the {row['N']} "
            "changed decisions went the expected way)")


def feature_paragraph(table: pd.DataFrame, finding: str, feature: int) -> str:
    """What adding and removing ``feature`` did to images without and with ``finding``, in sentences (Markdown)."""
    name = finding.replace("_", " ")

    def row(measure: str) -> pd.Series | None:
        return measure_row(table, finding, measure)

    add, add_base = row(DETECTED_AFTER_ADD), row(DETECTED_IN_RECONSTRUCTIONS_WITHOUT)
    remove, remove_base = row(DETECTED_AFTER_REMOVE), row(DETECTED_IN_RECONSTRUCTIONS_WITH)
    text = f"**Feature {feature} ({name}).** "
    if add is not None:
        text += (f"Adding it made the judge see {name} in {add['n']} of {add['N']} images without it "
                 f"(reconstructions: {add_base['n']} of {add_base['N']}); removing it left {remove['n']} of "
                 f"{remove['N']} images with it detected (reconstructions: {remove_base['n']} of {remove_base['N']}). ")
    add_test, remove_test = row(ADD_TEST), row(REMOVE_TEST)
    if add_test is not None:
        text += f"Adding it {_test_verdict(add_test)}; removing it {_test_verdict(remove_test)}. "
    null, cycle, effect = row(NULL_DISTANCE), row(CYCLE_DISTANCE), row(EFFECT_SIZE)
    if null is not None:
        moved = "not at all (0 exactly)" if null["value"] == 0 else f"by {null['value']:.4f} on average"
        text += (f"The null intervention moved the image {moved}; the cycle ended "
                 f"{cycle['value']:.4f} from the reconstruction, against {effect['value']:.4f} for the addition itself. ")
    iou = row(SEGMENTATION_IOU)
    if iou is not None and iou["n"] > 0:
        text += (f"The thresholded difference map overlaps the planted mask with mean IoU {iou['value']:.2f} "
                 f"over {iou['n']} images.")
    return text


def axiom_paragraphs(table: pd.DataFrame, features: Mapping[str, int]) -> str:
    """:func:`feature_paragraph` of every ``finding -> feature``, separated by blank lines."""
    return "\n\n".join(feature_paragraph(table, finding, feature) for finding, feature in features.items())
