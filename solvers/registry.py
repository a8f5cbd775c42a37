"""The solver registry: one strict name -> class map that tests and the harness iterate.

Installed packages add solvers through the entry-point group ``sdebench.solvers``: each entry
names a module that registers its solvers when imported, or a ``Solver`` class::

    [project.entry-points."sdebench.solvers"]
    my-solvers = "my_package.my_solvers"

They are imported the first time the registry is listed, and again when ``get`` misses a name
(a package installed since); a plugin that fails to import is an ``InputError`` naming it.
"""
from __future__ import annotations

import importlib.metadata

from . import validate
from .base import Solver
from .errors import InputError

__all__ = ["register", "get", "available", "load_plugins", "ENTRY_POINTS"]

_REGISTRY: dict[str, type[Solver]] = {}
_KINDS = ("ode", "sde", "corrector")
#: the entry-point group of installed packages' solvers
ENTRY_POINTS = "sdebench.solvers"
_LOADED: set[str] = set()  # entry points already imported ("name = value")
_SCANNED = {"done": False}  # whether the entry points were looked at once


def register(cls=None, *, name: str | None = None, replace: bool = False):
    """Register a ``Solver`` subclass (usable as a decorator). Returns the class.

    After ``register(MySolver)``, ``solvers.sample(model, "my_solver", ...)`` works and the
    registry-driven tests and benchmarks pick it up."""

    def _do(c):
        if not (isinstance(c, type) and issubclass(c, Solver)):
            raise InputError(f"register expects a subclass of solvers.Solver, got {c!r}")
        key = name or c.name
        if not key or not isinstance(key, str):
            raise InputError(f"{c.__name__} has no name: set the class attribute `name`")
        if c.kind not in _KINDS:
            raise InputError(f"{c.__name__}.kind must be one of {_KINDS}, got {c.kind!r}")
        if c.step is Solver.step and not (c.adaptive and c.integrate is not Solver.integrate):
            raise InputError(f"{c.__name__} does not implement step(i, x) (or, adaptive, integrate(x))")
        if key in _REGISTRY and not replace and _REGISTRY[key] is not c:
            raise InputError(f"a solver named {key!r} is already registered; pass replace=True")
        validate.solver_class(c, key)
        c.name = key
        _REGISTRY[key] = c
        return c

    return _do if cls is None else _do(cls)


def load_plugins() -> list[str]:
    """Import the ``sdebench.solvers`` entry points not imported yet (registering a ``Solver``
    class an entry names); returns their names."""
    new = []
    _SCANNED["done"] = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
        ident = f"{ep.name} = {ep.value}"
        if ident in _LOADED:
            continue
        _LOADED.add(ident)
        try:
            obj = ep.load()
        except Exception as e:
            raise InputError(f"solver plugin {ident!r} (entry point group {ENTRY_POINTS}) cannot be imported: "
                             f"{type(e).__name__}: {e}") from None
        if isinstance(obj, type) and issubclass(obj, Solver) and _REGISTRY.get(obj.name) is not obj:
            register(obj)
        new.append(ep.name)
    return new


def get(name) -> type[Solver]:
    """The solver class registered as ``name`` (a class passes through)."""
    if isinstance(name, type) and issubclass(name, Solver):
        return name
    if isinstance(name, str) and name not in _REGISTRY:
        load_plugins()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown solver {name!r}; available: {', '.join(available())}") from None


def available(kind: str | None = None) -> list[str]:
    """Registered solver names (optionally of one kind), sorted; installed plugins included."""
    if not _SCANNED["done"]:
        load_plugins()
    return sorted(k for k, c in _REGISTRY.items() if kind is None or c.kind == kind)
