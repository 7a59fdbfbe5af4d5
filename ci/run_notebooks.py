"""Execute every workbook notebook with papermill at one tier; print the time of each.

    python ci/run_notebooks.py --tier smoke [--only 05 06] [-p method dsrna_jb]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from rnas_lib.display import relative
from rnas_lib.runs import notebooks, run_notebook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", default="smoke", choices=["smoke", "tutorial", "paper"])
    parser.add_argument("--only", nargs="*", default=None, help="notebook number prefixes, e.g. 05 06")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a parameter for every notebook; VALUE is read as JSON when it parses, else as a string")
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
    failed, t_all = [], time.perf_counter()
    for nb in selected:
        t0 = time.perf_counter()
        try:
            out = run_notebook(nb, args.tier, parameters)
            print(f"{nb.name:45s} {time.perf_counter() - t0:7.1f} s  -> {relative(out)}", flush=True)
        except Exception as err:  # report every failing notebook, then fail
            failed.append(nb.name)
            print(f"{nb.name:45s} FAILED after {time.perf_counter() - t0:.1f} s: {type(err).__name__}: {err}",
                  flush=True)
    print(f"{len(selected)} notebooks in {time.perf_counter() - t_all:.1f} s at tier {args.tier!r}")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
