"""Sweeping a suite: its cells, through an executor, into the store, with progress.

``run_suite(suite, store, executor=..., jobs=N)`` starts (or resumes) a run, prints an estimate
of its cost (``bench.harness.estimate``), hands the cells that are not yet in the store to an
executor (``bench.harness.executors``; ``jobs`` > 1 runs them in that many local worker
processes) that runs ``execute_cell`` (``bench.harness.execute``) with the disk cache beside the
store (``<store>.cache/``), and commits each finished cell at once, in this process only.
"""
from __future__ import annotations

import functools
import sys
import time

import solvers
from bench.harness.cache import cache_dir_for
from bench.harness.estimate import estimate, fmt_seconds
from bench.harness.execute import execute_cell
from bench.harness.executors import get_executor

__all__ = ["run_suite", "Progress", "pending_cells"]


class Progress:
    """Cells done / total, elapsed and ETA: one line rewritten on a terminal, plain lines otherwise.

    ``costs`` (cell key -> estimated seconds, ``bench.harness.estimate``) weights the ETA by
    cost: ETA = elapsed x (estimated cost left) / (estimated cost done), so one dear cell does
    not count as one cheap one; ``eta0`` is the ETA shown before any cell is done."""

    def __init__(self, total: int, stream=None, enabled: bool = True, costs: dict | None = None,
                 remaining: float | None = None, eta0: float | None = None):
        self.total, self.done, self.stream, self.enabled = total, 0, stream or sys.stderr, enabled
        self.t0 = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.costs, self.cost_left, self.cost_done, self.eta0 = costs, remaining, 0.0, eta0
        self.done_here = 0

    @staticmethod
    def _fmt(s):
        return fmt_seconds(s)

    def eta(self) -> float:
        elapsed = time.perf_counter() - self.t0
        if self.costs is not None and self.cost_left is not None and self.cost_done > 0:
            return elapsed * self.cost_left / self.cost_done
        if self.done_here == 0:
            return self.eta0 or 0.0
        return elapsed / self.done_here * (self.total - self.done)

    def update(self, label: str, error: str | None = None, key: str | None = None):
        self.done += 1
        self.done_here += 1
        if self.costs is not None and key in self.costs:
            c = max(self.costs[key], 1e-6)
            self.cost_done += c
            if self.cost_left is not None:
                self.cost_left = max(self.cost_left - c, 0.0)
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        eta = self.eta()
        line = f"[{self.done}/{self.total}] {self._fmt(elapsed)} elapsed, ETA {self._fmt(eta)}  {label}"
        if error:
            line += f"  FAILED: {error}"
        if self.tty and not error:
            self.stream.write("\r\033[K" + line[:160])
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def pending_cells(suite, store=None, resume: int | None = None):
    """(cells of the suite, those not yet in run ``resume`` of ``store``)."""
    cells = suite.cells()
    if resume is None:
        return cells, cells
    done = store.done_keys(resume)
    return cells, [c for c in cells if c.key not in done]


def run_suite(suite, store, *, executor: str = "local", address: str | None = None, resume: int | None = None,
              progress: bool = True, stream=None, jobs: int = 1, cache: bool = True) -> int:
    """Run (or resume) ``suite`` into ``store``; returns the run id. Cells already in the store
    for that run are skipped; each finished cell is committed at once, by this process.

    ``jobs`` > 1 runs cells in that many worker processes (the ``process`` executor); their
    timings then record ``jobs`` (concurrent cells make them noisier). ``cache``: keep shared
    results in ``<store>.cache/`` and reuse them across resumed, parallel and later runs."""
    stream = stream or sys.stderr
    if jobs > 1 and executor == "local":
        executor = "process"
    runner = get_executor(executor, address=address, jobs=jobs)
    cells = suite.cells()
    cache_dir = str(cache_dir_for(store.path)) if cache else None
    if resume is None:
        run_id, done = store.start_run(suite, executor, cells), set()
    else:
        run = store.run(resume)
        if run["suite"] != suite.name:
            raise solvers.InputError(f"run {resume} is of suite {run['suite']!r}, not {suite.name!r}")
        run_id, done = resume, store.done_keys(resume)
    pending = [c for c in cells if c.key not in done]
    est = estimate(pending, cache_dir, jobs=jobs) if progress else None
    if progress:
        par = f", {jobs} jobs" if jobs > 1 else ""
        stream.write(f"run {run_id} of suite {suite.name!r} -> {store.path}: {len(cells)} cells, "
                     f"{len(cells) - len(pending)} already done, {len(pending)} to run ({executor}{par})\n"
                     f"{est.summary()}\n")
    bar = Progress(len(cells), stream, progress, costs=est.cells if est else None,
                   remaining=est.total_s if est else None, eta0=est.wall_s() if est else None)
    bar.done = len(cells) - len(pending)
    store.set_status(run_id, "running")
    last = time.perf_counter()
    fn = functools.partial(execute_cell, cache_dir=cache_dir, jobs=jobs)
    for cell, result in runner.map(fn, pending):
        now = time.perf_counter()
        store.add_cell(run_id, cell, result, wall_s=now - last)
        last = now
        bar.update(cell.describe(), result.get("error"), key=cell.key)
    store.set_status(run_id, "complete")
    return run_id
