"""CheXbert wrapper: a tiny model saved in the original checkpoint layout loads and labels."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import BertConfig

from saerad.metrics.chexbert import (
    CHEXBERT_CONDITIONS,
    CheXbertError,
    CheXbertLabeler,
    CheXbertModel,
    load_chexbert,
)
from saerad.mimic.loader import CHEXPERT_OBSERVATIONS

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural", "effusion", "heart", "size", "is",
         "normal", "small", "left", "pneumo", "##thorax", "."]


def _tiny_config() -> BertConfig:
    return BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64, type_vocab_size=2)


@pytest.fixture()
def tiny_chexbert(tmp_path):
    """A random tiny CheXbert saved like chexbert.pth (DataParallel 'module.' prefix)."""
    torch.manual_seed(0)
    config = _tiny_config()
    model = CheXbertModel(config)
    with torch.no_grad():
        # Known biases: "Pleural Effusion" -> uncertain (class 3), "No Finding" -> blank (class 0),
        # "Pneumothorax" -> negative (class 2); weights zero so the text cannot change them.
        for cond, cls in (("Pleural Effusion", 3), ("No Finding", 0), ("Pneumothorax", 2)):
            head = model.linear_heads[CHEXBERT_CONDITIONS.index(cond)]
            head.weight.zero_()
            head.bias.zero_()
            head.bias[cls] = 5.0
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    ckpt = tmp_path / "chexbert.pth"
    torch.save({"model_state_dict": state, "epoch": 8}, ckpt)
    tok_dir = tmp_path / "tokenizer"
    tok_dir.mkdir()
    (tok_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (tok_dir / "config.json").write_text(config.to_json_string())
    return ckpt, tok_dir, model


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
