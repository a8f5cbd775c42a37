"""Argument checks of the public API, in one place.

Every public entry point (``sample``, ``ScoreModel``, the SDE constructors, ``register``,
``ScoreModel.from_discrete``, solver options) calls one function here before doing any work, so
a bad argument raises ``solvers.InputError`` naming the argument, its value and what is allowed,
never a traceback from deep inside torch. Integers may be Python ints, numpy integers or 0-d
integer tensors; bools are never integers.
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers

import torch

from .errors import InputError

__all__ = ["integer", "seed", "real", "dtype", "device", "brownian", "sample_args", "option_value", "shape",
           "sde_args", "betas", "keywords", "solver_class", "pc_predictor", "SEED_MAX", "INF_OPTIONS"]

#: seeds are keys of 64-bit generators: 0 <= seed <= SEED_MAX
SEED_MAX = 2**63 - 1
#: float options for which +inf is meaningful (EDM's S_max = inf: churn at every noise level)
INF_OPTIONS = frozenset({"S_max"})


def _as_int(value):
    """value as a Python int, or None if it is not an integer (bools and floats are not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            return None
        return int(value.item())
    if isinstance(value, numbers.Integral):  # int, numpy integers
        try:
            import numpy as np

            if isinstance(value, np.bool_):
                return None
        except ImportError:  # pragma: no cover
            pass
        return int(value)
    return None


def integer(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; InputError naming ``name`` otherwise."""
    v = _as_int(value)
    rng = (f" >= {low}" if high is None else f" in [{low}, {high}]") if low is not None else \
        (f" <= {high}" if high is not None else "")
    if v is None or (low is not None and v < low) or (high is not None and v > high):
        raise InputError(f"{name} must be an integer{rng}, got {value!r}")
    return v


def seed(value, name: str = "seed") -> int:
    return integer(value, name, low=0, high=SEED_MAX)


def real(value, name: str, *, low=None, high=None, low_open=False, allow_inf=False) -> float:
    """``value`` as a float (finite unless ``allow_inf``) with low <= value (< if ``low_open``)."""
    ok = not isinstance(value, bool) and isinstance(value, (numbers.Real, torch.Tensor))
    if isinstance(value, torch.Tensor):
        ok = value.ndim == 0 and not value.is_complex() and value.dtype != torch.bool
    v = float(value) if ok else math.nan
    if not ok or math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise InputError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and v > high:
        raise InputError(f"{name} must be <= {high}, got {value!r}")
    return v


def dtype(value, name: str = "dtype") -> torch.dtype:
    """A floating-point torch dtype (also accepted as "float32"/"float64")."""
    if isinstance(value, str) and isinstance(getattr(torch, value, None), torch.dtype):
        value = getattr(torch, value)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise InputError(f"{name} must be a floating-point torch dtype (torch.float32, torch.float64), got {value!r}")
    return value


def device(value, name: str = "device") -> torch.device:
    """A torch device that exists on this machine."""
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"{name} {value!r} is not a torch device (cpu, cuda, cuda:0, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{name} {value!r}: CUDA is not available here (torch.cuda.is_available() is False)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"{name} {value!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError(f"{name} {value!r}: MPS is not available here")
    elif dev.type != "cpu":
        raise InputError(f"{name} {value!r}: unsupported device type {dev.type!r} (use cpu or cuda)")
    return dev


def brownian(value):
    """None or a Brownian path object (``BrownianPath``, ``CounterBrownianPath`` or one like them)."""
    if value is None:
        return None
    if not all(callable(getattr(value, m, None)) for m in ("increment", "normal", "matches")):
        raise InputError(f"brownian must be a solvers.BrownianPath (or CounterBrownianPath), got "
                         f"{type(value).__name__}")
    return value


_check_seed, _check_brownian, _check_dtype, _check_device = seed, brownian, dtype, device


def sample_args(*, steps, n, seed, brownian, dtype, device, x_T, return_trajectory):
    """The checked, normalised (steps, n, seed, dtype, device) of ``solvers.sample``."""
    steps = None if steps is None else integer(steps, "steps", low=1)
    n = None if n is None else integer(n, "n", low=1)
    seed = _check_seed(seed)
    _check_brownian(brownian)
    if x_T is None:  # with x_T, its own dtype and device are used
        dtype, device = _check_dtype(dtype), _check_device(device)
    if not isinstance(return_trajectory, bool):
        raise InputError(f"return_trajectory must be True or False, got {return_trajectory!r}")
    return steps, n, seed, dtype, device


def option_value(solver: str, key: str, value):
    """A float option must be a number, not NaN; +inf only where it means something."""
    if isinstance(value, float) and (math.isnan(value) or (math.isinf(value) and key not in INF_OPTIONS)):
        allowed = " (only S_max accepts inf)" if math.isinf(value) else ""
        raise InputError(f"solver {solver!r}: option {key}={value!r} must be a finite number{allowed}")
    return value


def shape(value, name: str = "shape"):
    """None or a tuple of positive ints (list, torch.Size and numpy ints accepted)."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list, torch.Size)) or not value:
        raise InputError(f"{name} must be a non-empty tuple of positive integers (one sample, without batch), "
                         f"got {value!r}")
    return tuple(integer(s, f"{name}[{i}]", low=1) for i, s in enumerate(value))


_ORDERED = (("eps", "T", "0 < eps < T", True), ("beta_min", "beta_max", "0 <= beta_min < beta_max", False),
            ("sigma_min", "sigma_max", "0 < sigma_min < sigma_max", True))


def sde_args(who: str, **params):
    """SDE constructor parameters: finite numbers, in range, lower bounds below upper ones."""
    for k, v in params.items():
        real(v, f"{who}: {k}")
    for lo, hi, rule, strict in _ORDERED:
        if lo in params and hi in params:
            a, b = float(params[lo]), float(params[hi])
            if not ((a > 0 if strict else a >= 0) and a < b):
                raise InputError(f"{who}: need {rule}, got {lo}={params[lo]!r}, {hi}={params[hi]!r}")
    if "prior_std" in params and not float(params["prior_std"]) > 0:
        raise InputError(f"{who}: prior_std must be > 0, got {params['prior_std']!r}")


def betas(value, who: str = "DiscreteVP"):
    """A DDPM beta schedule: a 1-D sequence of at least 2 finite values in (0, 1)."""
    try:
        b = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{who}: betas must be a 1-D sequence of numbers, got {type(value).__name__}") from None
    if b.ndim != 1 or b.numel() < 2 or not bool(((b > 0) & (b < 1)).all()):
        raise InputError(f"{who}: betas must be a 1-D sequence of at least 2 values in (0, 1), got shape "
                         f"{tuple(b.shape)}" + ("" if b.numel() < 2 else f", range [{b.min().item():g}, "
                                                 f"{b.max().item():g}]"))


def keywords(who: str, given: dict, allowed):
    """Refuse keyword arguments that ``who`` does not take, listing the ones it does."""
    allowed = list(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InputError(f"{who}: unknown keyword argument(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(allowed) or 'none'}")


def parameters(fn) -> list[str]:
    """The named parameters of a callable (for ``keywords``)."""
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def solver_class(cls, key):
    """What ``register`` checks of a solver class besides its base class, and the step guard."""
    if not isinstance(key, str) or not key.strip() or key != key.strip():
        raise InputError(f"{cls.__name__}: the solver name must be a non-empty string without surrounding "
                         f"blanks, got {key!r}")
    nfe = _as_int(cls.nfe_per_step)
    if nfe is None or nfe < 1:
        raise InputError(f"{cls.__name__}.nfe_per_step must be an integer >= 1, got {cls.nfe_per_step!r}")
    for attr in ("order", "weak_order"):
        v = getattr(cls, attr, None)
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not v > 0
                              or not math.isfinite(v)):
            raise InputError(f"{cls.__name__}.{attr} must be None or a positive number, got {v!r}")
    for attr in ("stochastic", "adaptive", "uses_brownian", "needs_levy", "per_sample_noise"):
        if not isinstance(getattr(cls, attr), bool):
            raise InputError(f"{cls.__name__}.{attr} must be True or False, got {getattr(cls, attr)!r}")
    opts = cls.__dict__.get("options", {})
    if not isinstance(opts, dict) or not all(isinstance(k, str) and k.isidentifier() for k in opts):
        raise InputError(f"{cls.__name__}.options must be a dict of option names (identifiers) to defaults")
    if not cls.__module__.startswith("solvers.") and "step" in cls.__dict__ \
            and not getattr(cls.step, "_shape_checked", False):
        cls.step = _checked_step(cls.step)


def _checked_step(step):
    """A user solver's ``step`` must return a tensor of x's shape, dtype and device."""

    @functools.wraps(step)
    def checked(self, i, x):
        y = step(self, i, x)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape or y.dtype != x.dtype:
            got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise InputError(f"solver {self.name!r}: step({i}, x) returned {got} for x of {tuple(x.shape)} "
                             f"{x.dtype}; a step must return a tensor of x's shape and dtype")
        return y

    checked._shape_checked = True
    return checked


def pc_predictor(pred):
    """``pc`` drives its predictor step by step: adaptive solvers have no step to drive."""
    if pred.adaptive:
        raise InputError(f"solver 'pc': predictor {pred.name!r} is adaptive (it has no fixed step to "
                         "alternate with the corrector); use a fixed-step solver such as reverse_diffusion, "
                         "euler_maruyama or heun")
