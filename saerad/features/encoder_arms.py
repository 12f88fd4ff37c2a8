"""The features chapter's questions asked of the main SAE on another encoder's tokens (issue 21).

The SAE chapter trains the main SAE a second time, with the same recipe, on the
tokens of each comparison arm of the encode stage (the demo's: the supervised
encoder, "an encoder that was told the answers"). This module reads those SAEs
and answers, for each encoder:

* **recovery**: which planted findings (and findings by side) a single feature
  separates at AUROC ≥ 0.9 (:func:`recovery_by_encoder`);
* **explanation scores**: the chapter's describer and scorer on that SAE
  (:func:`describe_and_score`);
* **what the largest features track** when it is not a finding: SynthCXR also
  records how each image was taken and who the patient is (view, orientation,
  rotation, exposure, habitus, sex, age, ...); :func:`largest_features_reading`
  puts each of the most frequent features' best finding beside its best such
  *nuisance factor*.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from saerad.features import alignment, stage
from saerad.features.activations import sparse_feature_activations

#: Ground-truth columns that describe the image or the patient rather than a finding.
CATEGORICAL_NUISANCE = ("view_position", "patient_orientation", "sex", "setting", "habitus", "inverted", "piercing",
                        "scoliosis")
CONTINUOUS_NUISANCE = ("age", "rotation_deg", "exposure_brightness", "exposure_contrast", "exposure_gamma")
#: A feature "tracks" a factor when its activation separates the factor at this AUROC or more.
TRACKS_AUROC = 0.75


def arm_activations(sae, artifacts_root: str | Path, arm: str, index: pd.DataFrame, chunk_size: int,
                    device: str) -> sp.csr_matrix:
    """The activations of ``sae`` on the comparison arm's tokens, in the rows of ``index`` (the main encoding's).

    Raises a ValueError naming the files when the arm's readable images differ from the main encoder's, so
    that rows of the two encoders are never silently mismatched.
    """
    from saerad.encode.tokens import load_class_tokens

    tokens, arm_index = load_class_tokens(artifacts_root, None, arm=arm)
    if list(arm_index["dicom_id"]) != list(index["dicom_id"]):
        raise ValueError(f"the comparison arm {arm!r} (encode/arms/{arm}/class_tokens.npy) holds "
                         f"{len(arm_index)} readable images and the main encoding {len(index)}, or in another "
                         "order; re-run the encode stage")
    return sparse_feature_activations(sae, tokens, chunk_size, device)


def recovery_by_encoder(tables: dict[str, pd.DataFrame], min_prevalence: float = 0.02,
                        threshold: float = alignment.RECOVERY_AUROC) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per finding, each encoder's best single-feature AUROC; and a summary row per encoder.

    Parameters
    ----------
    tables
        Encoder name -> :func:`saerad.features.alignment.align_to_ground_truth`'s finding table
        (``finding, best_feature, auroc, prevalence``), in the order the columns should appear.
    min_prevalence, threshold
        As :func:`saerad.features.alignment.recovered_fraction`.

    Returns
    -------
    (per_finding, summary)
        ``per_finding``: ``finding, prevalence`` and one AUROC column per encoder (findings below
        ``min_prevalence`` left out). ``summary``: ``encoder, recovered, findings, recovered_fraction,
        median_best_auroc``.
    """
    per_finding, summary = None, []
    for name, table in tables.items():
        common = table[table["prevalence"] >= min_prevalence]
        column = common[["finding", "prevalence", "auroc"]].rename(columns={"auroc": name})
        per_finding = column if per_finding is None else per_finding.merge(column.drop(columns="prevalence"),
                                                                              on="finding", how="outer")
        summary.append({"encoder": name, "recovered": int((common["auroc"] >= threshold).sum()),
                        "findings": len(common), "recovered_fraction": alignment.recovered_fraction(table),
                        "median_best_auroc": float(common["auroc"].median()) if len(common) else float("nan")})
    if per_finding is None:
        per_finding = pd.DataFrame(columns=["finding", "prevalence"])
    return per_finding.reset_index(drop=True), pd.DataFrame(summary)


def describe_and_score(activations: sp.csr_matrix, index: pd.DataFrame, findings_text: pd.Series,
                       describer_client, scorer_client, out_dir: str | Path, *, top_k: int, per_bin: int,
                       negatives: int, seed: int) -> tuple[list, pd.DataFrame]:
    """The chapter's annotation and explanation scoring, for another SAE's activations.

    Describes every live feature from its ``top_k`` training reports and scores each description on held-out
    studies, exactly as the chapter's own cells do for its SAE; descriptions go to ``out_dir/descriptions.jsonl``.

    Returns
    -------
    (descriptions, scores)
        As :func:`saerad.features.stage.describe_live_features` and
        :func:`saerad.features.explanation.explanation_scores`.
    """
    from saerad.features.explanation import explanation_scores, scoring_sample

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    live = np.flatnonzero(np.diff(sp.csc_matrix(activations).indptr) > 0).tolist()
    top_reports, _ = stage.training_top_reports(activations, index, findings_text, live, top_k)
    descriptions = stage.describe_live_features(top_reports, live, describer_client, out_dir / "descriptions.jsonl")
    held_out_rows = stage.split_rows(index, ("validate", "test"))
    held_out_index = index.iloc[held_out_rows].reset_index(drop=True)
    described = [description.feature for description in descriptions if description.ok]
    sample = scoring_sample(activations[held_out_rows], held_out_index["study_id"].to_numpy(), described,
                            per_bin=per_bin, negatives=negatives, seed=seed)
    scores, _ = explanation_scores(sample, {d.feature: d for d in descriptions}, findings_text.to_dict(),
                                   scorer_client, progress=False)
    return descriptions, scores


def nuisance_labels(data_dir: str | Path, index: pd.DataFrame, min_prevalence: float = 0.02) -> pd.DataFrame:
    """0/1 indicators of how each image was taken and who the patient is, in the rows of ``index``.

    A categorical column gives one indicator per level seen in at least ``min_prevalence`` (and at most
    ``1 - min_prevalence``) of the rows, named ``"column: level"``; a continuous one gives two, its top and
    bottom quarter (``"column: top quarter"``). Columns the ground truth lacks are skipped.
    """
    truth = pd.read_csv(Path(data_dir) / "ground_truth.csv", dtype={"dicom_id": str}).set_index("dicom_id")
    rows = truth.loc[index["dicom_id"]].reset_index(drop=True)
    indicators = {}
    for column in CATEGORICAL_NUISANCE:
        if column not in rows:
            continue
        values = rows[column].astype(str)
        for level, share in values.value_counts(normalize=True).items():
            if min_prevalence <= share <= 1 - min_prevalence:
                indicators[f"{column}: {level}"] = (values == level).astype(int)
    for column in CONTINUOUS_NUISANCE:
        if column not in rows:
            continue
        values = pd.to_numeric(rows[column], errors="coerce")
        low, high = values.quantile([0.25, 0.75])
        indicators[f"{column}: top quarter"] = (values > high).astype(int)
        indicators[f"{column}: bottom quarter"] = (values < low).astype(int)
    return pd.DataFrame(indicators)


def largest_features_reading(activations: sp.csr_matrix, index: pd.DataFrame, data_dir: str | Path, n: int = 20,
                             splits: Sequence[str] = ("validate", "test")) -> pd.DataFrame:
    """The ``n`` features that fire on most images: the finding and the nuisance factor each separates best.

    AUROCs are measured on the held-out rows (``splits``), findings by side where SynthCXR plants a side.

    Returns
    -------
    DataFrame
        ``feature, density, best_finding, finding_auroc, best_nuisance, nuisance_auroc, tracks``, where
        ``tracks`` is ``"finding"`` or ``"nuisance"`` (whichever AUROC is larger, when it reaches
        :data:`TRACKS_AUROC`) or ``"neither"``.
    """
    activations = sp.csr_matrix(activations)
    fire_counts = np.diff(sp.csc_matrix(activations).indptr)
    order = np.lexsort((np.arange(len(fire_counts)), -fire_counts))
    largest = [int(f) for f in order[:n] if fire_counts[f] > 0]
    rows = stage.split_rows(index, tuple(splits))
    held_out_index = index.iloc[rows].reset_index(drop=True)
    subset = activations[rows][:, largest]
    findings = alignment.ground_truth_labels(data_dir, held_out_index, by_side=True)
    nuisance = nuisance_labels(data_dir, held_out_index)
    finding_auroc = alignment.feature_finding_auroc(subset, findings)
    nuisance_auroc = alignment.feature_finding_auroc(subset, nuisance)
    table = []
    for position, feature in enumerate(largest):
        best_finding, f_auroc = _best_of(finding_auroc.iloc[position])
        best_nuisance, n_auroc = _best_of(nuisance_auroc.iloc[position])
        best = np.nanmax([f_auroc, n_auroc, -np.inf])
        tracks = ("neither" if not best >= TRACKS_AUROC
                  else "finding" if not n_auroc > f_auroc else "nuisance")
        table.append({"feature": feature, "density": fire_counts[feature] / activations.shape[0],
                      "best_finding": best_finding, "finding_auroc": f_auroc, "best_nuisance": best_nuisance,
                      "nuisance_auroc": n_auroc, "tracks": tracks})
    return pd.DataFrame(table)


def _best_of(aurocs: pd.Series) -> tuple[str, float]:
    """The label with the largest AUROC and that AUROC (``("", nan)`` when none could be measured)."""
    measured = aurocs.dropna()
    if measured.empty:
        return "", float("nan")
    return str(measured.idxmax()), float(measured.max())


def encoder_summary(activations_by_encoder: dict[str, sp.spmatrix], findings_by_encoder: dict[str, pd.DataFrame],
                    sides_by_encoder: dict[str, pd.DataFrame], scores_by_encoder: dict[str, pd.DataFrame],
                    largest_by_encoder: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per encoder's SAE, and the per-finding recovery of all of them.

    The ``*_by_encoder`` mappings are keyed by encoder name (the first is the profile's own); the finding,
    side and largest-feature mappings are empty without planted ground truth, and their columns are then NaN.

    Returns
    -------
    (summary, recovery)
        ``summary``: ``encoder, l0, live_features, recovered_fraction, recovered_by_side_fraction,
        median_explanation_auroc, largest_tracking_finding, largest_tracking_nuisance, largest_tracking_neither``.
        ``recovery``: :func:`recovery_by_encoder`'s per-finding table for the findings (``judged`` =
        ``"finding"``) and for the findings by side (``"finding and side"``).
    """
    rows = []
    for name, activations in activations_by_encoder.items():
        activations = sp.csr_matrix(activations)
        scores = scores_by_encoder.get(name)
        row = {"encoder": name, "l0": activations.nnz / max(activations.shape[0], 1),
               "live_features": int((np.diff(sp.csc_matrix(activations).indptr) > 0).sum()),
               "recovered_fraction": (alignment.recovered_fraction(findings_by_encoder[name])
                                      if name in findings_by_encoder else float("nan")),
               "recovered_by_side_fraction": (alignment.recovered_fraction(sides_by_encoder[name])
                                              if name in sides_by_encoder else float("nan")),
               "median_explanation_auroc": (float(scores["auroc"].median()) if scores is not None and len(scores)
                                            else float("nan"))}
        largest = largest_by_encoder.get(name)
        for kind in ("finding", "nuisance", "neither"):
            row[f"largest_tracking_{kind}"] = (int((largest["tracks"] == kind).sum()) if largest is not None
                                               else float("nan"))
        rows.append(row)
    recovery = pd.concat([recovery_by_encoder(findings_by_encoder)[0].assign(judged="finding"),
                          recovery_by_encoder(sides_by_encoder)[0].assign(judged="finding and side")],
                         ignore_index=True)
    return pd.DataFrame(rows), recovery[["judged"] + [c for c in recovery.columns if c != "judged"]]


def encoder_reading(summary: pd.DataFrame, largest_by_encoder: dict[str, pd.DataFrame]) -> dict[str, str]:
    """The encoder comparison in words, from the numbers: ``{"summary": ..., "largest": ...}``."""
    if len(summary) < 2:
        note = ("n/a: no comparison arm in this run (`encoder_arms = []`), so only the profile's own encoder's "
                "SAE is read.")
        return {"summary": note, "largest": ""}
    main, other = summary.iloc[0], summary.iloc[1]

    def share(value: float) -> str:
        return "n/a" if pd.isna(value) else f"{value:.0%}"

    text = (f"One feature recovers {share(main['recovered_fraction'])} of the common findings on the "
            f"{main['encoder']} SAE against {share(other['recovered_fraction'])} on the {other['encoder']} SAE, and "
            f"{share(main['recovered_by_side_fraction'])} against {share(other['recovered_by_side_fraction'])} when "
            f"each finding is judged on each side. The median explanation score is "
            f"{main['median_explanation_auroc']:.2f} against {other['median_explanation_auroc']:.2f}.")
    if not pd.isna(main["recovered_fraction"]) and not pd.isna(other["recovered_fraction"]):
        if main["recovered_fraction"] < other["recovered_fraction"]:
            text += (f" The {other['encoder']} encoder's advantage reflects the head start its labels gave: the findings "
                     f"were put along their own directions before the SAE looked. What the {main['encoder']} SAE "
                     "recovers it found in a token no label shaped, as SAE-Rad's claim requires.")
        else:
            text += (f" Even without labels the {main['encoder']} SAE recovers as many findings as the one on the "
                     f"{other['encoder']} tokens.")
    largest = ""
    if largest_by_encoder:
        counts = {name: table["tracks"].value_counts() for name, table in largest_by_encoder.items()}
        parts = [f"{int(c.get('finding', 0))} track a finding, {int(c.get('nuisance', 0))} a nuisance factor and "
                 f"{int(c.get('neither', 0))} neither on the {name} SAE" for name, c in counts.items()]
        size = len(next(iter(largest_by_encoder.values())))
        largest = f"Of the {size} most frequent features, " + "; ".join(parts) + "."
    return {"summary": text, "largest": largest}
