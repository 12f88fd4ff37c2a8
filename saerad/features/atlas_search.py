"""The atlas index's text search: the feature search's TF-IDF index in a form a browser can score.

The index page ranks features for a typed query exactly as
:class:`saerad.features.search.FeatureSearch` does in Python. The search
hands over its fitted vocabulary, idf weights and each feature's row of term
weights (the mean of its evidence reports' normalised TF-IDF vectors; the
``browser_index`` format below); ``atlas.js`` repeats sklearn's query
analysis on them (lower case, synonyms, token pattern, stop words, word
n-grams, sublinear tf, idf, L2 norm) and takes the dot product with each row.

Format (all lists in column or row order)::

    {"features": [int, ...], "vocabulary": [str, ...], "idf": [float, ...],
     "rows": [[[col, weight], ...], ...], "stop_words": [str, ...],
     "synonyms": [[regex, replacement], ...], "token_pattern": str,
     "ngram_max": int, "sublinear_tf": bool}

:func:`score_query` is the same scorer in Python, for tests that compare the
browser's ranking with the search's.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from saerad.features.search import N_EVIDENCE_REPORTS, FeatureSearch, search_over

#: Keys every browser index must have (checked before it is written into a page).
BROWSER_INDEX_KEYS = ("features", "vocabulary", "idf", "rows", "stop_words", "synonyms", "token_pattern",
                      "ngram_max", "sublinear_tf")


def browser_index(search: FeatureSearch) -> dict:
    """The browser index of ``search`` (:meth:`FeatureSearch.browser_index`), checked."""
    index = search.browser_index()
    check_browser_index(index)
    return index


def evidence_search(artifacts_root, tables, n_reports: int = N_EVIDENCE_REPORTS) -> FeatureSearch:
    """The features chapter's search, rebuilt from a run's loaded tables (for an atlas built outside the chapter)."""
    from saerad.features.stage import study_findings

    return search_over(tables.activations, tables.activation_index, study_findings(artifacts_root),
                       tables.feature_index, n_reports)


def check_browser_index(index: dict) -> None:
    """Raise ValueError naming what is missing or inconsistent in a browser index."""
    missing = [key for key in BROWSER_INDEX_KEYS if key not in index]
    if missing:
        raise ValueError(f"browser search index lacks {missing}; expected keys {list(BROWSER_INDEX_KEYS)}")
    if len(index["features"]) != len(index["rows"]):
        raise ValueError(f"browser search index: {len(index['features'])} features but {len(index['rows'])} rows")
    if len(index["vocabulary"]) != len(index["idf"]):
        raise ValueError(f"browser search index: {len(index['vocabulary'])} terms but {len(index['idf'])} idf values")


def query_terms(index: dict, query: str) -> list[str]:
    """The n-grams sklearn's analyser makes of ``query`` under the index's settings (Python regex syntax)."""
    text = query.lower()
    for pattern, replacement in index["synonyms"]:
        text = re.sub(pattern, replacement, text)
    stop = set(index["stop_words"])
    tokens = [token for token in re.findall(index["token_pattern"], text) if token not in stop]
    terms = []
    for n in range(1, int(index["ngram_max"]) + 1):
        terms.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return terms


def score_query(index: dict, query: str) -> list[tuple[int, float]]:
    """``(feature, score)`` of every matching feature, best first (ties by feature id); score 0 is left out."""
    column = {term: k for k, term in enumerate(index["vocabulary"])}
    counts: dict[int, int] = {}
    for term in query_terms(index, query):
        if term in column:
            counts[column[term]] = counts.get(column[term], 0) + 1
    weights = {k: (1 + math.log(tf) if index["sublinear_tf"] else tf) * index["idf"][k] for k, tf in counts.items()}
    norm = math.sqrt(sum(value * value for value in weights.values()))
    if norm == 0:
        return []
    scores = [(feature, sum(weights.get(k, 0.0) * w for k, w in row) / norm)
              for feature, row in zip(index["features"], index["rows"])]
    return sorted(((f, s) for f, s in scores if s > 0), key=lambda pair: (-pair[1], pair[0]))
