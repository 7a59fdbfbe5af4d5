"""Matplotlib figures shared by the notebooks. Each function draws one thing and returns the
matplotlib ``Axes`` (or ``Figure`` when it makes several panels); nothing here shows or blocks.

- ``draw_cell`` / ``draw_genotype``: a DARTS cell as a DAG (plain matplotlib, no graphviz).
- ``alpha_heatmap``, ``alpha_evolution``, ``op_mass``: softmax(α) per edge × op, over epochs.
- ``search_convergence``: α's entropy and the derived genotype's distance to the final one, per epoch.
- ``learning_curves``: losses and accuracies from a search or training history.
- ``image_grid``, ``perturbation_grid``, ``norm_balls_2d``: images, their ε-ball perturbations, unit balls in 2-D.
- ``adversarial_example``, ``accuracy_vs_eps``: one attacked image; robust accuracy against ε.
- ``certified_radius_hist``, ``attack_vs_certificate``: certified radii; attack vs certificate and their gap.
- ``bar_compare``: one bar panel per metric for a few architectures.
- ``study_scatter``, ``metric_by_method``, ``study_accuracy_vs_eps``: a study's table over seeds (notebook 09).
- ``confusion_matrix``: counts coloured by row fraction, readable on every cell.
- ``say_on_panel``: a sentence on an axes whose quantity is zero or below resolution.
- ``save_figure``: write a figure under ``runs/<tier>/figures/``.

One style for every notebook (``STYLE``, applied on import): mathtext labels such as
``$\\|J_k\\|_1$``, symmetric colour scales with a colour bar on perturbations δ, integer epoch
ticks, a grid, and a sentence on any panel whose quantity is zero or below the resolution.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from .genotypes import get_genotype
from .ops import OP_COLORS, PRIMITIVES  # OP_COLORS: one colour per registered primitive, the same in every figure
from .runs import run_dir


#: rcParams of the workbook's figures
STYLE = {"mathtext.fontset": "dejavusans", "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8,
         "ytick.labelsize": 8, "legend.fontsize": 8, "figure.dpi": 100, "axes.grid": False, "grid.alpha": 0.3,
         "image.interpolation": "nearest"}
plt.rcParams.update(STYLE)


def integer_epochs(ax):
    """Integer ticks on the x axis (epochs)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return ax


def say_on_panel(ax, text: str):
    """Write ``text`` across ``ax`` (e.g. "every radius is 0: nothing certified"), so that a panel
    whose quantity is zero or below the resolution says so instead of looking empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, wrap=True, transform=ax.transAxes,
            bbox=dict(boxstyle="round,pad=0.4", fc="#fff6d5", ec="0.6"))
    return ax


def _delta_panel(ax, d, scale: float, title: str | None = None):
    """δ on the symmetric colour scale [−scale, scale]; a zero δ is said in words."""
    im = ax.imshow(d, cmap="RdBu_r", vmin=-scale, vmax=scale)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=6)
    if not np.any(d):
        say_on_panel(ax, "δ = 0")
    return im


def _axes(ax, figsize):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def edge_names(steps: int = 4) -> list[str]:
    """Row labels of α in DARTS order (node-major, then input): c_{k-2}→0, c_{k-1}→0, c_{k-2}→1, …"""
    names = []
    for j in range(steps):
        for i in range(2 + j):
            names.append(f"{_node_label(i)}→{j}")
    return names


def _node_label(i: int) -> str:
    if i < 2:
        return "$c_{k-2}$" if i == 0 else "$c_{k-1}$"
    return str(i - 2)


# ----------------------------------------------------------------------------- cell DAGs
def _cell_layout(steps: int) -> dict:
    """Node positions: inputs on the left, intermediate nodes zig-zagging rightwards, c_{k} last."""
    pos = {0: (0.0, 2.0), 1: (0.0, -2.0), steps + 2: (2.0 + 1.7 * steps, 0.0)}
    for j in range(steps):
        pos[j + 2] = (2.0 + 1.7 * j, 1.1 if j % 2 == 0 else -1.1)
    return pos


def _bend(p0, p2, others, clearance: float = 0.55) -> float:
    """arc3 curvature for the edge p0→p2: 0 (straight) unless the segment passes within
    ``clearance`` of another node, then ±0.3, bulging away from that node."""
    (x1, y1), (x2, y2) = p0, p2
    dx, dy = x2 - x1, y2 - y1
    length2 = dx * dx + dy * dy
    for qx, qy in others:
        t = ((qx - x1) * dx + (qy - y1) * dy) / length2
        if 0.05 < t < 0.95:
            cross = dx * (qy - y1) - dy * (qx - x1)
            if abs(cross) / math.sqrt(length2) < clearance:
                return 0.3 if cross >= 0 else -0.3
    return 0.0


def draw_cell(genotype, reduction: bool = False, ax=None, title: str | None = None):
    """The normal (or reduction) cell of ``genotype`` as a DAG: inputs c_{k-2}, c_{k-1}, the
    intermediate nodes 0..steps-1, the output c_{k} (concatenation of ``*_concat``); every edge is
    labelled with its op. ``genotype``: a Genotype, a name in PUBLISHED, or a .json path."""
    genotype = get_genotype(genotype)
    gene = genotype.reduce if reduction else genotype.normal
    concat = genotype.reduce_concat if reduction else genotype.normal_concat
    steps = len(gene) // 2
    ax = _axes(ax, (1.3 * steps + 2.4, 3.8))
    pos = _cell_layout(steps)

    placed = [q for q in pos.values()]  # label centres so far (nodes count as taken)

    def arrow(a, b, color, label=None, lw=1.6, ls="-"):
        p0, p2 = np.asarray(pos[a]), np.asarray(pos[b])
        rad = _bend(tuple(p0), tuple(p2), [q for n, q in pos.items() if n not in (a, b)])
        ax.annotate("", xy=tuple(p2), xytext=tuple(p0),
                    arrowprops=dict(arrowstyle="-|>", color=color, lw=lw, ls=ls, shrinkA=14, shrinkB=14,
                                    connectionstyle=f"arc3,rad={rad}"))
        if label:
            # arc3 is the quadratic Bézier B(t) with control point mid + rad·(dy, −dx) (equal aspect);
            # the label sits at the t (tried from the middle outwards) farthest from labels and nodes
            d = p2 - p0
            ctrl = (p0 + p2) / 2 + rad * np.array([d[1], -d[0]])
            def point(t):
                return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t ** 2 * p2
            candidates = (0.5, 0.4, 0.6, 0.32, 0.68)
            clearance = [min(np.hypot(*(point(t) - np.asarray(q))) for q in placed) for t in candidates]
            t = next((t for t, c in zip(candidates, clearance) if c > 0.75), candidates[int(np.argmax(clearance))])
            m = point(t)
            tangent = 2 * (1 - t) * (ctrl - p0) + 2 * t * (p2 - ctrl)
            angle = math.degrees(math.atan2(tangent[1], tangent[0]))
            angle = angle - 180 if angle > 90 else angle + 180 if angle < -90 else angle
            placed.append(tuple(m))
            ax.text(m[0], m[1], label, fontsize=7, ha="center", va="center", color=color, rotation=angle,
                    rotation_mode="anchor", bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.85))

    for n, (op, i) in enumerate(gene):
        arrow(int(i), n // 2 + 2, OP_COLORS.get(op, "black"), op)
    for j in concat:
        arrow(int(j), steps + 2, "0.6", lw=1.0, ls="--")
    for node, (x, y) in pos.items():
        is_io = node < 2 or node == steps + 2
        label = "$c_{k}$" if node == steps + 2 else _node_label(node)
        ax.text(x, y, label, ha="center", va="center", fontsize=10,
                bbox=dict(boxstyle="round,pad=0.35", fc="#cfe3f7" if is_io else "#fdf1c9", ec="0.3"))
    xs = [x for x, _ in pos.values()]
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(-2.6, 2.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title if title is not None else ("reduction cell" if reduction else "normal cell"))
    return ax


def draw_genotype(genotype, title: str | None = None):
    """Normal and reduction cells of ``genotype`` side by side; returns the Figure."""
    genotype = get_genotype(genotype)
    steps = len(genotype.normal) // 2
    fig, axes = plt.subplots(1, 2, figsize=(2 * (1.3 * steps + 2.4), 3.8))
    draw_cell(genotype, False, axes[0])
    draw_cell(genotype, True, axes[1])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- α
def alpha_heatmap(weights, ax=None, title: str | None = None, colorbar: bool = True, labels: bool = True):
    """softmax(α) as an (edges × ops) heatmap; ``weights``: array (num_edges, |PRIMITIVES|)."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape[1] != len(PRIMITIVES):
        raise ValueError(f"weights must have shape (num_edges, {len(PRIMITIVES)}), got {w.shape}")
    steps = _steps_of(w.shape[0])
    ax = _axes(ax, (5, 0.32 * w.shape[0] + 1.5))
    im = ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0)
    spread = float(w.max() - w.min())
    if spread < 0.01:
        say_on_panel(ax, f"all weights within {spread:.1e} of each other:\nsoftmax(α) ≈ 1/{w.shape[1]} on every edge")
    if labels:
        ax.set_xticks(range(len(PRIMITIVES)), PRIMITIVES, rotation=90, fontsize=7)
        ax.set_yticks(range(w.shape[0]), edge_names(steps), fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def _steps_of(num_edges: int) -> int:
    steps, total = 0, 0
    while total < num_edges:
        total += 2 + steps
        steps += 1
    if total != num_edges:
        raise ValueError(f"{num_edges} rows is not the edge count of a DARTS cell (5, 9, 14, 20, …)")
    return steps


def _alpha_series(history, cell: str) -> np.ndarray:
    """(epochs, edges, ops) softmax weights of ``cell`` ('normal' | 'reduce') from a search history."""
    if cell not in ("normal", "reduce"):
        raise ValueError(f"cell must be 'normal' or 'reduce', got {cell!r}")
    if not history:
        raise ValueError("empty search history: run the search for at least one epoch (method 'random' has none)")
    return np.asarray([h[f"alpha_{cell}"] for h in history], dtype=float)


def alpha_evolution(history, cell: str = "normal", max_panels: int = 6):
    """A row of α heatmaps (shared colour scale) at up to ``max_panels`` epochs spread evenly
    from the first to the last, from a search ``history`` (list of per-epoch records)."""
    series = _alpha_series(history, cell)
    n = len(series)
    picks = sorted(set(np.linspace(0, n - 1, min(max_panels, n)).round().astype(int).tolist()))
    fig, axes = plt.subplots(1, len(picks), figsize=(1.9 * len(picks) + 1.6, 0.22 * series.shape[1] + 2.2),
                             squeeze=False, sharey=True)
    vmin, vmax = series.min(), series.max()  # one scale for all panels, stretched to the values seen
    for k, (ax, e) in enumerate(zip(axes[0], picks)):
        im = ax.imshow(series[e], cmap="viridis", aspect="auto", vmin=vmin, vmax=vmax)
        ax.set_title(f"epoch {history[e]['epoch']}", fontsize=9)
        ax.set_xticks(range(len(PRIMITIVES)), PRIMITIVES, rotation=90, fontsize=6)
        if k == 0:
            ax.set_yticks(range(series.shape[1]), edge_names(_steps_of(series.shape[1])), fontsize=6)
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.03, pad=0.02, label="softmax(α)")
    fig.suptitle(f"{cell} cell: op weights per edge over the search", fontsize=10)
    return fig


def op_mass(history, cell: str = "normal", ax=None):
    """Per-op mass vs epoch: the mean over edges of softmax(α)_o (the lines sum to 1)."""
    series = _alpha_series(history, cell)
    ax = _axes(ax, (5, 3.2))
    epochs = [h["epoch"] for h in history]
    for o, name in enumerate(PRIMITIVES):
        ax.plot(epochs, series[:, :, o].mean(axis=1), marker="o", ms=3, color=OP_COLORS[name], label=name)
    ax.axhline(1 / len(PRIMITIVES), color="0.7", ls=":", lw=1)
    ax.set_xlabel("epoch")
    integer_epochs(ax)
    ax.set_ylabel("mean softmax(α) over edges")
    ax.set_title(f"{cell} cell: op mass", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return ax


# ----------------------------------------------------------------------------- learning curves
def search_convergence(history, title: str | None = None):
    """Two panels from a search ``history``: the normalised entropy of softmax(α) per cell type
    (1 = uniform) and the number of the final genotype's choices each epoch's genotype lacks."""
    from .search import search_convergence as convergence

    conv = convergence(history)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    for cell, style in (("normal", "-o"), ("reduce", "--s")):
        left.plot(conv["epoch"], conv[f"entropy_{cell}"], style, ms=3, label=f"{cell} cell")
    left.axhline(1.0, color="0.7", ls=":", lw=1)
    left.set(xlabel="epoch", ylabel=r"$H(\mathrm{softmax}(\alpha))\,/\,\ln|\mathcal{O}|$",
             title="entropy of the op weights (1 = uniform)")
    left.legend()
    right.bar(conv["epoch"], conv["changes_to_final"], color="tab:blue")
    right.set(xlabel="epoch", ylabel="choices not in the final genotype",
              title="distance of the derived genotype to the final one")
    if not any(conv["changes_to_final"]):
        say_on_panel(right, "every epoch derived the final genotype")
    for ax in (left, right):
        integer_epochs(ax)
        ax.grid(True)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def learning_curves(history, title: str | None = None):
    """Loss (left) and accuracy (right) per epoch, for every ``*_loss`` / ``*_acc`` key that the
    history records (train/val for a search, train/test for training); returns the Figure."""
    if not history:
        raise ValueError("empty history: nothing to plot")
    epochs = [h["epoch"] for h in history]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in history[0]:
        values = [h.get(key) for h in history]
        if any(v is None for v in values):
            continue
        if key.endswith("_loss"):
            ax_l.plot(epochs, values, marker="o", ms=3, label=key[:-5])
        elif key.endswith("_acc"):
            ax_a.plot(epochs, values, marker="o", ms=3, label=key[:-4])
    ax_l.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_a.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_l, ax_a):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        integer_epochs(ax)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- ε-balls
def _image(ax, x, title=None, **kw):
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=float)
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)
    ax.imshow(np.clip(x, 0, 1), cmap="gray" if x.ndim == 2 else None, vmin=0, vmax=1, **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def image_grid(x, titles=None, ncols: int = 8, scale: float = 1.1):
    """Images ``x`` (N, C, H, W) in [0, 1] on a grid, optionally titled; returns the Figure."""
    n = len(x)
    if n == 0:
        raise ValueError("no images to show")
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, min(n, ncols), figsize=(scale * min(n, ncols), scale * nrows + 0.3),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < n:
            _image(ax, x[k], None if titles is None else str(titles[k]))
        else:
            ax.axis("off")
    fig.tight_layout()
    return fig


def perturbation_grid(x, rows: dict, eps, titles: dict | None = None):
    """Images under perturbations: column 0 is the clean image ``x`` (C, H, W) in [0, 1]; each row
    ``name → [x_1, …]`` shows the perturbed images x_k = clip(x + δ_k) at ``eps[k]``, and under them
    (second row of the pair) δ_k itself (the channel mean) on one symmetric colour scale per row,
    with its colour bar, so that the panels of a row compare. ``titles`` (name → one string per ε,
    e.g. the predictions) replaces the default 'ε = …' titles of that row. Returns the Figure."""
    eps = list(eps)
    fig, axes = plt.subplots(2 * len(rows), len(eps) + 1, figsize=(1.5 * (len(eps) + 1) + 0.6, 2.9 * len(rows)),
                             squeeze=False, layout="constrained")
    for r, (name, images) in enumerate(rows.items()):
        if len(images) != len(eps):
            raise ValueError(f"row {name!r} has {len(images)} images for {len(eps)} ε values")
        top, bottom = axes[2 * r], axes[2 * r + 1]
        _image(top[0], x, "clean")
        bottom[0].axis("off")
        bottom[0].text(0.5, 0.5, f"{name}\n\nδ = x' − x", ha="center", va="center", fontsize=8,
                       transform=bottom[0].transAxes)
        deltas = [np.asarray((xp - x).detach().cpu() if hasattr(xp, "detach") else xp - x, dtype=float).mean(axis=0)
                  for xp in images]
        scale = max(max(float(np.abs(d).max()) for d in deltas), 1e-8)
        for k, (e, xp, d) in enumerate(zip(eps, images, deltas)):
            title = titles[name][k] if titles and name in titles else f"ε = {e:.3g}"
            _image(top[k + 1], xp, title)
            im = _delta_panel(bottom[k + 1], d, scale,
                              f"max|δ| {np.abs(d).max():.2f}, ‖δ‖₂ {np.sqrt((d ** 2).sum()):.2f}")
        fig.colorbar(im, ax=list(bottom[1:]), fraction=0.025, pad=0.02, label="δ (pixels)")
    return fig


def norm_balls_2d(eps: float = 1.0, ax=None, matched: bool = True):
    """The ℓ∞ and ℓ2 balls of radius ε in 2-D, and (``matched``) the ℓ2 ball of the ℓ∞ ball's area
    (radius 2ε/√π) and the ℓ2 ball through the ℓ∞ corners (radius ε√2)."""
    ax = _axes(ax, (3.6, 3.6))
    t = np.linspace(0, 2 * math.pi, 200)
    ax.plot([-eps, eps, eps, -eps, -eps], [-eps, -eps, eps, eps, -eps], color="C0", lw=2, label="ℓ∞, radius ε")
    ax.plot(eps * np.cos(t), eps * np.sin(t), color="C1", lw=2, label="ℓ2, radius ε")
    if matched:
        r = 2 * eps / math.sqrt(math.pi)
        ax.plot(r * np.cos(t), r * np.sin(t), color="C1", ls="--", lw=1.2, label="ℓ2, same area as ℓ∞")
        r = eps * math.sqrt(2)
        ax.plot(r * np.cos(t), r * np.sin(t), color="C2", ls=":", lw=1.2, label="ℓ2 through the corners")
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.8)
    ax.axvline(0, color="0.85", lw=0.8)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("unit balls in 2-D", fontsize=10)
    lim = 1.8 * eps
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    return ax


# ----------------------------------------------------------------------------- comparisons
def bar_compare(table: dict, metrics=None, title: str | None = None):
    """One bar panel per metric (each on its own scale), one bar per architecture; ``table`` maps an
    architecture name to {metric: value} (a missing or None value leaves a gap). Returns the Figure."""
    names = list(table)
    if not names:
        raise ValueError("empty table: nothing to compare")
    metrics = list(metrics) if metrics is not None else list(dict.fromkeys(k for row in table.values() for k in row))
    fig, axes = plt.subplots(1, len(metrics), figsize=(0.6 + (0.5 * len(names) + 1.0) * len(metrics), 3.0),
                             squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, metric in zip(axes[0], metrics):
        values = [table[n].get(metric) for n in names]
        shown = [(k, v) for k, v in enumerate(values) if v is not None]
        bars = ax.bar([k for k, _ in shown], [v for _, v in shown], color=[colors[k % 10] for k, _ in shown])
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
        ax.margins(y=0.15)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_matrix(confusion, ax=None, title: str = "confusion matrix (test)", class_names=None):
    """``confusion[i, j]`` = images of true class i predicted as j, coloured by the fraction of row i
    (so every class reads on the same scale), each non-zero count written in white on dark cells and
    black on light ones. Returns the Axes."""
    c = np.asarray(confusion.cpu() if hasattr(confusion, "cpu") else confusion, dtype=float)
    k = c.shape[0]
    ax = _axes(ax, (0.42 * k + 1.6, 0.42 * k + 1.2))
    frac = c / np.maximum(c.sum(1, keepdims=True), 1)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if c[i, j]:
                ax.text(j, i, int(c[i, j]), ha="center", va="center", fontsize=8 if k <= 12 else 6,
                        color="white" if frac[i, j] > 0.5 else "black")
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    ax.set_xticks(range(k), names, fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    return ax


def save_figure(fig, tier: str, name: str):
    """Save ``fig`` as ``runs/<tier>/figures/<name>.png``; returns the path."""
    path = run_dir(tier, "figures") / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


# ----------------------------------------------------------------------------- attacks and certificates
def adversarial_example(model, x, y: int, x_adv, title: str | None = None, class_names=None):
    """Clean image, adversarial image, δ = x' − x and the class probabilities of both; returns the Figure."""
    import torch

    names = list(class_names) if class_names is not None else None
    with torch.no_grad():
        was = model.training
        model.eval()
        p = torch.softmax(model(torch.stack([x, x_adv])), dim=1).cpu().numpy()
        model.train(was)
    k = p.shape[1]
    label = (lambda c: names[c]) if names else str
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.4), gridspec_kw={"width_ratios": [1, 1, 1, 2.2]},
                             layout="constrained")
    _image(axes[0], x, f"clean: {label(int(p[0].argmax()))} ({p[0].max():.2f})")
    _image(axes[1], x_adv, f"attacked: {label(int(p[1].argmax()))} ({p[1].max():.2f})")
    d = np.asarray((x_adv - x).detach().cpu(), dtype=float).mean(axis=0)
    im = _delta_panel(axes[2], d, max(float(np.abs(d).max()), 1e-8))
    axes[2].set_title(f"δ: max|δ| {np.abs(d).max():.3f}, ‖δ‖₂ {np.sqrt((d ** 2).sum()):.3f}", fontsize=8)
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04)
    idx = np.arange(k)
    axes[3].bar(idx - 0.2, p[0], 0.4, label="clean", color="C0")
    axes[3].bar(idx + 0.2, p[1], 0.4, label="attacked", color="C3")
    axes[3].set_xticks(idx, [label(c) for c in idx], fontsize=7)
    axes[3].set_ylim(0, 1)
    axes[3].axvline(y, color="0.6", ls=":", lw=1)
    axes[3].set_title(f"probabilities (true class {label(y)})", fontsize=8)
    axes[3].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _norm_label(norm) -> str:
    return "ℓ∞" if norm in ("inf", float("inf")) else f"ℓ{norm}"


def accuracy_vs_eps(records, title: str | None = None):
    """Robust accuracy against ε from ``rnas_lib.attacks.evaluate`` records (each optionally with an
    "arch" key): one panel per norm, one colour per architecture, one line style per attack, and one
    legend (colours, then styles) beside the panels, clear of the curves."""
    from matplotlib.lines import Line2D

    records = list(records)
    if not records:
        raise ValueError("no records to plot")
    norms = list(dict.fromkeys(r["norm"] for r in records))
    archs = list(dict.fromkeys(r.get("arch", "") for r in records))
    attack_names = list(dict.fromkeys(r["attack"] for r in records))
    styles = dict(zip(attack_names, ("-o", "--s", ":^", "-.d", "-x", ":v")))
    fig, axes = plt.subplots(1, len(norms), figsize=(4.4 * len(norms) + 2.4, 3.4), squeeze=False, layout="constrained")
    for ax, norm in zip(axes[0], norms):
        for i, arch in enumerate(archs):
            for attack in attack_names:
                pts = sorted((r["eps"], r["accuracy"]) for r in records
                             if r["norm"] == norm and r.get("arch", "") == arch and r["attack"] == attack)
                if pts:
                    e, a = zip(*pts)
                    ax.plot(e, a, styles[attack], color=f"C{i % 10}", ms=4, lw=1.4)
        ax.set_xlabel(f"ε ({_norm_label(norm)}, pixel units)")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"accuracy under attack, {_norm_label(norm)}", fontsize=10)
    handles = [Line2D([], [], color=f"C{i % 10}", lw=2, label=arch) for i, arch in enumerate(archs) if arch]
    handles += [Line2D([], [], color="0.3", ls=styles[a][:-1], marker=styles[a][-1], ms=4, label=a) for a in attack_names]
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def certified_radius_hist(radii: dict, norm="inf", bins: int = 20, ax=None):
    """Histograms of certified radii, one per architecture (``radii``: name → array), on log-spaced
    bins when the positive radii span more than a factor 20; radius 0 (misclassified, or certified
    at no ε) is counted in the legend. Returns the Axes."""
    ax = _axes(ax, (4.6, 3.2))
    arrays = {k: np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=float) for k, v in radii.items()}
    if not arrays:
        raise ValueError("no radii to plot")
    positive = np.concatenate([a[a > 0] for a in arrays.values()])
    if positive.size == 0:
        say_on_panel(ax, "every radius is 0: no image certified at any ε\n(misclassified, or below the search's resolution)")
        return ax
    none = [name for name, a in arrays.items() if not np.any(a > 0)]
    lo, hi = float(positive.min()), float(positive.max())
    log = hi > 20 * lo
    edges = np.geomspace(lo, hi * 1.0001, bins + 1) if log else np.linspace(0, hi * 1.0001, bins + 1)
    for i, (name, a) in enumerate(arrays.items()):
        ax.hist(a[a > 0], bins=edges, histtype="step", lw=1.6, color=f"C{i % 10}",
                label=f"{name}: mean {a.mean():.3g}, {int((a == 0).sum())} at 0")
    if log:
        ax.set_xscale("log")
    if none:
        ax.text(0.98, 0.5, "no image certified:\n" + ", ".join(none), ha="right", va="center", fontsize=7,
                transform=ax.transAxes, bbox=dict(boxstyle="round,pad=0.3", fc="#fff6d5", ec="0.6"))
    ax.set_xlabel(f"certified radius ({_norm_label(norm)}, pixel units)")
    ax.set_ylabel("images")
    ax.legend(fontsize=7)
    ax.set_title(f"certified lower bounds, {_norm_label(norm)}", fontsize=10)
    return ax


def attack_vs_certificate(eps_grid, attacked: dict, certified: dict, norm="inf", attack: str = "PGD", ax=None):
    """Accuracy under attack (an upper bound on true robust accuracy) and certified accuracy (a lower
    bound) against ε, per architecture, with the gap between them shaded: the samples that no attack
    broke and no certificate covers. ``attacked``: name → accuracies on ``eps_grid``; ``certified``:
    name → accuracies, or name → {bound: accuracies} (one dashed style per bound; the gap is shaded
    from the highest of them, since every certificate is sound)."""
    ax = _axes(ax, (5.0, 3.4))
    eps_grid = np.asarray(eps_grid, dtype=float)
    for i, name in enumerate(attacked):
        lows = certified[name] if isinstance(certified[name], dict) else {None: certified[name]}
        up = np.asarray(attacked[name], dtype=float)
        lows = {bound: np.asarray(low, dtype=float) for bound, low in lows.items()}
        if any(a.shape != eps_grid.shape for a in (up, *lows.values())):
            raise ValueError(f"{name}: need one accuracy per ε ({len(eps_grid)}), got {up.shape} and "
                             f"{[a.shape for a in lows.values()]}")
        c = f"C{i % 10}"
        ax.plot(eps_grid, up, "-o", color=c, ms=3, label=f"{name}: {attack} accuracy")
        for k, (bound, low) in enumerate(lows.items()):
            ax.plot(eps_grid, low, ("--", ":", "-.")[k % 3], color=c,
                    label=f"{name}: certified accuracy" + (f" ({bound})" if bound else ""))
        ax.fill_between(eps_grid, np.max(list(lows.values()), axis=0), up, color=c, alpha=0.15)
    ax.set_xlabel(f"ε ({_norm_label(norm)}, pixel units)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    ax.set_title("attack vs certificate: the shaded gap is undecided", fontsize=10)
    return ax


# ----------------------------------------------------------------------------- studies (notebook 09)
def arch_colors(archs) -> dict:
    """One matplotlib cycle colour per architecture, in the order given (the studies' plots share them)."""
    return {a: f"C{i % 10}" for i, a in enumerate(archs)}


def study_scatter(table, x: str = "clean_acc", y: str = "pgd_linf_acc", xlabel: str | None = None,
                  ylabel: str | None = None, ax=None):
    """One point per run (``rnas_lib.sweep.aggregate``'s table), one colour per architecture, the
    mean over seeds as a larger outlined marker."""
    ax = _axes(ax, (5.2, 4.0))
    archs = list(dict.fromkeys(table["arch"]))
    colors = arch_colors(archs)
    for arch in archs:
        rows = table[table["arch"] == arch]
        ax.scatter(rows[x], rows[y], s=18, alpha=0.55, color=colors[arch])
        ax.scatter([rows[x].mean()], [rows[y].mean()], s=90, color=colors[arch], edgecolor="black", label=arch)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return ax


def metric_by_method(table, column: str, ylabel: str | None = None, ax=None):
    """Every run's value of ``column`` per architecture (dots), with the mean ± std over seeds."""
    ax = _axes(ax, (0.6 + 0.55 * table["arch"].nunique(), 3.2))
    archs = list(dict.fromkeys(table["arch"]))
    colors = arch_colors(archs)
    for k, arch in enumerate(archs):
        values = table.loc[table["arch"] == arch, column].to_numpy(dtype=float)
        ax.scatter(np.full(len(values), k) + np.linspace(-0.12, 0.12, len(values)), values, s=14,
                   color=colors[arch], alpha=0.7)
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        ax.errorbar([k + 0.3], [values.mean()], yerr=[std], fmt="o", color="black", ms=4, capsize=3)
    ax.set_xticks(range(len(archs)), archs, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel or column)
    ax.grid(alpha=0.3, axis="y")
    return ax


def study_accuracy_vs_eps(curves, attack: str = "pgd", norm: str = "inf", ax=None):
    """Accuracy against ε for one attack and norm (``rnas_lib.sweep.curves``): the mean over seeds
    per architecture, with a band of ± one std."""
    ax = _axes(ax, (5.2, 3.6))
    rows = curves[(curves["attack"] == attack) & (curves["norm"] == str(norm))]
    if rows.empty:
        raise ValueError(f"no {attack} records in ℓ{norm}; attacks present: {sorted(set(curves['attack']))}")
    archs = list(dict.fromkeys(rows["arch"]))
    colors = arch_colors(archs)
    for arch in archs:
        stats = rows[rows["arch"] == arch].groupby("eps")["accuracy"].agg(["mean", "std"]).fillna(0.0)
        ax.plot(stats.index, stats["mean"], "-o", ms=3, color=colors[arch], label=arch)
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                        color=colors[arch], alpha=0.15)
    ax.set_xlabel(f"ε ({_norm_label('inf' if str(norm) == 'inf' else norm)}, pixel units)")
    ax.set_ylabel(f"{attack.upper()} accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return ax
