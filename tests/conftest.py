"""Shared fixtures: a tiny MIMIC-CXR-JPG-layout dataset and a tiny DINOv2 checkpoint,
both written by the tests themselves (nothing is downloaded)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

# One definition of the thread-count context, shared with the package (test_distributed imports it from here).
from saerad.sae.parallel import torch_threads  # noqa: F401

CHEXPERT = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]

REPORT_WITH_FINDINGS = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with cough  // eval for pneumonia
 
 COMPARISON:  None.
 
 FINDINGS:
 
 Small left pleural effusion.  No pneumothorax.  Heart size is
 normal.
 
 IMPRESSION:
 
 Small left effusion.
"""

REPORT_IMPRESSION_ONLY = """                                 FINAL REPORT
 INDICATION:  Follow-up.
 
 IMPRESSON:  No acute cardiopulmonary process.
"""

REPORT_NEITHER = """                                 FINAL REPORT
 WET READ:  Lines in place.
"""


def _jpeg(seed: int, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), mode="L").save(buffer, format="JPEG")
    return buffer.getvalue()


def write_mimic_fixture(root: Path) -> dict:
    """Write a small dataset in the MIMIC-CXR-JPG 2.0.0 layout with one item per drop reason.

    Returns the expectations the loader tests check.
    """
    rows, split_rows, chexpert_rows, reports = [], [], [], {}

    def image(subject, study, dicom, view, date, time, split="train", content=b"ok", in_split=True):
        rows.append({
            "dicom_id": dicom, "subject_id": subject, "study_id": study,
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
            "Rows": 48, "Columns": 48, "StudyDate": date, "StudyTime": time,
            "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
            "ViewCodeSequence_CodeMeaning": "postero-anterior", "PatientOrientationCodeSequence_CodeMeaning": "Erect",
        })
        if in_split:
            split_rows.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split})
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        if content == b"ok":
            (folder / f"{dicom}.jpg").write_bytes(_jpeg(len(rows)))
        elif content is not None:
            (folder / f"{dicom}.jpg").write_bytes(content)

    def report(subject, study, text):
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        if text is not None:
            (folder / f"s{study}.txt").write_text(text)
        chexpert_rows.append({"subject_id": subject, "study_id": study, **{c: np.nan for c in CHEXPERT},
                              "Pleural Effusion": 1.0, "Pneumothorax": 0.0})

    # Patient 1: three studies over time; the second has a lateral too.
    image(10000001, 50000001, "a0000001-00000000-00000000-00000000-00000001", "PA", 21500101, 93000.0)
    report(10000001, 50000001, REPORT_WITH_FINDINGS)
    image(10000001, 50000002, "a0000001-00000000-00000000-00000000-00000002", "AP", 21500103, 113000.5)
    image(10000001, 50000002, "a0000001-00000000-00000000-00000000-00000003", "LATERAL", 21500103, 113000.5)
    report(10000001, 50000002, REPORT_IMPRESSION_ONLY)
    image(10000001, 50000003, "a0000001-00000000-00000000-00000000-00000004", "PA", 21510103, 113000.5)
    report(10000001, 50000003, REPORT_WITH_FINDINGS)
    # Patient 2 (test split): one good study, one whose report has neither section.
    image(10000002, 50000004, "a0000002-00000000-00000000-00000000-00000001", "PA", 21600101, 80000.0, "test")
    report(10000002, 50000004, REPORT_WITH_FINDINGS)
    image(10000002, 50000005, "a0000002-00000000-00000000-00000000-00000002", "AP", 21600102, 80000.0, "test")
    report(10000002, 50000005, REPORT_NEITHER)
    # Patient 3: one item per remaining drop reason.
    image(10000003, 50000006, "a0000003-00000000-00000000-00000000-00000001", "PA", 21700101, 10000.0,
          content=b"\xff\xd8\xff\xe0 truncated")
    image(10000003, 50000006, "a0000003-00000000-00000000-00000000-00000002", "AP", 21700101, 10000.0, content=None)
    image(10000003, 50000006, "a0000003-00000000-00000000-00000000-00000003", "", 21700101, 10000.0)
    image(10000003, 50000006, "a0000003-00000000-00000000-00000000-00000004", "PA", 21700101, 10000.0, in_split=False)
    image(10000003, 50000006, "a0000003-00000000-00000000-00000000-00000005", "LL", 21700101, 10000.0)
    image(10000003, 50000006, "a0000003-00000000-00000000-00000000-00000006", "PA", 21700101, 10000.0)
    report(10000003, 50000006, REPORT_WITH_FINDINGS)
    image(10000003, 50000007, "a0000003-00000000-00000000-00000000-00000007", "PA", 21700201, 10000.0)
    report(10000003, 50000007, None)

    def write_csv(name, table):
        with gzip.open(root / name, "wt") as handle:
            table.to_csv(handle, index=False)

    write_csv("mimic-cxr-2.0.0-metadata.csv.gz", pd.DataFrame(rows))
    write_csv("mimic-cxr-2.0.0-split.csv.gz", pd.DataFrame(split_rows))
    write_csv("mimic-cxr-2.0.0-chexpert.csv.gz", pd.DataFrame(chexpert_rows))
    return {
        "kept_images": 5, "kept_studies": 5,
        "drops": {
            "view position missing": (1, 0), "lateral or other view (not AP/PA)": (2, 0),
            "not in the official split file": (1, 0), "image file missing": (1, 0), "image file unreadable": (1, 0),
            "report file missing": (1, 1), "report has neither findings nor impression": (1, 1),
        },
    }


@pytest.fixture
def mimic_fixture(tmp_path):
    root = tmp_path / "mimic-cxr-jpg"
    root.mkdir()
    expected = write_mimic_fixture(root)
    return root, expected


def save_tiny_dinov2(directory: Path, image_size: int = 32, hidden_size: int = 32, seed: int = 0) -> Path:
    """A tiny randomly initialised DINOv2 + image processor, saved like a hub checkpoint."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden_size,
        image_size=image_size, patch_size=8,
    )
    Dinov2Model(config).save_pretrained(directory)
    BitImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25],
    ).save_pretrained(directory)
    return directory


@pytest.fixture
def tiny_encoder_dir(tmp_path):
    return save_tiny_dinov2(tmp_path / "tiny-dinov2")


def sae_with_biases(preset: str, width: int, seed: int = 0):
    """A ×4 SAE of ``preset`` on ``width``-dimensional tokens with every bias non-zero (and ``r_mag`` moved),
    so that a wrongly split bias or offset shows in a decomposition test."""
    import torch

    from saerad.sae import make_config
    from saerad.sae.models import build_sae

    extra = {"k": 4} if preset == "topk" else {"k": 4, "prefixes": (16, 4 * width)} if preset == "matryoshka" else {}
    sae = build_sae(make_config(preset, width, 4, seed=seed, **extra))
    generator = torch.Generator().manual_seed(seed + 10)
    with torch.no_grad():
        for name, parameter in sae.named_parameters():
            if name.startswith("b_") or name == "r_mag":
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
    return sae.eval()


def trained_like_sae(name: str, d_in: int, expansion: int, seed: int, noise_seed: int, noise: float,
                     overrides: dict | None = None):
    """An SAE of preset ``name`` whose every parameter is moved off its initial value, as after training."""
    import torch

    from saerad.sae import make_config
    from saerad.sae.models import build_sae

    sae = build_sae(make_config(name, d_in, expansion, seed=seed, **(overrides or {})))
    generator = torch.Generator().manual_seed(noise_seed)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.add_(noise * torch.randn(parameter.shape, generator=generator))
    return sae


# ---------------------------------------------------------------------------
# Tiny judges for the evaluation: CheXbert and RadGraph in their real on-disk layouts

CHEXBERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural", "effusion", "heart", "size", "is",
         "normal", "small", "left", "pneumo", "##thorax", "."]


def _tiny_chexbert_config():
    from transformers import BertConfig

    return BertConfig(vocab_size=len(CHEXBERT_VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64, type_vocab_size=2)


def save_tiny_chexbert(tmp_path: Path):
    """A random tiny CheXbert saved like chexbert.pth (DataParallel 'module.' prefix) + its tokenizer folder.

    Returns ``(checkpoint, tokenizer_dir, model)``.
    """
    import json

    import torch

    from saerad.metrics.chexbert import CHEXBERT_CONDITIONS, CheXbertModel

    torch.manual_seed(0)
    config = _tiny_chexbert_config()
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
    (tok_dir / "vocab.txt").write_text("\n".join(CHEXBERT_VOCAB) + "\n")
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (tok_dir / "config.json").write_text(config.to_json_string())
    return ckpt, tok_dir, model


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
    import json

    import torch
    from radgraph.allennlp.data import Vocabulary
    from transformers import BertConfig

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


def write_ground_truth(path: Path, planted: dict) -> Path:
    """A SynthCXR-layout ground_truth.csv: per study a PA image with ``planted[study]`` and an empty lateral."""
    from saerad.synthcxr.catalogue import FINDINGS

    rows = []
    for study, findings in planted.items():
        for view in ("PA", "LATERAL"):
            row = {"dicom_id": f"{study}{view}", "subject_id": study * 10, "study_id": study, "view_position": view}
            row.update({f: int(f in findings and view == "PA") for f in FINDINGS})
            row.update(piercing=0, scoliosis="none")
            rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path



class SimulatedCrash(RuntimeError):
    """Raised by :func:`crash_after_checkpoints` to stop a trainer as a killed process would."""


def crash_after_checkpoints(monkeypatch, train_module, count: int, error: type[BaseException] = SimulatedCrash) -> list:
    """Make ``train_module``'s trainer raise ``error`` right after writing its ``count``-th checkpoint.

    Returns the list the steps of the written checkpoints are appended to. Undo with
    ``monkeypatch.setattr(train_module, "_write_checkpoint", saerad.checkpoints.write_checkpoint)``.
    """
    real_write, written = train_module._write_checkpoint, []

    def write_then_crash(path, payload):
        real_write(path, payload)
        written.append(payload["step"])
        if len(written) == count:
            raise error

    monkeypatch.setattr(train_module, "_write_checkpoint", write_then_crash)
    return written


def assert_sae_resume_is_bit_identical(monkeypatch, tmp_path: Path, tokens, sae_config, train_config,
                                       crash_after: int, **train_options):
    """Train once uninterrupted, once killed after ``crash_after`` checkpoints and resumed; assert equal results.

    ``train_options`` go to every ``train_sae`` call (e.g. ``held_out``).
    Returns the uninterrupted :class:`saerad.sae.TrainResult`, for checks on what happened in the run.
    """
    import pandas as pd
    import torch

    import saerad.sae.train as train_module
    from saerad.checkpoints import write_checkpoint
    from saerad.sae import train_sae

    reference = train_sae(tokens, sae_config, train_config, tmp_path / "uninterrupted", progress=False,
                          **train_options)
    written = crash_after_checkpoints(monkeypatch, train_module, crash_after)
    with pytest.raises(SimulatedCrash):
        train_sae(tokens, sae_config, train_config, tmp_path / "resumed", progress=False, **train_options)
    assert written == [train_config.checkpoint_every * (n + 1) for n in range(crash_after)]
    monkeypatch.setattr(train_module, "_write_checkpoint", write_checkpoint)
    resumed = train_sae(tokens, sae_config, train_config, tmp_path / "resumed", progress=False, **train_options)
    for key, value in reference.sae.state_dict().items():
        assert torch.equal(value, resumed.sae.state_dict()[key]), key
    pd.testing.assert_frame_equal(reference.history, resumed.history)
    return reference


@pytest.fixture
def one_thread():
    """Tiny models: a second thread only adds synchronisation on a shared 2-core machine."""
    with torch_threads(1):
        yield
