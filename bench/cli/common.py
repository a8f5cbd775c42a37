"""Options and helpers shared by every command group (declared once)."""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib

import torch

import solvers
from bench.harness import limits
from bench.harness.store import default_store_path
from bench.harness.suite import SUITES_DIR
from bench.zoo.trained import CHECKPOINTS

__all__ = ["add_store", "add_threads", "add_model", "exact_target", "target_size", "run_id", "positive_int",
           "step_count", "count", "sample_count", "seed_int", "number", "solver_option", "check_output",
           "check_sample_memory", "model_dim", "same_file"]


def positive_int(text) -> int:
    """argparse type: an integer >= 1."""
    return count(1, None)(text)


def step_count(text) -> int:
    """argparse type: steps or an NFE budget, in [1, ``limits.STEPS_MAX``]."""
    return count(1, limits.STEPS_MAX)(text)


def count(low: int = 1, high: int | None = limits.N_MAX):
    """argparse type: an integer in [low, high] (default high: ``limits.N_MAX``, the most samples
    any command takes; memory is checked by the command, which knows the dimension)."""

    def parse(text) -> int:
        try:
            v = int(text)
        except ValueError:
            v = low - 1
        if v < low or (high is not None and v > high):
            rng = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be an integer {rng}, got {text!r}")
        return v

    return parse


sample_count = count(1)


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


def target_size(model, n) -> int:
    """How many target points ``exact_target`` gives (n, or the held-out data's size when smaller);
    n for a model with neither exact samples nor data (what a likelihood of n points allocates)."""
    if hasattr(model, "exact_sample") or not hasattr(model, "data_sample"):
        return n
    return min(n, int(min(model.data_size(0), 1e9)))


def exact_target(model, n, seed):
    """Exact samples of p_eps, or held-out data for a trained model; None for a model with
    neither (a model spec without data, a timing-only network)."""
    g = torch.Generator().manual_seed(seed + 1)
    if getattr(model, "timing_only", False):
        return None
    if hasattr(model, "exact_sample"):
        return model.exact_sample(n, model.sde.eps, generator=g)
    if hasattr(model, "data_sample"):
        return model.data_sample(target_size(model, n), g)
    return None


def add_model(p, help_extra: str = ""):
    """The MODEL argument: a registered name or a model spec (``bench.zoo.specs``)."""
    from bench.zoo import specs

    p.add_argument("model", help=f"a model name (sdebench list models) or a spec: {', '.join(specs.FORMS)} "
                   f"(settings after '?', e.g. diffusers:DIR?ignore=clip_sample){help_extra}")


def run_id(store, ref) -> int:
    """The id of the run ``ref`` names (``Store.resolve_run``: an id or 'latest')."""
    return store.resolve_run(ref)


def model_dim(model) -> int:
    """The dimension of one sample of a loaded model."""
    return math.prod(model.shape or (2,))


def same_file(a, b) -> bool:
    """Whether two paths name one file (existing: the same inode; else the same resolved path)."""
    a, b = pathlib.Path(a), pathlib.Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(path, flag: str, *, store=None, inputs=()) -> pathlib.Path:
    """An output file that overwrites nothing it must not: the results store (``store``: its file,
    its WAL files), any SQLite database, an input of the command (``inputs``), or a file shipped
    with sdebench (checkpoints, suites). InputError naming ``flag`` and the file otherwise."""
    out = pathlib.Path(path)
    protected = [(pathlib.Path(p), "an input of this command") for p in inputs if p is not None]
    if store is not None:
        sp = pathlib.Path(store)
        protected += [(sp, "the results store"), (sp.with_name(sp.name + "-wal"), "the results store's log"),
                      (sp.with_name(sp.name + "-shm"), "the results store's shared memory")]
    for p, what in protected:
        if same_file(out, p):
            raise solvers.InputError(f"{flag} {out}: is {what} ({p}); it would be overwritten: write to another file")
    for shipped in (CHECKPOINTS, SUITES_DIR):
        if os.path.realpath(out).startswith(os.path.realpath(shipped) + os.sep):
            raise solvers.InputError(f"{flag} {out}: is inside the installed package ({shipped}); write elsewhere")
    if out.is_file():
        try:
            with open(out, "rb") as f:
                head = f.read(16)
        except OSError:
            head = b""
        if head == b"SQLite format 3\x00":
            raise solvers.InputError(f"{flag} {out}: is an SQLite database (a results store?); it would be "
                                     "overwritten: write to another file")
    return out


def check_sample_memory(model, n: int, steps: int = 0, metrics=("sliced_w2",)):
    """Sampling n samples of ``model`` over ``steps`` steps against this machine's free memory
    (``bench.harness.limits``), before anything is allocated."""
    what = f"sampling {n} x {model_dim(model)}-dimensional samples of {model.name}" + (
        f" over {steps} steps" if steps else "")
    limits.check_fits(what, limits.sample_bytes(n, model_dim(model), metrics, steps),
                      "lower --n" + (" or --steps" if steps else ""))
