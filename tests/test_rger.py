"""RGER through the radgraph package's own loader, on a tiny RadGraph model the test builds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig

from saerad.metrics.rger import NA_MODEL, RadGraphModelError, RGERScorer, load_rger, rger_from_stats

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural", "effusion", "heart", "size", "is",
              "normal", "small", "left", "right", "pneumothorax", "mild", "edema", ".", ",",
              "a", "b", "1", "2"]  # the allennlp tokenizer probes "a"/"b" and "1"/"2"
NER_LABELS = ["", "ANAT-DP", "OBS-DP", "OBS-U", "OBS-DA"]  # "" (index 0) is DyGIE's null label
REL_LABELS = ["", "modify", "located_at", "suggestive_of"]


def build_tiny_radgraph(root: Path, tag_label: str | None = "OBS-DP"):
    """Write a tiny RadGraph model folder (config.json, vocabulary/, weights.th) + a tiny encoder folder.

    The config names a hub encoder ("hub-org/tiny-bert") like the real model does, so loading needs
    ``encoder_dir``.  With ``tag_label`` every candidate span is tagged with that label (the NER head's
    weights are zeroed and its bias favours the label); with None the NER head never tags anything.
    """
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie

    bert = root / "encoder"
    bert.mkdir(parents=True)
    BertConfig(vocab_size=len(BERT_VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=64).save_pretrained(bert)
    (bert / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n")
    (bert / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 64}))
    encoder = {"type": "pretrained_transformer_mismatched", "model_name": "hub-org/tiny-bert", "max_length": 64}
    model_cfg = {"type": "dygie", "embedder": {"token_embedders": {"bert": dict(encoder)}},
                 "feature_size": 4, "max_span_width": 3, "target_task": "relation",
                 "feedforward_params": {"num_layers": 1, "hidden_dims": 8, "dropout": 0.0},
                 "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
                 "initializer": {}, "module_initializer": {},
                 "modules": {"coref": {"spans_per_word": 0.3, "max_antecedents": 10, "coref_prop": 0}, "ner": {},
                             "relation": {"spans_per_word": 0.5},
                             "events": {"trigger_spans_per_word": 0.3, "argument_spans_per_word": 0.8,
                                        "loss_weights": {"trigger": 1.0, "arguments": 1.0}}}}
    config = {"dataset_reader": {"type": "dygie", "max_span_width": 3, "token_indexers": {"bert": dict(encoder)}},
              "model": model_cfg}
    model_dir = root / "radgraph"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(config))
    vocab = Vocabulary()
    vocab.add_tokens_to_namespace(NER_LABELS, "radgraph__ner_labels")
    vocab.add_tokens_to_namespace(REL_LABELS, "radgraph__relation_labels")
    vocab.save_to_files(str(model_dir / "vocabulary"))
    embedder = text_field_embedders.BasicTextFieldEmbedder(
        {"bert": token_embedders.PretrainedTransformerMismatchedEmbedder(model_name=str(bert), max_length=64)})
    kwargs = {k: v for k, v in model_cfg.items() if k not in ("type", "embedder", "initializer", "module_initializer")}
    torch.manual_seed(0)
    model = dygie.DyGIE(vocab=Vocabulary.from_files(str(model_dir / "vocabulary")), embedder=embedder, **kwargs)
    with torch.no_grad():
        head = model._ner._ner_scorers["radgraph__ner_labels"][1]._module  # scores labels 1.. (null is 0)
        head.weight.zero_()
        head.bias.fill_(-10.0)
        if tag_label is not None:
            head.bias[NER_LABELS.index(tag_label) - 1] = 10.0
    torch.save(model.state_dict(), model_dir / "weights.th")
    return model_dir, bert


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
