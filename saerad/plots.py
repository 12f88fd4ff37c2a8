"""Figures shared by several chapters (matplotlib/seaborn)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image


#: The widest a figure is shown in the book's text column, in inches at the book's 100 dpi (~750 px).
TEXT_WIDTH_INCHES = 7.5


def use_book_style() -> None:
    """One consistent, legible look for every figure of the book.

    Figures are drawn at 100 dpi and sent to the page as PNG at twice that resolution ("retina"), with
    their display size recorded, so a figure ``TEXT_WIDTH_INCHES`` wide fills the text column at its
    natural size and stays sharp on high-density screens. Fonts are at least 9 pt, which is 9 px or more
    as displayed at that size; keep figures no wider than ``TEXT_WIDTH_INCHES`` so they are not shrunk.
    """
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({
        "figure.dpi": 100, "savefig.dpi": 200,
        "font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "xtick.labelsize": 9,
        "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9.5, "figure.titlesize": 11,
    })
    try:  # inside a kernel: send figures as 2x PNG with their display size
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        if get_ipython() is not None:
            set_matplotlib_formats("retina")
    except ImportError:
        pass


def image_grid(
    paths: Sequence[str | Path],
    captions: Sequence[str],
    columns: int = 4,
    size: float = 1.8,
    fontsize: float = 9,
) -> plt.Figure:
    """Show images (grey-scale) in a grid with a caption under each.

    The defaults fit the book's text column (``columns * size`` at most ``TEXT_WIDTH_INCHES``) with captions
    at ``fontsize`` points, wrapped to the width of their image; a longer grid is better shown as several
    figures than shrunk.
    """
    if len(paths) != len(captions):
        raise ValueError(f"image_grid: {len(paths)} images but {len(captions)} captions")
    rows = max(1, math.ceil(len(paths) / columns))
    wrapped = [_wrap(caption, size, fontsize) for caption in captions]
    caption_lines = max((caption.count("\n") + 1 for caption in wrapped), default=1)
    caption_height = caption_lines * fontsize * 1.35 / 72 + 0.1
    figure, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * (size + caption_height)),
                                squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, path, caption in zip(axes.ravel(), paths, wrapped):
        pixels = readable_grey(path)
        if pixels is None:
            unreadable_panel(axis, Path(path).name, fontsize)
        else:
            axis.imshow(pixels, cmap="gray", vmin=0, vmax=255)
        axis.set_title(caption, fontsize=fontsize)
    figure.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.4)
    return figure


def readable_grey(path: str | Path) -> np.ndarray | None:
    """The image at ``path`` as grey levels, or None (with a warning naming the file) when it cannot be decoded.

    A truncated JPEG passes the data stage's header-only check (``verify_images="header"``) and
    fails only here; one bad file must not stop a chapter.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (OSError, ValueError) as error:  # PIL: truncated, not an image, missing
        warnings.warn(f"{path}: cannot be shown ({type(error).__name__}: {error})", stacklevel=3)
        return None


def unreadable_panel(axis: plt.Axes, name: str, fontsize: float = 9) -> None:
    """A grey square reading "unreadable: <name>", in place of an image that could not be decoded."""
    axis.add_patch(plt.Rectangle((0, 0), 1, 1, transform=axis.transAxes, color="#e6e6e6"))
    axis.text(0.5, 0.5, f"unreadable:\n{name}", transform=axis.transAxes, ha="center", va="center",
              fontsize=fontsize * 0.8, wrap=True)


def _wrap(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_inches`` at ``fontsize`` points (average glyph ~0.55 em)."""
    import textwrap

    characters = max(8, int(width_inches * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.fill(line, characters) for line in str(text).split("\n"))


def prevalence_bars(table: pd.DataFrame, label: str, value_columns: Sequence[str], title: str = "") -> plt.Figure:
    """Horizontal bars of one or more prevalence columns (shares in [0, 1]) per label, legible at text width."""
    long = table.melt(id_vars=label, value_vars=list(value_columns), var_name="source", value_name="share")
    height = 0.32 * len(table) + 1.0
    figure, axis = plt.subplots(figsize=(7, height))
    sns.barplot(data=long, y=label, x="share", hue="source", ax=axis, orient="h")
    axis.set_xlabel("share of images / studies")
    axis.set_ylabel("")
    if title:
        axis.set_title(title)
    axis.legend(title=None, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(value_columns), frameon=False)
    axis.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    figure.tight_layout()
    return figure


def projection_panels(
    coordinates: np.ndarray,
    labels: pd.DataFrame,
    columns: int = 4,
    title: str = "",
    size: float = 1.8,
    fontsize: float = 9,
) -> plt.Figure:
    """Small multiples of a 2-D embedding, one panel per label column (orange: rows with the label).

    Panels are ``size`` inches square with titles at ``fontsize`` points, so four columns fit the book's
    text column; show many labels as several figures rather than one shrunk grid. With no label column the
    figure says so instead of being empty.
    """
    names = list(labels.columns)
    if not names:
        figure, axis = plt.subplots(figsize=(columns * size, 1.0))
        axis.axis("off")
        axis.text(0.5, 0.5, "no finding to show", ha="center", va="center", fontsize=fontsize)
        return figure
    rows = math.ceil(len(names) / columns)
    title_height = 2 * fontsize * 1.35 / 72
    figure, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * (size + title_height)),
                                squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, name in zip(axes.ravel(), names):
        positive = labels[name].to_numpy().astype(bool)
        axis.scatter(*coordinates[~positive].T, s=3, c="#c8c8c8", linewidths=0, rasterized=True)
        axis.scatter(*coordinates[positive].T, s=6, c="#d55e00", linewidths=0, rasterized=True)
        share = f"{positive.mean():.0%}" if len(positive) else "n/a"
        axis.set_title(_wrap(f"{str(name).replace('_', ' ')} ({share})", size, fontsize), fontsize=fontsize)
    if title:
        figure.suptitle(title)
    figure.tight_layout(pad=0.3)
    return figure


def array_grid(
    rows: Sequence[Sequence[np.ndarray | None]],
    row_labels: Sequence[str],
    column_titles: Sequence[str] | None = None,
    size: float = 1.25,
    cmaps: Sequence[Sequence[str]] | None = None,
    contours: Sequence[Sequence[np.ndarray | None]] | None = None,
    fontsize: float = 9,
    horizontal_labels: bool = False,
) -> plt.Figure:
    """Images held as arrays in ``[0, 1]``, ``rows[r][c]``, with a label per row.

    ``None`` leaves a cell empty; ``cmaps`` gives a colour map per cell (grey by
    default); ``contours`` outlines a boolean mask (e.g. a planted finding's) on a cell. Titles and row
    labels are set at ``fontsize`` points: keep ``n_cols * size + 0.8`` within ``TEXT_WIDTH_INCHES`` and
    break long titles with newlines. ``horizontal_labels`` writes the row labels across the figure (for
    labels of several lines beside small images); they then take width from the images.
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
                axis.set_title(column_titles[c], fontsize=fontsize)
        if horizontal_labels:  # several lines of label beside a small image: written across, not along it
            axes[r][0].set_ylabel(row_labels[r], fontsize=fontsize, rotation=0, ha="right", va="center",
                                  labelpad=4)
        else:
            axes[r][0].set_ylabel(row_labels[r], fontsize=fontsize)
    figure.tight_layout()
    return figure


def place_labels(
    axis: plt.Axes,
    x: Sequence[float],
    y: Sequence[float],
    labels: Sequence[str],
    fontsize: float = 9,
    marker_radius: float = 4.0,
) -> list:
    """Annotate points so that no label covers another label, a point, or the edge of the axes.

    Each label, in the order given (put the important ones first), takes the first of a ring of candidate
    positions around its point (beside it, then above or below, then diagonally; nearest first) whose text box
    overlaps nothing already placed; a label set diagonally or further away gets a thin leader line. When no candidate is free the least-overlapping one is
    used, so a crowded plot still shows every label (annotate fewer points then).

    Parameters
    ----------
    axis
        Axes whose limits and scales are final (set log scales and limits before calling).
    x, y, labels
        Data coordinates of the points and their texts.
    fontsize
        Label size in points.
    marker_radius
        Half the size of a point's marker, in points, kept clear of labels.

    Returns
    -------
    list of matplotlib Annotation
    """
    if not (len(x) == len(y) == len(labels)):
        raise ValueError(f"place_labels: {len(x)} x, {len(y)} y and {len(labels)} labels; expected equal lengths")
    figure = axis.figure
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    to_pixels = figure.dpi / 72.0
    points = axis.transData.transform(np.column_stack([np.asarray(x, float), np.asarray(y, float)]))
    radius = marker_radius * to_pixels
    occupied = [(px - radius, py - radius, px + radius, py + radius) for px, py in points]
    frame = axis.get_window_extent(renderer)
    # Beside the point first (a label reads as its point's there), then above and below it, then diagonally.
    directions = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]
    candidates = [(dx * distance, dy * distance) for distance in (6, 14, 24, 36) for dx, dy in directions]

    def overlap(box, other) -> float:
        width = min(box[2], other[2]) - max(box[0], other[0])
        height = min(box[3], other[3]) - max(box[1], other[1])
        return width * height if width > 0 and height > 0 else 0.0

    annotations = []
    for (px, py), (data_x, data_y), text in zip(points, zip(x, y), labels):
        best = None
        for offset in candidates:
            annotation = axis.annotate(text, (data_x, data_y), xytext=offset, textcoords="offset points",
                                       fontsize=fontsize, ha="left" if offset[0] > 0 else "right" if offset[0] < 0
                                       else "center", va="bottom" if offset[1] > 0 else "top" if offset[1] < 0
                                       else "center")
            extent = annotation.get_window_extent(renderer)
            box = (extent.x0, extent.y0, extent.x1, extent.y1)
            outside = sum(overlap(box, (edge_x0, edge_y0, edge_x1, edge_y1)) for edge_x0, edge_y0, edge_x1, edge_y1 in (
                (-1e9, -1e9, frame.x0, 1e9), (frame.x1, -1e9, 1e9, 1e9), (-1e9, -1e9, 1e9, frame.y0),
                (-1e9, frame.y1, 1e9, 1e9)))
            cost = outside * 10 + sum(overlap(box, other) for other in occupied)
            annotation.remove()
            if best is None or cost < best[0]:
                best = (cost, offset, box)
            if cost == 0:
                break
        _, offset, box = best
        far = max(abs(offset[0]), abs(offset[1])) > 6 or (offset[0] and offset[1])
        annotation = axis.annotate(
            text, (data_x, data_y), xytext=offset, textcoords="offset points", fontsize=fontsize,
            ha="left" if offset[0] > 0 else "right" if offset[0] < 0 else "center",
            va="bottom" if offset[1] > 0 else "top" if offset[1] < 0 else "center",
            arrowprops={"arrowstyle": "-", "color": "#888888", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 3}
            if far else None)
        occupied.append(box)
        annotations.append(annotation)
    return annotations


def _labelled_rows(row_labels: Sequence[str], columns: int, size: float, fontsize: float):
    """A grid of ``columns`` square panels per row, panels hidden, each row's label wrapped in a left margin."""
    label_width = 1.1
    caption_height = fontsize * 1.5 / 72
    n_rows = max(1, len(row_labels))
    figure, axes = plt.subplots(n_rows, columns + 1, squeeze=False,
                                figsize=(label_width + columns * size, n_rows * (size + caption_height)),
                                gridspec_kw={"width_ratios": [label_width] + [size] * columns})
    for axis in axes.ravel():
        axis.axis("off")
    for r, label in enumerate(row_labels):
        axes[r][0].text(1.0, 0.5, _wrap(label, label_width, fontsize), transform=axes[r][0].transAxes,
                        ha="right", va="center", fontsize=fontsize)
    return figure, axes


def image_rows(
    rows: Sequence[Sequence[str | Path]],
    row_labels: Sequence[str],
    captions: Sequence[Sequence[str]],
    columns: int = 5,
    size: float = 1.3,
    fontsize: float = 9,
) -> plt.Figure:
    """One row of images per subject (e.g. a feature's top-activating images), labelled on the left.

    ``rows[r]`` are the images of row ``r`` (at most ``columns``; fewer leave blank cells), ``captions[r]``
    their captions (short: they are set under each image at ``fontsize`` points) and ``row_labels[r]`` the
    row's label, wrapped to the height of a row. The width is ``columns * size`` plus the label margin:
    keep it within ``TEXT_WIDTH_INCHES``.
    """
    if not (len(rows) == len(row_labels) == len(captions)):
        raise ValueError(f"image_rows: {len(rows)} rows, {len(row_labels)} labels and {len(captions)} caption rows; "
                         "expected equal lengths")
    for number, (paths, texts) in enumerate(zip(rows, captions)):
        if len(paths) != len(texts) or len(paths) > columns:
            raise ValueError(f"image_rows: row {number} has {len(paths)} images and {len(texts)} captions; expected "
                             f"as many captions as images and at most {columns} images")
    figure, axes = _labelled_rows(row_labels, columns, size, fontsize)
    for r, (paths, texts) in enumerate(zip(rows, captions)):
        for axis, path, text in zip(axes[r][1:], paths, texts):
            pixels = readable_grey(path)
            if pixels is None:
                unreadable_panel(axis, Path(path).name, fontsize)
            else:
                axis.imshow(pixels, cmap="gray", vmin=0, vmax=255)
            axis.set_xlabel(text, fontsize=fontsize)
            axis.axis("on")
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
    figure.tight_layout(pad=0.3, h_pad=0.3, w_pad=0.3)
    return figure


def heatmap_rows(
    images: Sequence[np.ndarray],
    heatmaps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    row_labels: Sequence[str],
    captions: Sequence[Sequence[str]],
    columns: int = 4,
    size: float = 1.5,
    fontsize: float = 9,
) -> plt.Figure:
    """Rows of radiographs with a feature's heat map over them and the planted finding's mask outlined.

    ``images[r]``, ``heatmaps[r]`` and ``masks[r]`` are ``[n, H, W]`` arrays of row ``r`` (grey values in
    [0, 1], the feature's map upsampled to the image, bool masks); at most ``columns`` are drawn. Each map is
    scaled to its own largest absolute value (red: pushes the feature up, blue: down), so the picture shows
    *where* the feature fires, not how strongly; the caption says how strongly.
    """
    if not (len(images) == len(heatmaps) == len(masks) == len(row_labels) == len(captions)):
        raise ValueError("heatmap_rows: images, heatmaps, masks, row_labels and captions need one entry per row")
    figure, axes = _labelled_rows(row_labels, columns, size, fontsize)
    for r in range(len(images)):
        for c, axis in enumerate(axes[r][1:][: len(images[r])]):
            heat = np.asarray(heatmaps[r][c], dtype=float)
            limit = float(np.abs(heat).max()) or 1.0
            axis.imshow(images[r][c], cmap="gray", vmin=0, vmax=1)
            axis.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.45)
            if np.asarray(masks[r][c]).any():
                axis.contour(np.asarray(masks[r][c], dtype=float), levels=[0.5], colors="yellow", linewidths=0.8)
            axis.set_xticks([]); axis.set_yticks([])
            axis.axis("on")
            axis.set_xlabel(captions[r][c], fontsize=fontsize)
    figure.tight_layout(pad=0.3)
    return figure
