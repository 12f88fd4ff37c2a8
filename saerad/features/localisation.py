"""Does a finding's feature point at the finding? Localisation against SynthCXR's planted masks.

SynthCXR stores a pixel mask for every finding it plants in a frontal image
(:func:`saerad.counterfactual.images.load_finding_masks`). Given a heat map
per image (a feature's :mod:`saerad.features.spatial` map, or a baseline),
two measures ask whether it lies on the mask:

Pointing game
    A hit when the map's maximum lies inside the mask. Ties are resolved by
    taking the maximal pixel nearest to the image centre (first in row-major
    order on equal distance). Why: a bilinearly upsampled coarse map is
    constant between a border cell's centre and the image border, so a peak in
    a border cell is a plateau reaching the border; the pixel of the plateau
    nearest the image centre is the cell's centre, where the map says the
    feature is (the first tied pixel would be the image's corner). A perfectly
    flat map thus points at the centre, as the centre prior does: it carries no
    information and scores like no information. The hit rate's 95 % interval is Wilson's
    (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``).
Top-area IoU
    The map's region is its ``k`` highest pixels, ``k`` = the number of mask
    pixels in that image (all pixels tied with the ``k``-th value are kept, so
    the region can be slightly larger). The region thus has the mask's area by
    construction and the IoU judges *where* the map puts it, not how large it
    is; no threshold is tuned. The mean IoU's 95 % interval is a percentile
    bootstrap (:func:`saerad.metrics.bootstrap.bootstrap_ci`, fixed seed),
    resampling images, or whole groups (patients) when ``groups`` is given,
    since a patient's studies share anatomy and findings.

Baselines, scored the same way on the same images and masks:

``centre``
    A centred isotropic Gaussian (standard deviation a quarter of the image
    side): points at the image centre, and its top-area region is a centred
    disc. What "the finding is usually near the middle" alone achieves.
``intensity``
    The image's own grey values, averaged over the same grid of cells as the
    feature map and upsampled the same way (so it is exactly as coarse as the
    feature map): what "the finding is where the image is bright" achieves
    (opacities, metal and bone are bright on a radiograph).

Resolution ceiling. A map upsampled bilinearly from an ``h × w`` grid peaks
next to one of its cell centres (a bilinear surface is largest at a node), so
the pointing game can land only on the one or two pixels nearest each cell
centre along each axis (:func:`grid_pointing_pixels`). A small mask that
covers none of them cannot be hit by the feature or the intensity map, however
right they are: ``grid_ceiling`` is the share of images whose mask covers one
(the best hit rate any map on that grid can reach), ``grid_chance`` the hit
rate of pointing at a uniformly random cell. Read the feature's hit rate
against these two.

Images whose mask is empty at the map's resolution (the finding is labelled
but nothing was drawn) are left out and counted in ``n_empty_mask``; a finding
without any scorable image gets a row of NaN, not an error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats

from saerad.features.spatial import upsample_maps

#: The maps every finding is scored with: the feature's, then the two baselines.
METHODS = ("feature", "centre", "intensity")

#: Standard deviation of the centre prior, as a fraction of the image side.
CENTRE_SIGMA_FRACTION = 0.25

#: Columns of :func:`localisation_row` / :func:`localisation_table`, per method ``m``.
MEASURE_COLUMNS = ("hit_rate", "hit_low", "hit_high", "iou", "iou_low", "iou_high")


# -- checking inputs ---------------------------------------------------------------------------------------------


def _as_maps(maps, name: str, ndim: int = 3) -> np.ndarray:
    array = np.asarray(maps)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have shape {'[n, H, W]' if ndim == 3 else '[H, W]'}, got {array.shape}")
    if array.dtype != bool and not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or inf")
    return array


def _check_same_shape(maps: np.ndarray, masks: np.ndarray, name: str) -> None:
    if maps.shape != masks.shape:
        raise ValueError(f"{name} have shape {maps.shape} but masks have {masks.shape}; expected one map per mask, "
                         "at the masks' resolution")


# -- the two measures --------------------------------------------------------------------------------------------


def pointing_locations(heatmaps) -> np.ndarray:
    """``int64 [n, 2]`` (row, column) each map points at: its maximum, ties resolved towards the image centre."""
    heatmaps = _as_maps(heatmaps, "heatmaps")
    n, height, width = heatmaps.shape
    flat = heatmaps.reshape(n, -1)
    centre_row, centre_column = (height - 1) / 2.0, (width - 1) / 2.0
    locations = np.empty((n, 2), dtype=np.int64)
    for image in range(n):
        tied = np.flatnonzero(flat[image] == flat[image].max())
        rows, columns = np.divmod(tied, width)
        # A border cell's plateau runs out to the image border; its pixel nearest the centre is the cell's centre.
        distance = (rows - centre_row) ** 2 + (columns - centre_column) ** 2
        chosen = int(np.argmin(distance))
        locations[image] = rows[chosen], columns[chosen]
    return locations


def pointing_hits(heatmaps, masks) -> np.ndarray:
    """``bool [n]``: does each map's maximum (:func:`pointing_locations`) lie inside its mask?"""
    heatmaps = _as_maps(heatmaps, "heatmaps")
    masks = _as_maps(masks, "masks").astype(bool)
    _check_same_shape(heatmaps, masks, "heatmaps")
    rows, columns = pointing_locations(heatmaps).T
    return masks[np.arange(len(masks)), rows, columns]


def top_area_regions(heatmaps, areas) -> np.ndarray:
    """``bool [n, H, W]``: each map's ``areas[i]`` highest pixels (and any tied with the last of them).

    An area of 0 gives an empty region.
    """
    heatmaps = _as_maps(heatmaps, "heatmaps")
    areas = np.asarray(areas, dtype=np.int64)
    n = heatmaps.shape[0]
    pixels = heatmaps.shape[1] * heatmaps.shape[2]
    if areas.shape != (n,) or (areas < 0).any() or (areas > pixels).any():
        raise ValueError(f"areas must be {n} pixel counts in [0, {pixels}], got shape {areas.shape}")
    flat = heatmaps.reshape(n, -1)
    descending = -np.sort(-flat, axis=1)
    threshold = descending[np.arange(n), np.maximum(areas, 1) - 1]
    regions = flat >= threshold[:, None]
    regions[areas == 0] = False
    return regions.reshape(heatmaps.shape)


def region_iou(regions, masks) -> np.ndarray:
    """``float64 [n]`` intersection over union of boolean regions and masks (NaN where both are empty)."""
    regions = _as_maps(regions, "regions").astype(bool)
    masks = _as_maps(masks, "masks").astype(bool)
    _check_same_shape(regions, masks, "regions")
    intersection = (regions & masks).sum(axis=(1, 2))
    union = (regions | masks).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


def top_area_iou(heatmaps, masks) -> np.ndarray:
    """IoU of each map's top-area region (area = its mask's pixel count) with the mask."""
    masks = _as_maps(masks, "masks").astype(bool)
    return region_iou(top_area_regions(heatmaps, masks.sum(axis=(1, 2))), masks)


def grid_pointing_pixels(grid: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """``bool [h, w, H, W]``: for each cell of the grid, the pixels nearest its centre where a peak can land.

    With ``align_corners=False`` (:func:`saerad.features.spatial.upsample_maps`)
    cell ``i``'s centre is at pixel coordinate ``(i + 0.5) H / h - 0.5``; the
    pixels on either side of it (one pixel when it falls on one) are kept.
    """
    (cells_h, cells_w), (height, width) = (tuple(int(g) for g in grid), tuple(int(s) for s in shape))
    if min(cells_h, cells_w) < 1 or cells_h > height or cells_w > width:
        raise ValueError(f"grid must be between 1 × 1 and the image size {shape}, got {grid}")

    def nearest(cells: int, size: int) -> np.ndarray:
        centres = (np.arange(cells) + 0.5) * size / cells - 0.5
        near = np.zeros((cells, size), dtype=bool)
        near[np.arange(cells), np.floor(centres).astype(int)] = True
        near[np.arange(cells), np.ceil(centres).astype(int)] = True
        return near

    rows, columns = nearest(cells_h, height), nearest(cells_w, width)
    return rows[:, None, :, None] & columns[None, :, None, :]


def grid_pointing_reach(masks, grid: tuple[int, int]) -> np.ndarray:
    """``bool [n, h · w]``: which cells' peak pixels (:func:`grid_pointing_pixels`) lie in each mask."""
    masks = _as_maps(masks, "masks").astype(bool)
    pixels = grid_pointing_pixels(grid, masks.shape[1:]).reshape(-1, *masks.shape[1:])
    return np.einsum("nij,cij->nc", masks.astype(np.int64), pixels.astype(np.int64)) > 0


# -- baselines ---------------------------------------------------------------------------------------------------


def centre_prior(shape: tuple[int, int], sigma_fraction: float = CENTRE_SIGMA_FRACTION) -> np.ndarray:
    """A centred isotropic Gaussian ``[H, W]`` with standard deviation ``sigma_fraction`` of the shorter side."""
    height, width = (int(s) for s in shape)
    if height < 1 or width < 1 or not sigma_fraction > 0:
        raise ValueError(f"centre_prior needs a positive shape and sigma_fraction, got {shape}, {sigma_fraction}")
    sigma = sigma_fraction * min(height, width)
    rows = (np.arange(height) - (height - 1) / 2.0)[:, None]
    columns = (np.arange(width) - (width - 1) / 2.0)[None, :]
    return np.exp(-(rows ** 2 + columns ** 2) / (2 * sigma ** 2))


def intensity_maps(images, grid: tuple[int, int] | None = None) -> np.ndarray:
    """The images' grey values ``[n, H, W]``, averaged over a ``grid`` of cells and upsampled back.

    ``grid`` should be the feature map's ``(h, w)`` so that the baseline is
    as coarse as the feature; None keeps the pixels as they are.
    """
    images = _as_maps(images, "images").astype(np.float32)
    if grid is None:
        return images
    pooled = F.adaptive_avg_pool2d(torch.from_numpy(images)[:, None], tuple(int(g) for g in grid))[:, 0]
    return upsample_maps(pooled, images.shape[1:])


# -- summaries ---------------------------------------------------------------------------------------------------


def wilson_interval(hits: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``hits / total`` (NaN when ``total`` is 0)."""
    if total <= 0:
        return float("nan"), float("nan")
    interval = stats.binomtest(int(hits), int(total)).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def mean_interval(values: np.ndarray, groups: np.ndarray | None = None, n_resamples: int = 1000, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: percentile bootstrap of the mean, resampling values or whole groups of them.

    With ``groups``, each resample draws groups with replacement and the
    statistic is the mean over all values of the drawn groups (a cluster
    bootstrap). Fewer than two values (or groups) give a NaN interval.
    """
    # Imported here: saerad.metrics loads the report metrics too, which importing saerad.features should not.
    from saerad.metrics.bootstrap import bootstrap_ci

    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if groups is None:
        if len(values) < 2:
            return mean, float("nan"), float("nan")
        _, low, high = bootstrap_ci(values, n_resamples=n_resamples, seed=seed, level=level)
        return mean, low, high
    groups = np.asarray(groups)
    if groups.shape != values.shape:
        raise ValueError(f"groups must give one group per value ({values.shape}), got shape {groups.shape}")
    _, group_of_value = np.unique(groups, return_inverse=True)
    sums = np.bincount(group_of_value, weights=values)
    counts = np.bincount(group_of_value).astype(np.float64)
    if len(sums) < 2:
        return mean, float("nan"), float("nan")
    _, low, high = bootstrap_ci(lambda drawn: sums[drawn].sum() / counts[drawn].sum(), n_studies=len(sums),
                                n_resamples=n_resamples, seed=seed, level=level)
    return mean, low, high


def score_methods(heatmaps, images, masks, grid: tuple[int, int] | None) -> pd.DataFrame:
    """Per image and method: pointing-game hit and top-area IoU.

    Parameters
    ----------
    heatmaps
        ``[n, H, W]`` the feature's maps at the masks' resolution.
    images
        ``[n, H, W]`` grey images (for the intensity baseline).
    masks
        ``[n, H, W]`` bool planted masks, none empty.
    grid
        The feature map's ``(h, w)``, the intensity baseline's cells.

    Returns
    -------
    DataFrame
        ``image`` (position in the inputs), ``method``, ``hit``, ``iou``; ``n × 3`` rows.
    """
    heatmaps = _as_maps(heatmaps, "heatmaps")
    images = _as_maps(images, "images")
    masks = _as_maps(masks, "masks").astype(bool)
    _check_same_shape(heatmaps, masks, "heatmaps")
    _check_same_shape(images, masks, "images")
    if (masks.sum(axis=(1, 2)) == 0).any():
        raise ValueError("masks must not be empty (leave those images out; localisation_row counts them)")
    maps = {"feature": heatmaps,
            "centre": np.broadcast_to(centre_prior(masks.shape[1:]), masks.shape),
            "intensity": intensity_maps(images, grid)}
    frames = [pd.DataFrame({"image": np.arange(len(masks)), "method": method, "hit": pointing_hits(values, masks),
                            "iou": top_area_iou(values, masks)}) for method, values in maps.items()]
    return pd.concat(frames, ignore_index=True)


def localisation_row(finding: str, feature: int, heatmaps, images, masks, grid: tuple[int, int] | None,
                     groups=None, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """One finding's row: image counts, then hit rate and mean IoU with intervals for the feature and baselines.

    Arguments as :func:`score_methods`, plus ``groups`` (one patient id per
    image, for the cluster bootstrap of the IoU; None resamples images) and
    the bootstrap's ``n_resamples``, ``seed`` and ``level``. Images with an
    empty mask are dropped and counted. With no image left every measure is NaN;
    without a ``grid``, so are ``grid_ceiling`` and ``grid_chance``.
    """
    masks = _as_maps(masks, "masks").astype(bool)
    filled = masks.sum(axis=(1, 2)) > 0
    row: dict = {"finding": finding, "feature": int(feature), "n_images": int(filled.sum()),
                 "n_empty_mask": int((~filled).sum()),
                 "mask_share": float(masks[filled].mean()) if filled.any() else float("nan"),
                 "grid_ceiling": float("nan"), "grid_chance": float("nan")}
    if filled.any() and grid is not None:
        reach = grid_pointing_reach(masks[filled], grid)
        row.update(grid_ceiling=float(reach.any(axis=1).mean()), grid_chance=float(reach.mean()))
    if not filled.any():
        row.update({f"{method}_{column}": float("nan") for method in METHODS for column in MEASURE_COLUMNS})
        return row
    kept_groups = None if groups is None else np.asarray(groups)[filled]
    scores = score_methods(np.asarray(heatmaps)[filled], np.asarray(images)[filled], masks[filled], grid)
    for method in METHODS:
        scored = scores[scores["method"] == method]
        hits, total = int(scored["hit"].sum()), len(scored)
        low, high = wilson_interval(hits, total, level)
        iou, iou_low, iou_high = mean_interval(scored["iou"].to_numpy(), kept_groups, n_resamples, seed, level)
        row.update({f"{method}_hit_rate": hits / total, f"{method}_hit_low": low, f"{method}_hit_high": high,
                    f"{method}_iou": iou, f"{method}_iou_low": iou_low, f"{method}_iou_high": iou_high})
    return row


def localisation_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """Rows of :func:`localisation_row` as a table with a fixed column order."""
    columns = ["finding", "feature", "n_images", "n_empty_mask", "mask_share", "grid_ceiling", "grid_chance"] + [
        f"{method}_{column}" for method in METHODS for column in MEASURE_COLUMNS]
    return pd.DataFrame(list(rows), columns=columns)


# -- on the data stage's artifacts -------------------------------------------------------------------------------


def split_side(name: str) -> tuple[str, str | None]:
    """``"pleural_effusion (left)"`` → ``("pleural_effusion", "left")``; a name without a side → ``(name, None)``.

    The side is the patient's, as in ``finding_alignment_by_side.csv`` and SynthCXR's ``<finding>_laterality``.
    """
    match = re.fullmatch(r"(\w+) \((\w+)\)", name)
    return (match.group(1), match.group(2)) if match else (name, None)


def images_with_finding(artifacts_root: str | Path, finding: str, split: str = "test") -> pd.DataFrame:
    """The frontal images of ``split`` in which SynthCXR planted ``finding``.

    ``finding`` may name a side, ``"pleural_effusion (left)"``: then only the images whose finding
    SynthCXR planted on that side (``pleural_effusion_laterality == "left"``; bilateral ones are left out).

    Returns the data stage's ``images.csv`` rows (``dicom_id``, ``subject_id``,
    ``image_path`` made absolute, ...), in file order.
    """
    finding, side = split_side(finding)
    from saerad.counterfactual.images import dataset_root

    data_dir = Path(artifacts_root) / "data"
    truth_path = data_dir / "ground_truth.csv"
    if not truth_path.exists():
        raise FileNotFoundError(f"{truth_path} is missing: localisation needs SynthCXR's planted ground truth")
    truth = pd.read_csv(truth_path, dtype={"dicom_id": str})
    if finding not in truth.columns:
        raise ValueError(f"{truth_path} has no column {finding!r}; expected a SynthCXR finding")
    images = pd.read_csv(data_dir / "images.csv", dtype={"dicom_id": str})
    carries = truth[finding].fillna(0).astype(int) == 1
    if side is not None:
        side_column = f"{finding}_laterality"
        if side_column not in truth.columns:
            raise ValueError(f"{truth_path} has no column {side_column!r}: SynthCXR does not plant {finding} on a side")
        carries &= truth[side_column] == side
    carrying = set(truth.loc[carries, "dicom_id"])
    # Only frontal views have masks.
    rows = images[(images["split"] == split) & images["view_position"].isin(("PA", "AP"))
                  & images["dicom_id"].isin(carrying)].reset_index(drop=True)
    root = dataset_root(artifacts_root)
    rows["image_path"] = [str(root / path) for path in rows["image_path"]]
    return rows


def finding_maps(artifacts_root: str | Path, encoder, sae, finding: str, feature: int, split: str = "test",
                 token_scale: float | None = None, batch_size: int = 64):
    """A feature's heat maps, the grey images and the planted masks of the images of ``split`` carrying ``finding``.

    Returns
    -------
    (rows, heatmaps, images, masks, grid)
        :func:`images_with_finding` rows; ``float32 [n, H, W]`` heat maps and
        ``[n, H, W]`` grey images in ``[0, 1]`` at the encoder's input size;
        bool masks at that size (:func:`saerad.counterfactual.images.load_finding_masks`);
        the feature map's ``(h, w)``. With no image, the arrays are ``[0, 1, 1]`` and ``grid`` None.
    """
    from PIL import Image

    from saerad.counterfactual.images import load_finding_masks, load_pixels
    from saerad.features.spatial import load_token_scale, spatial_attribution

    rows = images_with_finding(artifacts_root, finding, split)
    if rows.empty:
        return rows, np.zeros((0, 1, 1), np.float32), np.zeros((0, 1, 1), np.float32), np.zeros((0, 1, 1), bool), None
    scale = load_token_scale(artifacts_root) if token_scale is None else float(token_scale)
    heatmaps, grid = [], None
    for start in range(0, len(rows), batch_size):
        pictures = []
        for path in rows["image_path"].iloc[start:start + batch_size]:
            with Image.open(path) as picture:
                pictures.append(picture.convert("RGB"))
        result = spatial_attribution(encoder, sae, encoder.preprocess(pictures), [int(feature)], scale)
        heatmaps.append(result.heatmaps[:, 0])
        grid = tuple(int(g) for g in result.position_maps.shape[-2:])
    heatmaps = np.concatenate(heatmaps)
    size = heatmaps.shape[-1]
    if heatmaps.shape[-2] != size:
        raise ValueError(f"heat maps are {heatmaps.shape[-2:]}; the masks are square, so the encoder input must be too")
    images = load_pixels(rows["image_path"], size)
    masks = load_finding_masks(artifacts_root, rows["image_path"], split_side(finding)[0], size)
    return rows, heatmaps, images, masks, grid


def localise_findings(artifacts_root: str | Path, encoder, sae, alignment: pd.DataFrame,
                      findings: Sequence[str] | None = None, split: str = "test", token_scale: float | None = None,
                      batch_size: int = 64, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Localisation of each finding's best-aligned feature on the held-out images that carry the finding.

    Parameters
    ----------
    artifacts_root
        ``artifacts/<profile>`` with the data and encode stages (read only).
    encoder
        :class:`saerad.encode.encoder.ClassTokenEncoder` of the encode stage: a mean-pooled CNN (exact per-cell
        maps) or a DINOv2 ViT (per-patch contributions through the last block's attention); see
        :mod:`saerad.features.spatial` and :mod:`saerad.features.spatial_vit`.
    sae
        The SAE whose features ``alignment`` names.
    alignment
        ``finding, best_feature`` (the features stage's ``finding_alignment.csv``, or
        ``finding_alignment_by_side.csv``, whose ``"<finding> (<side>)"`` rows score that side's images);
        a ``best_feature`` of -1 (no feature chosen) gives a NaN row with ``n_images`` 0.
    findings
        Which findings; default every finding of ``alignment`` that SynthCXR can localise.
    split
        Images scored (held-out ``"test"`` by default).
    token_scale
        Default: the encode stage's ``scale.json``.

    Returns
    -------
    DataFrame
        :func:`localisation_table`, one row per finding, IoU intervals resampling patients.
    """
    from saerad.synthcxr.catalogue import LOCALISABLE

    missing = {"finding", "best_feature"} - set(alignment.columns)
    if missing:
        raise ValueError(f"alignment lacks the column(s) {sorted(missing)}; expected finding_alignment.csv")
    chosen = alignment.drop_duplicates("finding").set_index("finding")["best_feature"]
    findings = ([f for f in chosen.index if split_side(f)[0] in LOCALISABLE] if findings is None
                else list(findings))
    unknown = [f for f in findings if f not in chosen.index]
    if unknown:
        raise ValueError(f"alignment has no row for the finding(s) {unknown}")
    rows = []
    for finding in findings:
        feature = int(chosen[finding])
        if feature < 0:
            empty = np.zeros((0, 1, 1))
            rows.append(localisation_row(finding, feature, empty, empty, empty.astype(bool), None))
            continue
        carrying, heatmaps, images, masks, grid = finding_maps(artifacts_root, encoder, sae, finding, feature, split,
                                                               token_scale, batch_size)
        rows.append(localisation_row(finding, feature, heatmaps, images, masks, grid,
                                     groups=carrying["subject_id"].to_numpy() if len(carrying) else None,
                                     n_resamples=n_resamples, seed=seed))
    return localisation_table(rows)


def centre_prior_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per finding, whether its feature beats the centre prior on the pointing game, and if not, why.

    ``beats_centre``: a higher hit rate; ``clearly_beats_centre``: the two 95 % intervals do not overlap.
    ``why_not`` names the first reason that applies where the feature does not beat the prior: no image to
    score; no grid point of the map lies on any mask (``grid_ceiling`` 0: no map on that grid can hit it); the
    centre prior itself hits the finding (it lies in the middle of the image); else the feature points
    elsewhere.
    """
    rows = []
    for row in table.itertuples(index=False):
        feature, centre = row.feature_hit_rate, row.centre_hit_rate
        beats = bool(np.isfinite(feature) and np.isfinite(centre) and feature > centre)
        clearly = bool(beats and row.feature_hit_low > row.centre_hit_high)
        if beats:
            why = ""
        elif not row.n_images:
            why = "no held-out image carries it"
        elif row.grid_ceiling == 0:
            why = "no cell centre of the map lies on its mask: no map at this resolution can hit it"
        elif centre >= feature and centre > 0:
            why = f"it lies at the image centre, where the prior points ({centre:.0%} hits)"
        else:
            why = "the feature's map peaks elsewhere"
        rows.append({"finding": row.finding, "beats_centre": beats, "clearly_beats_centre": clearly, "why_not": why})
    return pd.DataFrame(rows, columns=["finding", "beats_centre", "clearly_beats_centre", "why_not"])
