"""Time and memory of the paper profile's shapes on this machine: the inputs of ``saerad.paper_estimates``.

Three measurements, each in a fresh Python process so that its peak RSS is its own
(reported: seconds, and the growth of the peak RSS over the RSS just before the
measured objects are built):

``sae_step``      one SAE-Rad optimisation step (forward, backward, Adam) at the paper's
                  shape: ×64 of d = 768 (49,152 features), batch 2,048, float32, random
                  tokens of norm sqrt(768) (every feature is live, so the dense path runs:
                  the upper bound of a step).
``activations``   the features chapter's activation pass (``iter_activation_chunks`` and the
                  streaming top-k, chunks of 1,024 as in ``params/paper.yaml``) at paper
                  width, with the gate bias set so that about 14 features fire per token (the
                  paper's L0 is 13.6; a random SAE would fire half of them).
``vit``           a Rad-DINO-sized ViT-B/14 forward pass at 518 px (random weights), float32,
                  at batch 1 and 4, for the activation memory per image.

    .venv/bin/python benchmarks/paper_shapes.py            # all three (~4 min on 2 cores)
    .venv/bin/python benchmarks/paper_shapes.py --only sae_step

The figures this prints are the ``MEASURED_CPU`` inputs of ``saerad/paper_estimates.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

D_IN, EXPANSION, BATCH = 768, 64, 2048


def rss_now_bytes() -> int:
    """Current resident set size of this process."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_growth(rss_before: int) -> int:
    """Growth of the peak RSS (``ru_maxrss``, KiB on Linux) over ``rss_before``."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before


def paper_sae(gate_bias: float | None = None):
    from saerad.sae import build_sae, make_config

    sae = build_sae(make_config("sae_rad", d_in=D_IN, expansion_factor=EXPANSION))
    if gate_bias is not None:
        with torch.no_grad():
            sae.b_gate.fill_(gate_bias)
    return sae


def random_tokens(n: int, seed: int = 0) -> np.ndarray:
    """Gaussian tokens scaled to norm sqrt(d), as the encode stage scales Rad-DINO's."""
    tokens = np.random.default_rng(seed).standard_normal((n, D_IN)).astype(np.float32)
    return tokens * np.float32(np.sqrt(D_IN)) / np.linalg.norm(tokens, axis=1, keepdims=True)


def measure_sae_step(steps: int) -> dict:
    from saerad.sae.train import make_optimizer, optimisation_step

    before = rss_now_bytes()
    sae = paper_sae()
    optimizer = make_optimizer(sae, 5e-5)
    x = torch.from_numpy(random_tokens(BATCH))
    optimisation_step(sae, optimizer, x, 8e-3)  # warm-up; creates the Adam state
    started = time.perf_counter()
    for _ in range(steps):
        optimisation_step(sae, optimizer, x, 8e-3)
    seconds = (time.perf_counter() - started) / steps
    return {"seconds_per_step": seconds, "peak_rss_growth_bytes": peak_growth(before), "steps_timed": steps,
            "parameters": sum(p.numel() for p in sae.parameters())}


def measure_activations(n_tokens: int, chunk_size: int = 1024, k: int = 10) -> dict:
    from saerad.features import StreamingTopK
    from saerad.features.activations import iter_activation_chunks

    tokens = random_tokens(n_tokens, seed=1)
    before = rss_now_bytes()
    sae = paper_sae(gate_bias=-3.45)  # P(N(0,1) > 3.45) * 49,152 ≈ 14 features per token
    top = StreamingTopK(sae.config.d_sae, k)
    groups = np.arange(n_tokens)
    nonzero = 0
    started = time.perf_counter()
    for offset, chunk in iter_activation_chunks(sae, tokens, chunk_size):
        top.update(chunk, offset, groups[offset:offset + chunk.shape[0]])
        nonzero += chunk.nnz
    top.result()
    seconds = time.perf_counter() - started
    return {"tokens_per_second": n_tokens / seconds, "mean_l0": nonzero / n_tokens, "tokens": n_tokens,
            "chunk_size": chunk_size, "peak_rss_growth_bytes": peak_growth(before)}


def measure_vit(batch_size: int) -> dict:
    from transformers import Dinov2Config, Dinov2Model

    before = rss_now_bytes()
    model = Dinov2Model(Dinov2Config(image_size=518, patch_size=14, hidden_size=768, num_hidden_layers=12,
                                     num_attention_heads=12)).eval()
    weights = rss_now_bytes() - before
    pixels = torch.randn(batch_size, 3, 518, 518)
    with torch.inference_mode():
        started = time.perf_counter()
        model(pixel_values=pixels)
        seconds = time.perf_counter() - started
    return {"batch_size": batch_size, "seconds": seconds, "weights_rss_bytes": weights,
            "peak_rss_growth_bytes": peak_growth(before), "attention": model.config._attn_implementation,
            "parameters": sum(p.numel() for p in model.parameters())}


def child(name: str, args) -> dict:
    torch.manual_seed(0)
    if name == "sae_step":
        return measure_sae_step(args.steps)
    if name == "activations":
        return measure_activations(args.tokens)
    if name.startswith("vit"):
        return measure_vit(int(name[3:]))
    raise ValueError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["sae_step", "activations", "vit"], action="append")
    parser.add_argument("--steps", type=int, default=3, help="SAE steps timed after one warm-up")
    parser.add_argument("--tokens", type=int, default=16_384, help="tokens through the activation pass")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    names = []
    for group in args.only or ["sae_step", "activations", "vit"]:
        names += ["vit1", "vit4"] if group == "vit" else [group]
    results = {"threads": torch.get_num_threads()}
    for name in names:
        command = [sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--tokens", str(args.tokens)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
