"""SAE training throughput: our SAE-Rad trainer against SAELens's gated-SAE trainer, in one run.

Both train the same SAE (gated encoder, no input centring, decoder-norm-weighted
L1 on the rectified gate, auxiliary loss that trains the decoder: SAELens's
``GatedTrainingSAE`` with ``apply_b_dec_to_input=False`` is SAE-Rad's Eq. 9)
on the demo's training class tokens, with the same expansion factor, lr and
its warm-up/decay, λ and its warm-up, batch size, batches (row order), steps
and seed, on the same number of threads. SAELens runs in ``.venv-saelens``
(its pins conflict with ours) as a worker subprocess written by this script,
fed the tokens and the batch order through ``.npy`` files.

The machine may be shared, so the two trainers are interleaved: blocks of
``--block`` steps alternate between them (who goes first alternates too) and
each block is timed where it runs; the ratio is reported both from the total
times and as the median of the per-block ratios.

Both final models are evaluated by the same code (``saerad.sae.evaluate_sae``)
on the held-out tokens: SAELens's model is saved by SAELens and loaded by our
``load_sae``, whose exactness the parity test checks.

By default both start from the same initial weights (ours, Appendix B.3,
copied into SAELens's model) and SAELens's hard-coded gradient-norm clipping
(to 1) is switched off, so the two train the same model with the same
algorithm and their final L0 and explained variance can be compared as
equals. ``--saelens-clip`` and ``--saelens-init`` restore SAELens's own
choices (its initial decoder rows are normalised Kaiming-uniform rather than
Gaussian). One difference remains: SAELens's λ warm-up lags ours by one step
(λ = 0 at its step 0).

Also printed: the achieved FLOP/s of the dense encoder product (the one
product of a step that cannot be restricted to live features) against this
machine's measured fp32 matmul rate, and the speed-up of the gathered
(live-columns-only) path over the dense one on the trained model.

    python benchmarks/sae_training.py [--steps 3000] [--expansion-factor 8] [--threads 1] [--device cpu]
    python benchmarks/sae_training.py --measure-threshold   # dense vs gathered step time against live fraction

A GPU run would use ``--device cuda --expansion-factor 64 --batch-size 2048``
(with the paper's lr 5e-5 and λ 8e-3 on Rad-DINO tokens via ``--tokens``).
"""

from __future__ import annotations

import os

# Spinning OpenMP threads stall for whole time slices when another process holds the other core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from saerad.sae import TrainConfig, evaluate_sae, load_sae, make_config, save_sae  # noqa: E402
from saerad.sae.models import build_sae  # noqa: E402
from saerad.sae.saelens_format import WEIGHTS_FILENAME  # noqa: E402
from saerad.sae.schedule import l1_coefficient, learning_rate, phase_steps  # noqa: E402
from saerad.sae.train import BatchOrder, make_optimizer, optimisation_step  # noqa: E402
from saerad.encode.tokens import load_class_tokens  # noqa: E402

WORKER = textwrap.dedent('''
    """SAELens side of benchmarks/sae_training.py: a gated SAE trained by SAELens's SAETrainer, step blocks on request.

    Protocol on stdin/stdout, one JSON object per line:
    {"run": n} -> {"seconds": s}   (the next n steps, timed here)
    {"save": dir} -> {"saved": dir}
    """
    import json, sys, time, warnings
    import numpy as np
    import torch
    warnings.simplefilter("ignore")
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.gated_sae import GatedTrainingSAE, GatedTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    job = json.loads(open(sys.argv[1]).read())
    if not job["clip_gradient"]:
        # SAETrainer._train_step calls torch.nn.utils.clip_grad_norm_(params, 1.0) unconditionally.
        torch.nn.utils.clip_grad_norm_ = lambda parameters, max_norm, *args, **kwargs: torch.zeros(())
    torch.set_num_threads(job["threads"])
    if job["device"] == "cpu":
        torch.set_flush_denormal(True)
    torch.manual_seed(job["seed"])
    tokens = torch.from_numpy(np.load(job["tokens"])).to(job["device"])
    order = torch.from_numpy(np.load(job["order"]))
    steps, batch_size = order.shape

    sae = GatedTrainingSAE(GatedTrainingSAEConfig(
        d_in=tokens.shape[1], d_sae=tokens.shape[1] * job["expansion_factor"], apply_b_dec_to_input=False,
        l1_coefficient=job["l1_coefficient"], l1_warm_up_steps=job["l1_warmup_steps"],
        decoder_init_norm=1.0, device=job["device"]))
    if job["init"]:
        # Start from our initial weights (Appendix B.3), saved by our save_sae in SAELens's own layout.
        from safetensors.torch import load_file
        with torch.no_grad():
            for name, value in load_file(job["init"]).items():
                getattr(sae, name).copy_(value)
    trainer = SAETrainer(
        cfg=SAETrainerConfig(total_training_samples=steps * batch_size, train_batch_size_samples=batch_size,
                             lr=job["lr"], lr_end=job["lr"], lr_scheduler_name="constant",
                             lr_warm_up_steps=job["lr_warmup_steps"], lr_decay_steps=job["lr_decay_steps"],
                             adam_beta1=0.9, adam_beta2=0.999, device=job["device"]),
        sae=sae, data_provider=iter(()))

    def run(n):
        # SAETrainer.fit's loop body, without its progress bar (wandb is off).
        for _ in range(n):
            step = trainer.n_training_steps
            trainer.maybe_reset_sparsity()
            trainer.step(tokens.index_select(0, order[step].to(tokens.device)))
            trainer.n_training_steps += 1

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request:
            if job["device"].startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            run(request["run"])
            if job["device"].startswith("cuda"):
                torch.cuda.synchronize()
            print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)
        elif "save" in request:
            trainer.sae.save_inference_model(request["save"])
            print(json.dumps({"saved": request["save"]}), flush=True)
''')


class SAELensWorker:
    """The SAELens trainer in its own venv, driven block by block."""

    def __init__(self, python: Path, job: dict, scratch: Path):
        (scratch / "job.json").write_text(json.dumps(job))
        (scratch / "saelens_worker.py").write_text(WORKER)
        environment = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1",
                       "TOKENIZERS_PARALLELISM": "false"}
        self.process = subprocess.Popen([str(python), str(scratch / "saelens_worker.py"), str(scratch / "job.json")],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment)
        self._reply()  # wait for "ready": the import of SAELens is not timed

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"SAELens worker exited with code {self.process.wait()} (its stderr is above)")
        return json.loads(line)

    def request(self, payload: dict) -> dict:
        self.process.stdin.write(json.dumps(payload) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


class OurTrainer:
    """train_sae's loop body (schedules, batch, optimisation_step), without its logging and checkpoints."""

    def __init__(self, data: torch.Tensor, order: np.ndarray, expansion_factor: int, config: TrainConfig):
        self.data, self.order, self.config = data, order, config
        self.sae = build_sae(make_config("sae_rad", data.shape[1], expansion_factor, seed=config.seed)).to(data.device)
        self.optimizer = make_optimizer(self.sae, config.lr)
        self.step = 0

    def run(self, n: int) -> float:
        started = time.perf_counter()
        config, total = self.config, self.config.steps
        for _ in range(n):
            step = self.step
            lr = learning_rate(step, total, config.lr, config.lr_warmup_fraction, config.lr_decay_fraction)
            l1 = l1_coefficient(step, total, config.l1_coefficient, config.l1_warmup_fraction)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x = self.data.index_select(0, torch.from_numpy(self.order[step]).to(self.data.device))
            optimisation_step(self.sae, self.optimizer, x, l1)
            self.step += 1
        _synchronise(self.data.device)
        return time.perf_counter() - started


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def batch_order(n_rows: int, steps: int, batch_size: int, seed: int) -> np.ndarray:
    """Row indices of every step, ``[steps, batch_size]``: the order train_sae uses."""
    order = BatchOrder(n_rows, batch_size, seed)
    return np.stack([order.indices(step) for step in range(steps)])


def matmul_rate(rows: int, inner: int, columns: int, device: str, seconds: float = 1.0) -> float:
    """Best-of-repeats FLOP/s of an fp32 ``[rows, inner] @ [inner, columns]`` product."""
    a, b = torch.randn(rows, inner, device=device), torch.randn(inner, columns, device=device)
    a @ b  # warm-up
    best, deadline = math.inf, time.perf_counter() + seconds
    repeats = max(1, int(2e8 // (rows * inner * columns)))
    while time.perf_counter() < deadline or best == math.inf:
        _synchronise(torch.device(device))
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _synchronise(torch.device(device))
        best = min(best, (time.perf_counter() - started) / repeats)
    return 2.0 * rows * inner * columns / best


def step_milliseconds(sae, data: torch.Tensor, order: np.ndarray, gather_below: float, steps: int) -> float:
    """Median time of a training step of a copy of ``sae`` (lr 0: the copy does not drift)."""
    model = copy.deepcopy(sae)
    model.gather_below = gather_below
    optimizer = make_optimizer(model, 0.0)
    times = []
    for step in range(steps):
        x = data.index_select(0, torch.from_numpy(order[step % len(order)]).to(data.device))
        started = time.perf_counter()
        optimisation_step(model, optimizer, x, 1.0)
        _synchronise(data.device)
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def gathered_speedup(sae, data: torch.Tensor, order: np.ndarray, steps: int = 40, rounds: int = 3) -> dict:
    """Dense against gathered step time on ``sae``, interleaved ``rounds`` times; medians of the rounds."""
    with torch.no_grad():
        x = data.index_select(0, torch.from_numpy(order[0]).to(data.device))
        live = float((sae.encoder_input(x) @ sae.W_enc + sae.b_gate > 0).any(dim=0).float().mean())
    dense, gathered = [], []
    for _ in range(rounds):
        dense.append(step_milliseconds(sae, data, order, 0.0, steps))
        gathered.append(step_milliseconds(sae, data, order, 2.0, steps))
    dense_ms, gathered_ms = statistics.median(dense), statistics.median(gathered)
    return {"live_fraction": live, "dense_ms": dense_ms, "gathered_ms": gathered_ms, "speedup": dense_ms / gathered_ms}


def measure_threshold(sae, data: torch.Tensor, order: np.ndarray) -> None:
    """Dense vs gathered step time as the live fraction grows (by raising b_gate of ``sae``)."""
    print("live fraction   dense ms   gathered ms   gathered/dense")
    for shift in (0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5):
        shifted = copy.deepcopy(sae)
        with torch.no_grad():
            shifted.b_gate.add_(shift)
        result = gathered_speedup(shifted, data, order, steps=25, rounds=3)
        print(f"{result['live_fraction']:13.3f}   {result['dense_ms']:8.2f}   {result['gathered_ms']:11.2f}"
              f"   {result['gathered_ms'] / result['dense_ms']:14.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--expansion-factor", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--l1-coefficient", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block", type=int, default=100, help="steps per interleaved block")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both trainers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--artifacts", default=str(REPO_ROOT / "artifacts" / "demo"))
    parser.add_argument("--tokens", help="optional .npy [n, d] of training tokens instead of the demo's (no held-out "
                                         "split then: the last 10%% of rows are held out)")
    parser.add_argument("--saelens-python", default=str(REPO_ROOT / ".venv-saelens" / "bin" / "python"))
    parser.add_argument("--saelens-clip", action="store_true",
                        help="keep the gradient-norm clipping (to 1) that SAELens's trainer hard-codes; by default "
                             "it is switched off, as ours has none and the two would not train the same model")
    parser.add_argument("--saelens-init", dest="same_init", action="store_false",
                        help="let SAELens draw its own initial weights instead of starting from ours")
    parser.add_argument("--measure-threshold", action="store_true",
                        help="only train ours, then time dense vs gathered steps against the live fraction")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cpu":
        torch.set_flush_denormal(True)  # as the SAE stage does (saerad.sae.experiments.train_and_evaluate)
    device = torch.device(args.device)

    if args.tokens:
        everything = np.load(args.tokens).astype(np.float32)
        cut = int(0.9 * len(everything))
        train_tokens, test_tokens = everything[:cut], everything[cut:]
    else:
        train_tokens = np.ascontiguousarray(load_class_tokens(args.artifacts, "train")[0], dtype=np.float32)
        test_tokens = np.ascontiguousarray(load_class_tokens(args.artifacts, "test")[0], dtype=np.float32)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, l1_coefficient=args.l1_coefficient,
                         seed=args.seed, device=args.device)
    order = batch_order(len(train_tokens), config.steps, config.batch_size, config.seed)
    data = torch.from_numpy(train_tokens).to(device)
    print(f"tokens: {train_tokens.shape[0]} train, {test_tokens.shape[0]} held out, d_in {train_tokens.shape[1]}; "
          f"SAE x{args.expansion_factor} (d_sae {train_tokens.shape[1] * args.expansion_factor}), "
          f"{config.steps} steps of {config.batch_size}, lr {config.lr}, λ {config.l1_coefficient}, "
          f"{args.threads} thread(s), {args.device}"
          f"; SAELens: gradient clipping {'on' if args.saelens_clip else 'off'}, "
          f"{'our initial weights' if args.same_init else 'its own initial weights'}", flush=True)

    ours = OurTrainer(data, order, args.expansion_factor, config)
    if args.measure_threshold:
        ours.run(config.steps)
        measure_threshold(ours.sae, data, order)
        return

    saelens_python = Path(args.saelens_python)
    if not saelens_python.exists():
        sys.exit(f"{saelens_python} not found: create the SAELens venv with `make .venv-saelens`")
    with tempfile.TemporaryDirectory(prefix="sae-benchmark-") as scratch_name:
        scratch = Path(scratch_name)
        np.save(scratch / "tokens.npy", train_tokens)
        np.save(scratch / "order.npy", order)
        if args.same_init:
            save_sae(build_sae(ours.sae.config), scratch / "initial")  # the model OurTrainer starts from
        job = {"tokens": str(scratch / "tokens.npy"), "order": str(scratch / "order.npy"), "threads": args.threads,
               "device": args.device, "seed": config.seed, "expansion_factor": args.expansion_factor,
               "lr": config.lr, "l1_coefficient": config.l1_coefficient,
               "lr_warmup_steps": phase_steps(config.steps, config.lr_warmup_fraction),
               "lr_decay_steps": phase_steps(config.steps, config.lr_decay_fraction),
               "l1_warmup_steps": phase_steps(config.steps, config.l1_warmup_fraction),
               "clip_gradient": args.saelens_clip,
               "init": str(scratch / "initial" / WEIGHTS_FILENAME) if args.same_init else ""}
        worker = SAELensWorker(saelens_python, job, scratch)
        ours_seconds, theirs_seconds, block_ratios = 0.0, 0.0, []
        done, block = 0, 0
        while done < config.steps:
            n = min(args.block, config.steps - done)
            if block % 2 == 0:
                mine = ours.run(n)
                theirs = worker.request({"run": n})["seconds"]
            else:
                theirs = worker.request({"run": n})["seconds"]
                mine = ours.run(n)
            ours_seconds, theirs_seconds = ours_seconds + mine, theirs_seconds + theirs
            block_ratios.append(theirs / mine)
            done, block = done + n, block + 1
            print(f"  {done:6d} steps: ours {n / mine:7.1f} steps/s, SAELens {n / theirs:7.1f} steps/s", flush=True)
        worker.request({"save": str(scratch / "saelens_sae")})
        worker.close()
        theirs_model = load_sae(scratch / "saelens_sae", device=args.device)

    ours_model = ours.sae.eval()
    results = {}
    for name, model, seconds in (("SAE-Rad (ours)", ours_model, ours_seconds),
                                 ("SAELens gated", theirs_model, theirs_seconds)):
        held_out, seen = evaluate_sae(model, test_tokens), evaluate_sae(model, train_tokens)
        results[name] = {"steps_per_second": config.steps / seconds, "l0": held_out["l0"],
                         "explained_variance": held_out["explained_variance"], "dead": seen["dead_features"]}
    print()
    print(f"{'trainer':16s} {'steps/s':>8s} {'held-out L0':>12s} {'held-out EV':>12s} {'dead (train)':>13s}")
    for name, row in results.items():
        print(f"{name:16s} {row['steps_per_second']:8.1f} {row['l0']:12.2f} {row['explained_variance']:12.4f} "
              f"{row['dead']:13d}")
    ours_row, theirs_row = results["SAE-Rad (ours)"], results["SAELens gated"]
    print(f"throughput ratio ours/SAELens: {theirs_seconds / ours_seconds:.2f}x from total times, "
          f"{statistics.median(block_ratios):.2f}x median over {len(block_ratios)} interleaved blocks "
          f"(target >= 1.5x)")
    print(f"relative differences ours vs SAELens: L0 {ours_row['l0'] / theirs_row['l0'] - 1:+.1%}, "
          f"EV {ours_row['explained_variance'] / theirs_row['explained_variance'] - 1:+.1%} (target within 2%)")
    equal_quality = (abs(ours_row["l0"] / theirs_row["l0"] - 1) <= 0.02
                     and abs(ours_row["explained_variance"] / theirs_row["explained_variance"] - 1) <= 0.02)
    if (not equal_quality and ours_row["l0"] <= theirs_row["l0"]
            and ours_row["explained_variance"] >= theirs_row["explained_variance"]):
        print("  (ours is sparser and reconstructs better: a better point on the sparsity/fidelity trade-off, "
              "not an equal one)")

    d_in, d_sae = train_tokens.shape[1], ours_model.config.d_sae
    encoder_rate = matmul_rate(config.batch_size, d_in, d_sae, args.device, seconds=1.5)
    # The peak: the best of large square products (several sizes, so one unlucky time slice does not decide it).
    sizes = (512, 1024, 2048) if args.device == "cpu" else (4096, 8192)
    peak_rate, peak_size = max((matmul_rate(size, size, size, args.device, seconds=1.5), size) for size in sizes)
    print(f"dense encoder product [{config.batch_size}x{d_in}] @ [{d_in}x{d_sae}]: {encoder_rate / 1e9:.1f} GFLOP/s; "
          f"fp32 matmul peak measured (best of {'/'.join(map(str, sizes))} cubed, at {peak_size}): "
          f"{peak_rate / 1e9:.1f} GFLOP/s "
          f"({encoder_rate / peak_rate:.0%} of it), {args.threads} thread(s)")
    speedup = gathered_speedup(ours_model, data, order)
    print(f"gathered vs dense training step on the trained SAE-Rad (live fraction {speedup['live_fraction']:.2f} "
          f"per batch): {speedup['dense_ms']:.2f} ms dense, {speedup['gathered_ms']:.2f} ms gathered "
          f"({speedup['speedup']:.2f}x)")


if __name__ == "__main__":
    main()
