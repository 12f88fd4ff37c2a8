"""Worked solutions of the SAE chapter's exercises (chapter 02).

Every exercise changes one setting of the chapter's recipe and trains one SAE with it, with the chapter's
own code (:func:`saerad.sae.experiments.train_and_evaluate`) on the chapter's tokens; the solution then
reads the run it is compared with from the chapter's tables (``main_sae.csv``, ``table5.csv``,
``resampling.csv``, ``dead_features_by_data.csv``), which the same code wrote. The SAEs of a solution are
trained in a temporary folder and not kept: only the numbers are.

Where the exercise as first written needed far more than a few minutes (a ×32 dictionary for the full
3,000 steps, 20,000 steps at a lower learning rate), the exercise text says what was scaled down.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from saerad.book.solutions import solution
from saerad.book.tables import format_percent


def chapter_recipe(artifacts_root: str | Path) -> dict[str, Any]:
    """The SAE stage's parameters as the chapter ran (its notebook defaults, overridden by its record)."""
    from saerad.params import stage_parameters

    return stage_parameters(artifacts_root, "sae")


def chapter_tokens(artifacts_root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The training and held-out class tokens the chapter trains and measures on."""
    from saerad.encode.tokens import load_class_tokens

    train, _ = load_class_tokens(artifacts_root, "train")
    test, _ = load_class_tokens(artifacts_root, "test")
    return train, test


def chapter_table(artifacts_root: str | Path, name: str) -> pd.DataFrame:
    """One of the chapter's tables, ``sae/<name>.csv``; a clear error when the chapter has not written it."""
    path = Path(artifacts_root) / "sae" / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the sae stage first (python -m saerad.pipeline --only sae)")
    return pd.read_csv(path)


def train_config(recipe: Mapping[str, Any], **changes: Any):
    """The chapter's main training recipe (:class:`saerad.sae.TrainConfig`), with ``changes``."""
    import torch

    from saerad.sae import TrainConfig

    device = recipe["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    config = TrainConfig(steps=recipe["steps"], batch_size=recipe["batch_size"], lr=recipe["lr"],
                         l1_coefficient=recipe["l1_coefficient"], lr_warmup_fraction=recipe["lr_warmup_fraction"],
                         checkpoint_every=recipe["checkpoint_every"], seed=recipe["seed"], device=device)
    return replace(config, **changes)


@contextlib.contextmanager
def one_torch_thread():
    """Train on one thread: on a shared two-core machine, two threads made a training step six times slower
    than one (measured: 300 steps in 115 s against 19 s while other work ran), and a solution must not depend
    on what else the machine does."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_once(run, train: np.ndarray, test: np.ndarray, config) -> tuple[dict[str, Any], Any]:
    """Train and measure one SAE as the chapter does, on one thread, in a temporary folder that is removed
    afterwards."""
    from saerad.sae import experiments

    with one_torch_thread(), tempfile.TemporaryDirectory(prefix="saerad-solution-") as folder:
        return experiments.train_and_evaluate(run, train, test, config, folder)


def recovered_by_single_features(sae, artifacts_root: str | Path, device: str = "cpu") -> float | None:
    """Share of planted findings (prevalence ≥ 2 %) one feature recovers with AUROC ≥ 0.9, as the features
    chapter measures it (feature chosen on training images, scored on held-out ones); None without SynthCXR's
    planted ground truth."""
    from saerad.features import alignment
    from saerad.features.activations import sparse_feature_activations
    from saerad.encode.tokens import load_class_tokens

    data_dir = Path(artifacts_root) / "data"
    if not (data_dir / "ground_truth.csv").exists():
        return None
    tokens, index = load_class_tokens(artifacts_root, split=None)
    activations = sparse_feature_activations(sae, tokens, device=device)
    _, findings, _ = alignment.align_to_ground_truth(activations, index, data_dir, select_splits=("train",))
    return alignment.recovered_fraction(findings)


def compare_counts(ours: float, other: float) -> str:
    """``"more than"``, ``"fewer than"`` or ``"as many as"``: how a count compares, ready for a sentence."""
    from saerad.sae import experiments

    return experiments.direction(ours, other, "more than", "fewer than").replace("about the same", "as many as")


def _percent(value: float | None) -> str:
    return "n/a: no planted ground truth" if value is None or np.isnan(value) else format_percent(value, 0)


def _main_row(artifacts_root: Path) -> pd.Series:
    return chapter_table(artifacts_root, "main_sae").iloc[0]


@solution("02.1", keys=("l0", "explained_variance", "dead_features", "main_l0", "main_explained_variance",
                        "main_dead_features", "l0_change", "ev_change", "moves_more"),
          reads=("encode", "sae"), sae__l1_coefficient=0.5)
def halve_sparsity(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    from saerad.sae import experiments

    recipe = chapter_recipe(artifacts_root)
    main = _main_row(artifacts_root)
    train, test = chapter_tokens(artifacts_root)
    l1 = parameters["sae.l1_coefficient"]
    row, _ = train_once(experiments.Run("sae_rad_l1", "sae_rad", recipe["expansion_factor"], l1), train, test,
                        train_config(recipe, l1_coefficient=l1))
    l0_change = row["l0"] / main["l0"] - 1.0
    ev_change = row["explained_variance"] / main["explained_variance"] - 1.0
    return {"l0": row["l0"], "explained_variance": row["explained_variance"], "dead_features": int(row["dead_features"]),
            "main_l0": float(main["l0"]), "main_explained_variance": float(main["explained_variance"]),
            "main_dead_features": int(main["dead_features"]),
            "l0_change": f"{l0_change:+.0%}", "ev_change": f"{ev_change:+.1%}",
            "moves_more": "L0" if abs(l0_change) > abs(ev_change) else "explained variance"}


@solution("02.2", keys=("d_sae", "tokens_per_feature", "dead_features", "dead_share", "l0", "explained_variance",
                        "steps", "compare_name", "compare_d_sae", "compare_dead_features", "compare_dead_share"),
          reads=("encode", "sae"), sae__expansion_factor=32)
def larger_dictionary(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    from saerad.sae import experiments

    recipe = chapter_recipe(artifacts_root)
    train, test = chapter_tokens(artifacts_root)
    factor = parameters["sae.expansion_factor"]
    # At Table 5's steps, so that the chapter's own size at the same λ (Table 5's x<main> row) compares directly.
    config = train_config(recipe, steps=recipe["comparison_steps"])
    row, _ = train_once(experiments.Run(f"x{factor}", "sae_rad", factor, recipe["l1_coefficient"]), train, test, config)
    table5 = (chapter_table(artifacts_root, "table5") if recipe["run_table5"]
              else pd.DataFrame(columns=["name", "l1_coefficient"]))
    same_size = table5[table5["name"] == f"x{recipe['expansion_factor']}"]
    same_size = same_size[np.isclose(same_size["l1_coefficient"].astype(float), recipe["l1_coefficient"])]
    if len(same_size):
        compare = same_size.iloc[0]
    else:  # Table 5 skipped or at other sizes: train the chapter's size at the same steps
        compare, _ = train_once(experiments.Run("main_size", "sae_rad", recipe["expansion_factor"],
                                                recipe["l1_coefficient"]), train, test, config)
        compare = pd.Series(compare)
    return {"d_sae": int(row["d_sae"]), "tokens_per_feature": len(train) / row["d_sae"],
            "dead_features": int(row["dead_features"]), "dead_share": format_percent(row["dead_features"] / row["d_sae"]),
            "l0": row["l0"], "explained_variance": row["explained_variance"], "steps": int(config.steps),
            "compare_name": f"×{recipe['expansion_factor']}", "compare_d_sae": int(compare["d_sae"]),
            "compare_dead_features": int(compare["dead_features"]),
            "compare_dead_share": format_percent(compare["dead_features"] / compare["d_sae"])}


def _silent_points(history: pd.DataFrame, steps: int, warmup_fraction: float) -> dict[str, Any]:
    from saerad.sae import experiments

    def count(step: float) -> Any:
        value = experiments.silent_count_at(history, step)
        return "none counted yet (under one epoch)" if np.isnan(value) else int(value)

    return {"at_warmup_end": count(warmup_fraction * steps), "at_decay": count(0.8 * steps), "at_end": count(steps - 1)}


@solution("02.3", keys=("warmup_steps", "silent_at_warmup_end", "silent_at_decay", "silent_at_end", "dead_features",
                        "l0", "explained_variance", "main_silent_at_warmup_end", "main_silent_at_end",
                        "main_dead_features", "main_l0", "main_explained_variance", "dead_direction"),
          reads=("encode", "sae"), sae__lr_warmup_fraction=0.3)
def slower_warmup(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    from saerad.sae import experiments
    from saerad.sae.train import HISTORY_FILENAME

    recipe = chapter_recipe(artifacts_root)
    train, test = chapter_tokens(artifacts_root)
    warmup = parameters["sae.lr_warmup_fraction"]
    row, result = train_once(experiments.Run("sae_rad_warmup", "sae_rad", recipe["expansion_factor"],
                                             recipe["l1_coefficient"]), train, test,
                             train_config(recipe, lr_warmup_fraction=warmup))
    ours = _silent_points(result.history, recipe["steps"], warmup)
    main_history = pd.read_csv(Path(artifacts_root) / "sae" / "sae_rad_main" / HISTORY_FILENAME)
    # The main run at the same steps as this run's warm-up end, so the two counts are read at one moment.
    main = _silent_points(main_history, recipe["steps"], warmup)
    main_row = _main_row(artifacts_root)
    return {"warmup_steps": int(round(warmup * recipe["steps"])), "silent_at_warmup_end": ours["at_warmup_end"],
            "silent_at_decay": ours["at_decay"], "silent_at_end": ours["at_end"],
            "dead_features": int(row["dead_features"]), "l0": row["l0"], "explained_variance": row["explained_variance"],
            "main_silent_at_warmup_end": main["at_warmup_end"], "main_silent_at_end": main["at_end"],
            "main_dead_features": int(main_row["dead_features"]), "main_l0": float(main_row["l0"]),
            "main_explained_variance": float(main_row["explained_variance"]),
            "dead_direction": compare_counts(row["dead_features"], main_row["dead_features"])}


@solution("02.4", keys=("restarts", "dead_features", "l0", "explained_variance", "chapter_until", "chapter_restarts", "chapter_dead_features", "main_dead_features",
                        "dead_direction"),
          reads=("encode", "sae"), sae__resampling_until=0.8)
def resample_longer(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    from saerad.sae import experiments

    recipe = chapter_recipe(artifacts_root)
    every = recipe["resampling_every"] or 250
    train, test = chapter_tokens(artifacts_root)
    until = parameters["sae.resampling_until"]
    row, result = train_once(experiments.Run("sae_rad_resampled", "sae_rad", recipe["expansion_factor"],
                                             recipe["l1_coefficient"]), train, test,
                             train_config(recipe, resample_dead_every=every, resample_dead_until=until))
    history = result.history
    remedies = chapter_table(artifacts_root, "resampling")
    chapter = remedies[remedies["name"] == "sae_rad_resampled"]
    main_dead = int(_main_row(artifacts_root)["dead_features"])
    return {"restarts": int(history["resampled_so_far"].iloc[-1]), "dead_features": int(row["dead_features"]),
            "l0": row["l0"], "explained_variance": row["explained_variance"],
            "chapter_until": format_percent(recipe["resampling_until"], 0),
            "chapter_restarts": int(chapter["restarts"].iloc[0]) if len(chapter) else "n/a: not trained",
            "chapter_dead_features": int(chapter["dead_features"].iloc[0]) if len(chapter) else "n/a: not trained",
            "main_dead_features": main_dead,
            "dead_direction": compare_counts(row["dead_features"], main_dead)}


def _matryoshka(artifacts_root: Path, recipe: Mapping[str, Any], prefix_fractions: list[float], aux_k: int
                ) -> dict[str, Any]:
    """Train the chapter's Matryoshka SAE with other nested sizes or AuxK; measure it and its recovery."""
    from saerad.sae import experiments

    train, test = chapter_tokens(artifacts_root)
    d_sae = train.shape[1] * recipe["expansion_factor"]
    prefixes = experiments.matryoshka_prefixes(d_sae, prefix_fractions)
    run = experiments.Run("matryoshka", "matryoshka", recipe["expansion_factor"], 0.0,
                          {"k": recipe["matryoshka_k"], "prefixes": prefixes})
    config = train_config(recipe, aux_k=aux_k)
    with one_torch_thread(), tempfile.TemporaryDirectory(prefix="saerad-solution-") as folder:
        row, result = experiments.train_and_evaluate(run, train, test, config, folder)
        recovered = recovered_by_single_features(result.sae, artifacts_root, config.device)
    return {"prefixes": ", ".join(f"{size:,}" for size in prefixes), "l0": row["l0"],
            "explained_variance": row["explained_variance"], "dead_features": int(row["dead_features"]),
            "recovered": recovered}


def _chapter_matryoshka(artifacts_root: Path) -> dict[str, Any]:
    """The chapter's own Matryoshka SAE (``sae/matryoshka``): its row and its single-feature recovery."""
    from saerad.sae import load_sae

    table = chapter_table(artifacts_root, "matryoshka")
    row = table[table["name"] == "matryoshka"].iloc[0]
    sae = load_sae(Path(artifacts_root) / "sae" / "matryoshka")
    return {"l0": float(row["l0"]), "explained_variance": float(row["explained_variance"]),
            "dead_features": int(row["dead_features"]), "recovered": recovered_by_single_features(sae, artifacts_root),
            "prefixes": ", ".join(f"{size:,}" for size in sae.config.prefixes)}


_MATRYOSHKA_KEYS = ("prefixes", "l0", "explained_variance", "dead_features", "recovered", "chapter_prefixes",
                    "chapter_l0", "chapter_explained_variance", "chapter_dead_features", "chapter_recovered",
                    "recovery_direction")


def _matryoshka_answer(ours: dict[str, Any], chapter: dict[str, Any]) -> dict[str, Any]:
    from saerad.sae import experiments

    if ours["recovered"] is None or chapter["recovered"] is None:
        word = "n/a: no planted ground truth"
    else:
        word = experiments.direction(ours["recovered"], chapter["recovered"], "rises", "falls")
        word = "stays the same" if word == "about the same" else word
    return {"prefixes": ours["prefixes"], "l0": ours["l0"], "explained_variance": ours["explained_variance"],
            "dead_features": ours["dead_features"], "recovered": _percent(ours["recovered"]),
            "chapter_prefixes": chapter["prefixes"], "chapter_l0": chapter["l0"],
            "chapter_explained_variance": chapter["explained_variance"],
            "chapter_dead_features": chapter["dead_features"], "chapter_recovered": _percent(chapter["recovered"]),
            "recovery_direction": word}


@solution("02.5", keys=_MATRYOSHKA_KEYS, reads=("encode", "sae"), sae__matryoshka_prefix_fractions=[0.25])
def matryoshka_one_prefix(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    recipe = chapter_recipe(artifacts_root)
    ours = _matryoshka(artifacts_root, recipe, parameters["sae.matryoshka_prefix_fractions"], recipe["matryoshka_aux_k"])
    return _matryoshka_answer(ours, _chapter_matryoshka(artifacts_root))


@solution("02.6", keys=("l1_coefficient", "l0", "explained_variance", "dead_features", "chapter_l1_coefficient",
                        "chapter_l0", "chapter_explained_variance", "chapter_dead_features", "main_l0",
                        "main_dead_features", "dead_direction"),
          reads=("encode", "sae"), sae__layer_norm_l1_coefficient=4.0)
def layer_normed_sparser(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    from saerad.sae import experiments

    recipe = chapter_recipe(artifacts_root)
    train, test = chapter_tokens(artifacts_root)
    l1 = parameters["sae.layer_norm_l1_coefficient"]
    row, _ = train_once(experiments.Run("sae_rad_layer_normed", "sae_rad", recipe["expansion_factor"], l1),
                        experiments.layer_normed(train), experiments.layer_normed(test), train_config(recipe))
    by_data = chapter_table(artifacts_root, "dead_features_by_data")
    chapter = by_data[by_data["tokens"] == "layer-normed tokens"]
    main = _main_row(artifacts_root)

    def chapter_value(column: str) -> Any:
        return float(chapter[column].iloc[0]) if len(chapter) else "n/a: not trained"

    return {"l1_coefficient": l1, "l0": row["l0"], "explained_variance": row["explained_variance"],
            "dead_features": int(row["dead_features"]), "chapter_l1_coefficient": chapter_value("l1_coefficient"),
            "chapter_l0": chapter_value("l0"), "chapter_explained_variance": chapter_value("explained_variance"),
            "chapter_dead_features": int(chapter["dead_features"].iloc[0]) if len(chapter) else "n/a: not trained",
            "main_l0": float(main["l0"]), "main_dead_features": int(main["dead_features"]),
            "dead_direction": compare_counts(row["dead_features"], main["dead_features"])}


@solution("02.7", keys=tuple(key for key in _MATRYOSHKA_KEYS if not key.endswith("prefixes")) + ("dead_direction",),
          reads=("encode", "sae"), sae__matryoshka_aux_k=0)
def matryoshka_without_aux_k(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    from saerad.sae import experiments

    recipe = chapter_recipe(artifacts_root)
    ours = _matryoshka(artifacts_root, recipe, recipe["matryoshka_prefix_fractions"], parameters["sae.matryoshka_aux_k"])
    chapter = _chapter_matryoshka(artifacts_root)
    answer = {key: value for key, value in _matryoshka_answer(ours, chapter).items() if not key.endswith("prefixes")}
    return {**answer,
            "dead_direction": compare_counts(ours["dead_features"], chapter["dead_features"])}


@solution("02.8", keys=("steps", "warmup_steps", "train_explained_variance", "explained_variance", "peak_step",
                        "peak", "fell_by", "held_out_verdict", "l0", "dead_features", "main_train_explained_variance",
                        "main_explained_variance", "main_dead_features", "main_l0"),
          reads=("encode", "sae"), sae__steps=5000, sae__lr=1e-4, sae__lr_warmup_fraction=0.4)
def longer_and_slower(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    from saerad.sae import experiments

    recipe = chapter_recipe(artifacts_root)
    train, test = chapter_tokens(artifacts_root)
    steps, lr, warmup = parameters["sae.steps"], parameters["sae.lr"], parameters["sae.lr_warmup_fraction"]
    row, result = train_once(experiments.Run("sae_rad_long", "sae_rad", recipe["expansion_factor"],
                                             recipe["l1_coefficient"]), train, test,
                             train_config(recipe, steps=steps, lr=lr, lr_warmup_fraction=warmup))
    held_out = experiments.held_out_reading(result.history)
    main = _main_row(artifacts_root)
    return {"steps": int(steps), "warmup_steps": int(round(warmup * steps)),
            "train_explained_variance": row["train_explained_variance"], "explained_variance": row["explained_variance"],
            "peak_step": held_out["peak_step"], "peak": held_out["peak"], "fell_by": held_out["fell_by"],
            "held_out_verdict": "fell after its peak" if held_out["fell"] else "was still at its best at the end",
            "l0": row["l0"], "dead_features": int(row["dead_features"]),
            "main_train_explained_variance": float(main["train_explained_variance"]),
            "main_explained_variance": float(main["explained_variance"]),
            "main_dead_features": int(main["dead_features"]), "main_l0": float(main["l0"])}
