"""The solver registry: one strict name -> class map that tests and the harness iterate."""
from __future__ import annotations

from . import validate
from .base import Solver
from .errors import InputError

__all__ = ["register", "get", "available"]

_REGISTRY: dict[str, type[Solver]] = {}
_KINDS = ("ode", "sde", "corrector")


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


def get(name) -> type[Solver]:
    """The solver class registered as ``name`` (a class passes through)."""
    if isinstance(name, type) and issubclass(name, Solver):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown solver {name!r}; available: {', '.join(available())}") from None


def available(kind: str | None = None) -> list[str]:
    """Registered solver names (optionally of one kind), sorted."""
    return sorted(k for k, c in _REGISTRY.items() if kind is None or c.kind == kind)
