"""The unit of work and its result: one typed, frozen cell (its stable key and JSON form) and
the typed ``CellResult`` execution makes for it.

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

``CellResult`` (with its ``Timing``) is made by ``bench.harness.execute.execute_cell`` and passed
unchanged through the executors and the runner to the store, which keeps its ``to_dict`` form in
the row's JSON columns and gives it back (``Store.results``); the report's data layer and
``compare`` read its flat ``columns()``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing

from bench.harness import metrics as _metrics
from bench.zoo import specs

__all__ = ["Cell", "CELL_FORMAT", "solver_meta", "CellResult", "Timing"]

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
        kw: dict[str, typing.Any] = {k: v for k, v in d.items() if k in names}
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


@dataclasses.dataclass(frozen=True)
class Timing:
    """Where a cell's time went, in seconds (``bench.harness.timing.time_adaptive`` on the
    sampling call; None: not measured for this cell).

    median_s, min_s, max_s   of the timed runs (the wall time of one solve)
    repeats, warmup          timed and warm-up runs made (a shape new to the process is warmed up)
    rse, stable              relative standard error of the median; whether it is within the target
    peak_mem_bytes           CUDA peak allocation, or the process's max resident set size on the CPU
    one_eval_s               one network evaluation at the cell's batch
    overhead                 median_s / (NFE x one_eval_s): 1 is the physical limit
    threads, jobs            torch threads; cells running at once (> 1: noisier timings)
    reference_s              references, exact sets and noise floors made or read for the cell
    metrics_s                measuring the metrics (not their float64 solve, which is solving)
    upfront_reference_s      shared results the driver made up front for this cell (``--jobs``)
    extra                    other figures (an imported pytest-benchmark's mean_s, stddev_s, ...)
    """

    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    repeats: int | None = None
    warmup: int | None = None
    rse: float | None = None
    stable: bool | None = None
    peak_mem_bytes: int | None = None
    one_eval_s: float | None = None
    overhead: float | None = None
    threads: int | None = None
    jobs: int | None = None
    metrics_s: float | None = None
    reference_s: float | None = None
    upfront_reference_s: float | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    #: the stored (flat) columns of the timing: this prefix and the field's name
    PREFIX: typing.ClassVar[str] = "time_"

    @classmethod
    def column(cls, field: str) -> str:
        """The flat column of one timing figure, e.g. ``Timing.column("median_s")``."""
        return cls.PREFIX + field

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**{k: v for k, v in d.items() if v is not None}, **self.extra}

    @classmethod
    def from_dict(cls, d: dict | None) -> Timing:
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: d.pop(k) for k in list(d) if k in names}, extra=d)

    def columns(self) -> dict:
        return {self.column(k): v for k, v in self.to_dict().items()}

    def replace(self, **changes) -> Timing:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class CellResult:
    """What running one cell gave (``bench.harness.execute.execute_cell``; never an exception).

    nfe        network evaluations of one sampling call (None: the cell failed)
    steps      grid intervals the solver took (None: adaptive, likelihood, or failed before)
    stats      the solver's own statistics (accepted/rejected steps, ...)
    timing     ``Timing``
    metrics    metric name -> ``bench.harness.metrics.MetricResult`` (value, se, floor, at floor)
    extra      other stored figures: metrics' ``outputs`` that are not metrics themselves
               (logp_bias_per_dim, ...), a tuned grid's own figures (tune_*), columns of a metric
               this process has not registered
    error      "Type: message" of a failure (None: it ran), with its ``traceback`` (not stored)
    cell_s     wall time of the whole cell in the worker
    solve_s    time in solvers: the timed runs and the float64 solve of the metrics
    """

    nfe: int | None = None
    steps: int | None = None
    stats: dict = dataclasses.field(default_factory=dict)
    timing: Timing = dataclasses.field(default_factory=Timing)
    metrics: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    cell_s: float | None = None
    solve_s: float | None = None

    @classmethod
    def failure(cls, error: str, traceback: str | None = None, steps: int | None = None) -> CellResult:
        return cls(steps=steps, error=error, traceback=traceback, solve_s=0.0)

    def metric_columns(self) -> dict:
        """The metrics as stored: each one's columns, then ``extra``."""
        out = {}
        for name, r in self.metrics.items():
            out.update(r.columns(name))
        return {**out, **self.extra}

    def columns(self) -> dict:
        """One flat table row: nfe, steps, error, cell_s, solve_s, the metric columns and the
        timing columns (``Timing.column``)."""
        return {"nfe": self.nfe, "steps": self.steps, "error": self.error, "cell_s": self.cell_s,
                "solve_s": self.solve_s, **self.metric_columns(), **self.timing.columns()}

    def to_dict(self) -> dict:
        """The JSON form (the store's row, and transport between processes)."""
        return {"nfe": self.nfe, "steps": self.steps, "stats": dict(self.stats), "timing": self.timing.to_dict(),
                "metrics": self.metric_columns(), "error": self.error, "traceback": self.traceback,
                "cell_s": self.cell_s, "solve_s": self.solve_s}

    @classmethod
    def from_dict(cls, d: dict) -> CellResult:
        measured, extra = _metrics.split_columns(d.get("metrics") or {})
        return cls(nfe=d.get("nfe"), steps=d.get("steps"), stats=dict(d.get("stats") or {}),
                   timing=Timing.from_dict(d.get("timing")), metrics=measured, extra=extra, error=d.get("error"),
                   traceback=d.get("traceback"), cell_s=d.get("cell_s"), solve_s=d.get("solve_s"))

    def replace(self, **changes) -> CellResult:
        return dataclasses.replace(self, **changes)
