"""Executors: one interface for running cells locally or as Ray tasks.

    executor = get_executor("local" | "process" | "ray", address=None, jobs=1)
    for cell, result in executor.map(fn, cells): ...
    executor.close()   # the process pool (or a Ray instance started here) lives until then

An executor runs ``fn(cell)`` for each cell and yields (cell, result) as cells finish, in any
order; the result (a ``bench.harness.cell.CellResult``) comes back as ``fn`` made it. It imports
neither the sweep (suites) nor the results store: the driver alone writes results. ``fn`` must
be picklable for the process and Ray executors (a module-level function, or a
``functools.partial`` of one). Registered in ``EXECUTORS`` by name.

Your own: a class with ``name``, ``jobs`` (cells at once; > 1 makes the driver build shared
results up front), ``__init__(address=None, jobs=1)``, ``map(fn, cells)`` and ``close()``,
registered with ``register(cls)`` in a module a suite's ``imports`` names; then
``sdebench run SUITE --executor NAME`` picks it.
"""
from __future__ import annotations

import os

from solvers import InputError

__all__ = ["LocalExecutor", "ProcessExecutor", "RayExecutor", "EXECUTORS", "get_executor", "register"]


class LocalExecutor:
    """Cells one after another in this process."""

    name = "local"

    jobs = 1

    def __init__(self, address: str | None = None, jobs: int = 1):
        if address:
            raise InputError("--address is for --executor ray")
        if jobs != 1:
            raise InputError("the local executor runs one cell at a time; --jobs N uses the process executor")

    def map(self, fn, cells):
        for cell in cells:
            yield cell, fn(cell)

    def close(self):
        pass


def _one_thread():
    """Worker initializer: one torch thread per worker (N workers on N cores do not oversubscribe)."""
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (a forkserver child of a process that ran torch ops)
        pass


class ProcessExecutor:
    """Cells in ``jobs`` worker processes of this machine (``concurrent.futures``; the forkserver
    start method where available, else spawn: never fork a process that holds torch threads),
    one torch thread each; results come back as they finish."""

    name = "process"

    def __init__(self, address: str | None = None, jobs: int = 2):
        if address:
            raise InputError("--address is for --executor ray")
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
            raise InputError(f"--jobs must be a positive integer, got {jobs!r}")
        self.jobs, self._pool, self._env = jobs, None, {}

    def _start(self):
        """The worker pool, started on first use and kept until ``close`` (successive ``map`` calls
        - tuning, shared results, waves of cells - reuse the workers and their in-memory caches)."""
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            self._env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
            os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # inherited by the workers
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=mp.get_context(method),
                                             initializer=_one_thread)
        return self._pool

    def map(self, fn, cells):
        from concurrent.futures import as_completed

        pool, finished = self._start(), False
        try:
            futures = {pool.submit(fn, cell): cell for cell in cells}
            for future in as_completed(futures):
                yield futures[future], future.result()
            finished = True
        finally:
            if not finished:  # interrupted or failed: no work left running, no workers behind
                self.close(cancel=True)

    def close(self, cancel: bool = False):
        if self._pool is None:
            return
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        self._pool = None
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RayExecutor:
    """Cells as Ray tasks (the optional ``ray`` extra): one GPU per task on GPU, else one CPU."""

    name = "ray"

    jobs = 1

    def __init__(self, address: str | None = None, jobs: int = 1):
        if jobs != 1:
            raise InputError("--jobs is for local runs; Ray schedules its own workers")
        try:
            import ray  # noqa: F401
        except ImportError:
            raise InputError("--executor ray needs Ray: pip install 'sdebench[ray]'") from None
        self.address = address

    def map(self, fn, cells):
        import ray

        if not ray.is_initialized():  # started here: shut down by ``close`` (kept across map calls)
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     **({} if self.address else {"num_cpus": None}))
            self._started = True
        finished = False
        try:
            pending = {}
            for cell in cells:
                task = ray.remote(num_cpus=1, num_gpus=1 if cell.device == "cuda" else 0)(_call)
                pending[task.remote(fn, cell)] = cell
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
            finished = True
        finally:
            if not finished:
                self.close()

    def close(self):
        if getattr(self, "_started", False):
            import ray

            ray.shutdown()
            self._started = False


def _call(fn, cell):
    """``fn(cell)`` as one Ray task (``fn`` may be a ``functools.partial``, which Ray cannot wrap)."""
    return fn(cell)


EXECUTORS: dict[str, type] = {}


def register(cls: type, *, replace: bool = False) -> type:
    """Add an executor class to ``EXECUTORS`` under its ``name`` (usable as a decorator)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise InputError(f"an executor class needs a name (class attribute), got {cls!r}")
    missing = [a for a in ("map", "close") if not callable(getattr(cls, a, None))]
    if missing:
        raise InputError(f"executor {name!r} lacks {', '.join(missing)} (see bench.harness.executors)")
    if name in EXECUTORS and EXECUTORS[name] is not cls and not replace:
        raise InputError(f"an executor named {name!r} is already registered; pass replace=True")
    EXECUTORS[name] = cls
    return cls


for _cls in (LocalExecutor, RayExecutor, ProcessExecutor):
    register(_cls)


def get_executor(name: str, **kw):
    try:
        cls = EXECUTORS[name]
    except KeyError:
        raise InputError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}") from None
    return cls(**kw)
