"""Executing cells and sweeping suites.

``execute_cell(cell)`` is a pure function of the cell dict (so Ray can run it anywhere): it
times the sampling call alone, then measures quality. References and exact target samples
are cached per process, keyed by what they depend on.

Per sample cell:
  timing      ``warmup`` untimed + ``repeats`` timed calls of ``solvers.sample`` (fresh noise
              keyed by the seed), median and spread, peak memory, NFE, and
              overhead = median wall / (NFE x median time of one network evaluation at that batch)
  discretization  a float64 solve from the same x_T against the reference: the float64 dopri8
              PF-ODE solution (deterministic solvers) or fine-grid Euler-Maruyama on the same
              Brownian path (solvers that use the path; that path is torchsde's dyadic tree,
              a function of the seed alone, so every cell sees the same Brownian motion)
  distribution metrics on the timed run's samples against exact samples of p_eps, with the
              noise floor (two independent exact sets)
"""
from __future__ import annotations

import math
import sys
import time
import traceback

import torch

import solvers
from bench.harness import metrics
from bench.zoo import models
from bench.harness.reference import brownian_path_for, ode_reference, path_kind, sde_reference
from bench.harness.timing import time_call

__all__ = ["execute_cell", "run_cells", "run_suite", "Progress"]

_CACHE: dict = {}
_SPENT = {"reference": 0.0}  # seconds spent making cached references, exact samples and floors


def _cached(key, make):
    if key not in _CACHE:
        t0 = time.perf_counter()
        _CACHE[key] = make()
        if key[0] not in ("model", "x_T"):
            _SPENT["reference"] += time.perf_counter() - t0
    return _CACHE[key]


def _dtype(name):
    return {"float32": torch.float32, "float64": torch.float64}[name]


def _model(cell):
    return _cached(("model", cell["model"], cell["exact_prior"]),
                   lambda: models.load(cell["model"], exact_prior=cell["exact_prior"]))


def _x_T(cell, dtype=None):
    dtype = dtype or _dtype(cell["dtype"])
    key = ("x_T", cell["model"], cell["exact_prior"], cell["n"], cell["seed"], str(dtype), cell["device"])
    gen = lambda: _model(cell).sample_prior(cell["n"], generator=torch.Generator().manual_seed(cell["seed"]),  # noqa: E731
                                            dtype=torch.float64).to(device=cell["device"], dtype=dtype)
    return _cached(key, gen)


def _exact(cell, which):
    """The target: exact samples of p_eps (exact models) or held-out data (trained models);
    which=0 the target, which=1 an independent set of the same size for the noise floor."""
    m = _model(cell)
    key = ("exact", cell["model"], cell["n"], cell["seed"], which)
    seed = 1_000_003 * (cell["seed"] + 1) + which
    if not models.is_exact(cell["model"]):
        return _cached(key, lambda: m.data_sample(cell["n"], torch.Generator().manual_seed(seed), part=which))
    return _cached(key, lambda: m.exact_sample(cell["n"], m.sde.eps, generator=torch.Generator().manual_seed(seed)))


def _fd_digits(cell, x):
    """FD-digits (Frechet distance in the shipped digits classifier's features; not Inception FID),
    precision and recall against held-out digits, each with its real-vs-real floor."""
    from bench.zoo import fd

    target, other = _exact(cell, 0), _exact(cell, 1)

    def stats(samples):
        fx, fy = fd.digits_features(samples), fd.digits_features(target)
        p, r = fd.precision_recall(fx, fy)
        return {"fd_digits": fd.frechet_distance(fx, fy), "precision": p, "recall": r}

    floor = _cached(("fd_floor", cell["model"], cell["n"], cell["seed"]), lambda: stats(other))
    out = stats(x)
    out.update({k + "_floor": v for k, v in floor.items()})
    return out


def _floor(cell, name):
    return _cached(("floor", cell["model"], cell["n"], cell["seed"], name),
                   lambda: metrics.DISTRIBUTION_METRICS[name](_exact(cell, 1), _exact(cell, 0)))


def _ode_ref(cell):
    key = ("ode_ref", cell["model"], cell["exact_prior"], cell["n"], cell["seed"], cell["reference"]["ode_rtol"])
    tol = cell["reference"]["ode_rtol"]
    return _cached(key, lambda: ode_reference(_model(cell), _x_T(cell, torch.float64).cpu(), rtol=tol, atol=tol))


def _sde_ref(cell, cls):
    """(path, fine-grid reference) for the kind of Brownian path the solver queries; every path is
    a function of the seed alone, so all cells see the same Brownian motion."""
    key = ("sde_ref", path_kind(cls), cell["model"], cell["exact_prior"], cell["n"], cell["seed"],
           cell["reference"]["sde_steps"])

    def make():
        m, x = _model(cell), _x_T(cell, torch.float64).cpu()
        path = brownian_path_for(cls, m.sde, x.shape, seed=cell["seed"], exact=True)
        return path, sde_reference(m, x, path, steps=int(cell["reference"]["sde_steps"]))

    return _cached(key, make)


def _one_eval_s(cell, x_T):
    def make():
        m = _model(cell)
        t = torch.full((x_T.shape[0],), 0.5 * m.sde.T, dtype=x_T.dtype, device=x_T.device)
        _, stats = time_call(lambda: m.fn(x_T, t), repeats=11, warmup=2, device=cell["device"])
        return stats["median_s"]

    return _cached(("one_eval", cell["model"], cell["n"], cell["dtype"], cell["device"]), make)


def _discretization(cell, cls, opts):
    m = _model(cell)
    x64 = _x_T(cell, torch.float64).cpu()
    kw = dict(steps=cell["steps"], grid=cell["grid"], seed=cell["seed"], **opts)
    if not cls.is_stochastic(**opts):
        return metrics.discretization_error(solvers.sample(m, cls.name, x_T=x64, **kw).x, _ode_ref(cell))
    if cls.kind == "corrector":
        return math.nan  # corrector-only samplers have no pathwise reference
    path, ref = _sde_ref(cell, cls)
    return metrics.discretization_error(solvers.sample(m, cls.name, x_T=x64, brownian=path, **kw).x, ref)


def _sample_cell(cell):
    m, cls, opts = _model(cell), solvers.get(cell["solver"]), cell["options"]
    x_T = _x_T(cell)
    t_solve = 0.0

    def run():
        return solvers.sample(m, cls.name, steps=cell["steps"], grid=cell["grid"], x_T=x_T, seed=cell["seed"], **opts)

    t0 = time.perf_counter()
    out, timing = time_call(run, repeats=cell["repeats"], warmup=cell["warmup"], device=cell["device"])
    t_solve += time.perf_counter() - t0
    one = _one_eval_s(cell, x_T)
    timing.update(one_eval_s=one, overhead=timing["median_s"] / (out.nfe * one) if out.nfe else math.nan,
                  threads=torch.get_num_threads())
    result = {"nfe": out.nfe, "steps": out.steps, "stats": out.stats, "timing": timing, "metrics": {}}
    x = out.x.double().cpu()
    res = result["metrics"]
    finite = bool(torch.isfinite(x).all())
    t_metrics, ref0 = time.perf_counter(), _SPENT["reference"]
    t_disc = 0.0
    for name in cell["metrics"]:
        if name == "discretization":
            if not cls.is_stochastic(**opts):  # references are cached and are not solving time
                _ode_ref(cell)
            elif cls.kind != "corrector":
                _sde_ref(cell, cls)
            t0 = time.perf_counter()
            res["discretization"] = _discretization(cell, cls, opts)
            t_disc = time.perf_counter() - t0  # the float64 solve of the cell is solving
        elif name == "w2" and cell["n"] > metrics.W2_MAX_N:
            continue
        elif name == "fd_digits":
            if getattr(m, "data", None) == "digits" and finite:
                res.update(_fd_digits(cell, x))
        else:
            fn = metrics.DISTRIBUTION_METRICS[name]
            res[name] = fn(x, _exact(cell, 0)) if finite else math.nan
            res[name + "_floor"] = _floor(cell, name)
    ref_s = _SPENT["reference"] - ref0
    result["solve_s"] = t_solve + t_disc
    timing["metrics_s"] = time.perf_counter() - t_metrics - t_disc - ref_s
    return result


def _likelihood_cell(cell):
    from solvers.likelihood import log_likelihood  # issue 4: the likelihood module

    m = _model(cell)
    exact_model = models.is_exact(cell["model"])
    x = _exact(cell, 0)[: cell["n"]]
    opts = dict(cell["options"])
    prior = opts.pop("prior", "exact" if exact_model else "sde")
    if prior == "exact":
        if not exact_model:
            raise solvers.InputError(f"model {cell['model']!r} has no exact p_T: use prior = \"sde\"")
        opts["prior"] = lambda z: m.exact_log_prob(z, m.sde.T)
    if getattr(m, "bin_width", None):
        opts.setdefault("bin_width", m.bin_width)
    t0 = time.perf_counter()
    out = log_likelihood(m, x, solver=cell["solver"], seed=cell["seed"], **opts)
    wall = time.perf_counter() - t0
    d = x[0].numel()
    if exact_model:
        err = (out.logp.double() - m.exact_log_prob(x, out.t0)) / d
        res = {"logp_error_per_dim": float(err.abs().mean()), "logp_bias_per_dim": float(err.mean())}
    else:  # trained: no exact density; the NLL itself
        res = {"nll_per_dim": float(-out.logp.double().mean()) / d, "bpd": float(out.bpd.double().mean()),
               "bpd_sem": float(out.bpd.double().std() / len(x) ** 0.5)}
    stderr = getattr(out, "stderr", None)
    if stderr is not None and bool(torch.isfinite(torch.as_tensor(stderr)).all()):
        res["logp_stderr"] = float(torch.as_tensor(stderr).double().mean())
    return {"nfe": out.nfe, "steps": None, "stats": {}, "metrics": res,
            "timing": {"median_s": wall, "min_s": wall, "max_s": wall, "repeats": 1}, "solve_s": wall}


def execute_cell(cell: dict) -> dict:
    """Run one cell; never raises: a failure is a result with ``error`` set.

    Besides the sampling timing, ``timing`` holds where the cell's time went: ``reference_s``
    (references, exact samples and noise floors made for it; cached for later cells) and
    ``metrics_s``; ``solve_s`` is the time in solvers (timed runs and the float64 solve)."""
    if cell.get("threads"):
        torch.set_num_threads(int(cell["threads"]))
    if cell.get("imports"):  # a Ray worker registers the suite's plugin solvers too
        from bench.harness.suite import import_plugins

        import_plugins(cell["imports"])
    t0, ref0 = time.perf_counter(), _SPENT["reference"]
    try:
        result = _likelihood_cell(cell) if cell["task"] == "likelihood" else _sample_cell(cell)
        result["error"] = None
    except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
        result = {"nfe": None, "steps": cell.get("steps"), "stats": {}, "metrics": {}, "timing": {},
                  "solve_s": 0.0, "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc(limit=4)}
    result["cell_s"] = time.perf_counter() - t0
    result.setdefault("timing", {})["reference_s"] = _SPENT["reference"] - ref0
    return result


def describe(cell) -> str:
    opts = " ".join(f"{k}={v}" for k, v in cell["options"].items())
    size = f"nfe<={cell['budget']}" if cell.get("budget") else (f"steps={cell['steps']}" if cell.get("steps") else "")
    return " ".join(p for p in (cell["task"], cell["model"], cell["solver"], opts, size, f"seed={cell['seed']}") if p)


class Progress:
    """Cells done / total, elapsed and ETA: one line rewritten on a terminal, plain lines otherwise."""

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total, self.done, self.stream, self.enabled = total, 0, stream or sys.stderr, enabled
        self.t0 = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    @staticmethod
    def _fmt(s):
        s = int(s)
        return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"

    def update(self, label: str, error: str | None = None):
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        line = f"[{self.done}/{self.total}] {self._fmt(elapsed)} elapsed, ETA {self._fmt(eta)}  {label}"
        if error:
            line += f"  FAILED: {error}"
        if self.tty and not error:
            self.stream.write("\r\033[K" + line[:160])
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run_cells(cells, executor: str = "local", address: str | None = None):
    """Yield (cell, result) as cells finish, locally or as Ray tasks."""
    if executor == "local":
        for cell in cells:
            yield cell, execute_cell(cell)
    elif executor == "ray":
        from bench.harness.executors import run_ray

        yield from run_ray(cells, address=address)
    else:
        raise solvers.InputError(f"unknown executor {executor!r}; valid: local, ray")


def run_suite(suite, store, *, executor: str = "local", address: str | None = None, resume: int | None = None,
              progress: bool = True, stream=None) -> int:
    """Run (or resume) ``suite`` into ``store``; returns the run id. Cells already in the store
    for that run are skipped; each finished cell is committed at once."""
    from bench.harness.suite import cell_key

    stream = stream or sys.stderr
    cells = suite.cells()
    if resume is None:
        run_id, done = store.start_run(suite, executor), set()
    else:
        run = store.run(resume)
        if run["suite"] != suite.name:
            raise solvers.InputError(f"run {resume} is of suite {run['suite']!r}, not {suite.name!r}")
        run_id, done = resume, store.done_keys(resume)
    pending = [c for c in cells if cell_key(c) not in done]
    if progress:
        stream.write(f"run {run_id} of suite {suite.name!r} -> {store.path}: {len(cells)} cells, "
                     f"{len(cells) - len(pending)} already done, {len(pending)} to run ({executor})\n")
    bar = Progress(len(cells), stream, progress)
    bar.done = len(cells) - len(pending)
    store.set_status(run_id, "running")
    last = time.perf_counter()
    for cell, result in run_cells(pending, executor, address):
        now = time.perf_counter()
        store.add_cell(run_id, cell_key(cell), cell, result, wall_s=now - last)
        last = now
        bar.update(describe(cell), result.get("error"))
    store.set_status(run_id, "complete")
    return run_id
