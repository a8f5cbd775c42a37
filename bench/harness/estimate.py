"""A run's cost before it starts: seconds per cell from the cell definitions.

    est = estimate(cells, cache_dir=None, jobs=1)
    est.total_s, est.solve_s, est.reference_s, est.metrics_s, est.cells[key], est.summary()

Model (rough by design; the progress line refines it with the cells' actual times):

- one network evaluation of each (model, batch, dtype, device) is timed once here (a few
  calls), and so is the per-evaluation loop overhead of a fixed-step solve;
- a sample cell's solving = (timed runs + warm-up) x NFE x (evaluation + overhead) plus its
  float64 discretization solve (dearer per step on the exact Brownian tree for stochastic
  solvers; none when the timed call already was float64), with NFE from
  ``Solver.expected_nfe``, or a guess from the tolerance for adaptive solvers;
- timed runs as ``bench.harness.timing.time_adaptive`` makes them: one for a call over 1 s,
  else up to ``repeats``;
- metrics: the distribution metrics timed once at a small batch and scaled as n^2;
- shared work (ODE/SDE references, exact sets, floors) counted once per run, on the first cell
  that needs it, and not at all when it is already in the disk cache;
- likelihood cells: a tolerance-based NFE guess x (1 + dimension) float64 evaluations.

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
from bench.harness.execute import disk_key, shared_keys
from bench.harness.timing import LONG_S
from bench.zoo import models

__all__ = ["estimate", "Estimate", "fmt_seconds"]

#: per-step cost of a float64 solve on the exact (dyadic-tree) Brownian path, beyond the network
EXACT_PATH_STEP_S = 4e-4


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


def _best(fn, k=3):
    fn()
    best = math.inf
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class _Calibration:
    """Network-evaluation and metric costs measured once, a few calls each."""

    def __init__(self):
        self.evals, self.metric_s, self._models, self._overhead = {}, {}, {}, None

    def model(self, name, exact_prior=False):
        key = (name, exact_prior)
        if key not in self._models:
            self._models[key] = models.load(name, exact_prior=exact_prior)
        return self._models[key]

    def eval_s(self, name, n, dtype, device="cpu"):
        key = (name, n, dtype, device)
        if key not in self.evals:
            m = self.model(name)
            x = m.sample_prior(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(
                device=device, dtype={"float32": torch.float32, "float64": torch.float64}[dtype])
            t = torch.full((n,), 0.5 * m.sde.T, dtype=x.dtype, device=x.device)
            self.evals[key] = _best(lambda: m.fn(x, t))
        return self.evals[key]

    def overhead_s(self):
        """Per-evaluation cost of the solver loop beyond the network (tiny batch, fixed steps)."""
        if self._overhead is None:
            m = self.model("gmm2d-vp")
            x = m.sample_prior(4, generator=torch.Generator().manual_seed(0))
            wall = _best(lambda: solvers.sample(m, "euler", steps=20, x_T=x))
            self._overhead = max(wall / 20 - self.eval_s("gmm2d-vp", 4, "float32"), 1e-5)
        return self._overhead

    def metrics_s(self, names, n, d):
        names = tuple(sorted(names))
        key = (names, n, d)
        if key not in self.metric_s:
            small = min(n, 500)
            g = torch.Generator().manual_seed(0)
            x, y = (torch.randn(small, d, generator=g, dtype=torch.float64) for _ in range(2))
            t = _best(lambda: metrics.distribution_metrics(x, y, names), k=1)
            self.metric_s[key] = t * (n / small) ** 2
        return self.metric_s[key]


def _adaptive_nfe(cls, options) -> float:
    rtol = float(options.get("rtol", 1e-3))
    per_step = 2 if cls.kind != "ode" else 6
    return per_step * 8 * max(1.0, 1e-2 / rtol) ** (1 / 4)


def _dim(cal, cell):
    return int(math.prod(getattr(cal.model(cell.model), "shape", (2,)) or (2,)))


def estimate(cells, cache_dir=None, jobs: int = 1) -> Estimate:
    """Estimated seconds for ``cells`` (see the module docstring)."""
    cal, per_cell, seen = _Calibration(), {}, set()
    cache = DiskCache(cache_dir, create=False) if cache_dir else None
    totals = {"solve": 0.0, "reference": 0.0, "metrics": 0.0}
    for cell in cells:
        cost = {"solve": 0.0, "reference": 0.0, "metrics": 0.0}
        try:
            _cell_cost(cal, cell, cost, seen, cache)
        except Exception:  # noqa: BLE001 - an estimate never stops a run; the cell reports its own error
            pass
        per_cell[cell.key] = sum(cost.values())
        for k, v in cost.items():
            totals[k] += v
    return Estimate(per_cell, totals["solve"], totals["reference"], totals["metrics"], jobs)


def _cell_cost(cal, cell, cost, seen, cache):
    d = _dim(cal, cell)
    over = cal.overhead_s()
    ev64 = cal.eval_s(cell.model, cell.n, "float64", cell.device)
    if cell.task == "likelihood":
        nfe = 30 * max(1.0, 1e-2 / float(cell.options.get("rtol", 1e-3))) ** (1 / 5)
        cost["solve"] += nfe * ((1 + min(d, 512)) * ev64 * 2 + over)
        return
    cls, opts = solvers.get(cell.solver), dict(cell.options)
    stochastic = bool(cls.is_stochastic(**opts))
    nfe = cls.expected_nfe(cell.steps, **opts) if cell.steps else None
    nfe = float(nfe) if nfe else _adaptive_nfe(cls, opts)
    ev = cal.eval_s(cell.model, cell.n, cell.dtype, cell.device)
    call = nfe * (ev + over)
    runs = 1 + (1 if cell.warmup else 0) if call > LONG_S else min(cell.repeats, 3) + min(cell.warmup, 1)
    cost["solve"] += runs * call
    names = [m for m in cell.metrics if m in metrics.METRICS and metrics.get_metric(m).applies_to(
        models.is_exact(cell.model), getattr(cal.model(cell.model), "data", None))]
    if "discretization" in names and not (cell.dtype == "float64" and not stochastic):
        steps = cell.steps or nfe
        cost["solve"] += nfe * (ev64 + over) + (steps * EXACT_PATH_STEP_S if stochastic else 0.0)
    dist = [m for m in names if metrics.get_metric(m).fn is not None and not (m == "w2" and cell.n > metrics.W2_MAX_N)]
    if dist:
        cost["metrics"] += cal.metrics_s(dist, cell.n, d)
    for key in shared_keys(cell):
        if key in seen:
            continue
        seen.add(key)
        if cache is not None and cache.contains(disk_key(key)):
            continue
        kind = key[0]
        if kind == "ode_ref":
            rtol = float(key[-1])
            cost["reference"] += 13 * 6 * max(1.0, 1 / rtol) ** (1 / 8) * (ev64 + 3 * over)
        elif kind == "sde_ref":
            cost["reference"] += int(key[-1]) * (ev64 + over + EXACT_PATH_STEP_S)
        elif kind == "floor":
            cost["reference"] += cal.metrics_s([key[-1]], cell.n, d)
        elif kind == "fd_floor":
            cost["reference"] += 1.0
