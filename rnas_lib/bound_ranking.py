"""How the choice of bound changes a study's certified radii, and the ranking of architectures by them.

A study certifies every run with several bounds on the same images (``EvalSettings.certify_method``
and ``certify_also``); its table holds the average certified radius of each bound b in the columns
``cert_radius_<norm>_<b>`` (``rnas_lib.sweep.cert_column``). Per architecture a, r_b(a) is the mean
over seeds of that radius.

- **Rank agreement.** Two bounds rank the architectures alike when the Spearman correlation of r_b
  and r_b' across architectures is near 1: ρ = 1 − 6 Σ d_a² / (n (n² − 1)), d_a the difference of
  a's ranks under the two bounds (no ties); Kendall's τ = (concordant − discordant pairs) / (n (n − 1) / 2).
- **Looseness.** r_ref(a) / r_b(a): how many times the radius of the tighter reference bound (full
  CROWN) is the radius of bound b on architecture a. A bound that is equally loose on every cell keeps
  the ranking (a constant factor); one whose looseness differs between cells reorders them, and a
  certified-radius column computed with it ranks the cells partly by how easy they are to bound.
"""
from __future__ import annotations

import math

import numpy as np

from .study import summarize

NORMS = ("linf", "l2")


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS} (the table's column suffixes), got {norm!r}")


def with_bound_columns(table):
    """``table`` with the headline radii (``cert_radius_<norm>`` of ``cert_method``) also under their
    per-bound columns where those are missing (a table aggregated before the runs certified with
    several bounds)."""
    from .sweep import cert_column

    table = table.copy()
    if "cert_method" in table.columns:
        for method in set(table["cert_method"].dropna()):
            rows = table["cert_method"] == method
            for norm in NORMS:
                column = cert_column(method, norm)
                if column not in table.columns:
                    table[column] = np.nan
                table.loc[rows, column] = table.loc[rows, column].fillna(table.loc[rows, f"cert_radius_{norm}"])
    return table


def bounds_in(table) -> list[str]:
    """The certificate methods whose radii ``table`` holds, cheapest first."""
    from .sweep import cert_columns

    return list(cert_columns(with_bound_columns(table)))


def headline(table) -> str:
    """The bound behind the table's headline radius columns (``cert_method``), one for every run."""
    methods = sorted(set(table["cert_method"].dropna()))
    if len(methods) != 1:
        raise ValueError(f"the runs' headline radii come from {methods or 'no'} bound(s); re-evaluate the study "
                         "with one certify_method (make sweep SWEEP_ARGS=\"--evaluate certify_method=crown\")")
    return methods[0]


def mean_radii(table, norm: str = "linf"):
    """r_b(a): the mean over seeds of the average certified radius, one row per architecture (the
    study's order), one column per bound."""
    import pandas as pd

    from .sweep import cert_column

    _check_norm(norm)
    methods = bounds_in(table)
    if not methods:
        raise ValueError("the table holds no per-bound radius columns (cert_radius_<norm>_<method>); "
                         "aggregate it again with rnas_lib.sweep.aggregate")
    columns = [cert_column(m, norm) for m in methods]
    means = summarize(with_bound_columns(table), columns).loc[:, [(c, "mean") for c in columns]]
    return pd.DataFrame(means.to_numpy(dtype=float), index=means.index, columns=methods)


def ranks(table, norm: str = "linf"):
    """The rank of every architecture under every bound (1: the largest mean radius; ties share the
    mean rank)."""
    return mean_radii(table, norm).rank(ascending=False, method="average")


def rank_correlations(table, norm: str = "linf"):
    """One row per pair of bounds: the number of architectures and the Spearman ρ and Kendall τ of
    their mean radii across architectures (scipy.stats; NaN with fewer than 3 architectures)."""
    import pandas as pd
    from scipy import stats

    means = mean_radii(table, norm)
    rows = []
    methods = list(means.columns)
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            pair = means[[a, b]].dropna()
            rho = tau = math.nan
            if len(pair) >= 3:
                rho = float(stats.spearmanr(pair[a], pair[b]).statistic)
                tau = float(stats.kendalltau(pair[a], pair[b]).statistic)
            rows.append({"norm": norm, "bound_a": a, "bound_b": b, "n_archs": len(pair), "spearman": rho,
                         "kendall": tau})
    return pd.DataFrame(rows, columns=["norm", "bound_a", "bound_b", "n_archs", "spearman", "kendall"])


def looseness(table, norm: str = "linf", reference: str | None = None):
    """r_reference(a) / r_b(a) per architecture and bound (inf where bound b certifies nothing);
    reference None: the table's headline bound."""
    reference = reference or headline(table)
    means = mean_radii(table, norm)
    if reference not in means.columns:
        raise ValueError(f"no {reference!r} radii in the table; bounds there: {', '.join(means.columns)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return means.rdiv(means[reference], axis=0)


def plot_radius_by_bound(table, norm: str = "linf", axes=None):
    """One panel per bound: every run's average certified radius per architecture (dots) and the mean ±
    std over seeds, on one logarithmic scale shared by the panels. Returns the axes."""
    import matplotlib.pyplot as plt

    from .plots import metric_by_method
    from .sweep import cert_column

    methods = bounds_in(table)
    _check_norm(norm)
    if axes is None:
        _, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.6), sharey=True, squeeze=False)
        axes = axes[0]
    table = with_bound_columns(table)
    values = table[[cert_column(m, norm) for m in methods]].to_numpy(dtype=float)
    positive = values[values > 0]
    for ax, method in zip(axes, methods):
        metric_by_method(table, cert_column(method, norm),
                         f"average certified radius {'ℓ∞' if norm == 'linf' else 'ℓ2'}", ax=ax)
        ax.set_yscale("log")
        if positive.size:
            ax.set_ylim(positive.min() / 2, positive.max() * 2)
        ax.set_title(method)
    return axes


def plot_rank_change(table, norm: str = "linf", ax=None):
    """The rank of every architecture (1: largest mean radius) under each bound, cheapest bound left:
    crossing lines are architectures that the choice of bound reorders."""
    import matplotlib.pyplot as plt

    from .plots import arch_colors

    r = ranks(table, norm)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 + 1.6 * r.shape[1], 3.8))
    colors = arch_colors(list(dict.fromkeys(table["arch"])))  # the colours of plot_radius_by_bound
    x = np.arange(r.shape[1])
    for arch, row in r.iterrows():
        ax.plot(x, row.to_numpy(), "-o", color=colors[arch], ms=4)
        ax.annotate(arch, (x[-1], row.iloc[-1]), xytext=(6, 0), textcoords="offset points", va="center",
                    fontsize=7, color=colors[arch])
    ax.set_xticks(x, list(r.columns))
    ax.set_xlim(-0.3, x[-1] + 0.9)
    ax.invert_yaxis()
    ax.set_ylabel(f"rank by mean radius {'ℓ∞' if norm == 'linf' else 'ℓ2'} (1: largest)")
    ax.grid(alpha=0.3, axis="y")
    return ax


def summary_text(table, reference: str | None = None) -> str:
    """Markdown, every number computed from ``table``: per norm, the ranking under the reference bound
    (None: the headline bound), each other bound's rank correlation with it, and where its looseness
    is largest and smallest."""
    reference = reference or headline(table)
    lines = []
    for norm in NORMS:
        means = mean_radii(table, norm)
        if reference not in means.columns:
            raise ValueError(f"no {reference!r} radii in the table; bounds there: {', '.join(means.columns)}")
        name = "ℓ∞" if norm == "linf" else "ℓ2"
        order = means[reference].sort_values(ascending=False)
        lines.append(f"**{name}, ranked by {reference}:** " + " > ".join(f"{a} {v:.3g}" for a, v in order.items()) + ".")
        correlations = rank_correlations(table, norm)
        loose = looseness(table, norm, reference)
        for method in [m for m in means.columns if m != reference]:
            pair = correlations[((correlations["bound_a"] == method) & (correlations["bound_b"] == reference))
                                | ((correlations["bound_a"] == reference) & (correlations["bound_b"] == method))].iloc[0]
            ratio = loose[method].replace(np.inf, np.nan).dropna()
            text = (f"- {method}: Spearman ρ = {pair['spearman']:.2f}, Kendall τ = {pair['kendall']:.2f} with "
                    f"{reference} across {pair['n_archs']} architectures")
            if not ratio.empty:
                text += (f"; {reference} certifies {ratio.min():.3g}× its radius on {ratio.idxmin()} but "
                         f"{ratio.max():.3g}× on {ratio.idxmax()}")
            lines.append(text + ".")
        lines.append("")
    return "\n".join(lines).strip()


# --------------------------------------------------------------------------- why the bounds disagree
def relaxation_profile(model, x, eps: float | None = None, samples: int = 64, seed: int = 0) -> dict:
    """What a bound must relax in ``model`` on the images ``x`` (B, C, H, W):

    - ``depth``: the most ReLU and max-pool nodes on one path from the input to the logits (each
      relaxation's error is carried through every later layer, so looseness compounds with it);
    - ``relu_neurons`` and ``maxpool_neurons``: the relaxed neurons of one image;
    - with ``eps``: ``sign_changing_relus``, the mean over images of the ReLU inputs whose sign
      differs between the clean image and ``samples`` random corners of its ℓ∞ ball of radius eps.
      Such a ReLU is unstable under every sound bound, so this is a lower bound on the unstable
      ReLUs any bound must relax at that ε.
    """
    import torch

    from .bounds import trace
    from .certify.primitives import MaxPool, ReLU

    with torch.no_grad():
        g = trace(model, x[:1])
    longest = [0] * len(g.ops)
    for i in range(1, len(g.ops)):
        below = max((longest[j] for j in g.inputs[i]), default=0)
        longest[i] = below + int(isinstance(g.ops[i], (ReLU, MaxPool)))
    count = lambda kind: sum(g.values[i][0].numel() for i, op in enumerate(g.ops) if isinstance(op, kind))  # noqa: E731
    out = {"depth": max(longest), "relu_neurons": count(ReLU), "maxpool_neurons": count(MaxPool)}
    if eps is not None:
        out["sign_changing_relus"] = _sign_changing_relus(model, x, eps, samples, seed)
    return out


def _sign_changing_relus(model, x, eps: float, samples: int, seed: int) -> float:
    """Mean over images of the ReLU inputs (every nn.ReLU of ``model``) whose sign differs between x and
    some of ``samples`` random corners x + eps·s (s ∈ {−1, 1}ⁿ, clipped to [0, 1])."""
    import torch

    signs = []
    hooks = [m.register_forward_hook(lambda _m, inp, _out: signs.append(inp[0] > 0))
             for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            model(x)
            clean, changed = list(signs), None
            for _ in range(samples):
                signs.clear()
                corner = torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1
                model((x + eps * corner).clamp(0, 1))
                flips = [(a != b).flatten(1) for a, b in zip(clean, signs)]
                changed = flips if changed is None else [c | f for c, f in zip(changed, flips)]
    finally:
        for h in hooks:
            h.remove()
    return float(sum(c.sum(1).float() for c in changed).mean()) if changed else 0.0
