"""The SAE chapter's dead-feature variants: token subsets, layer-normed tokens, dictionary sizes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saerad.sae import experiments


def _tokens(n: int = 40, d: int = 16) -> np.ndarray:
    return np.abs(np.random.default_rng(0).normal(size=(n, d))).astype(np.float32) + 1.0


def test_subsample_rows_is_seeded_without_replacement_and_keeps_order():
    tokens = np.arange(40, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    half = experiments.subsample_rows(tokens, 0.5, seed=3)
    assert half.shape == (20, 3)
    assert len(np.unique(half[:, 0])) == 20 and np.all(np.diff(half[:, 0]) > 0)
    assert np.array_equal(half, experiments.subsample_rows(tokens, 0.5, seed=3))
    assert not np.array_equal(half, experiments.subsample_rows(tokens, 0.5, seed=4))
    assert np.array_equal(experiments.subsample_rows(tokens, 1.0, seed=0), tokens)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            experiments.subsample_rows(tokens, bad, seed=0)


def test_layer_normed_tokens_have_zero_mean_unit_spread_and_norm_sqrt_d():
    tokens = _tokens()
    normed = experiments.layer_normed(tokens)
    assert normed.dtype == np.float32 and normed.shape == tokens.shape
    np.testing.assert_allclose(normed.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), np.sqrt(tokens.shape[1]), rtol=1e-5)
    assert (normed < 0).any()  # non-negative tokens come out signed
    # invariant to a per-token shift and positive scale, as a LayerNorm is
    np.testing.assert_allclose(experiments.layer_normed(3.0 * tokens + 2.0), normed, atol=1e-5)


def test_dead_feature_runs_change_one_thing_each():
    train, test = _tokens(40), _tokens(10)
    runs, too_small = experiments.dead_feature_runs(train, test, [0.25, 0.5], 8.0, expansion_factor=4,
                                                    l1_coefficient=3.0, seed=0, batch_size=8)
    assert too_small == []
    assert [run.name for run, *_ in runs] == ["sae_rad_tokens_0.25", "sae_rad_tokens_0.5", "sae_rad_layer_normed"]
    (quarter, _, quarter_train, quarter_test), _, (normed, _, normed_train, normed_test) = runs
    assert len(quarter_train) == 10 and quarter_test is test and quarter.l1_coefficient == 3.0
    assert normed.l1_coefficient == 8.0 and len(normed_train) == 40
    np.testing.assert_allclose(normed_test, experiments.layer_normed(test))
    assert experiments.dead_feature_runs(train, test, [], None, 4, 3.0, 0, batch_size=8) == ([], [])


def test_a_share_smaller_than_one_batch_is_left_out_not_trained():
    runs, too_small = experiments.dead_feature_runs(_tokens(40), _tokens(10), [0.25, 0.5], None, 4, 3.0, 0,
                                                    batch_size=16)
    assert too_small == [0.25]
    assert [run.name for run, *_ in runs] == ["sae_rad_tokens_0.5"]


def test_dictionary_size_runs_skip_the_main_size_and_keep_its_coefficient():
    runs = experiments.dictionary_size_runs([2, 1, 8, 2], main_expansion_factor=8, l1_coefficient=3.0)
    assert [(run.name, run.expansion_factor, run.l1_coefficient, run.preset) for run in runs] == [
        ("sae_rad_x1", 1, 3.0, "sae_rad"), ("sae_rad_x2", 2, 3.0, "sae_rad")]
    assert experiments.dictionary_size_runs([], 8, 3.0) == []
    assert all(experiments.is_dictionary_size_run(run.name) for run in runs)
    assert not any(map(experiments.is_dictionary_size_run, ["sae_rad_main", "x8", "sae_rad_x", "sae_rad_x2_dense"]))
    for bad in ([0], [1.5], [-2]):
        with pytest.raises(ValueError, match="whole multiples"):
            experiments.dictionary_size_runs(bad, 8, 3.0)


def test_directions_for_variance_counts_the_strong_directions():
    rng = np.random.default_rng(0)
    strong = rng.standard_normal((500, 3)) * np.array([5.0, 4.0, 3.0])
    tokens = np.hstack([strong, 0.01 * rng.standard_normal((500, 13))]) + 7.0  # the offset must not count
    assert experiments.directions_for_variance(tokens, 0.9) == 3
    assert experiments.directions_for_variance(tokens, 0.6) == 2  # shares about 0.50, 0.82, 1.00


def _dead_tables(size_dead):
    main = {"name": "main", "tokens": "all training tokens (main run)", "training_tokens": 2880,
            "tokens_per_feature": 1.4, "l1_coefficient": 3.0, "l0": 14.0, "explained_variance": 0.86,
            "dead_features": 400, "expansion_factor": 8, "d_sae": 2048}
    by_data = pd.DataFrame([
        main,
        {**main, "name": "quarter", "tokens": "25% of the training tokens", "training_tokens": 720,
         "tokens_per_feature": 0.35, "dead_features": 1000},
        {**main, "name": "half", "tokens": "50% of the training tokens", "training_tokens": 1440,
         "tokens_per_feature": 0.7, "dead_features": 640},
        {**main, "name": "normed", "tokens": "layer-normed tokens", "l1_coefficient": 8.0, "dead_features": 1200},
    ])
    by_size = pd.DataFrame([
        {**main, "name": "x1", "expansion_factor": 1, "d_sae": 256, "tokens_per_feature": 11.25,
         "dead_features": size_dead},
        main,
    ])
    return by_data, by_size, main


def test_dead_feature_dependence_reads_each_verdict_from_the_tables():
    by_data, by_size, main = _dead_tables(size_dead=6)
    text = experiments.dead_feature_dependence(by_data, by_size, main, 4.9, 32, 256)
    assert "From 720, 1,440, 2,880 training tokens, 1,000, 640, 400 features are dead" in text
    assert "the count falls every time the data grows" in text
    # dead ∝ tokens^b through (0.35, 1000), (0.7, 640), (1.4, 400): about 0.37 * ... at 4.9 tokens per feature
    slope, intercept = np.polyfit(np.log([0.35, 0.7, 1.4]), np.log([1000, 640, 400]), 1)
    assert f"predicts about {np.exp(intercept + slope * np.log(4.9)):,.0f} dead" in text
    assert "make features die **more**" in text
    assert "×1 (256 features, 11.2 tokens each) leaves 6 dead" in text
    assert "still loses 6 at the main run's λ" in text
    assert "90 % of the training tokens' variance lies in 32 of their 256 directions" in text

    text = experiments.dead_feature_dependence(by_data, _dead_tables(size_dead=0)[1], main, 4.9, 32, 256)
    assert "no feature dies" in text and "still loses" not in text

    rising = by_data.assign(dead_features=[400, 100, 200, 50])
    text = experiments.dead_feature_dependence(rising, by_size, main, 4.9, 32, 256)
    assert "does not fall steadily" in text and "power law" not in text
    assert "make fewer features die" in text


def test_dead_feature_dependence_with_only_the_main_run():
    by_data, by_size, main = _dead_tables(size_dead=6)
    assert experiments.dead_feature_dependence(by_data.iloc[:1], by_size.iloc[1:], main, 4.9, 32, 256) == \
        "Data comparison skipped."


def test_ablation_labels_name_the_switch_in_words_and_refuse_unknown_rows():
    names = [run.name for run in experiments.ablation_runs(4, 3.0)]
    labels = [experiments.ablation_label(name) for name in names]
    assert labels[0] == "gated SAE (none of the four)" and labels[-1] == "SAE-Rad (all four)"
    assert labels[1:-1] == [f"gated + {words}" for words in experiments.SWITCH_CHANGES.values()]
    for bad in ("gated+colour=True", "conerly", "gated+centre_input"):
        with pytest.raises(ValueError, match="not a row of the ablation"):
            experiments.ablation_label(bad)


def test_claim_verdict_and_direction_words():
    assert experiments.claim_verdict([True, True]) == "reproduced"
    assert experiments.claim_verdict([True, False]) == "partly reproduced"
    assert experiments.claim_verdict([False, False]) == "not reproduced"
    with pytest.raises(ValueError):
        experiments.claim_verdict([])
    assert experiments.direction(2.0, 1.0) == "higher" and experiments.direction(1.0, 2.0) == "lower"
    assert experiments.direction(1.0, 1.0) == "about the same"
    assert experiments.direction(1.004, 1.0, tolerance=0.005) == "about the same"
    assert experiments.direction(3, 1, "more", "fewer") == "more"


def test_table3_reading_needs_both_directions_for_the_claim():
    table = pd.DataFrame({"architecture": ["conerly", "sae_rad"], "l0": [15.0, 12.0],
                          "explained_variance": [0.80, 0.85]})
    reading = experiments.table3_reading(table)
    assert reading["verdict"] == "reproduced"
    assert (reading["l0_direction"], reading["ev_direction"]) == ("lower", "higher")
    assert reading["l0_difference"] == pytest.approx(-3.0)
    worse_fit = table.assign(explained_variance=[0.90, 0.85])
    assert experiments.table3_reading(worse_fit)["verdict"] == "partly reproduced"
    assert experiments.table3_reading(worse_fit.assign(l0=[10.0, 12.0]))["verdict"] == "not reproduced"
    with pytest.raises(ValueError, match="conerly"):
        experiments.table3_reading(table.iloc[1:])


def test_table5_reading_counts_sizes_where_dense_beats_sparse():
    runs = experiments.table5_runs([4, 8, 16], 3.0)
    table = pd.DataFrame({"name": [run.name for run in runs], "expansion_factor": [run.expansion_factor for run in runs],
                          "l0": [12, 14, 16, 30, 31, 10], "explained_variance": [0.9, 0.85, 0.8, 0.95, 0.9, 0.7]})
    reading = experiments.table5_reading(table)
    # sparse x16, x8, x4 then dense x16, x8, x4: dense L0 higher at x16 and x8, not at x4; same for variance
    assert (reading["sizes"], reading["dense_higher_l0"], reading["dense_higher_ev"]) == (3, 2, 2)
    assert reading["dense_verdict"] == "partly reproduced"
    assert reading["larger_explains_more"] and reading["size_verdict"] == "reproduced"
    flat = table.assign(explained_variance=[0.8, 0.85, 0.9, 0.95, 0.9, 0.95])
    assert not experiments.table5_reading(flat)["larger_explains_more"]
    with pytest.raises(ValueError, match="sparse and a dense"):
        experiments.table5_reading(table.iloc[:3])


def test_held_out_reading_finds_the_peak_and_whether_the_fit_fell():
    history = pd.DataFrame({"step": [0, 50, 100, 150], "held_out_explained_variance": [-3.0, 0.80, 0.86, 0.84]})
    reading = experiments.held_out_reading(history)
    assert (reading["peak_step"], reading["final"]) == (100, 0.84)
    assert reading["fell_by"] == pytest.approx(0.02) and reading["fell"]
    assert not experiments.held_out_reading(history.assign(held_out_explained_variance=[0, 0.8, 0.86, 0.858]))["fell"]


def test_silent_count_at_reads_the_closest_logged_step():
    history = pd.DataFrame({"step": [0, 50, 100], "silent_for_an_epoch": [np.nan, 10.0, 30.0]})
    assert np.isnan(experiments.silent_count_at(history, 5))
    assert experiments.silent_count_at(history, 60) == 10.0
    assert experiments.silent_count_at(history, 99) == 30.0


def test_matryoshka_prefixes_end_with_the_whole_dictionary():
    assert experiments.matryoshka_prefixes(2048, [0.015625, 0.0625, 0.25]) == (32, 128, 512, 2048)
    assert experiments.matryoshka_prefixes(2048, [0.25]) == (512, 2048)
    assert experiments.matryoshka_prefixes(8, [0.01]) == (1, 8)
    with pytest.raises(ValueError, match="shares of d_sae"):
        experiments.matryoshka_prefixes(2048, [0.0])


def test_second_half_change_reads_half_and_end_of_the_held_out_history():
    history = pd.DataFrame({"step": [0, 50, 100, 150, 199], "held_out_l0": [100.0, 40.0, 30.0, 25.0, 20.0],
                            "held_out_explained_variance": [0.1, 0.5, 0.7, 0.8, 0.85],
                            "silent_for_an_epoch": [np.nan, 1.0, 3.0, 5.0, 8.0]})
    change = experiments.second_half_change(history)
    assert change["steps"] == 200 and change["l0_half"] == 30.0 and change["l0_end"] == 20.0
    assert change["l0_change"] == pytest.approx(0.5)
    assert (change["explained_variance_half"], change["silent_end"]) == (0.7, 8.0)
    with pytest.raises(ValueError, match="lacks"):
        experiments.second_half_change(history.drop(columns=["silent_for_an_epoch"]))
    with pytest.raises(ValueError, match="no held-out"):
        experiments.second_half_change(history.assign(held_out_l0=np.nan))


def test_encoder_rows_table_and_reading_compare_at_matched_l0(tmp_path):
    import pandas as pd

    from saerad.sae import experiments

    (tmp_path / "comparison.csv").write_text("encoder,directions_for_90pct_variance\nours,8\nsup,32\n")
    rows = [{"encoder": "ours", "role": "this profile's encoder", "l1_coefficient": 1.0, "l0": 13.0,
             "explained_variance": 0.95, "dead_features": 1000, "d_sae": 2048},
            {"encoder": "sup", "role": "comparison arm, the main run's λ", "l1_coefficient": 1.0, "l0": 42.0,
             "explained_variance": 0.91, "dead_features": 100, "d_sae": 2048},
            {"encoder": "sup", "role": "comparison arm, λ matched to the main run's L0", "l1_coefficient": 3.0,
             "l0": 14.0, "explained_variance": 0.86, "dead_features": 400, "d_sae": 2048}]
    table = experiments.encoder_rows_table(rows, tmp_path / "comparison.csv")
    assert table["directions_for_90pct_variance"].tolist() == [8, 32, 32]
    assert table["dead_share"].iloc[0] == pytest.approx(1000 / 2048)
    text = experiments.encoder_reading(table)["summary"]
    assert "3.2 times as many features" in text  # 42 / 13
    assert "At L0 14.0 against 13.0, the ours tokens leave 1,000 features dead and the sup tokens 400" in text
    fewer = experiments.encoder_reading(table.assign(dead_features=[300, 100, 400]))["summary"]
    assert "leave no more features dead" in fewer
    assert experiments.encoder_reading(table.iloc[:1])["summary"].startswith("n/a")
