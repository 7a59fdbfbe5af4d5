"""Certificates of one batch over several processes: chunks of samples, each certified by a worker.

A bound of an 8×8 image is hundreds of small tensor operations, too small for intra-op threads
(two threads certify the smoke digits ~5 % faster than one) and serialised by Python's lock in a
thread pool, so several cores are used by processes. Workers are forked where the platform
forks safely (Linux: the model is inherited, not pickled), spawned elsewhere; each runs
``torch.get_num_threads() // workers`` intra-op threads. Results come back in batch order and do
not depend on ``workers`` beyond the bracket's resolution (a chunk's cheaper bounds are batched
over that chunk, so their float rounding can move a probe). Batches across machines belong to Dask
(``rnas_lib.sweep``): a Dask worker is a daemonic process, which cannot start children, and there
``workers`` must stay 1.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import torch

#: chunks per worker: small chunks balance the load (one image's full-CROWN search takes 2–10× another's)
CHUNKS_PER_WORKER = 4

_job: tuple | None = None  # (fn, args) of the running pool, set in each worker by ``_start``


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform reports it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_workers(workers) -> int:
    """``workers`` as a count of processes: a positive integer, or −1 for every usable core."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not (workers >= 1 or workers == -1):
        raise ValueError(f"workers must be a positive integer (processes) or -1 (every usable core), got {workers!r}")
    return usable_cores() if workers == -1 else workers


def in_processes(fn, args: tuple, n: int, workers: int) -> torch.Tensor:
    """``fn(*args)`` for a batch of ``n`` samples, where ``args`` holds the batch's tensors (first
    dimension n; None passes through) and any other values: with ``workers`` > 1 the batch is split
    into chunks certified by that many worker processes, the (n,) results concatenated in order."""
    chunk = math.ceil(n / (CHUNKS_PER_WORKER * workers))
    if workers == 1 or n == 1:
        return fn(*args)
    devices = {v.device.type for v in args if isinstance(v, torch.Tensor)}
    if devices != {"cpu"}:
        raise ValueError(f"workers={workers} splits a batch over CPU processes, but it is on {sorted(devices)}: "
                         "pass workers=1 on an accelerator (one process keeps it busy)")
    if multiprocessing.current_process().daemon:
        raise RuntimeError(f"workers={workers} needs child processes, which this daemonic process (a Dask or "
                           "multiprocessing worker) cannot start: pass workers=1 and parallelise across its tasks")
    method = "fork" if sys.platform == "linux" else "spawn"
    threads = max(1, torch.get_num_threads() // workers)
    starts = range(0, n, chunk)
    with ProcessPoolExecutor(min(workers, len(starts)), mp_context=multiprocessing.get_context(method),
                             initializer=_start, initargs=(fn, args, threads)) as pool:
        parts = list(pool.map(_chunk, [(s, min(s + chunk, n)) for s in starts]))
    return torch.cat(parts)


def _start(fn, args, threads: int) -> None:
    global _job
    _job = (fn, args)
    torch.set_num_threads(threads)


def _chunk(bounds: tuple[int, int]) -> torch.Tensor:
    fn, args = _job
    a, b = bounds
    return fn(*(v[a:b] if isinstance(v, torch.Tensor) else v for v in args))
