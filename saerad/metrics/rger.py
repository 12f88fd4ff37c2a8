"""RGER: the RadGraph entity/relation reward of generated reports.

RGER (Delbrouck et al. 2022, paper Section 5.1) runs the RadGraph
information-extraction model on a generated and a reference report and
compares the extracted entities: the ``partial`` reward of the ``radgraph``
package (an entity counts as matched when its tokens and label agree and,
for entities with relations, when both have a relation).  The per-study
reward is an F1 in [0, 1]; RGER is its mean over studies, so a bootstrap
resamples the per-study rewards (``rger_from_stats``).  A study whose
generated or reference report is empty scores 0, as in the package.

Local model, no downloads
-------------------------
``radgraph.RadGraph`` looks for an unpacked model in
``<model_cache_dir>/<model_type>/`` (``config.json``, ``vocabulary/``,
``weights.th``) and downloads ``StanfordAIMI/RRG_scorers`` only when that
folder is missing or empty.  We therefore point ``model_cache_dir`` at a
scratch folder that we fill with the user's files, so the package's own
loader runs unchanged and never downloads -- no monkeypatching is needed.

The model's ``config.json`` names its BERT encoder (e.g.
``microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract``); the package builds
the encoder from that name's *config* and loads its tokenizer (the encoder
weights come from ``weights.th``).  When the name is not a local folder, pass
``encoder_dir`` = a local copy of that model's ``config.json`` and tokenizer
files; we write a copy of ``config.json`` with the name replaced.

What the user supplies: the ``radgraph.tar.gz`` archive from
``StanfordAIMI/RRG_scorers`` (or its unpacked folder), and ``encoder_dir``.
Without them the metric is ``NA_MODEL``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

NA_MODEL = ("n/a: needs a RadGraph checkpoint (radgraph.tar.gz from the StanfordAIMI/RRG_scorers files, "
            "unpacked or not, plus a local copy of its BERT encoder's config and tokenizer; "
            "see saerad.metrics.rger)")
MODEL_FILES = ("config.json", "weights.th", "vocabulary")


class RadGraphModelError(RuntimeError):
    """The RadGraph model folder or encoder is incomplete or inconsistent."""


def _find_model_root(folder: Path) -> Path | None:
    """The folder holding config.json / weights.th / vocabulary (maybe one level down)."""
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    for c in candidates:
        if all((c / name).exists() for name in MODEL_FILES):
            return c
    return None


def _encoder_names(config: dict) -> list[tuple[tuple[str, ...], str]]:
    paths = [("dataset_reader", "token_indexers", "bert", "model_name"),
             ("model", "embedder", "token_embedders", "bert", "model_name")]
    out = []
    for path in paths:
        node = config
        for key in path:
            if not isinstance(node, dict) or key not in node:
                raise RadGraphModelError(f"RadGraph config.json lacks {'.'.join(path)}")
            node = node[key]
        out.append((path, node))
    return out


def _set(config: dict, path: tuple[str, ...], value) -> None:
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


class RGERScorer:
    """RadGraph ``partial`` reward with a local model.

    Parameters
    ----------
    model_path : path
        ``radgraph.tar.gz`` or the folder it unpacks to.
    encoder_dir : path, optional
        Local copy of the BERT encoder named in the model's config (its
        ``config.json`` and tokenizer files).  Needed unless the config
        already names an existing local folder.
    model_type : str
        ``"radgraph"`` (RGER as published) or ``"radgraph-xl"``.
    cuda : int
        CUDA device index, -1 for CPU.
    work_dir : path, optional
        Scratch folder for the prepared model (a temporary folder by
        default, removed with the scorer).
    """

    def __init__(self, model_path, encoder_dir=None, model_type: str = "radgraph", cuda: int = -1,
                 work_dir=None):
        if model_type not in ("radgraph", "radgraph-xl"):
            raise ValueError(f"model_type must be 'radgraph' or 'radgraph-xl', got {model_type!r}")
        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"RadGraph model not found: {model_path}")
        self._tmp = None
        if work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="saerad-radgraph-")
            work_dir = self._tmp.name
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)

        if model_path.is_file():
            if not tarfile.is_tarfile(model_path):
                raise RadGraphModelError(f"{model_path}: not a model archive (expected radgraph.tar.gz)")
            unpacked = work / "unpacked"
            if not unpacked.exists():
                with tarfile.open(model_path, "r:*") as tar:
                    tar.extractall(unpacked, filter="data")
            model_path = unpacked
        root = _find_model_root(model_path)
        if root is None:
            raise RadGraphModelError(f"{model_path}: no folder with {', '.join(MODEL_FILES)} (an unpacked "
                                     "RadGraph model)")
        config = json.loads((root / "config.json").read_text())
        names = _encoder_names(config)
        if encoder_dir is not None:
            encoder_dir = Path(encoder_dir)
            if not (encoder_dir / "config.json").is_file():
                raise RadGraphModelError(f"encoder_dir {encoder_dir} has no config.json")
            for path, _ in names:
                _set(config, path, str(encoder_dir.resolve()))
        else:
            for path, name in names:
                if not Path(str(name)).is_dir():
                    raise RadGraphModelError(f"the RadGraph config names the encoder {name!r}, which is not a local "
                                             "folder; pass encoder_dir= a local copy of it (config + tokenizer)")

        cache = work / "cache"
        target = cache / model_type
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        (target / "config.json").write_text(json.dumps(config, indent=2))
        for name in ("weights.th", "vocabulary"):
            os.symlink((root / name).resolve(), target / name)

        from radgraph import F1RadGraph

        # RadGraph prints its device; keep the notebook output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            self._f1 = F1RadGraph(reward_level="partial", model_type=model_type, model_cache_dir=str(cache),
                                  cuda=cuda)
        self.model_type = model_type

    def score(self, references, hypotheses) -> dict:
        """RGER of hypotheses against references.

        Parameters
        ----------
        references, hypotheses : list of str
            Aligned, one pair per study; NaN / None count as empty reports.

        Returns
        -------
        dict
            ``rger`` (mean reward), ``per_study`` (numpy array of rewards in
            [0, 1]) and ``n``.
        """
        refs = [r if isinstance(r, str) else "" for r in references]
        hyps = [h if isinstance(h, str) else "" for h in hypotheses]
        if len(refs) != len(hyps):
            raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
        if not refs:
            raise ValueError("RGER needs at least one (reference, hypothesis) pair")
        import torch

        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            _, rewards, _, _ = self._f1(refs=refs, hyps=hyps)
        per = np.asarray(rewards, dtype=float)
        return {"rger": float(per.mean()), "per_study": per, "n": len(per)}

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def rger_from_stats(per_study, indices=None) -> float:
    """RGER of a resample of studies (mean of per-study rewards)."""
    per = np.asarray(per_study, dtype=float)
    return float(per.mean() if indices is None else per[np.asarray(indices)].mean())


def load_rger(model_path, encoder_dir=None, **kwargs) -> RGERScorer | str:
    """An ``RGERScorer``, or ``NA_MODEL`` when no model is supplied / the path does not exist.

    A model that exists but is incomplete still raises ``RadGraphModelError``.
    """
    if model_path is None or not Path(model_path).exists():
        return NA_MODEL + (f" (looked for {model_path})" if model_path is not None else "")
    return RGERScorer(model_path, encoder_dir=encoder_dir, **kwargs)
