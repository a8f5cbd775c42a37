"""A run's cost before it starts: seconds per cell from the cell definitions.

    est = estimate(cells, cache_dir=None, jobs=1)
    est.total_s, est.solve_s, est.reference_s, est.metrics_s, est.cells[key], est.summary()

Model (rough by design; the progress line refines it with the cells' actual times):

Everything that scales is measured here once per run, on the cells' own models and shapes, at
batches of at most ``CAL_N`` samples and scaled to the cell's (linearly; the pooled MMD^2 /
energy distance quadratically), so an estimate never allocates a cell's full batch (a second
or two for a suite; all of it is reported in the run's time shares):

- one network evaluation of each (model, batch, dtype, device), and the per-evaluation loop
  overhead of a fixed-step solve;
- one query of each kind of exact Brownian path at the cells' shape (the dyadic tree costs
  milliseconds per query at batch 1,000: it, not the network, dominates SDE references);
- the NFE of each ODE reference (float64 dopri8 at the cell's tolerance), solved on 8 samples
  and costed at the cell's batch;
- what each metric a cell measures costs: its registry record's ``cost(metric, costing)``
  (``bench.harness.metrics``; a ``Costing`` gives it the cell, its NFE, a float64 solve's cost
  and ``timed_s`` of work on synthetic sets of the cell's size and dimension), by default its
  value and standard error (bootstraps included) timed once on such sets.

Then a sample cell's solving = (timed runs + warm-up) x NFE x (evaluation + overhead), with
NFE from ``Solver.expected_nfe`` (a tolerance-based guess for adaptive solvers) and timed runs as
``bench.harness.timing.time_adaptive`` makes them (one for a call over 1 s, else up to
``repeats``), plus what its metrics add: the discretization error's float64 solve (plus a path
query per step for stochastic solvers; none when the timed call already was float64 on the
CPU); exact KL's Jacobian, (2 + 1.2 d) float64 solves (d backward passes; measured 4.4x at
d = 2 and 75x at d = 64), whose solve is the cell's float64 solve too. Shared work (references,
exact sets, noise floors: each metric's ``cost`` says what its floor costs) is counted once per
run, on the first cell that needs it, and not at all when it is already in the disk cache or
shipped (``bench.harness.shipped``).
Likelihood cells: a tolerance-based NFE guess x (1 + dimension) float64 evaluations.

It imports neither the sweep nor the store.
"""
from __future__ import annotations

import dataclasses
import math
import time

import torch

import solvers
from bench.harness import metrics
from bench.harness.cache import DiskCache
from bench.harness.cell import Cell
from bench.harness.execute import have_shared, metrics_to_measure, shared_keys
from bench.harness.timing import LONG_S
from bench.zoo import models

__all__ = ["estimate", "Estimate", "Costing", "fmt_seconds", "CAL_N", "cluster_cost", "schedule_wall"]

#: the largest batch a calibration allocates (larger cells are measured at this size and scaled)
CAL_N = 1024
#: metrics whose cost grows as n^2 (one pooled (2n x 2n) distance matrix); the others about linearly
QUADRATIC = ("mmd2", "energy")

def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclasses.dataclass
class Estimate:
    cells: dict             # cell key -> estimated seconds (shared work on the first cell needing it)
    solve_s: float
    reference_s: float
    metrics_s: float
    jobs: int = 1

    @property
    def total_s(self) -> float:
        return self.solve_s + self.reference_s + self.metrics_s

    def wall_s(self) -> float:
        return self.total_s / max(self.jobs, 1)

    def summary(self) -> str:
        par = f" on {self.jobs} jobs" if self.jobs > 1 else ""
        return (f"estimate ~{fmt_seconds(self.wall_s())}{par} (solving {self.solve_s:.0f} s, references "
                f"{self.reference_s:.0f} s, metrics {self.metrics_s:.0f} s of work; rough: refined as cells finish)")


def schedule_wall(costs, workers: int) -> float:
    """Wall time of running tasks of ``costs`` seconds on ``workers`` identical workers, longest
    first, each to the worker that frees up first (LPT; within 4/3 of the optimum, Graham 1969)."""
    import heapq

    free = [0.0] * max(1, int(workers))
    for c in sorted(costs, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + c)
    return max(free)


def cluster_cost(est: Estimate, cells, resources: dict) -> str:
    """What ``cells`` (estimated as ``est``) cost on a cluster of ``resources`` ({"CPU", "GPU",
    "nodes"}): worker-hours in all and by model, and the wall time of an LPT schedule of the
    cells, CPU cells over the CPUs and CUDA cells over the GPUs (one each, as the Ray executor
    asks). Seconds are this machine's: a cluster's cores may be faster or slower."""
    by_model: dict = {}
    lanes: dict = {"cpu": [], "cuda": []}
    for cell in cells:
        s = est.cells.get(cell.key, 0.0)
        by_model[cell.model] = by_model.get(cell.model, 0.0) + s
        lanes["cuda" if cell.device == "cuda" else "cpu"].append(s)
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if lanes["cuda"] and not gpus:
        return (f"the cluster has no GPU, and {len(lanes['cuda'])} cells run on CUDA: they would wait forever "
                "(add GPU nodes or set device = \"cpu\")")
    wall = max(schedule_wall(lanes["cpu"], cpus) if lanes["cpu"] else 0.0,
               schedule_wall(lanes["cuda"], gpus) if lanes["cuda"] else 0.0)
    models = ", ".join(f"{m} {s / 3600:.2f}" for m, s in sorted(by_model.items(), key=lambda kv: -kv[1]))
    return (f"on the cluster ({resources.get('nodes', '?')} nodes, {cpus} CPUs, {gpus} GPUs): "
            f"~{sum(by_model.values()) / 3600:.2f} worker-hours ({models}), wall ~{fmt_seconds(wall)} "
            f"(longest cells first over {cpus} CPU workers{f' and {gpus} GPUs' if lanes['cuda'] else ''}; "
            "seconds as timed on this machine)")


def _best(fn, k=3):
    """The median of k timed calls after one untimed (the harness times medians too)."""
    fn()
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


class _OverBudget(Exception):
    pass


class _Calibration:
    """Network-evaluation and metric costs measured once, a few calls each."""

    def __init__(self, cells=()):
        self.evals, self.work_s, self._models, self._overhead = {}, {}, {}, None
        self.paths, self.refs = {}, {}
        #: model id (``Cell.model_id``) -> what loads it (``Cell.model_ref``)
        self.specs = {c.model_id: c.model_ref() for c in cells}

    def load(self, name, exact_prior=False):
        """A fresh model of this id (a registered name, or a spec's id)."""
        return models.load(self.specs.get(name, name), exact_prior=exact_prior and models.is_exact(name))

    def model(self, name, exact_prior=False):
        key = (name, exact_prior)
        if key not in self._models:
            self._models[key] = self.load(name, exact_prior)
        return self._models[key]

    def eval_s(self, name, n, dtype, device="cpu"):
        """One network evaluation at batch n (measured at min(n, CAL_N), scaled linearly)."""
        b = min(n, CAL_N)
        key = (name, b, dtype, device)
        if key not in self.evals:
            m = self.model(name)
            x = m.sample_prior(b, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(
                device=device, dtype={"float32": torch.float32, "float64": torch.float64}[dtype])
            t = torch.full((b,), 0.5 * m.sde.T, dtype=x.dtype, device=x.device)
            try:
                self.evals[key] = _best(lambda: m.fn(x, t))
            except RuntimeError:  # a network fixed in float32 (the timing-only U-Net): float64 as 2x float32
                if dtype != "float64":
                    raise
                self.evals[key] = 2 * self.eval_s(name, b, "float32", device)
        return self.evals[key] * n / b

    def overhead_s(self):
        """Per-evaluation cost of the solver loop beyond the network (tiny batch, fixed steps)."""
        if self._overhead is None:
            m = self.model("gmm2d-vp")
            x = m.sample_prior(4, generator=torch.Generator().manual_seed(0))
            wall = _best(lambda: solvers.sample(m, "euler", steps=20, x_T=x))
            self._overhead = max(wall / 20 - self.eval_s("gmm2d-vp", 4, "float32"), 1e-5)
        return self._overhead

    def path_step_s(self, cls, name, shape):
        """One query of the exact Brownian path the solver class uses, at this shape."""
        from bench.harness.reference import brownian_path_for, path_kind

        b = min(shape[0], CAL_N)
        key = (path_kind(cls), name, (b, *shape[1:]))
        if key not in self.paths:
            sde = self.model(name).sde
            path = brownian_path_for(cls, sde, key[2], seed=0, exact=True)
            ts = torch.linspace(float(sde.T), float(sde.eps), 1025, dtype=torch.float64)[:17].tolist()
            t0 = time.perf_counter()
            for t, s in zip(ts[:-1], ts[1:]):
                path.increment(t, s)
            self.paths[key] = (time.perf_counter() - t0) / 16
        return self.paths[key] * shape[0] / b

    def counted_nfe(self, key, name, exact_prior, solve, budget_s: float = 1.0):
        """NFE of ``solve(model, x)`` on 8 samples of a fresh copy of the model (solvers with
        step control: references, adaptive solvers; about independent of the batch); a solve
        that outlasts ``budget_s`` is stopped and its NFE extrapolated from the share of
        [eps, T] it covered (an underestimate: steps shrink toward eps)."""
        if key not in self.refs:
            m = self.load(name, exact_prior)  # its fn is wrapped here, and put back after
            x = m.sample_prior(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            net, calls, deadline = m.fn, [0, float(m.sde.T)], time.perf_counter() + budget_s

            def counted(x_, t_, *a, **k):
                calls[0] += 1
                calls[1] = float(torch.as_tensor(t_).reshape(-1)[0])
                if time.perf_counter() > deadline:
                    raise _OverBudget
                return net(x_, t_, *a, **k)

            m.fn = counted
            try:
                solve(m, x)
                self.refs[key] = max(calls[0], 1)
            except _OverBudget:
                T, eps = float(m.sde.T), float(m.sde.eps)
                self.refs[key] = calls[0] * (T - eps) / max(T - calls[1], 1e-3 * (T - eps))
            finally:  # a loader may return a cached model: leave it as it was
                m.fn = net
        return self.refs[key]

    def ode_ref_nfe(self, name, exact_prior, rtol):
        """NFE of the float64 dopri8 reference at ``rtol``."""
        from bench.harness.reference import ode_reference

        return self.counted_nfe(("ode_ref", name, exact_prior, rtol), name, exact_prior,
                                lambda m, x: ode_reference(m, x, rtol=rtol, atol=rtol))

    def adaptive_nfe(self, cell, cls, options):
        """NFE of an adaptive solver at the cell's tolerance (float64 on 8 samples)."""
        key = ("adaptive", cell.model_id, cell.exact_prior, cls.name, repr(sorted(options.items())))
        return self.counted_nfe(key, cell.model_id, cell.exact_prior,
                                lambda m, x: solvers.sample(m, cls.name, x_T=x, seed=0, **options))

    def timed_s(self, key, work, n: int, d: int) -> float:
        """Seconds of ``work(x, y)`` once, on two synthetic float64 sets of n samples in d dimensions
        (measured once per key, n and d, on min(n, CAL_N) samples: scaled quadratically for the
        ``QUADRATIC`` metrics named in ``key``, else linearly)."""
        b = min(n, CAL_N)
        power = 2 if set(key if isinstance(key, tuple) else (key,)) & set(QUADRATIC) else 1
        key = (key, b, d)
        if key not in self.work_s:
            g = torch.Generator().manual_seed(0)
            x, y = (torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(2))
            t0 = time.perf_counter()
            work(x, y)
            self.work_s[key] = time.perf_counter() - t0
        return self.work_s[key] * (n / b) ** power


@dataclasses.dataclass
class Costing:
    """What a metric's ``cost(metric, costing)`` reads (``bench.harness.metrics``): one sample
    cell, its solver and options, its estimated NFE, its dimension, the cost of one float64
    solve of it (NFE x (float64 evaluation + loop overhead)), and measured unit costs."""

    cell: Cell
    solver: type
    options: dict
    nfe: float
    dim: int
    solve64_s: float
    calibration: _Calibration
    float64_made: bool = False

    def provide_float64(self):
        """A metric makes the cell's float64 solve itself (exact KL): the others reuse it."""
        self.float64_made = True

    def float64_solution_s(self) -> float:
        """The cell's deterministic float64 solution: once per cell, and free when the timed call
        already was float64 on the CPU (``bench.harness.execute.Measuring.float64_solution``)."""
        if self.float64_made or (self.cell.dtype == "float64" and self.cell.device == "cpu"):
            return 0.0
        self.float64_made = True
        return self.solve64_s

    def path_step_s(self) -> float:
        """One query of the exact Brownian path the cell's solver uses, at the cell's shape."""
        cal, cell = self.calibration, self.cell
        shape = (cell.n, *(getattr(cal.model(cell.model_id), "shape", None) or (self.dim,)))
        return cal.path_step_s(self.solver, cell.model_id, shape)

    def path_queries_s(self) -> float:
        """Querying that path once per step (a stochastic solver's float64 solve)."""
        return (self.cell.steps or self.nfe) * self.path_step_s()

    def timed_s(self, key, work) -> float:
        """Seconds of ``work(x, y)`` on synthetic sets of the cell's size and dimension."""
        return self.calibration.timed_s(key, work, self.cell.n, self.dim)


def _adaptive_nfe(cls, options) -> float:
    rtol = float(options.get("rtol", 1e-3))
    per_step = 2 if cls.kind != "ode" else 6
    return per_step * 8 * max(1.0, 1e-2 / rtol) ** (1 / 4)


def _dim(cal, cell):
    return int(math.prod(getattr(cal.model(cell.model_id), "shape", (2,)) or (2,)))


def estimate(cells, cache_dir=None, jobs: int = 1) -> Estimate:
    """Estimated seconds for ``cells`` (see the module docstring). The measurements run with the
    cells' torch threads (1 by default), as the cells will: with more threads than free cores
    a busy machine makes them 10-30x slower (OpenMP threads wait on descheduled peers)."""
    cal, per_cell, seen = _Calibration(cells), {}, set()
    cache = DiskCache(cache_dir, create=False) if cache_dir else None
    totals = {"solve": 0.0, "reference": 0.0, "metrics": 0.0}
    threads = torch.get_num_threads()
    torch.set_num_threads(max((c.threads or 1 for c in cells), default=1))
    try:
        for cell in cells:
            cost = {"solve": 0.0, "reference": 0.0, "metrics": 0.0}
            try:
                _cell_cost(cal, cell, cost, seen, cache)
            except Exception:
                pass
            per_cell[cell.key] = sum(cost.values())
            for k, v in cost.items():
                totals[k] += v
    finally:
        torch.set_num_threads(threads)
    return Estimate(per_cell, totals["solve"], totals["reference"], totals["metrics"], jobs)


def _cell_cost(cal, cell, cost, seen, cache):
    """Add the cell's seconds to ``cost`` ({"solve", "reference", "metrics"}); ``seen``: the
    shapes warmed up and the shared results counted by earlier cells."""
    if cell.task == "likelihood":
        d, over = _dim(cal, cell), cal.overhead_s()
        nfe = 30 * max(1.0, 1e-2 / float(cell.options.get("rtol", 1e-3))) ** (1 / 5)
        ev64 = cal.eval_s(cell.model_id, cell.n, "float64", cell.device)
        cost["solve"] += nfe * ((1 + min(d, 512)) * ev64 * 2 + over)
        return
    costing = _costing(cal, cell)
    cost["solve"] += _timed_runs_s(cal, cell, costing, seen)
    floors = {}
    for metric in metrics_to_measure(cell):
        c = (metric.cost or metrics.default_cost)(metric, costing)
        cost["solve"] += c.get("solve", 0.0)
        cost["metrics"] += c.get("metrics", 0.0)
        floors[metric.name] = c.get("floor", 0.0)
    cost["reference"] += _shared_s(cal, cell, costing, floors, seen, cache)


def _costing(cal, cell) -> Costing:
    cls, opts = solvers.get(cell.solver), dict(cell.options)
    nfe = cls.expected_nfe(cell.steps, **opts) if cell.steps else None
    if not nfe:
        try:
            nfe = cal.adaptive_nfe(cell, cls, opts)
        except Exception:
            nfe = _adaptive_nfe(cls, opts)
    solve64 = float(nfe) * (cal.eval_s(cell.model_id, cell.n, "float64", cell.device) + cal.overhead_s())
    return Costing(cell, cls, opts, float(nfe), _dim(cal, cell), solve64, cal)


def _timed_runs_s(cal, cell, costing, seen) -> float:
    """The timed sampling calls, as ``time_adaptive`` makes them (one over ``LONG_S``, else up to
    ``repeats``), with one warm-up for a shape new to the process."""
    call = costing.nfe * (cal.eval_s(cell.model_id, cell.n, cell.dtype, cell.device) + cal.overhead_s())
    shape = ("warm", cell.solver, repr(sorted(costing.options.items())), cell.model_id, cell.exact_prior, cell.n,
             cell.dtype, cell.device)
    warm = 0 if shape in seen else min(cell.warmup, 1)
    seen.add(shape)
    runs = 1 + warm if call > LONG_S else min(cell.repeats, 3) + warm
    return runs * call


def _shared_s(cal, cell, costing, floors, seen, cache) -> float:
    """The shared results this cell is the first to need and the disk cache lacks: references
    (their calibrated NFE) and noise floors (``floors``: each metric's own cost of its floor)."""
    ev64, over, total = cal.eval_s(cell.model_id, cell.n, "float64", cell.device), cal.overhead_s(), 0.0
    for key in shared_keys(cell):
        if key in seen:
            continue
        seen.add(key)
        if have_shared(cache, key):
            continue
        kind = key[0]
        if kind in ("ode_ref", "ref_samples", "ode_ref_err"):  # a reference solve (of other x_T, at 10 rtol)
            rtol = float(cell.reference["ode_rtol"])
            total += cal.ode_ref_nfe(cell.model_id, cell.exact_prior, rtol) * (ev64 + over)
        elif kind == "sde_ref":
            total += int(key[-1]) * (ev64 + over + costing.path_step_s())
        elif kind == "floor":
            total += floors.get(key[-1], 0.0)
    return total
