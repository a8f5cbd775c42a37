"""Commands on results: report, compare."""
from __future__ import annotations

import pathlib

import pandas as pd

from bench.cli.common import add_store, number, run_id as _run_id
from bench.harness.store import Store
from solvers import InputError


def report(args) -> int:
    from bench.report import write_report

    out_dir = pathlib.Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: is a file; --out names a folder (report.html and report.md go in it)")
    store = Store(args.store, create=False)
    runs = [_run_id(store, r) for r in args.runs]
    for r in runs:
        store.run(r)
    out = write_report(store, runs, out_dir)
    print(f"report: {out['html']}  (self-contained; open in a browser)\n        {out['markdown']}")
    return 0


def compare_(args) -> int:
    from bench.report.compare import compare, is_csv, load_cells

    # CSVs need no store: a read-only command never creates one
    store = None if is_csv(args.base) and is_csv(args.head) else Store(args.store, create=False)
    base, head = load_cells(args.base, store), load_cells(args.head, store)
    table, code = compare(base, head, rtol=args.rtol, time_factor=None if args.no_time else args.time_factor,
                          min_time_s=args.min_time)
    with pd.option_context("display.width", 200, "display.max_rows", 1000, "display.max_colwidth", 80):
        print(table.to_string(index=False) if len(table) else "no changes")
    verdict = {0: "OK: no regression", 1: "FAIL: quality/NFE/coverage regression", 3: "FAIL: timing regression"}
    print(f"{len(base)} base cells, {len(head)} head cells; rtol={args.rtol}, "
          f"time factor={'off' if args.no_time else args.time_factor}. {verdict[code]}")
    return code




def register(sub):
    rp = sub.add_parser("report", help="write an HTML and a Markdown report of one or more runs")
    rp.add_argument("runs", nargs="+", help="run ids (or 'latest')")
    rp.add_argument("--out", default=None, help="output folder (default results/run-<first run>/)")
    add_store(rp)
    rp.set_defaults(fn=report)
    cp = sub.add_parser("compare", help="compare two runs (ids or CSV exports); exit 1 on a quality/NFE "
                        "regression, 3 on a timing regression only, 0 otherwise")
    cp.add_argument("base", help="run id or CSV (e.g. results/baselines/ci.csv)")
    cp.add_argument("head", help="run id or CSV")
    cp.add_argument("--rtol", type=number(0), default=0.05, help="allowed relative worsening of quality (default 0.05)")
    cp.add_argument("--time-factor", type=number(1, above=True), default=2.0,
                    help="allowed slowdown factor, > 1 (default 2.0)")
    cp.add_argument("--min-time", type=number(0), default=0.02, help="cells faster than this (s) are not timed-gated")
    cp.add_argument("--no-time", action="store_true", help="gate on quality and NFE only")
    add_store(cp)
    cp.set_defaults(fn=compare_)
