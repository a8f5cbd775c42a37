"""Time grids tuned to (model, solver, steps) against a teacher: ``tune_grid``, ``TunedGrid``,
``load_grid``.

A deterministic fixed-step solver's output is a function of x_T and of its grid; its
discretization error e(x_T) = ||Phi_grid(x_T) - x_ref(x_T)|| / sqrt(d), with x_ref the exact
probability-flow ODE solution (a teacher), depends on the interior grid points alone (the end
points T and eps are fixed, as are the solver's options). ``tune_grid`` minimises the median of
e over a train set of x_T and reports it on an independent held-out set, next to the best
built-in grid, which it never does worse than on the train set.

The statistic is the median per-sample error / sqrt(d), the harness's discretization error
(``bench.harness.metrics.discretization_error``): on a multimodal target a few trajectories that start
near a basin boundary switch mode at coarse steps, and a mean would be spent on them.

Methods:

- ``search``: derivative-free search through ``solvers.sample`` itself, so any registered
  deterministic fixed-step solver (single-step or multistep) is tuned as it runs. The interior
  nodes are parameterised by softmax-weighted increments of lambda = log(alpha/sigma) between
  the fixed end points, lambda_{i+1} - lambda_i = (lambda_N - lambda_0) softmax(z)_i, which keeps
  every candidate strictly monotone; Powell's method (scipy) starts from the best built-in grid
  and spends at most ``budget`` solves of the train set.
- ``dp``: dynamic programming over a fine teacher grid, after GITS (Chen et al. 2024, "On the
  trajectory regularity of ODE-based diffusion sampling", Sec. 4: pick N of M fine teacher
  times by DP) with the student-state recursion of OSS (Pei et al. 2025, "Optimal stepsize for
  diffusion sampling"). The teacher's states x*_j sit at M + 1 fine times, a k-fold refinement
  (M = k N) of the best built-in grid, so that grid is one of the candidate paths. For every
  step count m and fine point j, the best m-step path to j is the one whose student state, one
  solver step from the best (m-1)-step state at some i < j, lands closest to x*_j (median over
  a batch of 64). Carrying the student's own state, not GITS's sum of one-step errors from
  teacher states, lets the choice see how earlier errors propagate (on gmm2d-vp GITS's sum
  picked Euler grids worse than the uniform one); like OSS, the recursion is a heuristic for the
  final error, not an exact Bellman equation. Steps span at most S = 4k fine intervals; the cost
  is M S one-step solves, each batched over every step count, cheap enough for every solver of
  a suite. One step from t_i to t_j is the solver's own first step on the grid [t_i, t_j]:
  exact for single-step solvers, an approximation for multistep ones (their later steps reuse
  earlier model outputs that a one-step cost does not see; the result then often stays the
  baseline) and for options that change the last step (heun's ``last_step_euler``).

Teacher: by default a float64 ``dopri8`` solve at rtol = atol = 1e-10; or a callable
x_T -> x_ref (float64); or a precomputed pair (x_T, x_ref) whose first ``n`` rows are the train
set and the rest the held-out set. ``dp`` always takes its fine trajectory from a dopri8
solve (a callable gives end points only), at the callable's ``rtol`` attribute where it has one
(the harness's teacher: the cell's reference tolerance), else at 1e-10. With ``denoise=True`` the
reference is the model's x0 at (x_ref, eps), as the solver's output is.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import InputError, NonFiniteError
from .grids import GRIDS, check_times, make_grid
from .model import ScoreModel
from .registry import get
from .sampling import sample

__all__ = ["METHODS", "TunedGrid", "load_grid", "tune_grid"]

FORMAT = "sdebench.tuned_grid"
FORMAT_VERSION = 1
TEACHER = {"solver": "dopri8", "rtol": 1e-10, "atol": 1e-10}
#: the held-out x_T are drawn with seed + TEST_SEED_OFFSET
TEST_SEED_OFFSET = 1_000_003


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("sdebench")
    except Exception:
        return "unknown"


def sde_description(sde, times: torch.Tensor) -> dict:
    """What identifies an SDE for a grid: its repr, range, and lambda at the grid's times."""
    return {"repr": repr(sde), "T": sde.T, "eps": sde.eps, "lam": sde.lam(times).tolist()}


@dataclass(eq=False)
class TunedGrid:
    """A time grid tuned for (model, solver, options, steps), with its provenance.

    times: float64, strictly decreasing, T -> eps; objective / baseline: {"train", "test"}
    median per-sample error / sqrt(d) of this grid and of the best built-in grid (``baseline``
    also names it and lists every built-in's train objective); cost_nfe / wall_s: what the
    tuning call spent (teacher, solves, held-out evaluation); sde: its description (repr, T,
    eps, lambda at ``times``), which ``load_grid`` and ``sample`` check. Accepted wherever a grid
    is: ``solvers.sample(model, solver, grid=tuned)`` or ``times=tuned``."""

    times: torch.Tensor
    solver: str
    options: dict
    steps: int
    nfe: int
    method: str
    objective: dict
    baseline: dict
    cost_nfe: int
    wall_s: float
    model: str
    sde: dict
    data: dict = field(default_factory=dict)
    version: str = field(default_factory=_version)

    def __len__(self):
        return len(self.times)

    def times_for(self, sde) -> torch.Tensor:
        """The times, after checking that ``sde`` is the SDE this grid was made for."""
        _check_sde(self.sde, sde, self.times, f"tuned grid for {self.solver!r} on {self.model!r}")
        return self.times

    def to_dict(self) -> dict:
        d = asdict(self)
        d["times"] = self.times.tolist()
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **d}

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def _check_sde(desc: dict, sde, times, who: str):
    lam = sde.lam(times).tolist()
    ok = desc["repr"] == repr(sde) and len(lam) == len(desc["lam"]) and all(
        abs(a - b) <= 1e-9 * max(1.0, abs(a)) for a, b in zip(lam, desc["lam"]))
    if not ok:
        raise InputError(f"{who} was made for the SDE {desc['repr']}, not {sde!r} (lambda at its times differs)")


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "times": list, "solver": str, "options": dict, "steps": int, "nfe": int, "method": str,
    "objective": dict, "baseline": dict, "cost_nfe": int, "wall_s": (int, float), "model": str,
    "sde": dict, "data": dict, "version": str}


def load_grid(path, model: ScoreModel | None = None, *, sde=None) -> TunedGrid:
    """Read a ``TunedGrid`` saved with ``.save``; with ``model`` (or ``sde``), also check that it
    was made for that SDE. Raises InputError naming the file and the problem."""
    path = Path(path)

    def bad(msg):
        return InputError(f"tuned grid file {str(path)!r}: {msg}")

    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise bad(f"cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise bad(f"is not JSON ({e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise bad(f"is not a tuned grid (no \"format\": \"{FORMAT}\")")
    if d.get("format_version") != FORMAT_VERSION:
        raise bad(f"has format_version {d.get('format_version')!r}; this library reads {FORMAT_VERSION}")
    for k, typ in _FIELDS.items():
        if k not in d:
            raise bad(f"has no field {k!r}")
        if not isinstance(d[k], typ) or isinstance(d[k], bool):
            raise bad(f"field {k!r} must be {getattr(typ, '__name__', 'a number')}, got {type(d[k]).__name__}")
    desc = d["sde"]
    for k in ("repr", "T", "eps", "lam"):
        if k not in desc:
            raise bad(f"sde description has no {k!r}")
    times = d["times"]
    if len(times) < 2 or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                                 for t in times):
        raise bad("times must be a list of at least 2 finite numbers")
    if len(times) != d["steps"] + 1:
        raise bad(f"has {len(times)} times for steps={d['steps']}")
    i = next((i for i in range(len(times) - 1) if not times[i + 1] < times[i]), None)
    if i is not None:
        raise bad(f"times are not strictly decreasing: times[{i}]={times[i]!r}, times[{i + 1}]={times[i + 1]!r}")
    tol = 1e-9 * desc["T"]
    if times[0] > desc["T"] + tol or times[-1] < desc["eps"] - tol:
        raise bad(f"times [{times[-1]:g}, {times[0]:g}] are out of [eps, T] = [{desc['eps']:g}, {desc['T']:g}]")
    fields = {k: d[k] for k in _FIELDS}
    fields["times"] = torch.tensor(times, dtype=torch.float64)
    grid = TunedGrid(**fields)
    sde = model.sde if model is not None else sde
    if sde is not None:
        try:
            check_times(sde, grid)
        except InputError as e:
            raise bad(str(e)) from None
    return grid


# ----------------------------------------------------------------------------------------------
# the objective
# ----------------------------------------------------------------------------------------------
def per_sample_error(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """||x - ref|| / sqrt(d) per sample, in float64."""
    x, ref = x.detach().double().flatten(1), ref.detach().double().flatten(1)
    return (x - ref).norm(dim=1) / math.sqrt(x.shape[1])


class Objective:
    """Median per-sample error of ``solver`` on a grid against references; counts its solves and
    remembers every grid it solved (a grid seen before costs nothing)."""

    def __init__(self, model, cls, options, x_T, x_ref, teacher_rtol=None):
        self.model, self.cls, self.options = model, cls, options
        self.x_T, self.x_ref, self.teacher_rtol = x_T, x_ref, teacher_rtol
        self.solves, self.seen = 0, {}

    def __call__(self, times) -> float:
        key = times.numpy().tobytes()
        if key not in self.seen:
            self.solves += 1
            try:
                x = sample(self.model, self.cls, times=times, x_T=self.x_T, **self.options).x
                self.seen[key] = float(per_sample_error(x, self.x_ref).median())
            except NonFiniteError:  # a candidate grid the solver blows up on: worst possible
                self.seen[key] = math.inf
        return self.seen[key]


# ----------------------------------------------------------------------------------------------
# teacher and data
# ----------------------------------------------------------------------------------------------
def dopri8_teacher(model, x_T, times=None, rtol: float | None = None) -> torch.Tensor:
    """The default teacher: float64 dopri8 at rtol = atol = 1e-10 (or ``rtol``); the end state, or
    the states at every time of ``times`` (shape (len(times), *x_T.shape)) when given."""
    kw = dict(rtol=TEACHER["rtol"], atol=TEACHER["atol"]) if rtol is None else dict(rtol=rtol, atol=rtol)
    if times is None:
        return sample(model, TEACHER["solver"], x_T=x_T.double(), **kw).x
    # one solve per interval: a single dense solve through many close output times can stall at
    # tight tolerances (torchdiffeq's step size underflows near t = eps)
    times = torch.as_tensor(times, dtype=torch.float64)
    states = [x_T.double()]
    for a, b in zip(times[:-1], times[1:]):
        states.append(sample(model, TEACHER["solver"], x_T=states[-1], times=torch.stack([a, b]), **kw).x)
    return torch.stack(states)


def _draw(model, n, seed):
    return model.sample_prior(n, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)


def _denoised(model, x, opts):
    if not opts.get("denoise"):
        return x
    sde = model.sde
    return model(x, sde.eps, "x0", alpha=float(sde.alpha(sde.eps)), sigma=float(sde.sigma(sde.eps)))


def _data(model, teacher, n, n_test, seed, opts) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                           tuple[torch.Tensor, torch.Tensor], dict]:
    """((x_T, x_ref) train, (x_T, x_ref) held-out, description)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    if isinstance(teacher, (tuple, list)):
        if len(teacher) != 2 or not all(isinstance(v, torch.Tensor) for v in teacher) \
                or teacher[0].shape != teacher[1].shape:
            raise InputError("teacher as a pair must be (x_T, x_ref): two tensors of one shape")
        x_T, x_ref = (v.detach().double() for v in teacher)
        if x_T.ndim < 2 or (model.shape is not None and tuple(x_T.shape[1:]) != model.shape):
            raise InputError(f"teacher pair has x_T of shape {tuple(x_T.shape)}; model {model.name!r} expects "
                             f"(batch, {', '.join(map(str, model.shape or ('...',)))})")
        if x_T.shape[0] <= n:
            raise InputError(f"teacher pair has {x_T.shape[0]} rows: the first n={n} are the train set and "
                             "the rest the held-out set, so it needs more than n rows")
        if n_test is not None and n_test != x_T.shape[0] - n:
            raise InputError(f"n_test={n_test} contradicts the teacher pair's {x_T.shape[0] - n} held-out rows")
        x_ref = _denoised(model, x_ref, opts)
        return (x_T[:n], x_ref[:n]), (x_T[n:], x_ref[n:]), {"teacher": "pair", "n": n,
                                                             "n_test": x_T.shape[0] - n}
    if teacher is None:
        fn, name = (lambda x: dopri8_teacher(model, x)), "dopri8 float64 rtol=atol=1e-10"
    elif callable(teacher):
        fn, name = teacher, getattr(teacher, "__name__", type(teacher).__name__)
    else:
        raise InputError(f"teacher must be None, a callable x_T -> x_ref or a pair (x_T, x_ref), "
                         f"got {type(teacher).__name__}")
    n_test = n if n_test is None else n_test
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 1:
        raise InputError(f"n_test must be a positive integer, got {n_test!r}")
    sets = []
    for k, s in ((n, seed), (n_test, seed + TEST_SEED_OFFSET)):
        x_T = _draw(model, k, s)
        x_ref = fn(x_T)
        if not isinstance(x_ref, torch.Tensor) or x_ref.shape != x_T.shape:
            raise InputError(f"teacher {name!r} must return a tensor of x_T's shape {tuple(x_T.shape)}")
        sets.append((x_T, _denoised(model, x_ref.detach().double(), opts)))
    return sets[0], sets[1], {"teacher": name, "n": n, "n_test": n_test, "seed": seed,
                              "test_seed": seed + TEST_SEED_OFFSET}


# ----------------------------------------------------------------------------------------------
# methods: each returns candidate times (the caller keeps the baseline when they are not better)
# ----------------------------------------------------------------------------------------------
def _times_of_lam(sde, lam: torch.Tensor) -> torch.Tensor:
    t = sde.t_of_lam(lam)
    t[0], t[-1] = sde.T, sde.eps
    return t


def search(objective, start: torch.Tensor, budget: int, **_) -> torch.Tensor:
    """Powell's method on softmax-weighted lambda increments from ``start``, <= ``budget`` solves.

    z has N - 1 free entries (the last is 0): increments = (lambda_N - lambda_0) softmax(z)."""
    try:
        from scipy.optimize import minimize
    except ImportError:  # pragma: no cover - scipy is a dependency (pyproject)
        raise InputError("method='search' needs scipy (pip install scipy)") from None
    sde = objective.model.sde
    lam = sde.lam(start)
    span = float(lam[-1] - lam[0])
    if len(start) < 3 or budget < 1:  # no interior node to move
        return start
    logw = torch.log(torch.diff(lam) / span)
    z0 = (logw[:-1] - logw[-1]).numpy()
    best: dict[str, Any] = {"f": math.inf, "times": start}

    class Spent(Exception):
        pass

    def times_of(z):
        w = torch.softmax(torch.cat([torch.as_tensor(z, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)]), 0)
        return _times_of_lam(sde, torch.cat([lam[:1], lam[0] + span * torch.cumsum(w, 0)]))

    def f(z):
        t = times_of(z)
        if not bool((t[1:] < t[:-1]).all()):  # increments underflowed: not a grid
            return 1e300
        if objective.solves >= budget and t.numpy().tobytes() not in objective.seen:
            raise Spent
        v = objective(t)
        if v < best["f"]:
            best.update(f=v, times=t)
        return v if math.isfinite(v) else 1e300

    z, last = z0, math.inf
    try:  # restart Powell (fresh directions) from the best point while it still gains 1%
        f(z0)
        while best["f"] < 0.99 * last:
            last = best["f"]
            z = minimize(f, z, method="Powell", options={"xtol": 1e-2, "ftol": 1e-3}).x
    except Spent:
        pass
    return best["times"]


def dp(objective, start: torch.Tensor, budget: int, *, kind: str, batch: int = 64, **_) -> torch.Tensor:
    """DP over the teacher's fine grid (``budget`` intervals, rounded up to a multiple of steps),
    carrying the student's own states (OSS); see the module docstring."""
    model, cls, options = objective.model, objective.cls, objective.options
    N = len(start) - 1
    k = max(2, -(-budget // N))
    M, S = N * k, 4 * k  # fine intervals; the longest step, 4x the baseline's
    fine = _builtin(model, M, kind)
    traj = dopri8_teacher(model, objective.x_T[:batch], fine, objective.teacher_rtol)  # (M + 1, b, ...)
    b = traj.shape[1]
    # E[m, j]: median error at fine point j of the best m-step path; Z: its state; arg: previous point
    E = torch.full((N + 1, M + 1), math.inf, dtype=torch.float64)
    arg = torch.zeros((N + 1, M + 1), dtype=torch.long)
    Z = torch.zeros((N + 1, M + 1, *traj.shape[1:]), dtype=torch.float64)
    E[0, 0], Z[0, 0] = 0.0, traj[0]
    for j in range(1, M + 1):
        # m steps reach j only if m <= j and the other N - m steps fit in M - j fine intervals
        m_lo, m_hi = max(1, N - (M - j)), min(N, j)
        for i in range(max(0, j - S), j):
            ms = [m for m in range(m_lo, m_hi + 1) if math.isfinite(float(E[m - 1, i]))]
            if not ms:
                continue
            try:
                inst = cls(model, fine[[i, j]], dtype=torch.float64, **options)
            except InputError as e:
                raise InputError(f"method='dp' builds one-step {cls.name!r} solvers and cannot with these "
                                 f"options ({e}); use method='search'") from None
            prev = torch.tensor(ms) - 1
            y = inst.step(0, Z[prev, i].reshape(len(ms) * b, *traj.shape[2:])).reshape(len(ms), *traj.shape[1:])
            err = per_sample_error(y.flatten(0, 1), traj[j].repeat(len(ms), *[1] * (traj.ndim - 2)))
            err = torch.nan_to_num(err.view(len(ms), b), nan=math.inf).median(1).values
            for r, m in enumerate(ms):
                if err[r] < E[m, j]:
                    E[m, j], arg[m, j], Z[m, j] = err[r], i, y[r]
    if not math.isfinite(float(E[N, M])):
        return start
    path = [M]
    for m in range(N, 0, -1):
        path.append(int(arg[m, path[-1]]))
    return fine[path[::-1]].clone()


METHODS = {"search": search, "dp": dp}
DEFAULT_BUDGET = {"search": 1500, "dp": 64}


# ----------------------------------------------------------------------------------------------
# the entry point
# ----------------------------------------------------------------------------------------------
def _solver_class(solver, options):
    cls = get(solver)
    cls.resolve_options(options)
    if cls.adaptive:
        raise InputError(f"solver {cls.name!r} is adaptive: it chooses its own steps, there is no grid to tune")
    if cls.kind != "ode" or cls.is_stochastic(**options):
        raise InputError(f"solver {cls.name!r} is stochastic with these options: a tuned grid is fit to the "
                         "deterministic probability-flow ODE against an ODE teacher; tune its deterministic "
                         "counterpart (e.g. 'euler' for 'euler_maruyama', ddim with eta=0, dpmpp_2m for "
                         "dpmpp_2m_sde) and pass its grid")
    return cls


def _steps(cls, steps, nfe, options):
    if (steps is None) == (nfe is None):
        raise InputError("pass one of steps (grid intervals) or nfe (a budget of network evaluations)")
    if nfe is not None:
        if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
            raise InputError(f"nfe must be a positive integer, got {nfe!r}")
        steps = cls.steps_for_nfe(nfe, **options)
        if steps < 1:
            raise InputError(f"solver {cls.name!r}: nfe={nfe} does not pay for one step")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def _builtin(model, steps, kind):
    return make_grid(model.sde, steps, kind, **({"data_std": model.data_std} if kind == "tan" else {}))


def _builtins(model, steps):
    """{name: times} of every built-in grid (``tan`` when the model knows its data_std)."""
    known = getattr(model, "data_std", None) is not None
    return {k: _builtin(model, steps, k) for k in GRIDS if k != "tan" or known}


def tune_grid(model: ScoreModel, solver, *, steps: int | None = None, nfe: int | None = None,
              method: str = "search", teacher=None, n: int = 256, n_test: int | None = None, seed: int = 0,
              budget: int | None = None, **options) -> TunedGrid:
    """Tune the time grid of a deterministic fixed-step ``solver`` for ``model`` (see the module
    docstring for the methods, the teacher and the objective).

    Args:
        steps / nfe: grid intervals, or an NFE budget (converted with ``steps_for_nfe``).
        method: "search" (Powell through ``sample``) or "dp" (GITS/OSS-style DP on a fine teacher grid).
        teacher: None (float64 dopri8, rtol = atol = 1e-10), a callable x_T -> x_ref, or a pair
            (x_T, x_ref) whose first ``n`` rows are the train set and the rest the held-out set.
        n / n_test / seed: train set size, held-out set size (default n) and the seed of the
            train x_T (``model.sample_prior``); the held-out x_T use seed + 1000003.
        budget: "search": most solves of the train set (built-ins included; default 1500);
            "dp": fine teacher intervals M (rounded up to a multiple of steps; default 64).
        **options: the solver's options, tuned as given (never changed).

    Returns a ``TunedGrid`` no worse than the best built-in grid on the train set (it is that grid
    when the method finds nothing better), with both objectives, train and held-out.
    """
    if not isinstance(model, ScoreModel):
        raise InputError(f"model must be a solvers.ScoreModel, got {type(model).__name__}")
    t0, nfe0 = time.perf_counter(), model.nfe
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    cls = _solver_class(solver, options)
    steps = _steps(cls, steps, nfe, options)
    cls(model, make_grid(model.sde, steps), dtype=torch.float64, **options)  # option values checked once
    budget = DEFAULT_BUDGET[method] if budget is None else budget
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"budget must be a positive integer, got {budget!r}")
    opts = cls.resolve_options(options)
    try:
        train, test, data = _data(model, teacher, n, n_test, seed, opts)
        obj = Objective(model, cls, options, *train, teacher_rtol=getattr(teacher, "rtol", None))
        grids = _builtins(model, steps)
        base = {k: obj(t) for k, t in grids.items()}
        best = min(base, key=base.__getitem__)
        times = METHODS[method](obj, grids[best], budget, kind=best)
        value = obj(times)
        if not value < base[best]:
            times, value = grids[best], base[best]
        held = Objective(model, cls, options, *test)
        test_base, test_value = held(grids[best]), held(times)
        cost = model.nfe - nfe0
    finally:
        model.nfe = nfe0
    data["train_solves"] = obj.solves
    return TunedGrid(
        times=times, solver=cls.name, options=opts, steps=steps, nfe=cls.expected_nfe(steps, **options),
        method=method, objective={"train": value, "test": test_value},
        baseline={"grid": best, "train": base[best], "test": test_base, "train_all": base},
        cost_nfe=cost, wall_s=time.perf_counter() - t0, model=model.name,
        sde=sde_description(model.sde, times), data=data)
