"""Studies: grids of runs executed on Dask distributed, and the table of what finished.

A study file (YAML or JSON, under ``studies/``) names one grid::

    name: smoke                 # the run folders: runs/<tier>/studies/<name>/<run id>/
    tier: smoke
    kind: pipeline              # pipeline: rnas_lib.pipeline (search → retrain → evaluate) per (arch, seed)
    methods: [darts, dsrna_cb, DARTS_V2]   # search methods and/or published cells
    seeds: [0, 1, 2, 3, 4]
    search: {epochs: 6}         # run_search overrides       (pipeline only)
    train: {epochs: 15}         # run_training overrides     (pipeline only)
    training: certified         # the retraining regime (rnas_lib.trainings; pipeline only): one for all,
                                # or per architecture {darts: [standard, certified], DARTS_V2: pgd}
    evaluate: {n_certify: 50}   # rnas_lib.pipeline.EvalSettings (pipeline only)
    tier_fields: {}             # tier overrides for every stage, e.g. {dataset: fashion_mnist}
    data_root: null             # where the workers find the data (None: RNAS_DATA_ROOT, else data/)

or, for papermill runs of a notebook (``kind: notebook``)::

    notebook: "05"              # a workbook notebook (number prefix) or a path to a .ipynb
    methods: [darts, dsrna_jb]  # injected as the parameter `method` (optional)
    grid: {gamma: [0.01, 0.1]}  # more parameters, crossed with methods and seeds
    parameters: {epochs: 2}     # fixed parameters of every run

or, to test whether the search metrics rank architectures (``kind: metric_validation``, one run per
architecture and seed: ``rnas_lib.metric_validation.measure_architecture``)::

    architectures: {n_random: 100, searched_from: results/smoke}   # metric_validation.SampleSpec
    train: {epochs: 15}         # run_training overrides: the fixed training budget
    evaluate: {n_certify: 16}   # metric_validation.ValidationSettings

Every run is one Dask task (``execute``) in its own folder. A run is *finished* when the folder
holds its completion record ``record.json`` whose ``run`` entry equals the run's configuration:
``run_study`` skips it on a rerun (resume by run folder). A run that raises leaves ``error.json``
(its configuration, the error and the traceback) and the others go on; a rerun tries it again.
A folder holding another configuration under the same run id stops ``run_study`` before anything
starts (rename the study or delete the folder), unless only the evaluation settings differ: then
the run is *re-evaluated* (``run_state`` "stale"): its finished search and training checkpoints are
loaded, never run again, and only the evaluation is computed. Every superseded completion record
is kept as ``evaluations/<config_key of its configuration>.json`` in the run folder, so switching
back to earlier evaluation settings restores that evaluation instead of computing it again.
``--evaluate KEY=VALUE`` (or ``with_evaluation``) overrides the study file's ``evaluate`` settings
for one invocation, e.g. ``--evaluate certify_method=crown --evaluate n_certify=32``.

Notebook runs execute in a fresh papermill process each (``OMP_NUM_THREADS=1``, ``RNAS_RUNS_DIR`` =
the run folder's ``runs/``, so runs never share search or training folders); the executed notebook
is saved in the run folder.

Where the tasks run (``make_client``): a ``LocalCluster`` by default (one worker process per core,
one thread each; nothing to start), an existing scheduler by address (``dask scheduler`` and
``dask worker`` started elsewhere, with rnas installed and the data reachable on every worker), or
a SLURM cluster through dask-jobqueue (``pip install dask-jobqueue``; the study file's ``slurm:``
section is passed to ``SLURMCluster``: queue, account, walltime, memory, …; one single-core job per
worker). Dask schedules; rnas only lists the tasks.

``aggregate`` turns a study folder into one pandas table (``TABLE_COLUMNS``) and ``curves`` into
the accuracy-vs-ε records; ``write_results`` saves both with the command, commit, date and machine
that produced them (``results/<study>/``). Command line::

    python -m rnas_lib.sweep studies/smoke.yaml [--workers N] [--address tcp://host:8786] [--slurm N]
                             [--evaluate KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import PROJECT_ROOT
from .display import progress as progress_bar
from .runs import config_key, load_json, runs_root, save_json

#: each kind of study and the keys that belong to it alone
KIND_KEYS = {"pipeline": ("methods", "search", "train", "training", "evaluate"),
             "notebook": ("notebook", "methods", "grid", "parameters"),
             "metric_validation": ("architectures", "train", "evaluate")}
KINDS = tuple(KIND_KEYS)
STUDY_KEYS = {"name", "tier", "kind", "seeds", "tier_fields", "data_root", "slurm", "description",
              *(key for keys in KIND_KEYS.values() for key in keys)}


@dataclass(frozen=True)
class Study:
    name: str
    tier: str
    kind: str
    seeds: tuple
    methods: tuple = ()
    notebook: str | None = None
    grid: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # arch → its retraining regimes (pipeline; none listed: standard)
    evaluate: dict = field(default_factory=dict)
    architectures: dict = field(default_factory=dict)
    tier_fields: dict = field(default_factory=dict)
    data_root: str | None = None
    slurm: dict = field(default_factory=dict)
    description: str = ""
    source: str | None = None  # the file it was read from


@dataclass(frozen=True)
class Run:
    """One task of a study: its configuration (``config``) and its folder."""
    run_id: str
    folder: str
    config: dict


def load_study(path) -> Study:
    """Read and check a study file (.yaml, .yml or .json)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no study file {path}; the project's studies are in studies/ "
                                f"({', '.join(p.name for p in sorted((PROJECT_ROOT / 'studies').glob('*.*')))})")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        spec = yaml.safe_load(path.read_text())
    elif path.suffix == ".json":
        spec = json.loads(path.read_text())
    else:
        raise ValueError(f"study file {path} must end in .yaml, .yml or .json")
    return study_from_dict(spec, source=str(path))


def study_from_dict(spec: dict, source: str | None = None) -> Study:
    """A ``Study`` from its dictionary; every mistake is one ValueError naming the key and what is allowed."""
    from .pipeline import EvalSettings, architectures, check_stage
    from .tiers import get_tier

    where = f" in {source}" if source else ""
    if not isinstance(spec, dict):
        raise ValueError(f"a study is a mapping of keys ({', '.join(sorted(STUDY_KEYS))}), got {type(spec).__name__}{where}")
    unknown = set(spec) - STUDY_KEYS
    if unknown:
        raise ValueError(f"unknown study keys {sorted(unknown)}{where}; allowed: {', '.join(sorted(STUDY_KEYS))}")
    for key in ("name", "tier", "seeds"):
        if key not in spec:
            raise ValueError(f"the study{where} has no {key!r}")
    name = str(spec["name"])
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"study name {name!r}{where} may hold only letters, digits, '_', '.', '-' (it names a folder)")
    get_tier(spec["tier"], **spec.get("tier_fields", {}))
    kind = spec.get("kind", "pipeline")
    if kind not in KINDS:
        raise ValueError(f"unknown study kind {kind!r}{where}; allowed: {', '.join(KINDS)}")
    seeds = spec["seeds"]
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) != len(seeds)):
        raise ValueError(f"seeds{where} must be a non-empty list of distinct integers, got {seeds!r}")
    methods = list(spec.get("methods") or [])
    for key in ("grid", "parameters", "search", "train", "evaluate", "architectures", "tier_fields", "slurm"):
        if not isinstance(spec.get(key, {}), dict):
            raise ValueError(f"{key!r}{where} must be a mapping, got {spec[key]!r}")
    misplaced = [k for k in spec if k in STUDY_KEYS and k not in KIND_KEYS[kind]
                 and any(k in keys for keys in KIND_KEYS.values())]
    if misplaced:
        raise ValueError(f"keys {misplaced}{where} do not belong to kind: {kind}, which uses "
                         f"{', '.join(KIND_KEYS[kind])}")
    if kind == "metric_validation":
        from .metric_validation import SampleSpec, ValidationSettings

        SampleSpec.from_dict(spec.get("architectures"))
        check_stage("train", spec.get("train", {}))
        ValidationSettings.from_dict(spec.get("evaluate"))
    elif kind == "pipeline":
        if not methods:
            raise ValueError(f"a pipeline study{where} needs methods: any of {', '.join(architectures())}")
        bad = [m for m in methods if m not in architectures()]
        if bad:
            raise ValueError(f"unknown methods {bad}{where}; allowed: {', '.join(architectures())}")
        check_stage("search", spec.get("search", {}))
        check_stage("train", spec.get("train", {}))
        EvalSettings.from_dict(spec.get("evaluate"))
        training = regimes(spec.get("training", "standard"), methods, where)
    else:
        if "notebook" not in spec:
            raise ValueError(f"a notebook study{where} needs notebook: a workbook number (e.g. \"05\") or a .ipynb path")
        notebook_path(spec["notebook"])
        for key, values in spec.get("grid", {}).items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid entry {key!r}{where} must be a non-empty list of values, got {values!r}")
        clash = {"tier", "seed", "method"} & (set(spec.get("grid", {})) | set(spec.get("parameters", {})))
        if clash:
            raise ValueError(f"{sorted(clash)}{where} are set by the study itself (tier, seeds, methods), "
                             "not by grid or parameters")
    return Study(name=name, tier=spec["tier"], kind=kind, seeds=tuple(seeds), methods=tuple(methods),
                 training=training if kind == "pipeline" else {},
                 notebook=str(spec["notebook"]) if "notebook" in spec else None,
                 grid=dict(spec.get("grid", {})), parameters=dict(spec.get("parameters", {})),
                 search=dict(spec.get("search", {})), train=dict(spec.get("train", {})),
                 evaluate=dict(spec.get("evaluate", {})), architectures=dict(spec.get("architectures", {})),
                 tier_fields=dict(spec.get("tier_fields", {})),
                 data_root=spec.get("data_root"), slurm=dict(spec.get("slurm", {})),
                 description=str(spec.get("description", "")), source=source)


def regimes(training, methods, where: str = "") -> dict:
    """{arch: (regime, …)} from a study's ``training``: one regime (or a list) for every architecture,
    or a mapping arch → regime(s) (architectures it leaves out: standard)."""
    from .trainings import TRAININGS, check_training

    def listed(value, arch):
        values = value if isinstance(value, list) else [value]
        if not values or len(set(values)) < len(values):
            raise ValueError(f"training{where} of {arch} must name distinct regimes ({', '.join(TRAININGS)}), got {value!r}")
        for v in values:
            try:
                check_training(v)
            except ValueError as err:
                raise ValueError(f"training{where} of {arch}: {err}") from None
        return tuple(values)

    if not isinstance(training, dict):
        return {m: listed(training, m) for m in methods}
    stray = sorted(set(training) - set(methods))
    if stray:
        raise ValueError(f"training{where} names architectures {stray} that the study does not list in methods")
    return {m: listed(training.get(m, "standard"), m) for m in methods}


def notebook_path(notebook) -> Path:
    """A workbook notebook by number prefix ("05"), or a .ipynb path (relative to the project)."""
    from .runs import notebooks

    path = Path(str(notebook))
    for candidate in (path, PROJECT_ROOT / path):
        if candidate.suffix == ".ipynb" and candidate.exists():
            return candidate.resolve()
    matches = [p for p in notebooks() if p.stem.startswith(str(notebook))]
    if len(matches) != 1:
        raise FileNotFoundError(f"no notebook {notebook!r}; give a .ipynb path or one of "
                                + ", ".join(p.stem for p in notebooks()))
    return matches[0]


def _project_relative(path: Path) -> str:
    """``path`` relative to the project when inside it (the configuration then names no machine path)."""
    try:
        return str(path.relative_to(PROJECT_ROOT.resolve()))
    except ValueError:
        return str(path)


def study_dir(study: Study, root=None) -> Path:
    """``runs/<tier>/studies/<name>``: the study's run folders."""
    return Path(root or runs_root()) / study.tier / "studies" / study.name


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", json.dumps(value) if not isinstance(value, str) else value).strip("-")


def expand(study: Study, root=None) -> list[Run]:
    """The study's runs: methods × seeds (pipeline), methods × grid × seeds (notebook), or sampled
    architectures × seeds (metric_validation)."""
    from .tiers import get_tier

    base = study_dir(study, root)
    runs = []
    # the tier's resolved preset is part of a run's identity: a changed tier default (a search
    # budget, a learning rate) turns a finished run into a conflict instead of a stale result
    preset = get_tier(study.tier, **study.tier_fields).as_dict()
    if study.kind == "metric_validation":
        from .metric_validation import SampleSpec, sample_architectures

        for arch, seed in itertools.product(
                sample_architectures(SampleSpec.from_dict(study.architectures), preset["steps"], preset["multiplier"]),
                study.seeds):
            config = {"study": study.name, "kind": study.kind, "tier": study.tier, **arch, "seed": seed,
                      "train": study.train, "evaluate": study.evaluate, "tier_fields": study.tier_fields,
                      "tier_preset": preset}
            runs.append(Run(f"{arch['arch']}_seed{seed}", str(base / f"{arch['arch']}_seed{seed}"), config))
        return runs
    if study.kind == "pipeline":
        for method in study.methods:
            for training, seed in itertools.product(study.training.get(method, ("standard",)), study.seeds):
                config = {"study": study.name, "kind": "pipeline", "tier": study.tier, "arch": method, "seed": seed,
                          "search": study.search, "train": study.train, "evaluate": study.evaluate,
                          "tier_fields": study.tier_fields, "tier_preset": preset}
                run_id = f"{method}_seed{seed}"
                if training != "standard":  # a standard run keeps the configuration and id it always had
                    config["training"] = training
                    run_id = f"{method}-{training}_seed{seed}"
                runs.append(Run(run_id, str(base / run_id), config))
        return runs
    keys = list(study.grid)
    for method in (study.methods or (None,)):
        for values in itertools.product(*(study.grid[k] for k in keys)):
            for seed in study.seeds:
                params = {**study.parameters, **dict(zip(keys, values))}
                if method is not None:
                    params["method"] = method
                parts = ([method] if method is not None else []) + [f"{k}={_slug(v)}" for k, v in zip(keys, values)]
                run_id = "-".join(parts + [f"seed{seed}"])
                config = {"study": study.name, "kind": "notebook", "tier": study.tier, "seed": seed,
                          "notebook": _project_relative(notebook_path(study.notebook)), "parameters": params}
                runs.append(Run(run_id, str(base / run_id), config))
    return runs


def with_evaluation(study: Study, overrides: dict) -> Study:
    """``study`` with its ``evaluate`` settings updated by ``overrides`` (checked like a study file's)."""
    from dataclasses import replace

    from .pipeline import EvalSettings

    if not overrides:
        return study
    if study.kind != "pipeline":
        raise ValueError(f"evaluation overrides {sorted(overrides)} apply to pipeline studies; {study.name} is a "
                         f"{study.kind} study (change its study file instead)")
    evaluate = {**study.evaluate, **overrides}
    EvalSettings.from_dict(evaluate)
    return replace(study, evaluate=evaluate)


def _only_evaluation_differs(stored: dict, config: dict) -> bool:
    drop = lambda c: {k: v for k, v in c.items() if k != "evaluate"}  # noqa: E731
    return config.get("kind") == "pipeline" and drop(stored) == drop(config)


def run_state(run: Run) -> str:
    """"finished" (a completion record of this configuration), "stale" (a completion record that
    differs only in the evaluation settings: re-evaluate from the checkpoints), "failed" (an error
    record), "conflict" (a record of another configuration) or "new"."""
    folder = Path(run.folder)
    record = folder / "record.json"
    if record.exists():
        stored = load_json(record)["run"]
        if stored == run.config:
            return "finished"
        return "stale" if _only_evaluation_differs(stored, run.config) else "conflict"
    error = folder / "error.json"
    if error.exists():
        stored = load_json(error)["run"]
        return "failed" if stored == run.config or _only_evaluation_differs(stored, run.config) else "conflict"
    return "new"


def evaluation_archive(run: Run, config: dict | None = None) -> Path:
    """Where the completion record of ``config`` (default: the run's) is kept once superseded."""
    return Path(run.folder) / "evaluations" / f"{config_key(config or run.config)}.json"


def retire_evaluation(run: Run) -> bool:
    """Make way for the re-evaluation of a "stale" run: keep its completion record in the archive,
    then restore the archived evaluation of the run's own configuration if there is one. Returns
    True when restored (the run is finished), False when the evaluation must be computed."""
    folder = Path(run.folder)
    old = load_json(folder / "record.json")
    save_json(old, evaluation_archive(run, old["run"]))
    (folder / "record.json").unlink()
    kept = evaluation_archive(run)
    if kept.exists() and load_json(kept)["run"] == run.config:
        save_json(load_json(kept), folder / "record.json")
        return True
    return False


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def execute(run: Run, data_root=None, trained_only: bool = False) -> dict:
    """Execute one run (in a Dask worker); write its completion or error record; never raise.
    ``trained_only``: a re-evaluation (``rnas_lib.pipeline.run_pipeline``'s trained_only).

    Returns {"run_id", "status": "finished" | "failed", "seconds", "error"}."""
    import torch

    folder = Path(run.folder)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        if run.config["kind"] == "pipeline":
            from .pipeline import run_pipeline

            c = run.config
            result = run_pipeline(c["arch"], c["seed"], c["tier"], folder, c["search"], c["train"], c["evaluate"],
                                  c["tier_fields"], data_root=data_root, trained_only=trained_only,
                                  training=c.get("training", "standard"))
        elif run.config["kind"] == "metric_validation":
            from .metric_validation import measure_architecture

            result = measure_architecture(run.config, folder, data_root)
        else:
            result = _execute_notebook(run, data_root)
    except Exception as err:  # recorded, so that the other runs go on
        seconds = time.perf_counter() - t0
        save_json({"run": run.config, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
                   "seconds": seconds, "date": _now(), "host": platform.node()}, folder / "error.json")
        return {"run_id": run.run_id, "status": "failed", "seconds": seconds, "error": f"{type(err).__name__}: {err}"}
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    save_json({"run": run.config, "result": result, "seconds": seconds, "date": _now(), "host": platform.node()},
              folder / "record.json")
    (folder / "error.json").unlink(missing_ok=True)
    return {"run_id": run.run_id, "status": "finished", "seconds": seconds, "error": None}


def _execute_notebook(run: Run, data_root=None) -> dict:
    """papermill in a fresh process: one thread, the run folder's own runs/ root."""
    import yaml

    folder = Path(run.folder)
    source = notebook_path(run.config["notebook"])
    output = folder / source.name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RNAS_RUNS_DIR": str(folder / "runs")}
    if data_root is not None:
        env["RNAS_DATA_ROOT"] = str(data_root)
    parameters = {"tier": run.config["tier"], "seed": run.config["seed"], **run.config["parameters"]}
    command = [sys.executable, "-m", "papermill", str(source), str(output), "-y", yaml.safe_dump(parameters),
               "--cwd", str(source.parent), "-k", "python3", "--no-progress-bar"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"papermill exited with {done.returncode} (executed copy: {output}): "
                           + "\n".join(lines[-15:]))
    return {"notebook": str(output.relative_to(folder)), "parameters": parameters}


def make_client(address: str | None = None, n_workers: int | None = None, processes: bool = True,
                slurm: dict | None = None, **cluster_kwargs):
    """A Dask ``Client``: to the scheduler at ``address``; to a SLURM cluster of ``n_workers``
    single-core jobs when ``slurm`` is given (dask-jobqueue's ``SLURMCluster(**slurm)``); else to a
    new ``LocalCluster`` with ``n_workers`` (default: one per core) single-threaded workers."""
    from distributed import Client, LocalCluster

    if address is not None:
        return Client(address)
    if slurm is not None:
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as err:
            raise ImportError("the SLURM cluster needs dask-jobqueue: pip install dask-jobqueue==0.9.0") from err
        options = {"cores": 1, "processes": 1, "memory": "4GB",
                   "job_script_prologue": ["export OMP_NUM_THREADS=1"], **slurm}
        cluster = SLURMCluster(**options)
        cluster.scale(jobs=n_workers or 1)
        return Client(cluster)
    n_workers = n_workers or os.cpu_count() or 1
    if processes:
        cluster_kwargs.setdefault("env", {"OMP_NUM_THREADS": "1"})
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes, **cluster_kwargs)
    return Client(cluster)


def run_study(study: Study, client=None, progress: bool = True, root=None, **client_kwargs) -> dict:
    """Execute the study's unfinished runs on ``client`` (else ``make_client(**client_kwargs)``, closed
    after); skip finished ones. Returns {"finished", "failed", "skipped": [run ids], "errors": {id: text},
    "seconds", "workers"}."""
    from distributed import as_completed

    runs = expand(study, root)
    states = {run.run_id: run_state(run) for run in runs}
    conflicts = [run.folder for run in runs if states[run.run_id] == "conflict"]
    if conflicts:
        raise ValueError(f"{len(conflicts)} run folders hold runs of another configuration (e.g. {conflicts[0]}); "
                         "give the study another name, or delete those folders to run them again (a change of the "
                         "evaluate settings alone is no conflict: such runs are re-evaluated from their checkpoints)")
    restored = [run.run_id for run in runs if states[run.run_id] == "stale" and retire_evaluation(run)]
    todo = [run for run in runs if states[run.run_id] != "finished" and run.run_id not in restored]
    summary = {"finished": [], "failed": [], "skipped": [r.run_id for r in runs if states[r.run_id] == "finished"],
               "restored": restored, "reevaluated": [r.run_id for r in todo if states[r.run_id] == "stale"],
               "errors": {}, "seconds": 0.0, "workers": 0}
    if progress:
        print(f"study {study.name}: {len(runs)} runs, {len(summary['skipped'])} finished before, {len(restored)} "
              f"evaluations restored, {len(todo)} to run ({len(summary['reevaluated'])} of them re-evaluations "
              "from their checkpoints)")
    if not todo:
        return summary
    own = client is None
    if own:
        client = make_client(**client_kwargs)
    t0 = time.perf_counter()
    try:
        summary["workers"] = len(client.scheduler_info().get("workers", {}))
        if progress:
            print(f"Dask dashboard: {client.dashboard_link}")
        futures = {client.submit(execute, run, study.data_root, states[run.run_id] == "stale", pure=False,
                                 key=f"{study.name}-{run.run_id}-{os.urandom(4).hex()}"): run for run in todo}
        bar = progress_bar(total=len(todo), desc=study.name, disable=not progress, unit="run")
        for future in as_completed(futures):
            run = futures[future]
            try:
                outcome = future.result()
            except Exception as err:  # the task itself died (e.g. its worker was killed)
                outcome = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
                save_json({"run": run.config, "error": outcome["error"], "traceback": traceback.format_exc(),
                           "date": _now()}, Path(run.folder) / "error.json")
            summary[outcome["status"]].append(run.run_id)
            if outcome["status"] == "failed":
                summary["errors"][run.run_id] = outcome["error"]
            bar.update()
            bar.set_postfix(failed=len(summary["failed"]))
        bar.close()
    finally:
        summary["seconds"] = time.perf_counter() - t0
        if own:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
    return summary


# --------------------------------------------------------------------------- the table
#: the columns of ``aggregate``'s table; every ``*_acc`` of an attack has its ``*_eps`` next to it
TABLE_COLUMNS = (
    "study", "arch", "training", "seed", "tier", "dataset", "published", "genotype", "search_seconds", "train_seconds",
    "evaluate_seconds", "params", "test_acc", "n_eval", "clean_acc",
    "fgsm_linf_eps", "fgsm_linf_acc", "pgd_linf_eps", "pgd_linf_acc", "pgd_l2_eps", "pgd_l2_acc",
    "cw_l2_eps", "cw_l2_acc", "autoattack_linf_eps", "autoattack_linf_acc",
    "cert_method", "cert_n", "cert_radius_linf", "cert_radius_l2", "cert_acc_linf", "cert_acc_l2",
    "skip_normal", "skip_reduce",
)


def cert_column(method: str, norm: str) -> str:
    """The table column of the average certified radius by ``method`` in ``norm`` ("linf" | "l2"),
    e.g. ``cert_radius_linf_crown_forward``; ``cert_radius_<norm>`` alone is the headline method's
    (``cert_method``), repeated under its own name."""
    return f"cert_radius_{norm}_{method.replace('-', '_')}"


def cert_columns(table) -> dict:
    """{method: (ℓ∞ column, ℓ2 column)} of every certificate method in ``table``, cheapest first."""
    from .pipeline import CERTIFY_METHODS

    return {m: (cert_column(m, "linf"), cert_column(m, "l2")) for m in CERTIFY_METHODS
            if cert_column(m, "linf") in table.columns}


def _certified_columns(certified: dict) -> dict:
    """The per-method radius and time columns of one run's ``certified`` record (headline and ``also``)."""
    methods = {certified["linf"]["method"]: certified, **certified.get("also", {})}
    row = {}
    for method, records in methods.items():
        for key in ("linf", "l2"):
            row[cert_column(method, key)] = records[key]["mean_radius"]
        row[f"cert_seconds_{method.replace('-', '_')}"] = records["linf"]["seconds"] + records["l2"]["seconds"]
    return row


def _certified_fraction(record: dict, eps: float) -> float:
    """Certified accuracy at ε of a certified-radius record: the fraction of its images whose
    certified radius reaches ε (a misclassified image has radius 0)."""
    return sum(r >= eps for r in record["radii"]) / len(record["radii"])


def _pick(records, attack, norm, eps) -> tuple[float, int]:
    for r in records:
        if r["attack"] == attack and r["norm"] == norm and abs(r["eps"] - eps) < 1e-12:
            return r["accuracy"], r["n"]
    raise ValueError(f"no {attack} record at ε={eps} (ℓ{norm}) in the run; was it evaluated with another threat model?")


def _row(record: dict) -> dict:
    res, threat = record["result"], record["result"]["threat"]
    attacks = res["attacks"]
    clean, n_eval = _pick(attacks, "fgsm", "inf", 0.0)
    return {
        "study": record["run"]["study"], "arch": res["arch"], "training": res.get("training", "standard"),
        "seed": res["seed"], "tier": res["tier"],
        "dataset": res["dataset"], "published": res["published"], "genotype": json.dumps(res["genotype"]),
        "search_seconds": res["search_seconds"], "train_seconds": res["train_seconds"],
        "evaluate_seconds": res["evaluate_seconds"], "params": res["params"], "test_acc": res["test_acc"],
        "n_eval": n_eval, "clean_acc": clean,
        "fgsm_linf_eps": threat["linf"], "fgsm_linf_acc": _pick(attacks, "fgsm", "inf", threat["linf"])[0],
        "pgd_linf_eps": threat["linf"], "pgd_linf_acc": _pick(attacks, "pgd", "inf", threat["linf"])[0],
        "pgd_l2_eps": threat["l2"], "pgd_l2_acc": _pick(attacks, "pgd", 2, threat["l2"])[0],
        "cw_l2_eps": threat["l2"], "cw_l2_acc": _pick(attacks, "cw", 2, threat["l2"])[0],
        "autoattack_linf_eps": threat["linf"],
        "autoattack_linf_acc": _pick(attacks, "autoattack", "inf", threat["linf"])[0],
        "cert_method": res["certified"]["linf"]["method"], "cert_n": res["certified"]["linf"]["n"],
        "cert_radius_linf": res["certified"]["linf"]["mean_radius"],
        "cert_radius_l2": res["certified"]["l2"]["mean_radius"],
        "cert_acc_linf": _certified_fraction(res["certified"]["linf"], threat["linf"]),
        "cert_acc_l2": _certified_fraction(res["certified"]["l2"], threat["l2"]),
        "skip_normal": res["skip_connections"]["normal"], "skip_reduce": res["skip_connections"]["reduce"],
        **_certified_columns(res["certified"]),
    }


def _records(folder) -> list[dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no study folder {folder}; run the study first (make sweep STUDY=studies/<name>.yaml)")
    return [load_json(p) for p in sorted(folder.glob("*/record.json"))]


def aggregate(folder, out=None):
    """One row per finished run under the study folder ``folder``, sorted by arch and seed; with
    ``out``, also written as ``<out>/table.csv`` and ``table.json``. Pipeline runs: ``TABLE_COLUMNS``,
    then the radius (ℓ∞, ℓ2) and time of every certificate method the runs used (``cert_column``);
    metric-validation runs: ``rnas_lib.metric_validation.TABLE_COLUMNS``."""
    import pandas as pd

    from . import metric_validation
    from .pipeline import CERTIFY_METHODS

    records = _records(folder)
    if records and all(r["run"]["kind"] == "metric_validation" for r in records):
        table = pd.DataFrame([metric_validation.table_row(r) for r in records],
                             columns=list(metric_validation.TABLE_COLUMNS))
    else:
        rows = [_row(r) for r in records if r["run"]["kind"] == "pipeline"]
        used = [m for m in CERTIFY_METHODS if any(cert_column(m, "linf") in r for r in rows)]
        extra = [c for m in used for c in (cert_column(m, "linf"), cert_column(m, "l2"),
                                           f"cert_seconds_{m.replace('-', '_')}")]
        table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS) + extra)
    table = table.sort_values(["arch", "training", "seed"] if "training" in table.columns else ["arch", "seed"],
                              kind="stable").reset_index(drop=True)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "table.csv", index=False)
        save_json(json.loads(table.to_json(orient="records")), out / "table.json")
    return table


def curves(folder, out=None):
    """Every attack record of every finished pipeline run (arch, training, seed, attack, norm, eps, n, accuracy):
    the accuracy-vs-ε data; with ``out``, also written as ``<out>/curves.csv``."""
    import pandas as pd

    rows = [{"arch": r["result"]["arch"], "training": r["result"].get("training", "standard"),
             "seed": r["result"]["seed"], "attack": a["attack"],
             "norm": str(a["norm"]), "eps": a["eps"], "n": a["n"], "accuracy": a["accuracy"]}
            for r in _records(folder) if r["run"]["kind"] == "pipeline" for a in r["result"]["attacks"]]
    frame = pd.DataFrame(rows, columns=["arch", "training", "seed", "attack", "norm", "eps", "n", "accuracy"])
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        frame.to_csv(Path(out) / "curves.csv", index=False)
    return frame


def load_results(path):
    """(table, curves, provenance) of a finished study: ``results/<name>/`` as ``write_results``
    wrote it (provenance from its file), or a study's run folder ``runs/<tier>/studies/<name>/``
    (aggregated now; provenance None)."""
    import pandas as pd

    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = PROJECT_ROOT / path
    if (path / "table.csv").exists():
        provenance = load_json(path / "provenance.json") if (path / "provenance.json").exists() else None
        curves_path = path / "curves.csv"
        frame = pd.read_csv(curves_path, dtype={"norm": str}) if curves_path.exists() else None
        return pd.read_csv(path / "table.csv"), frame, provenance
    if path.is_dir() and any(path.glob("*/record.json")):
        return aggregate(path), curves(path), None
    raise FileNotFoundError(f"{path} holds neither a study's table.csv (results/<name>/) nor finished runs "
                            "(runs/<tier>/studies/<name>/); run make sweep STUDY=studies/<name>.yaml first")


def machine_facts() -> dict:
    """What ran the study: host, OS, Python, CPU count, torch and Dask versions, the GPU if any."""
    import dask
    import torch

    facts = {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
             "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
             "torch": torch.__version__, "dask": dask.__version__}
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def git_commit() -> dict:
    """The project's commit and whether the tree had uncommitted changes (None outside git)."""
    def git(*args):
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def write_results(study: Study, out, command: str, summary: dict | None = None, root=None) -> Path:
    """``<out>/table.csv``, ``table.json``, ``curves.csv`` and ``provenance.json`` (command, study file,
    commit, date, machine, the runs that finished or failed)."""
    out = Path(out)
    folder = study_dir(study, root)
    table = aggregate(folder, out)
    curves(folder, out)
    errors = {p.parent.name: load_json(p)["error"] for p in sorted(folder.glob("*/error.json"))}
    provenance = {"study": study.name, "study_file": study.source, "command": command, "date": _now(),
                  **git_commit(), "machine": machine_facts(), "runs_finished": len(table), "runs_failed": errors,
                  "sweep": summary, "study_spec": {k: v for k, v in study.__dict__.items() if k != "source"}}
    save_json(json.loads(json.dumps(provenance, default=list)), out / "provenance.json")
    return out


def parse_overrides(items) -> dict:
    """``["key=value", …]`` → {key: value}, each value read as YAML (numbers, lists, strings)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"an evaluation override is KEY=VALUE (e.g. certify_method=crown), got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run a study grid on Dask and aggregate it into results/<name>/.")
    parser.add_argument("study", help="a study file, e.g. studies/smoke.yaml")
    parser.add_argument("--workers", type=int, default=None, help="local workers (default: one per core)")
    parser.add_argument("--address", default=None, help="an existing Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--slurm", type=int, default=None, metavar="JOBS",
                        help="run on SLURM through dask-jobqueue with JOBS single-core jobs (the study's slurm: options)")
    parser.add_argument("--results", default=str(PROJECT_ROOT / "results"),
                        help="where results/<study name>/ goes (default: the project's results/)")
    parser.add_argument("--aggregate-only", action="store_true", help="only rebuild the table of finished runs")
    parser.add_argument("--evaluate", action="append", default=[], metavar="KEY=VALUE",
                        help="override an evaluate setting of the study file (VALUE read as YAML, e.g. "
                             "certify_method=crown, certify_also=[crown-forward], n_certify=32); finished runs "
                             "are re-evaluated from their search and training checkpoints")
    args = parser.parse_args(argv)
    study = with_evaluation(load_study(args.study), parse_overrides(args.evaluate))
    summary = None
    if not args.aggregate_only:
        slurm = study.slurm if args.slurm is not None else None
        summary = run_study(study, address=args.address, n_workers=args.slurm or args.workers, slurm=slurm)
        print(f"{len(summary['finished'])} finished, {len(summary['skipped'])} skipped, "
              f"{len(summary['failed'])} failed in {summary['seconds']:.1f} s on {summary['workers']} workers")
        for run_id, error in summary["errors"].items():
            print(f"FAILED {run_id}: {error.splitlines()[0]}", file=sys.stderr)
    command = " ".join(["python -m rnas_lib.sweep", *(argv if argv is not None else sys.argv[1:])])
    out = write_results(study, Path(args.results) / study.name, command, summary)
    print(f"table and provenance: {out}")
    return 1 if summary and summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
