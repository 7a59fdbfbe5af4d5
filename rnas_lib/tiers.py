"""Tiers: one set of code, three sizes, chosen by a notebook's ``tier`` parameter.

| tier | data | supernet | final network |
|---|---|---|---|
| smoke | digits 8×8×1 | C=4, 3 cells, 4 nodes | C=8, 3 cells |
| tutorial | MNIST 28×28×1 | C=8, 5 cells | C=16, 8 cells |
| paper | CIFAR-10 32×32×3 | C=16, 8 cells, 50 epochs | C=36, 20 cells, 600 epochs |

``train_recipe`` names the retraining defaults (``rnas_lib.train.RECIPES``): ``"plain"`` at the smoke
and tutorial tiers, ``"darts"`` (DARTS' CIFAR recipe: crop/flip, cutout, auxiliary head, drop-path,
…) at the paper tier.

``THREATS`` holds each tier's attack radii in one place (``threat_model``): the accuracy-vs-ε grids
and the one ε per norm at which a study's table reports FGSM, PGD, C&W and AutoAttack accuracy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Tier:
    name: str
    dataset: str
    # search
    search_C: int
    search_layers: int
    search_epochs: int
    search_batch_size: int
    search_limit: int | None  # training images used by the search (None = all)
    # retraining / evaluation
    train_C: int
    train_layers: int
    train_epochs: int
    train_batch_size: int
    train_limit: int | None
    test_limit: int | None
    steps: int = 4
    multiplier: int = 4
    train_recipe: str = "plain"

    def as_dict(self) -> dict:
        return asdict(self)


TIERS = {
    "smoke": Tier("smoke", "digits", 4, 3, 6, 64, None, 8, 3, 15, 64, None, None),
    "tutorial": Tier("tutorial", "mnist", 8, 5, 10, 64, 10000, 16, 8, 10, 128, None, 2000),
    "paper": Tier("paper", "cifar10", 16, 8, 50, 64, None, 36, 20, 600, 96, None, None, train_recipe="darts"),
}


def get_tier(name: str, **overrides) -> Tier:
    """The preset of tier ``name``, with any field replaced by ``overrides``."""
    if name not in TIERS:
        raise ValueError(f"unknown tier {name!r}; allowed: {', '.join(TIERS)}")
    unknown = set(overrides) - set(Tier.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown tier fields {sorted(unknown)}; allowed: {', '.join(Tier.__dataclass_fields__)}")
    return replace(TIERS[name], **overrides)


@dataclass(frozen=True)
class ThreatModel:
    """Attack radii of a tier, in pixel units (images in [0, 1]).

    eps_linf, eps_l2: the accuracy-vs-ε grids (0 included: the clean accuracy);
    linf, l2: the radius of a study table's ℓ∞ columns (FGSM, PGD-ℓ∞, AutoAttack) and ℓ2 columns
    (PGD-ℓ2, C&W). Chosen by rnas so that a standard-trained network of the tier is neither
    untouched nor broken at the table's ε (smoke, measured on a darts cell: PGD-20 accuracy
    0.42 at ℓ∞ 0.1, 0.48 at ℓ2 0.5); the paper's ε is not known (docs/paper.md).
    """
    eps_linf: tuple
    eps_l2: tuple
    linf: float
    l2: float

    def as_dict(self) -> dict:
        return asdict(self)


THREATS = {
    # digits 8×8: an ℓ∞ ball of radius ε reaches ℓ2 distance 8ε
    "smoke": ThreatModel((0.0, 0.025, 0.05, 0.1, 0.15, 0.2), (0.0, 0.25, 0.5, 1.0), linf=0.1, l2=0.5),
    # MNIST 28×28: the usual ε grid of MNIST robustness papers up to 0.3
    "tutorial": ThreatModel((0.0, 0.05, 0.1, 0.2, 0.3), (0.0, 0.5, 1.0, 1.5, 2.0), linf=0.1, l2=1.0),
    # CIFAR-10: ε in multiples of 1/255
    "paper": ThreatModel((0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255), (0.0, 0.1, 0.25, 0.5), linf=2 / 255, l2=0.25),
}


def threat_model(name: str) -> ThreatModel:
    """The attack radii of tier ``name``."""
    if name not in THREATS:
        raise ValueError(f"unknown tier {name!r}; allowed: {', '.join(THREATS)}")
    return THREATS[name]
