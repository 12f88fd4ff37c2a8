"""The SAE chapter's experiments: Table 3, Table 5, the four-switch ablation and what dead features depend on.

Each experiment is a list of named runs; every run trains one SAE on the
training split's class tokens (resuming if its checkpoint is there),
evaluates it on the training and the held-out tokens, and is saved in the
SAELens format under ``<stage_dir>/<run name>/``. The paper's numbers are
kept in separate columns whose names start with ``paper_``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from saerad.encode.comparison import directions_for_variance  # noqa: F401  (the chapter calls it from here)
from saerad.io import read_json
from saerad.sae import CheckpointMismatch, TrainConfig, evaluate_sae, make_config, train_sae
from saerad.sae.config import PRESETS, SWITCHES

#: Appendix B.1, Table 3 (x64, 200k steps, batch 2048, lr 5e-5).
PAPER_TABLE3 = pd.DataFrame([
    {"architecture": "conerly", "paper_l1_coefficient": 5.3e-3, "paper_l0": 15.7, "paper_explained_variance": 0.813},
    {"architecture": "sae_rad", "paper_l1_coefficient": 8.0e-3, "paper_l0": 13.6, "paper_explained_variance": 0.843},
])

#: Appendix H, Table 5 (SAE-Rad at three sizes, sparse and dense).
PAPER_TABLE5 = pd.DataFrame([
    {"paper_name": "x128", "paper_expansion_factor": 128, "paper_l1_coefficient": 6e-3, "paper_l0": 12.0,
     "paper_explained_variance": 0.909},
    {"paper_name": "x64", "paper_expansion_factor": 64, "paper_l1_coefficient": 8e-3, "paper_l0": 13.6,
     "paper_explained_variance": 0.843},
    {"paper_name": "x32", "paper_expansion_factor": 32, "paper_l1_coefficient": 9e-3, "paper_l0": 15.1,
     "paper_explained_variance": 0.792},
    {"paper_name": "x128_dense", "paper_expansion_factor": 128, "paper_l1_coefficient": 3.75e-3, "paper_l0": 26.0,
     "paper_explained_variance": 0.932},
    {"paper_name": "x64_dense", "paper_expansion_factor": 64, "paper_l1_coefficient": 5e-3, "paper_l0": 28.4,
     "paper_explained_variance": 0.885},
    {"paper_name": "x32_dense", "paper_expansion_factor": 32, "paper_l1_coefficient": 5.63e-3, "paper_l0": 31.8,
     "paper_explained_variance": 0.847},
])


@dataclass(frozen=True)
class Run:
    """One SAE to train: a preset, its size, its sparsity coefficient and switch overrides."""

    name: str
    preset: str
    expansion_factor: int
    l1_coefficient: float
    overrides: dict = field(default_factory=dict)


def train_run(run: Run, train_tokens: np.ndarray, test_tokens: np.ndarray, train_config: TrainConfig,
              stage_dir: str | Path, progress: bool = False):
    """Train (or resume, or just load if finished) one run under ``<stage_dir>/<run name>/``.

    Returns the :class:`saerad.sae.TrainResult`. A folder holding a run of
    other settings is replaced. The held-out tokens are measured at every
    logged step (the ``held_out_`` columns of the history).
    """
    if train_config.device == "cpu":
        # Tiny decoder weights drift into denormal floats, which made a training step on this 2-core CPU
        # 20x slower with two threads (417 ms against 20 ms per step, measured); flushing them to zero
        # only alters values below about 1e-38.
        torch.set_flush_denormal(True)
    sae_config = run_sae_config(run, train_tokens.shape[1], train_config.seed)
    config = replace(train_config, l1_coefficient=run.l1_coefficient)
    out_dir = Path(stage_dir) / run.name
    try:
        return train_sae(train_tokens, sae_config, config, out_dir, progress=progress, held_out=test_tokens)
    except CheckpointMismatch:
        # The folder holds a run of other settings: this one replaces it.
        return train_sae(train_tokens, sae_config, config, out_dir, progress=progress, overwrite=True,
                         held_out=test_tokens)


def run_sae_config(run: Run, token_dim: int, seed: int):
    """The :class:`saerad.sae.SAEConfig` of a run on tokens of ``token_dim`` entries."""
    return make_config(run.preset, token_dim, run.expansion_factor, seed=seed, **run.overrides)


def train_and_evaluate(run: Run, train_tokens: np.ndarray, test_tokens: np.ndarray, train_config: TrainConfig,
                       stage_dir: str | Path, progress: bool = False) -> tuple[dict[str, Any], Any]:
    """Train (or resume) one run and measure it on both splits.

    A run already trained to its last step (for instance by
    :func:`saerad.sae.parallel.train_jobs`) is only loaded and measured.

    Returns
    -------
    (row, result)
        ``row`` holds ``l0``, ``explained_variance``, ``mse`` on the held-out
        tokens, the same on the training tokens (``train_`` prefix),
        ``dead_features`` (never fired on the training tokens) and seconds;
        ``result`` is the :class:`saerad.sae.TrainResult`.
    """
    result = train_run(run, train_tokens, test_tokens, train_config, stage_dir, progress)
    sae_config = result.sae.config
    held_out = evaluate_sae(result.sae, test_tokens)
    seen = evaluate_sae(result.sae, train_tokens)
    row = {
        "name": run.name, "preset": run.preset, "expansion_factor": run.expansion_factor, "d_sae": sae_config.d_sae,
        "l1_coefficient": run.l1_coefficient,
        **{switch: getattr(sae_config, switch) for switch in SWITCHES},
        "l0": held_out["l0"], "explained_variance": held_out["explained_variance"], "mse": held_out["mse"],
        "train_l0": seen["l0"], "train_explained_variance": seen["explained_variance"],
        "dead_features": seen["dead_features"], "seconds": result.seconds,
    }
    return row, result


def table3_runs(expansion_factor: int, l1_sae_rad: float, l1_conerly: float,
                sae_rad_name: str = "sae_rad") -> list[Run]:
    """SAE-Rad against Conerly et al. at the same size (Table 3).

    ``sae_rad_name``: the folder of the SAE-Rad run. Give the main SAE's name
    when Table 3 trains with the main run's settings, so that its finished
    checkpoint is reused instead of trained again.
    """
    return [Run("conerly", "conerly", expansion_factor, l1_conerly),
            Run(sae_rad_name, "sae_rad", expansion_factor, l1_sae_rad)]


def table5_runs(expansion_factors: list[int], l1_sae_rad: float) -> list[Run]:
    """Three sizes, sparse and dense (Table 5), with the paper's ratios of coefficients.

    The paper's coefficients relative to its x64 sparse value (8e-3) are
    kept: the smallest size gets 9/8 of it, the largest 6/8, and each
    dense variant 5/8 of its sparse one (3.75/6, 5/8, 5.63/9).
    """
    if len(expansion_factors) != 3:
        raise ValueError(f"table 5 needs three expansion factors (small, middle, large), got {expansion_factors}")
    runs = []
    for density in ("", "_dense"):
        for factor, paper in zip(sorted(expansion_factors, reverse=True), PAPER_TABLE5["paper_name"][:3]):
            paper_name = paper + density
            ratio = float(PAPER_TABLE5.set_index("paper_name").loc[paper_name, "paper_l1_coefficient"]) / 8e-3
            runs.append(Run(f"x{factor}{density}", "sae_rad", factor, l1_sae_rad * ratio))
    return runs


def ablation_runs(expansion_factor: int, l1_coefficient: float) -> list[Run]:
    """The gated SAE, then each of the four switches flipped to SAE-Rad's value alone, then SAE-Rad."""
    runs = [Run("gated", "gated", expansion_factor, l1_coefficient)]
    for switch in SWITCHES:
        runs.append(Run(f"gated+{switch}={PRESETS['sae_rad'][switch]}", "gated", expansion_factor, l1_coefficient,
                        {switch: PRESETS["sae_rad"][switch]}))
    # Named "sae_rad": Table 3 trains its SAE-Rad under this name too when it runs at the ablation's steps,
    # and then the finished checkpoint is reused, not retrained.
    runs.append(Run("sae_rad", "sae_rad", expansion_factor, l1_coefficient))
    return runs


def with_paper_table3(ours: pd.DataFrame) -> pd.DataFrame:
    """Our Table 3 beside the paper's values (columns prefixed ``paper_``)."""
    return ours.rename(columns={"preset": "architecture"}).merge(PAPER_TABLE3, on="architecture", how="left")


def with_paper_table5(ours: pd.DataFrame) -> pd.DataFrame:
    """Our Table 5 beside the paper's rows, matched by rank of size and by sparse/dense."""
    ours = ours.copy()
    ours["paper_name"] = [
        f"x{paper}{'_dense' if name.endswith('_dense') else ''}"
        for name, paper in zip(ours["name"], _paper_sizes(ours["expansion_factor"]))
    ]
    return ours.merge(PAPER_TABLE5, on="paper_name", how="left")


def _paper_sizes(factors: pd.Series) -> list[int]:
    ranking = {factor: paper for factor, paper in zip(sorted(set(factors)), (32, 64, 128))}
    return [ranking[factor] for factor in factors]


def subsample_rows(tokens: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded random ``fraction`` of the rows of ``tokens`` (without replacement, in their original order)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction of tokens must be in (0, 1], got {fraction}")
    count = max(1, int(round(fraction * len(tokens))))
    chosen = np.sort(np.random.default_rng(seed).choice(len(tokens), size=count, replace=False))
    return tokens[chosen]


def layer_normed(tokens: np.ndarray) -> np.ndarray:
    """Each token centred on its own mean and divided by its own standard deviation (a LayerNorm without affine).

    That is the last operation of a ViT's class token (Rad-DINO's included,
    before its learned scale and shift), and it leaves every token at norm
    sqrt(d): the paper's scaling, so the same λ means the same pressure.
    """
    tokens = np.asarray(tokens, dtype=np.float64)
    centred = tokens - tokens.mean(axis=1, keepdims=True)
    return (centred / centred.std(axis=1, keepdims=True)).astype(np.float32)


_DICTIONARY_SIZE_PREFIX = "sae_rad_x"


def dictionary_size_runs(expansion_factors: list[int], main_expansion_factor: int, l1_coefficient: float) -> list[Run]:
    """SAE-Rad with smaller (or larger) dictionaries at the main run's λ, on the same tokens.

    The way to give each feature more training tokens without more data:
    does a dictionary with more tokens per feature than the paper's (4.9)
    keep every feature alive? The main run's size is skipped (its own row
    answers for it); names are ``sae_rad_x<factor>``.
    """
    bad = [factor for factor in expansion_factors if int(factor) != factor or factor < 1]
    if bad:
        raise ValueError(f"dictionary sizes are whole multiples of the token dimension (>= 1), got {bad}")
    return [Run(f"{_DICTIONARY_SIZE_PREFIX}{int(factor)}", "sae_rad", int(factor), l1_coefficient)
            for factor in sorted(set(expansion_factors)) if factor != main_expansion_factor]


def is_dictionary_size_run(name: str) -> bool:
    """Whether an SAE folder name is one of :func:`dictionary_size_runs` (the features chapter picks them out)."""
    return re.fullmatch(re.escape(_DICTIONARY_SIZE_PREFIX) + r"\d+", name) is not None


def dead_feature_runs(train_tokens: np.ndarray, test_tokens: np.ndarray, token_fractions: list[float],
                      layer_norm_l1_coefficient: float | None, expansion_factor: int, l1_coefficient: float,
                      seed: int, batch_size: int) -> tuple[list[tuple[Run, str, np.ndarray, np.ndarray]], list[float]]:
    """SAE-Rad runs that change one thing about the data: fewer training tokens, or layer-normed tokens.

    Returns
    -------
    (runs, too_small)
        ``runs`` holds ``(run, what changed, training tokens, held-out
        tokens)`` for each fraction of the training tokens (held-out tokens
        unchanged) and, unless ``layer_norm_l1_coefficient`` is None, for
        layer-normed tokens trained with that λ (chosen so that L0 lands
        near the main run's). ``too_small`` lists the fractions left out
        because they hold fewer tokens than one batch of ``batch_size``.
    """
    runs, too_small = [], []
    for fraction in token_fractions:
        subset = subsample_rows(train_tokens, fraction, seed)
        if len(subset) < batch_size:
            too_small.append(fraction)
            continue
        runs.append((Run(f"sae_rad_tokens_{fraction:g}", "sae_rad", expansion_factor, l1_coefficient),
                     f"{fraction:.0%} of the training tokens", subset, test_tokens))
    if layer_norm_l1_coefficient is not None:
        runs.append((Run("sae_rad_layer_normed", "sae_rad", expansion_factor, layer_norm_l1_coefficient),
                     "layer-normed tokens", layer_normed(train_tokens), layer_normed(test_tokens)))
    return runs, too_small


def dead_feature_dependence(dead_by_data: pd.DataFrame, dead_by_size: pd.DataFrame, main_row: dict | pd.Series,
                            paper_tokens_per_feature: float, directions_for_90: int, token_dim: int) -> str:
    """The SAE chapter's reading of ``dead_features_by_data`` and ``dead_features_by_size``, in sentences.

    Every verdict is computed from the tables: whether the count falls with
    more data (and, with three or more shares, what a power law through them
    predicts at the paper's tokens per feature), whether layer-normed tokens
    kill more or fewer features than the main run, and whether any dictionary
    with more tokens per feature than the paper's ends with none dead.

    Parameters
    ----------
    dead_by_data, dead_by_size
        The chapter's two tables (columns as written by it: ``tokens``,
        ``training_tokens``, ``tokens_per_feature``, ``dead_features``, ... and
        ``name``, ``expansion_factor``, ``d_sae``, ``l0``, ...).
    main_row
        The main run's row (``name``, ``dead_features``, ``l0``).
    paper_tokens_per_feature
        MIMIC-CXR training images per feature of the paper's ×64 SAE.
    directions_for_90, token_dim
        :func:`directions_for_variance` of the training tokens, and their dimension.

    Returns
    -------
    str
        Markdown; "Data comparison skipped." when both tables hold only the main run.
    """
    by_share = dead_by_data[dead_by_data["tokens"] != "layer-normed tokens"].sort_values("training_tokens")
    layer_normed_rows = dead_by_data[dead_by_data["tokens"] == "layer-normed tokens"]
    sentences = []
    if len(by_share) > 1:
        falling = bool(np.all(np.diff(by_share["dead_features"].to_numpy()) < 0))
        sentences.append(
            "From " + ", ".join(f"{int(n):,}" for n in by_share["training_tokens"]) + " training tokens, "
            + ", ".join(f"{int(d):,}" for d in by_share["dead_features"]) + " features are dead: "
            + ("the count falls every time the data grows, so part of the dying is a small world spread over a "
               "large dictionary." if falling else "the count does not fall steadily with more data at these settings."))
        if falling and len(by_share) > 2 and (by_share["dead_features"] > 0).all():
            # dead ∝ tokens^(-b): a straight line in log-log, fitted to the runs above
            slope, intercept = np.polyfit(np.log(by_share["tokens_per_feature"]), np.log(by_share["dead_features"]), 1)
            predicted = np.exp(intercept + slope * np.log(paper_tokens_per_feature))
            sentences.append(
                f"A power law through these points (dead ∝ tokens^{slope:.2f}) predicts about {predicted:,.0f} dead "
                f"features at the paper's {paper_tokens_per_feature:.1f} tokens per feature: more data helps, but on "
                "this trend the paper's ratio alone would still leave a sizeable share of the dictionary dead.")
    if len(layer_normed_rows):
        row = layer_normed_rows.iloc[0]
        worse = row["dead_features"] > main_row["dead_features"]
        sentences.append(
            f"Layer-normed tokens (λ {row['l1_coefficient']:g}) leave {int(row['dead_features']):,} features dead at "
            f"L0 {row['l0']:.1f} and explained variance {row['explained_variance']:.3f}, against "
            f"{int(main_row['dead_features']):,} at L0 {main_row['l0']:.1f} for the demo's own tokens: "
            + ("signed, layer-normed tokens make features die **more**, not less, so the demo encoder's non-negative "
               "token is not why the paper's \"no dead features\" fails here." if worse else
               "signed, layer-normed tokens make fewer features die, so the token geometry is part of the story."))
    smaller = dead_by_size[dead_by_size["name"] != main_row["name"]]
    if len(smaller):
        richer = smaller[smaller["tokens_per_feature"] >= paper_tokens_per_feature]
        smallest = dead_by_size.sort_values("d_sae").iloc[0]
        size_sentence = ("Other dictionary sizes on all the training tokens: "
                         + "; ".join(f"×{row.expansion_factor} ({row.d_sae:,} features, {row.tokens_per_feature:.1f} "
                                     f"tokens each) leaves {row.dead_features:,} dead at L0 {row.l0:.1f}"
                                     for row in smaller.itertuples()) + ". ")
        if len(richer) and (richer["dead_features"] == 0).any():
            size_sentence += ("With more tokens per feature than the paper's, no feature dies: on SynthCXR the paper's "
                              "\"none dead\" holds only for a dictionary that small. ")
        elif len(richer):
            size_sentence += (f"Features die even with more tokens per feature than the paper's "
                              f"{paper_tokens_per_feature:.1f}, so the ratio of data to dictionary is not the whole "
                              f"story: the smallest dictionary, ×{int(smallest['expansion_factor'])}, still loses "
                              f"{int(smallest['dead_features']):,} at the main run's λ. ")
        sentences.append(size_sentence + f"For scale: 90 % of the training tokens' variance lies in {directions_for_90} "
                         f"of their {token_dim} directions.")
    return " ".join(sentences) if sentences else "Data comparison skipped."


# --- Reading the tables: the words the chapter's prose glues in -------------------------------------------

#: What each switch of the ablation changes, in the reader's words (the gated SAE's value flipped to SAE-Rad's).
SWITCH_CHANGES = {
    "unit_norm_decoder": "decoder norms left free",
    "decoder_norm_in_sparsity": "decoder norms weight the penalty",
    "centre_input": "input not centred",
    "aux_stop_gradient": "auxiliary loss trains the decoder",
}

#: MIMIC-CXR training images per feature of the paper's ×64 SAE-Rad (239,931 images, 49,152 features).
PAPER_TOKENS_PER_FEATURE = 239_931 / 49_152

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly reproduced", "not reproduced"


def ablation_label(name: str) -> str:
    """A row name of :func:`ablation_runs` in words: ``"gated+centre_input=False"`` → ``"gated + input not centred"``."""
    if name == "gated":
        return "gated SAE (none of the four)"
    if name == "sae_rad":
        return "SAE-Rad (all four)"
    match = re.fullmatch(r"gated\+(\w+)=(True|False)", name)
    if match is None or match.group(1) not in SWITCH_CHANGES:
        raise ValueError(f"{name!r} is not a row of the ablation (gated, gated+<switch>=<value>, sae_rad)")
    return f"gated + {SWITCH_CHANGES[match.group(1)]}"


def claim_verdict(parts: list[bool] | tuple[bool, ...]) -> str:
    """``"reproduced"`` when every part of a claim holds, ``"partly reproduced"`` when some do, else
    ``"not reproduced"``."""
    parts = [bool(part) for part in parts]
    if not parts:
        raise ValueError("a claim needs at least one part to judge")
    return REPRODUCED if all(parts) else PARTLY if any(parts) else NOT_REPRODUCED


def direction(ours: float, other: float, more: str = "higher", less: str = "lower", tolerance: float = 0.0) -> str:
    """``more`` when ``ours`` exceeds ``other`` by more than ``tolerance``, ``less`` when it falls short, else
    ``"about the same"``."""
    if ours > other + tolerance:
        return more
    if ours < other - tolerance:
        return less
    return "about the same"


def table3_reading(table3: pd.DataFrame) -> dict[str, Any]:
    """Table 3's claim (SAE-Rad: lower L0 *and* higher explained variance than Conerly et al.) read from our rows.

    ``table3`` has ``architecture`` (``sae_rad``, ``conerly``), ``l0`` and ``explained_variance`` (held-out).
    Returns the two directions as words (``"lower"``/``"higher"``), the two differences, and the verdict word.
    """
    rows = table3.set_index("architecture")
    missing = {"sae_rad", "conerly"} - set(rows.index)
    if missing:
        raise ValueError(f"Table 3 lacks the row(s) {sorted(missing)}; it has {list(rows.index)}")
    ours, theirs = rows.loc["sae_rad"], rows.loc["conerly"]
    lower_l0 = ours["l0"] < theirs["l0"]
    higher_ev = ours["explained_variance"] > theirs["explained_variance"]
    return {
        "l0_direction": direction(ours["l0"], theirs["l0"]),
        "ev_direction": direction(ours["explained_variance"], theirs["explained_variance"]),
        "l0_difference": float(ours["l0"] - theirs["l0"]),
        "ev_difference": float(ours["explained_variance"] - theirs["explained_variance"]),
        "verdict": claim_verdict([lower_l0, higher_ev]),
    }


def table5_reading(table5: pd.DataFrame) -> dict[str, Any]:
    """Table 5's claims read from our rows: at each size the dense SAE has a higher L0 and a higher explained
    variance than the sparse one, and among the sparse SAEs a larger dictionary explains more.

    ``table5`` has ``name`` (``x<factor>`` and ``x<factor>_dense``), ``expansion_factor``, ``l0`` and
    ``explained_variance``. Returns counts of sizes where each holds (``dense_higher_l0``,
    ``dense_higher_ev``, out of ``sizes``), whether explained variance rises with size among the sparse SAEs
    (``larger_explains_more``), and a verdict word for the dense claim and for the size claim.
    """
    sparse = table5[~table5["name"].str.endswith("_dense")].set_index("expansion_factor").sort_index()
    dense = table5[table5["name"].str.endswith("_dense")].set_index("expansion_factor").sort_index()
    sizes = sorted(set(sparse.index) & set(dense.index))
    if not sizes:
        raise ValueError(f"Table 5 needs a sparse and a dense SAE of the same size; it has {list(table5['name'])}")
    higher_l0 = [bool(dense.loc[size, "l0"] > sparse.loc[size, "l0"]) for size in sizes]
    higher_ev = [bool(dense.loc[size, "explained_variance"] > sparse.loc[size, "explained_variance"]) for size in sizes]
    steps_up = np.diff(sparse["explained_variance"].to_numpy()) > 0
    return {
        "sizes": len(sizes), "dense_higher_l0": sum(higher_l0), "dense_higher_ev": sum(higher_ev),
        "dense_verdict": claim_verdict(higher_l0 + higher_ev),
        "larger_explains_more": bool(steps_up.all()) if len(steps_up) else False,
        "size_verdict": claim_verdict(list(steps_up)) if len(steps_up) else NOT_REPRODUCED,
    }


def held_out_reading(history: pd.DataFrame, tolerance: float = 0.005) -> dict[str, Any]:
    """Where the held-out explained variance peaked during training and whether it fell afterwards.

    Returns ``peak_step``, ``peak``, ``final``, ``fell_by`` (peak minus final) and ``fell`` (True when it
    fell by more than ``tolerance``, i.e. the SAE began to fit its training tokens at the expense of new
    images).
    """
    curve = history.set_index("step")["held_out_explained_variance"].dropna()
    if curve.empty:
        raise ValueError("the history has no held-out explained variance (train with held_out tokens)")
    fell_by = float(curve.max() - curve.iloc[-1])
    return {"peak_step": int(curve.idxmax()), "peak": float(curve.max()), "final": float(curve.iloc[-1]),
            "fell_by": fell_by, "fell": fell_by > tolerance}


def silent_count_at(history: pd.DataFrame, step: float) -> float:
    """The running count of features silent for an epoch at the logged step closest to ``step``.

    NaN before one epoch of batches has passed (the count needs a whole epoch).
    """
    steps = history["step"].to_numpy()
    if len(steps) == 0:
        raise ValueError("the history is empty")
    return float(history["silent_for_an_epoch"].iloc[int(np.abs(steps - step).argmin())])


def matryoshka_prefixes(d_sae: int, prefix_fractions: list[float]) -> tuple[int, ...]:
    """The nested dictionary sizes of a Matryoshka SAE: each share of ``d_sae`` rounded (at least 1), and ``d_sae``."""
    bad = [share for share in prefix_fractions if not 0.0 < share <= 1.0]
    if bad:
        raise ValueError(f"matryoshka_prefix_fractions must be shares of d_sae in (0, 1], got {bad}")
    return tuple(sorted({max(1, round(share * d_sae)) for share in prefix_fractions} | {d_sae}))


def second_half_change(history: pd.DataFrame) -> dict[str, float]:
    """How much a run's held-out measures still moved over the second half of its training.

    Reads the run's ``history.csv`` (held-out L0 and explained variance, and the count of features
    silent for an epoch, logged along training) at the logged steps closest to half the run and to its
    end. ``l0_change`` is ``|L0(half) - L0(end)| / L0(end)``. A run whose L0 still moves by tens of per
    cent between half and end has not settled: its row is a snapshot at its step count, comparable with
    rows trained as long, not a converged SAE.
    """
    needed = {"step", "held_out_l0", "held_out_explained_variance", "silent_for_an_epoch"}
    missing = needed - set(history.columns)
    if missing:
        raise ValueError(f"the training history lacks {sorted(missing)}; expected a history.csv of this package")
    logged = history.dropna(subset=["held_out_l0"])
    if logged.empty:
        raise ValueError("the training history has no held-out evaluation")
    steps = logged["step"].to_numpy()
    half, end = (logged.iloc[int(np.abs(steps - steps.max() / 2).argmin())], logged.iloc[int(steps.argmax())])
    return {"steps": int(steps.max()) + 1, "l0_half": float(half["held_out_l0"]), "l0_end": float(end["held_out_l0"]),
            "l0_change": abs(float(half["held_out_l0"]) - float(end["held_out_l0"])) / float(end["held_out_l0"]),
            "explained_variance_half": float(half["held_out_explained_variance"]),
            "explained_variance_end": float(end["held_out_explained_variance"]),
            "silent_half": float(half["silent_for_an_epoch"]), "silent_end": float(end["silent_for_an_epoch"])}


def encoder_label(artifacts_root: str | Path) -> str:
    """The name the encode chapter gives the profile's encoder: the last part of its checkpoint's path or id."""
    return Path(str(read_json(Path(artifacts_root) / "encode" / "scale.json")["encoder"])).name


def encoder_rows_table(rows: list[dict], encode_comparison_csv: str | Path) -> pd.DataFrame:
    """The main SAE on each encoder's tokens: L0, explained variance, dead features and their share.

    ``rows`` are :func:`train_and_evaluate` rows with ``encoder`` and ``role`` added; the token geometry
    column ``directions_for_90pct_variance`` is joined from the encode chapter's ``encoder_comparison.csv``
    by encoder name (missing when that table lacks the encoder).
    """
    table = pd.DataFrame(rows)[["encoder", "role", "l1_coefficient", "l0", "explained_variance", "dead_features",
                                "d_sae"]]
    table["dead_share"] = table["dead_features"] / table["d_sae"]
    directions = pd.Series(dtype=float)
    if Path(encode_comparison_csv).exists():
        encode_table = pd.read_csv(encode_comparison_csv)
        directions = encode_table.set_index("encoder")["directions_for_90pct_variance"]
    table["directions_for_90pct_variance"] = table["encoder"].map(directions)
    return table.drop(columns=["d_sae"])


def encoder_reading(table: pd.DataFrame) -> dict[str, str]:
    """The encoder comparison in a sentence or two: ``{"summary": ...}``, worded from the numbers.

    ``table`` is :func:`encoder_rows_table`'s: the profile's encoder first, then each arm at the main λ and,
    where trained, at a λ of its own (its role says "matched") for an L0 near the main run's. Dead features
    are compared at matched L0 where such a row exists, since a denser code keeps more features alive.
    """
    if len(table) < 2:
        return {"summary": "n/a: no comparison arm in this run (`encoder_arms = []`), so the main SAE was trained "
                           "on one encoder's tokens only."}
    main, others = table.iloc[0], table.iloc[1:]

    text = ""
    same = others[~others["role"].str.contains("matched")]
    if len(same) and same.iloc[0]["l0"] > 1.5 * main["l0"]:
        text += (f"The same λ does not mean the same sparsity: the {same.iloc[0]['encoder']} tokens need "
                 f"{same.iloc[0]['l0'] / main['l0']:.1f} times as many features each, so the fair comparison of "
                 "dead features is at a similar L0.")
    matched = others[others["role"].str.contains("matched")]
    reference = matched.iloc[0] if len(matched) else others.iloc[0]
    more_dead = main["dead_features"] > reference["dead_features"]
    fewer_directions = (pd.notna(main["directions_for_90pct_variance"])
                        and pd.notna(reference["directions_for_90pct_variance"])
                        and main["directions_for_90pct_variance"] < reference["directions_for_90pct_variance"])
    at = f"At L0 {reference['l0']:.1f} against {main['l0']:.1f}"
    if more_dead and fewer_directions:
        text += (f" {at}, the {main['encoder']} tokens leave {int(main['dead_features']):,} features "
                 f"dead and the {reference['encoder']} tokens {int(reference['dead_features']):,}; their variance "
                 f"lies in {int(main['directions_for_90pct_variance'])} directions against "
                 f"{int(reference['directions_for_90pct_variance'])}. A token that varies along few directions "
                 "gives a dictionary of this size little to divide, so more of its features never win a token.")
    elif more_dead:
        text += (f" {at}, the {main['encoder']} tokens still leave more features dead "
                 f"({int(main['dead_features']):,} against {int(reference['dead_features']):,}).")
    else:
        text += (f" {at}, the {main['encoder']} tokens leave no more features dead "
                 f"({int(main['dead_features']):,} against {int(reference['dead_features']):,}).")
    return {"summary": text.strip()}
