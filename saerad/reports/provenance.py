"""Which active features a sentence written by a language model came from.

The offline composer knows the provenance of each sentence by construction;
a language model rewrites, merges and drops, so it is recovered afterwards:

1. Shared findings. A sentence's SynthCXR findings (``sentence_findings``,
   each a ``(finding, present)`` pair) are compared with each active
   feature's findings (the union over its description's statements). Every
   feature sharing at least one pair with the sentence is a source.
2. Wording. A sentence with no recognised finding, or whose findings no
   active feature states, is compared with the active features'
   descriptions by TF-IDF cosine (unigrams and bigrams, English stop words
   removed, fitted on the descriptions and the report's sentences); every
   feature at or above ``threshold`` is a source.

Sources are listed strongest evidence first (findings: more shared pairs,
then importance; wording: higher cosine). A sentence with no source gets
``feature_ids: []`` and is counted in ``n_unmatched``: it is what the model
added on its own (style, inference from the indication or the priors, or
hallucination).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from saerad.reports.active import ActiveFeature
from saerad.reports.composer import _as_findings, _default_findings_of, _get, description_statements
from saerad.text import split_sentences  # the splitter the descriptions were split with

DEFAULT_THRESHOLD = 0.2

@dataclass
class ProvenanceResult:
    """Sentences with their source features, and how many sentences have none."""

    sentences: list[dict]  # [{"text": str, "feature_ids": [int, ...]}]
    n_unmatched: int
    matched_by: list[str]  # per sentence: "findings", "tfidf" or "none"


def attach_provenance(
    report: str,
    active: Sequence[ActiveFeature],
    descriptions: Mapping[int, object],
    threshold: float = DEFAULT_THRESHOLD,
    findings_of: Callable[[str], set] | None = None,
) -> ProvenanceResult:
    """Attach to each sentence of ``report`` the active features it expresses.

    Parameters
    ----------
    report
        The findings paragraph written by the language model.
    active
        The active features of the study (only these can be sources).
    descriptions
        Feature id -> description record (flagged ones are ignored).
    threshold
        Minimum TF-IDF cosine for the wording fallback, in (0, 1].
    findings_of
        Sentence labeler; default ``saerad.metrics.chexpert_rules.sentence_findings``.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    findings_of = findings_of or _default_findings_of()
    if not isinstance(report, str):
        raise TypeError(f"expected the report text, got {type(report).__name__}")
    sentences = split_sentences(report)
    importance = {item.feature: float(item.importance) for item in active}
    feature_ids, feature_findings, feature_texts = [], [], []
    for item in active:
        record = descriptions.get(item.feature)
        if record is None or _get(record, "status", "ok") != "ok":
            continue
        statements = description_statements(record)
        findings = set()
        for statement in statements:
            findings |= statement.findings if statement.findings else _as_findings(findings_of(statement.text))
        text = _get(record, "description", "") or " ".join(s.text for s in statements)
        feature_ids.append(item.feature)
        feature_findings.append(frozenset(findings))
        feature_texts.append(text)

    similarity = _tfidf_similarity(sentences, feature_texts) if sentences and feature_texts else None
    records, matched_by, n_unmatched = [], [], 0
    for position, sentence in enumerate(sentences):
        stated = _as_findings(findings_of(sentence))
        shared = [(len(stated & f), feature) for feature, f in zip(feature_ids, feature_findings) if stated & f]
        if shared:
            sources = [f for _, f in sorted(shared, key=lambda s: (-s[0], -importance[s[1]], s[1]))]
            how = "findings"
        else:
            sources = []
            if similarity is not None:
                row = similarity[position]
                hits = [(row[k], feature_ids[k]) for k in range(len(feature_ids)) if row[k] >= threshold]
                sources = [f for _, f in sorted(hits, key=lambda h: (-h[0], h[1]))]
            how = "tfidf" if sources else "none"
        n_unmatched += not sources
        records.append({"text": sentence, "feature_ids": sources})
        matched_by.append(how)
    return ProvenanceResult(records, n_unmatched, matched_by)


def _tfidf_similarity(sentences: list[str], texts: list[str]) -> np.ndarray:
    """Cosine similarity ``[n_sentences, n_texts]`` of TF-IDF vectors fitted on both."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), stop_words="english", sublinear_tf=True)
    try:
        matrix = vectorizer.fit_transform(list(sentences) + list(texts))
    except ValueError:  # every word is a stop word: nothing to compare
        return np.zeros((len(sentences), len(texts)))
    # TfidfVectorizer rows are L2-normalised, so the dot product is the cosine.
    return (matrix[: len(sentences)] @ matrix[len(sentences):].T).toarray()
