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
  discretization  a float64 solve from the same x_T against the reference (for a deterministic
              solver timed in float64 on the CPU, the timed call's own output): the float64 dopri8
              PF-ODE solution (deterministic solvers) or fine-grid Euler-Maruyama on the same
              Brownian path (solvers that use the path; that path is torchsde's dyadic tree,
              a function of the seed alone, so every cell sees the same Brownian motion)
  distribution metrics on the timed run's samples against exact samples of p_eps, with the
              noise floor (two independent exact sets); which ones, and how, is read from the
              metric registry (``bench.harness.metrics.METRICS``)
  at floor    the metrics the driver found at their noise floor at a coarser step count of the
              same series (``Cell.at_floor``, ``bench.harness.at_floor``) are recorded as
              ``<metric>_at_floor = 1`` instead of measured
"""
from __future__ import annotations

import math
import time
import traceback

import torch

import solvers
from bench.harness import metrics
from bench.harness.cache import DiskCache
from bench.harness.cell import Cell
from bench.harness.reference import brownian_path_for, ode_reference, path_kind, sde_reference
from bench.harness.timing import time_adaptive, time_call
from bench.zoo import models

__all__ = ["execute_cell", "make_shared", "import_plugins", "shared_keys", "model_fingerprint"]

_CACHE: dict = {}
_SPENT = {"reference": 0.0}  # seconds spent making cached references, exact samples and floors
_DISK: dict = {"cache": None}  # the DiskCache of the cell being run, if any
#: what is kept on disk (the rest: models, x_T, Brownian paths, timings, is cheap or per machine)
DISK_KINDS = ("exact", "floor", "fd_floor", "ode_ref", "sde_ref")


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


def _cached(key, make):
    if key not in _CACHE:
        t0 = time.perf_counter()
        disk = _DISK["cache"]
        if disk is not None and key[0] in DISK_KINDS:
            _CACHE[key] = disk.get(disk_key(key), make)
        else:
            _CACHE[key] = make()
        if key[0] not in ("model", "x_T", "sde_path"):
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
    key = ("exact", cell.model_id, cell.n, cell.seed, which)
    seed = 1_000_003 * (cell.seed + 1) + which
    if not models.is_exact(cell.model):
        return _cached(key, lambda: m.data_sample(cell.n, torch.Generator().manual_seed(seed), part=which))
    return _cached(key, lambda: m.exact_sample(cell.n, m.sde.eps, generator=torch.Generator().manual_seed(seed)))


def _fd_digits(cell, x):
    """FD-digits (Frechet distance in the shipped digits classifier's features; not Inception FID),
    precision and recall against held-out digits, each with its real-vs-real floor."""
    from bench.zoo import fd

    target, other = _exact(cell, 0), _exact(cell, 1)

    def stats(samples):
        fx, fy = fd.digits_features(samples), fd.digits_features(target)
        p, r = fd.precision_recall(fx, fy)
        return {"fd_digits": fd.frechet_distance(fx, fy), "precision": p, "recall": r}

    floor = _cached(("fd_floor", cell.model_id, cell.n, cell.seed), lambda: stats(other))
    out = stats(x)
    out.update({k + "_floor": v for k, v in floor.items()})
    return out


def _floor(cell, name):
    fn = metrics.get_metric(name).fn
    return _cached(("floor", cell.model_id, cell.n, cell.seed, name), lambda: fn(_exact(cell, 1), _exact(cell, 0)))


def _ode_key(cell):
    return ("ode_ref", cell.model_id, cell.exact_prior, cell.n, cell.seed, cell.reference["ode_rtol"])


def _sde_key(cell, cls):
    return ("sde_ref", cell.model_id, path_kind(cls), cell.exact_prior, cell.n, cell.seed, cell.reference["sde_steps"])


def shared_keys(cell) -> list[tuple]:
    """The shared results (references, exact sets, floors) a cell needs, as in-memory keys
    (``disk_key`` gives their on-disk form): what a cost estimate counts once."""
    if cell.task != "sample":
        return [("exact", cell.model_id, cell.n, cell.seed, 0)]
    cls, opts, out = solvers.get(cell.solver), dict(cell.options), []
    exact_model, data = models.is_exact(cell.model), getattr(_model(cell), "data", None)
    for name in cell.metrics:
        if name in metrics.METRICS and not metrics.get_metric(name).applies_to(exact_model, data):
            continue
        if name == "w2" and cell.n > metrics.W2_MAX_N:
            continue
        if name == "discretization":
            if not cls.is_stochastic(**opts):
                out.append(_ode_key(cell))
            elif cls.kind != "corrector":
                out.append(_sde_key(cell, cls))
        elif name == "fd_digits":
            out += [("exact", cell.model_id, cell.n, cell.seed, 0), ("exact", cell.model_id, cell.n, cell.seed, 1),
                    ("fd_floor", cell.model_id, cell.n, cell.seed)]
        elif name in metrics.METRICS and metrics.get_metric(name).floor:
            out += [("exact", cell.model_id, cell.n, cell.seed, 0), ("exact", cell.model_id, cell.n, cell.seed, 1),
                    ("floor", cell.model_id, cell.n, cell.seed, name)]
    return list(dict.fromkeys(out))


def _ode_ref(cell):
    tol = cell.reference["ode_rtol"]
    return _cached(_ode_key(cell), lambda: ode_reference(_model(cell), _x_T(cell, torch.float64).cpu(),
                                                         rtol=tol, atol=tol))


def _sde_ref(cell, cls):
    """(path, fine-grid reference) for the kind of Brownian path the solver queries; every path is
    a function of the seed alone, so all cells see the same Brownian motion (and a reference read
    from disk matches a path rebuilt here)."""
    path = _cached(("sde_path", cell.model_id, path_kind(cls), cell.n, cell.seed),
                   lambda: brownian_path_for(cls, _model(cell).sde, _x_T(cell, torch.float64).shape,
                                             seed=cell.seed, exact=True))

    def make():
        m, x = _model(cell), _x_T(cell, torch.float64).cpu()
        fresh = brownian_path_for(cls, m.sde, x.shape, seed=cell.seed, exact=True)
        return sde_reference(m, x, fresh, steps=int(cell.reference["sde_steps"]))

    return path, _cached(_sde_key(cell, cls), make)


def _one_eval_s(cell, x_T):
    def make():
        m = _model(cell)
        t = torch.full((x_T.shape[0],), 0.5 * m.sde.T, dtype=x_T.dtype, device=x_T.device)
        _, stats = time_call(lambda: m.fn(x_T, t), repeats=11, warmup=2, device=cell.device)
        return stats["median_s"]

    return _cached(("one_eval", cell.model_id, cell.n, cell.dtype, cell.device), make)


def _per_sample_discretization(cell, cls, opts, timed=None):
    """Per-sample errors ||x_i - ref_i|| / sqrt(d) of a float64 solve from the same x_T, or None
    (corrector-only samplers have no pathwise reference). ``timed``: the timed call's output,
    reused when it is the float64 solve already."""
    m = _model(cell)
    x64 = _x_T(cell, torch.float64).cpu()
    kw = dict(steps=cell.steps, seed=cell.seed, **_grid(cell), **opts)
    if not cls.is_stochastic(**opts):
        if timed is not None and timed.dtype == torch.float64 and timed.device.type == "cpu":
            return metrics.per_sample_error(timed, _ode_ref(cell))
        return metrics.per_sample_error(solvers.sample(m, cls.name, x_T=x64, **kw).x, _ode_ref(cell))
    if cls.kind == "corrector":
        return None
    path, ref = _sde_ref(cell, cls)
    return metrics.per_sample_error(solvers.sample(m, cls.name, x_T=x64, brownian=path, **kw).x, ref)


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


def _median(v):
    return float(v.median())


def _exact_metric(cell, cls, opts, name, x):
    """(value, stderr[, floor]) of the exact-density metrics (``bench.harness.exact``)."""
    from bench.harness import exact

    m = _model(cell)
    if name == "exact_kl":  # its float64 samples are the cell's float64 solve too (``_sample_cell``)
        r = exact.exact_kl(m, cls.name, steps=cell.steps, **_grid(cell), x_T=_x_T(cell, torch.float64).cpu(),
                           seed=cell.seed, **opts)
        return {"exact_kl": r["value"], "exact_kl_se": r["stderr"], "x64": r["x"].detach()}
    if name == "xent_gap":
        h = _cached(("entropy", cell.model_id), lambda: exact.entropy(m))
        r = exact.cross_entropy_gap(m, x, entropy_estimate=h)
        return {"xent_gap": r["value"], "xent_gap_se": r["stderr"]}
    r = exact.mode_weight_error(m, x, floor=False)
    floor = _cached(("mode_tv_floor", cell.model_id, cell.n),
                    lambda: exact.mode_weight_error(m, _exact(cell, 1), floor=True)["floor"])
    return {"mode_tv": r["value"], "mode_tv_se": r["stderr"], "mode_tv_floor": floor}


def _sample_cell(cell, jobs=1):
    m, cls, opts = _model(cell), solvers.get(cell.solver), dict(cell.options)
    x_T = _x_T(cell)
    grid = _grid(cell)

    def run():
        return solvers.sample(m, cls.name, steps=cell.steps, **grid, x_T=x_T, seed=cell.seed, **opts)

    shape = (cls.name, repr(sorted(opts.items())), cell.model_id, cell.exact_prior, cell.n, cell.dtype, cell.device)
    t0 = time.perf_counter()
    out, timing = time_adaptive(run, repeats=cell.repeats, warmup=cell.warmup, device=cell.device, shape_key=shape)
    t_solve = time.perf_counter() - t0
    one = _one_eval_s(cell, x_T)
    timing.update(one_eval_s=one, overhead=timing["median_s"] / (out.nfe * one) if out.nfe else math.nan,
                  threads=torch.get_num_threads(), jobs=jobs)
    # an adaptive solver's steps are its own (stats: accepted, rejected), not a grid's: none stored
    result = {"nfe": out.nfe, "steps": None if cls.adaptive else out.steps, "stats": out.stats, "timing": timing,
              "metrics": {}}
    x = out.x.double().cpu()
    res = result["metrics"]
    finite = bool(torch.isfinite(x).all())
    exact_model = models.is_exact(cell.model)
    t_metrics, ref0 = time.perf_counter(), _SPENT["reference"]
    t_disc, dist = 0.0, []
    stochastic = cls.is_stochastic(**opts) or cls.kind == "corrector"
    x64 = out.x  # the float64 solve the discretization error reuses: exact KL's when it makes one
    if ("exact_kl" in cell.metrics and "exact_kl" not in cell.at_floor and exact_model and finite
            and not (stochastic or cls.adaptive)):
        kl = _exact_metric(cell, cls, opts, "exact_kl", x)
        x64 = kl.pop("x64")
        res.update(kl)
    for name in cell.metrics:
        metric = metrics.get_metric(name)
        if not metric.applies_to(exact_model, getattr(m, "data", None)):
            continue
        if metric.deterministic_only and (stochastic or cls.adaptive):
            continue  # no change-of-variables density for a random map (or a batch-coupled one)
        if name in cell.at_floor:  # at its floor at a coarser step count (bench.harness.at_floor)
            res[name + "_at_floor"] = 1.0
            if metric.floor and metric.fn is not None:  # (w2 over W2_MAX_N is never measured, so never at floor)
                res[name + "_floor"] = _floor(cell, name)  # cached: the report still draws it
            continue
        if name == "discretization":
            if not cls.is_stochastic(**opts):  # references are cached and are not solving time
                _ode_ref(cell)
            elif cls.kind != "corrector":
                _sde_ref(cell, cls)
            t0 = time.perf_counter()
            errors = _per_sample_discretization(cell, cls, opts, timed=x64)
            t_disc = time.perf_counter() - t0  # the float64 solve of the cell is solving
            res["discretization"] = math.nan if errors is None else _median(errors)
            if errors is not None:
                res["discretization_se"] = metrics.standard_error(metric, _median, errors, seed=cell.seed)
        elif name == "exact_kl":
            continue  # measured above, before the loop
        elif name in ("xent_gap", "mode_tv"):
            if finite:
                res.update(_exact_metric(cell, cls, opts, name, x))
        elif name == "w2" and cell.n > metrics.W2_MAX_N:
            continue
        elif name == "fd_digits":
            if finite:
                res.update(_fd_digits(cell, x))
        else:
            dist.append(name)
            if metric.floor:
                res[name + "_floor"] = _floor(cell, name)
    if dist:  # together: some share their pairwise distances
        target = _exact(cell, 0)
        values = metrics.distribution_metrics(x, target, dist) if finite else {}
        for name in dist:
            res[name] = values.get(name, math.nan)
            metric = metrics.get_metric(name)
            if finite and len(target) == len(x):
                se = metrics.standard_error(metric, metric.fn, x, target, seed=cell.seed)
                if math.isfinite(se):
                    res[name + "_se"] = se
    for k in ("objective_train", "objective_test", "builtin_train", "builtin_test", "cost_nfe", "wall_s"):
        if cell.tuning.get(k) is not None:  # a tuned grid's own figures (bench.harness.tuned), for the report
            res["tune_" + k] = float(cell.tuning[k])
    ref_s = _SPENT["reference"] - ref0
    result["solve_s"] = t_solve + t_disc
    timing["metrics_s"] = time.perf_counter() - t_metrics - t_disc - ref_s
    return result


def _likelihood_cell(cell):
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
    d = x[0].numel()
    if exact_model:
        err = (out.logp.double() - m.exact_log_prob(x, out.t0)) / d
        res = {"logp_error_per_dim": float(err.abs().mean()), "logp_bias_per_dim": float(err.mean()),
               "logp_error_per_dim_se": float(err.abs().std() / len(x) ** 0.5)}
    else:  # trained: no exact density; the NLL itself
        res = {"nll_per_dim": float(-out.logp.double().mean()) / d, "bpd": float(out.bpd.double().mean()),
               "bpd_se": float(out.bpd.double().std() / len(x) ** 0.5)}
    stderr = getattr(out, "stderr", None)
    if stderr is not None and bool(torch.isfinite(torch.as_tensor(stderr)).all()):
        res["logp_stderr"] = float(torch.as_tensor(stderr).double().mean())
    return {"nfe": out.nfe, "steps": None, "stats": {}, "metrics": res,
            "timing": {"median_s": wall, "min_s": wall, "max_s": wall, "repeats": 1}, "solve_s": wall}


def execute_cell(cell: Cell, cache_dir=None, jobs: int = 1) -> dict:
    """Run one cell; never raises: a failure is a result with ``error`` set.

    ``cache_dir``: where shared results (references, exact sets, floors) are kept on disk and
    reused (``bench.harness.cache``); None keeps them in this process only. ``jobs``: how many
    cells run at the same time (recorded with the timing). Besides the sampling timing,
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
        import_plugins(cell.imports)  # a worker process registers the suite's plugin solvers too
        result = _likelihood_cell(cell) if cell.task == "likelihood" else _sample_cell(cell, jobs)
        result["error"] = None
    except Exception as e:
        result = {"nfe": None, "steps": cell.steps, "stats": {}, "metrics": {}, "timing": {},
                  "solve_s": 0.0, "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc(limit=4)}
    result["cell_s"] = time.perf_counter() - t0
    result.setdefault("timing", {})["reference_s"] = _SPENT["reference"] - ref0
    return result


def make_shared(item, cache_dir=None) -> float:
    """Make one shared result before the cells that need it run: ``item`` = (a cell that needs
    it, its key from ``shared_keys``). Run over the workers by the driver (``--jobs N``), so
    that N workers make N references at once instead of waiting on each other's lock on the
    first cells. Returns the seconds it took (0 when it was already on disk)."""
    cell, key = item
    if not isinstance(cell, Cell):
        cell = Cell.from_dict(cell)
    if cell.threads:
        torch.set_num_threads(int(cell.threads))
    _DISK["cache"] = DiskCache(cache_dir) if cache_dir else None
    import_plugins(cell.imports)
    t0 = time.perf_counter()
    kind = key[0]
    if kind == "ode_ref":
        _ode_ref(cell)
    elif kind == "sde_ref":
        _sde_ref(cell, solvers.get(cell.solver))
    elif kind == "exact":
        _exact(cell, key[-1])
    elif kind == "floor":
        _floor(cell, key[-1])
    return time.perf_counter() - t0
