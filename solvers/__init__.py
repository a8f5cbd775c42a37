"""Numerical solvers for score-based diffusion models behind one interface.

    import solvers
    model = solvers.ScoreModel(fn, solvers.VP(), prediction="eps", shape=(2,))
    out = solvers.sample(model, "heun", steps=20, n=1000, seed=0)
    out.x, out.nfe, out.times

``solvers.available()`` lists the registered solvers, ``solvers.get(name)`` gives a solver
class with its metadata and its options (``option_specs()``: ``solvers.Option`` declarations),
``solvers.register`` adds your own; ``solvers.tune_grid`` tunes a time grid to a (model, solver, NFE).
"""
from . import (  # noqa: F401
               adaptive,
               ddim,
               dpm_solver,
               edm,
               graph,
               langevin,
               multistep,
               ode,
               reverse_sde,
               torchsde_solvers,  # (importing registers the built-in solvers)
)
from .base import Nodes, Solver
from .errors import InputError, NonFiniteError, StepLimitError
from .grids import GRIDS, check_times, make_grid
from .likelihood import Likelihood, decode, encode, log_likelihood
from .model import PREDICTIONS, ScoreModel
from .noise import BrownianPath, CounterBrownianPath, StepNoise
from .options import Option
from .registry import available, get, register
from .sampling import Sample, clear_caches, sample
from .sde import EDM, SDE, SDES, VE, VP, DiscreteVP, SubVP
from .tuning import TunedGrid, load_grid, tune_grid

__all__ = [
    "sample", "Sample", "available", "get", "register", "Solver", "Option", "Nodes", "ScoreModel", "PREDICTIONS",
    "SDE", "VP", "SubVP", "VE", "EDM", "DiscreteVP", "SDES", "GRIDS", "make_grid", "check_times",
    "BrownianPath", "CounterBrownianPath", "StepNoise", "InputError", "NonFiniteError", "StepLimitError",
    "log_likelihood", "encode", "decode", "Likelihood", "tune_grid", "TunedGrid", "load_grid", "clear_caches",
]
