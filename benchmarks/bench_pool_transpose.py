"""The transpose of a stride-1 average pool as a box sum against F.conv_transpose2d, measured in one run.

A backward bound pass maps its coefficients through every average pool (``AvgPool.transpose``): the
DARTS pool (3×3, stride 1, padding 1) sits on every edge of the search supernet and in cells such as
PC_DARTS'. At stride 1 the transpose is a box sum over the windows that hold each input pixel, which
k²·F.avg_pool2d computes several times faster on a CPU than F.conv_transpose2d (the general rule,
kept for strided pools), its gradient too. Three measurements, each with
``AvgPool.window_sums_transpose`` as it is and with the general rule at every stride (the baseline,
defined here), and their ratio:
1. the transpose alone, on the shapes full CROWN meets on 8×8 digits (rows × channels, 8×8), float32 and float64;
2. full CROWN radii (ℓ∞) of the first ``--digits`` test digits for the smoke PC_DARTS network
   (``trained_model``; reused from runs/ when present), with the largest difference of the radii;
3. one α-gradient of CE − γ·R_CB (``robustness.TERMS["dsrna_cb"]``, its defaults) on the smoke search
   supernet for a batch of 64 digits, as a dsrna_cb search step computes it, with the largest
   difference of the gradients.
Usage: python benchmarks/bench_pool_transpose.py [--digits 8] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from rnas_lib.certify.primitives import AvgPool
from rnas_lib.certify.primitives.shape import window_sums_by_conv_transpose
from rnas_lib.data import load_dataset
from rnas_lib.robustness import TERMS
from rnas_lib.supernet import SearchNetwork
from rnas_lib.tiers import get_tier
from rnas_lib.train import trained_model
from rnas_lib.verify import certified_radius

BOX_SUM = AvgPool.window_sums_transpose


def general_rule(self, a, padding, size):
    """AvgPool's window sums transposed by F.conv_transpose2d at every stride (the baseline)."""
    if size is None:
        size = tuple((a.shape[-2 + d] - 1) * self.s[d] + self.k[d] for d in range(2))
    N, C = a.shape[:2]
    z = window_sums_by_conv_transpose(a.reshape(N * C, 1, *a.shape[-2:]), self.k, self.s, padding, size)
    return z.view(N, C, *size)


def timed(fn, repeats=1):
    """(result of the last call, median seconds of ``repeats`` calls, after a warm-up call where repeats > 1)."""
    out = fn() if repeats > 1 else None
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, sorted(times)[len(times) // 2]


def compare(label, fn, repeats=1):
    """Time ``fn`` with the general rule and with the box sum; print both, their ratio and the largest difference."""
    results, seconds = {}, {}
    for name, rule in (("conv_transpose2d", general_rule), ("box sum", BOX_SUM)):
        AvgPool.window_sums_transpose = rule
        results[name], seconds[name] = timed(fn, repeats)
    AvgPool.window_sums_transpose = BOX_SUM
    a, b = results.values()
    diff = max(float((x - y).abs().max()) for x, y in zip(a, b)) if isinstance(a, (list, tuple)) \
        else float((a - b).abs().max())
    print(f"  {label}: conv_transpose2d {seconds['conv_transpose2d'] * 1e3:9.1f} ms, box sum "
          f"{seconds['box sum'] * 1e3:9.1f} ms ({seconds['conv_transpose2d'] / seconds['box sum']:.2f}x), "
          f"largest difference {diff:.3g}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    pool = AvgPool(3, 1, 1, False)
    for dtype in (torch.float32, torch.float64):
        A = torch.randn(1, 144, 16, 8, 8, dtype=dtype)
        compare(f"transpose of the 3×3 pool, 144 rows × 16 channels × 8×8, {dtype}",
                lambda: pool.transpose(A, [(16, 8, 8)])[0], repeats=20)
    digits = load_dataset("digits", False).subset(slice(0, args.digits))
    model = trained_model("PC_DARTS", "smoke", progress=False).model.eval()
    compare(f"full CROWN radii of {len(digits)} digits, smoke PC_DARTS, ℓ∞",
            lambda: certified_radius(model, digits.x, digits.y, "inf", "crown"))
    t = get_tier("smoke")
    train = load_dataset("digits", True)
    x, y = train.x[:64], train.y[:64]
    torch.manual_seed(0)
    net = SearchNetwork(t.search_C, 10, t.search_layers, t.steps, t.multiplier, x.shape[1]).train()
    term, alphas = TERMS["dsrna_cb"](), net.arch_parameters()
    gamma = TERMS["dsrna_cb"].default_gamma
    compare("α-gradient of CE − γ·R_CB, smoke supernet, batch of 64",
            lambda: torch.autograd.grad(F.cross_entropy(net(x), y) - gamma * term(net, x, y), alphas), repeats=5)


if __name__ == "__main__":
    main()
