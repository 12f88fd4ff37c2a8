"""The encode stage's artifacts: class tokens, their index and scale.

Layout of ``artifacts/<profile>/encode/``::

    class_tokens.npy     float32 [n_images, dim], raw encoder output, rows as tokens_index.csv
    tokens_index.csv     row, dicom_id, subject_id, study_id, split
    scale.json           {"scale": c, "dim": d, ...}: multiply tokens by c so that mean L2 norm = sqrt(d)
    probe_auroc.csv      finding, prevalence, auroc (+ n_test_positive, probed)

Later stages call :func:`load_class_tokens`, which applies the scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from saerad.io import read_json, write_json, write_table
from saerad.encode.encoder import norm_scale
from saerad.synthcxr.catalogue import DEVICES


def save_index_and_scale(out_dir: str | Path, images: pd.DataFrame, tokens: np.ndarray, encoder_name: str) -> dict:
    """Write ``tokens_index.csv`` and ``scale.json`` (scale fitted on the training split)."""
    out_dir = Path(out_dir)
    index = images[["dicom_id", "subject_id", "study_id", "split"]].reset_index(drop=True)
    index.insert(0, "row", np.arange(len(index)))
    index["encoded"] = np.isfinite(tokens).all(axis=1)
    write_table(out_dir / "tokens_index.csv", index)
    train = tokens[(index["split"] == "train").to_numpy() & index["encoded"].to_numpy()]
    scale = norm_scale(train)
    record = {
        "scale": scale,
        "dim": int(tokens.shape[1]),
        "fitted_on": "train split",
        "mean_norm_before": float(np.linalg.norm(train.astype(np.float64), axis=1).mean()),
        "mean_norm_after": float(np.linalg.norm(train.astype(np.float64) * scale, axis=1).mean()),
        "target_mean_norm": float(np.sqrt(tokens.shape[1])),
        "encoder": encoder_name,
    }
    write_json(out_dir / "scale.json", record)
    return record


def load_class_tokens(
    artifacts_root: str | Path, split: str | None = None, scaled: bool = True, mmap: bool = True,
    arm: str | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Class tokens of the encode stage (scaled as in Appendix B.3) with their index rows.

    Parameters
    ----------
    artifacts_root
        ``artifacts/<profile>``.
    split
        ``"train"``, ``"validate"``, ``"test"`` or None for all rows.
    scaled
        Multiply by the stored constant so the training tokens' mean norm is sqrt(dim).
    mmap
        Memory-map the token file instead of reading it (paper scale).
    arm
        None: the profile's encoder. Otherwise the name of a comparison arm of
        the encode stage (``encode/arms/<arm>/``, :mod:`saerad.encode.comparison`):
        its tokens, in the same rows, with its own scale.

    Returns
    -------
    (tokens, index)
        Images the encoder could not read are left out of both.
    """
    stage = Path(artifacts_root) / "encode"
    folder = stage if arm is None else stage / "arms" / arm
    if not (folder / "class_tokens.npy").exists():
        what = "" if arm is None else f" (comparison arm {arm!r}; arms written: {_arm_names(stage)})"
        raise FileNotFoundError(f"{folder / 'class_tokens.npy'} is missing{what}: run the encode stage first")
    tokens = np.load(folder / "class_tokens.npy", mmap_mode="r" if mmap else None)
    index = pd.read_csv(stage / "tokens_index.csv", dtype={"dicom_id": str})
    if len(index) != len(tokens):
        raise ValueError(f"{folder / 'class_tokens.npy'} has {len(tokens)} rows but {stage / 'tokens_index.csv'} "
                         f"has {len(index)}: re-run the encode stage")
    keep = index["encoded"].to_numpy() & np.isfinite(np.asarray(tokens[:, :1])).ravel()
    if split is not None:
        keep = keep & (index["split"] == split).to_numpy()
    rows = np.flatnonzero(keep)
    selected = np.asarray(tokens[rows], dtype=np.float32)
    if scaled:
        selected *= np.float32(read_json(folder / "scale.json")["scale"])
    return selected, index.iloc[rows].reset_index(drop=True)


def _arm_names(stage: Path) -> list[str]:
    arms = stage / "arms"
    return sorted(path.name for path in arms.iterdir() if path.is_dir()) if arms.is_dir() else []


def probe_labels(data_dir: str | Path, index: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """0/1 labels per image for the linear probes, aligned with ``index``.

    SynthCXR's planted ground truth when the data stage wrote it; otherwise
    the report's CheXpert labels (positive = 1, anything else = 0), which is
    all MIMIC-CXR offers.
    """
    data_dir = Path(data_dir)
    truth_path = data_dir / "ground_truth.csv"
    if truth_path.exists():
        from saerad.synthcxr import FINDINGS

        truth = pd.read_csv(truth_path, dtype={"dicom_id": str}).set_index("dicom_id")
        labels = truth.loc[index["dicom_id"], list(FINDINGS)].reset_index(drop=True).fillna(0).astype(int)
        return labels, "SynthCXR ground truth (planted in the image)"
    from saerad.mimic.loader import CHEXPERT_OBSERVATIONS

    studies = pd.read_csv(data_dir / "studies.csv").set_index("study_id")
    labels = (studies.loc[index["study_id"], list(CHEXPERT_OBSERVATIONS)] == 1).astype(int).reset_index(drop=True)
    return labels, "CheXpert labels of the report (positive = 1)"


def write_probe_table(out_dir: str | Path, table: pd.DataFrame) -> Path:
    """``probe_auroc.csv`` with the columns ``finding, prevalence, auroc`` first."""
    ordered = table[["finding", "prevalence", "auroc"] + [c for c in table.columns if c not in ("finding", "prevalence", "auroc")]]
    return write_table(Path(out_dir) / "probe_auroc.csv", ordered)


def encoder_table(description: dict[str, str]) -> pd.DataFrame:
    """:meth:`saerad.encode.encoder.ClassTokenEncoder.describe` as a two-column table, sizes written as ``H × W``."""
    import ast

    rows = []
    for name, value in description.items():
        text = str(value)
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, dict) and {"height", "width"} <= set(parsed):
            text = f"{parsed['height']} × {parsed['width']} pixels"
        elif isinstance(parsed, dict) and "shortest_edge" in parsed:
            text = f"shortest edge {parsed['shortest_edge']} pixels"
        rows.append({"property": name, "value": text})
    return pd.DataFrame(rows, columns=["property", "value"])


#: Label columns that name devices rather than findings of the body (SynthCXR's and CheXpert's).
DEVICE_LABELS = tuple(DEVICES) + ("Support Devices",)


def finding_groups(labels: list[str]) -> dict[str, list[str]]:
    """Split label names into ``{"pathologies": [...], "devices": [...]}``, keeping their order.

    For figures that show one idea each: what the body shows, and what was put into it.
    """
    return {"pathologies": [name for name in labels if name not in DEVICE_LABELS],
            "devices": [name for name in labels if name in DEVICE_LABELS]}
