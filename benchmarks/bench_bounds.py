"""Cost of the certified bounds (rnas_lib.bounds), measured in one run.

1. A search step with the CB term vs a plain DARTS step, at smoke size (8×8×1, C=4, 3 cells) and
   tutorial size (28×28×1, C=8, 5 cells), batch 64, first order: one α step (on the val batch,
   with −γ·R in the α loss) + one w step. Uses ``rnas_lib.search``'s stepper and the registered
   ``dsrna_cb`` term: its defaults (8 bounded images, BatchNorm on their statistics, CROWN-IBP) and
   variants (the whole batch's statistics, 16 or 64 bounded images, IBP, forward-mode CROWN at
   smoke size, the certified radius as R with its implicit gradient).
2. ibp vs crown-ibp vs crown-forward vs crown on a derived network (the tier's final-network
   size), batch 16, output bounds, no gradient. The two CROWN variants only at smoke size here.

Usage: python benchmarks/bench_bounds.py [--threads 1] [--repeats 3] [--skip-tutorial]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from rnas_lib.bounds import output_bounds
from rnas_lib.genotypes import PUBLISHED
from rnas_lib.network import Network
from rnas_lib.search import SearchConfig, _Searcher
from rnas_lib.supernet import SearchNetwork

SIZES = {"smoke": dict(H=8, C=4, layers=3, net_C=8, net_layers=3),
         "tutorial": dict(H=28, C=8, layers=5, net_C=16, net_layers=8)}


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def search_step_times(size, repeats):
    p = SIZES[size]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, p["H"], p["H"], generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    configs = [("darts", "darts", {}), ("dsrna_cb, defaults (8 images, their statistics)", "dsrna_cb", {}),
               ("dsrna_cb, statistics='batch'", "dsrna_cb", dict(statistics="batch")),
               ("dsrna_cb, samples=16", "dsrna_cb", dict(samples=16)),
               ("dsrna_cb, method='ibp'", "dsrna_cb", dict(method="ibp"))]
    if size == "smoke":  # 64 × 9 specification rows at 28×28 would need tens of GB with autograd
        configs.append(("dsrna_cb, samples=64", "dsrna_cb", dict(samples=64)))
        # forward-mode intermediate bounds carry one row per pixel: 64 here, 784 at 28×28
        configs.append(("dsrna_cb, method='crown-forward'", "dsrna_cb", dict(method="crown-forward")))
    configs.append(("dsrna_cb, objective='radius' (implicit gradient)", "dsrna_cb", dict(objective="radius")))
    rows = []
    for label, method, options in configs:
        torch.manual_seed(0)
        net = SearchNetwork(p["C"], 10, p["layers"], in_channels=1)
        stepper = _Searcher(net, SearchConfig(method=method, method_options=options))

        def step():
            stepper.alpha_step(x, y, x, y, stepper.term is not None)
            stepper.weight_step(x, y, False)

        rows.append((label, timed(step, repeats)))
    base = rows[0][1]
    print(f"\n== search step, {size} size ({p['H']}×{p['H']}×1, C={p['C']}, {p['layers']} cells, batch 64)")
    for label, t in rows:
        print(f"  {label:<52s} {t * 1000:9.1f} ms   ratio to darts {t / base:5.2f}x")


def bound_times(size, repeats):
    p = SIZES[size]
    torch.manual_seed(0)
    net = Network(PUBLISHED["DARTS_V2"], p["net_C"], 10, p["net_layers"], in_channels=1).eval()
    x = torch.rand(16, 1, p["H"], p["H"], generator=torch.Generator().manual_seed(1))
    print(f"\n== output bounds, DARTS_V2 network, {size} size ({p['H']}×{p['H']}×1, C={p['net_C']}, "
          f"{p['net_layers']} cells, batch 16, ε=0.01 ℓ∞, no gradient)")
    results = {}
    with torch.no_grad():
        forward = timed(lambda: net(x), repeats)
        print(f"  {'plain forward':<12s} {forward * 1000:10.1f} ms")
        for method in ("ibp", "crown-ibp", "crown-forward", "crown"):
            if method in ("crown", "crown-forward") and size != "smoke":
                print(f"  {method:<12s}    skipped at 28×28 here (benchmarks/bench_verify.py --tutorial times it)")
                continue
            t = timed(lambda: output_bounds(net, x, 0.01, "inf", method), repeats if method != "crown" else 1)
            lb, ub = output_bounds(net, x, 0.01, "inf", method)
            results[method] = t
            print(f"  {method:<13s} {t * 1000:10.1f} ms   {t / forward:7.1f}x forward   "
                  f"mean width {float((ub - lb).mean()):.3g}")
    if "crown" in results:
        print(f"  crown / crown-ibp {results['crown'] / results['crown-ibp']:.1f}x, "
              f"crown-ibp / ibp {results['crown-ibp'] / results['ibp']:.1f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-tutorial", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    for size in ("smoke",) if args.skip_tutorial else ("smoke", "tutorial"):
        search_step_times(size, args.repeats)
        bound_times(size, args.repeats)


if __name__ == "__main__":
    main()
