"""Worked solutions of the features chapter's exercises (chapter 03).

Exercises 03.1 and 03.2 re-describe and re-score the features of the chapter's SAE with one setting of
the describer changed; 03.3 trains a smaller SAE-Rad dictionary and measures how many planted findings a
single feature recovers. Each solution also recomputes the chapter's own setting with the same code, so the
comparison is between two runs of one function rather than between a run and a stored number.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from saerad.book.solutions import solution
from saerad.book.tables import format_percent

#: Settings of the chapter's describer and scorer that a solution reads from the features stage's record.
_DESCRIBER_SETTINGS = ("top_k", "min_support", "min_lift", "max_statements", "score_per_bin", "score_negatives",
                       "seed", "profile")


@dataclass
class FeatureWorld:
    """What the features stage left: the sparse activations of every image and the reports' findings."""

    activations: sp.csr_matrix
    index: pd.DataFrame
    stats: pd.DataFrame
    findings_text: pd.Series
    parameters: dict[str, Any]

    @property
    def live_features(self) -> list[int]:
        """Features that fire on at least one image of the data set (all splits), as the chapter counts them."""
        return self.stats.loc[~self.stats["dead"].astype(bool), "feature"].astype(int).tolist()


def load_feature_world(artifacts_root: str | Path) -> FeatureWorld:
    """Read the features stage's activation files and the data stage's findings text."""
    from saerad.features import stage
    from saerad.features.activations import load_sparse_encoding
    from saerad.params import stage_parameters

    root = Path(artifacts_root)
    stage_dir = root / "features"
    stats_path = stage_dir / "feature_stats.csv"
    if not stats_path.exists():
        raise FileNotFoundError(f"{stats_path} is missing: run the features stage first")
    activations, index = load_sparse_encoding(stage_dir)
    stats = pd.read_csv(stats_path)
    if "dead" not in stats.columns or "feature" not in stats.columns:
        raise ValueError(f"{stats_path}: expected the columns 'feature' and 'dead', found {list(stats.columns)}")
    return FeatureWorld(activations, index, stats, stage.study_findings(root), stage_parameters(root, "features"))


def describe_and_score(world: FeatureWorld, **changes: Any) -> dict[str, Any]:
    """Describe every live feature with the offline describer and score the descriptions, as the chapter does.

    Parameters
    ----------
    world
        :func:`load_feature_world`.
    **changes
        Settings that differ from the features stage's (``top_k``, ``min_lift``, ...).

    Returns
    -------
    dict
        ``live``, ``described`` (counts), ``median_auroc``, ``median_precision`` (of the explanation scores),
        ``statements`` (mean statements per description) and ``corpus_share`` (median share of training
        reports that make a chosen statement: lower is more specific).
    """
    from saerad.features import stage
    from saerad.features.describer import StatementKeys
    from saerad.features.explanation import OfflineScorer, explanation_scores, scoring_sample
    from saerad.metrics.chexpert_rules import sentence_findings

    unknown = set(changes) - set(_DESCRIBER_SETTINGS)
    if unknown:
        raise ValueError(f"describe_and_score: unknown setting(s) {sorted(unknown)}; known: {list(_DESCRIBER_SETTINGS)}")
    settings = {name: world.parameters[name] for name in _DESCRIBER_SETTINGS} | changes
    live = world.live_features
    top_reports, _ = stage.training_top_reports(world.activations, world.index, world.findings_text, live,
                                                int(settings["top_k"]))
    describer = stage.offline_describer(world.index, world.findings_text, settings["min_support"],
                                        settings["min_lift"], settings["max_statements"])
    # No cache folder: a solution's replies live in memory and never mix with the chapter's cache.
    client = stage.make_llm_client("describer", "offline", "", describer, "", settings["profile"])
    with tempfile.TemporaryDirectory() as scratch:
        descriptions = stage.describe_live_features(top_reports, live, client, Path(scratch) / "descriptions.jsonl")
    described = [description for description in descriptions if description.ok]

    corpus_shares = [statement.support / len(top_reports[description.feature]) / statement.lift
                     for description in described
                     for statement in describer.choose(top_reports[description.feature])]
    result = {"live": len(live), "described": len(described), "median_auroc": float("nan"),
              "median_precision": float("nan"),
              "statements": float(np.mean([len(d.statements) for d in described])) if described else float("nan"),
              "corpus_share": float(np.median(corpus_shares)) if corpus_shares else float("nan")}
    if not described:
        return result
    held_out_rows = stage.split_rows(world.index, ("validate", "test"))
    sample = scoring_sample(world.activations[held_out_rows], world.index["study_id"].to_numpy()[held_out_rows],
                            [description.feature for description in described],
                            per_bin=int(settings["score_per_bin"]), negatives=int(settings["score_negatives"]),
                            seed=int(settings["seed"]))
    scorer_client = stage.make_llm_client("scorer", "offline", "", OfflineScorer(StatementKeys(sentence_findings)),
                                          "", settings["profile"])
    scores, _ = explanation_scores(sample, {d.feature: d for d in descriptions}, world.findings_text.to_dict(),
                                   scorer_client, progress=False)
    result["median_auroc"] = float(scores["auroc"].median()) if len(scores) else float("nan")
    result["median_precision"] = float(scores["precision"].median()) if len(scores) else float("nan")
    return result


def direction(new: float, old: float, up: str, down: str, same: str = "unchanged", tolerance: float = 0.005) -> str:
    """The word for how ``new`` compares with ``old``; ``same`` within ``tolerance`` (or when either is NaN)."""
    if not (np.isfinite(new) and np.isfinite(old)) or abs(new - old) <= tolerance:
        return same
    return up if new > old else down


def _share(part: int, whole: int) -> str:
    return format_percent(part / whole, 0) if whole else "n/a: no live feature"


def _comparison_rows(default: Mapping[str, Any], changed: Mapping[str, Any], setting: str, default_value: Any,
                     changed_value: Any) -> list[dict[str, Any]]:
    """Rows of a comparison table: measure, the chapter's setting, the changed one.

    The column names sort in that order (the stored record's keys are sorted): "measure", "the chapter: …",
    "with …".
    """
    default_label, changed_label = f"the chapter: {setting} = {default_value}", f"with {setting} = {changed_value}"
    measures = [
        ("described features", lambda r: f"{r['described']:,} of {r['live']:,} ({_share(r['described'], r['live'])})"),
        ("statements per description", lambda r: f"{r['statements']:.1f}"),
        ("corpus share of a statement (median)", lambda r: format_percent(r["corpus_share"], 1)),
        ("explanation AUROC (median)", lambda r: f"{r['median_auroc']:.3f}"),
        ("explanation precision (median)", lambda r: f"{r['median_precision']:.3f}"),
    ]
    return [{"measure": name, default_label: value(default), changed_label: value(changed)}
            for name, value in measures]


@solution("03.1", keys=("live", "described_default", "described_changed", "share_default", "share_changed",
                        "auroc_default", "auroc_changed", "auroc_direction", "corpus_share_default",
                        "corpus_share_changed", "corpus_share_direction", "precision_default", "precision_changed",
                        "table"),
          reads=("data", "features"), features__min_lift=1.0)
def lower_lift(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Exercise 03.1: statements need not be over-represented among the top reports (``min_lift = 1``)."""
    world = load_feature_world(artifacts_root)
    default = describe_and_score(world)
    changed = describe_and_score(world, min_lift=float(parameters["features.min_lift"]))
    return {
        "live": default["live"], "described_default": default["described"], "described_changed": changed["described"],
        "share_default": _share(default["described"], default["live"]),
        "share_changed": _share(changed["described"], changed["live"]),
        "auroc_default": default["median_auroc"], "auroc_changed": changed["median_auroc"],
        "auroc_direction": direction(changed["median_auroc"], default["median_auroc"], "higher", "lower"),
        "corpus_share_default": format_percent(default["corpus_share"], 1),
        "corpus_share_changed": format_percent(changed["corpus_share"], 1),
        "corpus_share_direction": direction(changed["corpus_share"], default["corpus_share"], "more", "less",
                                            "as", tolerance=0.001),
        "precision_default": default["median_precision"], "precision_changed": changed["median_precision"],
        "table": _comparison_rows(default, changed, "min_lift", f"{world.parameters['min_lift']:g}",
                                  f"{parameters['features.min_lift']:g}"),
    }


@solution("03.2", keys=("top_k_default", "described_default", "described_changed", "live", "statements_default",
                        "statements_changed", "corpus_share_default", "corpus_share_changed", "specificity",
                        "auroc_default", "auroc_changed", "auroc_direction", "table"),
          reads=("data", "features"), features__top_k=3)
def fewer_reports(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Exercise 03.2: three top reports per feature instead of the chapter's ``top_k``."""
    world = load_feature_world(artifacts_root)
    default = describe_and_score(world)
    changed = describe_and_score(world, top_k=int(parameters["features.top_k"]))
    return {
        "top_k_default": int(world.parameters["top_k"]), "live": default["live"],
        "described_default": default["described"], "described_changed": changed["described"],
        "statements_default": f"{default['statements']:.1f}", "statements_changed": f"{changed['statements']:.1f}",
        "corpus_share_default": format_percent(default["corpus_share"], 1),
        "corpus_share_changed": format_percent(changed["corpus_share"], 1),
        # A statement made by fewer training reports is more specific.
        "specificity": direction(changed["corpus_share"], default["corpus_share"], "less specific",
                                 "more specific", "as specific", tolerance=0.001),
        "auroc_default": default["median_auroc"], "auroc_changed": changed["median_auroc"],
        "auroc_direction": direction(changed["median_auroc"], default["median_auroc"], "higher", "lower"),
        "table": _comparison_rows(default, changed, "top_k", world.parameters["top_k"], parameters["features.top_k"]),
    }


def ground_truth_recovery(activations: sp.spmatrix, index: pd.DataFrame, data_dir: str | Path) -> dict[str, float]:
    """The chapter's three recovery measures of one SAE: one feature, one feature per side, a pair.

    Each is the share of planted findings with prevalence ≥ 2 % whose feature (or pair), chosen on training
    images, reaches AUROC ≥ 0.9 on held-out images.
    """
    from saerad.features import alignment

    _, single, _ = alignment.align_to_ground_truth(activations, index, data_dir, select_splits=("train",))
    _, by_side, _ = alignment.align_to_ground_truth(activations, index, data_dir, select_splits=("train",),
                                                    by_side=True)
    pairs = alignment.best_feature_pairs(activations, index, data_dir)
    common = pairs[pairs["prevalence"] >= 0.02]
    return {"l0": float(activations.nnz / activations.shape[0]),
            "single": alignment.recovered_fraction(single), "by_side": alignment.recovered_fraction(by_side),
            "pair": float((common["pair_auroc"] >= 0.9).mean()) if len(common) else float("nan")}


@solution("03.3", keys=("d_sae_default", "d_sae_small", "l0_default", "l0_small", "single_default", "single_small",
                        "by_side_default", "by_side_small", "pair_default", "pair_small", "single_direction",
                        "verdict", "split_direction", "table"),
          reads=("encode", "sae", "features"), sae__expansion_factor=4)
def smaller_dictionary(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Exercise 03.3: SAE-Rad with a smaller dictionary, at the main run's λ and steps, against the chapter's."""
    import torch

    from saerad.sae import experiments
    from saerad.features.activations import sparse_feature_activations
    from saerad.params import stage_parameters
    from saerad.sae import TrainConfig, load_sae
    from saerad.encode.tokens import load_class_tokens

    root = Path(artifacts_root)
    world = load_feature_world(root)
    sae_settings = stage_parameters(root, "sae")
    data_dir = root / "data"
    main_sae = load_sae(root / "sae" / world.parameters["sae_name"], device="cpu")

    train_tokens, _ = load_class_tokens(root, "train")
    test_tokens, _ = load_class_tokens(root, "test")
    all_tokens, _ = load_class_tokens(root, split=None)
    config = TrainConfig(steps=int(sae_settings["steps"]), batch_size=int(sae_settings["batch_size"]),
                         lr=float(sae_settings["lr"]), l1_coefficient=float(sae_settings["l1_coefficient"]),
                         lr_warmup_fraction=float(sae_settings["lr_warmup_fraction"]),
                         checkpoint_every=int(sae_settings["steps"]), seed=int(sae_settings["seed"]), device="cpu")
    factor = int(parameters["sae.expansion_factor"])
    run = experiments.Run(f"sae_rad_x{factor}_solution", "sae_rad", factor, float(sae_settings["l1_coefficient"]))
    torch.manual_seed(int(sae_settings["seed"]))
    with tempfile.TemporaryDirectory() as scratch:
        row, result = experiments.train_and_evaluate(run, train_tokens, test_tokens, config, scratch)
        small_activations = sparse_feature_activations(result.sae, all_tokens, device="cpu")
    default = ground_truth_recovery(world.activations, world.index, data_dir)
    small = ground_truth_recovery(small_activations, world.index, data_dir)

    # Column names that sort as shown (the stored record's keys are sorted): measure, the chapter's, the new one.
    chapter_label = f"the chapter: {world.parameters['sae_name']}"
    small_label = f"with expansion_factor = {factor}"
    table = [{"measure": "features in the dictionary", chapter_label: f"{main_sae.config.d_sae:,}",
              small_label: f"{row['d_sae']:,}"},
             {"measure": "L0 (active features per image)", chapter_label: f"{default['l0']:.1f}",
              small_label: f"{small['l0']:.1f}"}]
    for key, name in (("single", "recovered by one feature"), ("by_side", "... by one feature per side"),
                      ("pair", "... by a pair of features")):
        table.append({"measure": name, chapter_label: format_percent(default[key], 0),
                      small_label: format_percent(small[key], 0)})
    return {
        "d_sae_default": int(main_sae.config.d_sae), "d_sae_small": int(row["d_sae"]),
        "l0_default": f"{default['l0']:.1f}", "l0_small": f"{small['l0']:.1f}",
        **{f"{key}_default": format_percent(default[key], 0) for key in ("single", "by_side", "pair")},
        **{f"{key}_small": format_percent(small[key], 0) for key in ("single", "by_side", "pair")},
        "single_direction": direction(small["single"], default["single"], "more", "fewer", "as many", 0.001),
        "verdict": {"more": "as splitting alone predicts", "fewer": "against what splitting alone predicts",
                    "as many": "no change, although splitting alone predicts more"}[
            direction(small["single"], default["single"], "more", "fewer", "as many", 0.001)],
        # Per side and in pairs, split findings count as recovered: if these fall too, detail was lost.
        "split_direction": direction(small["by_side"] + small["pair"], default["by_side"] + default["pair"],
                                     "rise", "fall", "stay level", 0.001),
        "table": table,
    }
