import numpy as np
import pandas as pd

from saerad.probe import probe_auroc


def test_probe_separates_a_planted_direction_and_not_noise():
    rng = np.random.default_rng(0)
    n, dim = 600, 10
    tokens = rng.normal(size=(n, dim))
    planted = (rng.random(n) < 0.3).astype(int)
    tokens[:, 0] += 3.0 * planted
    labels = pd.DataFrame({"planted": planted, "noise": (rng.random(n) < 0.3).astype(int),
                           "rare": (np.arange(n) < 3).astype(int)})
    table = probe_auroc(tokens[:400], labels[:400], tokens[400:], labels[400:], seed=0).set_index("finding")
    assert table.loc["planted", "auroc"] > 0.95
    assert 0.35 < table.loc["noise", "auroc"] < 0.65
    assert not table.loc["rare", "probed"] and np.isnan(table.loc["rare", "auroc"])
