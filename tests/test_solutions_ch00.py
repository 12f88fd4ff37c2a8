"""The data chapter's worked solutions and the helpers its page uses, on a tiny SynthCXR world."""

import json

import pandas as pd
import pytest

from saerad import data as data_stage
from saerad.book.solutions import registry


@pytest.fixture(scope="module")
def tiny_data_stage(tmp_path_factory):
    """``artifacts/<profile>/data`` as the data stage leaves it, for a world of 30 patients."""
    root = tmp_path_factory.mktemp("artifacts") / "demo"
    stage = root / "data"
    world, _, _ = data_stage.make_synthcxr(stage / "synthcxr", 30, 64, 3, seed=1)
    dataset = data_stage.load_dataset(world, workers=1, progress=False)
    data_stage.save_stage_tables(dataset, stage, data_stage.kept_ground_truth(world, dataset.images))
    (stage / "stage.json").write_text(json.dumps({"stage": "data", "status": "ok", "parameters": {
        "n_patients": 30, "image_size": 64, "max_studies_per_patient": 3, "seed": 1, "workers": 1}}))
    return root, dataset


def test_last_paragraph_solution_moves_only_the_no_text_row(tiny_data_stage):
    root, dataset = tiny_data_stage
    entry = registry()["00.1"]
    values = entry.compute(root, dict(entry.parameters))
    assert set(values) == set(entry.keys)
    no_text = int(dataset.drop_table().set_index("reason").loc["report has neither findings nor impression", "studies"])
    assert values["no_text_default"] == no_text
    # every study the fallback rescues is kept, with its text from the last paragraph
    assert values["kept_studies_changed"] - values["kept_studies_default"] == values["last_paragraph_studies"]
    assert values["no_text_changed"] == no_text - values["last_paragraph_studies"]
    assert values["changed_rows"] in ("none", "“report has neither findings nor impression”")


def test_smaller_world_solution_scales_counts_and_keeps_shares(tiny_data_stage):
    root, _ = tiny_data_stage
    entry = registry()["00.2"]
    values = entry.compute(root, {"data.n_patients": 15})
    assert set(values) == set(entry.keys)
    assert (values["patients_default"], values["patients_changed"]) == (30, 15)
    table = pd.DataFrame(values["table"]).set_index("quantity")
    assert table.loc["patients on disk", "change"] == "× 0.50"
    assert all(change.endswith("points") for quantity, change in table["change"].items() if quantity.startswith("share"))


def test_prior_report_example_and_least_reported():
    priors = pd.DataFrame({"study_id": [1, 2, 2], "prior_rank": [1, 2, 1], "hours_before": [5.0, 24 * 400, 72.0],
                           "prior_report": ["FINDINGS: clear.", "IMPRESSION: " + "long text " * 20, "x"]})
    example = data_stage.prior_report_example(priors, study_id=99, width=30)  # unknown study: the one with most priors
    assert list(example["earlier report"]) == [1, 2]
    assert list(example["written before the study"]) == ["3.0 days", "1.1 years"]
    assert example["report (first words)"].str.len().max() <= 30 and example.iloc[1, 2].endswith("…")
    assert data_stage.elapsed_text(5) == "5 hours"
    rates = pd.DataFrame({"finding": ["a", "b", "c"], "stated_when_planted": [1.0, 0.8, float("nan")]})
    assert data_stage.least_reported(rates) == ("b", 0.8)
    assert data_stage.least_reported(rates.iloc[[2]]) is None
    with pytest.raises(ValueError, match="lacks"):
        data_stage.prior_report_example(priors.drop(columns="hours_before"))


def test_example_grid_fits_the_text_column_with_legible_captions(tiny_data_stage):
    import matplotlib

    matplotlib.use("Agg")
    from saerad.plots import TEXT_WIDTH_INCHES, image_grid

    _, dataset = tiny_data_stage
    paths = [dataset.root / path for path in dataset.images["image_path"][:6]]
    figure = image_grid(paths, ["PA · pleural effusion, central line, endotracheal tube, nasogastric tube"] * 6)
    assert figure.get_size_inches()[0] <= TEXT_WIDTH_INCHES
    titles = [axis.title for axis in figure.axes if axis.get_title()]
    assert len(titles) == 6 and min(title.get_fontsize() for title in titles) >= 9
    assert all("\n" in title.get_text() for title in titles)  # wrapped to the image's width
