"""CheXbert report labels from a user-supplied checkpoint.

CheXbert (Smit et al. 2020) is a ``bert-base-uncased`` encoder with 14 linear
heads on the [CLS] vector: 13 heads with 4 classes (0 blank, 1 positive,
2 negative, 3 uncertain) and a "No Finding" head with 2 classes (0 blank,
1 positive).  The paper's CheXpert F1 scores use it.  We rebuild the model
with ``transformers.BertModel`` plus our own heads and load the original
``chexbert.pth`` (``{"model_state_dict": {"module.bert....",
"module.linear_heads.<i>....}}``, as saved from ``nn.DataParallel``), so the
``f1chexbert`` package and any hub download are unnecessary.

What the user supplies
----------------------
* ``checkpoint``: the original ``chexbert.pth`` (not redistributable; obtain
  it from the CheXbert authors).
* ``tokenizer_dir``: a local directory with the ``bert-base-uncased``
  tokenizer files (``vocab.txt``, optionally ``tokenizer_config.json``).
* optionally ``config.json`` (a ``BertConfig``) in ``tokenizer_dir`` or given
  as ``config_path``; without it the config is read off the checkpoint's
  tensor shapes, with ``hidden_size / 64`` attention heads as in every BERT
  release.

Pre-processing follows CheXbert's ``bert_tokenizer.py``: whitespace runs are
collapsed, WordPiece tokens are wrapped in [CLS] ... [SEP] and cut to 512,
an empty report becomes [CLS] [SEP].  Outputs use the label codes of
``saerad.metrics.chexpert_rules.label_report``: 1.0 positive, 0.0 negative,
-1.0 uncertain, NaN blank.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from saerad.mimic.loader import CHEXPERT_OBSERVATIONS

# Head order of the CheXbert checkpoint (its constants.CONDITIONS).
CHEXBERT_CONDITIONS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices", "No Finding",
)
# Class index -> our label code.
CLASS_TO_LABEL: tuple[float, ...] = (float("nan"), 1.0, 0.0, -1.0)
NO_FINDING_CLASS_TO_LABEL: tuple[float, ...] = (float("nan"), 1.0)
MAX_TOKENS = 512


class CheXbertError(RuntimeError):
    """The CheXbert checkpoint or tokenizer is missing or does not fit."""


class CheXbertModel(nn.Module):
    """BERT encoder + 14 linear heads on the [CLS] state (CheXbert's bert_labeler)."""

    def __init__(self, config, add_pooling_layer: bool = True):
        super().__init__()
        from transformers import BertModel

        self.bert = BertModel(config, add_pooling_layer=add_pooling_layer)
        self.dropout = nn.Dropout(0.1)
        hidden = config.hidden_size
        self.linear_heads = nn.ModuleList([nn.Linear(hidden, 4) for _ in range(13)] + [nn.Linear(hidden, 2)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask)[0]
        cls = self.dropout(hidden[:, 0, :])
        return [head(cls) for head in self.linear_heads]


def _infer_config(state: dict, num_attention_heads: int | None):
    from transformers import BertConfig

    try:
        vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
        max_pos = state["bert.embeddings.position_embeddings.weight"].shape[0]
        type_vocab = state["bert.embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as err:
        raise CheXbertError(f"checkpoint lacks the BERT tensor {err}; is this a CheXbert checkpoint?") from err
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k)))
    heads = num_attention_heads or max(1, hidden // 64)
    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=intermediate, max_position_embeddings=max_pos, type_vocab_size=type_vocab)


class CheXbertLabeler:
    """Label reports with a local CheXbert checkpoint.

    Parameters
    ----------
    checkpoint : path
        ``chexbert.pth``.
    tokenizer_dir : path
        Directory with the BERT WordPiece vocabulary (``vocab.txt``).
    config_path : path, optional
        ``BertConfig`` JSON; default ``tokenizer_dir/config.json`` if present,
        else inferred from the checkpoint.
    device : str
        Torch device.
    batch_size : int
        Reports per forward pass.

    Raises
    ------
    CheXbertError
        Missing files, or checkpoint keys/shapes that do not fit the model.
    """

    def __init__(self, checkpoint, tokenizer_dir, config_path=None, device: str = "cpu", batch_size: int = 16,
                 num_attention_heads: int | None = None):
        from transformers import BertConfig, BertTokenizer

        checkpoint, tokenizer_dir = Path(checkpoint), Path(tokenizer_dir)
        if not checkpoint.is_file():
            raise CheXbertError(f"CheXbert checkpoint not found: {checkpoint} (the original chexbert.pth)")
        if not (tokenizer_dir / "vocab.txt").is_file():
            raise CheXbertError(f"BERT tokenizer not found: {tokenizer_dir}/vocab.txt (bert-base-uncased files)")
        raw = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if not isinstance(raw, dict) or "model_state_dict" not in raw:
            raise CheXbertError(f"{checkpoint}: expected a dict with 'model_state_dict'")
        state = {}
        for key, value in raw["model_state_dict"].items():
            state[key[len("module."):] if key.startswith("module.") else key] = value
        # transformers >= 4.31 keeps position_ids as a non-persistent buffer.
        state.pop("bert.embeddings.position_ids", None)

        config_path = Path(config_path) if config_path else tokenizer_dir / "config.json"
        if config_path.is_file():
            config = BertConfig.from_dict(json.loads(config_path.read_text()))
        else:
            config = _infer_config(state, num_attention_heads)
        has_pooler = any(k.startswith("bert.pooler.") for k in state)
        model = CheXbertModel(config, add_pooling_layer=has_pooler)
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise CheXbertError(f"{checkpoint}: state dict does not fit CheXbert "
                                f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheXbertError(f"{checkpoint}: tensor shapes do not fit the config: {err}") from err
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = int(batch_size)
        self.tokenizer = BertTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)

    def encode(self, report) -> list[int]:
        """Token ids of one report, as CheXbert's ``tokenize`` builds them."""
        text = " ".join(report.split()) if isinstance(report, str) else ""
        tokens = self.tokenizer.tokenize(text)
        if not tokens:
            return [self.tokenizer.cls_token_id, self.tokenizer.sep_token_id]
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        ids = [self.tokenizer.cls_token_id] + ids + [self.tokenizer.sep_token_id]
        if len(ids) > MAX_TOKENS:
            ids = ids[:MAX_TOKENS - 1] + [self.tokenizer.sep_token_id]
        return ids

    @torch.no_grad()
    def predict_classes(self, reports, progress: bool = False) -> np.ndarray:
        """Head classes [n_reports, 14] in ``CHEXBERT_CONDITIONS`` order."""
        from tqdm import tqdm

        encoded = [self.encode(r) for r in reports]
        order = np.argsort([len(e) for e in encoded], kind="stable")  # less padding per batch
        out = np.zeros((len(encoded), len(CHEXBERT_CONDITIONS)), dtype=np.int64)
        pad = self.tokenizer.pad_token_id or 0
        for start in tqdm(range(0, len(order), self.batch_size), disable=not progress, desc="CheXbert"):
            rows = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for j, i in enumerate(rows):
                ids[j, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[j, :len(encoded[i])] = 1
            logits = self.model(ids.to(self.device), mask.to(self.device))
            out[rows] = torch.stack([head.argmax(dim=1) for head in logits], dim=1).cpu().numpy()
        return out

    def label_reports(self, reports, progress: bool = False) -> list[dict[str, float]]:
        """Label dicts (all 14 observations, ``label_report`` format) per report."""
        classes = self.predict_classes(list(reports), progress=progress)
        results = []
        for row in classes:
            labels = {o: float("nan") for o in CHEXPERT_OBSERVATIONS}
            for cond, cls in zip(CHEXBERT_CONDITIONS, row):
                table = NO_FINDING_CLASS_TO_LABEL if cond == "No Finding" else CLASS_TO_LABEL
                labels[cond] = table[int(cls)]
            results.append(labels)
        return results

    def label_report(self, report) -> dict[str, float]:
        """Labels of one report."""
        return self.label_reports([report])[0]


def load_chexbert(checkpoint, tokenizer_dir, **kwargs) -> CheXbertLabeler | str:
    """A ``CheXbertLabeler``, or ``"n/a: ..."`` when the files are not there.

    Files that exist but do not fit still raise ``CheXbertError``: a broken
    checkpoint should not silently turn into a missing metric.
    """
    if checkpoint is None or not Path(checkpoint).is_file():
        return f"n/a: needs the CheXbert checkpoint chexbert.pth (looked for {checkpoint})"
    if tokenizer_dir is None or not (Path(tokenizer_dir) / "vocab.txt").is_file():
        return f"n/a: needs a local bert-base-uncased tokenizer directory (looked for {tokenizer_dir}/vocab.txt)"
    return CheXbertLabeler(checkpoint, tokenizer_dir, **kwargs)
