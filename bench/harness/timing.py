"""Wall-time and memory measurement.

CPU: ``time.perf_counter`` around the call. CUDA: CUDA events recorded around the call on the
current stream, then ``torch.cuda.synchronize`` before reading them. Median and spread over
``repeats`` runs after ``warmup`` untimed runs. Peak memory: CUDA ``max_memory_allocated``
(reset before the timed runs); CPU the process's max resident set size (ru_maxrss, a
high-water mark of the whole process, so it only grows across cells).
"""
from __future__ import annotations

import math
import resource
import statistics
import sys
import time

import torch

__all__ = ["time_call", "time_adaptive", "peak_memory_bytes", "reset_peak_memory", "LONG_S", "RTOL"]

#: a call longer than this (seconds) is timed once
LONG_S = 1.0
#: short calls are repeated until the median's relative standard error is at most this
RTOL = 0.05

_WARM: set = set()  # shapes already run in this process


def _check_device(device):
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("timing on cuda requested but CUDA is not available")
    return device


def reset_peak_memory(device):
    device = _check_device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device) -> int:
    device = _check_device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _timed(fn, device):
    """(result, seconds) of one run."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize(device)
        return result, start.elapsed_time(end) / 1000
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def _rse(times) -> float:
    """Relative standard error of the median (normal approximation: 1.2533 sigma / sqrt(k))."""
    if len(times) < 2:
        return math.nan
    med = statistics.median(times)
    return 1.2533 * statistics.stdev(times) / len(times) ** 0.5 / med if med > 0 else math.inf


def _stats(times, warmups, device, rtol):
    rse = _rse(times)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeats": len(times), "warmup": warmups, "rse": rse, "stable": bool(rse <= rtol),
            "peak_mem_bytes": peak_memory_bytes(device)}


def time_call(fn, *, repeats: int = 3, warmup: int = 1, device="cpu"):
    """Run ``fn`` warmup + repeats times; return (last result, stats dict in seconds)."""
    device = _check_device(device)
    result = None
    for _ in range(warmup):
        result = fn()
    reset_peak_memory(device)
    times = []
    for _ in range(repeats):
        result, t = _timed(fn, device)
        times.append(t)
    return result, _stats(times, warmup, device, math.inf)


def time_adaptive(fn, *, repeats: int = 10, warmup: int = 1, device="cpu", shape_key=None, rtol: float = RTOL,
                  long_s: float = LONG_S, min_repeats: int = 3, budget_s: float = 2.0):
    """Time ``fn`` with as many runs as it needs (see the module docstring); return
    (last result, stats dict in seconds)."""
    device = _check_device(device)
    result, warmups = None, 0
    if shape_key is None or shape_key not in _WARM:
        for _ in range(warmup):
            result, t = _timed(fn, device)
            warmups += 1
            if t > long_s:
                break
    if shape_key is not None and warmup > 0:
        _WARM.add(shape_key)
    reset_peak_memory(device)
    times: list = []
    while len(times) < max(repeats, 1):
        result, t = _timed(fn, device)
        times.append(t)
        k = len(times)
        if t > long_s or sum(times) >= budget_s:
            break
        if k >= min(min_repeats, repeats) and _rse(times) <= rtol:
            break
    return result, _stats(times, warmups, device, rtol)
