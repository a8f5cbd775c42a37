"""Sizes a command may ask for, checked before anything is allocated.

    N_MAX, TOL_MIN                               the largest sample count, the smallest tolerance
    check_fits(what, need_bytes, fix)            InputError when ``need`` exceeds the free memory
    WORKER_BYTES                                 one worker process of ``run --jobs N``
    sample_bytes(n, d, metrics)                  a sampling cell: its states and its dearest metric
    likelihood_bytes(n, d, trace, probes)        an ODE log-likelihood of n points
    tuning_bytes(n, d, steps, method, budget)    ``solvers.tune_grid`` (train + held-out sets, dp's table)

The byte counts are rough: float64 throughout, with the solvers' stages, the references and
the models' intermediates counted as ``STATE_COPIES`` copies of the state plus ``PER_SAMPLE``
bytes (measured peaks of cells on gmm2d-vp and gmm64-vp, n = 4,000-200,000: 0.8-1.05 x these
counts). They exist to refuse with one line a size that cannot fit, before the first
allocation, instead of being killed for memory minutes later; they are not a prediction of the
peak. Free memory: ``MemAvailable`` (Linux), within a cgroup's limit where one is set.
"""
from __future__ import annotations

import math
import os
import pathlib

from solvers import InputError

__all__ = ["N_MAX", "STEPS_MAX", "CELLS_MAX", "TOL_MIN", "WORKER_BYTES", "available_bytes", "check_fits", "fmt_bytes",
           "sample_bytes", "likelihood_bytes", "tuning_bytes"]

#: the most samples (or points, or x_T) any command or suite accepts
N_MAX = 10**9
#: the most steps (or NFE) any command or suite accepts: a grid of 10^6 intervals is already ~1000x
#: finer than any sampler is run at, and set-up work over a grid is O(steps) in Python
STEPS_MAX = 10**6
#: the most cells a suite may define (the full suite has 6,909; building 10^5 cells takes about a minute)
CELLS_MAX = 10**5
#: the smallest rtol/atol accepted for an ODE solve: float64 resolves ~2e-16 relative, and a tighter
#: tolerance only makes torchdiffeq take ever smaller steps (a likelihood at 1e-30 never ends)
TOL_MIN = 1e-14
#: float64 copies of the (n, d) state a sampling cell holds at once: x_T, samples, references,
#: target and floor sets, the stages of the reference solver (dopri8: 13), the model's intermediates
STATE_COPIES = 64
#: bytes per sample besides (per-sample errors, indices, the mixtures' per-component terms)
PER_SAMPLE = 1024
#: float64 arrays over a time grid that a solve precomputes (times, alpha, sigma, lambda, coefficients)
GRID_ARRAYS = 32
#: resident memory of one worker process before its cells' data (python, torch, the harness: ~370 MB measured)
WORKER_BYTES = 500e6
_PROJECTIONS = 256  # sliced W2's projections (bench.harness.metrics.sliced_wasserstein)


def fmt_bytes(b: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if b < 1000 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "bytes" else f"{b:.3g} {unit}"
        b /= 1000
    return f"{b:.3g} PB"  # pragma: no cover


def _cgroup_free() -> float:
    try:
        limit = pathlib.Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(pathlib.Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return math.inf
    return math.inf if limit == "max" else max(int(limit) - used, 0)


def available_bytes() -> float:
    """Memory this process can still take: MemAvailable (within a cgroup's limit), else the free
    pages; inf when the system does not say."""
    free = math.inf
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    return min(free, _cgroup_free())


def check_fits(what: str, need: float, fix: str):
    """InputError "``what`` needs about X of memory, more than the Y free here; ``fix``"."""
    free = available_bytes()
    if need > free:
        raise InputError(f"{what} needs about {fmt_bytes(need)} of memory, more than the {fmt_bytes(free)} free "
                         f"here; {fix}")


def sample_bytes(n: int, d: int, metrics=(), steps: int = 0) -> float:
    """A sampling cell of n samples in d dimensions measuring ``metrics`` over ``steps`` steps: its
    states, the dearest metric (sliced W2 with its bootstrap: ~12 (n x 256) arrays; MMD^2 / energy
    distance: ~5 pooled (2n x 2n) matrices) and the grid's float64 arrays (times, schedule,
    coefficients: ``GRID_ARRAYS`` of them)."""
    extra = 0.0
    if "sliced_w2" in metrics:
        extra = 12 * n * _PROJECTIONS * 8
    if "mmd2" in metrics or "energy" in metrics:
        extra = max(extra, 5 * (2 * n) ** 2 * 8)
    return n * (STATE_COPIES * d * 8 + PER_SAMPLE) + extra + GRID_ARRAYS * (steps or 0) * 8


def likelihood_bytes(n: int, d: int, trace: str = "exact", probes: int = 1) -> float:
    """An ODE log-likelihood of n points: the adaptive solver's stages on (n, d + 1) and the
    trace's batched vector-Jacobian products (exact: 64 directions at a time) with their graphs
    (measured: gmm2d-vp at n = 20,000 and gmm64-vp at n = 300, 0.9-1.0 x this count)."""
    directions = min(d, 64) if trace == "exact" else probes
    return n * (STATE_COPIES * (d + 1) * 8 + 4 * PER_SAMPLE + 16 * directions * d * 8)


def tuning_bytes(n: int, d: int, steps: int, method: str, budget: int | None = None) -> float:
    """``tune_grid`` with n train (and n held-out) x_T: their states and teacher solutions, and
    for ``dp`` its table of student states, (steps + 1) x (M + 1) x min(n, 64) x d with M = k steps
    fine intervals, k = max(2, ceil(budget / steps)) (``solvers.tuning.dp``)."""
    need = 2 * n * (STATE_COPIES * d * 8 + PER_SAMPLE)
    if method == "dp":
        k = max(2, -(-(budget or 64) // steps))
        fine = steps * k + 1
        need += ((steps + 1) * fine + fine) * min(n, 64) * d * 8
    return need
