"""Does the offline describer name what real reports share?

In the pipeline the offline describer (:class:`saerad.features.describer.OfflineDescriber`)
reads the findings of a feature's ten top-activating training studies and names the statements
they share. Open-i lets us build such sets from real reports whose shared finding is known: ten
reports drawn at random among those the indexers gave a MeSH term of one CheXpert observation,
a stand-in for the top-activating studies of a perfectly monosemantic feature. The describer is
given their findings text (the impression where there is none, as the loader does), with every
report of the collection as its corpus, and its description is read back with the labeler: the
description *names* the observation when it states it as present or possible.

Random sets of ten reports are the control: what the describer says when nothing is shared.

The judge is the same rule labeler that keys the describer's statements, so a finding the
labeler cannot read is one the describer cannot name either; both are the offline stand-ins the
book uses for the paper's language models.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import pandas as pd

from saerad.features.describer import OfflineDescriber
from saerad.metrics.chexpert_rules import CURRENT_RULES, label_report, sentence_findings
from saerad.mimic.loader import CHEXPERT_OBSERVATIONS

RANDOM_SET = "random reports (control)"


def description_observations(statements: list[str], rules: str = CURRENT_RULES) -> set[str]:
    """Observations a description's statements state as present or possible (No Finding aside)."""
    labels = label_report(" ".join(s.strip().rstrip(".") + "." for s in statements), rules=rules)
    return {o for o, v in labels.items() if o != "No Finding" and v in (1.0, -1.0)}


def report_sets(reference: pd.DataFrame, texts: pd.Series, observations: list[str], n_sets: int, set_size: int,
                seed: int) -> list[dict]:
    """Seeded sets of ``set_size`` reports sharing each observation, plus as many random control sets.

    Parameters
    ----------
    reference
        Boolean MeSH labels (:func:`saerad.openi.evaluation.indexed_reports`), aligned with ``texts``.
    texts
        The text each report gives the describer (NaN or empty texts are never drawn).
    observations
        Observations to build sets for (those with at least ``set_size`` usable reports).
    """
    rng = np.random.default_rng(seed)
    usable = texts.fillna("").str.strip().ne("").to_numpy()
    sets = []
    for observation in observations + [RANDOM_SET]:
        pool = np.flatnonzero(usable & (reference[observation].to_numpy(bool) if observation != RANDOM_SET else True))
        if len(pool) < set_size:
            continue
        for number in range(n_sets):
            chosen = np.sort(rng.choice(pool, size=set_size, replace=False))
            sets.append({"observation": observation, "set": number, "rows": chosen})
    return sets


def describe_sets(sets: list[dict], reference: pd.DataFrame, texts: pd.Series,
                  finding_key: Callable | None = None, judge_rules: str = CURRENT_RULES,
                  describer: OfflineDescriber | None = None) -> pd.DataFrame:
    """Describe every set and judge the description.

    Parameters
    ----------
    finding_key
        The describer's sentence labeler (default: ``sentence_findings`` with the current rules).
    describer
        A ready describer (its corpus counted once); built on all ``texts`` when None.

    Returns
    -------
    DataFrame
        One row per set: ``observation, set, statements`` (the description's statements joined
        by " | "), ``named`` (the set's observation is stated by the description; for the
        control sets: any observation is), ``stated`` (observations the description states),
        ``shared_share`` (share of the set's reports with the observation in MeSH), ``silent``
        (no statement chosen).
    """
    corpus = texts.fillna("").tolist()
    if describer is None:
        describer = OfflineDescriber(corpus, finding_key or partial(sentence_findings, rules=CURRENT_RULES))
    rows = []
    for item in sets:
        reports = [corpus[i] for i in item["rows"]]
        chosen = describer.choose(reports)
        statements = [c.text for c in chosen]
        stated = description_observations(statements, judge_rules) if statements else set()
        observation = item["observation"]
        rows.append({
            "observation": observation, "set": item["set"], "statements": " | ".join(statements),
            "named": (observation in stated) if observation != RANDOM_SET else bool(stated),
            "stated": ", ".join(sorted(stated)), "silent": not statements,
        })
    return pd.DataFrame(rows, columns=["observation", "set", "statements", "named", "stated", "silent"])


def naming_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per observation: sets, share named, share silent (no statement), in a fixed order."""
    order = [o for o in CHEXPERT_OBSERVATIONS if o in set(results["observation"])] + [RANDOM_SET]
    summary = results.astype({"named": float, "silent": float}).groupby("observation").agg(
        sets=("set", "size"), named=("named", "mean"), silent=("silent", "mean"))
    summary = summary.reindex([o for o in order if o in summary.index])
    summary.index.name = "observation"
    return summary.reset_index()
