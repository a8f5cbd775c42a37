"""The unit of work: one typed, frozen cell, its stable key and its JSON form.

A cell is everything that defines what one measurement runs: the task (``sample`` or
``likelihood``), model, solver and its resolved options, grid, NFE budget and steps, samples,
seed, exact prior, device, dtype, threads, metrics, timing repeats, the *resolved* reference
settings of its model, and the plugin modules it needs. Its ``model_spec`` (provenance, not part
of the definition) says what the model name stood for when the cell was defined: the spec
(``bench.zoo.specs``; a registered model's is its name), its settings and the fingerprint of its
weights and config; workers load the model from it (``model_ref``), and ``compare`` reads a
changed fingerprint as "model changed". ``Cell.key`` is the hash of that
definition; the stored row keeps ``Cell.to_json()`` whole (definition, key, format and the
solver's metadata at definition time: declared order, kind, stochastic, adaptive, NFE per step),
and every consumer (resume, export, report, compare, history) reads it back with
``Cell.from_json`` instead of re-deriving anything from a suite's text.

The key hashes the definition only (not the solver metadata), with the same canonical JSON as
format 0 stores, so a cell defined the same way has the same key in every store and baseline.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from bench.zoo import specs

__all__ = ["Cell", "CELL_FORMAT", "solver_meta"]

#: version of the JSON form; 0 = cells of stores written before cells were stored whole
CELL_FORMAT = 1
#: fields that travel with a cell but are not part of its definition (nor of its key)
_NOT_DEFINITION = ("solver_meta", "times", "tuning", "at_floor", "model_spec")


@dataclasses.dataclass(frozen=True)
class Cell:
    task: str                      # "sample" | "likelihood"
    model: str
    solver: str
    options: dict                  # resolved solver options (one value each)
    grid: str | None
    budget: int | None             # NFE budget the steps were derived from, if any
    steps: int | None              # None: adaptive (tolerance-controlled) or likelihood
    n: int
    seed: int
    exact_prior: bool
    device: str
    dtype: str
    threads: int | None
    metrics: tuple = ()
    repeats: int = 3
    warmup: int = 1
    reference: dict = dataclasses.field(default_factory=dict)  # this model's ode_rtol, sde_steps
    imports: tuple = ()
    solver_meta: dict = dataclasses.field(default_factory=dict, compare=False)
    # a tuned grid's resolved times and provenance (``bench.harness.tuned``): filled in by the
    # driver before dispatch; not part of the definition (``grid`` names the tuned grid)
    times: tuple | None = dataclasses.field(default=None, compare=False)
    tuning: dict = dataclasses.field(default_factory=dict, compare=False)
    # metrics at their noise floor at the series' coarser step count (``bench.harness.at_floor``):
    # set by the driver; the cell records them as at floor instead of measuring them
    at_floor: tuple = dataclasses.field(default=(), compare=False)
    # the model's provenance: {"spec", "settings", "fingerprint"} (``bench.harness.suite_models``);
    # empty in cells of stores written before it was recorded
    model_spec: dict = dataclasses.field(default_factory=dict, compare=False)

    __hash__ = None  # dict fields: identity is ``key``

    def definition(self) -> dict:
        """What the key hashes: every field that changes what runs."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _NOT_DEFINITION}
        d["metrics"] = list(self.metrics)
        d["imports"] = list(self.imports)
        if not d["imports"]:
            del d["imports"]  # format-0 keys had no imports entry without plugins
        return d

    @property
    def key(self) -> str:
        return hashlib.sha1(json.dumps(self.definition(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        d = {"format": CELL_FORMAT, "key": self.key, **self.definition(), "solver_meta": dict(self.solver_meta)}
        if self.times is not None:
            d["times"], d["tuning"] = list(self.times), dict(self.tuning)
        if self.at_floor:
            d["at_floor"] = list(self.at_floor)
        if self.model_spec:
            d["model_spec"] = dict(self.model_spec)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, d: dict) -> Cell:
        names = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {k: v for k, v in d.items() if k in names}
        kw["metrics"] = tuple(kw.get("metrics") or ())
        kw["imports"] = tuple(kw.get("imports") or ())
        kw.setdefault("options", {})
        kw.setdefault("reference", {})
        if kw.get("times") is not None:
            kw["times"] = tuple(kw["times"])
        kw["tuning"] = kw.get("tuning") or {}
        kw["at_floor"] = tuple(kw.get("at_floor") or ())
        kw["model_spec"] = dict(kw.get("model_spec") or {})
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> Cell:
        return cls.from_dict(json.loads(text))

    def model_ref(self):
        """What loads this cell's model (``bench.zoo.models.load``): its recorded spec, else its name."""
        if self.model_spec.get("spec"):
            return specs.parse(self.model_spec["spec"], self.model_spec.get("settings") or None)
        return self.model

    @property
    def model_id(self) -> str:
        """The model in the keys of shared results (references, exact sets, tuned grids): its name,
        with its fingerprint for a spec, so that a spec whose weights changed shares nothing stale."""
        ref = self.model_ref()
        if isinstance(ref, str) or ref.kind == "name":
            return self.model
        return f"{self.model}@{self.model_spec.get('fingerprint', '')[:16]}"

    def replace(self, **changes) -> Cell:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line for progress and messages."""
        opts = " ".join(f"{k}={v}" for k, v in self.options.items())
        size = f"nfe<={self.budget}" if self.budget else (f"steps={self.steps}" if self.steps else "")
        return " ".join(p for p in (self.task, self.model, self.solver, opts, f"grid={self.grid}" if self.grid else "",
                                    size, f"seed={self.seed}") if p)


def solver_meta(cls, options: dict) -> dict:
    """A solver class's metadata for these options, as a cell records it at definition time."""
    meta = {"kind": cls.kind, "adaptive": bool(cls.adaptive), "nfe_per_step": cls.nfe_per_step,
            "weak_order": getattr(cls, "weak_order", None)}
    try:
        meta["declared_order"] = cls.declared_order(**options)
        meta["stochastic"] = bool(cls.is_stochastic(**options))
    except Exception:
        meta["declared_order"], meta["stochastic"] = None, bool(getattr(cls, "stochastic", False))
    return meta
