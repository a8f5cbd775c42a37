"""A solver's options, declared once: ``Option(default, low=, high=, choices=, ...)``.

A solver class lists its options in ``options = {name: Option(...)}``, with the type, the allowed
values and the default next to each other, as diffusers declares a scheduler's config. The
declarations are merged along the class's MRO (``declared``), and ``validate.option_value`` checks
every value a call passes against its declaration, in one place, with one message: the solver, the
option, what is allowed and the value given. Rules between options that one declaration cannot say
(dpm_solver_3's r1 < r2) go in the solver's classmethod ``check_options``.

A plain default (``options = {"eta": 0.5}``, as the README writes a user's solver) declares an
option of the default's type with no other constraint.
"""
from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

__all__ = ["Option", "positive", "declared"]


@dataclass(frozen=True)
class Option:
    """One solver option: its default and the values it accepts.

    type: bool, int, float, str, or any other class (checked with ``isinstance``); None infers it
        from the default (an option whose default is None and with no type accepts any value).
        Integers may be numpy integers or 0-d integer tensors; a float option also takes an int
        (stored as float); bools are never numbers.
    low, high: bounds of a number (``low_open`` / ``high_open``: strict); NaN is never accepted,
        +-inf only where ``inf`` is set (EDM's S_max = inf: churn at every noise level).
    choices: the only values accepted (strings or numbers).
    none: None is accepted too (implied by a default of None).
    doc: one line saying what the option does (read back through ``Solver.option_specs()``).
    """

    default: Any
    type: builtins.type | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    none: bool = False
    inf: bool = False
    doc: str = ""

    @property
    def value_type(self) -> builtins.type | None:
        """The declared type, else the default's (None: anything goes)."""
        if self.type is not None:
            return self.type
        return None if self.default is None else type(self.default)

    @property
    def accepts_none(self) -> bool:
        return self.none or self.default is None


def positive(default: float, **kw) -> Option:
    """A number > 0 (a tolerance, a step size, a signal-to-noise ratio)."""
    return Option(default, low=0.0, low_open=True, **kw)


def declared(cls) -> dict[str, Option]:
    """{name: Option} of a solver class: its ``options`` and its bases', merged along the MRO (a
    subclass's declaration wins; plain defaults become ``Option(default)``)."""
    merged: dict[str, Option] = {}
    for c in reversed(cls.__mro__):
        for name, spec in c.__dict__.get("options", {}).items():
            merged[name] = spec if isinstance(spec, Option) else Option(spec)
    return merged
