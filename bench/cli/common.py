"""Options and helpers shared by every command group (declared once)."""
from __future__ import annotations

import torch

import solvers
from bench.harness.store import default_store_path

__all__ = ["add_store", "add_threads", "exact_target", "run_id"]


def add_store(p):
    p.add_argument("--store", default=str(default_store_path()), help="SQLite results store (default %(default)s)")


def add_threads(p):
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: reliable on a shared machine)")


def exact_target(model, n, seed):
    """Exact samples of p_eps, or held-out data for a trained model."""
    g = torch.Generator().manual_seed(seed + 1)
    if not hasattr(model, "exact_sample"):
        return model.data_sample(min(n, int(min(model.data_size(0), 1e9))), g)
    return model.exact_sample(n, model.sde.eps, generator=g)


def run_id(store, ref) -> int:
    if ref == "latest":
        run_id = store.latest_run()
        if run_id is None:
            raise solvers.InputError(f"no runs in {store.path}")
        return run_id
    try:
        return int(ref)
    except ValueError:
        raise solvers.InputError(f"{ref!r} is not a run id (or 'latest')") from None


