"""Explanation scores: can a reader predict, from the description alone, which studies fire a feature?

Detection scoring in the spirit of automated-interpretability work: for each described feature
we draw held-out studies (never used to write the description) from several activation quantiles
of the feature plus studies where it is silent, show a scorer the description and the studies'
reports, and ask which reports fit. A description that means something separates the activating
studies from the silent ones: we report AUROC, and precision/recall at a 0.5 cut.

The scorer is a language model through :mod:`saerad.llm` or the offline scorer below, which
counts how many of the description's statements each report makes.
"""

from __future__ import annotations

import json
import re
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.metrics import roc_auc_score

from saerad.features.describer import StatementKeys, key_findings
from saerad.features.descriptions import FeatureDescription
from saerad.llm import Prompt
from saerad.text import split_sentences

#: (low, high) quantiles of a feature's non-zero held-out activations to draw activating studies from
QUANTILE_BINS = ((0.9, 1.0), (0.5, 0.9), (0.0, 0.5))

SCORING_SYSTEM = "You are a radiologist checking whether written descriptions match chest X-ray reports."

SCORING_INSTRUCTIONS = """\
Here is a description of what a unit in an image model responds to, followed by numbered chest X-ray
reports. For every report, give the probability (0 to 1) that the unit responds to its image, judging
only by whether the report fits the description.

Answer with a single JSON object mapping each report number to a probability, for example
{{"1": 0.9, "2": 0.1}}, and nothing else.

Description: This feature represents {description}.

"""
_SCORING_REPORT = re.compile(r"^Report (\d+):[ \t]*\n?(.*?)(?=^Report \d+:|\Z)", re.M | re.S)
_DESCRIPTION_LINE = re.compile(r"^Description: This feature represents (.*)\.$", re.M)


def scoring_sample(activations: sparse.csr_matrix, study_ids: np.ndarray, features: Sequence[int],
                   per_bin: int = 2, negatives: int = 6, seed: int = 0) -> pd.DataFrame:
    """Held-out studies to score for each feature.

    Parameters
    ----------
    activations
        ``[rows, d_sae]`` activations of held-out images only.
    study_ids
        Study of each row (a study with two images is drawn at most once per feature).

    Returns
    -------
    DataFrame with ``feature, study_id, row, activating, bin`` (bin "silent" for negatives).
    """
    rng = np.random.default_rng(seed)
    columns = activations.tocsc()
    study_ids = np.asarray(study_ids)
    rows_out = []
    for feature in features:
        start, end = columns.indptr[feature], columns.indptr[feature + 1]
        rows, values = columns.indices[start:end], columns.data[start:end]
        order = np.lexsort((rows, values))  # ascending activation, ties by row
        rows = rows[order]
        chosen_studies: set = set()

        def draw(candidates: np.ndarray, count: int, activating: bool, label: str) -> None:
            taken = 0
            for row in rng.permutation(candidates):
                if taken == count:
                    return
                if study_ids[row] in chosen_studies:
                    continue
                chosen_studies.add(study_ids[row])
                rows_out.append({"feature": feature, "study_id": study_ids[row], "row": int(row),
                                 "activating": activating, "bin": label})
                taken += 1

        for low, high in QUANTILE_BINS:
            lo, hi = int(np.floor(low * len(rows))), int(np.ceil(high * len(rows)))
            draw(rows[lo:hi], per_bin, True, f"q{low:.1f}-{high:.1f}")
        silent = np.flatnonzero(~np.isin(study_ids, study_ids[rows]))
        draw(silent, negatives, False, "silent")
    return pd.DataFrame(rows_out, columns=["feature", "study_id", "row", "activating", "bin"])


def scoring_prompt(description: str, reports: Sequence[str], feature: int) -> Prompt:
    body = "\n\n".join(f"Report {number}:\n{report.strip()}" for number, report in enumerate(reports, 1))
    return Prompt(user=SCORING_INSTRUCTIONS.format(description=description) + body + "\n", system=SCORING_SYSTEM,
                  max_tokens=400, temperature=0.0, key=f"score-feature-{feature}")


def parse_scores(reply: str | None, n_reports: int) -> list[float] | None:
    """The probabilities of a scorer's reply, or None when it cannot be read."""
    if not reply:
        return None
    match = re.search(r"\{.*\}", reply, re.S)
    if match is None:
        return None
    try:
        payload = json.loads(match.group(0))
        scores = [float(payload[str(number)]) for number in range(1, n_reports + 1)]
    except (ValueError, KeyError, TypeError):
        return None
    return [min(max(score, 0.0), 1.0) for score in scores]


class OfflineScorer:
    """Scores a report by the share of the description's statements it makes.

    A statement with findings is made by a report that asserts/denies the same findings (in any
    wording); a statement without findings must appear with the same normalised text.
    """

    name = "offline-scorer-v1"

    def __init__(self, keys: StatementKeys):
        self.keys = keys

    def score(self, description: str, report: str) -> float:
        statements = [self.keys.key(sentence) for sentence in split_sentences(description)]
        if not statements:
            return 0.0
        report_keys = set(self.keys.report_keys(report))
        report_findings = set().union(*(key_findings(key) for key in report_keys)) if report_keys else set()
        made = 0
        for key in statements:
            findings = key_findings(key)
            made += findings <= report_findings if findings else key in report_keys
        return made / len(statements)

    def respond(self, prompt) -> str:
        match = _DESCRIPTION_LINE.search(prompt.user)
        description = match.group(1) if match else ""
        reports = [found.group(2) for found in _SCORING_REPORT.finditer(prompt.user)]
        return json.dumps({str(number): round(self.score(description, report), 4)
                           for number, report in enumerate(reports, 1)})


def explanation_scores(sample: pd.DataFrame, descriptions: dict[int, FeatureDescription],
                       report_of_study: dict, client, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every described feature of ``sample``.

    Returns
    -------
    (per_feature, per_study)
        ``per_feature``: feature, auroc, precision, recall, n_activating, n_silent, problem.
        ``per_study``: the sample with the scorer's probability.
    """
    features = [feature for feature in sample["feature"].unique()
                if feature in descriptions and descriptions[feature].ok]
    groups = {feature: group for feature, group in sample.groupby("feature", sort=True)}
    prompts = []
    for feature in features:
        reports = [report_of_study[study] for study in groups[feature]["study_id"]]
        prompts.append(scoring_prompt(descriptions[feature].description, reports, feature))
    completions = client.complete_many(prompts, progress=progress)
    per_feature, per_study = [], []
    for feature, completion in zip(features, completions):
        group = groups[feature]
        scores = parse_scores(completion.text, len(group))
        problem = completion.error or (None if scores is not None else "unreadable scorer reply")
        row = {"feature": feature, "n_activating": int(group["activating"].sum()),
               "n_silent": int((~group["activating"]).sum()), "problem": problem,
               "auroc": np.nan, "precision": np.nan, "recall": np.nan}
        if scores is not None:
            truth = group["activating"].to_numpy()
            predicted = np.asarray(scores) >= 0.5
            if truth.any() and (~truth).any():
                row["auroc"] = roc_auc_score(truth, scores)
            row["precision"] = (predicted & truth).sum() / predicted.sum() if predicted.any() else np.nan
            row["recall"] = (predicted & truth).sum() / truth.sum() if truth.any() else np.nan
            per_study.append(group.assign(score=scores))
        per_feature.append(row)
    studies = pd.concat(per_study, ignore_index=True) if per_study else sample.assign(score=np.nan).iloc[:0]
    columns = ["feature", "n_activating", "n_silent", "problem", "auroc", "precision", "recall"]
    return pd.DataFrame(per_feature, columns=columns), studies

