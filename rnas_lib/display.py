"""What the notebooks show a reader: progress that ends as one static line, small Markdown tables,
paths relative to the project.

A saved notebook is read offline, where a progress bar is frozen at whatever it drew last ("0%"
in a static render). ``progress`` draws a bar while the loop runs, removes it when the loop ends
(``leave=False``) and prints one line instead: ``train: 15 epochs in 41 s (test_acc=0.953)``.
A loop with nothing left to do (a finished run loaded from disk) draws no bar at all.
"""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from . import PROJECT_ROOT


class progress(tqdm):
    """``tqdm.auto.tqdm`` that leaves no bar behind: on close it prints ``"<desc>: <n> <unit>s in
    <t> s"`` (with the last postfix) when it did any work, and nothing when there was none or it
    was disabled. ``initial == total`` (nothing to do) disables the bar."""

    def __init__(self, iterable=None, desc: str | None = None, total=None, initial: int = 0, disable: bool = False,
                 unit: str = "it", **kwargs):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable) + initial
        nothing_to_do = total is not None and initial >= total
        self._summary = not disable and not nothing_to_do
        self._postfix_text = ""
        super().__init__(iterable, desc=desc, total=total, initial=initial, disable=disable or nothing_to_do,
                         unit=unit, leave=False, **kwargs)

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        items = dict(ordered_dict or {}, **kwargs)
        self._postfix_text = ", ".join(f"{k}={v}" for k, v in items.items())
        if not self.disable:
            super().set_postfix(ordered_dict, refresh, **kwargs)

    def close(self):
        if getattr(self, "_summary", False):
            self._summary = False
            done = self.n - self.initial
            elapsed = self.format_dict["elapsed"]
            super().close()
            if done > 0:
                unit = self.unit if done == 1 or self.unit.endswith("s") else self.unit + "s"
                extra = f" ({self._postfix_text})" if self._postfix_text else ""
                print(f"{self.desc or 'done'}: {done} {unit} in {elapsed:.0f} s{extra}", flush=True)
            return
        super().close()


def relative(path) -> str:
    """``path`` relative to the project root when it lies inside the project, else its name only
    (a saved notebook shows no machine's absolute paths)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(PROJECT_ROOT.resolve()))
    except ValueError:
        return path.name


def markdown_table(rows, columns=None, formats: dict | None = None, index: str | None = None) -> str:
    """A Markdown table. ``rows``: a list of dicts (one row each), or a dict name → dict (the name
    in a first column headed ``index``) or name → value (two columns). ``formats``: column →
    format spec (e.g. ``".3f"``); other floats print with ``.4g``."""
    if isinstance(rows, dict):
        if all(isinstance(v, dict) for v in rows.values()):
            rows = [{index or "": k, **v} for k, v in rows.items()]
        else:
            rows = [{index or "name": k, "value": v} for k, v in rows.items()]
    rows = list(rows)
    if not rows:
        raise ValueError("markdown_table needs at least one row")
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    formats = formats or {}

    def cell(column, value):
        if value is None:
            return "—"
        if column in formats:
            return format(value, formats[column])
        if isinstance(value, float):
            return format(value, ".4g")
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
