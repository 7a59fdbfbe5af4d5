"""Genotypes: the discrete cells that a search derives, their JSON form, and published ones.

A cell has ``steps`` intermediate nodes; node j (0-based) takes two inputs among the cell inputs
c_{k-2}, c_{k-1} (indices 0, 1) and nodes 0..j-1 (indices 2..j+1). ``normal`` lists the chosen
(op, input index) pairs two per node, and ``normal_concat`` the nodes concatenated as the output.

Derivation (DARTS): with p = softmax(α) per edge, each edge's strength is max_{o ≠ none} p_o; every
node keeps its two strongest incoming edges, each with its strongest non-``none`` op. With PC-DARTS'
edge normalisation the op weights of edge (i → j) are first multiplied by β_{ij} (softmax of the β
logits over the incoming edges of node j): the edge strength becomes β_{ij}·max_{o ≠ none} p_o.
"""
from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch

from .ops import PRIMITIVES
from .runs import save_json

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")


def num_edges(steps: int) -> int:
    """Edges of a search cell: node j has 2 + j inputs, so Σ_j (2 + j)."""
    return sum(2 + j for j in range(steps))


def parse_alpha(weights, steps: int, primitives=None) -> list[tuple[str, int]]:
    """Two (op, input) pairs per node from a (num_edges, |primitives|) array of op weights;
    ``primitives``: the names of the columns (default: the registered PRIMITIVES)."""
    primitives = tuple(PRIMITIVES if primitives is None else primitives)
    weights = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights)
    if weights.shape != (num_edges(steps), len(primitives)):
        raise ValueError(
            f"alpha must have shape ({num_edges(steps)}, {len(primitives)}) for steps={steps} and the "
            f"{len(primitives)} primitives {', '.join(primitives)}, got {weights.shape}"
        )
    ops = [k for k, name in enumerate(primitives) if name != "none"]
    gene, start = [], 0
    for j in range(steps):
        W = weights[start : start + 2 + j]
        strength = [max(W[i][k] for k in ops) for i in range(2 + j)]
        # stable sort: ties go to the earlier input, so derivation is deterministic
        edges = sorted(range(2 + j), key=lambda i: -strength[i])[:2]
        for i in sorted(edges):
            best = max(ops, key=lambda k: W[i][k])
            gene.append((primitives[best], i))
        start += 2 + j
    return gene


def edge_normalization(beta: torch.Tensor, steps: int) -> torch.Tensor:
    """PC-DARTS' edge weights: softmax of the logits β (num_edges,) over the 2 + j incoming edges
    of each node j (DARTS edge order: node-major, then input)."""
    if beta.shape != (num_edges(steps),):
        raise ValueError(f"beta must have shape ({num_edges(steps)},) for steps={steps}, got {tuple(beta.shape)}")
    return torch.cat([torch.softmax(part, dim=0) for part in beta.split([2 + j for j in range(steps)])])


def derive_genotype(alpha_normal, alpha_reduce, steps: int = 4, multiplier: int = 4,
                    beta_normal=None, beta_reduce=None, primitives=None) -> Genotype:
    """The DARTS genotype of architecture logits α (softmax is taken here); given the edge logits β
    (PC-DARTS), the op weights of each edge are multiplied by its normalised β first. ``primitives``
    names α's columns (default: the registered PRIMITIVES)."""
    if (beta_normal is None) != (beta_reduce is None):
        raise ValueError("give both beta_normal and beta_reduce (PC-DARTS edge normalisation) or neither")
    concat = list(range(2 + steps - multiplier, steps + 2))

    def weights(alpha, beta):
        w = torch.softmax(torch.as_tensor(alpha).detach(), dim=-1)
        return w if beta is None else w * edge_normalization(torch.as_tensor(beta).detach(), steps)[:, None]

    return Genotype(
        normal=parse_alpha(weights(alpha_normal, beta_normal), steps, primitives),
        normal_concat=concat,
        reduce=parse_alpha(weights(alpha_reduce, beta_reduce), steps, primitives),
        reduce_concat=concat,
    )


def random_genotype(steps: int = 4, multiplier: int = 4, generator: torch.Generator | None = None) -> Genotype:
    """A genotype sampled uniformly: two distinct inputs per node, each a random non-none op."""
    ops = [p for p in PRIMITIVES if p != "none"]

    def cell():
        gene = []
        for j in range(steps):
            inputs = sorted(torch.randperm(2 + j, generator=generator)[:2].tolist())
            for i in inputs:
                gene.append((ops[int(torch.randint(len(ops), (1,), generator=generator))], i))
        return gene

    concat = list(range(2 + steps - multiplier, steps + 2))
    return Genotype(cell(), concat, cell(), concat)


def validate(genotype: Genotype) -> Genotype:
    """Check a genotype's ops and input indices; return it unchanged or raise ValueError."""
    for name in ("normal", "reduce"):
        gene = getattr(genotype, name)
        if len(gene) % 2:
            raise ValueError(f"{name} cell must list two (op, input) pairs per node, got {len(gene)} pairs")
        for n, (op, i) in enumerate(gene):
            if op not in PRIMITIVES or op == "none":
                allowed = ", ".join(p for p in PRIMITIVES if p != "none")
                raise ValueError(f"{name} cell: unknown op {op!r}; allowed: {allowed}")
            if not 0 <= int(i) < 2 + n // 2:
                raise ValueError(f"{name} cell: node {n // 2} cannot take input {i}; allowed 0..{1 + n // 2}")
        concat = getattr(genotype, f"{name}_concat")
        if not concat or max(concat) >= 2 + len(gene) // 2 or min(concat) < 0:
            raise ValueError(f"{name}_concat {list(concat)} names nodes outside 0..{1 + len(gene) // 2}")
    return genotype


def to_dict(genotype: Genotype) -> dict:
    return {
        "normal": [[op, int(i)] for op, i in genotype.normal],
        "normal_concat": [int(i) for i in genotype.normal_concat],
        "reduce": [[op, int(i)] for op, i in genotype.reduce],
        "reduce_concat": [int(i) for i in genotype.reduce_concat],
    }


def from_dict(d: dict) -> Genotype:
    """The Genotype of ``to_dict``'s form; ValueError naming the first malformed entry."""
    if not isinstance(d, dict):
        raise ValueError(f"a genotype must be a JSON object with keys normal, normal_concat, reduce, reduce_concat, "
                         f"got {type(d).__name__}")
    missing = {"normal", "normal_concat", "reduce", "reduce_concat"} - set(d)
    if missing:
        raise ValueError(f"genotype is missing {sorted(missing)}; expected keys normal, normal_concat, reduce, reduce_concat")
    genes = {}
    for name in ("normal", "reduce"):
        if not isinstance(d[name], list):
            raise ValueError(f"genotype {name!r} must be a list of [op, input] pairs, got {d[name]!r}")
        for n, entry in enumerate(d[name]):
            if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str)
                    or isinstance(entry[1], bool) or not isinstance(entry[1], int)):
                raise ValueError(f"genotype {name!r} entry {n} must be an [op, input] pair such as "
                                 f"[\"sep_conv_3x3\", 1], got {entry!r}")
        genes[name] = [(op, i) for op, i in d[name]]
        concat = d[f"{name}_concat"]
        if not isinstance(concat, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in concat):
            raise ValueError(f"genotype '{name}_concat' must be a list of node indices, got {concat!r}")
    return validate(Genotype(normal=genes["normal"], normal_concat=list(d["normal_concat"]),
                             reduce=genes["reduce"], reduce_concat=list(d["reduce_concat"])))


def _choices(genotype) -> set:
    """{(cell, node, op, input)}: the edges a genotype keeps, each node's two as an unordered pair."""
    g = from_dict(genotype) if isinstance(genotype, dict) else genotype
    return {(cell, n // 2, op, int(i)) for cell in ("normal", "reduce")
            for n, (op, i) in enumerate(getattr(g, cell))}


def genotype_distance(a, b) -> int:
    """How many of ``b``'s (node, op, input) choices ``a`` lacks, over both cells (0 iff they keep
    the same edges with the same ops; at most 2·steps per cell). Genotypes or their dict form."""
    return len(_choices(b) - _choices(a))


def save_genotype(genotype: Genotype, path) -> Path:
    """Write ``genotype`` as JSON (atomically: ``rnas_lib.runs.save_json``)."""
    return save_json(to_dict(genotype), path)


def load_genotype(path) -> Genotype:
    """The genotype saved at ``path``; FileNotFoundError or ValueError naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no genotype file at {path}; save one with save_genotype() or run notebook 05")
    try:
        return from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is not a valid genotype file: {err}") from None


def get_genotype(name_or_path) -> Genotype:
    """A published genotype by name (see PUBLISHED) or one saved as JSON."""
    if isinstance(name_or_path, Genotype):
        return validate(name_or_path)
    if name_or_path in PUBLISHED:
        return PUBLISHED[name_or_path]
    if str(name_or_path).endswith(".json"):
        return load_genotype(name_or_path)
    raise ValueError(
        f"unknown genotype {name_or_path!r}; use one of {', '.join(PUBLISHED)} or the path of a .json file"
    )


_C = [2, 3, 4, 5]
#: genotypes from the literature (DARTS, Liu et al. 2019; PC-DARTS, Xu et al. 2020), CIFAR-10 searches
PUBLISHED = {
    "DARTS_V1": Genotype(
        normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
                ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        normal_concat=_C,
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
        reduce_concat=_C,
    ),
    "DARTS_V2": Genotype(
        normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        normal_concat=_C,
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
        reduce_concat=_C,
    ),
    "PC_DARTS": Genotype(
        normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
                ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        normal_concat=_C,
        reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
                ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
        reduce_concat=_C,
    ),
}
