"""Options and helpers shared by every command group (declared once)."""
from __future__ import annotations

import argparse
import json
import math

import torch

import solvers
from bench.harness.store import default_store_path

__all__ = ["add_store", "add_threads", "add_model", "exact_target", "run_id", "positive_int", "seed_int", "number",
           "solver_option"]


def positive_int(text) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return v


def seed_int(text) -> int:
    """argparse type: a seed, an integer in [0, 2^63 - 1]."""
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= solvers.validate.SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2^63 - 1], got {text!r}")
    return v


def number(low=None, *, above=False):
    """argparse type: a finite float (>= low, or > low with ``above``)."""

    def parse(text):
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or (low is not None and (v < low or (above and v == low))):
            rng = "" if low is None else f" {'>' if above else '>='} {low}"
            raise argparse.ArgumentTypeError(f"must be a finite number{rng}, got {text!r}")
        return v

    return parse


def solver_option(text) -> tuple:
    """argparse type of ``-o KEY=VALUE``: VALUE read as JSON (numbers, true/false, lists) or as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE (e.g. eta=1.0), got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = {"True": True, "False": False}.get(value, value)
    return key.strip(), parsed


def add_store(p):
    p.add_argument("--store", default=str(default_store_path()), help="SQLite results store (default %(default)s)")


def add_threads(p):
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default 1: reliable on a shared machine)")


def exact_target(model, n, seed):
    """Exact samples of p_eps, or held-out data for a trained model; None for a model with
    neither (a model spec without data, a timing-only network)."""
    g = torch.Generator().manual_seed(seed + 1)
    if getattr(model, "timing_only", False):
        return None
    if hasattr(model, "exact_sample"):
        return model.exact_sample(n, model.sde.eps, generator=g)
    if hasattr(model, "data_sample"):
        return model.data_sample(min(n, int(min(model.data_size(0), 1e9))), g)
    return None


def add_model(p, help_extra: str = ""):
    """The MODEL argument: a registered name or a model spec (``bench.zoo.specs``)."""
    from bench.zoo import specs

    p.add_argument("model", help=f"a model name (sdebench list models) or a spec: {', '.join(specs.FORMS)} "
                   f"(settings after '?', e.g. diffusers:DIR?ignore=clip_sample){help_extra}")


def run_id(store, ref) -> int:
    if ref == "latest":
        run_id = store.latest_run()
        if run_id is None:
            raise solvers.InputError(f"no runs in {store.path}")
        return run_id
    try:
        value = int(ref)
    except ValueError:
        raise solvers.InputError(f"{ref!r} is not a run id (or 'latest')") from None
    if value < 1:
        raise solvers.InputError(f"{ref!r} is not a run id (run ids are integers >= 1, or 'latest')")
    return value


