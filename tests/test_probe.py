import numpy as np
import pandas as pd

from saerad.encode.probe import probe_auroc


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


def test_summary_says_whether_the_encoder_meets_both_floors():
    from saerad.encode.probe import summarise_probes

    table = pd.DataFrame({"finding": ["a", "b", "c", "rare"], "probed": [True, True, True, False],
                          "auroc": [0.99, 0.97, 0.80, np.nan]})
    summary = summarise_probes(table)
    assert (summary.n_probed, summary.n_skipped) == (3, 1)
    assert summary.median_auroc == 0.97 and summary.lowest_auroc == 0.80 and summary.weakest_finding == "c"
    assert summary.below_floor == ("c",) and summary.verdict == "does not hold"
    assert summarise_probes(table[table["finding"] != "c"]).verdict == "holds"
    assert summarise_probes(table, lowest_floor=0.8).verdict == "holds"
    nothing = summarise_probes(table[~table["probed"]])
    assert nothing.n_probed == 0 and nothing.verdict == "does not hold" and nothing.weakest_finding == ""
