"""The discrete network of a genotype (DARTS' NetworkCIFAR).

Normalize → stem (3×3 conv, BN) → ``layers`` cells (reductions at 1/3 and 2/3 depth, channels
doubled there) → global average pool → linear. Node j of a cell is the sum of its two chosen ops;
in training, drop-path zeroes each non-identity op's output with probability p and scales the
survivors by 1/(1 − p).

With ``auxiliary=True`` the network also has DARTS' auxiliary head (``AuxiliaryHeadCIFAR``) on the
output of the second reduction cell (cell 2·layers//3). Only ``forward_with_auxiliary`` computes it,
for the training loss CE(logits) + w_aux·CE(auxiliary logits); ``forward`` (evaluation, attacks,
bounds, Jacobians) returns the logits alone, in either mode.
"""
from __future__ import annotations

import torch
from torch import nn

from .batchnorm import BatchNorm2d
from .genotypes import Genotype, get_genotype
from .ops import FactorizedReduce, Identity, Normalize, ReLUConvBN, make_op
from .supernet import SearchNetwork


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole samples with probability p, scale the rest by 1/(1 − p)."""
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class Cell(nn.Module):
    def __init__(self, genotype: Genotype, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        gene = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.steps = len(gene) // 2
        self.multiplier = len(self.concat)
        self.indices = [int(i) for _, i in gene]
        self.ops = nn.ModuleList(
            make_op(op, C, 2 if reduction and i < 2 else 1, affine=True) for op, i in gene
        )

    def forward(self, s0, s1, drop_prob: float = 0.0):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for j in range(self.steps):
            h = []
            for k in (2 * j, 2 * j + 1):
                y = self.ops[k](states[self.indices[k]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[k], Identity):
                    y = drop_path(y, drop_prob)
                h.append(y)
            states.append(h[0] + h[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' AuxiliaryHeadCIFAR on an 8×8 feature map (32×32 images after two reductions):
    ReLU → 5×5 average pool, stride 3 (2×2) → 1×1 conv to 128 → BN → ReLU → 2×2 conv to 768 → BN
    → ReLU → linear."""

    def __init__(self, C, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        if tuple(x.shape[-2:]) != (8, 8):
            raise ValueError(
                f"the auxiliary head (DARTS' AuxiliaryHeadCIFAR) needs an 8×8 feature map after the second "
                f"reduction cell (32×32 inputs), got {tuple(x.shape[-2:])}; train without it (auxiliary_weight=0)"
            )
        return self.classifier(self.features(x).flatten(1))


class Network(nn.Module):
    """The network of ``genotype`` (a Genotype, a name in PUBLISHED, or a .json path)."""

    def __init__(self, genotype, C, num_classes, layers, in_channels=3, stem_multiplier=3, mean=None, std=None,
                 drop_path_prob: float = 0.0, auxiliary: bool = False):
        super().__init__()
        for name, value in (("C", C), ("num_classes", num_classes), ("layers", layers), ("in_channels", in_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= drop_path_prob < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {drop_path_prob}")
        self.genotype = get_genotype(genotype)
        self.C, self.num_classes, self.layers, self.in_channels = C, num_classes, layers, in_channels
        self.drop_path_prob = drop_path_prob
        self.normalize = Normalize(mean if mean is not None else [0.0] * in_channels,
                                   std if std is not None else [1.0] * in_channels)
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in SearchNetwork.reduction_layers(layers)
            if reduction:
                C_curr *= 2
            cell = Cell(self.genotype, C_pp, C_p, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_curr
            if i == self.auxiliary_layer:
                C_auxiliary = C_p
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)
        self.auxiliary = bool(auxiliary)
        self.auxiliary_head = AuxiliaryHead(C_auxiliary, num_classes) if auxiliary else None

    @property
    def auxiliary_layer(self) -> int:
        """The cell whose output feeds the auxiliary head: the second reduction cell (DARTS)."""
        return 2 * self.layers // 3

    def forward(self, x):
        return self.forward_with_auxiliary(x, auxiliary=False)[0]

    def forward_with_auxiliary(self, x, auxiliary: bool = True):
        """(logits, auxiliary logits); the second is None without an auxiliary head or when not asked."""
        if auxiliary and self.auxiliary_head is None:
            raise ValueError("this network has no auxiliary head; build it with Network(..., auxiliary=True)")
        logits_aux = None
        s0 = s1 = self.stem(self.normalize(x))
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if auxiliary and i == self.auxiliary_layer:
                logits_aux = self.auxiliary_head(s1)
        return self.classifier(self.global_pooling(s1).flatten(1)), logits_aux
