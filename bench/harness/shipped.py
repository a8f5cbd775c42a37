"""Shipped artefacts: the quick suite's tuned grids and shared results, made once and shipped.

    python -m bench.harness.make_shipped [--suite quick] [--jobs 2]   # remake bench/harness/shipped/

The script (``bench.harness.make_shipped``) runs the suite (``quick`` by default) into a temporary
store with the shipped artefacts switched off, then ships whatever that run put into its ``<store>.cache/``
(references, exact / held-out sets, noise floors: ``bench.harness.cache``) and its ``grids``
table (tuned grids: ``bench.harness.tuned``) for the shipped models (built-in exact models and
checkpoints; never a user's model spec): ``index.json`` (keys, numbers, grids) and
``tensors.safetensors`` (the tensors), package data of ``bench.harness``.

Each entry is keyed exactly as the disk cache keys it (``DiskCache._canonical``: the shared
result's key, the model's fingerprint, ``CACHE_VERSION`` and the torch version) or, for a grid,
by its tuning key plus the model's fingerprint and the torch version; the whole index also by
``code_hash()``, a hash of the source that makes these values. A shipped value is used only when
its key matches and the code hash is the installed code's; anything else is recomputed as
without it. ``SDEBENCH_NO_SHIPPED=1`` switches the shipped artefacts off.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib

import torch

__all__ = ["DATA_DIR", "code_hash", "enabled", "lookup", "contains", "grid", "grid_key", "load_index", "encode",
           "decode", "is_shipped_model"]

DATA_DIR = pathlib.Path(__file__).with_name("shipped")
_ROOT = pathlib.Path(__file__).resolve().parents[2]
#: the source whose change can change a shipped value (solvers, models, references, metrics, tuning)
CODE = ("solvers", "bench/zoo", "bench/harness/cache.py", "bench/harness/exact.py", "bench/harness/execute.py",
        "bench/harness/formulas.py", "bench/harness/metrics.py", "bench/harness/reference.py",
        "bench/harness/tuned.py", "bench/harness/weak.py")
_MISSING = object()


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """sha1 over the source files of ``CODE`` (their paths and bytes, in sorted order)."""
    h = hashlib.sha1()
    for entry in CODE:
        p = _ROOT / entry
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(_ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def enabled() -> bool:
    return os.environ.get("SDEBENCH_NO_SHIPPED", "") in ("", "0")


@functools.lru_cache(maxsize=1)
def load_index() -> dict:
    """The shipped index, its tensors resolved: {"code", "entries": {canonical key: value},
    "grids": {grid key: TunedGrid dict}}; empty when absent, unreadable or made by other code."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    empty = {"code": None, "entries": {}, "grids": {}}
    try:  # a damaged index or tensor file (truncated, hand-edited) is as if nothing were shipped
        index = json.loads((DATA_DIR / "index.json").read_text())
        if index.get("code") != code_hash():
            return empty
        tensors = load_file(str(DATA_DIR / "tensors.safetensors"))
        entries = {k: decode(v, tensors) for k, v in index["entries"].items()}
        return {"code": index["code"], "entries": entries, "grids": dict(index["grids"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError):
        return empty


def _canonical(key: dict) -> str:
    from bench.harness.cache import DiskCache

    return DiskCache._canonical(key)


def lookup(key: dict, make=None):
    """The shipped value under a disk-cache key (``execute.disk_key``), else ``make()``."""
    value = load_index()["entries"].get(_canonical(key), _MISSING) if enabled() else _MISSING
    if value is _MISSING:
        return make() if make is not None else None
    return value.clone() if isinstance(value, torch.Tensor) else value


def contains(key: dict) -> bool:
    return enabled() and _canonical(key) in load_index()["entries"]


def grid_key(tuning: dict, fingerprint: str) -> str:
    """A tuned grid's shipped key: its tuning key, the model's fingerprint
    (``execute.model_fingerprint``) and the torch version."""
    return json.dumps({"tuning": tuning, "model": fingerprint, "torch": torch.__version__}, sort_keys=True, default=str)


def grid(tuning: dict, fingerprint) -> dict | None:
    """The shipped ``TunedGrid.to_dict()`` for a tuning key (``tuned.tuning_key``), or None;
    ``fingerprint(model_id)`` gives the model's fingerprint (called only when grids are shipped)."""
    if not enabled() or not load_index()["grids"]:
        return None
    return load_index()["grids"].get(grid_key(tuning, fingerprint(tuning["model"])))


# values: tensors, numbers, strings, dicts / lists / tuples of them (what the disk cache holds)
def encode(value, tensors: dict):
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"a shipped dict needs string keys, got {list(value)!r}")
        return {"__dict__": {k: encode(v, tensors) for k, v in value.items()}}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot ship a {type(value).__name__}")


def decode(value, tensors: dict):
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(decode(v, tensors) for v in value["__tuple__"])
        return {k: decode(v, tensors) for k, v in value["__dict__"].items()}
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    return value


def is_shipped_model(model_id: str) -> bool:
    """Named models only (a user's model spec, ``name@fingerprint``, is never shipped)."""
    return "@" not in model_id
