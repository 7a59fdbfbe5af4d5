"""Certified radii and what they cost (rnas_lib.verify), measured in one run.

1. Smoke size: DARTS_V2 retrained at the smoke tier (``trained_model``, reused from runs/ when
   present), the first ``--n`` digits test images. For ℓ∞ and ℓ2: the mean certified radius and the
   wall time of ``certified_radius`` with ibp, crown-ibp, crown-forward, crown and alpha-crown; the
   mean radius at which PGD finds an adversarial example (``attack_radius``, an upper bound of the
   true radius); the certification gap (certified / PGD radius, per image, then averaged); and the
   ratios crown / crown-ibp.
2. ``--tutorial``: two DARTS_V2 networks at MNIST size (28×28) — the tutorial demo network (C=8,
   5 cells, ``rnas_lib.train.demo_network``: 3 epochs on 10,000 images) and the tier's evaluation
   network (C=16, 8 cells, ``--tutorial-epochs`` on 6000 images) — ℓ∞: for each, the crown-ibp,
   crown-forward and PGD radii of the first ``--tutorial-n`` test images and the full-CROWN radii of
   the first ``--tutorial-crown-n``, each with its time per image, the certification gap and the
   process's peak resident memory (``--tutorial-networks``: either network alone).
3. ``--probe-memory N``: full CROWN with and without the failed probes' bounds kept for the smaller
   ones (``rnas_lib.certify.search.KEEP_FAILED_PROBES``), on the first N digits for the smoke
   DARTS_V2 and PC_DARTS networks (ℓ∞ and ℓ2) and on the first ``--probe-memory-mnist`` MNIST test
   images for the tutorial demo network (ℓ∞): the time of each, their ratio and the largest relative
   difference of the radii.
4. ``--row-budget MiB [MiB ...]``: full CROWN's intermediate backward passes with their rows chunked to
   each budget (``rnas_lib.certify.refine.ROW_BUDGET``, bytes per coefficient tensor of a chunk): one
   probe of the tutorial demo network on the first MNIST test image at ℓ∞ ``--row-budget-eps``, and the
   radii of the first ``--row-budget-digits`` digits for the smoke DARTS_V2 network (ℓ∞); the time of
   each, its ratio to the first budget and the largest difference of the margin bounds and radii.
5. ``--local``: full CROWN's intermediate rows carried on the windows of their receptive fields
   (``rnas_lib.certify.local``, nearby neurons chunked together) against rows on the whole map
   (``refine.LOCAL_MIN_PIXELS`` raised above the image), on one probe of the tutorial demo network
   at ℓ∞ ``--row-budget-eps`` for each of the first ``--local`` MNIST test images, the two
   interleaved: the time of each, their ratio and the margin bounds.

6. ``--precision``: where a float32 full-CROWN bound and its float64 re-check part, on one probe of the
   tutorial demo network (the ``--precision-image``-th MNIST test image, ℓ∞ ``--precision-eps``; the
   defaults are a probe of the first image's search whose float32 certificate its re-check refuted):
   the margin bound from scratch in float32 and in float64, a float64 final pass on the float32
   intermediate bounds (what the final pass's round-off alone changes), how many intermediate
   neurons the two precisions leave with a different stability, and the float32 bound after a failed
   probe at ``--precision-kept-eps`` left its bounds in a ``ProbeMemory`` (as the search's probes read them).
7. ``--starts N``: full CROWN's radius search started from the crown-ibp radius refined by crown-forward's,
   against crown-ibp's alone (``search.FORWARD_START_MAX_INPUTS``: the library starts with crown-forward
   on 8×8 digits, not on 28×28 MNIST), on the same cases as ``--probe-memory`` (``--starts-mnist``
   MNIST images of the tutorial demo network): the time of each, their ratio and the largest relative
   difference of the radii.

Radii in pixel units; every radius is a sound certificate (float32, re-checked in float64).
Each batch is certified by ``--workers`` processes (default −1: every usable core; the times are
wall times of the whole batch). Peak memory is that of the largest process (with workers, each
worker holds one chunk's bounds, so the machine holds about that many times as much).
Usage: python benchmarks/bench_verify.py [--n 100] [--threads 2] [--workers -1] [--methods crown-ibp crown]
                                         [--norms inf 2] [--tutorial] [--tutorial-n 10] [--tutorial-crown-n 10]
                                         [--tutorial-networks demo evaluation]
                                         [--skip-smoke] [--probe-memory 20] [--probe-memory-mnist 1]
                                         [--starts 100] [--starts-mnist 2]
                                         [--row-budget 256 32 8 2] [--row-budget-eps 2e-3] [--row-budget-digits 20]
                                         [--local 2] [--precision] [--precision-image 0]
                                         [--precision-eps 2.484392374753952e-3]
                                         [--precision-kept-eps 4.132754169404507e-3]
"""
from __future__ import annotations

import argparse
import math
import resource
import time

import torch

from rnas_lib.certify import refine, search
from rnas_lib.certify.certificates import bound_state, margin_certificate, margin_rows, spec_certificate
from rnas_lib.certify.memory import ProbeMemory
from rnas_lib.certify.settings import Settings
from rnas_lib.certify.state import BoundState
from rnas_lib.data import load_dataset
from rnas_lib.parallel import check_workers
from rnas_lib.train import demo_network, trained_model
from rnas_lib.verify import attack_radius, average_certified_bound, certification_gap, certified_radius

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


def tutorial(n, n_crown, epochs, workers, networks=("demo", "evaluation")):
    if "demo" in networks:
        t = time.perf_counter()
        demo = demo_network("tutorial", progress=False)
        print(f"tutorial demo network: DARTS_V2 (C=8, 5 cells), test accuracy {demo.test_acc:.4f} "
              f"(ready in {time.perf_counter() - t:.0f} s)")
        certify_mnist(demo.model.eval(), n, n_crown, workers)
    if "evaluation" not in networks:
        return
    t = time.perf_counter()
    result = trained_model("DARTS_V2", "tutorial", epochs=epochs, train_limit=6000, progress=False)
    print(f"tutorial evaluation network: DARTS_V2 (C=16, 8 cells), {epochs} epoch(s) on 6000 MNIST images, test "
          f"accuracy {result.test_acc:.4f} (ready in {time.perf_counter() - t:.0f} s)")
    certify_mnist(result.model.eval(), n, n_crown, workers)


def certify_mnist(model, n, n_crown, workers):
    """ℓ∞ radii of the first MNIST test images: crown-ibp, crown-forward and PGD on n, crown on n_crown."""
    test = load_dataset("mnist", False, limit=n)
    pgd_r = attack_radius(model, test.x, test.y, "inf", generator=torch.Generator().manual_seed(0))
    correct = pgd_r > 0
    print(f"  ℓ∞ PGD           mean radius {pgd_r[correct].mean():.4g} over {int(correct.sum())} of {n} images")
    for method, count in (("crown-ibp", n), ("crown-forward", n), ("crown", n_crown)):
        if count < 1:
            continue
        rec = average_certified_bound(model, test, "inf", method, n=count, batch_size=10, progress=False,
                                      workers=workers)
        r = torch.tensor(rec["radii"], dtype=pgd_r.dtype)
        gap = certification_gap(r, pgd_r[:count])[correct[:count]]
        print(f"  ℓ∞ {method:13s} mean radius {rec['mean_radius']:.4g} on {rec['n']} images (gap {gap.mean():.4f})  "
              f"{rec['seconds'] / count:7.1f} s per image  process peak memory {peak_gib():.2f} GiB", flush=True)


def full_crown_cases(n, n_mnist):
    """(label, model, data, norm): the first n digits for the smoke DARTS_V2 and PC_DARTS networks (ℓ∞
    and ℓ2) and the first n_mnist MNIST test images for the tutorial demo network (ℓ∞)."""
    cases = []
    if n > 0:
        digits = load_dataset("digits", False).subset(slice(0, n))
        for arch in ("DARTS_V2", "PC_DARTS"):
            model = trained_model(arch, "smoke", progress=False).model.eval()
            cases += [(f"smoke {arch}, {n} digits, {name}", model, digits, norm) for norm, name in (("inf", "ℓ∞"), (2, "ℓ2"))]
    if n_mnist > 0:
        model = demo_network("tutorial", progress=False).model.eval()
        cases.append((f"tutorial demo network, {n_mnist} MNIST image(s), ℓ∞", model,
                      load_dataset("mnist", False, limit=n_mnist), "inf"))
    return cases


def full_crown_two_ways(cases, ways, workers):
    """Full-CROWN radii of each case two ways, ``ways`` = ((name, set up), (name, set up)), the second
    left set up: the time of each, their ratio and the largest relative difference of the radii."""
    for label, model, data, norm in cases:
        seconds, radii = [], []
        for _, set_up in ways:
            set_up()
            t = time.perf_counter()
            radii.append(certified_radius(model, data.x, data.y, norm, "crown", workers=workers))
            seconds.append(time.perf_counter() - t)
        rel = ((radii[1] - radii[0]).abs() / radii[0].clamp(min=1e-12))[radii[0] > 0]
        print(f"  {label}: {ways[0][0]} {seconds[0]:.1f} s, {ways[1][0]} {seconds[1]:.1f} s "
              f"({seconds[0] / seconds[1]:.2f}x); radii differ by at most {float(rel.max()):.2%} "
              f"(mean radius {float(radii[0].mean()):.4g} vs {float(radii[1].mean()):.4g})", flush=True)


def probe_memory(n, n_mnist, workers):
    """Full CROWN with each image's failed probes kept for its smaller ones, against every probe from scratch."""
    def keep(flag):
        return lambda: setattr(search, "KEEP_FAILED_PROBES", flag)
    full_crown_two_ways(full_crown_cases(n, n_mnist), (("every probe from scratch", keep(False)),
                                                       ("failed probes kept", keep(True))), workers)


def crown_starts(n, n_mnist, workers):
    """Full CROWN's search started from the crown-ibp radius refined by crown-forward's, against
    crown-ibp's alone (``search.FORWARD_START_MAX_INPUTS`` above every image, then 0)."""
    def start(max_inputs):
        return lambda: setattr(search, "FORWARD_START_MAX_INPUTS", max_inputs)
    default = search.FORWARD_START_MAX_INPUTS
    full_crown_two_ways(full_crown_cases(n, n_mnist), (("crown-forward start", start(math.inf)),
                                                       ("crown-ibp start alone", start(0))), workers)
    search.FORWARD_START_MAX_INPUTS = default


def row_budget(budgets_mib, eps, n_digits, workers):
    """Full CROWN with its intermediate rows chunked to each budget: the time, the ratio to the first
    budget's and the largest difference of the results."""
    default = refine.ROW_BUDGET
    mnist = load_dataset("mnist", False, limit=1)
    demo = demo_network("tutorial", progress=False).model.eval()
    digits = load_dataset("digits", False).subset(slice(0, n_digits))
    smoke_net = trained_model("DARTS_V2", "smoke", progress=False).model.eval()
    cases = [(f"tutorial demo network, first MNIST image, one probe at ℓ∞ {eps:g}",
              lambda: margin_certificate(demo, mnist.x, mnist.y, eps, "inf", "crown")[0]),
             (f"smoke DARTS_V2, radii of {len(digits)} digits, ℓ∞",
              lambda: certified_radius(smoke_net, digits.x, digits.y, "inf", "crown", workers=workers))]
    for label, run in cases:
        first, reference = None, None
        for mib in budgets_mib:
            refine.ROW_BUDGET = int(mib * 2**20)
            t = time.perf_counter()
            with torch.no_grad():
                out = run()
            seconds = time.perf_counter() - t
            first = first or seconds
            reference = out if reference is None else reference
            print(f"  {label}: row budget {mib:g} MiB {seconds:7.1f} s ({first / seconds:.2f}x the first), "
                  f"largest difference {float((out - reference).abs().max()):.3g}, "
                  f"process peak memory {peak_gib():.2f} GiB", flush=True)
    refine.ROW_BUDGET = default


def local_rows(eps, n_images):
    """One full-CROWN probe per MNIST image with the intermediate rows on their windows and on the whole map."""
    default = refine.LOCAL_MIN_PIXELS
    demo = demo_network("tutorial", progress=False).model.eval()
    mnist = load_dataset("mnist", False, limit=n_images)
    seconds = {"windows": 0.0, "whole map": 0.0}
    for i in range(n_images):
        margins = {}
        for label, least in (("windows", default), ("whole map", 10**9)):
            refine.LOCAL_MIN_PIXELS = least
            t = time.perf_counter()
            with torch.no_grad():
                margins[label] = float(margin_certificate(demo, mnist.x[i : i + 1], mnist.y[i : i + 1], eps, "inf",
                                                          "crown")[0])
            seconds[label] += time.perf_counter() - t
        print(f"  image {i}: margin bound {margins['windows']:.6g} on windows, {margins['whole map']:.6g} on the "
              f"whole map", flush=True)
    refine.LOCAL_MIN_PIXELS = default
    print(f"  tutorial demo network, {n_images} probe(s) at ℓ∞ {eps:g}: rows on their windows "
          f"{seconds['windows'] / n_images:.1f} s per probe, on the whole map {seconds['whole map'] / n_images:.1f} s "
          f"({seconds['whole map'] / seconds['windows']:.2f}x); process peak memory {peak_gib():.2f} GiB", flush=True)


def precision(image, eps, kept_eps):
    """One full-CROWN probe of the tutorial demo network in float32 and float64, and what parts them."""
    demo = demo_network("tutorial", progress=False).model.eval()
    mnist = load_dataset("mnist", False, limit=image + 1)
    x, y = mnist.x[image : image + 1], mnist.y[image : image + 1]
    settings = Settings(method="crown")
    models = {torch.float32: demo, torch.float64: search.as_float64(demo)}
    states, specs, margins = {}, {}, {}
    with torch.no_grad():
        for dtype, model in models.items():
            t = time.perf_counter()
            states[dtype], _ = bound_state(model, x.to(dtype), eps, settings)
            specs[dtype] = margin_rows(model, x.to(dtype), y, None)
            margins[dtype] = float(spec_certificate(states[dtype], specs[dtype], "crown", settings.alpha_steps)[0].amin())
            print(f"  {dtype}: margin bound {margins[dtype]:.6g} from scratch ({time.perf_counter() - t:.1f} s)", flush=True)
        s32, s64 = states[torch.float32], states[torch.float64]
        mixed = BoundState(s64.g, s64.ball, s64.relu_slope)
        mixed.pre.update({z: (l.double(), u.double()) for z, (l, u) in s32.pre.items()})
        final64 = float(spec_certificate(mixed, specs[torch.float64], "crown", settings.alpha_steps)[0].amin())
        unstable = {dt: {z: (l < 0) & (u > 0) for z, (l, u) in st.pre.items()} for dt, st in states.items()}
        changed = sum(int((unstable[torch.float32][z] != unstable[torch.float64][z]).sum()) for z in s64.pre)
        total = sum(int(v.sum()) for v in unstable[torch.float64].values())
        print(f"  float64 final pass on the float32 intermediate bounds: {final64:.6g} ({abs(final64 - margins[torch.float32]):.2g} "
              f"from float32's); {changed} of the {total} neurons unstable in float64 differ in stability", flush=True)
        memory = ProbeMemory()
        kept = float(margin_certificate(models[torch.float32], x, y, kept_eps, "inf", "crown", memory=memory)[0])
        if memory.rows:
            after = float(margin_certificate(models[torch.float32], x, y, eps, "inf", "crown", memory=memory)[0])
            print(f"  float32 after a failed probe at {kept_eps:g} (margin bound {kept:.4g}) kept its bounds: "
                  f"{after:.6g} ({after - margins[torch.float32]:+.3g} on the bound from scratch); process peak "
                  f"memory {peak_gib():.2f} GiB", flush=True)
        else:
            print(f"  the probe at {kept_eps:g} certified (margin bound {kept:.4g}): it keeps no bounds; pass a larger "
                  "--precision-kept-eps", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--norms", nargs="+", default=["inf", "2"], choices=["inf", "2"])
    parser.add_argument("--tutorial", action="store_true")
    parser.add_argument("--tutorial-epochs", type=int, default=1)
    parser.add_argument("--tutorial-n", type=int, default=10,
                        help="MNIST test images certified by crown-ibp and crown-forward and attacked by PGD")
    parser.add_argument("--tutorial-crown-n", type=int, default=10,
                        help="of those, images certified by full CROWN (minutes each at 28×28)")
    parser.add_argument("--tutorial-networks", nargs="+", default=["demo", "evaluation"], choices=["demo", "evaluation"],
                        help="which of the two tutorial networks --tutorial certifies")
    parser.add_argument("--skip-smoke", action="store_true")
    parser.add_argument("--probe-memory", type=int, default=0,
                        help="digits certified by full CROWN with and without the failed probes' bounds kept")
    parser.add_argument("--probe-memory-mnist", type=int, default=0,
                        help="MNIST images of the tutorial demo network in that comparison (minutes each)")
    parser.add_argument("--starts", type=int, default=0,
                        help="digits certified by full CROWN started from crown-ibp alone and from crown-forward too")
    parser.add_argument("--starts-mnist", type=int, default=0,
                        help="MNIST images of the tutorial demo network in that comparison (minutes each)")
    parser.add_argument("--row-budget", type=float, nargs="+", default=None, metavar="MiB",
                        help="full CROWN timed with its intermediate rows chunked to each of these budgets")
    parser.add_argument("--row-budget-eps", type=float, default=2e-3,
                        help="ℓ∞ radius of the tutorial demo network's probes in that comparison and in --local's")
    parser.add_argument("--row-budget-digits", type=int, default=20,
                        help="digits certified by the smoke DARTS_V2 network in that comparison")
    parser.add_argument("--local", type=int, default=0,
                        help="MNIST images probed by full CROWN with rows on their windows and on the whole map")
    parser.add_argument("--precision", action="store_true",
                        help="one probe in float32 and float64, and what parts the two (minutes)")
    parser.add_argument("--precision-image", type=int, default=0, help="the MNIST test image of that probe")
    parser.add_argument("--precision-eps", type=float, default=2.484392374753952e-3, help="its ℓ∞ radius")
    parser.add_argument("--precision-kept-eps", type=float, default=4.132754169404507e-3,
                        help="the radius of the failed probe whose bounds the float32 probe then reads")
    parser.add_argument("--workers", type=int, default=-1, help="processes certifying each batch (-1: every usable core)")
    args = parser.parse_args()
    if args.precision and not (args.precision_image >= 0 and 0 < args.precision_eps < args.precision_kept_eps):
        parser.error(f"--precision needs an image index ≥ 0 and 0 < --precision-eps < --precision-kept-eps (the failed "
                     f"probe's bounds hold on smaller balls only); got {args.precision_image}, {args.precision_eps}, "
                     f"{args.precision_kept_eps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = check_workers(args.workers)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {workers} worker process(es) per batch")
    if not args.skip_smoke:
        smoke(args.n, args.methods, [n if n == "inf" else 2 for n in args.norms], workers)
    if args.tutorial:
        tutorial(args.tutorial_n, args.tutorial_crown_n, args.tutorial_epochs, workers, args.tutorial_networks)
    if args.probe_memory or args.probe_memory_mnist:
        print("full CROWN: failed probes' bounds kept for the smaller probes, against every probe from scratch")
        probe_memory(args.probe_memory, args.probe_memory_mnist, workers)
    if args.starts or args.starts_mnist:
        print("full CROWN: the search started from crown-ibp then crown-forward, against crown-ibp alone")
        crown_starts(args.starts, args.starts_mnist, workers)
    if args.row_budget:
        print("full CROWN: intermediate backward rows chunked to a memory budget per coefficient tensor")
        row_budget(args.row_budget, args.row_budget_eps, args.row_budget_digits, workers)
    if args.local:
        print("full CROWN: intermediate rows on the windows of their receptive fields, against the whole map")
        local_rows(args.row_budget_eps, args.local)
    if args.precision:
        print("full CROWN in float32 and float64: the same ball, from scratch and after a failed larger probe")
        precision(args.precision_image, args.precision_eps, args.precision_kept_eps)


if __name__ == "__main__":
    main()
