"""Linear probes: is a label linearly decodable from the class tokens?

A logistic regression is fitted on the training split and scored (AUROC)
on held-out images. High AUROC for every planted finding means the encoder
has put the finding into its class token, which the SAE can only find if
it is there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def probe_auroc(
    train_tokens: np.ndarray,
    train_labels: pd.DataFrame,
    test_tokens: np.ndarray,
    test_labels: pd.DataFrame,
    min_prevalence: float = 0.02,
    regularisation: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Fit one logistic-regression probe per label column and score it.

    Parameters
    ----------
    train_tokens, test_tokens
        Class tokens, shape ``[n, dim]``.
    train_labels, test_labels
        One 0/1 column per label, rows aligned with the tokens.
    min_prevalence
        Labels rarer than this (over train and test together) are reported
        but not probed (AUROC is NaN, ``probed`` is False).
    regularisation
        Inverse L2 strength ``C`` of the logistic regression.
    seed
        Random state of the solver.

    Returns
    -------
    pandas.DataFrame
        ``finding, prevalence, n_test_positive, probed, auroc``, sorted by AUROC.
    """
    rows = []
    for column in train_labels.columns:
        y_train = train_labels[column].to_numpy().astype(int)
        y_test = test_labels[column].to_numpy().astype(int)
        prevalence = float(np.concatenate([y_train, y_test]).mean())
        probed = prevalence >= min_prevalence and 0 < y_train.sum() < len(y_train) and 0 < y_test.sum() < len(y_test)
        auroc = np.nan
        if probed:
            model = make_pipeline(
                StandardScaler(),
                LogisticRegression(C=regularisation, max_iter=2000, random_state=seed),
            )
            model.fit(train_tokens, y_train)
            auroc = float(roc_auc_score(y_test, model.predict_proba(test_tokens)[:, 1]))
        rows.append({
            "finding": column,
            "prevalence": round(prevalence, 4),
            "n_test_positive": int(y_test.sum()),
            "probed": probed,
            "auroc": auroc,
        })
    return pd.DataFrame(rows).sort_values("auroc", ascending=False, na_position="last").reset_index(drop=True)
