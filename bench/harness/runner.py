"""Sweeping a suite: its cells, through an executor, into the store, with progress.

``run_suite(suite, store, executor=...)`` starts (or resumes) a run, hands the cells that are not
yet in the store to an executor (``bench.harness.executors``) that runs ``execute_cell``
(``bench.harness.execute``), and commits each finished cell at once. With the suite's
``skip_at_floor`` (the default) the step counts of each series run in waves, coarsest first, so
that a metric at its noise floor is not recomputed at finer step counts (``bench.harness.at_floor``).
Shared results (references, exact sets, floors) are made before the cells: over the workers into
``<store>.cache/`` (``--jobs N``), or, for an executor whose workers lack the driver's disk (Ray on a
cluster: ``shared_disk = False``), over the workers and returned to the driver, which keeps them in
its cache and has the executor send them to the cells' tasks (``_send_shared``).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sqlite3
import sys
import time

import solvers
from bench.harness.at_floor import StepSeries
from bench.harness.cache import DiskCache, cache_dir_for
from bench.harness.cell import Cell
from bench.harness.estimate import estimate, fmt_seconds
from bench.harness.execute import disk_key, execute_cell, have_shared, make_shared, shared_keys
from bench.harness.executors import get_executor
from bench.harness.store import StoreError, definition_hash, process_alive
from bench.harness.tuned import resolve_grids

__all__ = ["run_suite", "Progress", "RunInterrupted", "definition_diff", "pending_cells"]


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM: its committed cells are kept and it is marked "interrupted"."""

    def __init__(self, run_id: int, committed: int, total: int):
        super().__init__(f"run {run_id} interrupted: {committed} of {total} cells committed")
        self.run_id, self.committed, self.total = run_id, committed, total


#: the definition fields a resume message compares (everything else is derived from them)
_FIELDS = ("model", "solver", "options", "grid", "budget", "steps", "n", "seed", "exact_prior", "device", "dtype",
           "threads", "metrics", "repeats", "warmup", "reference", "imports", "task")


def _values(cells, field):
    return {json.dumps(c.get(field) if isinstance(c, dict) else getattr(c, field), sort_keys=True, default=str)
            for c in cells}


def definition_diff(old_cells, new_cells) -> list[str]:
    """What differs between two sets of cells (dicts or ``Cell``), field by field: ["n: 16 -> 50", ...].
    A field is listed when the old cells have a value the new ones lack (the old set may be partial)."""
    old = [c.definition() if isinstance(c, Cell) else c for c in old_cells]
    new = [c.definition() if isinstance(c, Cell) else c for c in new_cells]
    out = []
    for f in _FIELDS:
        a, b = _values(old, f), _values(new, f)
        if a - b:
            gone, added = sorted(a - b), sorted(b - a)
            out.append(f"{f}: {', '.join(gone[:4])} -> {', '.join(added[:4]) or '-'}")
    return out


def _refuse_running(store, run_id, run):
    """Refuse to resume a run whose process (on this host) is still running it."""
    owner = store.owner(run_id)
    if run["status"] == "running" and owner:
        host, pid = owner
        if host == socket.gethostname() and pid != os.getpid() and process_alive(pid):
            raise solvers.InputError(f"run {run_id} is still running (pid {pid} on {host}); wait for it to end "
                                     "or stop it before resuming")


def _check_resume(store, run_id, run, cells):
    """Refuse to resume a run with cells of another definition, or one still running elsewhere."""
    _refuse_running(store, run_id, run)
    stored = store.cell_definitions(run_id)
    keys = {c.key for c in cells}
    foreign = [c for c in stored if c.get("key") not in keys]
    changed = run.get("definition") and run["definition"] != definition_hash(cells)
    if foreign or changed:
        diff = definition_diff(stored, cells) if foreign else []
        what = "; ".join(diff) if diff else "the set of cells (a solver, model or list entry was added or removed)"
        raise solvers.InputError(f"--resume {run_id}: this run was defined differently ({what}); resuming would mix "
                                 "two definitions in one run. Resume with the same suite and options, or start "
                                 "a new run (without --resume)")
    _refuse_changed_models(run_id, stored, cells)


def _refuse_changed_models(run_id, stored, cells):
    """A model whose fingerprint changed since the run's cells were stored (other weights or
    config under the same name) would mix two models in one run."""
    now = {c.model: c.model_spec.get("fingerprint") for c in cells}
    for c in stored:
        before = (c.get("model_spec") or {}).get("fingerprint")
        after = now.get(c.get("model"))
        if before and after and before != after:
            raise solvers.InputError(f"--resume {run_id}: model {c['model']!r} changed since the run started (other "
                                     f"weights or config: fingerprint {before[:12]} -> {after[:12]}); resuming would "
                                     "mix two models in one run. Start a new run (without --resume)")


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


def run_suite(suite, store, *, executor: str = "local", address: str | None = None, resume: int | None = None,
              progress: bool = True, stream=None, jobs: int = 1, cache: bool = True) -> int:
    """Run (or resume) ``suite`` into ``store``; returns the run id. Cells already in the store
    for that run are skipped; each finished cell is committed at once, by this process.

    ``executor``: a name in ``bench.harness.executors.EXECUTORS`` (a plugin may register its own).
    ``jobs`` > 1 runs cells in that many worker processes (the ``process`` executor); their
    timings then record ``jobs`` (concurrent cells make them noisier). ``cache``: keep shared
    results in ``<store>.cache/`` and reuse them across resumed, parallel and later runs."""
    stream = stream or sys.stderr
    if jobs > 1 and executor == "local":
        executor = "process"
    runner = get_executor(executor, address=address, jobs=jobs)
    try:
        return _sweep(suite, store, runner, resume=resume, progress=progress, stream=stream, jobs=jobs, cache=cache)
    finally:
        runner.close()


def _open_run(suite, store, executor: str, cells, resume) -> tuple[int, set]:
    """(run id, keys of its cells already in the store): a new run, or the one to resume."""
    if resume is None:
        return store.start_run(suite, executor, cells), set()
    run = store.run(resume)
    if run["suite"] != suite.name:
        raise solvers.InputError(f"run {resume} is of suite {run['suite']!r}, not {suite.name!r}")
    _check_resume(store, resume, run, cells)
    return resume, store.done_keys(resume)


def _pending(cells, done) -> list:
    """The cells whose key is not among ``done``, in the suite's order."""
    return [c for c in cells if c.key not in done]


def _sweep(suite, store, runner, *, resume, progress, stream, jobs, cache) -> int:
    cells = suite.cells()
    cache_dir = str(cache_dir_for(store.path)) if cache else None
    run_id, done = _open_run(suite, store, runner.name, cells, resume)
    with _interrupted_on_failure(store, run_id, len(cells)):  # tuning takes minutes: never left "running"
        if callable(getattr(runner, "start", None)):  # an executor that prepares its workers (Ray: user modules)
            runner.start(_pending(cells, done))
        # tuned grids: looked up in the store or tuned here, once, before dispatch (bench.harness.tuned)
        pending = resolve_grids(_pending(cells, done), store, tune=getattr(suite, "tune", None),
                                stream=stream if progress else None, runner=runner)
        bar = _progress(suite, store, run_id, cells, pending, runner, stream if progress else None, cache_dir, jobs)
    store.set_status(run_id, "running")
    # metrics at their floor at a coarser step count are not recomputed: step counts in waves
    series = StepSeries(cells) if getattr(suite, "skip_at_floor", False) else None
    committer = _Committer(store, run_id, bar, _finished(store, run_id) if series is not None and done else {})
    with _interrupted_on_failure(store, run_id, len(cells)):
        fn = functools.partial(execute_cell, cache_dir=cache_dir, jobs=jobs)
        if not getattr(runner, "shared_disk", True):  # workers without the driver's disk (Ray on a cluster)
            committer.upfront, committer.shared = _send_shared(runner, pending, cache_dir, stream if progress else None)
            fn = functools.partial(execute_cell, cache_dir=None, jobs=jobs)
            bar.t0 = time.perf_counter()
        elif runner.jobs > 1 and cache_dir:
            committer.upfront = _make_shared(runner, pending, cache_dir, stream if progress else None)
            bar.t0 = time.perf_counter()  # the ETA's rate is the cells' own (the run's wall time keeps it)
        committer.run(runner, fn, pending, series)
    total, failed = store.cell_counts(run_id)
    store.set_status(run_id, "failed" if total and failed == total else "complete")  # failed: no cell has a result
    return run_id


@contextlib.contextmanager
def _interrupted_on_failure(store, run_id: int, total: int):
    """A failure inside marks the run interrupted; Ctrl-C (or SIGTERM) becomes ``RunInterrupted``."""
    try:
        yield
    except KeyboardInterrupt:
        _mark_interrupted(store, run_id)
        raise RunInterrupted(run_id, _committed(store, run_id), total) from None
    except BaseException:
        _mark_interrupted(store, run_id)
        raise


def _progress(suite, store, run_id, cells, pending, runner, stream, cache_dir, jobs) -> Progress:
    """The run's progress line, its ETA weighted by the estimated cost of each cell (announced on
    ``stream``; None: no progress)."""
    if stream is None:
        bar = Progress(len(cells), enabled=False)
    else:
        est = estimate(pending, cache_dir, jobs=jobs)
        par = f", {jobs} jobs" if jobs > 1 else ""
        stream.write(f"run {run_id} of suite {suite.name!r} -> {store.path}: {len(cells)} cells, "
                     f"{len(cells) - len(pending)} already done, {len(pending)} to run ({runner.name}{par})\n"
                     f"{est.summary()}\n")
        bar = Progress(len(cells), stream, costs=est.cells, remaining=est.total_s, eta0=est.wall_s())
    bar.done = len(cells) - len(pending)
    return bar


def _finished(store, run_id) -> dict:
    """The run's successful cells' results by key (what a resumed run's at-floor decisions read)."""
    return {k: r for k, r in store.results(run_id).items() if not r.error}


class _Committer:
    """Runs the waves of pending cells through the executor and commits each result as it comes."""

    def __init__(self, store, run_id, bar, finished):
        self.store, self.run_id, self.bar, self.finished = store, run_id, bar, finished
        self.upfront: dict = {}  # cell key -> seconds spent up front making the shared results it first needed
        self.last = time.perf_counter()  # the first cell's wall time includes what was made up front
        self.shared = None  # cell -> {key: value} the executor sends (workers without the driver's disk)

    def run(self, runner, fn, pending, series):
        kw = {"shared": self.shared} if self.shared is not None else {}
        for wave in series.waves(pending) if series is not None else [pending]:
            if series is not None:
                wave = [_with_floor(c, series.at_floor(c, self.finished)) for c in wave]
            for cell, result in runner.map(fn, self.longest_first(wave), **kw):
                self.commit(cell, result)

    def longest_first(self, wave):
        """The wave's cells, the dearest first by the estimate (when there is one; else in the
        suite's order): a dear cell dispatched last would leave the other workers idle while it
        runs (longest-processing-time-first scheduling)."""
        costs = self.bar.costs
        return sorted(wave, key=lambda c: -costs.get(c.key, 0.0)) if costs else list(wave)

    def commit(self, cell, result):
        now = time.perf_counter()
        if cell.key in self.upfront:  # made up front for this cell (the first that needs it): as if it had
            result = result.replace(timing=result.timing.replace(upfront_reference_s=self.upfront.pop(cell.key)))
        try:
            self.store.add_cell(self.run_id, cell, result, wall_s=now - self.last)
        except sqlite3.Error as e:
            committed = _committed(self.store, self.run_id)
            raise StoreError(f"{self.store.path}: saving a cell of run {self.run_id} failed ({e}): the cell in "
                             f"progress ({cell.describe()}) is lost, the {committed} committed cells are "
                             f"kept; fix the cause (free disk space), then resume with --resume {self.run_id}"
                             ) from None
        self.last = now
        if not result.error:
            self.finished[cell.key] = result
        self.bar.update(cell.describe(), result.error, key=cell.key)


def _with_floor(cell, metrics_at_floor):
    return cell.replace(at_floor=metrics_at_floor) if metrics_at_floor else cell


def _make_shared(runner, cells, cache_dir, stream=None):
    """Make the shared results the cells need and the disk cache lacks (references, exact sets,
    floors) over the workers first, one task each, so that parallel workers do not each start
    on cells that need the same missing reference and then wait on its lock. Errors are left
    to the cells (which report them). Returns {cell key: seconds} of what was made, by the first
    pending cell that needs it."""
    items = _missing_shared(cells, DiskCache(cache_dir))
    spent: dict = {}
    if not items:
        return spent
    t0 = time.perf_counter()
    done = 0
    try:
        for (cell, _), seconds in runner.map(functools.partial(_shared_task, cache_dir=cache_dir), items):
            done += 1
            spent[cell.key] = spent.get(cell.key, 0.0) + (seconds or 0.0)
    except Exception as e:
        if stream:
            stream.write(f"shared results: {type(e).__name__}: {e}; the cells will make what is missing\n")
        return spent
    if stream:
        stream.write(f"shared results: {done} references, exact sets and floors made on {runner.jobs} workers "
                     f"in {time.perf_counter() - t0:.1f} s\n")
    return spent


class _Held:
    """The shared results of a run whose workers lack the driver's disk: kept by the driver in
    its cache directory (or in memory without one) and sent to the workers by the executor."""

    def __init__(self, cache_dir):
        self.cache = DiskCache(cache_dir) if cache_dir else None
        self.values: dict = {}

    def put(self, key, value):
        self.values[key] = value
        if self.cache is not None:
            self.cache.save(disk_key(key), value)

    def get(self, key):
        if key not in self.values and self.cache is not None and self.cache.contains(disk_key(key)):
            try:
                self.values[key] = self.cache.load(disk_key(key))
            except KeyError:
                pass
        return self.values.get(key)

    def __call__(self, item) -> dict:
        """{key: value} of what the task's cell (or a shared result's (cell, key)) needs and the
        driver holds (shipped results are on every worker already)."""
        cell = item[0] if isinstance(item, tuple) else item
        try:
            keys = shared_keys(cell)
        except Exception:
            return {}
        found = {k: self.get(k) for k in keys if not (isinstance(item, tuple) and k == item[1])}
        return {k: v for k, v in found.items() if v is not None}


def _send_shared(runner, cells, cache_dir, stream=None):
    """Workers without the driver's disk: the missing shared results are made once per run over
    the workers (references and exact sets first, then the floors, given the sets they read),
    returned to the driver and kept in its cache; the executor then sends each to the workers
    once. Returns ({cell key: seconds}, the provider of the values the cells need)."""
    held = _Held(cache_dir)
    items = [(c, k) for c, k in _missing_shared(cells, None) if held.get(k) is None]
    spent: dict = {}
    t0, done = time.perf_counter(), 0
    for wave in ([i for i in items if i[1][0] != "floor"], [i for i in items if i[1][0] == "floor"]):
        if not wave:
            continue
        try:
            for (cell, key), (seconds, value) in runner.map(_shared_value_task, wave, shared=held):
                if value is not None:
                    held.put(key, value)
                spent[cell.key] = spent.get(cell.key, 0.0) + seconds
                done += 1
        except Exception as e:  # the cells make (and report) what is missing
            if stream:
                stream.write(f"shared results: {type(e).__name__}: {e}; the cells will make what is missing\n")
            break
    if stream and items:
        stream.write(f"shared results: {done} references, exact sets and floors made on {runner.jobs} workers "
                     f"in {time.perf_counter() - t0:.1f} s, kept by the driver and sent to the workers\n")
    return spent, held


def _missing_shared(cells, cache) -> list[tuple]:
    """(first cell that needs it, key) of each shared result not in ``cache``, the longest to make
    first (better packing)."""
    items, seen = [], set()
    for cell in cells:
        try:
            keys = shared_keys(cell)
        except Exception:
            continue
        for key in keys:
            if key not in seen:
                seen.add(key)
                if not have_shared(cache, key):
                    items.append((cell, key))
    order = {"ode_ref": 0, "ref_samples": 0, "ode_ref_err": 1, "sde_ref": 1, "exact": 2, "floor": 3}
    return sorted(items, key=lambda item: order.get(item[1][0], 4))


def _shared_task(item, cache_dir=None):
    try:
        return make_shared(item, cache_dir=cache_dir)
    except Exception:
        return None


def _shared_value_task(item, shared=None):
    try:
        return make_shared(item, shared=shared, value=True)
    except Exception:
        return 0.0, None


def pending_cells(suite, store=None, resume: int | None = None):
    """(cells of the suite, those not yet in run ``resume`` of ``store``)."""
    cells = suite.cells()
    return cells, (cells if resume is None else _pending(cells, store.done_keys(resume)))


def _committed(store, run_id) -> int:
    try:
        return len(store.done_keys(run_id))
    except sqlite3.Error:
        return -1


def _mark_interrupted(store, run_id):
    try:
        store.set_status(run_id, "interrupted")
    except sqlite3.Error:  # the store itself failed (a full disk): the stale "running" row reads as interrupted
        pass
