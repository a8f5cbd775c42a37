"""CUDA-graph replay of the fixed-step sampling loop (``solvers.sample(..., graph=True)``).

The loop of a fixed-step solver launches the same kernels on every call with the same grid: a
CUDA graph records them once and replays them with one launch (PyTorch "CUDA Graphs",
``torch.cuda.CUDAGraph``: warm up on a side stream, capture under ``torch.cuda.graph``, then
``replay()`` on static input/output buffers). A capture is cached per (model, solver, options,
grid, shape, dtype, device). Its randomness cannot be drawn inside the graph from the call's
generators, so the call's normals are drawn on the device *before* each replay, into static
``NormalTape`` buffers, in the order and with the generators an eager call uses: same seed,
same samples as eager (within float rounding).

The pieces that do not need a GPU are ``count_draws`` and ``pregenerated`` (the loop the graph
records, run eagerly on tapes): the tests check on CPU that it gives the eager samples. The
capture itself (``Captured``) is thin: buffers, one warm-up, ``torch.cuda.graph``, ``replay``.

This module works on a ``solvers.sampling.Call`` it is handed (``sample(..., graph=True)`` calls
``captured(call).run(call)``); it does not import ``sampling``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from .errors import InputError
from .noise import NormalTape, StepNoise

__all__ = ["check", "count_draws", "draw_normals", "run_with_normals", "pregenerated", "captured", "Captured",
           "clear_cache"]

CACHE_SIZE = 8
_GRAPHS: OrderedDict = OrderedDict()


def clear_cache():
    """Release every captured graph (and its static buffers)."""
    _GRAPHS.clear()


def check(call, *, device_check: bool = True, trajectory: bool = False):
    """Raise InputError where a call cannot be replayed as a graph."""
    cls, x = call.cls, call.x
    if device_check and x.device.type != "cuda":
        raise InputError(f"graph=True replays a CUDA graph; it needs device='cuda' (x_T is on {x.device})")
    if cls.adaptive:
        raise InputError(f"graph=True needs a fixed-step solver; {cls.name!r} is adaptive (its steps depend "
                         "on the values, which a graph cannot branch on)")
    if call.brownian is not None:
        raise InputError("graph=True draws the noise from the seed (StepNoise); brownian= paths are queried "
                         "on the host and cannot be captured")
    if trajectory:
        raise InputError("graph=True returns the final state only; use an eager call for return_trajectory")
    probe = call.plan()
    if probe.uses_brownian and probe.needs_path:
        raise InputError(f"graph=True: solver {cls.name!r} queries a Brownian path (torchsde) on the host; "
                         "it cannot be captured")


def _streams(call):
    """The eager call's two sources of normals, freshly seeded: step noise, corrector noise."""
    return call.step_stream(), call.corrector_stream()


def _instance(call, step_src, corr_src):
    x = call.x
    noise = StepNoise(step_src, x.shape, t0=call.model.sde.eps, t1=call.model.sde.T, seed=call.seed,
                      dtype=x.dtype, device=x.device)
    return call.instance(noise=noise, corrector=corr_src)


def count_draws(call):
    """Run the loop once eagerly (not counted in NFE); return (step draws, corrector draws, NFE, output)."""
    step_src, corr_src = _streams(call)
    nfe0 = call.model.nfe
    try:
        out = call.loop(_instance(call, step_src, corr_src), call.x)
        return step_src.count, corr_src.count, call.model.nfe - nfe0, out
    finally:
        call.model.nfe = nfe0


def _tapes(call, n_step, n_corr):
    x = call.x
    return (NormalTape.empty(n_step, x.shape, x.dtype, x.device),
            NormalTape.empty(n_corr, x.shape, x.dtype, x.device))


def _fill(call, tapes):
    step_src, corr_src = _streams(call)
    tapes[0].fill(step_src)
    tapes[1].fill(corr_src)


def draw_normals(call):
    """The normals an eager call draws, made beforehand: (step normals, corrector normals), each
    a (draws, *shape) tensor on the call's device."""
    n_step, n_corr, _, _ = count_draws(call)
    tapes = _tapes(call, n_step, n_corr)
    _fill(call, tapes)
    return tapes[0].buffer, tapes[1].buffer


def run_with_normals(call, step_normals: torch.Tensor, corrector_normals: torch.Tensor) -> torch.Tensor:
    """The loop on given normals (moved to the call's device and dtype): what a graph replays,
    and how the CUDA tests give a CPU and a CUDA call the same noise. NFE counted as usual."""
    x = call.x
    tapes = [NormalTape(b.to(device=x.device, dtype=x.dtype)) for b in (step_normals, corrector_normals)]
    return call.loop(_instance(call, *tapes), x)


def pregenerated(call) -> torch.Tensor:
    """The loop a graph records, run eagerly on normals drawn beforehand: the eager samples."""
    return run_with_normals(call, *draw_normals(call))


class Captured:
    """One captured loop: static input, tapes, output, and the NFE one replay stands for."""

    def __init__(self, call):
        x = call.x
        self.static_x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (lazy init, autotuning, compile) off the capture stream
            n_step, n_corr, self.nfe, _ = count_draws(call)
        torch.cuda.current_stream().wait_stream(side)
        self.tapes = _tapes(call, n_step, n_corr)
        _fill(call, self.tapes)
        self.graph = torch.cuda.CUDAGraph()
        nfe0 = call.model.nfe
        try:
            inst = _instance(call, *self.tapes)
            with torch.cuda.graph(self.graph):
                self.static_out = call.loop(inst, self.static_x)
        finally:
            call.model.nfe = nfe0  # the capture records; it evaluates nothing
        self.inst = inst

    def run(self, call) -> torch.Tensor:
        self.static_x.copy_(call.x)
        _fill(call, self.tapes)
        self.graph.replay()
        call.model.nfe += self.nfe
        return self.static_out.clone()


def captured(call, *, trajectory: bool = False) -> Captured:
    """The cached capture of ``call``'s loop (made on first use); ``.run(call)`` replays it and
    ``.inst`` is the solver instance captured."""
    check(call, trajectory=trajectory)
    x = call.x
    key = (call.model, call.cls, repr(sorted(call.options.items())), call.times.numpy().tobytes(),
           tuple(x.shape), x.dtype, str(x.device))
    cap = _GRAPHS.get(key)
    if cap is None:
        cap = _GRAPHS[key] = Captured(call)
        if len(_GRAPHS) > CACHE_SIZE:
            _GRAPHS.popitem(last=False)
    else:
        _GRAPHS.move_to_end(key)
    return cap
