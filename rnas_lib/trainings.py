"""Training regimes by name: what a notebook's ``training`` parameter and a study's ``training:`` pick.

- ``standard``: cross-entropy on the clean images;
- ``pgd``: PGD adversarial training (Madry et al. 2018; ``rnas_lib.train``) at the tier's table ℓ∞ ε;
- ``certified``: certified training (``rnas_lib.certified_training``) at the tier's table ℓ∞ ε, as
  Gowal et al. (2018) train with IBP: ``CERTIFIED_RECIPE``'s warm-up at ε = 0, a smooth ε ramp while κ
  (the weight of the clean loss) falls from 1 to κ_end, then the rest of the epochs at ε; its budget
  is ``epochs_factor`` × the tier's epochs (bound-based training needs many more steps than
  standard training; what it reaches: ``benchmarks/bench_certified_training.py``).

``training_overrides`` turns a name into ``TrainConfig`` settings; the run folder of a training is
keyed by its whole configuration, so each regime trains (and is found again) on its own.
"""
from __future__ import annotations

from .tiers import get_tier, threat_model

TRAININGS = ("standard", "pgd", "certified")

#: the certified regime: its bound, its budget (× the tier's epochs), its schedule as fractions of
#: the training's epochs (warm-up, ramp) and the end value of its κ ramp
CERTIFIED_RECIPE = {"method": "ibp", "epochs_factor": 4, "warmup": 1 / 12, "ramp": 0.5, "kappa_end": 0.5}


def check_training(training) -> str:
    if training not in TRAININGS:
        raise ValueError(f"unknown training {training!r}; allowed: {', '.join(TRAININGS)}")
    return training


def training_overrides(training: str, tier: str, epochs: int | None = None, **tier_fields) -> dict:
    """The TrainConfig settings of regime ``training`` at ``tier``: {} (standard), {"adversarial": …}
    (pgd) or {"certified": …} (certified), both at the tier's table ℓ∞ ε (``rnas_lib.tiers.threat_model``).
    ``epochs``: the training's length when the caller sets it (the certified schedule is fitted to
    it); None: the regime's own budget (certified: ``epochs_factor`` × the epochs of the tier with
    ``tier_fields``, in the settings)."""
    check_training(training)
    eps = threat_model(tier).linf
    if training == "pgd":
        return {"adversarial": {"eps": eps, "norm": "inf"}}
    if training == "certified":
        budget = {}
        if epochs is None:
            epochs = CERTIFIED_RECIPE["epochs_factor"] * get_tier(tier, **tier_fields).train_epochs
            budget = {"epochs": epochs}
        warmup = int(CERTIFIED_RECIPE["warmup"] * epochs)
        ramp = max(1, min(round(CERTIFIED_RECIPE["ramp"] * epochs), epochs - warmup))
        return {**budget, "certified": {"eps": eps, "norm": "inf", "method": CERTIFIED_RECIPE["method"],
                                        "warmup_epochs": warmup, "ramp_epochs": ramp, "ramp": "smooth",
                                        "kappa_start": 1.0, "kappa_end": CERTIFIED_RECIPE["kappa_end"]}}
    return {}


def network_name(label: str, training: str) -> str:
    """The name a network trained under ``training`` is recorded by: ``label`` for standard training,
    ``label-<training>`` otherwise (so notebook 06 can hold both)."""
    return label if check_training(training) == "standard" else f"{label}-{training}"


def split_name(name: str) -> tuple[str, str]:
    """(label, training) of a recorded network name (``network_name``'s inverse)."""
    for training in TRAININGS[1:]:
        if name.endswith(f"-{training}"):
            return name[: -len(training) - 1], training
    return name, "standard"


def select_networks(names, training: str | None) -> list[str]:
    """The networks an evaluation notebook compares: every one of ``names`` (``training`` None), or,
    per label, the one trained under ``training`` and, for pgd or certified, its standard twin next to it."""
    if training is None:
        return list(names)
    labels = list(dict.fromkeys(split_name(n)[0] for n in names))
    return [n for label in labels for n in dict.fromkeys([network_name(label, training), label])]
