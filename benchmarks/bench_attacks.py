"""PGD-20 throughput (images/s) of rnas_lib.attacks.pgd against the toolbox's ProjectedGradientDescent on
the same model, images and settings (ℓ∞, ε = 0.1, step 2.5·ε/20, one random start), and their ratio.

    python benchmarks/bench_attacks.py [--tier smoke] [--n 512] [--batch-size 256] [--repeats 3] [--threads 1]

Both attacks run the same forward/backward passes of the network per step, so the ratio measures each
implementation's overhead around them (the toolbox converts to and from numpy at every step). Times
are the best of ``repeats`` runs of each, interleaved; the robust accuracies are printed as a check
that both attacks did the same work.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", default="smoke")
    parser.add_argument("--genotype", default="DARTS_V2")
    parser.add_argument("--n", type=int, default=512, help="images attacked per run")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from art.attacks.evasion import ProjectedGradientDescent

    from rnas_lib.attacks import art_classifier, pgd
    from rnas_lib.data import load_dataset
    from rnas_lib.tiers import get_tier
    from rnas_lib.train import build_network

    tier = get_tier(args.tier)
    torch.manual_seed(0)
    model = build_network(args.genotype, tier).eval()
    data = load_dataset(tier.dataset, True, limit=args.n)
    x, y = data.x, data.y
    step = 2.5 * args.eps / args.steps
    art_pgd = ProjectedGradientDescent(art_classifier(model, x), norm=np.inf, eps=args.eps, eps_step=step,
                                       max_iter=args.steps, num_random_init=1, batch_size=args.batch_size,
                                       verbose=False)

    def run_rnas():
        return torch.cat([pgd(model, x[i:i + args.batch_size], y[i:i + args.batch_size], args.eps, "inf",
                              args.steps, step) for i in range(0, len(y), args.batch_size)])

    def run_art():
        return torch.from_numpy(art_pgd.generate(x.numpy(), y.numpy()))

    times = {"rnas": [], "toolbox": []}
    accuracy = {}
    for _ in range(args.repeats):
        for name, fn in (("rnas", run_rnas), ("toolbox", run_art)):
            t0 = time.perf_counter()
            x_adv = fn()
            times[name].append(time.perf_counter() - t0)
            with torch.no_grad():
                accuracy[name] = (model(x_adv).argmax(1) == y).float().mean().item()
    print(f"PGD-{args.steps} ℓ∞ ε={args.eps} step={step:.4g}, {args.genotype} at tier {tier.name} "
          f"({tier.dataset}, C={tier.train_C}, {tier.train_layers} cells), {len(y)} images, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads, best of {args.repeats}")
    rate = {}
    for name in times:
        best = min(times[name])
        rate[name] = len(y) / best
        print(f"  {name:8s} {best:8.3f} s  {rate[name]:10.1f} images/s  (robust accuracy {accuracy[name]:.3f})")
    print(f"  ratio rnas/toolbox throughput: {rate['rnas'] / rate['toolbox']:.2f}  (target ≥ 1)")


if __name__ == "__main__":
    main()
