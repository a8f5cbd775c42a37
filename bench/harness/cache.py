"""Work shared by cells, kept on disk: references, exact target sets and noise floors.

``DiskCache(root).get(key, make)`` returns the value stored under ``key`` (a JSON-able dict of
everything the value depends on), or makes it, stores it and returns it. Values are tensors,
numbers, strings and dicts/lists/tuples of them. Files are ``<root>/<kind>-<sha1 of the key>.pt``
written by ``torch.save`` to a temporary file in the same directory and renamed into place
(``os.replace`` is atomic), so a reader never sees half a file. They are read with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only: a file
planted in a shared cache cannot run code (it is unreadable, hence remade). Workers that want
the same missing entry at the same time take a per-entry lock file
(``fcntl.flock`` where available): one makes it, the others wait and then read it. The key is
stored beside the value and checked on read; an unreadable or mismatching file is remade.

The runner puts the cache beside the store (``<store>.cache/``) and hands its path to
``execute_cell``; nothing here knows about the store.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import tempfile

import torch

from solvers import InputError

__all__ = ["DiskCache", "CACHE_VERSION", "cache_dir_for", "check_cache_dir"]

#: bump when the code that makes a cached value (references, exact sets, floors) changes its result
CACHE_VERSION = 1

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locks, duplicate work stays correct
    fcntl = None


def cache_dir_for(store_path) -> pathlib.Path:
    """The cache directory that goes with a store file: ``<store>.cache``."""
    p = pathlib.Path(store_path)
    return p.with_name(p.name + ".cache")


def check_cache_dir(root) -> pathlib.Path:
    """The cache directory, created and checked writable (a file in the way or a read-only folder
    would fail every cell of a run one by one); InputError naming it otherwise."""
    root = pathlib.Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"cache directory {root} (shared results kept beside the store) cannot be written: "
                         f"{e.strerror or e}; move what is in the way, make it writable, or pass another --store"
                         ) from None
    return root


class DiskCache:
    def __init__(self, root, create: bool = True):
        self.root = pathlib.Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _canonical(key: dict) -> str:
        return json.dumps({**key, "cache_version": CACHE_VERSION, "torch": torch.__version__},
                          sort_keys=True, default=str)

    def path(self, key: dict) -> pathlib.Path:
        text = self._canonical(key)
        kind = str(key.get("kind", "entry")).replace("/", "_")
        return self.root / f"{kind}-{hashlib.sha1(text.encode()).hexdigest()[:20]}.pt"

    def contains(self, key: dict) -> bool:
        return self.path(key).exists()

    def load(self, key: dict):
        """The stored value, or raise KeyError."""
        path = self.path(key)
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
        except Exception as e:
            raise KeyError(str(key)) from e
        if not isinstance(blob, dict) or blob.get("key") != self._canonical(key):
            raise KeyError(str(key))
        return blob["value"]

    def save(self, key: dict, value) -> pathlib.Path:
        """Write atomically: a temporary file in the same directory, renamed into place."""
        path = self.path(key)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=path.stem + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"key": self._canonical(key), "value": value}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path

    @contextlib.contextmanager
    def _lock(self, key):
        if fcntl is None:
            yield
            return
        with open(self.path(key).with_suffix(".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def get(self, key: dict, make):
        """The value under ``key``; made (once, whoever asks concurrently) and stored if missing."""
        try:
            return self.load(key)
        except KeyError:
            pass
        with self._lock(key):
            try:
                return self.load(key)  # made by a peer while we waited
            except KeyError:
                value = make()
                self.save(key, value)
                return value
