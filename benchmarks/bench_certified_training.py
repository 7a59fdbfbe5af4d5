"""Certified training against standard training (rnas_lib.trainings), measured in one run.

1. Digits (smoke tier): DARTS_V2 retrained at the smoke size (C=8, 3 cells) with the standard
   regime (the tier's 15 epochs) and with the certified regime (IBP, 4× the epochs, an ε ramp to the
   tier's table ε, 0.1); for each: clean test accuracy, certified accuracy at ℓ∞ ε = 0.1 by ibp and crown-ibp on the
   whole test split, PGD-20 accuracy at that ε (an upper bound of the true robust accuracy, which
   certified accuracy must not exceed) and the training time.
2. ``--mnist``: the tutorial tier's DARTS_V2 (C=16, 8 cells) on MNIST with the certified regime at
   ℓ∞ ε = 0.1 (the tier's table ε), ``--mnist-epochs`` epochs on ``--mnist-train-limit`` training images: clean and
   crown-ibp certified accuracy on the first ``--mnist-n`` test images and the training minutes.

Trained networks are reused from runs/ when a finished run with the same configuration is there
(a rerun measures the certificates only; delete the run folders to time the training again).
Usage: python benchmarks/bench_certified_training.py [--mnist] [--mnist-epochs 4]
                                                     [--mnist-train-limit 12000] [--mnist-n 500]
"""
from __future__ import annotations

import argparse
import time

import torch

from rnas_lib.attacks import evaluate
from rnas_lib.data import load_dataset
from rnas_lib.tiers import TABLE_EPS
from rnas_lib.train import trained_model
from rnas_lib.verify import certified_accuracy


def measure(label, result, test, eps, methods):
    model = result.model.eval()
    minutes = sum(h["seconds"] for h in result.history) / 60
    pgd = evaluate(model, test, [{"name": "pgd", "steps": 20}], [eps], norm="inf", progress=False)[0]["accuracy"]
    certified = {}
    for method in methods:
        t = time.perf_counter()
        certified[method] = certified_accuracy(model, test, eps, "inf", method)
        assert certified[method] <= pgd, f"{label}: {method} certifies {certified[method]} > PGD accuracy {pgd}"
        certified[f"{method} s"] = time.perf_counter() - t
    print(f"  {label:10s} clean {result.test_acc:.3f}  PGD-20 {pgd:.3f}  "
          + "  ".join(f"{m} certified {certified[m]:.3f} ({certified[m + ' s']:.1f} s)" for m in methods)
          + f"  training {minutes:.1f} min ({len(result.history)} epochs)")
    return certified


def digits():
    eps = TABLE_EPS["smoke"][0]
    test = load_dataset("digits", False)
    print(f"digits (smoke tier): DARTS_V2 (C=8, 3 cells), {len(test)} test images, ℓ∞ ε = {eps}")
    standard = measure("standard", trained_model("DARTS_V2", "smoke", progress=False), test, eps, ("ibp", "crown-ibp"))
    certified = measure("certified", trained_model("DARTS_V2", "smoke", training="certified", progress=False), test,
                        eps, ("ibp", "crown-ibp"))
    print(f"  crown-ibp certified accuracy, certified − standard training: "
          f"{100 * (certified['crown-ibp'] - standard['crown-ibp']):+.1f} points")


def mnist(epochs, train_limit, n):
    eps = TABLE_EPS["tutorial"][0]
    test = load_dataset("mnist", False, limit=n)
    print(f"MNIST (tutorial tier): DARTS_V2 (C=16, 8 cells), certified regime, {epochs} epochs on {train_limit} "
          f"training images, first {len(test)} test images, ℓ∞ ε = {eps}")
    result = trained_model("DARTS_V2", "tutorial", training="certified", epochs=epochs, train_limit=train_limit,
                           progress=False)
    measure("certified", result, test, eps, ("crown-ibp",))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", action="store_true")
    parser.add_argument("--mnist-epochs", type=int, default=4)
    parser.add_argument("--mnist-train-limit", type=int, default=12000)
    parser.add_argument("--mnist-n", type=int, default=500)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    digits()
    if args.mnist:
        mnist(args.mnist_epochs, args.mnist_train_limit, args.mnist_n)


if __name__ == "__main__":
    main()
