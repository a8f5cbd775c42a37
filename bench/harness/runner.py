"""Sweeping a suite: its cells, through an executor, into the store, with progress.

``run_suite(suite, store, executor=...)`` starts (or resumes) a run, hands the cells that are not
yet in the store to an executor (``bench.harness.executors``) that runs ``execute_cell``
(``bench.harness.execute``), and commits each finished cell at once.
"""
from __future__ import annotations

import sys
import time

import solvers
from bench.harness.execute import execute_cell
from bench.harness.executors import get_executor
from bench.harness.tuned import resolve_grids

__all__ = ["run_suite", "Progress"]


class Progress:
    """Cells done / total, elapsed and ETA: one line rewritten on a terminal, plain lines otherwise."""

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total, self.done, self.stream, self.enabled = total, 0, stream or sys.stderr, enabled
        self.t0 = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    @staticmethod
    def _fmt(s):
        s = int(s)
        return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"

    def update(self, label: str, error: str | None = None):
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
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


def run_suite(suite, store, *, executor: str = "local", address: str | None = None, resume: int | None = None,
              progress: bool = True, stream=None) -> int:
    """Run (or resume) ``suite`` into ``store``; returns the run id. Cells already in the store
    for that run are skipped; each finished cell is committed at once."""
    stream = stream or sys.stderr
    runner = get_executor(executor, address=address)
    cells = suite.cells()
    if resume is None:
        run_id, done = store.start_run(suite, executor, cells), set()
    else:
        run = store.run(resume)
        if run["suite"] != suite.name:
            raise solvers.InputError(f"run {resume} is of suite {run['suite']!r}, not {suite.name!r}")
        run_id, done = resume, store.done_keys(resume)
    pending = [c for c in cells if c.key not in done]
    if progress:
        stream.write(f"run {run_id} of suite {suite.name!r} -> {store.path}: {len(cells)} cells, "
                     f"{len(cells) - len(pending)} already done, {len(pending)} to run ({executor})\n")
    # tuned grids: looked up in the store or tuned here, once, before dispatch (bench.harness.tuned)
    pending = resolve_grids(pending, store, tune=getattr(suite, "tune", None), stream=stream if progress else None)
    bar = Progress(len(cells), stream, progress)
    bar.done = len(cells) - len(pending)
    store.set_status(run_id, "running")
    last = time.perf_counter()
    for cell, result in runner.map(execute_cell, pending):
        now = time.perf_counter()
        store.add_cell(run_id, cell, result, wall_s=now - last)
        last = now
        bar.update(cell.describe(), result.get("error"))
    store.set_status(run_id, "complete")
    return run_id
