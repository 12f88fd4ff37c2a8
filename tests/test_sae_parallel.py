"""Training the SAE chapter's runs side by side: same weights as in turn, finished runs skipped, clashes kept apart."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from saerad.sae import TrainConfig, chapter_plan, experiments
from saerad.sae.parallel import TrainingJob, distinct_jobs, train_jobs


def _tokens(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(size=(n, d))).astype(np.float32) + 0.5


def _jobs(stage_dir, steps: int = 40) -> list[TrainingJob]:
    train, test = _tokens(96), _tokens(24, seed=1)
    config = TrainConfig(steps=steps, batch_size=16, lr=1e-3, l1_coefficient=1.0, checkpoint_every=20, seed=3)
    return [TrainingJob(experiments.Run("a", "sae_rad", 4, 1.0), train, test, config, stage_dir, "test"),
            TrainingJob(experiments.Run("b", "conerly", 2, 0.5), train, test, config, stage_dir, "test"),
            TrainingJob(experiments.Run("c", "gated", 4, 1.0), train, test, config, stage_dir, "test")]


def _weights(stage_dir, names) -> dict[str, bytes]:
    return {name: (stage_dir / name / "sae_weights.safetensors").read_bytes() for name in names}


def test_parallel_and_sequential_training_write_byte_identical_weights(tmp_path):
    sequential, parallel = tmp_path / "sequential", tmp_path / "parallel"
    train_jobs(_jobs(sequential), workers=1, threads_per_run=1)
    lines = []
    table = train_jobs(_jobs(parallel), workers=2, threads_per_run=1, log=lines.append)
    assert _weights(sequential, "abc") == _weights(parallel, "abc")
    assert list(table["name"]) == ["a", "b", "c"]  # the order given, whatever order they finished in
    assert len(lines) == 3 and all("trained in" in line for line in lines)
    # and the chapter's measuring call only loads them: same weights, no new training time
    row, result = _jobs(parallel)[0].train_and_evaluate()
    assert result.seconds == pytest.approx(table.loc[0, "train_seconds"], abs=0.05)
    assert _weights(parallel, "a") == _weights(sequential, "a")


def test_a_finished_run_is_not_trained_again(tmp_path):
    short = _jobs(tmp_path, steps=20)[:1]
    first = train_jobs(short, workers=1)
    before = _weights(tmp_path, "a")
    again = train_jobs(short, workers=2)
    # read from the finished checkpoint (plus the moment it takes to find there is nothing left to do)
    assert again.loc[0, "train_seconds"] == pytest.approx(first.loc[0, "train_seconds"], abs=0.05)
    assert _weights(tmp_path, "a") == before


def test_jobs_of_one_folder_train_once_and_clashing_settings_are_left_to_their_cell(tmp_path):
    a, b, _ = _jobs(tmp_path)
    same_as_a = TrainingJob(a.run, a.train_tokens.copy(), a.test_tokens, a.train_config, tmp_path, "another section")
    other_steps = replace(a, train_config=replace(a.train_config, steps=60))
    distinct, clashing = distinct_jobs([a, b, same_as_a, other_steps])
    assert distinct == [a, b]
    assert clashing == [other_steps]


def test_runs_of_one_name_in_two_folders_are_two_runs(tmp_path):
    first, *_ = _jobs(tmp_path / "one")
    longer = replace(first, train_config=replace(first.train_config, steps=60), stage_dir=tmp_path / "two")
    lines = []
    table = train_jobs([first, longer], workers=1, log=lines.append)
    assert len(table) == 2 and table["steps"].tolist() == [40, 60]
    assert lines[0].startswith("[1/2]") and lines[1].startswith("[2/2]")
    assert table["train_seconds"].iloc[0] != table["train_seconds"].iloc[1]
    assert (tmp_path / "one" / "a" / "cfg.json").exists() and (tmp_path / "two" / "a" / "cfg.json").exists()


def test_a_failing_run_is_named(tmp_path):
    job = _jobs(tmp_path)[0]
    bad = replace(job, train_tokens=np.full_like(job.train_tokens, np.nan))
    for workers in (2, 1):
        with pytest.raises(RuntimeError, match="'a'.*NaN"):
            train_jobs([bad, _jobs(tmp_path)[1]], workers=workers)


def test_bad_worker_counts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="workers"):
        train_jobs(_jobs(tmp_path), workers=0)
    with pytest.raises(ValueError, match="threads_per_run"):
        train_jobs(_jobs(tmp_path), threads_per_run=0)


def test_the_chapter_plan_follows_its_switches(tmp_path):
    train, test = _tokens(96), _tokens(24, seed=1)
    config = TrainConfig(steps=300, batch_size=16, lr=1e-3, l1_coefficient=3.0, seed=0)
    settings = dict(expansion_factor=4, l1_coefficient=3.0, l1_coefficient_conerly=2.0, table3_steps=None,
                    comparison_steps=150, table5_expansion_factors=[2, 4, 8], resampling_every=50,
                    resampling_until=0.5, ghost_grads_check=True, dead_feature_token_fractions=[0.5],
                    layer_norm_l1_coefficient=8.0, dead_feature_expansion_factors=[1, 2], run_table5=True,
                    run_ablation=True, run_matryoshka=True, matryoshka_k=4,
                    matryoshka_prefix_fractions=[0.25, 0.5], matryoshka_aux_k=8)
    jobs, too_small = chapter_plan.sae_chapter_jobs(train, test, config, tmp_path, **settings)
    counts = {section: len(jobs[section]) for section in chapter_plan.SECTIONS}
    assert counts == {"main": 1, "encoders": 0, "remedies": 2, "data": 2, "sizes": 2, "table3": 2, "table5": 6,
                      "ablation": 6, "matryoshka": 1}
    assert too_small == []
    # Table 3's SAE-Rad is the main run when it trains with the main run's settings: one folder, trained once
    assert jobs["table3"][1].out_dir == jobs["main"][0].out_dir
    distinct, clashing = distinct_jobs(chapter_plan.all_jobs(jobs))
    assert len(distinct) == 21 and clashing == []
    assert {job.train_config.steps for job in jobs["table5"] + jobs["ablation"]} == {150}
    assert jobs["data"][0].out_dir.parent.name == "data_variants"
    off = dict(settings, resampling_every=0, ghost_grads_check=False, dead_feature_token_fractions=[],
               layer_norm_l1_coefficient=None, dead_feature_expansion_factors=[], run_table5=False,
               run_ablation=False, run_matryoshka=False)
    jobs, _ = chapter_plan.sae_chapter_jobs(train, test, config, tmp_path, **off)
    assert [job.run.name for job in chapter_plan.all_jobs(jobs)] == ["sae_rad_main", "conerly", "sae_rad_main"]


def test_the_main_sae_is_planned_again_on_each_comparison_arms_tokens(tmp_path):
    train, test = _tokens(96), _tokens(24, seed=1)
    arm_train, arm_test = _tokens(96, seed=2), _tokens(24, seed=3)
    config = TrainConfig(steps=300, batch_size=16, lr=1e-3, l1_coefficient=3.0, seed=0)
    settings = dict(expansion_factor=4, l1_coefficient=3.0, l1_coefficient_conerly=2.0, table3_steps=None,
                    comparison_steps=150, table5_expansion_factors=[2, 4, 8], resampling_every=0,
                    resampling_until=0.5, ghost_grads_check=False, dead_feature_token_fractions=[],
                    layer_norm_l1_coefficient=None, dead_feature_expansion_factors=[], run_table5=False,
                    run_ablation=False, run_matryoshka=False, matryoshka_k=4,
                    matryoshka_prefix_fractions=[0.25, 0.5], matryoshka_aux_k=8)
    jobs, _ = chapter_plan.sae_chapter_jobs(train, test, config, tmp_path, arm_tokens={"sup": (arm_train, arm_test)},
                                            arm_matched_l1={"sup": 5.0}, **settings)
    same, matched = jobs["encoders"]
    assert same.out_dir == chapter_plan.arm_run_dir(tmp_path, "sup") != jobs["main"][0].out_dir
    assert matched.out_dir == chapter_plan.arm_run_dir(tmp_path, "sup", matched=True)
    assert same.run.l1_coefficient == 3.0 and matched.run.l1_coefficient == 5.0
    assert same.train_tokens is arm_train and same.train_config == jobs["main"][0].train_config
    # the arm's SAEs live outside sae/<name>/, where the features chapter reads every SAE as one on the main tokens
    assert same.out_dir.parent.name == chapter_plan.ARM_RUNS_FOLDER
    # arms switched off: their matched λ is ignored, no second setting needed
    jobs, _ = chapter_plan.sae_chapter_jobs(train, test, config, tmp_path, arm_tokens={}, arm_matched_l1={"sup": 5.0},
                                            **settings)
    assert jobs["encoders"] == []


def test_workers_end_when_the_process_that_started_them_is_killed(tmp_path):
    """A SIGKILLed pipeline must not leave workers training into the stage's folders (fault trial, issue 24)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    started = tmp_path / "started"
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from pathlib import Path\n"
        "from dataclasses import replace\n"
        "import test_sae_parallel as t\n"
        "from saerad.sae.parallel import train_jobs\n"
        "jobs = [replace(job, train_config=replace(job.train_config, steps=10**7, checkpoint_every=10**6))\n"
        "        for job in t._jobs(Path(%r))[:2]]\n"
        "Path(%r).write_text('go')\n"
        "train_jobs(jobs, workers=2)\n"
    ) % (os.path.dirname(__file__), str(tmp_path), str(started))
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 60
        workers = []
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.5)
            if started.exists():
                workers = [child for child in psutil.Process(parent.pid).children(recursive=True)
                           if "resource_tracker" not in " ".join(child.cmdline())]
        assert len(workers) >= 2, "the workers did not start"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        gone, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, f"workers outlived their parent: {[worker.pid for worker in alive]}"
    finally:
        for child in psutil.Process().children(recursive=True):
            child.kill()
