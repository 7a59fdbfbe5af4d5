"""What the notebooks show a reader: progress that ends as one static line, small Markdown tables,
paths relative to the project.

A saved notebook is read offline, where a progress bar is frozen at whatever it drew last ("0%"
in a static render). ``progress`` draws its bar as plain text in one display slot of the notebook
(updated in place while the loop runs) and, when the loop ends, replaces it by one line:
``train: 15 epochs in 41 s (test_acc=0.953)`` — the only thing a saved notebook shows. Outside a
notebook it is an ordinary text bar that is cleared at the end, followed by the same line.
A loop with nothing left to do (a finished run loaded from disk) shows nothing at all.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from tqdm.std import tqdm

from . import PROJECT_ROOT


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class _DisplaySlot:
    """A file-like target for tqdm that shows the latest line in one notebook output, updated in place."""

    def __init__(self):
        self.handle = None

    def show(self, text: str):
        from IPython.display import display

        if self.handle is None:
            self.handle = display({"text/plain": text}, raw=True, display_id=True)
        else:
            self.handle.update({"text/plain": text}, raw=True)

    def write(self, s: str):
        text = s.replace("\r", "\n").strip().split("\n")[-1].strip() if s.strip() else ""
        if text:
            self.show(text)

    def flush(self):
        pass


class progress(tqdm):
    """A tqdm bar that leaves one line behind: ``"<desc>: <n> <unit>s in <t> s"`` (with the last
    postfix) when it did any work, nothing when there was none or it was disabled.
    ``initial == total`` (nothing to do) disables the bar."""

    def __init__(self, iterable=None, desc: str | None = None, total=None, initial: int = 0, disable: bool = False,
                 unit: str = "it", **kwargs):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable) + initial
        nothing_to_do = total is not None and initial >= total
        self._summary = not disable and not nothing_to_do
        self._postfix_text = ""
        self._slot = _DisplaySlot() if _in_notebook() else None
        kwargs.setdefault("file", self._slot if self._slot is not None else sys.stderr)
        kwargs.setdefault("ascii", self._slot is not None)
        super().__init__(iterable, desc=desc, total=total, initial=initial, disable=disable or nothing_to_do,
                         unit=unit, leave=False, dynamic_ncols=False, ncols=80, **kwargs)

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        items = dict(ordered_dict or {}, **kwargs)
        self._postfix_text = ", ".join(f"{k}={v}" for k, v in items.items())
        if not self.disable:
            super().set_postfix(ordered_dict, refresh, **kwargs)

    def close(self):
        if not getattr(self, "_summary", False):
            return super().close()
        self._summary = False
        done = self.n - self.initial
        elapsed = self.format_dict["elapsed"]
        super().close()
        if done <= 0:
            return
        unit = self.unit if done == 1 or self.unit.endswith("s") else self.unit + "s"
        extra = f" ({self._postfix_text})" if self._postfix_text else ""
        seconds = f"{elapsed:.1f}" if elapsed < 10 else f"{elapsed:.0f}"
        line = f"{self.desc or 'done'}: {done} {unit} in {seconds} s{extra}"
        if self._slot is not None:
            self._slot.show(line)
        else:
            print(line, flush=True)


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
        return re.sub(r"(?<!\\)\|", r"\\|", str(value))  # a table's pipe, not LaTeX's \\|

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
