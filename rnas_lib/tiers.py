"""Tiers: one set of code, three sizes, chosen by a notebook's ``tier`` parameter.

| tier | data | supernet | final network |
|---|---|---|---|
| smoke | digits 8×8×1 | C=4, 3 cells, 4 nodes, 20 epochs | C=8, 3 cells, 15 epochs |
| tutorial | MNIST 28×28×1 | C=8, 5 cells, 10 epochs on 2,000 images | C=16, 8 cells, 3 epochs on 6,000 images |
| paper | CIFAR-10 32×32×3 | C=16, 8 cells, 50 epochs | C=36, 20 cells, 600 epochs |

``train_recipe`` names the retraining defaults (``rnas_lib.train.RECIPES``): ``"plain"`` at the smoke
and tutorial tiers, ``"darts"`` (DARTS' CIFAR recipe: crop/flip, cutout, auxiliary head, drop-path,
…) at the paper tier.

``eps_grid`` holds the attack ε grids per dataset in one place; ``threat_model`` gives a tier's grids
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
    search_lr_alpha: float = 3e-4  # Adam learning rate of α (DARTS: 3e-4)

    def as_dict(self) -> dict:
        return asdict(self)


TIERS = {
    # smoke: 20 epochs of 6 α steps (batch 128) at α learning rate 0.03; DARTS' 3e-4 over its
    # 50 × 390 CIFAR steps moves α about as far (≈ 5.9 vs 3.6 in sum of step sizes). Measured on
    # digits: α's entropy falls for every method and seed and, for some seeds, the derived genotype
    # settles (within one of its 16 choices over the last epochs), where 6 epochs at 3e-4 left α
    # within 1e-3 of uniform and the genotype changing at every epoch (README, notebook 05).
    "smoke": Tier("smoke", "digits", 4, 3, 20, 128, None, 8, 3, 15, 64, None, None, search_lr_alpha=0.03),
    # tutorial: sized for a class on a 2-core laptop. Measured there (README): 10 epochs × 16 steps of
    # the search (2,000 images, halves of 1,000) take 15 min for dsrna_cb and 5 for darts, a network's
    # 3 epochs on 6,000 images about 4 min (97-98 % test accuracy), the whole workbook about an hour.
    # α's learning rate is the smoke tier's, for the same reason (160 α steps, not DARTS' 19,500).
    "tutorial": Tier("tutorial", "mnist", 8, 5, 10, 64, 2000, 16, 8, 3, 128, 6000, 2000, search_lr_alpha=0.03),
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


#: ε grids of the evaluation notebooks per dataset, in pixel units (images in [0, 1]), from 0 up to
#: the radius where a standard-trained network of the tier has lost most of its accuracy: the ℓ∞
#: grid ends at 0.2 on 8×8 digits, 0.3 on MNIST-size grey images, 8/255 on colour images; the ℓ2
#: grids are several times larger (an ℓ∞ ball of radius ε reaches ℓ2 distance ε√n).
EPS_GRIDS = {
    "digits": {"inf": [0.0, 0.025, 0.05, 0.1, 0.15, 0.2], 2: [0.0, 0.25, 0.5, 1.0]},
    "grey": {"inf": [0.0, 0.05, 0.1, 0.2, 0.3], 2: [0.0, 0.5, 1.0, 2.0, 3.0]},
    "colour": {"inf": [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255], 2: [0.0, 0.125, 0.25, 0.5, 1.0]},
}
_GRID_OF = {"digits": "digits", "mnist": "grey", "fashion_mnist": "grey", "cifar10": "colour"}


def eps_grid(dataset: str, norm, in_channels: int | None = None) -> list[float]:
    """The ε grid (pixel units, starting at 0) for attacks on ``dataset`` under ℓ``norm`` ("inf" or 2).
    Datasets outside the registry's named ones (``npz:``, ``folder:``) take the grey grid when
    ``in_channels`` is 1 and the colour grid when it is 3."""
    norm = "inf" if norm in ("inf", float("inf")) else norm
    if norm not in ("inf", 2):
        raise ValueError(f"norm must be 'inf' or 2, got {norm!r}")
    family = _GRID_OF.get(dataset) or {1: "grey", 3: "colour"}.get(in_channels)
    if family is None:
        raise ValueError(f"no ε grid for dataset {dataset!r} with in_channels={in_channels!r}; named grids: "
                         f"{', '.join(_GRID_OF)}; other datasets need in_channels 1 (grey) or 3 (colour)")
    return list(EPS_GRIDS[family][norm])


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


#: (ℓ∞, ℓ2) radius of a study table's columns per tier; the grids are ``eps_grid`` of its dataset
TABLE_EPS = {"smoke": (0.1, 0.5), "tutorial": (0.1, 1.0), "paper": (2 / 255, 0.25)}


def threat_model(name: str) -> ThreatModel:
    """The attack radii of tier ``name``: its dataset's ``eps_grid`` and the table's ε."""
    if name not in TABLE_EPS:
        raise ValueError(f"unknown tier {name!r}; allowed: {', '.join(TABLE_EPS)}")
    dataset = TIERS[name].dataset
    return ThreatModel(tuple(eps_grid(dataset, "inf")), tuple(eps_grid(dataset, 2)), *TABLE_EPS[name])
