"""Figures shared by several chapters (matplotlib/seaborn)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image


def use_book_style() -> None:
    """One consistent look for every figure of the book."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.titlesize": 10})


def image_grid(
    paths: Sequence[str | Path],
    captions: Sequence[str],
    columns: int = 4,
    size: float = 2.6,
) -> plt.Figure:
    """Show images (grey-scale) in a grid with a caption under each."""
    rows = math.ceil(len(paths) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * (size + 0.6)))
    for axis in np.atleast_1d(axes).ravel():
        axis.axis("off")
    for axis, path, caption in zip(np.atleast_1d(axes).ravel(), paths, captions):
        with Image.open(path) as image:
            axis.imshow(np.asarray(image.convert("L")), cmap="gray", vmin=0, vmax=255)
        axis.set_title(caption, fontsize=7, wrap=True)
    figure.tight_layout()
    return figure


def prevalence_bars(table: pd.DataFrame, label: str, value_columns: Sequence[str], title: str) -> plt.Figure:
    """Horizontal bars of one or more prevalence columns per label."""
    long = table.melt(id_vars=label, value_vars=list(value_columns), var_name="source", value_name="share")
    height = 0.35 * len(table) + 1.2
    figure, axis = plt.subplots(figsize=(7, height))
    sns.barplot(data=long, y=label, x="share", hue="source", ax=axis, orient="h")
    axis.set_xlabel("share of images / studies")
    axis.set_ylabel("")
    axis.set_title(title)
    axis.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    figure.tight_layout()
    return figure


def projection_panels(
    coordinates: np.ndarray,
    labels: pd.DataFrame,
    columns: int = 4,
    title: str = "",
) -> plt.Figure:
    """Small multiples of a 2-D embedding, one panel per label column."""
    names = list(labels.columns)
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 2.8, rows * 2.8), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, name in zip(axes.ravel(), names):
        positive = labels[name].to_numpy().astype(bool)
        axis.scatter(*coordinates[~positive].T, s=3, c="#c8c8c8", linewidths=0, rasterized=True)
        axis.scatter(*coordinates[positive].T, s=5, c="#d55e00", linewidths=0, rasterized=True)
        axis.set_title(f"{name} ({positive.mean():.0%})", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def array_grid(
    rows: Sequence[Sequence[np.ndarray | None]],
    row_labels: Sequence[str],
    column_titles: Sequence[str] | None = None,
    size: float = 1.25,
    cmaps: Sequence[Sequence[str]] | None = None,
    contours: Sequence[Sequence[np.ndarray | None]] | None = None,
) -> plt.Figure:
    """Images held as arrays in ``[0, 1]``, ``rows[r][c]``, with a label per row.

    ``None`` leaves a cell empty; ``cmaps`` gives a colour map per cell (grey by
    default); ``contours`` outlines a boolean mask (e.g. a planted finding's) on a cell.
    """
    n_rows, n_cols = len(rows), len(rows[0])
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * size + 0.8, n_rows * size + 0.3), squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            axis = axes[r][c]
            if rows[r][c] is None:
                axis.axis("off")
                continue
            axis.imshow(rows[r][c], cmap=(cmaps[r][c] if cmaps else "gray"), vmin=0, vmax=1, interpolation="nearest")
            if contours is not None and contours[r][c] is not None:
                axis.contour(contours[r][c], levels=[0.5], colors="#00b4ff", linewidths=0.7)
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0 and column_titles:
                axis.set_title(column_titles[c], fontsize=7)
        axes[r][0].set_ylabel(row_labels[r], fontsize=7)
    figure.tight_layout()
    return figure
