"""Glue of the counterfactual chapter: which features, which images, which conditions, which numbers.

For each chosen feature ``i`` (the feature the features chapter aligned with a
finding) the test images are split into those *without* the finding, where
the feature is added (``do(i, β)``) and then removed again (the cycle), and
those *with* it, where it is removed (``do(i, 0)``). Every image is decoded
under every condition from one starting noise (that image's row of a noise
bank seeded by ``seed``), so the images of one row differ only through their
tokens. The measures of :mod:`saerad.counterfactual.axioms` are then taken on
these images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saerad.counterfactual import axioms
from saerad.counterfactual.decoder import ConditionalDDPM, starting_noise
from saerad.counterfactual.images import ImageSet
from saerad.counterfactual.interventions import (
    add_then_remove, code_value, counterfactual_tokens, decode_conditions, reconstruction_token,
)
from saerad.sae.models import SparseAutoencoder

#: Conditions decoded for the images without / with the finding.
CONDITIONS_WITHOUT = ("reconstruction", "null", "no_delta", "add", "cycle")
CONDITIONS_WITH = ("reconstruction", "null", "no_delta", "remove")


def chosen_features(alignment_path: str | Path, findings: list[str]) -> pd.DataFrame:
    """The best feature of each finding in the features chapter's ``finding_alignment.csv``.

    Returns
    -------
    DataFrame
        ``finding, feature, auroc`` in the order of ``findings``; ``feature`` is -1
        where no feature fired for the finding.
    """
    path = Path(alignment_path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the features stage first (SynthCXR only)")
    table = pd.read_csv(path)
    missing = [column for column in ("finding", "best_feature", "auroc") if column not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}")
    table = table.set_index("finding")
    unknown = [finding for finding in findings if finding not in table.index]
    if unknown:
        raise ValueError(f"findings {unknown} are not in {path} (known: {sorted(table.index)})")
    chosen = table.loc[findings, ["best_feature", "auroc"]].rename(columns={"best_feature": "feature"})
    # -1 (no feature fires on any held-out image of the finding) is kept, so the chapter can show it as such.
    return chosen.reset_index().astype({"feature": int})


def features_by_search(artifacts_root: str | Path, findings: list[str]) -> pd.DataFrame:
    """Without planted truth (MIMIC-CXR): the feature the book's text search ranks first for each finding's name.

    The paper picked its features (311, pacemaker; 162, cardiomegaly) by
    reading descriptions; this is the same choice made by the features
    chapter's search (:func:`saerad.features.search.search_from_artifacts`:
    the reports of the studies each feature fires on most), so it is not made by hand.

    Returns
    -------
    DataFrame
        ``finding, feature, score`` (the search's score of the feature for the finding's name).
    """
    from saerad.features.search import search_from_artifacts

    search = search_from_artifacts(artifacts_root)
    rows = []
    for finding in findings:
        match = search.features_for(finding.replace("_", " "), top=1)
        if match.empty:
            raise ValueError(f"no feature's training reports mention {finding!r} "
                             f"(searched under {Path(artifacts_root) / 'features'})")
        rows.append({"finding": finding, "feature": int(match["feature"].iloc[0]),
                     "score": float(match["score"].iloc[0])})
    return pd.DataFrame(rows, columns=["finding", "feature", "score"])


def beta_for(sae: SparseAutoencoder, feature_stats: pd.DataFrame, feature: int, beta: float | None,
             quantile_column: str) -> tuple[float, str]:
    """β on the code scale ``h``, and how it was chosen.

    ``beta`` given: used as it is (Appendix D's 15 is a code value). None:
    the activation at ``quantile_column`` (e.g. ``q99``) of the feature's
    non-zero activations over the data set (``features/feature_stats.csv``,
    reported scale ``h·||W_dec[i]||``), converted to the code scale, i.e. as
    strongly as the feature fires on its strongest images.
    """
    if beta is not None:
        return float(beta), "given (code scale h)"
    if quantile_column not in feature_stats.columns:
        raise ValueError(f"beta_quantile={quantile_column!r} is not a column of feature_stats.csv "
                         f"(columns: {list(feature_stats.columns)})")
    activation = float(feature_stats.set_index("feature").loc[feature, quantile_column])
    return code_value(sae, feature, activation), f"{quantile_column} of the feature's activations ({activation:.3g})"


def pick_rows(labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` rows without and ``count`` rows with the finding, drawn by ``seed``, in row order."""
    labels = np.asarray(labels).astype(bool)
    rng = np.random.default_rng(seed)
    picked = []
    for group in (np.flatnonzero(~labels), np.flatnonzero(labels)):
        picked.append(np.sort(rng.choice(group, size=min(count, len(group)), replace=False)))
    return picked[0], picked[1]


@dataclass
class FeatureRun:
    """Tokens and images of one feature's interventions.

    ``images_without`` / ``images_with`` map each condition of
    :data:`CONDITIONS_WITHOUT` / :data:`CONDITIONS_WITH` (and ``original``,
    the real image) to ``[n, size, size]`` pixels.
    """

    finding: str
    feature: int
    beta: float
    rows_without: np.ndarray
    rows_with: np.ndarray
    images_without: dict[str, np.ndarray] = field(default_factory=dict)
    images_with: dict[str, np.ndarray] = field(default_factory=dict)
    readback: np.ndarray | None = None
    token_return: np.ndarray | None = None
    codes_with: np.ndarray | None = None


@torch.no_grad()
def run_feature(model: ConditionalDDPM, sae: SparseAutoencoder, images: ImageSet, finding: str, feature: int,
                beta: float, rows_without: np.ndarray, rows_with: np.ndarray, noise_bank: torch.Tensor,
                steps: int, batch_size: int = 64) -> FeatureRun:
    """Decode every condition of both groups of images for one feature.

    The SAE work (a few hundred tokens) runs wherever the SAE is; the images are drawn on the decoder's device.
    """
    run = FeatureRun(finding, int(feature), float(beta), rows_without, rows_with)
    z = torch.from_numpy(images.tokens[rows_without]).to(sae.W_dec.device)
    cycle = add_then_remove(sae, z, feature, beta)
    h = sae.encode(z)
    conditions = {"reconstruction": z, "null": counterfactual_tokens(sae, z, feature, h[:, feature], codes=h),
                  "no_delta": reconstruction_token(sae, z), "add": cycle.added, "cycle": cycle.returned}
    run.images_without = decode_conditions(model, conditions, noise_bank[rows_without], steps, batch_size)
    run.images_without["original"] = images.pixels[rows_without]
    # ||z_back - z|| / ||z_add - z||: the share of the token change the cycle fails to undo.
    change = (cycle.added - z).norm(dim=1)
    run.token_return = ((cycle.returned - z).norm(dim=1) / change.clamp_min(1e-12)).cpu().numpy()
    run.readback = cycle.readback.cpu().numpy()

    z = torch.from_numpy(images.tokens[rows_with]).to(sae.W_dec.device)
    h = sae.encode(z)
    conditions = {"reconstruction": z, "null": counterfactual_tokens(sae, z, feature, h[:, feature], codes=h),
                  "no_delta": reconstruction_token(sae, z), "remove": counterfactual_tokens(sae, z, feature, 0.0, codes=h)}
    run.images_with = decode_conditions(model, conditions, noise_bank[rows_with], steps, batch_size)
    run.images_with["original"] = images.pixels[rows_with]
    run.codes_with = h[:, feature].cpu().numpy()
    return run


def noise_bank(count: int, image_size: int, seed: int) -> torch.Tensor:
    """One starting noise per image of the evaluation split (row ``k`` for image ``k``, whatever the feature)."""
    return starting_noise(count, image_size, seed)


#: Why a measure has no value when one group of images is empty (e.g. no test image with a pacemaker).
NO_IMAGE_WITH = "no held-out image with the finding"
NO_IMAGE_WITHOUT = "no held-out image without the finding"


def na_row(feature: int, finding: str, measure: str, reason: str) -> dict:
    """A row for a measure that cannot be taken here, with the reason."""
    return {"feature": feature, "finding": finding, "measure": measure, "value": float("nan"), "n": 0, "N": 0,
            "note": f"n/a: {reason}"}


def measure_feature(run: FeatureRun, classifiers: dict[str, axioms.FindingClassifier] | None,
                    masks: np.ndarray | None, threshold: float) -> list[dict]:
    """The rows of ``axioms.csv`` for one feature.

    A measure that needs the images with (or without) the finding reads n/a, with the
    reason, when the test split has none of them; measures pooled over both groups use
    the group there is.

    Parameters
    ----------
    classifiers
        One classifier per finding of the chapter; the feature's own finding
        measures effectiveness, the others what else the intervention changed.
        None where there are no labels to train them (MIMIC-CXR).
    masks
        Planted masks of ``run.finding`` in the images *with* it, ``[n, size, size]``;
        None where there are none (MIMIC-CXR).
    threshold
        Grey-level change above which a pixel belongs to the segmentation.
    """
    f, finding, rows = run.feature, run.finding, []
    without, with_ = run.images_without, run.images_with
    has_without, has_with = len(run.rows_without) > 0, len(run.rows_with) > 0

    def row_without(measure: str, make) -> dict:
        return make() if has_without else na_row(f, finding, measure, NO_IMAGE_WITHOUT)

    def row_with(measure: str, make) -> dict:
        return make() if has_with else na_row(f, finding, measure, NO_IMAGE_WITH)

    if not has_without and not has_with:
        return [na_row(f, finding, "all", "no held-out image with or without the finding")]
    if classifiers is None:
        rows.append(na_row(f, finding, "effectiveness", "no finding labels to train a classifier on"))
    else:
        own = classifiers[finding]
        rows.append(row_without(axioms.DETECTED_IN_REAL_WITHOUT, lambda: axioms.rate_row(
            f, finding, axioms.DETECTED_IN_REAL_WITHOUT, own.detects(without["original"]),
            "classifier false positives on real images")))
        rows.append(row_without(axioms.DETECTED_IN_RECONSTRUCTIONS_WITHOUT, lambda: axioms.rate_row(
            f, finding, axioms.DETECTED_IN_RECONSTRUCTIONS_WITHOUT, own.detects(without["reconstruction"]),
            "baseline for 'add'")))
        rows.append(row_without(axioms.DETECTED_AFTER_ADD, lambda: axioms.rate_row(
            f, finding, axioms.DETECTED_AFTER_ADD, own.detects(without["add"]),
            f"do(i, beta={run.beta:.3g}) on images without the finding; higher is better")))
        rows.append(row_with(axioms.DETECTED_IN_REAL_WITH, lambda: axioms.rate_row(
            f, finding, axioms.DETECTED_IN_REAL_WITH, own.detects(with_["original"]),
            "classifier sensitivity on real images")))
        rows.append(row_with(axioms.DETECTED_IN_RECONSTRUCTIONS_WITH, lambda: axioms.rate_row(
            f, finding, axioms.DETECTED_IN_RECONSTRUCTIONS_WITH, own.detects(with_["reconstruction"]),
            "baseline for 'remove'")))
        rows.append(row_with(axioms.DETECTED_AFTER_REMOVE, lambda: axioms.rate_row(
            f, finding, axioms.DETECTED_AFTER_REMOVE, own.detects(with_["remove"]),
            "do(i, 0) on images with the finding; lower is better")))
        rows.append(row_without(axioms.ADD_TEST, lambda: axioms.paired_change_row(
            f, finding, axioms.ADD_TEST, own.detects(without["reconstruction"]), own.detects(without["add"]), True)))
        rows.append(row_with(axioms.REMOVE_TEST, lambda: axioms.paired_change_row(
            f, finding, axioms.REMOVE_TEST, own.detects(with_["reconstruction"]), own.detects(with_["remove"]),
            False)))
        for other, classifier in classifiers.items():
            if other == finding:
                continue
            flipped = np.concatenate([
                classifier.detects(without["add"]) != classifier.detects(without["reconstruction"]),
                classifier.detects(with_["remove"]) != classifier.detects(with_["reconstruction"])])
            rows.append(axioms.rate_row(f, finding, f"off-target: {other} decision changed", flipped,
                                        "add and remove together; lower is better"))
    null = np.concatenate([axioms.image_distance(without["null"], without["reconstruction"]),
                           axioms.image_distance(with_["null"], with_["reconstruction"])])
    rows.append(axioms.mean_row(f, finding, axioms.NULL_DISTANCE, null,
                                "mean absolute grey-level difference (0-1 scale); 0 is perfect"))
    no_delta = np.concatenate([axioms.image_distance(without["no_delta"], without["reconstruction"]),
                               axioms.image_distance(with_["no_delta"], with_["reconstruction"])])
    rows.append(axioms.mean_row(f, finding, "composability without delta: |image of decode(h) - reconstruction|",
                                no_delta, "what the null intervention would change if delta were dropped"))
    rows.append(row_without(axioms.EFFECT_SIZE, lambda: axioms.mean_row(
        f, finding, axioms.EFFECT_SIZE, axioms.image_distance(without["add"], without["reconstruction"]),
        "how much 'add' changes the image (scale for reversibility)")))
    rows.append(row_without(axioms.CYCLE_DISTANCE, lambda: axioms.mean_row(
        f, finding, axioms.CYCLE_DISTANCE, axioms.image_distance(without["cycle"], without["reconstruction"]),
        "0 is perfect")))
    token_cycle = "reversibility (token): ||z_cycle - z|| / ||z_add - z||"
    rows.append(row_without(token_cycle, lambda: axioms.mean_row(
        f, finding, token_cycle, run.token_return,
        "share of the token change the cycle leaves; 0 when the SAE reads back beta")))
    remove_effect = "effect size: |remove - reconstruction|"
    rows.append(row_with(remove_effect, lambda: axioms.mean_row(
        f, finding, remove_effect, axioms.image_distance(with_["remove"], with_["reconstruction"]),
        "how much 'remove' changes the image")))
    if masks is None:
        rows.append(na_row(f, finding, "segmentation IoU", "no planted masks (MIMIC-CXR)"))
    elif not has_with:
        rows.append(na_row(f, finding, axioms.SEGMENTATION_IOU, NO_IMAGE_WITH))
    else:
        difference = axioms.difference_map(with_["remove"], with_["reconstruction"])
        iou = axioms.intersection_over_union(axioms.segment(difference, threshold), masks)
        rows.append(axioms.mean_row(f, finding, axioms.SEGMENTATION_IOU,
                                    iou, f"threshold {threshold:g} grey levels; n = images with a planted mask"))
        rows.append(axioms.rate_row(f, finding, "segmentation IoU >= 0.5", np.nan_to_num(iou) >= 0.5,
                                    "images whose segmentation overlaps the planted mask at least half"))
    return rows
