"""Wall-time and memory measurement.

CPU: ``time.perf_counter`` around the call. CUDA: CUDA events recorded around the call on the
current stream, then ``torch.cuda.synchronize`` before reading them. Median and spread over
``repeats`` runs after ``warmup`` untimed runs. Peak memory: CUDA ``max_memory_allocated``
(reset before the timed runs); CPU the process's max resident set size (ru_maxrss, a
high-water mark of the whole process, so it only grows across cells).
"""
from __future__ import annotations

import resource
import statistics
import sys
import time

import torch

__all__ = ["time_call", "peak_memory_bytes", "reset_peak_memory"]


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


def time_call(fn, *, repeats: int = 3, warmup: int = 1, device="cpu"):
    """Run ``fn`` warmup + repeats times; return (last result, stats dict in seconds)."""
    device = _check_device(device)
    result = None
    for _ in range(warmup):
        result = fn()
    reset_peak_memory(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
    stats = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
             "repeats": repeats, "peak_mem_bytes": peak_memory_bytes(device)}
    return result, stats
