"""Cost of a DSRNA-JB search step against a plain DARTS step, at the same size.

One search step = one α step (validation batch; with R for a robust method) + one w step (training
batch), exactly as ``rnas_lib.search`` does them (its ``_Searcher``), first order, γ_w = 0 (the
defaults). Prints the median time of each method per size and its ratio to DARTS; the target for
``dsrna_jb`` with one projection is ≤ 2×.

    python benchmarks/bench_jacobian.py [--sizes smoke tutorial] [--steps 5] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from rnas_lib.search import SearchConfig, _Searcher
from rnas_lib.supernet import SearchNetwork

SIZES = {  # name: (image size, channels, C, cells)
    "smoke": (8, 1, 4, 3),
    "tutorial": (28, 1, 8, 5),
}
METHODS = {  # label: (method, method_options)
    "darts": ("darts", {}),
    "dsrna_jb (projection, n_proj=1)": ("dsrna_jb", {"mode": "projection", "n_proj": 1}),
    "dsrna_jb (top_logit)": ("dsrna_jb", {"mode": "top_logit"}),
    "dsrna_jb (exact, 10 rows)": ("dsrna_jb", {"mode": "exact"}),
}
EXACT_SIZES = ("smoke",)  # exact mode costs ~C× more; timed at the smoke size only


def searcher(size: str, method: str, options: dict, batch: int):
    image, channels, C, cells = SIZES[size]
    torch.manual_seed(0)
    model = SearchNetwork(C, 10, cells, in_channels=channels).train()
    return _Searcher(model, SearchConfig(method=method, batch_size=batch, method_options=options))


def search_step(s: _Searcher, batches) -> float:
    (xt, yt), (xv, yv) = batches
    robust = s.term is not None
    t0 = time.perf_counter()
    s.alpha_step(xt, yt, xv, yv, robust)
    s.weight_step(xt, yt, robust)
    return time.perf_counter() - t0


def step_times(size: str, methods: dict, batch: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of each method; the methods take turns, so that load changes hit all alike.
    The first step of each warms up allocators and is not counted."""
    image, channels, _, _ = SIZES[size]
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(batch, channels, image, image, generator=g), torch.randint(0, 10, (batch,), generator=g))
               for _ in range(2)]
    searchers = {label: searcher(size, method, options, batch) for label, (method, options) in methods.items()}
    times = {label: [] for label in methods}
    for i in range(steps + 1):
        for label, s in searchers.items():
            t = search_step(s, batches)
            if i:
                times[label].append(t)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.steps} steps (one α step + one w step each)")
    for size in args.sizes:
        image, channels, C, cells = SIZES[size]
        print(f"\n{size}: {image}x{image}x{channels}, C={C}, {cells} cells")
        methods = {k: v for k, v in METHODS.items() if "exact" not in k or size in EXACT_SIZES}
        times = step_times(size, methods, args.batch, args.steps)
        base = statistics.median(times["darts"])
        for label, ts in times.items():
            t = statistics.median(ts)
            print(f"  {label:34s} {1000 * t:9.1f} ms/step   ratio to darts {t / base:5.2f}x")

if __name__ == "__main__":
    main()
