"""Does a search metric rank architectures? What a metric-validation study measures per architecture.

DSRNA maximises a robustness metric R during the search on the premise that a cell with a higher R
is, once trained, a more robust network. A metric-validation study tests the premise on a sample of
architectures a (``sample_architectures``: random genotypes, the published cells and, optionally,
cells a study searched). For each a and training seed (``measure_architecture``):

- **Metrics** m(a) on one fixed batch, the first ``n_metric`` training images, computed as the search
  computes them on its supernet: the network in train mode (BatchNorm normalises with the batch's
  own statistics; no drop path), its weights at initialisation (suffix ``_init``) and after a short
  training (``_short``: a training of its own, ``short_epochs`` epochs from the same initial weights),
  with the search's own terms
  (``rnas_lib.robustness``):
  ``r_cb_margin`` R_CB, margin objective (mean squashed certified margin at ε₀, crown-ibp), and
  ``cb_margin_bound``, the mean certified margin m itself (the squash m/(τ + mean|m| + |m|) measures it
  against the batch's own mean |m|);
  ``r_cb_radius`` R_CB, radius objective (mean crown-ibp certified radius / ε₀, signed: a
  misclassified image counts the negative distance of its linearised bound, as in the search);
  ``r_j_projection`` and ``r_j_exact`` R_J = −mean first-order bound (one random projection; exact).
  Cheap proxies beside them: ``params`` and ``skip_connections`` (both cells).
- **Robustness** after training at one fixed budget (the tier's retraining, or the study's ``train``
  overrides): clean accuracy and PGD accuracy (ℓ∞, ℓ2, at the tier's table ε) on the first ``n_eval``
  test images, and the average certified radius (ℓ∞, ℓ2) by ``certify_method`` on the first
  ``n_certify``.

``rnas_lib.sweep`` runs one architecture per Dask task (study ``kind: metric_validation``) and
``table_row`` turns each finished record into one row of the study's table (``TABLE_COLUMNS``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from .genotypes import PUBLISHED, from_dict, random_genotype, to_dict

#: the search metrics, each measured at two moments (``<metric>_init``, ``<metric>_short``)
METRICS = ("r_cb_margin", "cb_margin_bound", "r_cb_radius", "r_j_projection", "r_j_exact")
MOMENTS = ("init", "short")
PROXIES = ("params", "skip_connections")
#: what the metrics should predict, measured on the fully trained network (higher is more robust)
TARGETS = ("clean_acc", "pgd_linf_acc", "pgd_l2_acc", "cert_radius_linf", "cert_radius_l2")
SOURCES = ("random", "published", "searched")


@dataclass(frozen=True)
class SampleSpec:
    """Which architectures a study measures: ``n_random`` genotypes drawn uniformly (distinct, from
    ``sample_seed``), the ``published`` cells, and the cells that the study whose results folder is
    ``searched_from`` (e.g. results/smoke) searched with seeds ``searched_seeds`` (random search excluded)."""
    n_random: int = 100
    sample_seed: int = 0
    published: tuple = tuple(PUBLISHED)
    searched_from: str | None = None
    searched_seeds: tuple = (0,)

    @classmethod
    def from_dict(cls, d: dict | None) -> "SampleSpec":
        d = _known(cls, d, "architectures")
        for key in ("published", "searched_seeds"):
            if key in d:
                if not isinstance(d[key], (list, tuple)):
                    raise ValueError(f"architectures: {key} must be a list, got {d[key]!r}")
                d[key] = tuple(d[key])
        spec = cls(**d)
        if isinstance(spec.n_random, bool) or not isinstance(spec.n_random, int) or spec.n_random < 0:
            raise ValueError(f"architectures: n_random must be an integer ≥ 0, got {spec.n_random!r}")
        unknown = [p for p in spec.published if p not in PUBLISHED]
        if unknown:
            raise ValueError(f"architectures: unknown published cells {unknown}; allowed: {', '.join(PUBLISHED)}")
        return spec


@dataclass(frozen=True)
class ValidationSettings:
    """How every architecture is measured (see the module docstring)."""
    n_metric: int = 32
    short_epochs: int = 2
    eps_cb: float = 0.01  # ε₀ of R_CB (ℓ∞, pixel units), the search's default
    eps_jb: float = 0.1  # ε of R_J (ℓ∞), the search's default
    n_eval: int = 200
    pgd_steps: int = 20
    n_certify: int = 16
    certify_method: str = "crown"
    certify_tol: float = 1e-4

    @classmethod
    def from_dict(cls, d: dict | None) -> "ValidationSettings":
        from .pipeline import CERTIFY_METHODS

        settings = cls(**_known(cls, d, "evaluate"))
        for name in ("n_metric", "short_epochs", "n_eval", "pgd_steps", "n_certify"):
            value = getattr(settings, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"evaluate: {name} must be a positive integer, got {value!r}")
        if settings.certify_method not in CERTIFY_METHODS:
            raise ValueError(f"evaluate: unknown certify_method {settings.certify_method!r}; allowed: "
                             + ", ".join(CERTIFY_METHODS))
        return settings


def _known(cls, d, where: str) -> dict:
    d = dict(d or {})
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {where} settings {sorted(unknown)}; allowed: " + ", ".join(f.name for f in fields(cls)))
    return d


def sample_architectures(spec: SampleSpec, steps: int = 4, multiplier: int = 4) -> list[dict]:
    """[{"arch": name, "source": random | published | searched, "genotype": dict}], no genotype twice
    (a random draw equal to an earlier one is drawn again; published and searched cells come first)."""
    chosen, seen = [], set()

    def add(arch, source, genotype):
        key = _canonical(genotype)
        if key not in seen:
            seen.add(key)
            chosen.append({"arch": arch, "source": source, "genotype": to_dict(genotype)})

    for name in spec.published:
        add(name, "published", PUBLISHED[name])
    for arch, genotype in searched_genotypes(spec.searched_from, spec.searched_seeds):
        add(arch, "searched", genotype)
    generator = torch.Generator().manual_seed(spec.sample_seed)
    target = len(chosen) + spec.n_random
    for _ in range(100 * spec.n_random + 1):
        if len(chosen) == target:
            break
        add(f"random-{len(chosen) - target + spec.n_random:03d}", "random", random_genotype(steps, multiplier, generator))
    return chosen


def _canonical(genotype) -> str:
    """The genotype with each node's two inputs in a fixed order (the same cell, however listed)."""
    cells = []
    for gene in (genotype.normal, genotype.reduce):
        cells.append(sorted(tuple(sorted(map(tuple, gene[i:i + 2]))) for i in range(0, len(gene), 2)))
    return repr((cells, list(genotype.normal_concat), list(genotype.reduce_concat)))


def searched_genotypes(results, seeds=(0,)) -> list:
    """[(f"{arch}-seed{seed}", genotype)] of the searched runs in a study's results folder
    (``results/<name>/table.csv``, relative to the project unless absolute), random search left out;
    [] when ``results`` is None."""
    if results is None:
        return []
    import json

    import pandas as pd

    from . import PROJECT_ROOT

    path = Path(results) if Path(results).is_absolute() else PROJECT_ROOT / results
    if not (path / "table.csv").exists():
        raise FileNotFoundError(f"searched_from: {path} holds no table.csv; give a finished study's results folder "
                                "(e.g. results/smoke, written by make sweep)")
    table = pd.read_csv(path / "table.csv")
    rows = table[~table["published"].astype(bool) & (table["arch"] != "random") & table["seed"].isin(list(seeds))]
    if rows.empty:
        raise ValueError(f"{results} holds no searched run with seeds {list(seeds)}; its runs: "
                         + ", ".join(sorted({f'{a} seed {s}' for a, s in zip(table['arch'], table['seed'])})))
    return [(f"{r.arch}-seed{r.seed}", from_dict(json.loads(r.genotype))) for r in rows.itertuples()]


def search_metrics(model, batch, settings: ValidationSettings, seed: int = 0) -> dict:
    """{metric: value} of ``METRICS`` for ``model`` on ``batch`` (a TensorData), the network in train
    mode as in the search (a copy: the running statistics of ``model`` are left as they were)."""
    from .bounds import margin_lower_bound
    from .robustness import dsrna_cb, dsrna_jb

    net = copy.deepcopy(model).train()
    net.drop_path_prob = 0.0
    terms = {"r_cb_margin": dsrna_cb(settings.eps_cb, samples=None),
             "cb_margin_bound": lambda net, x, y: margin_lower_bound(net, x, y, settings.eps_cb, "inf", "crown-ibp").mean(),
             "r_cb_radius": dsrna_cb(settings.eps_cb, samples=None, objective="radius"),
             "r_j_projection": dsrna_jb(settings.eps_jb, mode="projection"),
             "r_j_exact": dsrna_jb(settings.eps_jb, mode="exact")}
    terms["r_j_projection"].generator.manual_seed(seed)
    with torch.no_grad():
        return {name: float(term(net, batch.x, batch.y)) for name, term in terms.items()}


def robustness(model, test, settings: ValidationSettings, threat, seed: int = 0) -> dict:
    """The ``TARGETS`` of the trained ``model`` (eval mode) on the first images of ``test``, with the ε
    and image counts they were measured at."""
    from . import attacks
    from .verify import average_certified_bound

    data = test.subset(slice(0, settings.n_eval))
    pgd = {"name": "pgd", "steps": settings.pgd_steps}
    out, clock = {"n_eval": len(data), "cert_method": settings.certify_method}, time.perf_counter()
    for norm, key, eps in (("inf", "linf", threat.linf), (2, "l2", threat.l2)):
        records = attacks.evaluate(model, data, [pgd], [0.0, eps], norm=norm, seed=seed, progress=False)
        out["clean_acc"] = next(r["accuracy"] for r in records if r["eps"] == 0.0)
        out[f"pgd_{key}_acc"] = next(r["accuracy"] for r in records if r["eps"] == eps)
        out[f"pgd_{key}_eps"] = eps
        out["pgd_seconds"], clock = out.get("pgd_seconds", 0.0) + time.perf_counter() - clock, time.perf_counter()
        certified = average_certified_bound(model, data, norm, method=settings.certify_method, n=settings.n_certify,
                                            tol=settings.certify_tol, seed=seed, progress=False)
        out[f"cert_radius_{key}"] = certified["mean_radius"]
        out["cert_n"] = certified["n"]
        out[f"cert_seconds_{key}"], clock = time.perf_counter() - clock, time.perf_counter()
    return out


def measure_architecture(config: dict, folder, data_root=None) -> dict:
    """One run of a metric-validation study (``config``: arch, source, genotype, seed, tier,
    tier_fields, train, evaluate): metrics at initialisation and after the short training, then
    training at the fixed budget and its robustness. Trainings resume from ``folder``/short and
    ``folder``/train. Returns a JSON-ready record."""
    from .data import load_dataset
    from .pipeline import check_stage, parameter_count, skip_connections
    from .tiers import get_tier, threat_model
    from .train import build_network, run_training

    settings = ValidationSettings.from_dict(config["evaluate"])
    train, tier_fields, seed = dict(config["train"]), dict(config["tier_fields"]), config["seed"]
    check_stage("train", train)
    t = get_tier(config["tier"], **tier_fields)
    genotype = from_dict(config["genotype"])
    folder = Path(folder)
    t0 = time.perf_counter()
    batch = load_dataset(t.dataset, True, data_root, t.train_limit).subset(slice(0, settings.n_metric))
    torch.manual_seed(seed)  # run_training's initialisation: the network the short training starts from
    initial = build_network(genotype, t, data_root)
    metrics = {f"{k}_init": v for k, v in search_metrics(initial, batch, settings, seed).items()}
    common = dict(name=config["arch"], data_root=data_root, progress=False, **tier_fields)
    short = run_training(genotype, t.name, seed, out_dir=folder / "short", **common,
                         **{**train, "epochs": settings.short_epochs})
    metrics |= {f"{k}_short": v for k, v in search_metrics(short.model, batch, settings, seed).items()}
    metric_seconds = time.perf_counter() - t0
    trained = run_training(genotype, t.name, seed, out_dir=folder / "train", **common, **train)
    t_eval = time.perf_counter()
    test = load_dataset(t.dataset, False, data_root, t.test_limit)
    targets = robustness(trained.model.eval(), test, settings, threat_model(t.name), seed)
    skips = skip_connections(genotype)
    return {"arch": config["arch"], "source": config["source"], "seed": seed, "tier": t.name, "dataset": t.dataset,
            "genotype": to_dict(genotype), "params": parameter_count(trained.model),
            "skip_connections": skips["normal"] + skips["reduce"], "metrics": metrics,
            "short_test_acc": short.test_acc, "test_acc": trained.test_acc, "targets": targets,
            "settings": asdict(settings), "metric_seconds": metric_seconds,
            "train_seconds": sum(h["seconds"] for h in trained.history),
            "evaluate_seconds": time.perf_counter() - t_eval, "seconds": time.perf_counter() - t0}


#: the columns of a metric-validation study's table, one row per (architecture, seed)
TABLE_COLUMNS = ("study", "arch", "source", "seed", "tier", "dataset", "genotype", *PROXIES,
                 *(f"{m}_{moment}" for moment in MOMENTS for m in METRICS), "short_test_acc", "test_acc",
                 "n_eval", *TARGETS, "pgd_linf_eps", "pgd_l2_eps", "cert_method", "cert_n",
                 "metric_seconds", "train_seconds", "evaluate_seconds", "pgd_seconds", "cert_seconds_linf",
                 "cert_seconds_l2")


def table_row(record: dict) -> dict:
    """One row (``TABLE_COLUMNS``) of a finished run's completion record."""
    import json

    res = record["result"]
    return {"study": record["run"]["study"], **{k: res[k] for k in ("arch", "source", "seed", "tier", "dataset")},
            "genotype": json.dumps(res["genotype"]), **{k: res[k] for k in PROXIES}, **res["metrics"],
            **{k: res[k] for k in ("short_test_acc", "test_acc")}, **res["targets"],
            **{k: res[k] for k in ("metric_seconds", "train_seconds", "evaluate_seconds")}}
