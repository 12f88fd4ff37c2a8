"""Glue of the features chapter: which reports go to the describer, which client answers.

Kept out of the notebook so that the chapter reads as a sequence of named steps and a
researcher can swap one (another describer, another scorer) without touching the others.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from saerad.features.activations import top_activating_studies

REMOTE_BACKENDS = ("anthropic", "bedrock", "vertex", "openai")


def study_findings(artifacts_root: str | Path) -> pd.Series:
    """Findings text of every kept study, indexed by ``study_id`` (from the data stage)."""
    path = Path(artifacts_root) / "data" / "studies.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the data stage first")
    studies = pd.read_csv(path, usecols=["study_id", "split", "findings"])
    if studies["findings"].isna().any():
        raise ValueError(f"{path}: {int(studies['findings'].isna().sum())} studies have no findings text")
    return studies.set_index("study_id")["findings"]


def split_rows(index: pd.DataFrame, splits: tuple[str, ...]) -> np.ndarray:
    return np.flatnonzero(index["split"].isin(splits).to_numpy())


def training_top_reports(activations: sparse.csr_matrix, index: pd.DataFrame, findings: pd.Series,
                         features: list[int], k: int) -> tuple[dict[int, list[str]], pd.DataFrame]:
    """Findings of each feature's ``k`` top-activating *training* studies, strongest first.

    Descriptions are written from training studies only, so that explanation scores and the
    test-set reports are measured on studies the describer never saw.
    """
    rows = split_rows(index, ("train",))
    top = top_activating_studies(activations[rows], index.iloc[rows].reset_index(drop=True), k=k)
    top = top[top["feature"].isin(features)].sort_values(["feature", "rank"], ignore_index=True)
    reports = {int(feature): [findings[study] for study in group["study_id"]]
               for feature, group in top.groupby("feature", sort=True)}
    return reports, top


def offline_describer(index: pd.DataFrame, findings: pd.Series, min_support: int = 3, min_lift: float = 2.0,
                       max_statements: int = 3):
    """The offline describer of the chapter, whose base rates are the findings of the *training* studies.

    Parameters
    ----------
    index
        Activation index (one row per image, with ``study_id`` and ``split``).
    findings
        Findings text by ``study_id`` (:func:`study_findings`).
    min_support, min_lift, max_statements
        :class:`saerad.features.describer.OfflineDescriber` settings.
    """
    from saerad.features.describer import OfflineDescriber
    from saerad.metrics.chexpert_rules import sentence_findings

    training_studies = index["study_id"].to_numpy()[split_rows(index, ("train",))]
    corpus = findings[findings.index.isin(training_studies)].tolist()
    return OfflineDescriber(corpus, sentence_findings, min_support=min_support, min_lift=min_lift,
                            max_statements=max_statements)


def describe_live_features(top_reports: dict[int, list[str]], live_features: list[int], client,
                           out_path: str | Path, progress: bool = False):
    """Describe every live feature and write ``descriptions.jsonl`` (the chapter's annotation step).

    Live features that fire on no training study have no reports to describe them from; they are
    written as flagged records with that reason, so that every live feature has a line.

    Returns
    -------
    list of FeatureDescription
        Sorted by feature id (:func:`saerad.features.annotation.annotate_features`).
    """
    from saerad.features.annotation import annotate_features
    from saerad.metrics.chexpert_rules import sentence_findings

    not_in_training = {feature: "fires on no training study, so there are no reports to describe it from"
                       for feature in live_features if feature not in top_reports}
    return annotate_features(top_reports, client, out_path, finding_key=sentence_findings, progress=progress,
                             skipped=not_in_training)


def make_llm_client(role: str, backend: str, model: str, offline_responder, cache_dir: str | Path, profile: str,
                    acknowledge_restricted_data_use: bool = False, base_url: str = "", max_concurrency: int = 4,
                    artifacts_root: str | Path | None = None,
                    max_consecutive_failures: int | None = None):
    """The :mod:`saerad.llm` client for one role (describer, scorer, composer, RadFact).

    ``offline`` answers with ``offline_responder`` (an object with ``name`` and ``respond``).
    Any other backend sends report text out. Whether that text is protected is read from the
    data (:func:`saerad.mimic.loader.reports_restriction`: MIMIC-CXR is, SynthCXR is not), never
    from the profile's name, and a remote backend for protected text is refused unless
    acknowledged. The stages check the same before they start (:mod:`saerad.features.preflight`).

    Parameters
    ----------
    cache_dir
        ``<artifacts_root>/llm_cache`` in the chapters; the client caches under ``<cache_dir>/<role>``.
    profile
        The profile's name; not used for the decision above (a copy of a profile under
        another name protects the same data).
    artifacts_root
        Where the data stage's ``data/dataset.json`` is; default: the parent of ``cache_dir``.
        Without it the text counts as protected.
    max_consecutive_failures
        The client's circuit breaker (default :data:`saerad.llm.DEFAULT_MAX_CONSECUTIVE_FAILURES`).
    """
    from saerad.llm import DEFAULT_MAX_CONSECUTIVE_FAILURES, make_client
    from saerad.mimic.loader import reports_restriction
    from saerad.paths import project_path

    role_cache = Path(cache_dir) / role if cache_dir else None  # None: no cache
    breaker = {"max_consecutive_failures": max_consecutive_failures or DEFAULT_MAX_CONSECUTIVE_FAILURES}
    if backend == "offline":
        return make_client("offline", model=offline_responder.name, responder=offline_responder.respond,
                           cache_dir=role_cache, **breaker)
    if backend not in REMOTE_BACKENDS:
        raise ValueError(f"{role}_backend is {backend!r}; expected 'offline' or one of {list(REMOTE_BACKENDS)}")
    root = artifacts_root if artifacts_root is not None else (Path(cache_dir).parent if cache_dir else None)
    restricted = True if root is None else reports_restriction(project_path(root) / "data")[0]
    options = {"max_concurrency": max_concurrency, "restricted_text": restricted,
               "acknowledge_restricted_data_use": acknowledge_restricted_data_use, **breaker}
    if base_url:
        options["base_url"] = base_url
    return make_client(backend, model=model or None, cache_dir=role_cache, **options)
