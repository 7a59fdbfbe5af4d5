"""Certified radii and what they cost (rnas_lib.verify), measured in one run.

1. Smoke size: DARTS_V2 retrained at the smoke tier (``trained_model``, reused from runs/ when
   present), the first ``--n`` digits test images. For ℓ∞ and ℓ2: the mean certified radius and the
   wall time of ``certified_radius`` with ibp, crown-ibp, crown-forward, crown and alpha-crown; the
   mean radius at which PGD finds an adversarial example (``attack_radius``, an upper bound of the
   true radius); the certification gap (certified / PGD radius, per image, then averaged); and the
   ratios crown / crown-ibp.
2. ``--tutorial``: DARTS_V2 at tutorial size (MNIST 28×28, C=16, 8 cells), trained for
   ``--tutorial-epochs`` on 6000 MNIST training images under the data root, ℓ∞: the crown-ibp radii
   of the first ``--n`` test images, the crown-forward and crown radii of the first
   ``--tutorial-crown-n``, each with its wall time, the PGD radius and the certification gap, and
   the process's peak resident memory.

Radii in pixel units; every radius is a sound certificate (float32, re-checked in float64).
Each batch is certified by ``--workers`` processes (default −1: every usable core; the times are
wall times of the whole batch). Peak memory is that of the largest process (with workers, each
worker holds one chunk's bounds, so the machine holds about that many times as much).
Usage: python benchmarks/bench_verify.py [--n 100] [--threads 2] [--workers -1] [--methods crown-ibp crown]
                                         [--norms inf 2] [--tutorial] [--tutorial-crown-n 3] [--skip-smoke]
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from rnas_lib.data import load_dataset
from rnas_lib.parallel import check_workers
from rnas_lib.train import trained_model
from rnas_lib.verify import attack_radius, average_certified_bound, certification_gap

METHODS = ("ibp", "crown-ibp", "crown-forward", "crown", "alpha-crown")


def peak_gib() -> float:
    """The peak resident memory of this process or of its largest finished worker (ru_maxrss is in KiB on Linux)."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 2**20


def smoke(n, methods, norms, workers):
    model = trained_model("DARTS_V2", "smoke", progress=False).model.eval()
    test = load_dataset("digits", False).subset(slice(0, n))
    print(f"smoke: DARTS_V2 (C=8, 3 cells) on {len(test)} digits test images (8×8×1)")
    for norm in norms:
        name = "ℓ∞" if norm == "inf" else "ℓ2"
        t = time.perf_counter()
        pgd_r = attack_radius(model, test.x, test.y, norm, generator=torch.Generator().manual_seed(0))
        t_pgd = time.perf_counter() - t
        correct = pgd_r > 0
        print(f"  {name}: mean PGD radius {pgd_r[correct].mean():.4g} over the {int(correct.sum())} correctly "
              f"classified images ({t_pgd:.1f} s)")
        means = {}
        for method in methods:
            rec = average_certified_bound(model, test, norm, method, progress=False, workers=workers)
            r = torch.tensor(rec["radii"], dtype=pgd_r.dtype)
            means[method] = rec["mean_radius"]
            gap = certification_gap(r, pgd_r)[correct]
            print(f"  {name} {method:13s} mean radius {rec['mean_radius']:.4g}  gap {gap.mean():.3f}  "
                  f"{rec['seconds']:7.1f} s")
        if "crown" in means and "crown-ibp" in means and means["crown-ibp"] > 0:
            print(f"  {name} crown / crown-ibp radius: {means['crown'] / means['crown-ibp']:.1f}x")
        if "crown" in means:
            print(f"  {name} PGD radius / crown radius: {pgd_r[correct].mean() / means['crown']:.2f}x")


def tutorial(n, n_crown, epochs, workers):
    t = time.perf_counter()
    result = trained_model("DARTS_V2", "tutorial", epochs=epochs, train_limit=6000, progress=False)
    model = result.model.eval()
    print(f"tutorial: DARTS_V2 (C=16, 8 cells), {epochs} epoch(s) on 6000 MNIST images, test accuracy {result.test_acc:.4f} "
          f"(ready in {time.perf_counter() - t:.0f} s)")
    test = load_dataset("mnist", False, limit=n)
    pgd_r = attack_radius(model, test.x, test.y, "inf", generator=torch.Generator().manual_seed(0))
    for method, count in (("crown-ibp", n), ("crown-forward", n_crown), ("crown", n_crown)):
        rec = average_certified_bound(model, test, "inf", method, n=count, batch_size=10, progress=False,
                                      workers=workers)
        r = torch.tensor(rec["radii"], dtype=pgd_r.dtype)
        correct = pgd_r[:count] > 0
        gap = certification_gap(r, pgd_r[:count])[correct]
        print(f"  ℓ∞ {method:13s} mean radius {rec['mean_radius']:.4g} on {rec['n']} images (PGD {pgd_r[:count][correct].mean():.4g}, "
              f"gap {gap.mean():.4f})  {rec['seconds']:7.1f} s ({rec['seconds'] / count:.1f} s per image)  "
              f"process peak memory {peak_gib():.2f} GiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--norms", nargs="+", default=["inf", "2"], choices=["inf", "2"])
    parser.add_argument("--tutorial", action="store_true")
    parser.add_argument("--tutorial-epochs", type=int, default=1)
    parser.add_argument("--tutorial-crown-n", type=int, default=3,
                        help="images certified by crown-forward and crown at tutorial size (minutes each)")
    parser.add_argument("--skip-smoke", action="store_true")
    parser.add_argument("--workers", type=int, default=-1, help="processes certifying each batch (-1: every usable core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = check_workers(args.workers)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {workers} worker process(es) per batch")
    if not args.skip_smoke:
        smoke(args.n, args.methods, [n if n == "inf" else 2 for n in args.norms], workers)
    if args.tutorial:
        tutorial(args.n, args.tutorial_crown_n, args.tutorial_epochs, workers)


if __name__ == "__main__":
    main()
