"""Execute every workbook notebook with papermill at one tier; print the time of each.

    python ci/run_notebooks.py --tier smoke [--only 05 06] [-p method dsrna_jb] [--times times.md]

The times are also written as a Markdown table (the README's), with the machine's cores and threads,
to runs/<tier>/workbook_times.md (or --times FILE).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from rnas_lib.display import relative
from rnas_lib.runs import notebooks, run_dir, run_notebook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", default="smoke", choices=["smoke", "tutorial", "paper"])
    parser.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 05 06")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a parameter for every notebook; VALUE is read as JSON when it parses, else as a string")
    parser.add_argument("--times", type=Path, default=None,
                        help="the Markdown table of the times (default runs/<tier>/workbook_times.md)")
    args = parser.parse_args()
    parameters = {}
    for name, value in args.p:
        try:
            parameters[name] = json.loads(value)
        except json.JSONDecodeError:
            parameters[name] = value
    selected = [nb for nb in notebooks() if args.only is None or any(nb.name.startswith(o) for o in args.only)]
    if not selected:
        print(f"no notebook matches {args.only}", file=sys.stderr)
        return 2
    failed, times, t_all = [], {}, time.perf_counter()
    for nb in selected:
        t0 = time.perf_counter()
        try:
            out = run_notebook(nb, args.tier, parameters)
            times[nb.stem] = time.perf_counter() - t0
            print(f"{nb.name:45s} {times[nb.stem]:7.1f} s  -> {relative(out)}", flush=True)
        except Exception as err:  # report every failing notebook, then fail
            failed.append(nb.name)
            times[nb.stem] = None
            print(f"{nb.name:45s} FAILED after {time.perf_counter() - t0:.1f} s: {type(err).__name__}: {err}",
                  flush=True)
    total = time.perf_counter() - t_all
    print(f"{len(selected)} notebooks in {total:.1f} s at tier {args.tier!r}")
    path = args.times or run_dir(args.tier) / "workbook_times.md"
    path.write_text(times_table(times, total, args.tier, parameters))
    print("wrote", relative(path))
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


def times_table(times: dict, total: float, tier: str, parameters: dict) -> str:
    """The notebooks' wall times as a Markdown table, with what they ran on."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(torch.get_num_threads())
    rows = [f"| notebook | minutes at tier `{tier}` |", "|---|---|"]
    rows += [f"| {name} | {'failed' if t is None else f'{t / 60:.1f}'} |" for name, t in times.items()]
    rows.append(f"| all | {total / 60:.1f} |")
    return ("\n".join(rows) + f"\n\n{os.cpu_count()} cores, {threads} threads per kernel"
            + (f", parameters {json.dumps(parameters)}" if parameters else "") + ".\n")


if __name__ == "__main__":
    sys.exit(main())
