"""Held-out data and a feature extractor for a model a user brings (a spec's ``data`` and
``features`` settings, e.g. a suite's ``[[models]]`` table):

    data = "heldout.npy"            # .npy, .npz (one array, or one named "data"), .pt (a tensor),
                                    # or "MODULE:FUNCTION" returning one; paths relative to the suite
    features = "my_feats:embed"     # x -> (n, k) features, for the Frechet distance ``fd_features``

The rows are samples in the model's space, shape (rows, *model.shape) (or flattened), floating
point and finite, at least ``MIN_ROWS``. They are split once by a fixed permutation (seed
``SPLIT_SEED``) into two disjoint halves, as the shipped digits are: the first is the target a
cell's samples are compared with, the second the independent set of the noise floor (a metric's
value between the two halves). ``attach`` gives the model the same ``data_sample(n, generator,
part)`` / ``data_size(part)`` the trained models have (``bench.zoo.trained``), so the harness
reads them on one path (``bench.harness.execute``: the target and held-out sets). Every problem
is a one-line ``DataError`` naming its key.
"""
from __future__ import annotations

import importlib
import math
import pathlib

import numpy as np
import torch

from solvers import InputError

__all__ = ["DataError", "KEYS", "FILE_SUFFIXES", "MIN_ROWS", "SPLIT_SEED", "attach", "load_rows", "source_bytes"]

#: the settings this module reads
KEYS = ("data", "features")
FILE_SUFFIXES = (".npy", ".npz", ".pt")
#: fewest rows: two halves of at least 8 samples each
MIN_ROWS = 16
SPLIT_SEED = 0


class DataError(InputError):
    """A problem with a model's ``data`` or ``features`` setting (``key`` names which)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key} {message}")
        self.key = key


def is_file(value: str) -> bool:
    return pathlib.Path(value).suffix in FILE_SUFFIXES


def _function(key, value):
    module, sep, attr = value.partition(":")
    if not sep or not all(p.isidentifier() for p in module.split(".") + attr.split(".")):
        raise DataError(key, f"{value!r}: expected a file ({', '.join(FILE_SUFFIXES)}) or MODULE:FUNCTION")
    try:
        obj = importlib.import_module(module)
    except Exception as e:
        raise DataError(key, f"{value!r}: cannot import module {module!r}: {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DataError(key, f"{value!r}: module {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DataError(key, f"{value!r}: {attr!r} is a {type(obj).__name__}, not a function")
    return obj


def _tensor(key, value, obj) -> torch.Tensor:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "fiub":
            raise DataError(key, f"{value!r}: holds {obj.dtype} values, not numbers")
        obj = torch.from_numpy(np.ascontiguousarray(obj))
    if not isinstance(obj, torch.Tensor):
        raise DataError(key, f"{value!r}: gives a {type(obj).__name__}, not an array or tensor")
    return obj


def load_rows(value: str) -> torch.Tensor:
    """The rows ``data`` names: a file (``FILE_SUFFIXES``, an absolute path) or MODULE:FUNCTION()."""
    if not isinstance(value, str) or not value.strip():
        raise DataError("data", f"{value!r}: must be a file path or MODULE:FUNCTION")
    if not is_file(value):
        try:
            obj = _function("data", value)()
        except DataError:
            raise
        except Exception as e:
            raise DataError("data", f"{value!r}: calling it failed: {type(e).__name__}: {e}") from None
        return _tensor("data", value, obj)
    path = pathlib.Path(value)
    if not path.is_file():
        raise DataError("data", f"{value!r}: no such file")
    try:
        if path.suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".npy":
            obj = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if len(names) != 1 and "data" not in names:
                    raise DataError("data", f"{value!r}: holds arrays {names}; give one, or one named 'data'")
                obj = z["data" if "data" in names else names[0]]
    except DataError:
        raise
    except Exception as e:
        raise DataError("data", f"{value!r}: cannot be read: {type(e).__name__}: {e}") from None
    return _tensor("data", value, obj)


def _checked(rows: torch.Tensor, shape, value) -> torch.Tensor:
    if not rows.is_floating_point():
        dtype = str(rows.dtype).replace("torch.", "")
        raise DataError("data", f"{value!r}: holds {dtype} values; give floating-point samples in the model's "
                                "space (scaled as its inputs)")
    shape = tuple(shape or ())
    if len(shape) > 1 and rows.ndim == 2 and rows.shape[1] == math.prod(shape):  # flattened rows
        rows = rows.reshape(rows.shape[0], *shape)
    if rows.ndim < 1 or (shape and tuple(rows.shape[1:]) != shape):
        raise DataError("data", f"{value!r}: shape {tuple(rows.shape)}; the model's samples are (rows, "
                                f"{', '.join(map(str, shape))})")
    if rows.shape[0] < MIN_ROWS:
        raise DataError("data", f"{value!r}: {rows.shape[0]} rows; need at least {MIN_ROWS} (two disjoint halves: "
                                "the target and the noise floor's independent set)")
    if not bool(torch.isfinite(rows).all()):
        raise DataError("data", f"{value!r}: holds NaN or inf")
    return rows.to(torch.float64)


class _HeldOut:
    """Two disjoint halves of the rows: ``sample(n, generator, part)`` draws n of half ``part``
    without replacement (``size(part)`` at most)."""

    def __init__(self, rows: torch.Tensor):
        perm = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(SPLIT_SEED))
        half = rows.shape[0] // 2
        self.halves = (rows[perm[:half]], rows[perm[half:2 * half]])

    def size(self, part: int = 0) -> float:
        return float(self.halves[part].shape[0])

    def sample(self, n: int, generator=None, *, part: int = 0) -> torch.Tensor:
        rows = self.halves[part]
        if n > rows.shape[0]:
            raise InputError(f"the held-out data's halves have {rows.shape[0]} rows; asked for n={n}")
        return rows[torch.randperm(rows.shape[0], generator=generator)[:n]].clone()


def _feature_fn(value, probe: torch.Tensor):
    fn = _function("features", value)

    def features(x: torch.Tensor) -> torch.Tensor:
        try:
            out = fn(x)
        except Exception as e:
            raise DataError("features", f"{value!r}: failed on {tuple(x.shape)}: {type(e).__name__}: {e}") from None
        out = _tensor("features", value, out)
        if out.ndim != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 1:
            raise DataError("features", f"{value!r}: returned shape {tuple(out.shape)} for {x.shape[0]} samples; "
                                        "expected (n, k)")
        if not bool(torch.isfinite(out).all()):
            raise DataError("features", f"{value!r}: returned NaN or inf")
        return out.detach().to("cpu", torch.float64)

    features(probe)  # checked now, at suite validation
    return features


def attach(model, settings: dict):
    """Give ``model`` the held-out data (``data_sample``, ``data_size``, ``data``) and the feature
    extractor (``features``) its settings name; returns it."""
    if "features" in settings and "data" not in settings:
        raise DataError("features", f"{settings['features']!r}: needs data = ... (the held-out samples to compare)")
    if "data" not in settings:
        return model
    held = _HeldOut(_checked(load_rows(settings["data"]), getattr(model, "shape", None), settings["data"]))
    model.data_sample, model.data_size = held.sample, held.size
    model.data = "own"
    if "features" in settings:
        model.features = _feature_fn(settings["features"], held.halves[0][:4])
        model.data = "features"
    return model


def source_bytes(settings: dict):
    """What the held-out data and the feature extractor depend on (for the model's fingerprint):
    the data file's bytes, or the source file of the module that makes them."""
    for key in KEYS:
        value = settings.get(key)
        if not value:
            continue
        path = pathlib.Path(value) if is_file(value) else None
        if path is None:
            module = importlib.import_module(value.partition(":")[0])
            path = pathlib.Path(getattr(module, "__file__", "") or "")
        if path.is_file():
            yield path.read_bytes()
