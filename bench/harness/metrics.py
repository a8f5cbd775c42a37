"""The metric registry: each metric declared once, as a ``Metric`` record.

A record says what the metric needs (shared results made once per run: the reference solution,
the exact/held-out target sets, its noise floor), how a cell measures it (``measure``), what it
costs (``cost``, read by ``bench.harness.estimate``), its interval and floor, its at-floor rule
(``bench.harness.at_floor``) and its stored columns. Suite validation, execution, the estimate,
the store, the report's data layer and ``compare`` iterate ``METRICS`` and never name a metric.
The formulas themselves are in ``bench.harness.formulas`` (re-exported here).

A plugin module (named in a suite's ``imports``) adds one with one call:

    from bench.harness import metrics

    def mean_norm(metric, ctx):                      # ctx: the measuring context below
        return float(ctx.x.flatten(1).norm(dim=1).mean())

    metrics.register(metrics.Metric("mean_norm", "mean norm", r"mean $\\|x\\|$", measure=mean_norm,
                                    cost=lambda metric, costing: {"metrics": 0.001}))

``measure(metric, ctx)`` returns a float (the value), a ``MetricResult`` (value, standard error,
floor), or a dict {name: MetricResult or float} over the metric's own name and its ``outputs``.
It may return {} to store nothing (e.g. for samples that are not finite). The measuring context
(``bench.harness.execute.Measuring``) has

    cell, solver (class), options, seed, model, exact_model
    x            the timed run's samples, float64 on the CPU (a likelihood cell: its data points)
    output       what the solve returned (``solvers.sample``'s result; ``solvers.log_likelihood``'s)
    finite       whether every sample is finite
    target()     exact samples of p_eps (exact models) or held-out data, as many as the samples
    reference_samples(which)  the reference solver's samples (float64 PF-ODE) from x_T independent
                 of the cell's, which = 0, 1: two independent sets
    held_out()   an independent set of the same size (noise floors)
    ode_reference(), sde_reference() -> (Brownian path, reference): the reference solutions
    ode_reference_error()  the ODE reference's own error from two tolerances (discrete-time
                 schedules, whose reference is solved in lambda), else None
    noise_floor(metric) -> {name: floor}: ``metric.noise_floor`` made once (a shared result)
    cached(key, make)   anything else shared by cells, key = (kind, cell.model_id, ...)
    memo(key, make)     shared by the metrics of this cell only
    x_T(dtype), grid()  the cell's starting points and its ``grid=``/``times=`` keyword
    float64_solution(), solve_float64(brownian): the cell's float64 solve (timed as solving);
    provide_float64(x)  a float64 solve a metric made anyway, for the later ones (``stage``)

and ``cost(metric, costing)`` returns seconds {"solve", "metrics", "floor"} from the estimate's
``bench.harness.estimate.Costing`` (the cell, its solver, NFE, dimension, a float64 solve's cost,
``timed_s`` of work on synthetic sets of the cell's size).

Columns: a metric stores ``<name>`` (value), ``<name>_se`` (standard error), ``<name>_floor`` (noise
floor), ``<name>_at_floor`` (1: at its floor at a coarser step count, so not measured) and its
``outputs``; ``Metric.column(part)`` names them, ``MetricResult`` holds one cell's.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing

import torch

from bench.harness import exact, weak
from bench.harness.formulas import (
    W2_MAX_N,
    discretization_error,
    energy_distance,
    energy_from_pooled,
    mmd2,
    mmd2_from_pooled,
    per_sample_error,
    pooled_bootstrap_se,
    pooled_distances,
    sliced_wasserstein,
    sliced_wasserstein_se,
    w2,
)
from solvers import InputError

__all__ = ["Metric", "MetricResult", "METRICS", "register", "get_metric", "requestable", "quality", "family",
           "distribution", "standard_error", "default_cost", "split_columns", "column_name", "PARTS",
           "below_noise_floor", "within_se_of_zero", "discretization_floor", "ZERO_SE",
           # the formulas (bench.harness.formulas)
           "per_sample_error", "discretization_error", "sliced_wasserstein", "sliced_wasserstein_se", "mmd2",
           "energy_distance", "w2", "W2_MAX_N", "pooled_bootstrap_se"]

#: the stored columns of one metric: its value and these parts (``column_name``)
PARTS = ("value", "se", "floor", "at_floor")
#: the words a record's fields may take
BETTER = ("lower", "higher", "zero")
APPLIES = ("any", "exact", "trained", "digits", "features")
TASKS = ("sample", "likelihood")
NEEDS = ("reference", "target", "held_out", "reference_samples")
#: metrics whose exact value is 0 (no sample floor) are at the floor within this many standard errors
ZERO_SE = 2.0
#: exact KL's Jacobian (d backward passes through the float64 solve) in float64 solves: a + b d
KL_SOLVES = (2.0, 1.2)


def column_name(name: str, part: str = "value") -> str:
    """The stored column of one part (``PARTS``) of metric ``name``: ``name``, ``name_se``, ..."""
    return name if part == "value" else f"{name}_{part}"


@dataclasses.dataclass(frozen=True)
class MetricResult:
    """One metric of one cell. ``value`` None: not measured (``at_floor``: it was at its noise
    floor at a coarser step count of the series); ``se`` its standard error and ``floor`` its
    noise floor where it has them."""

    value: float | None = None
    se: float | None = None
    floor: float | None = None
    at_floor: bool = False

    def columns(self, name: str) -> dict:
        """Its stored columns (only the parts it has)."""
        parts = {"value": self.value, "se": self.se, "floor": self.floor, "at_floor": 1.0 if self.at_floor else None}
        return {column_name(name, p): v for p, v in parts.items() if v is not None}

    @classmethod
    def from_columns(cls, name: str, columns: typing.Mapping) -> MetricResult | None:
        """Metric ``name``'s result from stored columns (None when it has none)."""
        parts = {p: columns.get(column_name(name, p)) for p in PARTS}
        if all(v is None for v in parts.values()):
            return None
        return cls(parts["value"], parts["se"], parts["floor"], bool(parts["at_floor"]))


@dataclasses.dataclass(frozen=True)
class Metric:
    """One metric: what it is called, which way is better, what it needs, how a cell measures it,
    what that costs, how sure it is and where it applies.

    ``family``: "discretization", "exact" (exact-density), "distribution", "reference" (against the
    reference solver's samples), "features", "likelihood" or a plugin's own. ``applies``: "any"
    model, "exact" models only, "digits" (FD features), "features" (a model with held-out data
    and a feature extractor of its own, ``bench.zoo.own_data``), or "trained". ``task``: the cell
    task that produces it. ``requestable``: a suite may name it in ``metrics`` (outputs such as
    precision come with the metric that makes them). ``gated``: ``compare`` fails when it worsens
    past the tolerance. ``needs``: shared results made once per run before the cells (``NEEDS``;
    its noise floor too when it has ``noise_floor``).
    ``deterministic_only``: needs a sampler whose output is a function of x_T alone. ``max_n``: a
    cell with more samples leaves it out. ``stage``: lower stages are measured first (exact KL's
    float64 solve is the discretization error's). ``fn(x, y)``: its value between two sample sets
    (distribution metrics, and their floors). ``boot``: bootstrap replicates of its standard
    error (0: it gives its own, or none); ``fast_se(x, y, boot, seed)`` that bootstrap in closed
    form. ``floor``: it has a noise floor (stored as ``<name>_floor``), made by
    ``noise_floor(metric, ctx)`` (a float, or {name: floor} over it and its outputs).
    ``at_floor(result, cell)``: whether a ``MetricResult`` is at the floor (cell None: a
    cell-free verdict, e.g. the report's mean over seeds). ``outputs``: further columns it stores.
    ``measure`` and ``cost``: see the module docstring."""

    name: str
    label: str
    tex: str
    unit: str = ""
    better: str = "lower"
    family: str = ""
    applies: str = "any"
    task: str = "sample"
    requestable: bool = True
    gated: bool = True
    needs: tuple = ()
    deterministic_only: bool = False
    max_n: int | None = None
    stage: int = 1
    measure: typing.Callable | None = None
    fn: typing.Callable | None = None
    interval: str = ""
    boot: int = 0
    fast_se: typing.Callable | None = None
    floor: bool = False
    noise_floor: typing.Callable | None = None
    at_floor: typing.Callable | None = None
    cost: typing.Callable | None = None
    outputs: tuple = ()

    def applies_to(self, exact_model: bool, data: str | None = None) -> bool:
        return (self.applies == "any" or (self.applies == "exact" and exact_model)
                or (self.applies == "trained" and not exact_model) or (self.applies in ("digits", "features")
                                                                       and data == self.applies))

    def measured_in(self, cell, *, exact_model: bool, data: str | None = None, random_map: bool = False) -> bool:
        """Whether ``cell`` measures it: its task, a model it applies to, at most ``max_n`` samples,
        and for a deterministic-only metric a sampler that is not a random map (``random_map``:
        stochastic, a corrector, or adaptive, whose steps couple the batch)."""
        return (cell.task == self.task and self.applies_to(exact_model, data)
                and (self.max_n is None or cell.n <= self.max_n) and not (self.deterministic_only and random_map))

    def column(self, part: str = "value") -> str:
        """The stored column of one of its parts (``PARTS``)."""
        return column_name(self.name, part)

    def columns(self) -> tuple:
        """Every column it may store: its parts, then its outputs."""
        return tuple(self.column(p) for p in PARTS) + tuple(self.outputs)

    @property
    def zero_valued(self) -> bool:
        """Its exact value is 0 and it has no sample floor (at the floor within ``ZERO_SE`` se)."""
        return self.at_floor is within_se_of_zero


METRICS: dict[str, Metric] = {}


def register(metric: Metric, *, replace: bool = False) -> Metric:
    """Add ``metric`` to ``METRICS`` (validated); returns it. A name, or a column, that another
    metric has is refused unless ``replace``."""
    _check(metric)
    if metric.name in METRICS and not replace and METRICS[metric.name] != metric:
        raise InputError(f"a metric named {metric.name!r} is already registered; pass replace=True")
    others = {c: m.name for m in METRICS.values() if m.name != metric.name for c in m.columns() if c not in m.outputs}
    clash = sorted(set(metric.columns()) & set(others) - set(metric.outputs))
    if clash:
        raise InputError(f"metric {metric.name!r}: column {clash[0]!r} is metric {others[clash[0]]!r}'s")
    METRICS[metric.name] = metric
    return metric


def _check(m: Metric):
    if not isinstance(m, Metric):
        raise InputError(f"register expects a bench.harness.metrics.Metric, got {m!r}")
    if not (isinstance(m.name, str) and m.name.isidentifier()):
        raise InputError(f"a metric's name must be an identifier (it names stored columns), got {m.name!r}")
    for field, value, allowed in (("better", m.better, BETTER), ("applies", m.applies, APPLIES),
                                  ("task", m.task, TASKS)):
        if value not in allowed:
            raise InputError(f"metric {m.name!r}: {field} {value!r}; allowed: {', '.join(allowed)}")
    bad = [n for n in m.needs if n not in NEEDS]
    if bad:
        raise InputError(f"metric {m.name!r}: needs {bad[0]!r}; allowed: {', '.join(NEEDS)}")
    if m.requestable and not callable(m.measure):
        raise InputError(f"metric {m.name!r} may be requested by a suite but has no measure(metric, ctx)")
    if m.noise_floor is not None and not m.floor:
        raise InputError(f"metric {m.name!r} makes a noise floor: set floor=True")


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def requestable() -> list[str]:
    """The metrics a suite may name (``metrics = [...]``)."""
    return [m.name for m in METRICS.values() if m.requestable]


def quality(task: str | None = None) -> list[str]:
    """The metrics ``compare`` gates on (of one task, or all)."""
    return [m.name for m in METRICS.values() if m.gated and (task is None or m.task == task)]


def family(name: str) -> list[str]:
    """The metrics of one family ("distribution", "exact", ...), in registry order."""
    return [m.name for m in METRICS.values() if m.family == name]


def distribution() -> dict:
    """name -> fn(x, target) of the distribution metrics."""
    return {n: METRICS[n].fn for n in family("distribution")}


def split_columns(columns: typing.Mapping) -> tuple[dict, dict]:
    """Stored metric columns -> ({metric name: MetricResult} of the registered metrics, {the other
    columns: value}) (a metric of a plugin this process has not imported stays a plain column)."""
    results, rest = {}, dict(columns)
    for metric in METRICS.values():
        r = MetricResult.from_columns(metric.name, columns)
        if r is not None:
            results[metric.name] = r
            for p in PARTS:
                rest.pop(metric.column(p), None)
    return results, rest


def standard_error(metric: Metric, fn, *arrays, seed: int = 0) -> float:
    """The bootstrap standard error of ``fn(*arrays)`` with ``metric.boot`` replicates (the same
    resampled indices for every array; ``metric.fast_se`` for two equal-size sets); NaN where the
    metric declares none."""
    if metric.boot <= 0:
        return math.nan
    if metric.fast_se is not None and len(arrays) == 2 and len(arrays[0]) == len(arrays[1]):
        return metric.fast_se(*arrays, boot=metric.boot, seed=seed)
    from bench.harness.verdicts import bootstrap_interval

    return bootstrap_interval(fn, *arrays, n_boot=metric.boot, seed=seed)["stderr"]


def default_cost(metric: Metric, costing) -> dict:
    """The estimate of a metric without its own ``cost``: ``fn`` and its standard error on
    synthetic sets of the cell's size (its floor: ``fn`` once); nothing without ``fn``."""
    if metric.fn is None:
        return {}

    def value_and_se(x, y):
        metric.fn(x, y)
        standard_error(metric, metric.fn, x, y)

    floor = costing.timed_s(("value", metric.name), metric.fn) if metric.noise_floor else 0.0
    return {"metrics": costing.timed_s(("value+se", metric.name), value_and_se), "floor": floor}


# --------------------------------------------------------------------------------------------
# at-floor rules (``Metric.at_floor``)
# --------------------------------------------------------------------------------------------
def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def below_noise_floor(r: MetricResult, cell=None) -> bool:
    """At or below its noise floor (two independent exact/held-out sets): unresolved."""
    return _finite(r.value) and _finite(r.floor) and float(r.value) <= float(r.floor)


def within_se_of_zero(r: MetricResult, cell=None) -> bool:
    """A metric whose exact value is 0, without a sample floor: |value| <= ``ZERO_SE`` se."""
    return _finite(r.value) and _finite(r.se) and abs(float(r.value)) <= ZERO_SE * float(r.se)


def discretization_floor(cell, estimated: float | None = None) -> float:
    """Discretization errors at or below this are the reference's, not the solver's: the
    reference's own error ``estimated`` at two tolerances where there is one (discrete-time
    schedules, stored as ``discretization_floor``), else 10 x the cell's own ODE reference rtol
    (its model's resolved setting, as stored with the cell)."""
    if _finite(estimated):
        return max(float(estimated), 1e-14)
    return max(10 * float(cell.reference.get("ode_rtol", 1e-10)), 1e-14)


def _within_reference_error(r: MetricResult, cell=None) -> bool:
    """A deterministic solver's discretization error at or below ``discretization_floor``
    (stochastic solvers have no such floor)."""
    return (cell is not None and _finite(r.value) and not cell.solver_meta.get("stochastic", True)
            and float(r.value) <= discretization_floor(cell, r.floor))


# --------------------------------------------------------------------------------------------
# how the built-in metrics are measured and costed
# --------------------------------------------------------------------------------------------
def _median(v):
    return float(v.median())


def path_solution(ctx) -> torch.Tensor:
    """The cell's float64 solve on the SDE reference's Brownian path (made once per cell)."""
    return ctx.memo("path_solution", lambda: ctx.solve_float64(brownian=ctx.brownian_path()))


def _discretization(metric, ctx):
    """Median per-sample error of a float64 solve from the same x_T against the reference: the
    float64 dopri8 PF-ODE solution (deterministic solvers; where it has an estimated error of its own,
    ``ode_reference_error``, that is the floor), or Euler-Maruyama on the solver's own grid refined
    2^m-fold on the same Brownian path (solvers that use the path; its floor: the median distance of
    that reference to the same at half the refinement, its own error, ``bench.harness.reference``);
    NaN for corrector-only samplers."""
    floor = None
    if not ctx.solver.is_stochastic(**ctx.options):
        ref = ctx.ode_reference()  # references are shared results, not solving time
        floor = ctx.ode_reference_error()
        x = ctx.float64_solution()
    elif ctx.solver.kind == "corrector":
        return math.nan
    else:
        ref = ctx.sde_reference()[1]
        x = path_solution(ctx)
        floor = _median(ctx.sde_reference_error())
    errors = per_sample_error(x, ref)
    return MetricResult(_median(errors), se=standard_error(metric, _median, errors, seed=ctx.seed), floor=floor)


def _discretization_cost(metric, costing) -> dict:
    cls, opts = costing.solver, costing.options
    if not cls.is_stochastic(**opts):
        solve = costing.float64_solution_s()
    elif cls.kind != "corrector":
        solve = costing.solve64_s + costing.path_queries_s()
    else:
        solve = 0.0
    se = costing.timed_s(("se", metric.name), lambda x, y: standard_error(metric, _median, per_sample_error(x, y)))
    return {"solve": solve, "metrics": se}


#: the weak error is at the floor within this many standard errors (it is a maximum over ~20 test
#: functions: |N(0, 1)| exceeds 3 in about 5% of such maxima)
WEAK_SE = 3.0


def _weak(metric, ctx):
    """max over the fixed test functions of |E_q[phi] - E_p[phi]| (``bench.harness.weak``): a sampler
    that uses the Brownian path coupled with fine Euler-Maruyama on the same path and x_T, plus that
    solution's own weak error against the closed form; another sampler's samples alone against it."""
    if not ctx.finite:
        return {}
    m, cell = ctx.model, ctx.cell
    phi = ctx.cached(("weak_phi", cell.model_id), lambda: weak.phi_set(m))
    if ctx.solver.is_stochastic(**ctx.options) and ctx.solver.kind != "corrector":
        steps = weak.FINE_STEPS
        fine = ctx.cached(("weak_ref", cell.model_id, ctx.path_kind, cell.exact_prior, cell.n, cell.seed, steps),
                          lambda: weak.fine_solution(m, ctx.x_T(torch.float64).cpu(), ctx.fresh_path(), steps))
        bias = ctx.cached(("weak_bias", cell.model_id, cell.exact_prior, steps, weak.N_FINE),
                          lambda: weak.fine_weak_bias(m, phi, steps))
        mean, se = weak.weak_difference(phi, path_solution(ctx), fine)
        value, err, _ = weak.combine(mean, se, bias["bias"], bias["se"])
    else:
        target = ctx.cached(("weak_target", cell.model_id), lambda: weak.target_expectations(m, phi))
        mean, se = weak.weak_difference(phi, ctx.x, None)
        value, err, _ = weak.combine(mean, se, -target, torch.zeros_like(target))
    return MetricResult(value, se=err)


def _weak_at_floor(r: MetricResult, cell=None) -> bool:
    """The weak error within ``WEAK_SE`` standard errors of 0: unresolved."""
    return _finite(r.value) and _finite(r.se) and float(r.value) <= WEAK_SE * float(r.se)


def _weak_cost(metric, costing) -> dict:
    cls, opts = costing.solver, costing.options
    coupled = cls.is_stochastic(**opts) and cls.kind != "corrector"
    return {"solve": costing.solve64_s + costing.path_queries_s() if coupled else 0.0, "metrics": 0.001}


def _exact_kl(metric, ctx):
    if not ctx.finite:
        return {}
    r = exact.exact_kl(ctx.model, ctx.solver.name, steps=ctx.cell.steps, **ctx.grid(),
                       x_T=ctx.x_T(torch.float64).cpu(), seed=ctx.seed, **ctx.options)
    ctx.provide_float64(r["x"].detach())  # the cell's float64 solve: the discretization error reuses it
    return MetricResult(r["value"], se=r["stderr"])


def _exact_kl_cost(metric, costing) -> dict:
    costing.provide_float64()  # its float64 solve is the cell's (the discretization error reuses it)
    a, b = KL_SOLVES
    return {"solve": costing.solve64_s, "metrics": (a + b * costing.dim - 1) * costing.solve64_s}


def _xent_gap(metric, ctx):
    if not ctx.finite:
        return {}
    h = ctx.cached(("entropy", ctx.cell.model_id), lambda: exact.entropy(ctx.model))
    r = exact.cross_entropy_gap(ctx.model, ctx.x, entropy_estimate=h)
    return MetricResult(r["value"], se=r["stderr"])


def _mode_tv(metric, ctx):
    if not ctx.finite:
        return {}
    r = exact.mode_weight_error(ctx.model, ctx.x, floor=False)
    return MetricResult(r["value"], se=r["stderr"], floor=ctx.noise_floor(metric)[metric.name])


def _mode_tv_floor(metric, ctx) -> float:
    return exact.mode_weight_error(ctx.model, ctx.held_out(), floor=True)["floor"]


def _between_held_out_sets(metric, ctx) -> float:
    """A distribution metric's noise floor: its value between the two independent target sets."""
    return metric.fn(ctx.held_out(), ctx.target())


def _distribution(metric, ctx, value=None):
    """``metric.fn`` (or ``value(ctx)``) of the samples against the target, its standard error
    (equal-size sets), and its noise floor (stored even when the samples are not finite)."""
    floor = ctx.noise_floor(metric)[metric.name]
    if not ctx.finite:
        return MetricResult(math.nan, floor=floor)
    target = ctx.target()
    v = value(ctx) if value is not None else metric.fn(ctx.x, target)
    se = standard_error(metric, metric.fn, ctx.x, target, seed=ctx.seed) if len(target) == len(ctx.x) else math.nan
    return MetricResult(v, se=se if math.isfinite(se) else None, floor=floor)


def _pooled(from_pooled):
    """A value from the cell's pooled distance matrix (made once for MMD^2 and the energy distance)."""
    def value(ctx):
        d = ctx.memo("pooled_distances", lambda: pooled_distances(ctx.x, ctx.target()))
        return from_pooled(d, len(ctx.x))

    return value


def _pooled_se(name):
    def fast_se(x, y, *, boot, seed):
        return pooled_bootstrap_se(x, y, [name], boot=boot, seed=seed)[name]

    return fast_se


def _sliced_se(x, y, *, boot, seed):
    return sliced_wasserstein_se(x, y, boot=boot, seed=seed)


def _fd_stats(target, samples) -> dict:
    from bench.zoo import fd

    fx, fy = fd.digits_features(samples), fd.digits_features(target)
    p, r = fd.precision_recall(fx, fy)
    return {"fd_digits": fd.frechet_distance(fx, fy), "precision": p, "recall": r}


def _fd_digits(metric, ctx):
    """FD-digits, precision and recall against held-out digits, each with its real-vs-real floor."""
    if not ctx.finite:
        return {}
    floors = ctx.noise_floor(metric)
    return {k: MetricResult(v, floor=floors[k]) for k, v in _fd_stats(ctx.target(), ctx.x).items()}


def _fd_floor(metric, ctx) -> dict:
    return _fd_stats(ctx.target(), ctx.held_out())


def _own_fd(metric, ctx):
    """The Frechet distance between Gaussians fitted to the model's own features (``features =
    MODULE:FUNCTION``) of the samples and of the held-out data, with the data-vs-data floor."""
    if not ctx.finite:
        return {}
    from bench.zoo.fd import frechet_distance

    f = ctx.model.features
    return MetricResult(frechet_distance(f(ctx.x), f(ctx.target())), floor=ctx.noise_floor(metric)[metric.name])


def _own_fd_floor(metric, ctx) -> float:
    from bench.zoo.fd import frechet_distance

    f = ctx.model.features
    return frechet_distance(f(ctx.held_out()), f(ctx.target()))


def _estimator_stderr(out) -> dict:
    """The likelihood estimator's own standard error (Hutchinson probes), where it has one."""
    stderr = getattr(out, "stderr", None)
    if stderr is not None and bool(torch.isfinite(torch.as_tensor(stderr)).all()):
        return {"logp_stderr": float(torch.as_tensor(stderr).double().mean())}
    return {}


def _logp_error(metric, ctx):
    """|log p_ODE - log p| per dimension against the exact density, and its mean signed bias."""
    out, x = ctx.output, ctx.x
    err = (out.logp.double() - ctx.model.exact_log_prob(x, out.t0)) / x[0].numel()
    return {metric.name: MetricResult(float(err.abs().mean()), se=float(err.abs().std() / len(x) ** 0.5)),
            "logp_bias_per_dim": float(err.mean()), **_estimator_stderr(out)}


def _nll(metric, ctx):
    """The NLL itself (trained models have no exact density), in bits/dim and nats/dim."""
    out, x = ctx.output, ctx.x
    bpd = out.bpd.double()
    return {"nll_per_dim": float(-out.logp.double().mean()) / x[0].numel(),
            metric.name: MetricResult(float(bpd.mean()), se=float(bpd.std() / len(x) ** 0.5)),
            **_estimator_stderr(out)}


def _against_reference(metric, ctx):
    """Sliced W2 between the samples and the reference solver's from independent x_T: the model's
    own error cancels, what is left is the solver's error seen as a distribution; needs no data.
    Noise floor: the reference's two independent sets against each other."""
    floor = ctx.noise_floor(metric)[metric.name]
    if not ctx.finite:
        return MetricResult(math.nan, floor=floor)
    ref = ctx.reference_samples(0)
    se = standard_error(metric, metric.fn, ctx.x, ref, seed=ctx.seed)
    return MetricResult(metric.fn(ctx.x, ref), se=se, floor=floor)


def _between_reference_sets(metric, ctx) -> float:
    return metric.fn(ctx.reference_samples(1), ctx.reference_samples(0))


def _distance(name, label, tex, fn, **kw) -> Metric:
    kw = {"family": "distribution", "needs": ("target", "held_out"), "floor": True,
          "noise_floor": _between_held_out_sets, "at_floor": below_noise_floor, "measure": _distribution, **kw}
    return Metric(name, label, tex, fn=fn, **kw)


for _metric in (
    Metric("discretization", "discretization error", r"discretization error  (median $\|x - x_{ref}\| / \sqrt{d}$)",
           family="discretization", needs=("reference",), measure=_discretization, cost=_discretization_cost,
           at_floor=_within_reference_error, interval="bootstrap over samples of the median per-sample error",
           boot=200),
    Metric("exact_kl", "exact KL", r"exact KL$(q \,\|\, p_\epsilon)$  (nats)", unit="nats", family="exact",
           applies="exact", deterministic_only=True, stage=0, measure=_exact_kl, cost=_exact_kl_cost,
           at_floor=within_se_of_zero,
           interval="standard error of the per-sample change-of-variables terms (no sample-noise floor)"),
    Metric("xent_gap", "cross-entropy gap", r"$E_q[-\log p_\epsilon] - H(p_\epsilon)$  (nats)", unit="nats",
           better="zero", family="exact", applies="exact", gated=False, measure=_xent_gap,
           at_floor=within_se_of_zero,
           interval="standard errors of E_q[-log p] and of H (100,000 exact samples), in quadrature"),
    Metric("weak", "weak error", r"weak error  (max over $\phi$ of $|E_q\phi - E_p\phi|$)", family="exact",
           applies="exact", measure=_weak, cost=_weak_cost, at_floor=_weak_at_floor,
           interval="standard error of the coupled two-level estimate (bench.harness.weak) of the maximizing phi"),
    Metric("mode_tv", "mode-weight TV", "mode-weight error (TV of component shares)", family="exact",
           applies="exact", needs=("held_out",), floor=True, noise_floor=_mode_tv_floor, measure=_mode_tv,
           at_floor=below_noise_floor, interval="delta method over samples"),
    _distance("sliced_w2", "sliced W2", r"sliced $W_2$", sliced_wasserstein, fast_se=_sliced_se, boot=50,
              interval="bootstrap over sample pairs"),
    _distance("mmd2", "MMD^2", r"$\mathrm{MMD}^2$ (unbiased)", mmd2, measure=functools.partial(
        _distribution, value=_pooled(mmd2_from_pooled)), fast_se=_pooled_se("mmd2"), boot=20,
              interval="bootstrap over sample pairs"),
    _distance("energy", "energy distance", "energy distance", energy_distance, measure=functools.partial(
        _distribution, value=_pooled(energy_from_pooled)), fast_se=_pooled_se("energy"), boot=20,
              interval="bootstrap over sample pairs"),
    _distance("ref_sliced_w2", "sliced W2 to the reference", r"sliced $W_2$ to the reference solver",
              sliced_wasserstein,
              family="reference", needs=("reference_samples",), noise_floor=_between_reference_sets,
              measure=_against_reference, fast_se=_sliced_se, boot=50,
              interval="bootstrap over sample pairs; floor: two independent reference sets"),
    _distance("w2", "W2", r"$W_2$ (exact OT)", w2, max_n=W2_MAX_N,
              interval="none per cell (exact OT is O(n^3) per replicate): seed spread where there are several seeds"),
    Metric("fd_digits", "FD-digits", "FD-digits (classifier features; not Inception FID)", family="features",
           applies="digits", needs=("target", "held_out"), floor=True, noise_floor=_fd_floor, measure=_fd_digits,
           at_floor=below_noise_floor, cost=lambda metric, costing: {"floor": 1.0}, outputs=("precision", "recall"),
           interval="seed spread"),
    Metric("fd_features", "FD (own features)", "FD on the model's own features (features = MODULE:FUNCTION)",
           family="features", applies="features", needs=("target", "held_out"), floor=True, noise_floor=_own_fd_floor,
           measure=_own_fd, at_floor=below_noise_floor, cost=lambda metric, costing: {"floor": 1.0},
           interval="seed spread; floor: the two halves of the held-out data"),
    Metric("precision", "precision", "precision (k-NN manifold)", better="higher", family="features", floor=True,
           applies="digits", requestable=False, gated=False),
    Metric("recall", "recall", "recall (k-NN manifold)", better="higher", family="features", floor=True,
           applies="digits", requestable=False, gated=False),
    Metric("logp_error_per_dim", "log-likelihood error / dim", r"mean $|\log p_{ODE} - \log p|$ / dim  (nats)",
           unit="nats", family="likelihood", applies="exact", task="likelihood", requestable=False,
           measure=_logp_error, outputs=("logp_bias_per_dim", "logp_stderr"),
           interval="standard error over data points"),
    Metric("bpd", "NLL (bits/dim)", "NLL (bits/dim)", unit="bits/dim", family="likelihood", applies="trained",
           task="likelihood", requestable=False, measure=_nll, outputs=("nll_per_dim", "logp_stderr"),
           interval="standard error over data points"),
):
    register(_metric)
