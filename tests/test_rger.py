"""RGER through the radgraph package's own loader, on a tiny RadGraph model the test builds."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import build_tiny_radgraph
from saerad.metrics.rger import NA_MODEL, RadGraphModelError, RGERScorer, load_rger, rger_from_stats


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_radgraph(tmp_path_factory.mktemp("rg"))


@pytest.fixture(scope="module")
def scorer(tiny_model, tmp_path_factory):
    model_dir, bert = tiny_model
    s = RGERScorer(model_dir, encoder_dir=bert, work_dir=tmp_path_factory.mktemp("work"))
    yield s
    s.close()


def test_identical_reports_score_one_and_scores_lie_in_unit_interval(scorer):
    refs = ["small left pleural effusion .", "no pneumothorax .", "mild edema .", "heart size is normal ."]
    hyps = ["small left pleural effusion .", "small right pneumothorax .", "heart size is normal .", ""]
    out = scorer.score(refs, hyps)
    assert out["n"] == 4 and out["per_study"].shape == (4,)
    assert out["per_study"][0] == pytest.approx(1.0)  # identical report, entities extracted
    assert np.all((out["per_study"] >= 0) & (out["per_study"] <= 1))
    assert 0 < out["per_study"][1] < 1  # partly overlapping entities
    assert out["per_study"][3] == 0.0  # empty hypothesis
    assert out["rger"] == pytest.approx(out["per_study"].mean())
    assert rger_from_stats(out["per_study"], [0, 0, 3]) == pytest.approx(2 / 3)


def test_no_entities_score_zero(tmp_path):
    model_dir, bert = build_tiny_radgraph(tmp_path / "none", tag_label=None)
    s = RGERScorer(model_dir, encoder_dir=bert)
    try:
        out = s.score(["small left pleural effusion ."], ["small left pleural effusion ."])
    finally:
        s.close()
    assert out["per_study"].tolist() == [0.0]  # nothing extracted -> the package's reward is 0


def test_archive_input_and_missing_pieces(tiny_model, tmp_path):
    import tarfile

    model_dir, bert = tiny_model
    archive = tmp_path / "radgraph.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for p in model_dir.iterdir():
            tar.add(p, arcname=p.name)
    s = load_rger(archive, encoder_dir=bert)
    try:
        assert s.score(["mild edema ."], ["mild edema ."])["per_study"][0] == pytest.approx(1.0)
    finally:
        s.close()
    assert load_rger(tmp_path / "absent.tar.gz").startswith(NA_MODEL)
    assert load_rger(None) == NA_MODEL
    with pytest.raises(RadGraphModelError, match="encoder_dir"):
        RGERScorer(model_dir)  # the config names a hub encoder: a local copy is required
    with pytest.raises(RadGraphModelError, match="no folder with"):
        RGERScorer(bert, encoder_dir=bert)
