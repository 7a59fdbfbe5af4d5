"""One study run: search → retrain → evaluate, for one architecture source and one seed.

The architecture is a search method (``rnas_lib.search.methods()``: its cell is searched with
``run_search``) or a published genotype (``PUBLISHED``: no search). The derived network is trained
with ``run_training`` at the tier's budget and evaluated on the first ``n_eval`` test images:

- clean accuracy and FGSM / PGD accuracy on the tier's ℓ∞ and ℓ2 ε grids (``rnas_lib.tiers.threat_model``);
- C&W-ℓ2 (minimum-norm: one run gives the whole ℓ2 grid) on the first ``n_cw`` of them and reduced
  AutoAttack (APGD-CE + APGD-DLR) at the tier's ℓ∞ table ε on the first ``n_autoattack``;
- the average certified radius (ℓ∞ and ℓ2) on the first ``n_certify`` with ``certify_method`` (the
  headline radius), and with every method of ``certify_also`` on the same images (the cheaper or
  tighter bounds beside it: how much of a radius is the bound's looseness, not the network).

Everything goes to one folder: ``search/`` and ``train/`` (resumable run folders) and the record
returned by ``run_pipeline`` (``rnas_lib.sweep`` saves it as the run's completion record). With
``trained_only``, the search and training must have finished there already: the run only loads their
checkpoints and evaluates (a study re-evaluated with other evaluation settings).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from . import attacks
from .data import load_dataset
from .genotypes import PUBLISHED, get_genotype, to_dict
from .search import TIER_FIELDS, methods, run_search
from .runs import is_complete
from .tiers import ThreatModel, get_tier, threat_model
from .train import run_training
from .trainings import training_overrides
from .verify import average_certified_bound

#: the bounds a study can certify with (``rnas_lib.verify.certified_radius``), cheapest first
CERTIFY_METHODS = ("ibp", "crown-ibp", "crown-forward", "crown", "alpha-crown")


@dataclass(frozen=True)
class EvalSettings:
    """How a study run is evaluated (image counts are the first images of the test split)."""
    n_eval: int = 200  # clean, FGSM and PGD
    pgd_steps: int = 20
    pgd_restarts: int = 1
    n_cw: int = 16
    cw_steps: int = 10
    cw_binary_search_steps: int = 2
    n_autoattack: int = 100
    autoattack_steps: int = 20
    n_certify: int = 50
    certify_method: str = "crown"  # the headline radius: one of CERTIFY_METHODS (rnas_lib.verify)
    certify_tol: float = 1e-4
    certify_also: tuple = ()  # more CERTIFY_METHODS, certified on the same n_certify images
    eps_linf: tuple | None = None  # the accuracy-vs-ε grids (None: the tier's); each holds 0 and the table's ε
    eps_l2: tuple | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "EvalSettings":
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown evaluation settings {sorted(unknown)}; allowed: "
                             + ", ".join(f.name for f in fields(cls)))
        for key in ("certify_also", "eps_linf", "eps_l2"):
            if isinstance(d.get(key), (list, tuple)):
                d[key] = tuple(d[key])
            elif d.get(key) is not None:
                raise ValueError(f"evaluation setting {key} must be a list, got {d[key]!r}")
        settings = cls(**d)
        bad = [m for m in (settings.certify_method, *settings.certify_also) if m not in CERTIFY_METHODS]
        if bad:
            raise ValueError(f"unknown certificate methods {bad} in certify_method / certify_also; allowed: "
                             + ", ".join(CERTIFY_METHODS))
        if settings.certify_method in settings.certify_also or len(set(settings.certify_also)) < len(settings.certify_also):
            raise ValueError(f"certify_also {list(settings.certify_also)} repeats a method (or the headline "
                             f"certify_method {settings.certify_method!r}): list each bound once")
        return settings

    def threat(self, tier: str) -> ThreatModel:
        """The tier's threat model with this evaluation's ε grids; a grid must hold 0 (the clean
        accuracy) and the table's ε (its columns), else ValueError."""
        base = threat_model(tier)
        threat = ThreatModel(tuple(self.eps_linf or base.eps_linf), tuple(self.eps_l2 or base.eps_l2),
                             base.linf, base.l2)
        for name, grid, eps in (("eps_linf", threat.eps_linf, base.linf), ("eps_l2", threat.eps_l2, base.l2)):
            if 0 not in grid or eps not in grid:
                raise ValueError(f"evaluation setting {name}={list(grid)} must hold 0 (clean accuracy) and the "
                                 f"{tier} table's ε {eps}; add them to the grid")
        return threat


def architectures() -> tuple[str, ...]:
    """Every name a study can list: the search methods, then the published cells."""
    return tuple(methods()) + tuple(PUBLISHED)


def check_stage(stage: str, overrides: dict) -> None:
    """Reject a search/train override that is neither a tier field nor a config field, by name."""
    from .search import SearchConfig
    from .train import TrainConfig

    config = SearchConfig if stage == "search" else TrainConfig
    allowed = (TIER_FIELDS | {f.name for f in fields(config)}) - {"seed", "method"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"unknown {stage} settings {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")


def skip_connections(genotype) -> dict:
    """Number of skip_connect edges in the normal and the reduction cell."""
    return {"normal": sum(op == "skip_connect" for op, _ in genotype.normal),
            "reduce": sum(op == "skip_connect" for op, _ in genotype.reduce)}


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of the network used at test time (an auxiliary head, used in training only, left out)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("auxiliary_head"))


def run_pipeline(arch: str, seed: int, tier: str, folder, search: dict | None = None, train: dict | None = None,
                 evaluate: dict | None = None, tier_fields: dict | None = None, data_root=None,
                 device=None, trained_only: bool = False, training: str = "standard") -> dict:
    """Search (unless ``arch`` is published), retrain and evaluate; return a JSON-ready record.

    training: the regime of the retraining (``rnas_lib.trainings``: standard, pgd, certified);
    search / train: overrides of ``run_search`` / ``run_training`` (config or tier fields; ``train``'s
    override the regime's settings);
    evaluate: ``EvalSettings`` fields; tier_fields: tier overrides for all three stages (e.g. dataset);
    trained_only: load the finished search and training of ``folder``, never run one (FileNotFoundError
    when either did not finish there).
    """
    if arch not in architectures():
        raise ValueError(f"unknown architecture {arch!r}; allowed: {', '.join(architectures())}")
    search, train, tier_fields = dict(search or {}), dict(train or {}), dict(tier_fields or {})
    check_stage("search", search)
    check_stage("train", train)
    settings = EvalSettings.from_dict(evaluate)
    t = get_tier(tier, **tier_fields)
    train = {**training_overrides(training, t.name, train.get("epochs"), **tier_fields), **train}
    threat = settings.threat(t.name)
    folder = Path(folder)
    if trained_only:
        unfinished = [folder / s for s in ("search", "train")[arch in PUBLISHED:] if not is_complete(folder / s)]
        if unfinished:
            raise FileNotFoundError(f"re-evaluating {arch} seed {seed} needs its finished search and training, but "
                                    f"{', '.join(map(str, unfinished))} did not finish; run the study in full")
    t0 = time.perf_counter()

    if arch in PUBLISHED:
        genotype, search_seconds = get_genotype(arch), None
    else:
        result = run_search(tier, arch, seed, data_root=data_root, out_dir=folder / "search", progress=False,
                            device=device, **tier_fields, **search)
        genotype = result.genotype
        search_seconds = sum(h["seconds"] for h in result.history)  # per-epoch times: a resumed search counts once
    trained = run_training(genotype, tier, seed, name=arch, data_root=data_root, out_dir=folder / "train",
                           progress=False, device=device, **tier_fields, **train)
    model = trained.model.eval()
    train_seconds = sum(h["seconds"] for h in trained.history)

    t_eval = time.perf_counter()
    test = load_dataset(t.dataset, False, data_root, t.test_limit)
    attack_records, certified, timings = evaluate_network(model, test, settings, threat, seed)
    evaluate_seconds = time.perf_counter() - t_eval

    return {
        "arch": arch, "seed": seed, "tier": t.name, "dataset": t.dataset, "published": arch in PUBLISHED,
        "training": training,
        "genotype": to_dict(genotype), "skip_connections": skip_connections(genotype),
        "params": parameter_count(model), "test_acc": trained.test_acc, "n_test": len(test),
        "search_seconds": search_seconds, "train_seconds": train_seconds, "evaluate_seconds": evaluate_seconds,
        "evaluate_timings": timings, "seconds": time.perf_counter() - t0,
        "threat": threat.as_dict(), "evaluation": asdict(settings),
        "attacks": attack_records, "certified": certified,
    }


def evaluate_network(model, test, settings: EvalSettings, threat, seed: int = 0):
    """Attack and certify ``model`` on the first images of ``test`` (see the module docstring).

    Returns (attack records of ``rnas_lib.attacks.evaluate``, {"linf", "l2": average certified bound
    record}, seconds per part)."""
    data = test.subset(slice(0, settings.n_eval))
    pgd = {"name": "pgd", "steps": settings.pgd_steps, "restarts": settings.pgd_restarts}
    timings, clock = {}, time.perf_counter()

    def lap(name):
        nonlocal clock
        timings[name], clock = time.perf_counter() - clock, time.perf_counter()

    records = []
    for norm, grid in (("inf", threat.eps_linf), (2, threat.eps_l2)):
        records += attacks.evaluate(model, data, ["fgsm", pgd], grid, norm=norm, seed=seed, progress=False)
    lap("fgsm_pgd")
    l2_grid = [e for e in threat.eps_l2 if e > 0]
    records += attacks.evaluate(model, data.subset(slice(0, settings.n_cw)),
                                [{"name": "cw", "steps": settings.cw_steps,
                                  "binary_search_steps": settings.cw_binary_search_steps}], l2_grid, norm=2,
                                progress=False)
    lap("cw")
    records += attacks.evaluate(model, data.subset(slice(0, settings.n_autoattack)),
                                [{"name": "autoattack", "steps": settings.autoattack_steps}], [threat.linf],
                                norm="inf", seed=seed, progress=False)
    lap("autoattack")
    by_method = {}
    for method in (settings.certify_method, *settings.certify_also):
        by_method[method] = {}
        for norm in ("inf", 2):
            key = "linf" if norm == "inf" else "l2"
            by_method[method][key] = average_certified_bound(model, data, norm, method=method, n=settings.n_certify,
                                                             tol=settings.certify_tol, seed=seed, progress=False)
            lap(f"certify_{key}" + ("" if method == settings.certify_method else f"_{method}"))
    certified = {**by_method[settings.certify_method], "also": {m: by_method[m] for m in settings.certify_also}}
    return records, certified, timings
