"""Executing one cell: a pure function of the cell (so any executor can run it anywhere).

``execute_cell(cell, cache_dir=None, jobs=1)`` times the sampling call alone, then measures
quality. References, exact target samples and noise floors are cached per process, keyed by what
they depend on, and, given ``cache_dir`` (the runner passes ``<store>.cache/``), on disk
(``bench.harness.cache``), so resumed runs, parallel workers and later runs make each once.
This module imports neither the sweep (suites) nor the results store.

Per sample cell:
  timing      ``bench.harness.timing.time_adaptive`` on ``solvers.sample`` (fresh noise keyed by
              the seed): warm-up only for a (solver, options, model, batch, dtype, device) shape
              new to the process, a call over 1 s timed once, shorter calls repeated until the
              median is stable to 5% (at most ``repeats`` times); median and spread, the number
              of timed runs, peak memory, NFE, ``jobs`` (cells running at the same time: > 1
              makes timings noisier), and
              overhead = median wall / (NFE x median time of one network evaluation at that batch)
  metrics     each requested metric that applies to the cell (``metrics_to_measure``), measured by
              its registry record's ``measure`` (``bench.harness.metrics``) on a ``Measuring``
              context: the timed run's samples, and the shared results the record ``needs``
              (references, exact/held-out target sets, its noise floor), each made once; a
              float64 solve a metric makes (the discretization error's) counts as solving time
  at floor    the metrics the driver found at their noise floor at a coarser step count of the
              same series (``Cell.at_floor``, ``bench.harness.at_floor``) are recorded as
              at floor (``<metric>_at_floor = 1``) instead of measured
The result is a ``bench.harness.cell.CellResult``.
"""
from __future__ import annotations

import functools
import math
import time
import traceback

import torch

import solvers
from bench.harness import metrics, shipped
from bench.harness.cache import DiskCache
from bench.harness.cell import Cell, CellResult, Timing
from bench.harness.formulas import per_sample_error
from bench.harness.reference import (
    brownian_path_for,
    in_lambda,
    ode_reference,
    ode_reference_error,
    path_kind,
    reference_grid,
    sde_reference_pair,
)
from bench.harness.timing import time_adaptive, time_call
from bench.zoo import models

__all__ = ["execute_cell", "make_shared", "import_plugins", "shared_keys", "have_shared", "model_fingerprint",
           "metrics_to_measure", "SharedResults", "Measuring"]

_CACHE: dict = {}
_SPENT = {"reference": 0.0}  # seconds spent making cached references, exact samples and floors
_DISK: dict = {"cache": None}  # the DiskCache of the cell being run, if any
#: what is kept on disk (the rest: models, x_T, Brownian paths, timings, is cheap or per machine)
DISK_KINDS = ("exact", "floor", "ode_ref", "ode_ref_err", "ref_samples", "sde_ref", "weak_ref", "weak_bias")


def import_plugins(modules, error=None):
    """Import modules that register solvers (``solvers.register``), e.g. a user's own."""
    import importlib

    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception as e:
            msg = f"cannot import {mod!r}: {type(e).__name__}: {e}"
            raise (error(msg) if error else solvers.InputError(msg)) from None


def model_fingerprint(model_id: str) -> str:
    """What a model's shared results depend on besides its name: a trained model's weights hash;
    a spec's ``Cell.model_id`` holds its fingerprint already; another registered model's own."""
    if models.is_exact(model_id) or "@" in model_id:
        return model_id
    m = _cached(("model", model_id, False), lambda: models.load(model_id))
    card = getattr(m, "card", None)
    if isinstance(card, dict):
        return f"{model_id}:{card.get('sha256', '')}"
    return f"{model_id}:{_cached(('fingerprint', model_id), lambda: models.fingerprint(model_id, m))}"


def disk_key(key: tuple) -> dict:
    """The on-disk key of a shared result: its in-memory key plus the model's fingerprint."""
    return {"kind": key[0], "key": list(key), "model": model_fingerprint(key[1])}


def have_shared(cache, key: tuple) -> bool:
    """Whether a shared result (an in-memory key) needs no making: in ``cache`` (a DiskCache or
    None) or shipped with the package (``bench.harness.shipped``)."""
    dk = disk_key(key)
    return (cache is not None and cache.contains(dk)) or shipped.contains(dk)


def _cached(key, make):
    if key not in _CACHE:
        t0 = time.perf_counter()
        disk = _DISK["cache"]
        if key[0] in DISK_KINDS:  # on disk, or shipped with the package (bench.harness.shipped), or made
            dk = disk_key(key)
            made = functools.partial(shipped.lookup, dk, make)
            _CACHE[key] = disk.get(dk, made) if disk is not None else made()
        else:
            _CACHE[key] = make()
        if key[0] not in ("model", "x_T", "sde_path", "sde_grid"):
            _SPENT["reference"] += time.perf_counter() - t0
    return _CACHE[key]


def _dtype(name):
    return {"float32": torch.float32, "float64": torch.float64}[name]


def _model(cell):
    return _cached(("model", cell.model_id, cell.exact_prior),
                   lambda: models.load(cell.model_ref(), exact_prior=cell.exact_prior))


def _x_T(cell, dtype=None):
    dtype = dtype or _dtype(cell.dtype)
    key = ("x_T", cell.model_id, cell.exact_prior, cell.n, cell.seed, str(dtype), cell.device)
    gen = lambda: _model(cell).sample_prior(cell.n, generator=torch.Generator().manual_seed(cell.seed),  # noqa: E731
                                            dtype=torch.float64).to(device=cell.device, dtype=dtype)
    return _cached(key, gen)


def _exact(cell, which):
    """The target: exact samples of p_eps (exact models) or held-out data (trained models);
    which=0 the target, which=1 an independent set of the same size for the noise floor."""
    m = _model(cell)
    key = _exact_key(cell, which)
    seed = 1_000_003 * (cell.seed + 1) + which
    if not models.is_exact(cell.model):
        return _cached(key, lambda: m.data_sample(cell.n, torch.Generator().manual_seed(seed), part=which))
    return _cached(key, lambda: m.exact_sample(cell.n, m.sde.eps, generator=torch.Generator().manual_seed(seed)))


# the in-memory keys of the shared results (``disk_key`` gives their on-disk form)
def _exact_key(cell, which):
    return ("exact", cell.model_id, cell.n, cell.seed, which)


def _floor_key(cell, name):
    return ("floor", cell.model_id, cell.n, cell.seed, name)


def _ode_key(cell):
    return ("ode_ref", cell.model_id, cell.exact_prior, cell.n, cell.seed, cell.reference["ode_rtol"])


def _ref_samples_key(cell, which):
    return ("ref_samples", cell.model_id, cell.exact_prior, cell.n, cell.seed, cell.reference["ode_rtol"], which)


def _ode_err_key(cell):
    return ("ode_ref_err",) + _ode_key(cell)[1:]


def _sde_grid(cell, cls) -> dict:
    """The SDE reference's grid for the cell (``bench.harness.reference.reference_grid``): its
    solver's grid refined 2^m-fold."""
    def make():
        m = _model(cell)
        return reference_grid(m.sde, cls, steps=cell.steps, sde_steps=int(cell.reference["sde_steps"]),
                              grid=cell.grid, times=cell.times, data_std=getattr(m, "data_std", None))

    key = ("sde_grid", cell.model_id, cls.name, cell.steps, cell.grid, cell.times, cell.reference["sde_steps"])
    return _cached(key, make)


def _sde_key(cell, cls):
    g = _sde_grid(cell, cls)
    return ("sde_ref", cell.model_id, path_kind(cls), cell.exact_prior, cell.n, cell.seed, cell.reference["sde_steps"],
            g["id"], len(g["fine"]) - 1)


def _reference_key(cell, cls, opts):
    """The reference a pathwise error needs: the ODE's (deterministic solvers), the SDE's on the
    solver's kind of Brownian path, or none (corrector-only samplers)."""
    if not cls.is_stochastic(**opts):
        return _ode_key(cell)
    return None if cls.kind == "corrector" else _sde_key(cell, cls)


def _random_map(cls, opts) -> bool:
    """Whether a sampler's output is not a function of x_T alone (stochastic, a corrector), or its
    steps couple the batch (adaptive)."""
    return bool(cls.is_stochastic(**opts)) or cls.kind == "corrector" or bool(cls.adaptive)


def metrics_to_measure(cell) -> list:
    """The metrics (``bench.harness.metrics.Metric``) ``cell`` measures, in measuring order
    (``Metric.stage``, then the cell's): a sample cell's requested metrics that apply to its
    model, sample size and solver; a likelihood cell's every likelihood metric for its model."""
    exact_model, data = models.is_exact(cell.model), getattr(_model(cell), "data", None)
    if cell.task == "likelihood":
        candidates, random_map = [m for m in metrics.METRICS.values() if m.task == "likelihood"], False
    else:
        candidates = [metrics.get_metric(name) for name in cell.metrics]
        random_map = _random_map(solvers.get(cell.solver), dict(cell.options))
    chosen = [m for m in candidates if m.measured_in(cell, exact_model=exact_model, data=data, random_map=random_map)]
    return sorted(chosen, key=lambda m: m.stage)


def shared_keys(cell) -> list[tuple]:
    """The shared results (references, exact sets, floors) a cell needs, as in-memory keys
    (``disk_key`` gives their on-disk form): what a cost estimate counts once, and what the
    driver makes up front. A metric needs what its record says (``Metric.needs``), and its
    noise floor when it has one."""
    if cell.task != "sample":
        return [_exact_key(cell, 0)]
    cls, opts, out = solvers.get(cell.solver), dict(cell.options), []
    for metric in metrics_to_measure(cell):
        need = {"reference": [_reference_key(cell, cls, opts)], "target": [_exact_key(cell, 0)],
                "held_out": [_exact_key(cell, 1)], "reference_samples": [_ref_samples_key(cell, w) for w in (0, 1)]}
        out += [k for n in metric.needs for k in need[n] if k is not None]
        if "reference" in metric.needs and need["reference"] == [_ode_key(cell)] and in_lambda(_model(cell).sde):
            out.append(_ode_err_key(cell))  # its own error, the discretization floor there
        if metric.noise_floor is not None:
            out.append(_floor_key(cell, metric.name))
    return list(dict.fromkeys(out))


def _ode_ref(cell):
    tol = cell.reference["ode_rtol"]
    return _cached(_ode_key(cell), lambda: ode_reference(_model(cell), _x_T(cell, torch.float64).cpu(),
                                                         rtol=tol, atol=tol))


def _ode_ref_err(cell):
    """The ODE reference's own error, from two tolerances (``reference.ode_reference_error``)."""
    tol = cell.reference["ode_rtol"]
    return _cached(_ode_err_key(cell), lambda: ode_reference_error(_model(cell), _x_T(cell, torch.float64).cpu(),
                                                                   _ode_ref(cell), rtol=tol))


def _ref_samples(cell, which):
    """The reference solver's samples (the float64 ODE reference, at the cell's rtol) from n x_T
    drawn independently of the cell's (``which`` = 0, 1: two independent sets)."""
    def make():
        m, tol = _model(cell), cell.reference["ode_rtol"]
        g = torch.Generator().manual_seed(3_000_017 * (cell.seed + 1) + which)
        return ode_reference(m, m.sample_prior(cell.n, generator=g, dtype=torch.float64), rtol=tol, atol=tol)

    return _cached(_ref_samples_key(cell, which), make)


def _path(cell, cls):
    return _cached(("sde_path", cell.model_id, path_kind(cls), cell.n, cell.seed),
                   lambda: brownian_path_for(cls, _model(cell).sde, _x_T(cell, torch.float64).shape,
                                             seed=cell.seed, exact=True))


def _sde_ref(cell, cls):
    """(path, reference, reference at half the refinement) for the kind of Brownian path the solver
    queries, on the solver's grid refined (``_sde_grid``); every path is a function of the seed
    alone, so all cells see the same Brownian motion (and a reference read from disk matches a
    path rebuilt here)."""
    path = _path(cell, cls)

    def make():
        m, x = _model(cell), _x_T(cell, torch.float64).cpu()
        fresh = brownian_path_for(cls, m.sde, x.shape, seed=cell.seed, exact=True)
        return sde_reference_pair(m, x, fresh, _sde_grid(cell, cls))

    ref, half = _cached(_sde_key(cell, cls), make)
    return path, ref, half


def _one_eval_s(cell, x_T):
    def make():
        m = _model(cell)
        t = torch.full((x_T.shape[0],), 0.5 * m.sde.T, dtype=x_T.dtype, device=x_T.device)
        _, stats = time_call(lambda: m.fn(x_T, t), repeats=11, warmup=2, device=cell.device)
        return stats["median_s"]

    return _cached(("one_eval", cell.model_id, cell.n, cell.dtype, cell.device), make)


def _grid(cell) -> dict:
    """``grid=`` (a built-in grid's name) or, for a tuned grid, ``times=`` its resolved times,
    which the driver put into the cell (``bench.harness.tuned``) before dispatch."""
    if cell.times is not None:
        return {"times": torch.tensor(cell.times, dtype=torch.float64)}
    if cell.grid is not None and (cell.grid.startswith("tuned") or cell.grid.endswith(".json")):
        if cell.tuning.get("error"):
            raise solvers.InputError(f"tuning grid {cell.grid!r} failed: {cell.tuning['error']}")
        raise solvers.InputError(f"grid {cell.grid!r} is a tuned grid: the driver resolves its times before "
                                 "dispatch (bench.harness.tuned.resolve_grids); this cell has none")
    return {"grid": cell.grid}


class SharedResults:
    """The results a cell shares with others, each made once per process (and kept on disk
    given a cache directory): what a metric's ``noise_floor`` and ``measure`` read
    (``bench.harness.metrics``), and what ``make_shared`` makes before the cells."""

    def __init__(self, cell: Cell):
        self.cell, self.seed = cell, cell.seed
        self.solver, self.options = solvers.get(cell.solver), dict(cell.options)

    @property
    def model(self):
        return _model(self.cell)

    @property
    def exact_model(self) -> bool:
        return models.is_exact(self.cell.model)

    def x_T(self, dtype=None) -> torch.Tensor:
        return _x_T(self.cell, dtype)

    def grid(self) -> dict:
        return _grid(self.cell)

    def target(self) -> torch.Tensor:
        return _exact(self.cell, 0)

    def held_out(self) -> torch.Tensor:
        return _exact(self.cell, 1)

    def ode_reference(self) -> torch.Tensor:
        return _ode_ref(self.cell)

    def ode_reference_error(self) -> float | None:
        """The ODE reference's own error estimated at two tolerances, where the reference is
        solved in lambda (discrete-time schedules); None elsewhere (the floor is 10 x rtol)."""
        return _ode_ref_err(self.cell) if in_lambda(self.model.sde) else None

    @property
    def path_kind(self) -> str:
        """The kind of Brownian path the cell's solver queries (``reference.path_kind``)."""
        return path_kind(self.solver)

    def brownian_path(self):
        """The cell's Brownian path (the SDE reference's), a function of the seed alone."""
        return _path(self.cell, self.solver)

    def fresh_path(self):
        """A new copy of ``brownian_path`` (the same Brownian motion, its own query state): what a
        shared result solves on."""
        return brownian_path_for(self.solver, self.model.sde, self.x_T(torch.float64).shape, seed=self.seed,
                                 exact=True)

    def sde_reference(self):
        """(Brownian path, reference): Euler-Maruyama on the cell's grid refined 2^m-fold."""
        return _sde_ref(self.cell, self.solver)[:2]

    def sde_reference_error(self) -> torch.Tensor:
        """Per-sample estimate of the SDE reference's own error: its distance to the same path at
        half the refinement (``per_sample_error``)."""
        _, ref, half = _sde_ref(self.cell, self.solver)
        return per_sample_error(half, ref)

    def reference_samples(self, which: int = 0) -> torch.Tensor:
        """The reference solver's samples from x_T independent of the cell's; ``which`` = 0, 1:
        two independent sets (the second for noise floors)."""
        return _ref_samples(self.cell, which)

    def noise_floor(self, metric) -> dict:
        """{name: floor} of ``metric`` (and of its outputs that have floors), made once."""
        floor = _cached(_floor_key(self.cell, metric.name), lambda: metric.noise_floor(metric, self))
        return floor if isinstance(floor, dict) else {metric.name: floor}

    def cached(self, key: tuple, make):
        """Anything else shared by cells: ``key`` = (kind, ``cell.model_id``, ...)."""
        return _cached(tuple(key), make)


class Measuring(SharedResults):
    """What a metric's ``measure(metric, ctx)`` reads (see ``bench.harness.metrics``): the cell's
    shared results, its solve's ``output``, its samples ``x`` (float64, CPU; a likelihood cell's
    data points) and whether they are ``finite``."""

    def __init__(self, cell: Cell, output, x: torch.Tensor):
        super().__init__(cell)
        self.output, self.x = output, x
        self.finite = bool(torch.isfinite(x).all())
        self.solve_s = 0.0  # the float64 solves made for the metrics: solving time, not metrics time
        self._memo: dict = {}
        self._float64 = None

    def memo(self, key, make):
        """Shared by the metrics of this cell only."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def provide_float64(self, x: torch.Tensor):
        """A float64 solve from the cell's x_T that a metric made anyway (exact KL's), for the others."""
        self._float64 = x

    def solve_float64(self, brownian=None) -> torch.Tensor:
        """A float64 solve from the cell's x_T (on ``brownian``, a Brownian path), timed as solving."""
        t0 = time.perf_counter()
        kw = dict(steps=self.cell.steps, seed=self.seed, **self.grid(), **self.options)
        if brownian is not None:
            kw["brownian"] = brownian
        x = solvers.sample(self.model, self.solver.name, x_T=self.x_T(torch.float64).cpu(), **kw).x
        self.solve_s += time.perf_counter() - t0
        return x

    def float64_solution(self) -> torch.Tensor:
        """The cell's deterministic float64 solution: one a metric provided, the timed call's own
        output when it is float64 on the CPU, else a float64 solve (made once)."""
        if self._float64 is None:
            timed = self.output.x
            cpu64 = timed.dtype == torch.float64 and timed.device.type == "cpu"
            self._float64 = timed if cpu64 else self.solve_float64()
        return self._float64


def _measure(ctx: Measuring, chosen) -> tuple[dict, dict]:
    """({name: MetricResult}, {other column: value}) of the metrics ``chosen`` on ``ctx``; a metric
    the driver found at its floor at a coarser step count (``Cell.at_floor``) is recorded as at
    floor (with its floor, cached: the report still draws it) instead of measured."""
    results, extra = {}, {}
    for metric in chosen:
        if metric.name in ctx.cell.at_floor:
            floor = ctx.noise_floor(metric).get(metric.name) if metric.noise_floor else None
            results[metric.name] = metrics.MetricResult(floor=floor, at_floor=True)
            continue
        out = metric.measure(metric, ctx)
        if not isinstance(out, dict):
            out = {metric.name: out}
        for name, value in out.items():
            if name != metric.name and name not in metric.outputs:
                raise solvers.InputError(f"metric {metric.name!r} returned {name!r}, which is neither its name nor "
                                         f"one of its outputs {list(metric.outputs)}")
            if isinstance(value, metrics.MetricResult):
                results[name] = value
            elif name == metric.name:
                results[name] = metrics.MetricResult(float(value))
            else:
                extra[name] = value
    return results, extra


def _timed_solve(cell, jobs):
    """(output, Timing, seconds) of the cell's sampling call, timed (see the module docstring)."""
    m, cls, opts = _model(cell), solvers.get(cell.solver), dict(cell.options)
    x_T, grid = _x_T(cell), _grid(cell)

    def run():
        return solvers.sample(m, cls.name, steps=cell.steps, **grid, x_T=x_T, seed=cell.seed, **opts)

    shape = (cls.name, repr(sorted(opts.items())), cell.model_id, cell.exact_prior, cell.n, cell.dtype, cell.device)
    t0 = time.perf_counter()
    out, stats = time_adaptive(run, repeats=cell.repeats, warmup=cell.warmup, device=cell.device, shape_key=shape)
    t_solve = time.perf_counter() - t0
    one = _one_eval_s(cell, x_T)
    timing = Timing.from_dict(stats).replace(
        one_eval_s=one, overhead=stats["median_s"] / (out.nfe * one) if out.nfe else math.nan,
        threads=torch.get_num_threads(), jobs=jobs)
    return out, timing, t_solve


def _tuning_figures(cell) -> dict:
    """A tuned grid's own figures (``bench.harness.tuned``), stored with the cell for the report."""
    keys = ("objective_train", "objective_test", "builtin_train", "builtin_test", "cost_nfe", "wall_s")
    return {"tune_" + k: float(cell.tuning[k]) for k in keys if cell.tuning.get(k) is not None}


def _sample_cell(cell, jobs=1) -> CellResult:
    out, timing, t_solve = _timed_solve(cell, jobs)
    ctx = Measuring(cell, out, out.x.double().cpu())
    t_metrics, ref0 = time.perf_counter(), _SPENT["reference"]
    measured, extra = _measure(ctx, metrics_to_measure(cell))
    ref_s = _SPENT["reference"] - ref0
    timing = timing.replace(metrics_s=time.perf_counter() - t_metrics - ctx.solve_s - ref_s)
    # an adaptive solver's steps are its own (stats: accepted, rejected), not a grid's: none stored
    return CellResult(nfe=out.nfe, steps=None if ctx.solver.adaptive else out.steps, stats=out.stats, timing=timing,
                      metrics=measured, extra={**extra, **_tuning_figures(cell)}, solve_s=t_solve + ctx.solve_s)


def _likelihood_cell(cell) -> CellResult:
    m = _model(cell)
    exact_model = models.is_exact(cell.model)
    x = _exact(cell, 0)[: cell.n]
    opts = dict(cell.options)
    prior = opts.pop("prior", "exact" if exact_model else "sde")
    if prior == "exact":
        if not exact_model:
            raise solvers.InputError(f"model {cell.model!r} has no exact p_T: use prior = \"sde\"")
        opts["prior"] = lambda z: m.exact_log_prob(z, m.sde.T)
    if getattr(m, "bin_width", None):
        opts.setdefault("bin_width", m.bin_width)
    t0 = time.perf_counter()
    out = solvers.log_likelihood(m, x, solver=cell.solver, seed=cell.seed, **opts)
    wall = time.perf_counter() - t0
    measured, extra = _measure(Measuring(cell, out, x), metrics_to_measure(cell))
    return CellResult(nfe=out.nfe, steps=None, stats={}, metrics=measured, extra=extra,
                      timing=Timing(median_s=wall, min_s=wall, max_s=wall, repeats=1), solve_s=wall)


def _preload(shared):
    """Shared results sent by the driver ({in-memory key: value}; ``bench.harness.executors``)."""
    for key, value in (shared or {}).items():
        _CACHE.setdefault(tuple(key), value)


def execute_cell(cell: Cell, cache_dir=None, jobs: int = 1, shared: dict | None = None) -> CellResult:
    """Run one cell; never raises: a failure is a result with ``error`` set.

    ``cache_dir``: where shared results (references, exact sets, floors) are kept on disk and
    reused (``bench.harness.cache``); None keeps them in this process only. ``jobs``: how many
    cells run at the same time (recorded with the timing). ``shared``: shared results the driver
    sent ({key from ``shared_keys``: value}; workers without its disk). Besides the sampling timing,
    ``timing`` holds where the cell's time went: ``reference_s`` (references, exact samples and
    noise floors made or read for it) and ``metrics_s``; ``solve_s`` is the time in solvers
    (timed runs and the float64 solve). (With ``--jobs`` the driver adds ``upfront_reference_s``:
    the shared results made before the cells for this cell, the first that needs them.)"""
    if not isinstance(cell, Cell):
        cell = Cell.from_dict(cell)
    if cell.threads:
        torch.set_num_threads(int(cell.threads))
    t0, ref0 = time.perf_counter(), _SPENT["reference"]
    try:
        _DISK["cache"] = DiskCache(cache_dir) if cache_dir else None
        _preload(shared)
        import_plugins(cell.imports)  # a worker process registers the suite's plugin solvers too
        result = _likelihood_cell(cell) if cell.task == "likelihood" else _sample_cell(cell, jobs)
    except Exception as e:
        result = CellResult.failure(f"{type(e).__name__}: {e}", traceback.format_exc(limit=4), steps=cell.steps)
    return result.replace(cell_s=time.perf_counter() - t0,
                          timing=result.timing.replace(reference_s=_SPENT["reference"] - ref0))


#: how ``make_shared`` makes each kind of shared result (a ``shared_keys`` key's first entry)
_MAKERS = {
    "ode_ref": lambda shared, key: shared.ode_reference(),
    "ode_ref_err": lambda shared, key: shared.ode_reference_error(),
    "ref_samples": lambda shared, key: shared.reference_samples(key[-1]),
    "sde_ref": lambda shared, key: shared.sde_reference(),
    "exact": lambda shared, key: _exact(shared.cell, key[-1]),
    "floor": lambda shared, key: shared.noise_floor(metrics.get_metric(key[-1])),
}


def make_shared(item, cache_dir=None, shared: dict | None = None, value: bool = False):
    """Make one shared result before the cells that need it run: ``item`` = (a cell that needs
    it, its key from ``shared_keys``). Run over the workers by the driver (``--jobs N``), so
    that N workers make N references at once instead of waiting on each other's lock on the
    first cells. Returns the seconds it took (0 when it was already on disk); with ``value``,
    (seconds, the value) for a driver whose workers lack its disk (``cache_dir`` None, the
    results it depends on given in ``shared``)."""
    cell, key = item
    if not isinstance(cell, Cell):
        cell = Cell.from_dict(cell)
    if cell.threads:
        torch.set_num_threads(int(cell.threads))
    _DISK["cache"] = DiskCache(cache_dir) if cache_dir else None
    _preload(shared)
    import_plugins(cell.imports)
    t0 = time.perf_counter()
    _MAKERS[key[0]](SharedResults(cell), key)
    seconds = time.perf_counter() - t0
    return (seconds, _CACHE[tuple(key)]) if value else seconds
