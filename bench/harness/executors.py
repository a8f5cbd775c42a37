"""Executors: one interface for running cells locally or as Ray tasks.

    executor = get_executor("local" | "process" | "ray", address=None, jobs=1)
    for cell, result in executor.map(fn, cells): ...
    executor.close()   # the process pool (or a Ray instance started here) lives until then

An executor runs ``fn(cell)`` for each cell and yields (cell, result) as cells finish, in any
order; the result (a ``bench.harness.cell.CellResult``) comes back as ``fn`` made it. It imports
neither the sweep (suites) nor the results store: the driver alone writes results. ``fn`` must
be picklable for the process and Ray executors (a module-level function, or a
``functools.partial`` of one). Registered in ``EXECUTORS`` by name.

An executor whose workers do not see the driver's disk sets ``shared_disk = False`` (Ray): the
driver then makes the shared results (references, exact sets, floors) once, over the workers,
keeps them in its own cache, and calls ``map(fn, cells, shared=provide)``; the executor sends the
values ``provide(cell)`` names (``{key: value}``) to the workers, each once per run, and calls
``fn(cell, shared=values)`` there.

Your own: a class with ``name``, ``jobs`` (cells at once; > 1 makes the driver build shared
results up front), ``__init__(address=None, jobs=1)``, ``map(fn, cells)`` and ``close()``
(and ``shared_disk = False`` with ``map(fn, cells, shared=None)`` when its workers lack the disk;
optionally ``start(cells)``, called with the run's cells before any ``map``),
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


#: what a worker process needs to run a cell: imported once, by the forkserver, before it forks
#: the workers (else each worker imports torch and the harness itself, seconds each)
WORKER_PRELOAD = ("bench.harness.execute",)


def _ready() -> bool:
    """A no-op task: submitted by ``ProcessExecutor.start`` to bring the workers up early."""
    return True


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
    start method where available, its server preloading ``WORKER_PRELOAD``, else spawn: never fork
    a process that holds torch threads), one torch thread each; results come back as they finish.
    ``start(cells)`` brings the workers up while the driver estimates the run."""

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
            context = mp.get_context(method)
            if method == "forkserver":
                context.set_forkserver_preload(list(WORKER_PRELOAD))  # applies when the server starts
            self._env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
            os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # inherited by the workers
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=context, initializer=_one_thread)
        return self._pool

    def start(self, cells):
        """Start the workers now (the driver calls this before it tunes and estimates): one no-op
        task each, submitted from a thread (the first submit waits for the forkserver's preload,
        seconds that the driver spends estimating meanwhile)."""
        import threading

        pool = self._start()

        def bring_up():
            try:
                for _ in range(self.jobs):
                    pool.submit(_ready)
            except RuntimeError:  # the run ended first (bad input found while tuning): nothing to start
                pass

        threading.Thread(target=bring_up, daemon=True).start()

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
    """Cells as Ray tasks (the optional ``ray`` extra) on a local Ray instance or a cluster
    (``address``) whose nodes need not share the driver's disk:

    - one CPU per task, and one GPU for a cell on CUDA;
    - ``jobs`` = the cluster's CPUs (cells at once), so the driver tunes grids and makes the
      shared results over the cluster first;
    - shared results travel through Ray, not the file system: ``map(fn, cells, shared=provide)``
      puts each value ``provide(cell)`` names into the object store once per run (``ray.put``,
      kept until ``close``) and the task calls ``fn(cell, shared={key: value})``;
    - user modules (the cells' ``imports``, model specs' ``denoiser:`` / ``callable:`` modules)
      that are not installed packages reach the workers through the job's runtime environment
      (``py_modules``: a package's directory or a single-file module's ``.py``), set when the
      driver calls ``start(cells)`` before any ``map``;
    - a task whose worker or node dies is retried by Ray (``RETRIES`` times) on another; its
      result comes back once, so the driver commits each cell once;
    - a map that fails or is interrupted keeps the connection and the objects put for the run's
      next map (the driver goes on after a failed shared result) until ``close``; a worker that
      cannot fetch them (unreachable driver, another authentication mode) is reported as that,
      not as lost objects;
    - ``traffic``: bytes that travelled (the pickled task arguments, shared values put, results).
    """

    name = "ray"

    #: the workers may run on other nodes: the driver's cache directory is not theirs
    shared_disk = False
    #: retries of a task whose worker process or node died (Ray's ``max_retries``)
    RETRIES = 3

    def __init__(self, address: str | None = None, jobs: int = 1):
        if jobs != 1:
            raise InputError("--jobs is for local runs; Ray schedules its own workers")
        try:
            import ray  # noqa: F401
        except ImportError:
            raise InputError("--executor ray needs Ray: pip install 'sdebench[ray]'") from None
        self.address, self._started, self._refs, self._env = address, False, {}, None
        self.traffic = {"tasks": 0, "args": 0, "shared": 0, "results": 0}

    def start(self, cells):
        """Called by the driver with the run's cells before any ``map``: connects with a runtime
        environment carrying their user modules (Ray accepts local paths at the job level only)."""
        import ray

        self._env = _module_env(sorted({m for c in cells for m in _user_modules(c)}))
        if self._env and ray.is_initialized() and not self._started:
            raise InputError(f"Ray was initialized before the run, so the modules {self._env['py_modules']} cannot "
                             "be sent to its workers; let the run connect (--address) or install them there")
        self._connect()

    def _connect(self):
        import ray

        if not ray.is_initialized():  # started (or connected) here: shut down by ``close``
            why = _unreachable(self.address)
            if why:  # Ray itself retries a dead address for minutes before it gives up
                raise InputError(f"cannot reach the Ray cluster at {self.address}: {why}")
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         **({"runtime_env": self._env} if self._env else {}))
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise InputError(f"cannot reach the Ray cluster at {self.address or 'a new local instance'}: "
                                 f"{type(e).__name__}: {e}") from None
            self._started = True
        return ray

    def resources(self) -> dict:
        """The cluster's total resources ({"CPU": ..., "GPU": ..., "nodes": ...})."""
        ray = self._connect()
        res = dict(ray.cluster_resources())
        return {"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0)),
                "nodes": sum(1 for n in ray.nodes() if n.get("Alive"))}

    @property
    def jobs(self) -> int:
        return max(1, int(self.resources()["CPU"]))

    def _shared_refs(self, item, shared):
        if shared is None:
            return (), ()
        import pickle

        ray, values = self._connect(), shared(item)
        for key, value in values.items():
            if key not in self._refs:
                self._refs[key] = ray.put(value)
                self.traffic["shared"] += len(pickle.dumps(value))
        keys = tuple(values)
        return keys, tuple(self._refs[k] for k in keys)

    def map(self, fn, cells, shared=None):
        """Each cell as a task; (cell, result) as they finish. A map that fails or is interrupted
        leaves its other tasks running and the connection open (``close`` ends both): cancelling
        a task that completes meanwhile aborts Ray 2.60's driver (RAY_CHECK "Tried to complete
        task that was not pending", task_manager.cc), so their results are dropped instead."""
        import pickle

        ray = self._connect()
        pending = {}
        for cell in cells:
            keys, refs = self._shared_refs(cell, shared)
            gpu = 1 if getattr(_cell_of(cell), "device", "cpu") == "cuda" else 0
            task = _remote(ray).options(num_cpus=1, num_gpus=gpu, max_retries=self.RETRIES, retry_exceptions=False)
            pending[task.remote(fn, cell, keys, *refs)] = cell
            self.traffic["tasks"] += 1
            self.traffic["args"] += len(pickle.dumps((fn, cell, keys)))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                result = _get(ray, ref)
                self.traffic["results"] += len(pickle.dumps(result))
                yield pending.pop(ref), result

    def close(self):
        self._refs.clear()
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


_REMOTE: dict = {}


def _remote(ray):
    if "call" not in _REMOTE:
        _REMOTE["call"] = ray.remote(_call)
    return _REMOTE["call"]


def _unreachable(address: str | None, timeout: float = 5.0) -> str | None:
    """Why a cluster ``address`` (``HOST:PORT``, or ``ray://HOST:PORT``) does not accept a TCP
    connection within ``timeout`` seconds; None when it does, or for no address, "auto" and "local"."""
    import socket

    if not address or address in ("auto", "local"):
        return None
    host, sep, port = address.split("://")[-1].rpartition(":")
    if not sep or not port.isdigit():
        return f"not HOST:PORT ({address!r})"
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    return None


def _get(ray, ref):
    """A task's result; a worker that could not fetch an object this driver put (OwnerDiedError
    while the driver is alive) is a set-up problem, said as one."""
    try:
        return ray.get(ref)
    except ray.exceptions.OwnerDiedError as e:
        raise InputError("a Ray worker could not fetch the shared results this driver put "
                         f"({type(e).__name__}): the worker nodes must reach the driver's address, and the driver "
                         "must use the cluster's authentication mode (RAY_AUTH_MODE; a process keeps the mode of "
                         "its first ray.init, so connect from a fresh process)") from None


def _call(fn, item, keys=(), *values):
    """``fn(item)`` as one Ray task (``fn`` may be a ``functools.partial``, which Ray cannot wrap),
    given the shared results ``keys`` -> ``values`` (resolved by Ray from the object store)."""
    if keys:
        return fn(item, shared=dict(zip(keys, values)))
    return fn(item)


def _cell_of(item):
    """The cell of a task item: a cell, or (cell, key) of a shared result."""
    return item[0] if isinstance(item, tuple) else item


def _user_modules(cell) -> list[str]:
    """The modules a cell imports on a worker: its suite's ``imports`` and its model spec's module."""
    mods = list(getattr(cell, "imports", ()) or ())
    model = str(getattr(cell, "model", ""))
    kind, _, rest = model.partition(":")
    if kind in ("denoiser", "callable") and ":" in rest:
        mods.append(rest.split(":")[0])
    return mods


def _module_env(modules) -> dict | None:
    """A Ray runtime environment carrying the top-level packages / single-file modules of
    ``modules`` that are not installed (not under site-packages, not this project's own); the
    workers import them from there."""
    import importlib.util
    import pathlib
    import sysconfig

    installed = {pathlib.Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    paths = set()
    for mod in modules:
        top = mod.split(".")[0]
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            continue
        origin = pathlib.Path(spec.origin).resolve()
        if top in ("bench", "solvers") or any(origin.is_relative_to(p) for p in installed):
            continue
        paths.add(str(origin.parent if spec.submodule_search_locations else origin))  # a package or a .py file
    return {"py_modules": sorted(paths)} if paths else None


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
