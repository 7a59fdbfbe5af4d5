"""Time one supernet training step (forward, backward, SGD step on the weights) of rnas's fused
SearchNetwork against the per-op reference supernet (ReferenceSearchNetwork, as in the DARTS code),
with identical weights, and check that both compute the same outputs. The same for the
partial-channel supernets (``--partial-channels`` K, PC-DARTS' 4 by default; 0 skips them): rnas's
fused SearchNetwork(partial_channels=K) against the per-op reference written as PC-DARTS'
model_search.py, and rnas's partial-channel step against the DARTS-style reference step.

Default setting: C=8, 5 cells, 4 nodes, 28×28×1 inputs, batch 64, 10 classes, on the CPU
(``--device cuda`` for a GPU: each step is then synchronised before the clock is read). The two
step functions alternate (interleaved repeats) after warm-up; the median time per step is reported.
On the CPU rnas's cells compute on channels-last tensors; ``--reference-channels-last`` also times
the reference on channels-last tensors (PyTorch's own BatchNorm kernel there has 3e-4 relative
error in its batch variance, see rnas_lib.batchnorm), to show how much of the speed-up is layout.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from rnas_lib.devices import resolve_device
from rnas_lib.reference import ReferenceSearchNetwork
from rnas_lib.supernet import SearchNetwork


def make_step(model, x, y):
    optimizer = torch.optim.SGD(model.weights(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if x.is_cuda:
            torch.cuda.synchronize()

    return step


def make_pair(args, partial_channels, device):
    """A fused SearchNetwork with random α (and β) and a per-op reference with the same weights."""
    kwargs = dict(in_channels=args.in_channels, partial_channels=partial_channels)
    fused = SearchNetwork(args.C, 10, args.layers, **kwargs)
    with torch.no_grad():
        for p in fused.arch_parameters():
            p.normal_()
    reference = ReferenceSearchNetwork(args.C, 10, args.layers, **kwargs).load_from(fused)
    return fused.to(device), reference.to(device)


def output_differences(fused, reference, x) -> tuple[float, float]:
    """max |fused(x) − reference(x)| in train mode, then in eval mode (full float32 on the GPU)."""
    diffs = []
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # compare in full float32; time with the defaults
    for mode in (True, False):
        fused.train(mode), reference.train(mode)
        with torch.no_grad():
            diffs.append((fused(x) - reference(x)).abs().max().item())
    torch.backends.cudnn.allow_tf32 = tf32
    fused.train(), reference.train()
    return diffs[0], diffs[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--C", type=int, default=8)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:<index>")
    parser.add_argument("--partial-channels", type=int, default=4, help="K of the pcdarts pair (0: skip it)")
    parser.add_argument("--reference-channels-last", action="store_true",
                        help="also time the reference with channels-last activations")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    fused, reference = make_pair(args, 1, device)
    x = torch.rand(args.batch, args.in_channels, args.size, args.size).to(device)
    y = torch.randint(0, 10, (args.batch,)).to(device)
    diffs = {"darts": output_differences(fused, reference, x)}
    steps = {"rnas fused": make_step(fused, x, y), "reference": make_step(reference, x, y)}
    K = args.partial_channels
    if K:
        pc_fused, pc_reference = make_pair(args, K, device)
        diffs[f"pcdarts K={K}"] = output_differences(pc_fused, pc_reference, x)
        steps["rnas fused, pcdarts"] = make_step(pc_fused, x, y)
        steps["reference, pcdarts"] = make_step(pc_reference, x, y)
    if args.reference_channels_last:
        reference_cl = copy.deepcopy(reference)
        reference_cl.cells[0].register_forward_pre_hook(
            lambda cell, inputs: tuple(s.contiguous(memory_format=torch.channels_last) for s in inputs[:2]) + inputs[2:])
        steps["reference, channels-last"] = make_step(reference_cl, x, y)
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)

    print(f"supernet training step: C={args.C}, {args.layers} cells, batch {args.batch}, "
          f"{args.in_channels}x{args.size}x{args.size} inputs, "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'}, "
          f"median of {args.repeats} interleaved repeats after {args.warmup} warm-up steps")
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"  {name:24s} {median[name] * 1e3:9.1f} ms/step   (min {min(t) * 1e3:.1f}, max {max(t) * 1e3:.1f})")
    print(f"  speed-up (reference / fused): {median['reference'] / median['rnas fused']:.2f}x")
    if args.reference_channels_last:
        print(f"  speed-up (reference on channels-last / fused): "
              f"{median['reference, channels-last'] / median['rnas fused']:.2f}x")
    if K:
        print(f"  speed-up (pcdarts reference / pcdarts fused, K={K}): "
              f"{median['reference, pcdarts'] / median['rnas fused, pcdarts']:.2f}x")
        print(f"  speed-up (DARTS reference / pcdarts fused, K={K}): "
              f"{median['reference'] / median['rnas fused, pcdarts']:.2f}x")
    for name, (train, evaluation) in diffs.items():
        print(f"  max |output difference| {name}: train mode {train:.2e}, eval mode {evaluation:.2e}")
    worst = max(max(d) for d in diffs.values())
    if worst >= 1e-5:
        raise SystemExit(f"outputs differ by {worst:.2e} >= 1e-5: a fused supernet is wrong")


if __name__ == "__main__":
    main()
