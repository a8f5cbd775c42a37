import os

import pytest
import torch

import solvers
from bench.harness.suite import import_plugins
from bench.zoo import models

# The tests' batches are small: one thread is fastest, and on a loaded machine more threads than
# free cores make BLAS/OpenMP wait on descheduled peers (50-100x slowdowns seen here).
torch.set_num_threads(1)

# Your own solvers join every registry-driven test (NFE, float64, orders):
#   SDEBENCH_PLUGINS=my_package.my_solvers make test
import_plugins([m for m in os.environ.get("SDEBENCH_PLUGINS", "").split(",") if m])


def solver_cases():
    """(name, options) for every registered solver and each of its declared variants."""
    for name in solvers.available():
        cls = solvers.get(name)
        for opts in ({}, *cls.variants):
            yield name, dict(opts)


def case_id(case):
    name, opts = case
    return name + "".join(f"-{k}={v}" for k, v in opts.items())


class CountingFn:
    """An independent count of network evaluations."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


@pytest.fixture
def gmm2d_vp():
    return models.load("gmm2d-vp")


@pytest.fixture
def x_T64(gmm2d_vp):
    return gmm2d_vp.sample_prior(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
