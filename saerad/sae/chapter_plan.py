"""Every SAE the SAE chapter trains, built from its parameters in one place.

The chapter trains its SAEs first, all at once (:func:`saerad.sae.parallel.train_jobs`), then each
section measures the ones it reads. This module is the list: a section's runs come from the same
functions whether the chapter trains them together or one section at a time, so the two cannot drift
apart.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from saerad.sae import experiments
from saerad.sae.parallel import TrainingJob
from saerad.sae.train import TrainConfig

#: The chapter's sections in the order they read their runs.
SECTIONS = ("main", "encoders", "remedies", "data", "sizes", "table3", "table5", "ablation", "matryoshka")

#: What each section is, as the chapter's list of runs names it.
SECTION_TITLES = {"main": "main SAE", "encoders": "main SAE on another encoder's tokens", "remedies": "dead features: remedies", "data": "dead features: data",
                  "sizes": "dead features: dictionary size", "table3": "Table 3", "table5": "Table 5",
                  "ablation": "ablation", "matryoshka": "Matryoshka"}

MAIN_RUN_NAME = "sae_rad_main"
#: Where the main SAE trained on a comparison arm's tokens lives: ``sae/<ARM_RUNS_FOLDER>/sae_rad_main_<arm>``.
ARM_RUNS_FOLDER = "encoder_arms"


def arm_run_name(arm: str, matched: bool = False) -> str:
    """The name of the main SAE's run on the tokens of the encode stage's comparison arm ``arm``.

    ``matched``: the run at the arm's own λ (chosen so that its L0 lands near the main run's) rather than at
    the main run's λ.
    """
    return f"{MAIN_RUN_NAME}_{arm}" + ("_matched" if matched else "")


def arm_run_dir(stage_dir: str | Path, arm: str, matched: bool = False) -> Path:
    """The folder of the main SAE trained on the tokens of the encode stage's comparison arm ``arm``."""
    return Path(stage_dir) / ARM_RUNS_FOLDER / arm_run_name(arm, matched)


def sae_chapter_jobs(
    train_tokens: np.ndarray,
    test_tokens: np.ndarray,
    main_config: TrainConfig,
    stage_dir: str | Path,
    *,
    expansion_factor: int,
    l1_coefficient: float,
    l1_coefficient_conerly: float,
    table3_steps: int | None,
    comparison_steps: int,
    table5_expansion_factors: list[int],
    resampling_every: int,
    resampling_until: float,
    ghost_grads_check: bool,
    dead_feature_token_fractions: list[float],
    layer_norm_l1_coefficient: float | None,
    dead_feature_expansion_factors: list[int],
    run_table5: bool,
    run_ablation: bool,
    run_matryoshka: bool,
    matryoshka_k: int,
    matryoshka_prefix_fractions: list[float],
    matryoshka_aux_k: int,
    arm_tokens: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    arm_matched_l1: dict[str, float] | None = None,
) -> tuple[dict[str, list[TrainingJob]], list[float]]:
    """The chapter's runs by section (keys of :data:`SECTIONS`; a switched-off section is an empty list).

    The keyword arguments are the chapter's parameters of the same names; ``arm_tokens`` maps a
    comparison arm of the encode stage to its (train, test) tokens, on which the main SAE is trained
    again with the same recipe (section ``"encoders"``), and ``arm_matched_l1`` an arm to a λ of its own at
    which it is trained once more (the same L0 as the main run needs another λ on other tokens); entries for
    arms not in ``arm_tokens`` are ignored, so switching the arms off (``encoder_arms = []``) needs no second
    change. Returns the jobs and the token fractions left
    out because they hold fewer tokens than one batch.
    """
    stage_dir = Path(stage_dir)

    def job(run, config, section, detail="", tokens=(train_tokens, test_tokens), folder=stage_dir):
        return TrainingJob(run, tokens[0], tokens[1], config, folder, section, detail)

    main_run = experiments.Run(MAIN_RUN_NAME, "sae_rad", expansion_factor, l1_coefficient)
    jobs: dict[str, list[TrainingJob]] = {section: [] for section in SECTIONS}
    jobs["main"].append(job(main_run, main_config, "main", f"the paper's recipe, {main_config.steps:,} steps"))
    for arm, tokens in (arm_tokens or {}).items():
        # Its own folder: the features chapter reads every SAE directly under sae/ as one on the encoder's tokens.
        arm_run = replace(main_run, name=arm_run_name(arm))
        jobs["encoders"].append(job(arm_run, main_config, "encoders", f"the same recipe on the {arm} tokens",
                                    tokens, arm_run_dir(stage_dir, arm).parent))
        if arm in (arm_matched_l1 or {}):
            l1 = float(arm_matched_l1[arm])
            matched_run = replace(main_run, name=arm_run_name(arm, matched=True), l1_coefficient=l1)
            jobs["encoders"].append(job(matched_run, main_config, "encoders", f"the {arm} tokens at λ = {l1:g}",
                                        tokens, arm_run_dir(stage_dir, arm).parent))

    if resampling_every:
        jobs["remedies"].append(job(
            experiments.Run("sae_rad_resampled", "sae_rad", expansion_factor, l1_coefficient),
            replace(main_config, resample_dead_every=resampling_every, resample_dead_until=resampling_until),
            "remedies", f"resampling every {resampling_every} steps"))
    if ghost_grads_check:
        jobs["remedies"].append(job(
            experiments.Run("sae_rad_ghost_grads", "sae_rad", expansion_factor, l1_coefficient),
            replace(main_config, ghost_grads=True), "remedies", "ghost gradients"))

    variants, too_small = experiments.dead_feature_runs(
        train_tokens, test_tokens, dead_feature_token_fractions, layer_norm_l1_coefficient, expansion_factor,
        l1_coefficient, main_config.seed, main_config.batch_size)
    for run, what, variant_train, variant_test in variants:
        # A folder of their own: the features chapter compares every SAE directly under sae/ on the encoder's
        # tokens, and the layer-normed run does not take those as input.
        jobs["data"].append(job(run, main_config, "data", what, (variant_train, variant_test),
                                stage_dir / "data_variants"))
    for run in experiments.dictionary_size_runs(dead_feature_expansion_factors, expansion_factor, l1_coefficient):
        jobs["sizes"].append(job(run, main_config, "sizes", f"×{run.expansion_factor} dictionary"))

    table3_config = replace(main_config, steps=table3_steps or main_config.steps)
    for run in experiments.table3_runs(expansion_factor, l1_coefficient, l1_coefficient_conerly,
                                       sae_rad_name=MAIN_RUN_NAME if table3_config == main_config else "sae_rad"):
        jobs["table3"].append(job(run, table3_config, "table3", run.preset))
    comparison_config = replace(main_config, steps=comparison_steps)
    if run_table5:
        for run in experiments.table5_runs(table5_expansion_factors, l1_coefficient):
            jobs["table5"].append(job(run, comparison_config, "table5", f"λ = {run.l1_coefficient:.3g}"))
    if run_ablation:
        for run in experiments.ablation_runs(expansion_factor, l1_coefficient):
            jobs["ablation"].append(job(run, comparison_config, "ablation", experiments.ablation_label(run.name)))
    if run_matryoshka:
        d_sae = experiments.run_sae_config(main_run, train_tokens.shape[1], main_config.seed).d_sae
        prefixes = experiments.matryoshka_prefixes(d_sae, matryoshka_prefix_fractions)
        run = experiments.Run("matryoshka", "matryoshka", expansion_factor, 0.0,
                              {"k": matryoshka_k, "prefixes": prefixes})
        jobs["matryoshka"].append(job(run, replace(main_config, aux_k=matryoshka_aux_k), "matryoshka",
                                      f"BatchTopK, k = {matryoshka_k}"))
    return jobs, too_small


def all_jobs(jobs: dict[str, list[TrainingJob]]) -> list[TrainingJob]:
    """Every job of every section, in section order."""
    return [job for section in SECTIONS for job in jobs.get(section, [])]


def measure_jobs(jobs: list[TrainingJob]):
    """Train (or load) and measure each job; returns the table of rows and the results by run name."""
    import pandas as pd

    rows, results = [], {}
    for job in jobs:
        row, result = job.train_and_evaluate()
        rows.append(row)
        results[job.run.name] = result
    return pd.DataFrame(rows), results


def training_phrase(trained, wall_seconds: float) -> str:
    """How the runs of :func:`saerad.sae.parallel.train_jobs`'s table were trained, as a clause of a sentence."""
    total = float(trained["train_seconds"].sum()) if len(trained) else 0.0
    workers, threads = trained.attrs.get("workers", 1), trained.attrs.get("threads_per_run", 1)
    how = (f"{workers} at a time, each in its own process on {threads} thread{'s' if threads > 1 else ''}"
           if workers > 1 else f"one after another, on {threads} thread{'s' if threads > 1 else ''} each")
    if total == 0 or wall_seconds < 0.05 * total:
        return ("this run found every one of them trained to its last step by an earlier run of the same settings "
                "and only measured them")
    return f"they trained {how}, and their {_minutes(total)} of training took {_minutes(wall_seconds)}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} minutes" if seconds >= 90 else f"{seconds:.0f} s"
