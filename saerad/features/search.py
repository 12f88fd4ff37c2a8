"""Finding features by text, and images by example, through the reports the features fire on.

Text → features
---------------
A feature is searched through its *evidence*: the reports of the ``n_reports``
training studies it fires on most strongly, not only its one-line
description. Each report is reduced to its affirmed sentences (a sentence with
a negation cue such as "no", "without", "resolved" is left out, so "No
pneumothorax." is not evidence of a pneumothorax feature) and turned into an
L2-normalised TF-IDF vector (``scikit-learn``'s ``TfidfVectorizer``: word
unigrams and bigrams, English stop words, sublinear term frequency). A
feature's score for a query is

    score(q, f) = (1 / n_reports) Σ_{r ∈ top reports of f} cos(q, r),

the mean cosine between the query and its top reports, where a feature with
fewer than ``n_reports`` firing studies counts the missing ones as 0. So a
feature ranks first when its strongest studies *consistently* say what the
query says, and when it fires on many of them: the feature that fires on every
pacemaker study beats one that fires on a few pacemaker studies among others.
The score is linear in the query vector, so each feature is one precomputed
row of weights, and the book's atlas page ranks exactly as this class does
(:meth:`FeatureSearch.browser_index`).

Why not the descriptions alone: descriptions are short and alike ("pacemaker
leads are unchanged in position. ..." describes several features), so a
TF-IDF over them ranks by wording accidents; and flagged features have no
description at all but can still be found through their evidence.

Queries are lower-cased and expanded with a few radiology synonyms
(:data:`SYNONYMS`: "nasogastric tube" also searches "NG tube" and "enteric
tube") before they are vectorised; reports are not rewritten.

Image → features → images
-------------------------
:func:`similar_studies` takes a study, reads which features fire on its image
and returns the studies whose feature activations are closest (cosine over the
SAE's activation vectors), each with the features the two share: query by
example, explained by named features.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.preprocessing import normalize

from saerad.features.descriptions import FeatureDescription
from saerad.metrics.chexpert_rules import NEGATION_FORWARD
from saerad.text import split_sentences

#: Query expansions, applied in order to the lower-cased query (regular expressions that mean the same in Python
#: and in the browser's JavaScript). Each names a finding the way reports often do.
SYNONYMS: tuple[tuple[str, str], ...] = (
    (r"\benlarged cardiomediastinum\b", "enlarged cardiomediastinum widened mediastinum mediastinal widening"),
    (r"\bcardiomegaly\b", "cardiomegaly enlarged heart"),
    (r"\bnasogastric tube\b", "nasogastric tube ng tube enteric tube"),
    (r"\bendotracheal tube\b", "endotracheal tube et tube"),
    (r"\bcentral line\b", "central line picc line central venous catheter ij line"),
    (r"\bsternotomy wires\b", "sternotomy wires median sternotomy"),
    (r"\blung nodule\b", "lung nodule pulmonary nodule"),
    (r"\blung mass\b", "lung mass pulmonary mass"),
    (r"\bedema\b", "edema pulmonary edema vascular congestion"),
    (r"\bpleural effusion\b", "pleural effusion effusion"),
)

#: Number of top training reports a feature is searched through.
N_EVIDENCE_REPORTS = 100

#: scikit-learn's default token pattern, written so that the browser's RegExp reads it the same way.
TOKEN_PATTERN = r"\b\w\w+\b"

_NEGATION = re.compile(r"\b(?:" + "|".join(NEGATION_FORWARD) + r")\b", re.IGNORECASE)


def affirmed_text(report: str) -> str:
    """The sentences of ``report`` that carry no negation cue, joined by spaces."""
    return " ".join(sentence for sentence in split_sentences(report) if not _NEGATION.search(sentence))


def expand_query(query: str, synonyms: Sequence[tuple[str, str]] = SYNONYMS) -> str:
    """``query`` lower-cased, with each synonym rule applied in turn."""
    text = query.lower()
    for pattern, replacement in synonyms:
        text = re.sub(pattern, replacement, text)
    return text


class FeatureSearch:
    """Ranks features for free-text queries by the reports they fire on.

    Parameters
    ----------
    evidence
        ``{feature: [report text of its top training studies, strongest first]}``
        (:func:`saerad.features.stage.training_top_reports` with ``k=n_reports``).
        Every live feature should be a key, described or not.
    descriptions
        The features' descriptions, shown beside the hits (not scored).
    n_reports
        Reports per feature that count; more are ignored, fewer count as silent.
    synonyms
        Query expansions, see :data:`SYNONYMS`.
    """

    def __init__(self, evidence: Mapping[int, Sequence[str]],
                 descriptions: Sequence[FeatureDescription] | Mapping[int, str] = (),
                 n_reports: int = N_EVIDENCE_REPORTS, synonyms: Sequence[tuple[str, str]] = SYNONYMS):
        if n_reports < 1:
            raise ValueError(f"n_reports must be at least 1, got {n_reports}")
        self.features = sorted(int(feature) for feature, reports in evidence.items() if len(reports))
        if not self.features:
            raise ValueError("no feature to search: no feature has any report in its evidence")
        if isinstance(descriptions, Mapping):
            self.descriptions = {int(feature): str(text) for feature, text in descriptions.items()}
        else:
            self.descriptions = {d.feature: d.description for d in descriptions if d.ok}
        self.n_reports = n_reports
        self.synonyms = tuple(synonyms)
        # Bigrams let "left effusion" prefer reports saying "left pleural effusion" over a bare "effusion".
        self.vectoriser = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, stop_words="english",
                                          token_pattern=TOKEN_PATTERN)
        reports = sorted({affirmed_text(report) for feature in self.features
                          for report in list(evidence[feature])[:n_reports]})
        position = {text: i for i, text in enumerate(reports)}
        report_vectors = self.vectoriser.fit_transform(reports)  # rows are L2-normalised
        rows, columns = [], []
        for row, feature in enumerate(self.features):
            for report in list(evidence[feature])[:n_reports]:
                rows.append(row)
                columns.append(position[affirmed_text(report)])
        weights = sparse.csr_matrix((np.full(len(rows), 1.0 / n_reports), (rows, columns)),
                                    shape=(len(self.features), len(reports)))
        self.matrix = (weights @ report_vectors).tocsr()  # one row of term weights per feature

    def scores(self, query: str) -> np.ndarray:
        """Score of every feature in :attr:`features` for ``query`` (0 where nothing matches)."""
        vector = normalize(self.vectoriser.transform([expand_query(query, self.synonyms)]))
        return np.asarray((self.matrix @ vector.T).todense()).ravel()

    def ranking(self, query: str) -> list[int]:
        """All features with a score above 0, best first (ties: smaller feature id first)."""
        score = self.scores(query)
        order = sorted(range(len(self.features)), key=lambda i: (-score[i], self.features[i]))
        return [self.features[i] for i in order if score[i] > 0]

    def features_for(self, query: str, top: int = 5) -> pd.DataFrame:
        """The ``top`` features that best match ``query`` (score > 0 only), with their descriptions."""
        score = dict(zip(self.features, self.scores(query)))
        rows = [{"feature": feature, "score": float(score[feature]),
                 "description": self.descriptions.get(feature, "")} for feature in self.ranking(query)[:top]]
        return pd.DataFrame(rows, columns=["feature", "score", "description"])

    def studies_for(self, query: str, top_activations: pd.DataFrame, top_features: int = 3,
                    studies_per_feature: int = 4) -> pd.DataFrame:
        """Top studies of the best-matching features, with the feature that brought each in."""
        matches = self.features_for(query, top_features)
        if matches.empty:
            return pd.DataFrame(columns=["feature", "score", "description", "rank", "study_id", "dicom_id",
                                         "activation"])
        studies = top_activations[top_activations["rank"] <= studies_per_feature]  # rank 1 is the strongest
        return matches.merge(studies, on="feature").sort_values(["score", "feature", "rank"],
                                                                ascending=[False, True, True], ignore_index=True)

    def browser_index(self, digits: int = 6) -> dict:
        """Everything a browser needs to rank features exactly as :meth:`ranking` does.

        ``rows[i]`` lists ``[column, weight]`` of feature ``features[i]``; a query is expanded with
        ``synonyms``, tokenised with ``token_pattern``, stripped of ``stop_words``, turned into word
        n-grams up to ``ngram_max``, weighted ``(1 + ln tf) · idf``, L2-normalised and dotted with each row.
        """
        vocabulary = sorted(self.vectoriser.vocabulary_, key=self.vectoriser.vocabulary_.get)
        rows = []
        for row in range(self.matrix.shape[0]):
            start, end = self.matrix.indptr[row], self.matrix.indptr[row + 1]
            pairs = sorted(zip(self.matrix.indices[start:end].tolist(), self.matrix.data[start:end].tolist()))
            rows.append([[int(column), round(float(weight), digits)] for column, weight in pairs])
        return {"features": list(self.features), "vocabulary": vocabulary,
                "idf": [round(float(value), digits) for value in self.vectoriser.idf_],
                "rows": rows, "stop_words": sorted(ENGLISH_STOP_WORDS),
                "synonyms": [list(rule) for rule in self.synonyms], "token_pattern": TOKEN_PATTERN,
                "ngram_max": 2, "sublinear_tf": True, "n_reports": self.n_reports}


def search_from_artifacts(artifacts_root, n_reports: int = N_EVIDENCE_REPORTS) -> FeatureSearch:
    """The features chapter's search, rebuilt from a run's artifacts (its live features, their activations on
    the training studies, the data stage's reports and the described features' descriptions)."""
    from pathlib import Path

    from saerad.features.stage import study_findings

    features = Path(artifacts_root) / "features"
    needed = [features / name for name in ("activations.npz", "activations_index.csv", "feature_index.csv")]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} missing: run the features stage first")
    activations = sparse.load_npz(needed[0]).tocsr()
    index = pd.read_csv(needed[1], dtype={"dicom_id": str})
    feature_index = pd.read_csv(needed[2])
    return search_over(activations, index, study_findings(artifacts_root), feature_index, n_reports)


def search_over(activations: sparse.csr_matrix, index: pd.DataFrame, findings: pd.Series,
                feature_index: pd.DataFrame, n_reports: int = N_EVIDENCE_REPORTS) -> FeatureSearch:
    """The search over ``feature_index``'s features (``feature, status, description``), with their top
    ``n_reports`` training reports as evidence."""
    described = feature_index[feature_index["status"] == "ok"]
    return feature_search(activations, index, findings, [int(feature) for feature in feature_index["feature"]],
                          dict(zip(described["feature"].astype(int), described["description"].astype(str))),
                          n_reports)


def feature_search(activations: sparse.csr_matrix, index: pd.DataFrame, findings: pd.Series, features: Sequence[int],
                   descriptions: Sequence[FeatureDescription] | Mapping[int, str] = (),
                   n_reports: int = N_EVIDENCE_REPORTS) -> FeatureSearch:
    """The search over ``features``, each searched through the findings of its ``n_reports`` top-activating
    training studies (``activations`` rows follow ``index``; ``findings`` is the findings text by study)."""
    from saerad.features.stage import training_top_reports

    evidence, _ = training_top_reports(activations, index, findings, sorted(int(f) for f in features), n_reports)
    return FeatureSearch(evidence, descriptions, n_reports=n_reports)


def finding_queries(alignment: pd.DataFrame, alignment_by_side: pd.DataFrame | None = None) -> pd.DataFrame:
    """The plain-name query of each planted finding (and of each finding and side) and its target feature.

    ``alignment`` (``finding_alignment.csv``) gives ``"pleural effusion"`` → its best-aligned feature;
    ``alignment_by_side`` rows named ``"pleural_effusion (left)"`` give ``"left pleural effusion"``.
    ``target_auroc`` is the target's AUROC for its finding (the tables' ``auroc`` column; NaN where a table
    has none): a target far from 1 is a feature that does not track the finding, so its rank says little
    about the search.
    """
    def auroc_of(table: pd.DataFrame) -> list[float]:
        return table["auroc"].astype(float).tolist() if "auroc" in table else [np.nan] * len(table)

    rows = [{"query": finding.replace("_", " "), "finding": finding, "side": "", "target_feature": int(feature),
             "target_auroc": auroc}
            for finding, feature, auroc in zip(alignment["finding"], alignment["best_feature"], auroc_of(alignment))]
    if alignment_by_side is not None:
        for name, feature, auroc in zip(alignment_by_side["finding"], alignment_by_side["best_feature"],
                                        auroc_of(alignment_by_side)):
            match = re.fullmatch(r"(\w+) \((\w+)\)", str(name))
            if match:
                finding, side = match.groups()
                rows.append({"query": f"{side} {finding.replace('_', ' ')}", "finding": finding, "side": side,
                             "target_feature": int(feature), "target_auroc": auroc})
    return pd.DataFrame(rows, columns=["query", "finding", "side", "target_feature", "target_auroc"])


def search_evaluation(search: FeatureSearch, queries: pd.DataFrame) -> pd.DataFrame:
    """Rank of each query's target feature (NaN when the search does not return it) and its reciprocal rank."""
    records = []
    for query in queries.itertuples(index=False):
        ranking = search.ranking(query.query)
        rank = ranking.index(query.target_feature) + 1 if query.target_feature in ranking else np.nan
        records.append({**query._asdict(), "rank": rank,
                        "reciprocal_rank": 0.0 if np.isnan(rank) else 1.0 / rank,
                        "first_feature": ranking[0] if ranking else np.nan, "returned": len(ranking)})
    return pd.DataFrame(records, columns=[*queries.columns, "rank", "reciprocal_rank", "first_feature", "returned"])


def mean_reciprocal_rank(evaluation: pd.DataFrame, sided: bool = False, min_target_auroc: float | None = None) -> float:
    """Mean reciprocal rank of :func:`search_evaluation`'s plain-name queries (``sided``: the finding-and-side
    ones), over every query or only those whose target reaches ``min_target_auroc`` (NaN when none does)."""
    rows = evaluation[(evaluation["side"] != "") if sided else (evaluation["side"] == "")]
    if min_target_auroc is not None:
        rows = rows[rows["target_auroc"] >= min_target_auroc]
    return float(rows["reciprocal_rank"].mean()) if len(rows) else float("nan")


def similar_studies(activations: sparse.csr_matrix, index: pd.DataFrame, study_id, top: int = 6,
                    shared_features: int = 3) -> pd.DataFrame:
    """Studies whose SAE activations are closest to ``study_id``'s (cosine), with the features they share.

    ``activations`` rows follow ``index`` (``activations_index.csv``); a study's first image is its query.
    Returns rank, study_id, dicom_id, similarity and ``shared`` (the ``shared_features`` features with the
    largest product of the two activations, strongest first).
    """
    rows = np.flatnonzero(index["study_id"].to_numpy() == study_id)
    if rows.size == 0:
        raise KeyError(f"study {study_id} is not in the activations index")
    matrix = normalize(sparse.csr_matrix(activations, dtype=np.float64))
    query = matrix[rows[0]]
    if query.nnz == 0:
        raise ValueError(f"no feature fires on study {study_id}'s image, so nothing can be matched")
    similarity = np.asarray((matrix @ query.T).todense()).ravel()
    similarity[index["study_id"].to_numpy() == study_id] = -np.inf  # not the study itself
    order = sorted(range(len(similarity)), key=lambda i: (-similarity[i], i))[:top]
    dense_query = query.toarray().ravel()
    records = []
    for rank, row in enumerate(order, start=1):
        product = matrix[row].toarray().ravel() * dense_query
        shared = [int(f) for f in np.argsort(-product, kind="stable")[:shared_features] if product[f] > 0]
        records.append({"rank": rank, "study_id": index["study_id"].iloc[row], "dicom_id": index["dicom_id"].iloc[row],
                        "similarity": float(similarity[row]), "shared": shared})
    return pd.DataFrame(records, columns=["rank", "study_id", "dicom_id", "similarity", "shared"])
