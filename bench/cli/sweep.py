"""Commands on sweeps and the results store: run, list, export."""
from __future__ import annotations

import pathlib

import pandas as pd

import solvers
from bench.cli.common import add_store, run_id as _run_id
from bench.harness.cache import cache_dir_for
from bench.harness.estimate import estimate
from bench.harness.runner import pending_cells, run_suite
from bench.harness.store import Store
from bench.harness.suite import available_suites, load_suite
from bench.zoo import models


def run(args) -> int:
    suite = load_suite(args.suite)
    if args.n is not None:
        suite.n = args.n
    if args.jobs < 1:
        raise solvers.InputError(f"--jobs must be >= 1, got {args.jobs}")
    if args.dry_run and args.resume is None:  # nothing is created: not the store, not a run
        cells = suite.cells()
        est = estimate(cells, cache_dir_for(args.store), jobs=args.jobs)
        print(f"suite {suite.name!r}: {len(cells)} cells\n{est.summary()}")
        return 0
    store = Store(args.store)
    resume = None
    if args.resume is not None:
        resume = store.latest_run(suite.name) if args.resume == "latest" else int(args.resume)
        if resume is None:
            raise solvers.InputError(f"--resume: no earlier run of suite {suite.name!r} in {store.path}")
    if args.dry_run:
        cells, pending = pending_cells(suite, store, resume)
        est = estimate(pending, cache_dir_for(args.store), jobs=args.jobs)
        print(f"suite {suite.name!r}: {len(cells)} cells, {len(pending)} left in run {resume}\n{est.summary()}")
        return 0
    run_id = run_suite(suite, store, executor=args.executor, address=args.address, resume=resume,
                       progress=not args.quiet, jobs=args.jobs)
    info = store.run(run_id)
    df = store.cells(run_id)
    failed = int(df["error"].notna().sum()) if not df.empty else 0
    csv = store.to_csv(run_id, pathlib.Path(args.store).parent / f"run-{run_id}" / "cells.csv")
    print(f"run {run_id}: {len(df)} cells ({failed} failed) in {info['wall_s']:.1f} s; store {store.path}; "
          f"table {csv}\n{_time_shares(df, info['wall_s'])}")
    if not args.no_report:
        from bench.report import write_report

        out = write_report(store, [run_id])
        print(f"report: {out['html']}  (open in a browser; Markdown: {out['markdown']})")
    return 0  # failed cells are results (recorded, listed in the report), not a failed run


def _time_shares(df, wall) -> str:
    """Where the run's wall time went: solving, references, metrics, the rest (store, bookkeeping)."""
    if df.empty or not wall:
        return ""
    parts = {"solving": df["solve_s"].fillna(0).sum()}
    for key, col in (("references", "time_reference_s"), ("metrics", "time_metrics_s")):
        parts[key] = df[col].fillna(0).sum() if col in df else 0.0
    parts["store and bookkeeping"] = max(wall - sum(parts.values()), 0.0)
    return "time: " + ", ".join(f"{k} {v:.1f} s ({v / wall:.0%})" for k, v in parts.items())



def export(args) -> int:
    store = Store(args.store)
    run_id = _run_id(store, args.run)
    store.run(run_id)
    path = args.csv or pathlib.Path(args.store).parent / f"run-{run_id}" / "cells.csv"
    print(store.to_csv(run_id, path))
    return 0



def list_(args) -> int:
    if args.what == "suites":
        for name in available_suites():
            print(f"{name:10s} {load_suite(name).description}")
        return 0
    if args.what == "runs":
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(Store(args.store).runs().to_string(index=False))
        return 0
    if args.what == "solvers":
        for name in solvers.available():
            c = solvers.get(name)
            doc = (c.__doc__ or "").strip().splitlines()[0]
            print(f"{name:20s} {c.kind:9s} order={c.order!s:5s} nfe/step={c.nfe_per_step}  {doc}")
    else:
        print("\n".join(models.available()))
    return 0




def register(sub):
    r = sub.add_parser("run", help="sweep a suite (a shipped name or a .toml path) into the results store")
    r.add_argument("suite", help=f"shipped: {', '.join(available_suites())}; or a path to a .toml file")
    add_store(r)
    r.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN",
                   help="finish an interrupted run (default: the latest run of this suite)")
    r.add_argument("--executor", choices=["local", "process", "ray"], default="local",
                   help="local: this process (--jobs N > 1: N worker processes); ray: Ray tasks")
    r.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run cells in N local worker processes, one thread each (timings record N)")
    r.add_argument("--dry-run", action="store_true",
                   help="print the cell count and the estimated wall time, then exit (no run is created)")
    r.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    r.add_argument("--n", type=int, default=None, help="override the suite's number of samples")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    r.set_defaults(fn=run)
    ls = sub.add_parser("list", help="list solvers, models, suites or stored runs")
    ls.add_argument("what", choices=["solvers", "models", "suites", "runs"])
    add_store(ls)
    ls.set_defaults(fn=list_)
    ex = sub.add_parser("export", help="write a run's cells to CSV")
    ex.add_argument("run", help="run id or 'latest'")
    ex.add_argument("--csv", default=None)
    add_store(ex)
    ex.set_defaults(fn=export)
