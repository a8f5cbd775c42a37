"""Executors: one interface for running cells locally or as Ray tasks.

    executor = get_executor("local" | "ray", address=None)
    for cell, result in executor.map(fn, cells): ...

An executor runs ``fn(cell)`` for each cell and yields (cell, result) as cells finish, in any
order. It imports neither the sweep (suites) nor the results store: the driver alone writes
results. Registered in ``EXECUTORS`` by name.
"""
from __future__ import annotations

from solvers import InputError

__all__ = ["LocalExecutor", "RayExecutor", "EXECUTORS", "get_executor"]


class LocalExecutor:
    """Cells one after another in this process."""

    name = "local"

    def __init__(self, address: str | None = None):
        if address:
            raise InputError("--address is for --executor ray")

    def map(self, fn, cells):
        for cell in cells:
            yield cell, fn(cell)


class RayExecutor:
    """Cells as Ray tasks (the optional ``ray`` extra): one GPU per task on GPU, else one CPU."""

    name = "ray"

    def __init__(self, address: str | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise InputError("--executor ray needs Ray: pip install 'sdebench[ray]'") from None
        self.address = address

    def map(self, fn, cells):
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     **({} if self.address else {"num_cpus": None}))
        try:
            pending = {}
            for cell in cells:
                task = ray.remote(num_cpus=1, num_gpus=1 if cell.device == "cuda" else 0)(fn)
                pending[task.remote(cell)] = cell
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            if started:
                ray.shutdown()


EXECUTORS = {e.name: e for e in (LocalExecutor, RayExecutor)}


def get_executor(name: str, **kw):
    try:
        cls = EXECUTORS[name]
    except KeyError:
        raise InputError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}") from None
    return cls(**kw)
