"""Commands on sweeps and the results store: run, list, export."""
from __future__ import annotations

import contextlib
import pathlib
import shlex
import signal
import sys
import threading

import pandas as pd

import solvers
from bench.cli.common import add_store, add_threads, check_output, positive_int, sample_count
from bench.cli.common import run_id as _run_id
from bench.harness import limits
from bench.harness.cache import cache_dir_for, check_cache_dir
from bench.harness.estimate import cluster_cost, estimate
from bench.harness.executors import EXECUTORS, get_executor
from bench.harness.runner import RunInterrupted, pending_cells, run_suite
from bench.harness.store import Store
from bench.harness.suite import available_suites, load_suite
from bench.zoo import models


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM ends a run like Ctrl-C: committed cells kept, the run marked interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def resume_command(suite_arg, run_id, store, args=None) -> str:
    """The command that resumes run ``run_id``, with every override of the run's command line
    (``args``): without the same --n, --models and --threads the resumed cells would differ."""
    parts = ["sdebench", "run", str(suite_arg), "--resume", str(run_id), "--store", str(store)]
    given = {"--n": getattr(args, "n", None), "--models": getattr(args, "models", None),
             "--threads": getattr(args, "threads", None),
             "--jobs": getattr(args, "jobs", 1) if getattr(args, "jobs", 1) != 1 else None,
             "--executor": getattr(args, "executor", "local") if getattr(args, "executor", "local") != "local"
             else None, "--address": getattr(args, "address", None)}
    for flag, value in given.items():
        if value is not None:
            parts += [flag, str(value)]
    parts += [flag for flag in ("--quiet", "--no-report") if getattr(args, flag[2:].replace("-", "_"), False)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args) -> int:
    suite = load_suite(args.suite).override(n=args.n, threads=args.threads, models=args.models)
    if args.jobs > 1:  # each worker holds python, torch and its cells' data
        limits.check_fits(f"--jobs {args.jobs} worker processes", args.jobs * limits.WORKER_BYTES, "lower --jobs")
    if args.dry_run and args.resume is None:  # nothing is created: not the store, not a run
        cells = suite.cells()
        est = estimate(cells, cache_dir_for(args.store), jobs=args.jobs)
        print(f"suite {suite.name!r}: {len(cells)} cells\n{est.summary()}{_on_cluster(args, est, cells)}")
        return 0
    store = Store(args.store, create=not args.dry_run)
    resume = None if args.resume is None else store.resolve_run(args.resume, suite.name if args.resume == "latest"
                                                                 else None, flag="--resume")
    if args.dry_run:
        cells, pending = pending_cells(suite, store, resume)
        est = estimate(pending, cache_dir_for(args.store), jobs=args.jobs)
        print(f"suite {suite.name!r}: {len(cells)} cells, {len(pending)} left in run {resume}\n{est.summary()}"
              f"{_on_cluster(args, est, pending)}")
        return 0
    check_cache_dir(cache_dir_for(store.path))
    try:
        with _sigterm_interrupts():
            run_id = run_suite(suite, store, executor=args.executor, address=args.address, resume=resume,
                               progress=not args.quiet, jobs=args.jobs)
    except RunInterrupted as e:
        print(f"sdebench: run {e.run_id} interrupted ({e.committed} of {e.total} cells committed and kept); "
              f"resume with: {resume_command(args.suite, e.run_id, store.path, args)}", file=sys.stderr)
        return 130
    info = store.run(run_id)
    results = list(store.results(run_id).values())
    failed = sum(1 for r in results if r.error)
    csv = store.to_csv(run_id, store.output_dir(run_id) / "cells.csv")
    print(f"run {run_id}: {len(results)} cells ({failed} failed) in {info['wall_s'] or 0:.1f} s; store {store.path}; "
          f"table {csv}\n{_time_shares(results, info['wall_s'])}")
    if info["status"] == "failed":  # no cell has a result: the run is recorded, the command fails
        first = next(r.error for r in results if r.error)
        print(f"sdebench: error: every cell of run {run_id} failed (the first: {first}); it is marked failed, see "
              "the table", file=sys.stderr)
        return 1
    if not args.no_report:
        from bench.report import write_report

        out = write_report(store, [run_id])
        print(f"report: {out['html']}  (open in a browser; Markdown: {out['markdown']})")
    return 0  # failed cells are results (recorded, listed in the report), not a failed run


def _on_cluster(args, est, cells) -> str:
    """The dry run's cost on the executor's cluster (one that reports ``resources()``: Ray)."""
    if not callable(getattr(EXECUTORS.get(args.executor), "resources", None)):
        return ""
    executor = get_executor(args.executor, address=args.address, jobs=args.jobs)
    try:
        return "\n" + cluster_cost(est, cells, executor.resources())
    finally:
        executor.close()


def _time_shares(results, wall) -> str:
    """Where the run's time went (its cells' ``CellResult`` timings): solving, references (with
    jobs > 1, those made up front too: counted for the first cell that needs each), metrics and
    the rest, in worker-seconds (wall x jobs); with jobs > 1 the rest includes idle workers
    (waiting for the last reference or cell of a wave)."""
    if not results or not wall:
        return ""
    jobs = max(max((r.timing.jobs or 1 for r in results), default=1), 1)
    total = wall * jobs
    parts = {"solving": sum(r.solve_s or 0.0 for r in results),
             "references": sum((r.timing.reference_s or 0.0) + (r.timing.upfront_reference_s or 0.0) for r in results),
             "metrics": sum(r.timing.metrics_s or 0.0 for r in results)}
    rest = "idle workers, store and bookkeeping" if jobs > 1 else "store and bookkeeping"
    parts[rest] = max(total - sum(parts.values()), 0.0)
    head = f"time ({jobs} workers x {wall:.1f} s)" if jobs > 1 else "time"
    return f"{head}: " + ", ".join(f"{k} {v:.1f} s ({v / total:.0%})" for k, v in parts.items())


def export(args) -> int:
    store = Store(args.store, create=False)
    run_id = _run_id(store, args.run)
    store.run(run_id)
    path = pathlib.Path(args.csv) if args.csv else store.output_dir(run_id) / "cells.csv"
    if args.csv and (path.is_dir() or args.csv.endswith(("/", "\\"))):  # a folder: one file per store and run
        path = path / f"{store.output_dir(run_id).name}.csv"
    elif path.exists() and not path.is_file():
        raise solvers.InputError(f"--csv {path}: not a regular file")
    print(store.to_csv(run_id, check_output(path, "--csv", store=store.path)))
    return 0



def list_(args) -> int:
    if args.what == "suites":
        for name in available_suites():
            print(f"{name:10s} {load_suite(name).description}")
        return 0
    if args.what == "runs":
        if not pathlib.Path(args.store).exists():
            print(f"no runs (no store at {args.store})")
            return 0
        store = Store(args.store, create=False)
        df = store.runs()
        if df.empty:
            print(f"no runs in {store.path}")
            return 0
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(df.to_string(index=False))
        shipped = available_suites()
        for rid, suite in zip(df["id"][df["status"] == "interrupted"], df["suite"][df["status"] == "interrupted"]):
            suite = suite if suite in shipped else f"PATH/TO/{suite}.toml"
            print(f"run {rid} was interrupted; resume it with: {resume_command(suite, rid, store.path)}")
        return 0
    if args.what == "solvers":
        for name in solvers.available():
            c = solvers.get(name)
            doc = ((c.__doc__ or "").strip().splitlines() or [""])[0]
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
    r.add_argument("--executor", default="local", metavar="NAME",
                   help=f"one of {', '.join(EXECUTORS)} or one a suite's imports register "
                        "(bench.harness.executors.register); local: this process (--jobs N > 1: N worker processes); "
                        "ray: Ray tasks")
    r.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="run cells in N local worker processes, one thread each (timings record N)")
    r.add_argument("--dry-run", action="store_true",
                   help="print the cell count and the estimated wall time, then exit (no run is created)")
    r.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    r.add_argument("--n", type=sample_count, default=None, help="override the suite's number of samples")
    r.add_argument("--models", default=None, metavar="A,B",
                   help="only these of the suite's models (comma-separated), e.g. the part of full a CPU can run")
    add_threads(r)
    r.set_defaults(threads=None)  # the suite's threads unless given
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
