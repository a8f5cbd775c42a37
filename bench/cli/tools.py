"""One-off commands on one model: demo, describe, sample, likelihood (train: ``bench.cli.train``)."""
from __future__ import annotations

import time

import pandas as pd
import torch

import solvers
from bench.cli.common import (
    add_model,
    add_threads,
    check_sample_memory,
    model_dim,
    number,
    positive_int,
    sample_count,
    seed_int,
    solver_option,
    step_count,
    target_size,
)
from bench.cli.common import exact_target as _exact_target
from bench.harness import limits, metrics
from bench.harness.reference import brownian_path_for, ode_reference, path_kind, sde_reference
from bench.zoo import models


def _row(model, name, opts, budget, x_T, ode_ref, sde_refs, target, seed):
    cls = solvers.get(name)
    steps = None if cls.adaptive else cls.steps_for_nfe(budget, **opts)
    if steps is not None and steps < 1:
        return None
    path, sde_ref = sde_refs(cls)
    out = solvers.sample(model, name, steps=steps, x_T=x_T, seed=seed, brownian=path, **opts)
    nan = float("nan")
    inst_noise = cls.is_stochastic(**opts) and name not in solvers.available("corrector")
    return {
        "solver": name + "".join(f" {k}={v}" for k, v in opts.items()),
        "kind": cls.kind, "budget": "adaptive" if cls.adaptive else budget, "steps": out.steps, "nfe": out.nfe,
        "ode_error": nan if cls.is_stochastic(**opts) else metrics.discretization_error(out.x, ode_ref),
        "sde_error": metrics.discretization_error(out.x, sde_ref) if inst_noise else nan,
        "sliced_w2": metrics.sliced_wasserstein(out.x, target),
    }


def demo(args) -> int:
    torch.set_num_threads(args.threads)
    model = models.load(args.model, exact_prior=True)
    check_sample_memory(model, args.n, max(args.nfe))
    g = torch.Generator().manual_seed(args.seed)
    x_T = model.sample_prior(args.n, generator=g, dtype=torch.float64)
    print(f"sdebench demo: {model.name} ({model.sde!r}), n={args.n}, x_T from the exact p_T, seed={args.seed}",
          flush=True)
    ode_ref, shared = ode_reference(model, x_T), {}

    def sde_refs(cls):  # one Brownian path per kind the solvers query, and the reference on it
        kind = path_kind(cls)
        if kind not in shared:
            p = brownian_path_for(cls, model.sde, x_T.shape, seed=args.seed, dtype=x_T.dtype)
            shared[kind] = (p, sde_reference(model, x_T, p, steps=4096))
        return shared[kind]

    target = _exact_target(model, args.n, args.seed)
    floor = metrics.sliced_wasserstein(_exact_target(model, args.n, args.seed + 100), target)
    rows = []
    names = solvers.available()
    for i, name in enumerate(names):
        for budget in args.nfe[:1] if solvers.get(name).adaptive else args.nfe:
            row = _row(model, name, {}, budget, x_T, ode_ref, sde_refs, target, args.seed)
            if row:
                rows.append(row)
        print(f"  [{i + 1}/{len(names)}] {name}", flush=True)
    df = pd.DataFrame(rows)
    df["resolved"] = df["sliced_w2"] > floor
    with pd.option_context("display.width", 160, "display.max_rows", 500, "display.float_format", "{:.3g}".format):
        print(df.to_string(index=False))
    print(f"\node_error: median per-sample |x - x_ref| / sqrt(d) against a float64 dopri8 solution of the "
          f"probability-flow ODE from the same x_T (deterministic solvers).\nsde_error: the same against "
          f"Euler-Maruyama on 4096 steps on the same Brownian path (stochastic solvers; weak-only solvers "
          f"such as pc need not converge to it).\nsliced_w2: sliced Wasserstein-2 "
          f"to {args.n} exact samples of p_eps; noise floor (exact vs exact) = {floor:.3g}; "
          f"resolved = above the floor.\nbudget: NFE budget; steps = the most steps whose NFE fits.")
    return 0



def describe(args) -> int:
    """What the benchmark understood of a model: spec, SDE and time range, prediction, shape,
    parameters, ignored settings, fingerprint."""
    rows = models.describe(args.model)
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0


def sample(args) -> int:
    model = models.load(args.model)
    solver = solvers.get(args.solver)
    steps = None if solver.adaptive else (args.steps or 20)
    grid = {"grid": args.grid}
    if args.grid and args.grid.endswith(".json"):  # a tuned grid (sdebench tune, recommend --tune): its own steps
        tuned = solvers.load_grid(args.grid, model)
        if args.steps not in (None, tuned.steps):
            raise solvers.InputError(f"--steps {args.steps} contradicts --grid {args.grid}, a grid of {tuned.steps} "
                                     "steps; leave --steps out (or give that number)")
        steps, grid = None, {"times": tuned.times}
    check_sample_memory(model, args.n, steps or len(grid.get("times", ())))
    t0 = time.perf_counter()
    options = dict(args.option)
    out = solvers.sample(model, args.solver, steps=steps, n=args.n, seed=args.seed, **grid, **options)
    wall = time.perf_counter() - t0
    target = _exact_target(model, args.n, args.seed)
    line = f"{args.solver} on {args.model}: steps={out.steps} nfe={out.nfe} wall={wall:.3f}s"
    if target is None:
        print(f"{line} (no exact samples or data to compare with)")
        return 0
    x = out.x[: len(target)]
    print(f"{line} sliced_w2={metrics.sliced_wasserstein(x, target[: len(x)]):.4g} (against "
          f"{'exact samples' if models.is_exact(args.model) else 'held-out data'})")
    return 0


def likelihood(args) -> int:
    model = models.load(args.model)
    exact = models.is_exact(args.model)
    if args.prior == "exact" and not exact:
        args.prior = "sde"  # a trained model has no exact p_T
    probes = f", --probes {args.probes}" if args.trace == "hutchinson" else ""
    n = target_size(model, args.n)  # a trained model's held-out data may hold fewer
    limits.check_fits(f"a likelihood of {n} points of {args.model} ({model_dim(model)} dimensions, "
                      f"trace={args.trace}{probes})",
                      limits.likelihood_bytes(n, model_dim(model), args.trace, args.probes),
                      "lower --n" + (" or --probes" if args.trace == "hutchinson" else ""))
    x = _exact_target(model, args.n, args.seed)
    if x is None:
        raise solvers.InputError(f"model {args.model!r} has no exact samples or data to evaluate the likelihood on")
    prior = (lambda z: model.exact_log_prob(z, model.sde.T)) if args.prior == "exact" else None
    kw = {"bin_width": model.bin_width} if getattr(model, "bin_width", None) else {}
    t0 = time.perf_counter()
    out = solvers.log_likelihood(model, x, solver=args.solver, rtol=args.rtol, atol=args.atol, trace=args.trace,
                                 probes=args.probes, seed=args.seed, prior=prior, **kw)
    wall = time.perf_counter() - t0
    d = x[0].numel()
    err = (out.logp.double() - model.exact_log_prob(x, out.t0)).abs().mean().item() / d if exact else float("nan")
    extra = f" stderr={float(out.stderr.mean()):.3g}" if getattr(out, "stderr", None) is not None else ""
    what = "exact samples of p_eps" if exact else "held-out data points"
    print(f"{args.model}: {len(x)} {what}, {args.solver} rtol={args.rtol} atol={args.atol} "
          f"trace={args.trace} prior={args.prior}\n  mean log p = {out.logp.mean().item():.6g} nats, "
          f"bits/dim = {out.bpd.mean().item():.6g}, |error| = {err:.3g} nats/dim, nfe = {out.nfe}, "
          f"wall = {wall:.2f} s{extra}")
    return 0



def register(sub):
    d = sub.add_parser("demo", help="sample the 2-D mixture with every solver; print error and NFE")
    d.add_argument("--model", default="gmm2d-vp", choices=[m for m in models.available() if models.is_exact(m)])
    d.add_argument("--n", type=sample_count, default=2000, help="samples (default 2000)")
    d.add_argument("--nfe", type=step_count, nargs="+", default=[10, 20, 50], help="NFE budgets (default 10 20 50)")
    d.add_argument("--seed", type=seed_int, default=0)
    add_threads(d)
    d.set_defaults(fn=demo)
    ds = sub.add_parser("describe", help="what the benchmark understood of a model (a name or a spec)")
    add_model(ds)
    ds.set_defaults(fn=describe)
    s = sub.add_parser("sample", help="sample one model with one solver")
    add_model(s)
    s.add_argument("solver")
    s.add_argument("--steps", type=step_count, default=None,
                   help="steps (default 20; a tuned grid file's own; ignored by adaptive solvers)")
    s.add_argument("--n", type=sample_count, default=1000)
    s.add_argument("--seed", type=seed_int, default=0)
    s.add_argument("--grid", default=None, help="a built-in grid's name, or a tuned grid's .json file (its steps)")
    s.add_argument("-o", "--option", type=solver_option, action="append", default=[], metavar="KEY=VALUE",
                   help="a solver option, repeatable (e.g. -o eta=1.0 -o solver_type=heun)")
    add_threads(s)
    s.set_defaults(fn=sample)
    lk = sub.add_parser("likelihood", help="log-likelihood through the probability-flow ODE vs the exact one")
    add_model(lk)
    lk.add_argument("--solver", default="dopri5")
    tolerance = number(limits.TOL_MIN)  # tighter than float64 resolves: torchdiffeq would never finish
    lk.add_argument("--rtol", type=tolerance, default=1e-5, help=f"relative tolerance, >= {limits.TOL_MIN:g}")
    lk.add_argument("--atol", type=tolerance, default=1e-5, help=f"absolute tolerance, >= {limits.TOL_MIN:g}")
    lk.add_argument("--trace", choices=["exact", "hutchinson"], default="exact")
    lk.add_argument("--probes", type=positive_int, default=1)
    lk.add_argument("--prior", choices=["exact", "sde"], default="exact",
                    help="exact p_T of the model, or the SDE's Gaussian prior (the gap is prior mismatch)")
    lk.add_argument("--n", type=sample_count, default=500)
    lk.add_argument("--seed", type=seed_int, default=0)
    add_threads(lk)
    lk.set_defaults(fn=likelihood)
