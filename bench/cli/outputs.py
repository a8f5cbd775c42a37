"""Commands on results: report, compare, history, import-benchmark."""
from __future__ import annotations

import pathlib

import pandas as pd

from bench.cli.common import add_store, number
from bench.cli.common import run_id as _run_id
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
    from bench.report.compare import compare, is_csv, load_run_or_export

    # CSVs need no store: a read-only command never creates one
    store = None if is_csv(args.base) and is_csv(args.head) else Store(args.store, create=False)
    base, head = load_run_or_export(args.base, store), load_run_or_export(args.head, store)
    table, code = compare(base, head, rtol=args.rtol, time_factor=None if args.no_time else args.time_factor,
                          min_time_s=args.min_time)
    with pd.option_context("display.width", 200, "display.max_rows", 1000, "display.max_colwidth", 80):
        print(table.to_string(index=False) if len(table) else "no changes")
    verdict = {0: "OK: no regression", 1: "FAIL: quality/NFE/coverage regression", 3: "FAIL: timing regression"}
    print(f"{len(base)} base cells, {len(head)} head cells; rtol={args.rtol}, "
          f"time factor={'off' if args.no_time else args.time_factor}. {verdict[code]}")
    if args.junit or args.summary:
        _ci_outputs(args, base, head, code)
    return code


def _ci_outputs(args, base, head, code):
    from bench.report import ci

    verdicts = ci.per_cell(base, head, rtol=args.rtol, time_factor=None if args.no_time else args.time_factor,
                           min_time_s=args.min_time)
    name = f"sdebench compare {args.base} {args.head}"
    if args.junit:
        print(f"junit: {ci.write_junit(args.junit, verdicts, name)}")
    if args.summary:
        print(f"summary: {ci.write_summary(args.summary, verdicts, code, name)}")


def history(args) -> int:
    from bench.report.history import write_history

    out = write_history(Store(args.store), args.suite or None, args.out, models=args.model or (),
                        solvers=args.solver or (), metrics=args.metric or (), since=args.since, rtol=args.rtol,
                        time_factor=None if args.no_time else args.time_factor)
    ev = out["events"]
    counts = ", ".join(f"{k}: {v}" for k, v in ev.groupby("rule").size().items()) if len(ev) else "none"
    print(f"history: {out['html']}  (self-contained; open in a browser)\n         {out['markdown']}\n"
          f"marked runs: {counts}")
    return 0


def import_benchmark(args) -> int:
    from bench.harness.benchmark_import import import_benchmark as import_

    store = Store(args.store)
    run_id, n = import_(store, args.file, suite=args.suite)
    print(f"run {run_id}: {n} benchmark cell(s) of suite {args.suite!r} from {args.file} in {store.path}")
    return 0




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
    cp.add_argument("--junit", default=None, metavar="FILE", help="also write JUnit XML: one test case per cell")
    cp.add_argument("--summary", default=None, metavar="FILE",
                    help="also write a Markdown summary (regressions, improvements, missing/new cells)")
    add_store(cp)
    cp.set_defaults(fn=compare_)
    hp = sub.add_parser("history", help="each cell's metrics and time across runs: trend charts, the runs where "
                        "compare would fire, step changes and drifts (HTML + Markdown)")
    hp.add_argument("--suite", action="append", help="suite to show (repeatable; default: every suite)")
    hp.add_argument("--model", action="append", help="only this model (repeatable)")
    hp.add_argument("--solver", action="append", help="only this solver name or label (repeatable)")
    hp.add_argument("--metric", action="append", help="only this metric (repeatable): a quality metric, time, "
                    "nfe, overhead")
    hp.add_argument("--since", default=None, help="only runs started on or after this date (e.g. 2026-01-31)")
    hp.add_argument("--rtol", type=float, default=0.05, help="tolerance of the gate, steps and drift (default 0.05)")
    hp.add_argument("--time-factor", type=float, default=2.0, help="compare's slowdown factor (default 2.0)")
    hp.add_argument("--no-time", action="store_true", help="mark compare's quality/NFE rule only, as CI gates")
    hp.add_argument("--out", default=None, help="output folder (default <store dir>/history)")
    add_store(hp)
    hp.set_defaults(fn=history)
    ip = sub.add_parser("import-benchmark", help="record a pytest-benchmark JSON file as a run (suite 'perf')")
    ip.add_argument("file", help="written by pytest bench/perf --benchmark-enable --benchmark-json=FILE")
    ip.add_argument("--suite", default="perf", help="suite name of the run (default perf)")
    add_store(ip)
    ip.set_defaults(fn=import_benchmark)
