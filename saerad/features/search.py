"""Text-to-image search through feature descriptions.

A query ("pacemaker", "left effusion") is matched against every feature's description with
TF-IDF cosine similarity; the best features' top-activating studies are the images returned.
Because the link from text to images runs through named features, every hit can be explained:
"this image, because feature 812 (left-sided pacemaker) fires on it at 4.1".
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import linear_kernel

from saerad.features.descriptions import FeatureDescription


class FeatureSearch:
    """Index of feature descriptions for free-text queries."""

    def __init__(self, descriptions: Sequence[FeatureDescription]):
        self.features = [description for description in descriptions if description.ok]
        if not self.features:
            raise ValueError("no described feature to search: every description is flagged or missing")
        # Bigrams let "left effusion" prefer "left pleural effusion" over a bare "effusion".
        self.vectoriser = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, stop_words="english")
        self.matrix = self.vectoriser.fit_transform([description.description for description in self.features])

    def features_for(self, query: str, top: int = 5) -> pd.DataFrame:
        """The ``top`` features whose descriptions best match ``query`` (similarity > 0 only)."""
        similarity = linear_kernel(self.vectoriser.transform([query]), self.matrix).ravel()
        order = sorted(range(len(self.features)), key=lambda i: (-similarity[i], self.features[i].feature))[:top]
        rows = [{"feature": self.features[i].feature, "similarity": float(similarity[i]),
                 "description": self.features[i].description} for i in order if similarity[i] > 0]
        return pd.DataFrame(rows, columns=["feature", "similarity", "description"])

    def studies_for(self, query: str, top_activations: pd.DataFrame, top_features: int = 3,
                    studies_per_feature: int = 4) -> pd.DataFrame:
        """Top studies of the best-matching features, with the feature that brought each in."""
        matches = self.features_for(query, top_features)
        if matches.empty:
            return pd.DataFrame(columns=["feature", "similarity", "description", "rank", "study_id", "dicom_id",
                                         "activation"])
        studies = top_activations[top_activations["rank"] <= studies_per_feature]  # rank 1 is the strongest
        return matches.merge(studies, on="feature").sort_values(["similarity", "feature", "rank"],
                                                                 ascending=[False, True, True], ignore_index=True)
