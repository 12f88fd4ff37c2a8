"""Real sentences where the rule labeler and the Open-i indexers part ways, picked at run time.

The sentences come from the installed reports each time the chapter runs; nothing here stores
report text (the Open-i licence forbids distributing derived copies).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from saerad.metrics.chexpert_rules import label_sentence, sentence_rules_out_no_finding, split_sentences
from saerad.mimic.loader import CHEXPERT_OBSERVATIONS
from saerad.openi.mesh import term_observations
from saerad.openi.reports import split_terms

V2_DROPS = "v2 no longer states it"
V2_ADDS = "v2 states it"
HEDGE = "hedged mention, not indexed"
FALSE_POSITIVE = "stated, not indexed"
FALSE_NEGATIVE = "indexed, not stated"


def shorten(text: str, width: int = 150) -> str:
    """``text`` cut at a word boundary to at most ``width`` characters, with an ellipsis when cut."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    return text[: width - 1].rsplit(" ", 1)[0] + "…"


def _stated(labels: dict) -> dict[str, float]:
    return {o: v for o, v in labels.items() if v in (1.0, -1.0)}


def sentence_changes(indexed: pd.DataFrame) -> pd.DataFrame:
    """Every sentence whose stated observations differ between the v1 and v2 rules.

    Parameters
    ----------
    indexed
        :func:`saerad.openi.evaluation.indexed_reports` (``report_id, text`` and boolean MeSH labels).

    Returns
    -------
    DataFrame
        ``report_id, sentence, observation, change`` (``V2_DROPS`` or ``V2_ADDS``) and
        ``indexed`` (the report's MeSH terms give the observation). "No Finding" rows are
        sentences whose finding rules No Finding out under v2 only.
    """
    rows = []
    for row in indexed.to_dict("records"):
        mesh = {o: bool(row[o]) for o in CHEXPERT_OBSERVATIONS}
        for sentence in split_sentences(row["text"]):
            before, after = _stated(label_sentence(sentence, "v1")), _stated(label_sentence(sentence, "v2"))
            for observation in sorted(set(before) ^ set(after)):
                rows.append({"report_id": row["report_id"], "sentence": sentence, "observation": observation,
                             "change": V2_ADDS if observation in after else V2_DROPS,
                             "indexed": mesh[observation]})
            if sentence_rules_out_no_finding(sentence, "v2") and not sentence_rules_out_no_finding(sentence, "v1"):
                rows.append({"report_id": row["report_id"], "sentence": sentence, "observation": "No Finding",
                             "change": V2_DROPS, "indexed": mesh["No Finding"]})
    return pd.DataFrame(rows, columns=["report_id", "sentence", "observation", "change", "indexed"])


def agrees_with_index(changes: pd.DataFrame) -> pd.Series:
    """Whether each change moves the labeler towards the indexers (adds what they indexed, drops what they did not)."""
    return (changes["change"] == V2_ADDS) == changes["indexed"]


def pick(table: pd.DataFrame, by: list[str], per_group: int, seed: int, prefer: pd.Series | None = None) -> pd.DataFrame:
    """Up to ``per_group`` seeded rows of each group, preferring rows where ``prefer`` is True."""
    rng = np.random.default_rng(seed)
    table = table.assign(_order=rng.random(len(table)),
                         _prefer=~prefer.to_numpy(bool) if prefer is not None else False)
    chosen = table.sort_values(["_prefer", "_order"]).groupby(by, sort=True).head(per_group)
    return chosen.sort_values(by + ["_prefer", "_order"]).drop(columns=["_order", "_prefer"]).reset_index(drop=True)


def hedged_mentions(indexed: pd.DataFrame, rules: str = "v2") -> pd.DataFrame:
    """Sentences that state an observation only as possible (-1) in reports not indexed with it."""
    rows = []
    for row in indexed.to_dict("records"):
        for sentence in split_sentences(row["text"]):
            for observation, value in label_sentence(sentence, rules).items():
                if value == -1.0 and not bool(row[observation]):
                    rows.append({"report_id": row["report_id"], "sentence": sentence, "observation": observation})
    return pd.DataFrame(rows, columns=["report_id", "sentence", "observation"])


def remaining_errors(indexed: pd.DataFrame, stated: pd.DataFrame, rules: str = "v2") -> pd.DataFrame:
    """Disagreements left under ``rules``: one row per report and observation.

    ``kind`` is ``FALSE_POSITIVE`` (the labeler states it, the indexers did not) with the
    sentence that states it, or ``FALSE_NEGATIVE`` with the MeSH terms that give it and the
    sentence the labeler read as negative, if any.
    """
    rows = []
    stated_rows = stated.to_dict("records")
    for position, row in enumerate(indexed.to_dict("records")):
        sentences = split_sentences(row["text"])
        for observation in CHEXPERT_OBSERVATIONS:
            if observation == "No Finding":
                continue
            truth, guess = bool(row[observation]), bool(stated_rows[position][observation])
            if truth == guess:
                continue
            if guess:
                evidence = next((s for s in sentences if label_sentence(s, rules).get(observation) in (1.0, -1.0)), "")
                rows.append({"report_id": row["report_id"], "observation": observation, "kind": FALSE_POSITIVE,
                             "sentence": evidence, "mesh": ""})
            else:
                terms = [t for t in split_terms(row["mesh_major"]) if observation in term_observations(t)]
                evidence = next((s for s in sentences if label_sentence(s, rules).get(observation) == 0.0), "")
                rows.append({"report_id": row["report_id"], "observation": observation, "kind": FALSE_NEGATIVE,
                             "sentence": evidence, "mesh": "; ".join(terms)})
    return pd.DataFrame(rows, columns=["report_id", "observation", "kind", "sentence", "mesh"])
