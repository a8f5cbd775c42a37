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
from collections.abc import Callable
from typing import Any

import torch

from .errors import InputError
from .options import Option, declared

__all__ = ["integer", "seed", "real", "bounds", "dtype", "device", "brownian", "sample_args", "option_value",
           "allowed", "shape", "sde_args", "betas", "keywords", "solver_class", "pc_predictor", "SEED_MAX"]

#: seeds are keys of 64-bit generators: 0 <= seed <= SEED_MAX
SEED_MAX = 2**63 - 1


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


def bounds(low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> str:
    """The text of a range: " in [0, 1]", " in (0, 1]", " > 0", " <= 4", or ""."""
    lo, hi = (f"{v:g}" if isinstance(v, float) else v for v in (low, high))  # ints in full, floats short
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {lo}"
    if high is not None:
        return f" {'<' if high_open else '<='} {hi}"
    return ""


def _within(v, low, high, low_open, high_open) -> bool:
    return ((low is None or v > low or (v == low and not low_open))
            and (high is None or v < high or (v == high and not high_open)))


def integer(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; InputError naming ``name`` otherwise."""
    v = _as_int(value)
    if v is None or not _within(v, low, high, False, False):
        raise InputError(f"{name} must be an integer{bounds(low, high)}, got {value!r}")
    return v


def seed(value, name: str = "seed") -> int:
    return integer(value, name, low=0, high=SEED_MAX)


def _as_real(value) -> float | None:
    """value as a float, or None if it is not a real number (bools are not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_complex() or value.dtype == torch.bool:
            return None
        return float(value.item())
    return float(value) if isinstance(value, numbers.Real) else None


def real(value, name: str, *, low=None, high=None, low_open=False, high_open=False, allow_inf=False,
         hint: str = "") -> float:
    """``value`` as a float in the range (finite unless ``allow_inf``; never NaN); InputError
    naming ``name`` and the whole rule (and ``hint``, an example) otherwise."""
    v = _as_real(value)
    if v is None or math.isnan(v) or (math.isinf(v) and not allow_inf) \
            or not _within(v, low, high, low_open, high_open):
        rule = _number(low, high, low_open, high_open, allow_inf) + (f" ({hint})" if hint else "")
        raise InputError(f"{name} must be {rule}, got {value!r}")
    return v


def _number(low, high, low_open, high_open, allow_inf) -> str:
    finite = "" if allow_inf or (low is not None and high is not None) else "finite "
    return f"a {finite}number{bounds(low, high, low_open=low_open, high_open=high_open)}" + \
        (" or inf" if allow_inf else "")


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


#: how a value becomes a declared type (None: it is not one); other types are checked with isinstance
_AS_TYPE: dict[type, Callable[[Any], Any]] = {bool: lambda v: v if isinstance(v, bool) else None, int: _as_int,
                                               float: _as_real}


def _typed(value, option: Option):
    """value as the declared type of ``option`` and inside its bounds, else None."""
    t = option.value_type
    if t is None:
        return value
    v: Any = _AS_TYPE[t](value) if t in _AS_TYPE else (value if isinstance(value, t) else None)
    if v is None or (t is float and (math.isnan(v) or (math.isinf(v) and not option.inf))):
        return None
    if t in (int, float) and not _within(v, option.low, option.high, option.low_open, option.high_open):
        return None
    return v


def allowed(option: Option) -> str:
    """What ``option`` accepts, in words ("a number in [0, 1]", "one of 'bh1', 'bh2'", ...)."""
    t = option.value_type
    if option.choices is not None:
        what = f"one of {', '.join(map(repr, option.choices))}"
    elif t is bool:
        what = "True or False"
    elif t is int:
        what = f"an integer{bounds(option.low, option.high, low_open=option.low_open, high_open=option.high_open)}"
    elif t is float:
        what = _number(option.low, option.high, option.low_open, option.high_open, option.inf)
    elif t is str:
        what = "a string"
    else:
        what = "anything" if t is None else f"a {t.__name__}"
    return f"None or {what}" if option.accepts_none and t is not None else what


def option_value(solver: str, key: str, value, option: Option):
    """The value of ``solver``'s option ``key``, checked against its declaration and normalised
    (integers as int, the numbers of a float option as float); InputError naming the solver, the
    option, what it accepts and the value given otherwise. The one check of every solver option."""
    if value is None and option.accepts_none:
        return None
    v = _typed(value, option)
    if v is None or (option.choices is not None and v not in option.choices):
        raise InputError(f"solver {solver!r}: option {key} must be {allowed(option)}, got {value!r}")
    return v


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
    _metadata(cls)
    _declared_options(cls)
    if not cls.__module__.startswith("solvers.") and "step" in cls.__dict__ \
            and not getattr(cls.step, "_shape_checked", False):
        cls.step = _checked_step(cls.step)


def _metadata(cls):
    nfe = _as_int(cls.nfe_per_step)
    if nfe is None or nfe < 1:
        raise InputError(f"{cls.__name__}.nfe_per_step must be an integer >= 1, got {cls.nfe_per_step!r}")
    for attr in ("strong_order", "weak_order", "deterministic_order"):
        v = getattr(cls, attr, None)
        f = None if v is None else _as_real(v)
        if v is not None and (f is None or not f > 0 or not math.isfinite(f)):
            raise InputError(f"{cls.__name__}.{attr} must be None or a positive number, got {v!r}")
    for attr in ("stochastic", "adaptive", "uses_brownian", "needs_levy", "per_sample_noise", "multistep"):
        if not isinstance(getattr(cls, attr), bool):
            raise InputError(f"{cls.__name__}.{attr} must be True or False, got {getattr(cls, attr)!r}")


def _declared_options(cls):
    """Option names are identifiers that shadow nothing of the class; each default obeys its declaration."""
    opts = cls.__dict__.get("options", {})
    if not isinstance(opts, dict) or not all(isinstance(k, str) and k.isidentifier() for k in opts):
        raise InputError(f"{cls.__name__}.options must be a dict of option names (identifiers) to defaults "
                         "or solvers.Option declarations")
    for k, spec in declared(cls).items():
        if _shadows(cls, k):
            raise InputError(f"{cls.__name__}: option {k!r} has the name of a method or of declared metadata of the "
                             "class; options are set as instance attributes: rename it")
        try:
            option_value(cls.name or cls.__name__, k, spec.default, spec)
        except InputError as e:
            raise InputError(f"{cls.__name__}.options: the default of {k!r} breaks its own declaration: {e}") from None
    if callable(getattr(cls, "check", None)):
        raise InputError(f"{cls.__name__} defines check(): option values are now declared with solvers.Option "
                         "(type, range, choices) and rules between options go in the classmethod check_options(opts)")
    if cls.noise_option is not None and cls.noise_option not in declared(cls):
        raise InputError(f"{cls.__name__}.noise_option {cls.noise_option!r} is not one of its options")


def _shadows(cls, name: str) -> bool:
    """Whether an instance attribute ``name`` would hide a method, a property or annotated metadata of cls."""
    for c in cls.__mro__:
        v = c.__dict__.get(name)
        if name in inspect.get_annotations(c) or callable(v) or isinstance(v, (property, classmethod, staticmethod)):
            return True
    return False


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

    checked._shape_checked = True  # type: ignore[attr-defined]  # a marker; mypy does not model function attributes
    return checked


def pc_predictor(pred):
    """``pc`` drives its predictor step by step: adaptive solvers have no step to drive."""
    if pred.adaptive:
        raise InputError(f"solver 'pc': predictor {pred.name!r} is adaptive (it has no fixed step to "
                         "alternate with the corrector); use a fixed-step solver such as reverse_diffusion, "
                         "euler_maruyama or heun")
