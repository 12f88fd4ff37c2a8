"""Memory and time of the streaming top-k and per-feature statistics as the data set grows.

Random sparse codes stand in for SAE activations: L0 ≈ 14 features per token,
feature frequencies skewed like an SAE's (a few common features, a long tail),
about 5 % of studies with two images. They are generated chunk by chunk, so
even the 100× input never exists in memory; what is measured is what
:class:`saerad.features.StreamingTopK` and
:class:`saerad.features.StreamingFeatureStats` keep.

Each configuration runs in a fresh Python process so that its peak RSS is its
own. Reported per run: seconds spent in the two ``update`` calls and
``result`` (generation excluded), the tracemalloc peak of Python/NumPy
allocations during the whole run (including one generated chunk), the
growth of the process's peak RSS over the run, and the size of the top-k
state itself. The peak grows until the top-k state fills (every feature has
k entries), then stays flat: each update merges at most ``d_sae × k`` state
entries with one chunk's survivors, whatever the number of tokens so far.

    .venv/bin/python benchmarks/top_activations.py            # demo width 1×-100×, paper width 1×-300× (~1 min)
    .venv/bin/python benchmarks/top_activations.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from saerad.features import StreamingFeatureStats, StreamingTopK  # noqa: E402

DEMO_TOKENS = 3_543
DEMO_D_SAE = 2_048
PAPER_D_SAE = 49_152
L0 = 14


def random_chunk(rng: np.random.Generator, n_rows: int, cdf: np.ndarray) -> sp.csr_matrix:
    """``n_rows`` random codes with about ``L0`` non-zeros each, columns drawn from a skewed distribution."""
    columns = np.searchsorted(cdf, rng.random((n_rows, L0)))
    rows = np.repeat(np.arange(n_rows), L0)
    values = rng.exponential(1.0, size=n_rows * L0).astype(np.float32)
    chunk = sp.csr_matrix((values, (rows, columns.ravel())), shape=(n_rows, len(cdf)))
    chunk.sum_duplicates()
    return chunk


def run_one(n_tokens: int, d_sae: int, k: int, chunk_size: int, seed: int) -> dict:
    """Stream ``n_tokens`` random codes through top-k + statistics; return timings and memory."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / (np.arange(d_sae) + 20.0) ** 0.9
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    top, stats = StreamingTopK(d_sae, k), StreamingFeatureStats(d_sae)
    state_bytes = top.values.nbytes + top.rows.nbytes + top.groups.nbytes
    seconds, n_chunks = 0.0, 0
    for offset in range(0, n_tokens, chunk_size):
        size = min(chunk_size, n_tokens - offset)
        chunk = random_chunk(rng, size, cdf)
        # Study ids: consecutive rows share a study about 5 % of the time.
        study_ids = ((np.arange(offset, offset + size) * 0.95).astype(np.int64))
        started = time.perf_counter()
        top.update(chunk, offset, study_ids)
        stats.update(chunk)
        seconds += time.perf_counter() - started
        n_chunks += 1
    started = time.perf_counter()
    table, summary = top.result(), stats.result()
    seconds += time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "n_tokens": n_tokens, "d_sae": d_sae, "k": k, "chunk_size": chunk_size, "chunks": n_chunks,
        "seconds": seconds, "ms_per_chunk": 1000 * seconds / max(n_chunks, 1),
        "tracemalloc_peak_mb": peak / 2**20, "rss_growth_mb": (rss_after_kb - rss_before_kb) / 1024,
        "topk_state_mb": state_bytes / 2**20, "rows_out": len(table), "live_features": int((~summary["dead"]).sum()),
    }


def run_in_subprocess(n_tokens: int, d_sae: int, k: int, chunk_size: int, seed: int) -> dict:
    command = [sys.executable, __file__, "--single", str(n_tokens), str(d_sae), "--k", str(k),
               "--chunk-size", str(chunk_size), "--seed", str(seed)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--single", nargs=2, type=int, metavar=("N_TOKENS", "D_SAE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(run_one(args.single[0], args.single[1], args.k, args.chunk_size, args.seed)))
        return

    if args.quick:
        plan = [(1, DEMO_D_SAE), (10, DEMO_D_SAE), (1, PAPER_D_SAE)]
        base = 500
    else:
        plan = [(1, DEMO_D_SAE), (10, DEMO_D_SAE), (100, DEMO_D_SAE),
                (1, PAPER_D_SAE), (10, PAPER_D_SAE), (100, PAPER_D_SAE), (300, PAPER_D_SAE)]
        base = DEMO_TOKENS
    results = []
    header = (f"{'scale':>5} {'tokens':>9} {'d_sae':>7} {'chunks':>6} {'seconds':>8} {'ms/chunk':>9} "
              f"{'tracemalloc MB':>15} {'RSS growth MB':>14} {'top-k state MB':>15}")
    print(f"streaming top-k (k={args.k}, grouped by study) + feature statistics, chunk {args.chunk_size}, L0≈{L0}")
    print(header)
    for scale, d_sae in plan:
        result = run_in_subprocess(base * scale, d_sae, args.k, args.chunk_size, args.seed)
        result["scale"] = scale
        results.append(result)
        print(f"{scale:>4}× {result['n_tokens']:>9,} {d_sae:>7,} {result['chunks']:>6} {result['seconds']:>8.2f} "
              f"{result['ms_per_chunk']:>9.1f} {result['tracemalloc_peak_mb']:>15.1f} {result['rss_growth_mb']:>14.1f} "
              f"{result['topk_state_mb']:>15.1f}", flush=True)
    for d_sae in (DEMO_D_SAE, PAPER_D_SAE):
        by_scale = {r["scale"]: r for r in results if r["d_sae"] == d_sae}
        largest = max(by_scale)
        if largest > 1:
            ratio = by_scale[largest]["tracemalloc_peak_mb"] / by_scale[1]["tracemalloc_peak_mb"]
            scales = sorted(by_scale)
            previous = scales[-2]
            step = by_scale[largest]["tracemalloc_peak_mb"] / by_scale[previous]["tracemalloc_peak_mb"]
            print(f"d_sae={d_sae:,}: tracemalloc peak {largest}× / 1× = {ratio:.2f}, {largest}× / {previous}× = {step:.2f}")


if __name__ == "__main__":
    main()
