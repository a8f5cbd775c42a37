"""``sdebench tune MODEL SOLVER --nfe N``: tune a solver's time grid for a model, compare it with
every built-in grid (train and held-out error), and save it as JSON (``solvers.load_grid``)."""
from __future__ import annotations

import pathlib
import sys
import time

import torch

import solvers
from bench.cli.common import add_model, add_threads, check_output, count, model_dim, positive_int, seed_int, step_count
from bench.harness import limits
from bench.harness.tuned import DEFAULT_METHOD, tunable
from bench.report.render import slug
from bench.zoo import models
from solvers.tuning import (
    METHODS,
    TEACHER,
    TEST_SEED_OFFSET,
    Objective,
    _builtins,
    dopri8_teacher,
)

__all__ = ["default_path", "register", "tune"]

GRIDS_DIR = pathlib.Path("results") / "grids"


class _Teacher:
    """The default dopri8 teacher, remembering its answers so that the built-in grids' held-out
    errors reuse the tuning's references (no second teacher solve)."""

    __name__ = f"dopri8 float64 rtol=atol={TEACHER['rtol']:g}"

    def __init__(self, model, stream):
        self.model, self.stream, self.memo = model, stream, {}

    def __call__(self, x_T):
        key = x_T.numpy().tobytes()
        if key not in self.memo:
            t0 = time.perf_counter()
            self.memo[key] = dopri8_teacher(self.model, x_T)
            self.stream.write(f"  teacher: {len(x_T)} float64 dopri8 solves in {time.perf_counter() - t0:.1f} s\n")
            self.stream.flush()
        return self.memo[key]


def default_path(model: str, solver: str, nfe: int, method: str, seed: int) -> pathlib.Path:
    """results/grids/<model>_<solver>_nfe<N>_<method>[_seed<S>].json (a spec's path and
    settings made a file-name part)"""
    tail = f"_seed{seed}" if seed else ""
    return GRIDS_DIR / f"{slug(model)}_{solver}_nfe{nfe}_{method}{tail}.json"


def _fmt(v):
    return "-" if v is None else f"{v:.4g}"


def _check(args, model, cls) -> pathlib.Path:
    """Everything about the request that can be refused before the teacher runs; the output path."""
    if args.model == models.TIMING_ONLY:
        raise solvers.InputError(f"model {args.model!r} is timing-only (random weights): a grid tuned to it means "
                                 "nothing; tune a trained or exact model (sdebench list models)")
    why = tunable(cls, {})
    if why:
        raise solvers.InputError(f"no tuned grid: {why}")
    steps = cls.steps_for_nfe(args.nfe)
    if steps < 1:
        raise solvers.InputError(f"--nfe {args.nfe} does not pay for one step of {cls.name} "
                                 f"({cls.expected_nfe(1)} NFE per step)")
    limits.check_fits(f"tuning {cls.name} at --nfe {args.nfe} ({steps} steps) on --n {args.n} x_T of {args.model}",
                      limits.tuning_bytes(args.n, model_dim(model), steps, args.method, args.budget),
                      "lower --nfe or --n")
    out = pathlib.Path(args.out) if args.out else default_path(args.model, cls.name, args.nfe, args.method, args.seed)
    check_output(out, "--out")
    if out.exists() and not out.is_file():
        raise solvers.InputError(f"--out {out}: not a regular file (a directory?); --out names the grid's JSON file")
    if out.exists() and not args.force:
        raise solvers.InputError(f"{out} exists; pass --force to overwrite it or --out another file")
    return out


def tune(args) -> int:
    err = sys.stderr
    model = models.load(args.model, exact_prior=models.is_exact(args.model))
    cls = solvers.get(args.solver)
    out = _check(args, model, cls)
    teacher = _Teacher(model, err)
    err.write(f"tuning {cls.name} on {args.model} at nfe={args.nfe} (method {args.method}, {args.n} train + "
              f"{args.n} held-out x_T, seed {args.seed}) ...\n")
    err.flush()
    t0 = time.perf_counter()
    g = solvers.tune_grid(model, cls.name, nfe=args.nfe, method=args.method, teacher=teacher, n=args.n,
                          seed=args.seed, **({"budget": args.budget} if args.budget else {}))
    err.write(f"  tuned in {time.perf_counter() - t0:.1f} s ({g.cost_nfe} NFE, teacher included)\n")
    err.flush()
    x_test = model.sample_prior(args.n, generator=torch.Generator().manual_seed(args.seed + TEST_SEED_OFFSET),
                                dtype=torch.float64)
    held = Objective(model, cls, g.options, x_test, teacher(x_test))
    rows = []
    for name, times in _builtins(model, g.steps).items():
        rows.append([name, g.baseline["train_all"].get(name), held(times), g.nfe, "", ""])
    rows.sort(key=lambda r: (r[1] is None, r[1]))
    best = g.baseline["grid"]
    rows = [[r[0] + (" (best built-in)" if r[0] == best else ""), *r[1:]] for r in rows]
    rows.append([f"tuned ({g.method})", g.objective["train"], g.objective["test"], g.nfe, g.cost_nfe, g.wall_s])
    g.save(_make_parent(out))
    head = ["grid", "train error", "held-out error", "NFE", "tuning NFE", "tuning s"]
    cells = [[str(r[0]), _fmt(r[1]), _fmt(r[2]), str(r[3]), str(r[4]), f"{r[5]:.1f}" if r[5] != "" else ""]
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    print(f"{cls.name} on {args.model}, {g.steps} steps = {g.nfe} NFE; error = median over x_T of "
          f"|x - x_ref| / sqrt(d) against the float64 dopri8 teacher")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))
    ratio = g.objective["test"] / g.baseline["test"] if g.baseline["test"] else float("nan")
    print(f"held-out error: tuned / best built-in ({best}) = {ratio:.3f}")
    print(f"grid written to {out}  (use: grid = \"{out}\" in a suite, or solvers.load_grid)")
    return 0


def _make_parent(path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def register(sub):
    p = sub.add_parser("tune", help="tune a solver's time grid for a model against a teacher; save it as JSON")
    add_model(p)
    p.add_argument("solver", help="a deterministic fixed-step solver (sdebench list solvers)")
    p.add_argument("--nfe", type=step_count, required=True, help="NFE budget (steps = the most that fit)")
    p.add_argument("--method", choices=sorted(METHODS), default=DEFAULT_METHOD,
                   help="dp (dynamic programming on a fine teacher grid, seconds) or search (Powell, minutes); "
                        "default %(default)s")
    p.add_argument("--out", help="where to write the grid "
                   "(default results/grids/<model>_<solver>_nfe<N>_<method>.json)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the train x_T (held-out: seed + 1000003)")
    p.add_argument("--n", type=count(2), default=256, help="train (and held-out) x_T (default %(default)s)")
    p.add_argument("--budget", type=positive_int, default=None,
                   help="the method's budget (tune_grid's default if unset)")
    add_threads(p)
    p.set_defaults(fn=tune)
