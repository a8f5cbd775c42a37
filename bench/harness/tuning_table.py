"""Held-out error of tuned grids vs the best built-in grid, per solver, model and NFE.

    python -m bench.harness.tuning_table --models gmm2d-vp --nfe 5,10,20 --out results/tuning_table.md

For every deterministic fixed-step solver (or ``--solvers``), both methods of
``solvers.tune_grid`` on n=256 train x_T (seed 0) and ``--n-test`` held-out x_T; the ratio is
best built-in / tuned held-out median error. One thread. The float64 dopri8 references are
computed once per x_T set and shared by every row (passed as a teacher callable), so a row's
wall time is the tuning itself (dp's own 64-sample fine teacher path included) and the held-out
evaluation.
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import time

import torch

import solvers
from bench.zoo import models
from solvers.tuning import dopri8_teacher


def deterministic_fixed_step() -> list[str]:
    return [s for s in solvers.available()
            if not solvers.get(s).adaptive and solvers.get(s).kind == "ode" and not solvers.get(s).is_stochastic()]


class Teacher:
    """dopri8 references, memoised by x_T."""

    def __init__(self, model):
        self.model, self.memo = model, {}
        self.__name__ = "dopri8 float64 rtol=atol=1e-10 (memoised)"

    def __call__(self, x_T):
        key = hashlib.sha1(x_T.numpy().tobytes()).hexdigest()
        if key not in self.memo:
            self.memo[key] = dopri8_teacher(self.model, x_T)
        return self.memo[key]


HEADER = ("| model | solver | NFE | steps | best built-in | built-in test | search test | ratio | s | "
          "dp test | ratio | s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")


def row(model, name, nfe, teacher, n, n_test, budget):
    cls = solvers.get(name)
    steps = cls.steps_for_nfe(nfe)
    if steps < 1:
        return None
    out = {}
    for method in ("search", "dp"):
        kw = {"budget": budget} if budget and method == "search" else {}
        g = solvers.tune_grid(model, name, nfe=nfe, method=method, teacher=teacher, n=n, n_test=n_test, **kw)
        assert g.objective["train"] <= g.baseline["train"]
        out[method] = g
    g = out["search"]
    b = g.baseline
    cells = [model.name, name, str(g.nfe), str(steps), b["grid"], f"{b['test']:.3g}"]
    for m in ("search", "dp"):
        t = out[m]
        cells += [f"{t.objective['test']:.3g}", f"{b['test'] / t.objective['test']:.2f}x", f"{t.wall_s:.1f}"]
    return "| " + " | ".join(cells) + " |\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="gmm2d-vp")
    p.add_argument("--nfe", default="5,10,20")
    p.add_argument("--solvers", default=None, help="comma-separated (default: every deterministic fixed-step)")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--budget", type=int, default=None, help="search budget (default: tune_grid's)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    names = a.solvers.split(",") if a.solvers else deterministic_fixed_step()
    text = HEADER
    for mname in a.models.split(","):
        model = models.load(mname)
        teacher = Teacher(model)
        for nfe in (int(v) for v in a.nfe.split(",")):
            for name in names:
                t0 = time.perf_counter()
                line = row(model, name, nfe, teacher, a.n, a.n_test, a.budget)
                if line is None:
                    line = f"| {mname} | {name} | {nfe} | 0 | - | - | - | - | - | - | - | - |\n"
                text += line
                print(line.strip(), f"({time.perf_counter() - t0:.0f} s)", flush=True)
                if a.out:  # rewritten after every row: an interrupted run keeps its rows
                    pathlib.Path(a.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
