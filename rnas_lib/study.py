"""Statistics of a study table (``rnas_lib.sweep.aggregate``): mean ± std over seeds, paired
comparisons against a baseline, the paper's figures next to rnas's, and a conclusion written from
the numbers (never typed in).

Paired comparison of method m with the baseline b on metric M: the per-seed differences
d_s = M(m, s) − M(b, s) over the seeds both have (the same seed gives both the same data split and
the same initial weights' random stream), and the two-sided **paired t-test** of mean(d) = 0:
t = mean(d) / (std(d) / √n) with n − 1 degrees of freedom (``scipy.stats.ttest_rel``). Why t: with
n = 5 pairs the exact Wilcoxon signed-rank test cannot give a two-sided p below 2/2⁵ = 0.0625, so it
could never reject at α = 0.05; the t-test can, at the price of assuming roughly normal
differences, which five seeds cannot check. The Wilcoxon p is reported next to it as the
distribution-free reading. Many comparisons are made at once: the conclusion states how many, and
the Bonferroni threshold α / (number of tests) next to α.
"""
from __future__ import annotations

import math

import numpy as np

#: the metrics compared across methods: column -> (label, higher is better)
METRICS = {
    "clean_acc": ("clean accuracy", True),
    "fgsm_linf_acc": ("FGSM ℓ∞ accuracy", True),
    "pgd_linf_acc": ("PGD ℓ∞ accuracy", True),
    "pgd_l2_acc": ("PGD ℓ2 accuracy", True),
    "cw_l2_acc": ("C&W ℓ2 accuracy", True),
    "autoattack_linf_acc": ("AutoAttack ℓ∞ accuracy", True),
    "cert_radius_linf": ("average certified radius ℓ∞", True),
    "cert_radius_l2": ("average certified radius ℓ2", True),
    "cert_acc_linf": ("certified accuracy ℓ∞", True),
    "cert_acc_l2": ("certified accuracy ℓ2", True),
    "search_seconds": ("search cost (s)", False),
    "params": ("parameters", None),
    "skip_normal": ("skip connections (normal cell)", None),
}
#: the metrics the comparisons against the baseline and the conclusion are about
#: (a table written before a metric existed lacks its column: each function uses the metrics present)
KEY_METRICS = ("clean_acc", "pgd_linf_acc", "pgd_l2_acc", "autoattack_linf_acc", "cert_radius_linf", "cert_radius_l2",
               "cert_acc_linf", "cert_acc_l2")
ROBUST_METHODS = ("dsrna_cb", "dsrna_jb", "dsrna_combined")


def label(table, column: str) -> str:
    """The metric's name, with its ε (pixel units) when it is a robust accuracy."""
    name = METRICS[column][0]
    eps_column = {"cert_acc_linf": "pgd_linf_eps", "cert_acc_l2": "pgd_l2_eps"}.get(column, column.replace("_acc", "_eps"))
    if column.endswith("_acc") and eps_column in table and len(table):
        eps = sorted(set(table[eps_column]))
        name += " at ε=" + "/".join(f"{e:.4g}" for e in eps)
    if column.startswith("cert_") and "cert_method" in table and len(table):
        name += f" ({'/'.join(sorted(set(table['cert_method'])))})"
    return name


def present(table, metrics) -> list[str]:
    """The ``metrics`` that are columns of ``table``, in order."""
    return [m for m in metrics if m in table.columns]


def _order(table) -> list[str]:
    seen = []
    for arch in table["arch"]:
        if arch not in seen:
            seen.append(arch)
    preferred = ["darts", "pcdarts", "random", *ROBUST_METHODS]
    return [a for a in preferred if a in seen] + [a for a in seen if a not in preferred]


def summarize(table, metrics=tuple(METRICS)):
    """Mean, std (ddof 1) and number of seeds per arch and metric: a DataFrame indexed by arch with
    columns (metric, "mean" | "std" | "n")."""
    import pandas as pd

    grouped = table.groupby("arch")
    parts = {}
    for m in present(table, metrics):
        values = grouped[m].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
        parts[m] = values
    summary = pd.concat(parts, axis=1)
    return summary.loc[_order(table)]


def summary_dict(table, metrics=tuple(METRICS)) -> dict:
    """``summarize`` as JSON-ready {arch: {metric: {"mean", "std", "n"}}} (None where undefined)."""
    summary = summarize(table, metrics)
    metrics = present(table, metrics)

    def clean(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    return {arch: {m: {k: clean(summary.loc[arch, (m, k)]) for k in ("mean", "std", "n")} for m in metrics}
            for arch in summary.index}


def format_summary(table, metrics=KEY_METRICS + ("search_seconds", "params", "skip_normal")):
    """"mean ± std" strings per arch and metric, columns named with their ε (``label``)."""
    import pandas as pd

    summary = summarize(table, metrics)
    metrics = present(table, metrics)
    out = pd.DataFrame(index=summary.index)
    for m in metrics:
        digits = 0 if m in ("params", "search_seconds") else None
        out[label(table, m)] = [_pm(summary.loc[a, (m, "mean")], summary.loc[a, (m, "std")], digits)
                                for a in summary.index]
    out["seeds"] = summary[(metrics[0], "n")].astype(int)
    return out


def _num(v, digits=None) -> str:
    """Fixed ``digits`` decimals, or 4 significant digits (small radii stay readable: 9.1e-06)."""
    return f"{v:.{digits}f}" if digits is not None else f"{v:.4g}"


def _pm(mean, std, digits=None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or math.isnan(std):
        return _num(mean, digits)
    return f"{_num(mean, digits)} ± {_num(std, digits)}"


def paired_differences(table, arch: str, baseline: str, metric: str) -> np.ndarray:
    """d_s = metric(arch, s) − metric(baseline, s) over the seeds both have, in seed order."""
    a = table[table["arch"] == arch].set_index("seed")[metric]
    b = table[table["arch"] == baseline].set_index("seed")[metric]
    seeds = sorted(set(a.index) & set(b.index))
    return np.array([a[s] - b[s] for s in seeds], dtype=float)


def paired_tests(table, baseline: str = "darts", metrics=KEY_METRICS):
    """One row per (arch ≠ baseline, metric): n pairs, mean and std of the differences, the paired
    t statistic and its two-sided p, and the Wilcoxon signed-rank p (NaN where undefined: fewer than
    two pairs, or all differences equal)."""
    import pandas as pd
    from scipy import stats

    if baseline not in set(table["arch"]):
        raise ValueError(f"the baseline {baseline!r} has no finished runs; archs in the table: {sorted(set(table['arch']))}")
    rows = []
    for arch in _order(table):
        if arch == baseline:
            continue
        for m in present(table, metrics):
            d = paired_differences(table, arch, baseline, m)
            n = len(d)
            t = p = p_w = math.nan
            if n >= 2 and np.std(d) > 0:
                t, p = stats.ttest_rel(d, np.zeros(n))
                p_w = stats.wilcoxon(d).pvalue if np.any(d != 0) else math.nan
            rows.append({"arch": arch, "metric": m, "n": n, "mean_diff": float(d.mean()) if n else math.nan,
                         "std_diff": float(d.std(ddof=1)) if n >= 2 else math.nan,
                         "t": float(t), "p_ttest": float(p), "p_wilcoxon": float(p_w)})
    return pd.DataFrame(rows, columns=["arch", "metric", "n", "mean_diff", "std_diff", "t", "p_ttest", "p_wilcoxon"])


def conclusion(table, tests, baseline: str = "darts", alpha: float = 0.05) -> str:
    """The study's conclusion as Markdown, every number computed from ``table`` and ``tests``."""
    summary = summarize(table, KEY_METRICS)
    archs = list(summary.index)
    seeds = sorted(set(table["seed"]))
    lines = [f"**Data.** {len(table)} finished runs: {len(archs)} architectures ({', '.join(archs)}) × "
             f"seeds {', '.join(map(str, seeds))}; tier {', '.join(sorted(set(table['tier'])))}, dataset "
             f"{', '.join(sorted(set(table['dataset'])))}; robust accuracies on {int(table['n_eval'].min())}"
             + (f"–{int(table['n_eval'].max())}" if table['n_eval'].nunique() > 1 else "") + " test images."]
    lines.append("")
    lines.append("**Best mean per metric** (mean ± std over seeds):")
    for m in present(table, KEY_METRICS):
        means = summary[(m, "mean")].dropna()
        if means.empty:
            continue
        top = means[means == means.max()].index.tolist()
        shown = lambda a: f"{a} {_pm(means[a], summary.loc[a, (m, 'std')])}"  # noqa: E731
        if len(top) == len(means) and len(top) > 1:
            lines.append(f"- {label(table, m)}: all equal, {_num(means.max())}")
            continue
        text = f"- {label(table, m)}: " + (f"**{top[0]}** {_pm(means[top[0]], summary.loc[top[0], (m, 'std')])}"
                                          if len(top) == 1 else "tie between " + ", ".join(f"**{a}**" for a in top)
                                          + f" at {_num(means.max())}")
        rest = means.drop(top)
        if not rest.empty:
            text += f" (next: {shown(rest.idxmax())})"
        if baseline in means.index and baseline not in top and baseline != rest.idxmax():
            text += f"; {shown(baseline)}"
        lines.append(text)
    valid = tests.dropna(subset=["p_ttest"])
    k = len(valid)
    lines.append("")
    lines.append(f"**Against {baseline}, same seeds** (paired t-test, two-sided; Wilcoxon p in brackets). "
                 + (f"{k} tests with a defined p; at α = {alpha} about {alpha * k:.1f} would come out significant "
                    f"by chance alone; Bonferroni threshold α/{k} = {alpha / k:.4f}." if k else
                    "No test has a defined p (a test needs at least 2 common seeds with differences that vary)."))
    for arch in [a for a in ROBUST_METHODS if a in set(tests["arch"])]:
        parts = []
        for _, r in tests[tests["arch"] == arch].iterrows():
            diff = f"{r['mean_diff']:+.4g}" + (f" ± {r['std_diff']:.4g}" if r["n"] >= 2 else "")
            if math.isnan(r["p_ttest"]):
                verdict = "no test (fewer than 2 pairs or identical differences)"
            else:
                direction = "higher" if r["mean_diff"] > 0 else "lower"
                verdict = (f"p = {r['p_ttest']:.3g} [{r['p_wilcoxon']:.3g}]: "
                           + (f"**{direction}** at α = {alpha}" + (" (also after Bonferroni)"
                                                                   if r["p_ttest"] < alpha / max(k, 1) else "")
                              if r["p_ttest"] < alpha else f"no difference detectable at α = {alpha}"))
            parts.append(f"{METRICS[r['metric']][0]} {diff} (n = {r['n']}; {verdict})")
        lines.append(f"- **{arch} − {baseline}**: " + "; ".join(parts) + ".")
    significant = valid[valid["p_ttest"] < alpha]
    wins = significant[significant["mean_diff"] > 0]
    losses = significant[significant["mean_diff"] < 0]
    lines.append("")
    lines.append(f"**In short.** Of {k} paired comparisons against {baseline}, {len(wins)} show a method "
                 f"significantly higher ({', '.join(f'{a} on {METRICS[m][0]}' for a, m in zip(wins['arch'], wins['metric'])) or 'none'}) "
                 f"and {len(losses)} significantly lower "
                 f"({', '.join(f'{a} on {METRICS[m][0]}' for a, m in zip(losses['arch'], losses['metric'])) or 'none'}) "
                 f"at α = {alpha}, with {len(seeds)} seed{'s' if len(seeds) != 1 else ''} in the table.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the paper's figures
#: what docs/paper.md records of the paper's figures: (what, method, dataset, value, unit, letter, column)
PAPER_FIGURES = (
    ("clean accuracy", "dsrna_combined", "cifar10", 97.51, "%", "B", "clean_acc"),
    ("PGD-100 accuracy (norm and ε not known)", "dsrna_combined", "cifar10", 60.71, "%", "B", "pgd_linf_acc"),
    ("FGSM accuracy (ε not known)", "dsrna_combined", "cifar10", 70.32, "%", "B", "fgsm_linf_acc"),
    ("C&W accuracy (ε not known)", "dsrna_combined", "cifar10", 64.76, "%", "B", "cw_l2_acc"),
    ("AutoAttack-ℓ2 accuracy (ε not known)", "dsrna_combined", "cifar10", 64.51, "%", "B", None),
    ("clean accuracy", "dsrna_combined", "mnist", 99.40, "%", "B", "clean_acc"),
    ("average certified ℓ2 lower bound", "dsrna_cb", "mnist", 0.4288, "pixel units?", "B", "cert_radius_l2"),
    ("search cost, DSRNA-CB / DSRNA-JB", "dsrna_cb/dsrna_jb", "cifar10", 4 / 0.4, "ratio of GPU-days", "B",
     "search_seconds"),
    ("search cost, DSRNA-CB / DSRNA-JB", "dsrna_cb/dsrna_jb", "mnist", 1 / 0.2, "ratio of GPU-days", "B",
     "search_seconds"),
)
PAPER_SIZES = {"search": "8 cells, C=16, 50 epochs", "final": "20 cells, C=36, 600 epochs"}


def paper_comparison(table, tier):
    """The paper's figures (docs/paper.md, with their confidence letter) next to rnas's value for the
    same method and quantity, and the reasons the two are or are not comparable."""
    import pandas as pd

    summary = summarize(table, tuple(dict.fromkeys(c for *_, c in PAPER_FIGURES if c)))
    datasets = sorted(set(table["dataset"]))
    rows = []
    for what, method, dataset, value, unit, letter, column in PAPER_FIGURES:
        reasons = []
        if dataset not in datasets:
            reasons.append(f"dataset: the paper's {dataset}, rnas's {'/'.join(datasets)}")
        if tier.name != "paper":
            reasons.append(f"size: rnas {tier.name} tier (search C={tier.search_C}, {tier.search_layers} cells; "
                           f"final C={tier.train_C}, {tier.train_layers} cells) vs the paper's "
                           f"{PAPER_SIZES['search']} / {PAPER_SIZES['final']}")
        if column in ("pgd_linf_acc", "fgsm_linf_acc", "cw_l2_acc") or column is None:
            reasons.append("ε (and for PGD the norm) of the paper's attack not known")
        if column is None:
            reasons.append("rnas runs AutoAttack in ℓ∞ only")
        if column == "cert_radius_l2":
            reasons.append("verifier: the paper's CNN-Cert-style bound vs rnas's "
                           + "/".join(sorted(set(table["cert_method"]))))
        ours = math.nan
        if column == "search_seconds":
            cb, jb = (summary.loc[a, (column, "mean")] if a in summary.index else math.nan
                      for a in ("dsrna_cb", "dsrna_jb"))
            ours = cb / jb if jb and not math.isnan(jb) else math.nan
            reasons.append("hardware differs, but a ratio of costs on one machine is comparable in kind")
        elif column is not None and method in summary.index:
            ours = summary.loc[method, (column, "mean")] * (100 if unit == "%" else 1)
        comparable = "no" if any(r.startswith(("dataset", "ε")) for r in reasons) or column is None else (
            "partly" if reasons else "yes")
        rows.append({"figure": what, "method": method, "dataset": dataset, "paper": value, "unit": unit,
                     "confidence": letter, "rnas (mean over seeds)": ours, "comparable": comparable,
                     "why": "; ".join(reasons) or "same quantity, dataset and size"})
    return pd.DataFrame(rows)
