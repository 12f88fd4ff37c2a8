"""The counterfactual chapter's worked solutions (registry) and the page's views of its results."""

import numpy as np
import pandas as pd

from saerad.book.solutions import registry
from saerad.counterfactual import axioms, presentation


def _row(measure, value, n, N, note="", finding="pacemaker", feature=5):
    return {"feature": feature, "finding": finding, "measure": measure, "value": value, "n": n, "N": N, "note": note}


def _table():
    return axioms.axioms_table([
        _row(axioms.DETECTED_IN_RECONSTRUCTIONS_WITHOUT, 0.125, 1, 8), _row(axioms.DETECTED_AFTER_ADD, 0.75, 6, 8),
        _row(axioms.DETECTED_IN_RECONSTRUCTIONS_WITH, 0.875, 7, 8), _row(axioms.DETECTED_AFTER_REMOVE, 0.25, 2, 8),
        _row(axioms.ADD_TEST, 2e-6, 5, 5, "changed what the judge sees; n: ..."),
        _row(axioms.NULL_DISTANCE, 0.0, 16, 16), _row(axioms.EFFECT_SIZE, 0.04, 8, 8),
        _row(axioms.CYCLE_DISTANCE, 0.002, 8, 8), _row(axioms.SEGMENTATION_IOU, 0.314, 7, 8),
        _row(axioms.SEGMENTATION_IOU, float("nan"), 0, 0, "n/a: no held-out image with the finding",
             finding="cardiomegaly", feature=9),
    ])


def test_solutions_are_registered_with_the_parameters_they_change():
    solutions = registry()
    assert solutions["06.1"].parameters == {"counterfactuals.epochs": 2}
    assert solutions["06.2"].parameters == {"counterfactuals.beta": 1.0}
    assert solutions["06.3"].parameters == {"counterfactuals.segmentation_threshold": [0.05, 0.2]}
    for name in ("06.1", "06.2", "06.3"):
        assert solutions[name].reads == ("counterfactuals",) and "table" in solutions[name].keys


def test_axioms_view_formats_each_measure_in_its_unit():
    view = presentation.axioms_view(_table(), "pacemaker").set_index("measure")
    assert view.loc[axioms.DETECTED_AFTER_ADD, "value"] == "75.0 %"
    assert view.loc[axioms.DETECTED_AFTER_ADD, "images (n of N)"] == "6 of 8"
    assert view.loc[axioms.ADD_TEST, "value"] == "p < 0.001"
    assert view.loc[axioms.CYCLE_DISTANCE, "value"] == "0.0020"
    assert view.loc[axioms.SEGMENTATION_IOU, "value"] == "0.31"
    missing = presentation.axioms_view(_table(), "cardiomegaly")
    assert missing["value"].iloc[0].startswith("n/a: no held-out image") and missing["images (n of N)"].iloc[0] == "—"


def test_key_results_read_the_table():
    key = presentation.key_results(_table(), {"pacemaker": 5, "cardiomegaly": 9})
    assert key["effectiveness"].startswith("pacemaker (feature 5) seen after *add* in 6 of 8 images without it "
                                           "(1 in their reconstructions)")
    assert key["null_max"] == "0 (exactly)"
    assert key["cycle_share"] == "at most 5.0 %"
    assert key["iou"] == "pacemaker 0.31 (7 images)"
    empty = presentation.key_results(_table().iloc[0:0], {})
    assert all(text.startswith("n/a") for text in empty.values())


def test_judges_view_and_figures_without_data():
    judges = pd.DataFrame([{"finding": "pacemaker", "train_positive": 12, "test_positive": 3, "auroc_real_test": 0.9,
                            "reconstructions": 6, "auroc_reconstructions": 0.7, "note": ""},
                           {"finding": "rib_fracture", "note": "n/a: the training images lack one class"}])
    view = presentation.judges_view(judges)
    assert list(view["with it (train / test)"]) == ["12 / 3", "—"] and view["finding"].iloc[1] == "rib fracture"
    assert np.isnan(view["AUROC, real"].iloc[1])
    for figure in (presentation.figure4([]), presentation.intervention_figure({}, {}, "remove"),
                   presentation.detection_figure(_table(), ["cardiomegaly"])):
        assert figure.get_size_inches()[0] <= 7.5
