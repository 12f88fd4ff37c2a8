"""The counterfactual chapter's set-up, shared by the chapter and the worked solutions of its exercises.

Which feature stands for each finding and at which β it is added, which held-out images are intervened on,
and the judges (pixel classifiers) that decide whether an image shows a finding: the chapter
(``notebooks/06_counterfactual.ipynb``) and :mod:`saerad.book.solutions.ch06_counterfactual` both build
these here, so an exercise that changes one parameter reruns exactly the chapter's experiment otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from saerad.counterfactual import axioms, experiment
from saerad.counterfactual.images import ImageSet
from saerad.sae.models import SparseAutoencoder

#: Columns of ``counterfactuals/features.csv``, whether or not a feature was found for every finding.
CHOICE_COLUMNS = ("finding", "feature", "chosen_by", "beta_code", "decoder_norm", "beta_reported", "beta_from")


def feature_choices(artifacts_root: str | Path, sae: SparseAutoencoder, findings: Sequence[str],
                    beta: float | None, beta_quantile: str) -> tuple[pd.DataFrame, bool]:
    """The feature of each finding and its β, and whether the data have planted truth.

    With SynthCXR's ground truth the feature is the one the features chapter aligned best with the finding
    (``features/finding_alignment.csv``); on MIMIC-CXR, the features chapter's search's first hit for the finding's name.

    Returns
    -------
    (choices, has_ground_truth)
        ``choices`` has :data:`CHOICE_COLUMNS` plus the alignment's score column (``auroc`` or
        the search's ``score``); ``feature`` is -1 and the β columns NaN where no feature fires for the finding.
    """
    root = Path(artifacts_root)
    has_ground_truth = (root / "data" / "ground_truth.csv").exists()
    if has_ground_truth:
        chosen = experiment.chosen_features(root / "features" / "finding_alignment.csv", list(findings))
        chosen_by = "best AUROC in features/finding_alignment.csv"
    else:
        chosen = experiment.features_by_search(root, list(findings))
        chosen_by = "first hit of the features chapter's search"
    stats_path = root / "features" / "feature_stats.csv"
    if not stats_path.exists():
        raise FileNotFoundError(f"{stats_path} is missing: run the features stage first")
    feature_stats = pd.read_csv(stats_path)
    rows = []
    for row in chosen.itertuples(index=False):
        entry = {"finding": row.finding, "feature": int(row.feature), "chosen_by": chosen_by}
        if row.feature >= 0:
            beta_code, beta_from = experiment.beta_for(sae, feature_stats, int(row.feature), beta, beta_quantile)
            norm = float(sae.decoder_norms()[int(row.feature)].detach())
            entry.update(beta_code=beta_code, decoder_norm=norm, beta_reported=beta_code * norm, beta_from=beta_from)
        rows.append(entry)
    choices = pd.DataFrame(rows, columns=list(CHOICE_COLUMNS)).merge(chosen, on=["finding", "feature"])
    return choices, has_ground_truth


def present_in(sae: SparseAutoencoder, images: ImageSet, labels: pd.DataFrame | None, finding: str,
               feature: int) -> np.ndarray:
    """Boolean per image: has ``finding`` (planted truth), or, without truth, ``feature`` fires on it."""
    if labels is not None:
        return labels[finding].to_numpy().astype(bool)
    with torch.no_grad():
        return (sae.encode(torch.from_numpy(images.tokens))[:, feature] > 0).numpy()


def fit_judges(train_set: ImageSet, train_labels: pd.DataFrame, findings: Sequence[str],
               regularisation: float) -> tuple[dict[str, axioms.FindingClassifier], dict[str, str]]:
    """One pixel classifier per finding, on the real training images; the reason for each finding left out."""
    judges, skipped = {}, {}
    for finding in findings:
        y_train = train_labels[finding].to_numpy()
        if len(np.unique(y_train)) < 2:
            skipped[finding] = "n/a: the training images lack one class"
            continue
        judges[finding] = axioms.FindingClassifier.fit(finding, train_set.pixels, y_train, regularisation)
    return judges, skipped


def judge_table(judges: dict[str, axioms.FindingClassifier], skipped: dict[str, str], train_labels: pd.DataFrame,
                test_set: ImageSet, test_labels: pd.DataFrame, runs: dict) -> pd.DataFrame:
    """How good each judge is: AUROC on real test images and on the reconstructions of the images picked."""
    rows = []
    for finding in list(judges) + list(skipped):
        if finding in skipped:
            rows.append({"finding": finding, "note": skipped[finding]})
            continue
        judge = judges[finding]
        y_train, y_test = train_labels[finding].to_numpy(), test_labels[finding].to_numpy()
        entry = {"finding": finding, "train_images": len(y_train), "train_positive": int(y_train.sum()),
                 "test_images": len(y_test), "test_positive": int(y_test.sum()),
                 "auroc_real_test": judge.auroc(test_set.pixels, y_test), "note": ""}
        run = runs.get(finding)
        if run is not None:
            pictures = np.concatenate([run.images_without["reconstruction"], run.images_with["reconstruction"]])
            truth = np.r_[np.zeros(len(run.rows_without)), np.ones(len(run.rows_with))]
            entry.update(reconstructions=len(truth), auroc_reconstructions=judge.auroc(pictures, truth))
        rows.append(entry)
    return pd.DataFrame(rows)


def figure4_panels(model, sae: SparseAutoencoder, test_set: ImageSet, runs: dict, masks: dict,
                   bank: torch.Tensor, steps: int) -> tuple[list[dict], list[str]]:
    """Figure 4's rows: for the first picked test image *with* each finding, the real image, its
    reconstruction, the feature added and removed, and the difference map of the removal.

    Returns
    -------
    (panels, missing)
        One dict per finding that has a test image with it (``finding, feature, images, difference,
        mask``); the findings without one.
    """
    from saerad.counterfactual.interventions import counterfactual_tokens, decode_conditions

    panels, missing = [], []
    for finding, run in runs.items():
        if len(run.rows_with) == 0:
            missing.append(finding)
            continue
        row = run.rows_with[0]
        z = torch.from_numpy(test_set.tokens[[row]])
        with torch.no_grad():
            added = decode_conditions(model, {"add": counterfactual_tokens(sae, z, run.feature, run.beta)},
                                      bank[[row]], steps)["add"][0]
        reconstruction, removed = run.images_with["reconstruction"][0], run.images_with["remove"][0]
        panels.append({"finding": finding, "feature": run.feature,
                       "images": [run.images_with["original"][0], reconstruction, added, removed],
                       "difference": axioms.difference_map(removed, reconstruction),
                       "mask": masks[finding][0] if finding in masks and len(masks[finding]) else None})
    return panels, missing
