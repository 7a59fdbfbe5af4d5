"""Estimate how long a study takes on this machine, from steps timed here and the study's budgets.

    python benchmarks/bench_study.py studies/tutorial.yaml [--workers 2]

For each search method of the study: one short search (3 steps after the data is loaded) at the
study's sizes gives the seconds per search step; one short training of the DARTS_V2 network gives
the seconds per training step; the evaluation of a few images (``rnas_lib.pipeline.evaluate_network``)
gives seconds per image for each part. These are scaled by the study's budgets (epochs × steps per
epoch, images per evaluation part) and summed over seeds, then divided by the number of workers.
Left out: loading data, the per-epoch accuracy passes, Dask's overhead (seconds per run). One
thread per process, as in a sweep; run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from rnas_lib.data import load_dataset
from rnas_lib.genotypes import PUBLISHED
from rnas_lib.pipeline import EvalSettings, evaluate_network
from rnas_lib.search import run_search
from rnas_lib.sweep import load_study
from rnas_lib.tiers import get_tier, threat_model
from rnas_lib.train import run_training

MEASURED_STEPS = 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", default="studies/smoke.yaml")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    study = load_study(args.study)
    t = get_tier(study.tier, **study.tier_fields)
    settings = EvalSettings.from_dict(study.evaluate)
    tmp = Path(tempfile.mkdtemp(prefix="bench_study_"))

    # budgets of the study
    s_epochs = study.search.get("epochs", t.search_epochs)
    s_batch = study.search.get("batch_size", t.search_batch_size)
    s_limit = study.search.get("search_limit", t.search_limit)
    n_search = len(load_dataset(t.dataset, True, study.data_root, s_limit))
    search_steps = s_epochs * math.ceil((n_search // 2) / s_batch)
    tr_epochs = study.train.get("epochs", t.train_epochs)
    tr_batch = study.train.get("batch_size", t.train_batch_size)
    tr_limit = study.train.get("train_limit", t.train_limit)
    n_train = len(load_dataset(t.dataset, True, study.data_root, tr_limit))
    train_steps = tr_epochs * math.ceil(n_train / tr_batch)
    print(f"study {study.name}: tier {t.name} ({t.dataset}), {len(study.methods)} architectures × "
          f"{len(study.seeds)} seeds; search {search_steps} steps, training {train_steps} steps per run")

    # one search step per method
    search_options = {k: v for k, v in study.search.items() if k not in ("epochs", "search_limit")}
    step_seconds = {}
    for method in study.methods:
        if method in PUBLISHED or method == "random":
            continue
        result = run_search(t.name, method, 0, data_root=study.data_root, out_dir=tmp / method, resume=False,
                            progress=False, **study.tier_fields, **search_options, epochs=1,
                            search_limit=2 * MEASURED_STEPS * s_batch)
        step_seconds[method] = result.history[0]["seconds"] / MEASURED_STEPS
        print(f"  search step {method:15s} {step_seconds[method]:7.3f} s", flush=True)

    # one training step, then the evaluation of a few images, on the trained DARTS_V2 network
    train_options = {k: v for k, v in study.train.items() if k not in ("epochs", "train_limit")}
    trained = run_training("DARTS_V2", t.name, 0, data_root=study.data_root, out_dir=tmp / "train", resume=False,
                           progress=False, **study.tier_fields, **train_options, epochs=1,
                           train_limit=MEASURED_STEPS * tr_batch)
    train_step = trained.history[0]["seconds"] / MEASURED_STEPS
    print(f"  training step (DARTS_V2)  {train_step:7.3f} s", flush=True)
    small = replace(settings, n_eval=4, n_cw=2, n_autoattack=2, n_certify=2)
    test = load_dataset(t.dataset, False, study.data_root, t.test_limit)
    _, _, timings = evaluate_network(trained.model.eval(), test, small, threat_model(t.name))
    scale = {"fgsm_pgd": settings.n_eval / small.n_eval, "cw": settings.n_cw / small.n_cw,
             "autoattack": settings.n_autoattack / small.n_autoattack,
             "certify_linf": settings.n_certify / small.n_certify, "certify_l2": settings.n_certify / small.n_certify}
    evaluation = {k: v * scale[k] for k, v in timings.items()}
    print("  evaluation per run: " + ", ".join(f"{k} {v:.0f} s" for k, v in evaluation.items()), flush=True)

    # per run and in all
    eval_total, train_total = sum(evaluation.values()), train_step * train_steps
    total = 0.0
    print(f"\n{'architecture':16s} {'search':>9s} {'training':>9s} {'evaluation':>11s} {'run':>9s}")
    for method in study.methods:
        search = step_seconds.get(method, 0.0) * search_steps
        run = search + train_total + eval_total
        total += run * len(study.seeds)
        print(f"{method:16s} {search:8.0f}s {train_total:8.0f}s {eval_total:10.0f}s {run:8.0f}s")
    shutil.rmtree(tmp)
    print(f"\nall {len(study.methods) * len(study.seeds)} runs: {total / 3600:.2f} h of one worker; "
          f"{total / 3600 / args.workers:.2f} h on {args.workers} workers (estimate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
