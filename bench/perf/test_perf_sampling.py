"""pytest-benchmark cases: fixed-step sampling of the 2-D mixture vs bare network evaluations.

Each sampling case records, in extra_info, its NFE and the overhead ratio
wall / (NFE x one network evaluation), measured in pairs: a call of the sampler, then NFE bare
evaluations of the network on the same batch, repeated, and the median of the per-pair ratios
(timing the two apart, minutes or even seconds later, lets CPU-frequency and cache drift between
them move the ratio by +-30% at batch 1,000). ``overhead_iqr`` is the interquartile range of the
pairs. The physical limit of the ratio is 1.

    make bench          # or: pytest bench/perf --benchmark-enable --benchmark-only
"""
import os
import statistics
import time

import pytest
import torch

import solvers
from bench.harness.suite import import_plugins
from bench.zoo import models

# SDEBENCH_PLUGINS=my_package.my_solvers SDEBENCH_PERF_SOLVERS=my_solver make bench
import_plugins([m for m in os.environ.get("SDEBENCH_PLUGINS", "").split(",") if m])
# one thread by default: more threads than free cores make CPU timings meaningless
torch.set_num_threads(int(os.environ.get("SDEBENCH_THREADS", "1")))
SOLVERS = ["euler", "heun", "ddim", "euler_maruyama", "dpmpp_2m", "unipc", "dpm_solver_3"] + [
    s for s in os.environ.get("SDEBENCH_PERF_SOLVERS", "").split(",") if s]
BATCHES = [1_000, 100_000]
STEPS = [50, 10]


def _available(name):
    return name in solvers.available()


def _setup(batch):
    m = models.load("gmm2d-vp")
    x_T = m.sample_prior(batch, generator=torch.Generator().manual_seed(0))
    return m, x_T


def _paired_overhead(run, m, x_T, nfe, pairs):
    """(median, interquartile range) over ``pairs`` of: one sampler call / its NFE bare evaluations,
    timed back to back; and the median seconds of one bare evaluation."""
    t = torch.tensor(0.5).expand(x_T.shape[0])
    ratios, evals = [], []
    for _ in range(pairs):
        t0 = time.perf_counter()
        run()
        t1 = time.perf_counter()
        for _ in range(nfe):
            m.fn(x_T, t)
        t2 = time.perf_counter()
        ratios.append((t1 - t0) / (t2 - t1))
        evals.append((t2 - t1) / nfe)
    q = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), q[2] - q[0], statistics.median(evals)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("name", SOLVERS)
def test_sampling(benchmark, name, steps, batch):
    if not _available(name):
        pytest.skip(f"{name} is not registered")
    if steps == 10 and name in ("euler", "heun", "ddim", "euler_maruyama", *SOLVERS[7:]):
        pytest.skip("classic solvers are tracked at 50 steps")
    m, x_T = _setup(batch)
    benchmark.group = f"sample gmm2d-vp batch={batch} steps={steps}"
    run = lambda: solvers.sample(m, name, steps=steps, x_T=x_T, seed=0)  # noqa: E731
    out = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    ratio, iqr, one = _paired_overhead(run, m, x_T, out.nfe, pairs=15 if batch <= 10_000 else 5)
    benchmark.extra_info.update(nfe=out.nfe, one_eval_s=one, overhead=ratio, overhead_iqr=iqr,
                                device=str(x_T.device), threads=torch.get_num_threads())


@pytest.mark.parametrize("batch", BATCHES)
def test_bare_evaluations(benchmark, batch):
    """50 bare network evaluations: the floor every 50-NFE sampler is compared with."""
    m, x_T = _setup(batch)
    t = torch.tensor(0.5).expand(batch)
    benchmark.group = f"sample gmm2d-vp batch={batch} steps=50"

    def run():
        for _ in range(50):
            m.fn(x_T, t)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(nfe=50, overhead=1.0, device="cpu", threads=torch.get_num_threads())
