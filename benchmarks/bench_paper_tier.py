"""Paper-tier cost on this machine's device, and the device's agreement with the CPU.

1. One search step (one α step on a validation batch + one w step) at the paper tier's supernet
   size (CIFAR-10 32×32×3, C=16, 8 cells, batch 64) for darts (first and second order), dsrna_jb,
   dsrna_cb and dsrna_combined with their defaults; ratio to darts, and the projected time of the
   paper's 50-epoch search on 25,000 + 25,000 images (391 steps per epoch).
2. One training step of the final network (DARTS_V2 genotype, C=36, 20 cells, batch 96), and the
   projected time of 600 epochs on 50,000 images (521 steps per epoch).
3. With ``--check``, on a GPU only: a smoke search, training, PGD evaluation and certification
   run end to end on the GPU; then the same computations on the CPU and the GPU in float64 (small
   supernet C=4, 3 cells, 8×8×3 inputs, random α and BatchNorm statistics) — logits, ibp and
   crown-ibp margin bounds, ∂f/∂x, exact Jacobian norms, ∂R_CB/∂α and ∂CE/∂w — and their largest
   relative difference (above 1e-8 the script fails).

Images are uniform noise: step times do not depend on pixel values. Usage:
python benchmarks/bench_paper_tier.py [--device cuda] [--repeats 3] [--skip-train] [--check]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from rnas_lib.devices import resolve_device
from rnas_lib.genotypes import PUBLISHED
from rnas_lib.network import Network
from rnas_lib.search import SearchConfig, _Searcher
from rnas_lib.supernet import SearchNetwork

SEARCH = dict(C=16, layers=8, batch=64, steps_per_epoch=391, epochs=50)
TRAIN = dict(C=36, layers=20, batch=96, steps_per_epoch=521, epochs=600)
METHODS = [("darts", "darts", 1), ("darts, second order", "darts", 2), ("dsrna_jb", "dsrna_jb", 1),
           ("dsrna_cb", "dsrna_cb", 1), ("dsrna_combined", "dsrna_combined", 1)]


def timed(fn, repeats, device):
    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run()  # warm-up (cuDNN picks its kernels here)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def noise(batch, device, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g)
    return x.to(device), torch.randint(0, 10, (batch,), generator=g).to(device)


def search_steps(device, repeats):
    x, y = noise(SEARCH["batch"], device)
    print(f"\n== search step, paper size (32×32×3, C={SEARCH['C']}, {SEARCH['layers']} cells, batch {SEARCH['batch']})")
    base = None
    for label, method, order in METHODS:
        torch.manual_seed(0)
        net = SearchNetwork(SEARCH["C"], 10, SEARCH["layers"], in_channels=3).to(device)
        stepper = _Searcher(net, SearchConfig(method=method, order=order))

        def step():
            stepper.alpha_step(x, y, x, y, stepper.term is not None)
            stepper.weight_step(x, y, False)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = timed(step, repeats, device)
        base = base or t
        hours = t * SEARCH["steps_per_epoch"] * SEARCH["epochs"] / 3600
        memory = f"   peak {torch.cuda.max_memory_allocated(device) / 2**30:5.1f} GiB" if device.type == "cuda" else ""
        print(f"  {label:<22s} {t * 1000:9.1f} ms   ratio to darts {t / base:5.2f}x   "
              f"50 epochs ≈ {hours:6.2f} h{memory}")
        del net, stepper


def train_step(device, repeats):
    x, y = noise(TRAIN["batch"], device)
    torch.manual_seed(0)
    net = Network(PUBLISHED["DARTS_V2"], TRAIN["C"], 10, TRAIN["layers"], in_channels=3).to(device).train()
    opt = torch.optim.SGD(net.parameters(), 0.025, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    t = timed(step, repeats, device)
    hours = t * TRAIN["steps_per_epoch"] * TRAIN["epochs"] / 3600
    print(f"\n== training step, DARTS_V2 final network (32×32×3, C={TRAIN['C']}, {TRAIN['layers']} cells, "
          f"batch {TRAIN['batch']})\n  {t * 1000:9.1f} ms   600 epochs ≈ {hours:6.1f} h")


def agreement(device):
    """Largest relative |CPU − device| of each computation, in float64."""
    from rnas_lib.bounds import margin_lower_bound
    from rnas_lib.jacobian import jacobian_norm
    from rnas_lib.robustness import dsrna_cb

    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        cpu = SearchNetwork(4, 10, 3, in_channels=3)
        with torch.no_grad():
            cpu.alphas_normal.normal_(), cpu.alphas_reduce.normal_()
            for m in cpu.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
        cpu.eval()
        gpu = SearchNetwork(4, 10, 3, in_channels=3).to(device).eval()
        gpu.load_state_dict(cpu.state_dict())
        x, y = noise(4, "cpu", seed=1, size=8)
        xg, yg = x.to(device), y.to(device)
        checks = {"logits": lambda m, a, b: m(a)}
        for method in ("ibp", "crown-ibp"):  # full CROWN runs the same backward code, once per neuron
            for norm in ("inf", 2):
                checks[f"margin bound {method} ℓ{norm}"] = (
                    lambda m, a, b, method=method, norm=norm: margin_lower_bound(m, a, b, 0.01, norm, method))

        def input_grad(m, a, b):
            a = a.detach().requires_grad_(True)
            return torch.autograd.grad(m(a).sum(), a)[0]

        checks["∂(Σ logits)/∂x"] = input_grad
        checks["exact Jacobian ℓ1 rows"] = lambda m, a, b: jacobian_norm(m, a, "exact", q=1, create_graph=False)
        term = dsrna_cb()

        def alpha_grad(m, a, b):
            m.train()
            g = torch.autograd.grad(term(m, a, b), m.arch_parameters())
            m.eval()
            return torch.cat([t.flatten() for t in g])

        def weight_grad(m, a, b):
            m.train()
            g = torch.autograd.grad(torch.nn.functional.cross_entropy(m(a), b), m.weights())
            m.eval()
            return torch.cat([t.flatten() for t in g])

        checks["∂R_CB/∂α (train-mode BN)"] = alpha_grad
        checks["∂CE/∂w (train-mode BN)"] = weight_grad
        print("\n== CPU vs device, float64: largest |difference| / largest |value|")
        worst = 0.0
        for name, fn in checks.items():
            a, b = fn(cpu, x, y).detach(), fn(gpu, xg, yg).detach().cpu()
            rel = float((a - b).abs().max() / a.abs().max().clamp_min(1e-300))
            worst = max(worst, rel)
            print(f"  {name:<28s} {rel:9.2e}")
        if worst > 1e-8:
            raise SystemExit(f"the device disagrees with the CPU by {worst:.2e} (relative) in float64")
    finally:
        torch.set_default_dtype(dtype)


def end_to_end(device, tmp):
    """A smoke search, training, PGD evaluation and certification, all on the device."""
    from rnas_lib.attacks import evaluate
    from rnas_lib.data import load_dataset
    from rnas_lib.search import run_search
    from rnas_lib.train import run_training
    from rnas_lib.verify import average_certified_bound

    t = time.perf_counter()
    found = run_search("smoke", "dsrna_cb", out_dir=f"{tmp}/search", device=device, progress=False, epochs=2)
    trained = run_training(found.genotype, "smoke", out_dir=f"{tmp}/train", device=device, progress=False, epochs=5)
    test = load_dataset("digits", False)
    model = trained.model.to(device)
    pgd = evaluate(model, test, ["pgd"], [0.05], limit=200, progress=False)[0]
    cert = average_certified_bound(model, test, n=32, eps_max=0.02, tol=1e-5, progress=False)
    print(f"\n== smoke pipeline on {device}: dsrna_cb search val acc {found.history[-1]['val_acc']:.3f}, "
          f"retrained test acc {trained.test_acc:.3f}, PGD ℓ∞ 0.05 acc {pgd['accuracy']:.3f}, "
          f"mean certified ℓ∞ radius {cert['mean_radius']:.2e}  ({time.perf_counter() - t:.1f} s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:<index>; default: the GPU if there is one")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--check", action="store_true", help="CPU–GPU agreement and a smoke pipeline on the GPU")
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, median of {args.repeats}")
    if args.check and device.type != "cuda":
        raise SystemExit("--check compares a GPU with the CPU: give a CUDA device")
    search_steps(device, args.repeats)
    if not args.skip_train:
        train_step(device, args.repeats)
    if args.check:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            end_to_end(device, tmp)
        agreement(device)


if __name__ == "__main__":
    main()
