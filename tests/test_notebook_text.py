"""The notebooks' text states no typed-in results, and points only to files the project has.

**Typed-in numbers.** A number a reader takes as a result (an accuracy, a ratio, "about 2.7") must
come from a code cell (rendered with ``IPython.display.Markdown`` from the variable), never be
typed into a markdown cell, where it drifts when the code changes. ``typed_numbers`` removes
from a markdown cell everything in the allow-list below and reports every digit that is left.

Allowed (not results):
- mathematics: ``$…$`` and ``$$…$$`` (equations, constants such as $1/255$, $\\gamma = 0.01$);
- code: inline code spans and fenced blocks (parameter names, commands, ``sep_conv_3x3``);
- section numbers in headings (``## 3. …``), ordered-list markers (``1. …``), references to
  sections (``section 4``, ``sections 2–4``);
- notebook names and numbers (``notebook 05``, ``notebooks 03 and 08``, ``00–09``, ``05_robust_search``);
- citations: four-digit years 1900–2099 (``Liu et al. 2019``, ``CVPR 2021``) and arXiv ids (``2012.06122``);
- digits glued to letters or an underscore, i.e. inside a name or a symbol: ℓ1/ℓ2/ℓ∞ norms,
  ``DARTS_V2``, ``C&W-ℓ2``, ``x2``;
- dataset names (``CIFAR-10``, ``CIFAR-100``) and image shapes (``8×8``, ``32×32×3``), ``2-D``/``3-D``;
- rows of tables that quote the paper with a confidence letter (a last column ``A``–``D``, the
  letters of docs/paper.md) and rows of the tier table (first column a tier name).

``CHECKED`` lists the notebooks the test covers; a notebook joins it once its text is clean.
"""
import json
import re

import pytest

from rnas_lib.runs import notebooks

NOTEBOOKS = {p.stem[:2]: p for p in notebooks()}
#: notebooks whose markdown is checked for typed-in numbers
CHECKED = sorted({"00", "01", "02", "03", "04", "05", "06", "07", "08", "09"} & set(NOTEBOOKS))

_ALLOWED = [
    r"```.*?```",                                   # fenced code
    r"`[^`]*`",                                     # inline code
    r"\$\$.*?\$\$", r"\$[^$]*\$",                   # display and inline maths
    r"^\s*#+\s*\d+(\.\d+)*\.?",                     # heading numbers
    r"^\s*\**\d+\.\**\s",                            # ordered-list markers (also bold)
    r"(?i:\bsections?)\s+\d+(\s*(,|–|-|and|or)\s*\d+)*",  # section references
    r"(?i:\bnotebooks?)\s+\d{2}(\s*(,|–|-|and|or|to)\s*\d{2})*",  # notebook references
    r"\b\d{2}\s*[–-]\s*\d{2}\b(?=\))",              # "(00–09)"
    r"\b\d{2}_\w+",                                 # notebook file names
    r"\b\d{4}\.\d{4,5}\b",                          # arXiv ids
    r"\b(19|20)\d{2}\b",                            # years
    r"\bCIFAR-1?\d0\b",                             # dataset names
    r"\d+(×\d+)+",                                  # image shapes
    r"\b\d-D\b",                                    # 2-D, 3-D
    r"[A-Za-z_ℓ]+\d[\w∞]*",                        # digits inside names and symbols
]
_ALLOWED_RE = re.compile("|".join(f"(?:{p})" for p in _ALLOWED), re.MULTILINE | re.DOTALL)
_PAPER_ROW = re.compile(r"^\|.*\|\s*[ABCD]\s*\|\s*$")
_TIER_ROW = re.compile(r"^\|\s*\**`?(smoke|tutorial|paper)`?\**\s*\|")


def typed_numbers(markdown: str) -> list[tuple[str, str]]:
    """The numbers left in ``markdown`` once the allow-list (module docstring) is removed, each as
    (number, the text around it)."""
    lines = [line for line in markdown.splitlines() if not (_PAPER_ROW.match(line) or _TIER_ROW.match(line))]
    rest = _ALLOWED_RE.sub(" ", "\n".join(lines))
    return [(m.group(), rest[max(0, m.start() - 30): m.end() + 30].replace("\n", " "))
            for m in re.finditer(r"\d+(?:\.\d+)?", rest)]


def markdown_cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("number", CHECKED)
def test_no_typed_in_numbers(number):
    found = [(i, hit) for i, text in enumerate(markdown_cells(NOTEBOOKS[number])) for hit in typed_numbers(text)]
    assert not found, f"{NOTEBOOKS[number].name}: numbers typed into markdown (render them from code): {found}"


@pytest.mark.parametrize("text, typed", [
    ("accuracy drops by a few points (about 2.7)", ["2.7"]),
    ("PGD-10 typically overestimates by 3 points", ["10", "3"]),
    ("ln 10 = 2.303 at chance", ["10", "2.303"]),
    ("## 3. Training\nnotebooks 03 and 08, see section 4; `eps = 0.1`; $\\gamma = 0.01$", []),
    ("ℓ∞ and ℓ2 balls on 8×8 digits (Liu et al. 2019, arXiv 2012.06122), DARTS_V2, CIFAR-10", []),
    ("| γ = 0.01 is the reported value | B |", []),
    ("| γ = 0.01 is the reported value | ours |", ["0.01"]),
])
def test_typed_numbers_finds_results_and_allows_the_rest(text, typed):
    """The scanner itself: it must flag typed results and pass the allow-list's cases."""
    assert [number for number, _ in typed_numbers(text)] == typed


_NOTEBOOK_REF = re.compile(r"(?i:\bnotebooks?)\s+(\d{2}(?:\s*(?:,|–|-|and|or|to)\s*\d{2})*)")


def referenced_notebooks(text: str) -> set[str]:
    """Notebook numbers named in ``text`` ("notebook 05", "notebooks 03 and 08", "07_…")."""
    numbers = {n for group in _NOTEBOOK_REF.findall(text) for n in re.findall(r"\d{2}", group)}
    return numbers | set(re.findall(r"`(\d{2})_\w+`", text))


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_references_point_into_the_project(path):
    """No notebook cites a file users do not have (the paper notes live in docs/paper.md) or a
    notebook the workbook does not contain."""
    text = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
    assert "PAPER.md" not in text, f"{path.name} cites PAPER.md; cite docs/paper.md"
    missing = referenced_notebooks(text) - set(NOTEBOOKS)
    assert not missing, f"{path.name} refers to notebooks {sorted(missing)}, which the workbook does not have"


def test_the_paper_notes_are_in_the_project():
    paper = notebooks()[0].parent.parent / "docs" / "paper.md"
    text = paper.read_text()
    assert "arXiv 2012.06122" in text and "ε" in text
    for letter in "ABCD":
        assert re.search(rf"\|\s*{letter}\s*\|", text), f"docs/paper.md has no statement with letter {letter}"
