"""Run cells as Ray tasks (the optional ``ray`` extra): one GPU per task on GPU, else one CPU.

The driver alone writes the results store; workers only compute ``execute_cell``.
"""
from __future__ import annotations

from solvers import InputError


def run_ray(cells, address: str | None = None):
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray: pip install 'sdebench[ray]'") from None
    from bench.harness.runner import execute_cell

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": None}))
    try:
        pending = {}
        for cell in cells:
            gpus = 1 if cell["device"] == "cuda" else 0
            task = ray.remote(num_cpus=1, num_gpus=gpus)(execute_cell)
            pending[task.remote(cell)] = cell
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()
