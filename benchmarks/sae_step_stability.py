"""How much each comparison SAE's row moves between 1,500 and 3,000 steps.

The SAE chapter's main SAE trains for ``steps`` (3,000 in the demo); the SAEs that only fill a row of a
comparison (dead-feature remedies and data, dictionary sizes, Table 5, the ablation, Matryoshka) train
for ``steps`` or ``comparison_steps`` (1,500). A run could train for half as many steps if its row --
held-out L0, explained variance, dead features -- barely moves between that count and twice it. This
script trains every comparison run at the other of the two counts (the chapter's runs are read from the
SAE stage's folder, and trained there first if missing), then writes one row per run with both values
and their relative difference.

    python benchmarks/sae_step_stability.py                     # artifacts/demo, one worker per core
    python benchmarks/sae_step_stability.py --workers 1

The runs at the other count go to ``<artifacts>/sae_step_stability/<steps>_steps/`` (resumable), the table
to ``<artifacts>/sae_step_stability/step_stability.csv``. Table 3 and the main SAE are left out: their
steps are the chapter's main setting, not a cost to trim.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from saerad.io import write_table
from saerad.params import stage_parameters
from saerad.paths import project_path
from saerad.sae import TrainConfig, chapter_plan
from saerad.sae.parallel import train_jobs
from saerad.encode.tokens import load_class_tokens

#: The chapter's parameters that :func:`saerad.sae.chapter_plan.sae_chapter_jobs` takes.
PLAN_PARAMETERS = (
    "expansion_factor", "l1_coefficient", "l1_coefficient_conerly", "table3_steps", "comparison_steps",
    "table5_expansion_factors", "resampling_every", "resampling_until", "ghost_grads_check",
    "dead_feature_token_fractions", "layer_norm_l1_coefficient", "dead_feature_expansion_factors", "run_table5",
    "run_ablation", "run_matryoshka", "matryoshka_k", "matryoshka_prefix_fractions", "matryoshka_aux_k",
)
SHORT, LONG = 1500, 3000
COMPARED = ("l0", "explained_variance", "dead_features")


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else (0.0 if a == b else float("inf"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", default="artifacts/demo", help="a profile's artifacts (default artifacts/demo)")
    parser.add_argument("--workers", type=int, default=None, help="SAEs trained at once (default: one per core)")
    args = parser.parse_args()
    root = project_path(args.artifacts)
    settings = stage_parameters(root, "sae")
    if {settings["steps"], settings["comparison_steps"]} != {SHORT, LONG}:
        raise SystemExit(f"this check compares {SHORT:,} and {LONG:,} steps; the SAE stage ran with steps="
                         f"{settings['steps']} and comparison_steps={settings['comparison_steps']}")
    train_tokens, _ = load_class_tokens(root, "train")
    test_tokens, _ = load_class_tokens(root, "test")
    main_config = TrainConfig(steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                              l1_coefficient=settings["l1_coefficient"],
                              lr_warmup_fraction=settings["lr_warmup_fraction"],
                              checkpoint_every=settings["checkpoint_every"], seed=settings["seed"], device="cpu")
    stage_dir = root / "sae"
    jobs, _ = chapter_plan.sae_chapter_jobs(train_tokens, test_tokens, main_config, stage_dir,
                                            **{name: settings[name] for name in PLAN_PARAMETERS})
    out = root / "sae_step_stability"
    pairs = []
    for section in chapter_plan.SECTIONS:
        if section in ("main", "table3"):
            continue
        for job in jobs[section]:
            other_steps = SHORT if job.train_config.steps == LONG else LONG
            folder = out / f"{other_steps}_steps" / Path(job.stage_dir).relative_to(stage_dir)
            other = replace(job, train_config=replace(job.train_config, steps=other_steps), stage_dir=folder)
            pairs.append((section, job, other))
    started = time.perf_counter()
    train_jobs([job for _, job, _ in pairs] + [other for _, _, other in pairs], workers=args.workers, log=print)
    print(f"trained in {time.perf_counter() - started:.0f} s")
    rows = []
    for section, job, other in pairs:
        measured = {job.train_config.steps: job.train_and_evaluate()[0],
                    other.train_config.steps: other.train_and_evaluate()[0]}
        row = {"section": chapter_plan.SECTION_TITLES[section], "run": job.run.name, "detail": job.detail,
               "chapter_steps": job.train_config.steps}
        for measure in COMPARED:
            short, long = float(measured[SHORT][measure]), float(measured[LONG][measure])
            row |= {f"{measure}_{SHORT}": short, f"{measure}_{LONG}": long,
                    f"{measure}_relative_change": relative(short, long)}
        row["stable_within_2_percent"] = all(row[f"{m}_relative_change"] < 0.02 for m in ("l0", "explained_variance"))
        rows.append(row)
    table = pd.DataFrame(rows)
    write_table(out / "step_stability.csv", table)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.drop(columns=["detail"]).round(3).to_string(index=False))
    print(f"wrote {out / 'step_stability.csv'}")


if __name__ == "__main__":
    main()
