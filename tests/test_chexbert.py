"""CheXbert wrapper: a tiny model saved in the original checkpoint layout loads and labels."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import CHEXBERT_VOCAB, save_tiny_chexbert
from saerad.metrics.chexbert import (
    CheXbertError,
    CheXbertLabeler,
    load_chexbert,
)
from saerad.mimic.loader import CHEXPERT_OBSERVATIONS

VOCAB = CHEXBERT_VOCAB


@pytest.fixture()
def tiny_chexbert(tmp_path):
    return save_tiny_chexbert(tmp_path)


def test_labels_follow_known_head_biases(tiny_chexbert):
    ckpt, tok_dir, _ = tiny_chexbert
    labeler = CheXbertLabeler(ckpt, tok_dir)
    reports = ["No pleural effusion.", "Heart size is normal.  Small left pneumothorax.", ""]
    labels = labeler.label_reports(reports)
    assert len(labels) == 3
    for lab in labels:
        assert set(lab) == set(CHEXPERT_OBSERVATIONS)
        assert lab["Pleural Effusion"] == -1.0
        assert lab["Pneumothorax"] == 0.0
        assert math.isnan(lab["No Finding"])
        assert all(v in (1.0, 0.0, -1.0) or math.isnan(v) for v in lab.values())


def test_prediction_matches_the_saved_model(tiny_chexbert):
    ckpt, tok_dir, model = tiny_chexbert
    labeler = CheXbertLabeler(ckpt, tok_dir, batch_size=2)
    reports = ["small left pneumothorax .", "no pleural effusion", "heart size is normal"]
    classes = labeler.predict_classes(reports)
    assert classes.shape == (3, 14)
    model.eval()
    for i, r in enumerate(reports):
        ids = torch.tensor([labeler.encode(r)])
        expected = [h.argmax(1).item() for h in model(ids, torch.ones_like(ids))]
        assert classes[i].tolist() == expected
    assert labeler.encode("pneumothorax")[1:3] == [VOCAB.index("pneumo"), VOCAB.index("##thorax")]
    assert labeler.encode("") == [VOCAB.index("[CLS]"), VOCAB.index("[SEP]")]
    assert len(labeler.encode("no " * 600)) == 512


def test_config_can_be_inferred_from_the_checkpoint(tiny_chexbert):
    ckpt, tok_dir, _ = tiny_chexbert
    (tok_dir / "config.json").unlink()
    labeler = CheXbertLabeler(ckpt, tok_dir, num_attention_heads=2)
    assert labeler.model.bert.config.num_hidden_layers == 2
    assert labeler.label_report("no pleural effusion")["Pleural Effusion"] == -1.0


def test_missing_files_and_bad_keys_are_clear(tiny_chexbert, tmp_path):
    ckpt, tok_dir, _ = tiny_chexbert
    assert load_chexbert(tmp_path / "nope.pth", tok_dir).startswith("n/a: needs the CheXbert checkpoint")
    assert load_chexbert(ckpt, tmp_path / "no_tok").startswith("n/a: needs a local bert-base-uncased")
    with pytest.raises(CheXbertError, match="checkpoint not found"):
        CheXbertLabeler(tmp_path / "nope.pth", tok_dir)
    bad = torch.load(ckpt, weights_only=False)
    bad["model_state_dict"] = {k.replace("linear_heads", "heads"): v for k, v in bad["model_state_dict"].items()}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheXbertError, match="does not fit"):
        CheXbertLabeler(tmp_path / "bad.pth", tok_dir)
    torch.save({"state_dict": {}}, tmp_path / "odd.pth")
    with pytest.raises(CheXbertError, match="model_state_dict"):
        CheXbertLabeler(tmp_path / "odd.pth", tok_dir)
