"""How well single SAE features line up with SynthCXR's planted findings.

On SynthCXR every finding of every image is known, so the question "did the
SAE learn a feature for pleural effusion?" has a measurable answer: the AUROC
of that feature's activation as a score for the finding. A finding counts as
recovered when some single feature reaches AUROC ≥ 0.9 (an image with the
finding outranks one without it nine times in ten; :func:`recovered_fraction`).

The AUROC is the Mann–Whitney statistic with average ranks for ties,
``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, computed for all
features and findings at once without densifying the activations: most of a
feature's activations are zero, and those zeros form one tied block whose
average rank is known in closed form, so only the non-zero entries need
ranking (one sort of the CSC data). Per-finding sums of positive ranks are
then one sparse–dense product ``R^T Y``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp


def _label_matrix(labels: pd.DataFrame, n_rows: int) -> np.ndarray:
    if len(labels) != n_rows:
        raise ValueError(f"labels have {len(labels)} rows but activations have {n_rows}")
    values = labels.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(values).any():
        bad = labels.columns[np.isnan(values).any(axis=0)].tolist()
        raise ValueError(f"labels contain missing values in column(s) {bad}; expected 0/1 or bool")
    if not np.isin(values, (0.0, 1.0)).all():
        bad = labels.columns[(~np.isin(values, (0.0, 1.0))).any(axis=0)].tolist()
        raise ValueError(f"labels must be 0/1 or bool; column(s) {bad} hold other values")
    return values


def _firing_pattern(csc: sp.csc_matrix) -> sp.csc_matrix:
    pattern = csc.copy()
    pattern.data = np.ones_like(pattern.data, dtype=np.float64)
    return pattern


def feature_finding_auroc(activations: sp.spmatrix, labels: pd.DataFrame) -> pd.DataFrame:
    """AUROC of every feature's activation as a score for every finding.

    Parameters
    ----------
    activations
        Sparse ``[n, d_sae]`` activations of the rows to score.
    labels
        ``[n, n_findings]`` of 0/1 or bool, rows aligned with ``activations``.

    Returns
    -------
    DataFrame
        ``[d_sae, n_findings]``, index ``feature``, columns the label columns.
        Dead features (all zeros) get 0.5; a finding without positives or
        without negatives in these rows gets NaN for every feature.
    """
    n_rows, d_sae = activations.shape
    y = _label_matrix(labels, n_rows)
    csc = sp.csc_matrix(activations, dtype=np.float64, copy=True)
    csc.eliminate_zeros()
    csc.sort_indices()
    counts = np.diff(csc.indptr)
    column_of_entry = np.repeat(np.arange(d_sae), counts)
    order = np.lexsort((csc.data, column_of_entry))
    values, columns, rows = csc.data[order], column_of_entry[order], csc.indices[order]

    # Runs of equal (feature, value) share the average of their ranks among the feature's non-zero entries.
    position_in_column = np.arange(len(values)) - csc.indptr[columns]
    run_start = np.ones(len(values), dtype=bool)
    run_start[1:] = (columns[1:] != columns[:-1]) | (values[1:] != values[:-1])
    run_starts = np.flatnonzero(run_start)
    run_lengths = np.diff(np.append(run_starts, len(values)))
    rank_among_nonzero = np.repeat(position_in_column[run_starts] + (run_lengths + 1) / 2.0, run_lengths)

    zeros = n_rows - counts
    negatives = np.bincount(columns[values < 0], minlength=d_sae)
    ranks = rank_among_nonzero + np.where(values > 0, zeros[columns], 0)
    zero_block_rank = negatives + (zeros + 1) / 2.0

    rank_matrix = sp.csc_matrix((ranks, (rows, columns)), shape=(n_rows, d_sae))
    positive_rank_sums = np.asarray(rank_matrix.T @ y)  # [d_sae, F]: ranks of positives among non-zeros
    positives_firing = np.asarray(_firing_pattern(rank_matrix).T @ y)
    n_pos = y.sum(axis=0)
    n_neg = n_rows - n_pos
    rank_sum = positive_rank_sums + (n_pos[None, :] - positives_firing) * zero_block_rank[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    auroc[:, (n_pos == 0) | (n_neg == 0)] = np.nan
    table = pd.DataFrame(auroc, columns=list(labels.columns))
    table.index.name = "feature"
    return table


def _best_two(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the largest and second-largest non-NaN value along axis 0 (lowest position on ties)."""
    filled = np.where(np.isnan(values), -np.inf, values)
    order = np.argsort(-filled, axis=0, kind="stable")
    return order[0], order[1] if values.shape[0] > 1 else np.full(values.shape[1], -1)


def finding_alignment(
    auroc_table: pd.DataFrame, prevalence: pd.Series | dict, selection_auroc: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The single best feature of every finding.

    Parameters
    ----------
    auroc_table
        :func:`feature_finding_auroc` output; the AUROCs reported.
    prevalence
        Share of positive rows per finding (same rows as the AUROC), keyed by finding.
    selection_auroc
        Optional AUROC table on *other* rows (e.g. the training split) used to
        choose each finding's feature; the reported AUROC is then that
        feature's AUROC in ``auroc_table``, free of the optimism of picking
        the best of d_sae features on the rows it is scored on.

    Returns
    -------
    DataFrame
        ``finding, best_feature, auroc, prevalence, runner_up_feature, runner_up_auroc``
        in the table's column order; best_feature is -1 and auroc NaN where the
        finding had no positives or no negatives.
    """
    prevalence = pd.Series(prevalence, dtype=np.float64)
    missing = [f for f in auroc_table.columns if f not in prevalence.index]
    if missing:
        raise ValueError(f"prevalence lacks the finding(s) {missing}")
    values = auroc_table.to_numpy(dtype=np.float64)
    features = auroc_table.index.to_numpy()
    if selection_auroc is not None:
        if not (selection_auroc.index.equals(auroc_table.index) and list(selection_auroc.columns) == list(auroc_table.columns)):
            raise ValueError("selection_auroc must have the features and findings of auroc_table")
        best, second = _best_two(selection_auroc.to_numpy(dtype=np.float64))
    else:
        best, second = _best_two(values)
    columns = np.arange(values.shape[1])
    defined = ~np.isnan(values).all(axis=0)
    if selection_auroc is not None:
        defined &= ~np.isnan(selection_auroc.to_numpy(dtype=np.float64)).all(axis=0)
    has_second = defined & (second >= 0)
    return pd.DataFrame({
        "finding": list(auroc_table.columns),
        "best_feature": np.where(defined, features[best], -1),
        "auroc": np.where(defined, values[best, columns], np.nan),
        "prevalence": prevalence.loc[list(auroc_table.columns)].to_numpy(),
        "runner_up_feature": np.where(has_second, features[np.maximum(second, 0)], -1),
        "runner_up_auroc": np.where(has_second, values[np.maximum(second, 0), columns], np.nan),
    })


def feature_alignment(activations: sp.spmatrix, labels: pd.DataFrame, auroc_table: pd.DataFrame) -> pd.DataFrame:
    """The finding every live feature lines up with best, and how purely.

    Returns
    -------
    DataFrame
        One row per feature that fires on at least one of these rows:
        ``feature, fire_count, aligned_finding, auroc, purity, second_finding, second_auroc``.
        ``purity`` is the share of the rows the feature fires on that have
        ``aligned_finding`` (its precision as a detector); a high second AUROC
        marks a polysemantic feature (or two findings that co-occur).
    """
    n_rows, d_sae = activations.shape
    if auroc_table.shape != (d_sae, labels.shape[1]) or list(auroc_table.columns) != list(labels.columns):
        raise ValueError("auroc_table must be feature_finding_auroc(activations, labels) (same features and findings)")
    y = _label_matrix(labels, n_rows)
    csc = sp.csc_matrix(activations, dtype=np.float64, copy=True)
    csc.eliminate_zeros()
    fire_count = np.diff(csc.indptr)
    positives_firing = np.asarray(_firing_pattern(csc).T @ y)  # [d_sae, F]
    values = auroc_table.to_numpy(dtype=np.float64)
    best, second = _best_two(values.T)
    live = np.flatnonzero(fire_count > 0)
    findings = np.asarray(auroc_table.columns, dtype=object)
    has_second = values.shape[1] > 1
    return pd.DataFrame({
        "feature": auroc_table.index.to_numpy()[live],
        "fire_count": fire_count[live],
        "aligned_finding": findings[best[live]],
        "auroc": values[live, best[live]],
        "purity": positives_firing[live, best[live]] / fire_count[live],
        "second_finding": findings[second[live]] if has_second else None,
        "second_auroc": values[live, second[live]] if has_second else np.nan,
    })


#: A finding is *recovered* when one feature separates it on held-out images at least this well (AUROC): the
#: features chapter's bar, which the reports chapter and the scorecard read from here.
RECOVERY_AUROC = 0.9


def recovered_fraction(alignment: pd.DataFrame, min_prevalence: float = 0.02,
                       threshold: float = RECOVERY_AUROC) -> float:
    """Share of findings with prevalence ≥ ``min_prevalence`` whose best single feature has AUROC ≥ ``threshold``.

    Returns NaN when no finding is that common (nothing to recover).
    """
    missing = {"auroc", "prevalence"} - set(alignment.columns)
    if missing:
        raise ValueError(f"alignment table lacks the column(s) {sorted(missing)}")
    eligible = alignment["prevalence"].to_numpy(dtype=np.float64) >= min_prevalence
    if not eligible.any():
        return float("nan")
    aurocs = alignment["auroc"].to_numpy(dtype=np.float64)[eligible]
    return float(np.mean(np.nan_to_num(aurocs, nan=0.0) >= threshold))


#: Laterality values that put a finding on both sides of the chest.
BOTH_SIDES = ("bilateral", "bibasilar")


def ground_truth_labels(data_dir: str | Path, index: pd.DataFrame, findings: list[str] | None = None,
                        by_side: bool = False) -> pd.DataFrame:
    """SynthCXR's planted findings (0/1) for the images of ``index``, in its row order.

    With ``by_side``, a finding that SynthCXR plants on a side (it has a
    ``<finding>_laterality`` column) becomes two columns, ``<finding> (left)``
    and ``<finding> (right)``; bilateral or bibasilar findings count on both.
    An SAE that learns "left effusion" and "right effusion" as two features
    is then judged on the findings it actually separated.

    Raises if the data stage wrote no ``ground_truth.csv`` (MIMIC-CXR has no
    planted ground truth) or if an image of ``index`` is missing from it.
    """
    from saerad.synthcxr import FINDINGS

    findings = list(FINDINGS) if findings is None else list(findings)
    path = Path(data_dir) / "ground_truth.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: feature/ground-truth alignment needs SynthCXR's planted findings")
    truth = pd.read_csv(path, dtype={"dicom_id": str})
    absent = [f for f in findings if f not in truth.columns]
    if absent:
        raise ValueError(f"{path} lacks the finding column(s) {absent}")
    truth = truth.drop_duplicates("dicom_id").set_index("dicom_id")
    unknown = ~index["dicom_id"].isin(truth.index)
    if unknown.any():
        raise ValueError(f"{path} has no row for {int(unknown.sum())} image(s), e.g. {index['dicom_id'][unknown].iloc[0]}")
    rows = truth.loc[index["dicom_id"].to_numpy()].reset_index(drop=True)
    labels = rows[findings].fillna(0).astype(np.int8)
    if not by_side:
        return labels
    sided = {}
    for finding in findings:
        side_column = f"{finding}_laterality"
        if side_column not in rows.columns:
            sided[finding] = labels[finding]
            continue
        side = rows[side_column].fillna("")
        for name in ("left", "right"):
            sided[f"{finding} ({name})"] = (labels[finding].astype(bool)
                                             & side.isin((name,) + BOTH_SIDES)).astype(np.int8)
    return pd.DataFrame(sided)


def _split_rows(index: pd.DataFrame, splits: tuple[str, ...]) -> np.ndarray:
    rows = np.flatnonzero(index["split"].isin(splits).to_numpy())
    if len(rows) == 0:
        raise ValueError(f"no rows of the split(s) {list(splits)} in the index")
    return rows


def align_to_ground_truth(
    activations: sp.spmatrix, index: pd.DataFrame, data_dir: str | Path, splits: tuple[str, ...] = ("validate", "test"),
    select_splits: tuple[str, ...] | None = None, by_side: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """AUROC table, per-finding and per-feature alignment on the rows of ``splits``.

    Held-out rows by default, so the SAE (trained on the train split) is judged
    on images it never saw.

    Parameters
    ----------
    select_splits
        If given (e.g. ``("train",)``), each finding's feature is chosen on
        these rows and scored on ``splits`` (see :func:`finding_alignment`);
        otherwise it is chosen and scored on the same rows.
    by_side
        Judge side-specific findings per side (see :func:`ground_truth_labels`).

    Returns
    -------
    (auroc_table, finding_table, feature_table)
    """
    if activations.shape[0] != len(index):
        raise ValueError(f"activations have {activations.shape[0]} rows but index has {len(index)}")
    activations = sp.csr_matrix(activations)
    rows = _split_rows(index, splits)
    subset = activations[rows]
    labels = ground_truth_labels(data_dir, index.iloc[rows].reset_index(drop=True), by_side=by_side)
    auroc = feature_finding_auroc(subset, labels)
    selection = None
    if select_splits is not None:
        select_rows = _split_rows(index, select_splits)
        select_labels = ground_truth_labels(data_dir, index.iloc[select_rows].reset_index(drop=True), by_side=by_side)
        selection = feature_finding_auroc(activations[select_rows], select_labels)
    findings = finding_alignment(auroc, labels.mean(axis=0), selection_auroc=selection)
    features = feature_alignment(subset, labels, auroc)
    return auroc, findings, features


def best_feature_pairs(
    activations: sp.spmatrix, index: pd.DataFrame, data_dir: str | Path, candidates: int = 8,
    splits: tuple[str, ...] = ("validate", "test"), select_splits: tuple[str, ...] = ("train",),
    by_side: bool = False,
) -> pd.DataFrame:
    """Is a finding the union of two features? The best pair against the best single feature.

    For each finding, among the ``candidates`` features with the highest AUROC
    on the ``select_splits`` rows, the pair whose element-wise maximum scores
    the finding best on those rows is chosen; both the best single feature's
    and the pair's AUROC are then measured on the ``splits`` rows. A pair far
    above its single feature means the SAE split the finding (e.g. by side or
    size) rather than missed it: feature splitting, not a blind spot.

    Returns
    -------
    DataFrame
        ``finding, prevalence, single_feature, single_auroc, pair, pair_auroc``.
    """
    from sklearn.metrics import roc_auc_score

    activations = sp.csc_matrix(activations)
    select_rows, score_rows = _split_rows(index, select_splits), _split_rows(index, splits)
    select_labels = ground_truth_labels(data_dir, index.iloc[select_rows].reset_index(drop=True), by_side=by_side)
    score_labels = ground_truth_labels(data_dir, index.iloc[score_rows].reset_index(drop=True), by_side=by_side)
    selection = feature_finding_auroc(activations[select_rows], select_labels)
    rows = []
    for finding in select_labels.columns:
        y_select, y_score = select_labels[finding].to_numpy(), score_labels[finding].to_numpy()
        if y_select.min() == y_select.max() or y_score.min() == y_score.max():
            continue  # no positives or no negatives: AUROC undefined
        top = selection[finding].nlargest(candidates).index.to_numpy()
        selected = activations[select_rows][:, top].toarray()
        scored = activations[score_rows][:, top].toarray()
        pairs = [(i, j) for i in range(len(top)) for j in range(i + 1, len(top))]
        first, second = max(pairs, key=lambda pair: roc_auc_score(
            y_select, np.maximum(selected[:, pair[0]], selected[:, pair[1]])))
        rows.append({"finding": finding, "prevalence": float(y_score.mean()), "single_feature": int(top[0]),
                     "single_auroc": float(roc_auc_score(y_score, scored[:, 0])),
                     "pair": f"{top[first]} + {top[second]}",
                     "pair_auroc": float(roc_auc_score(y_score, np.maximum(scored[:, first], scored[:, second])))})
    return pd.DataFrame(rows, columns=["finding", "prevalence", "single_feature", "single_auroc", "pair",
                                       "pair_auroc"])
