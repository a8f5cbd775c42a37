"""The ``sdebench`` command.

    sdebench run SUITE [--resume [RUN]] [--executor local|ray]   sweep a suite into the results store
    sdebench list solvers|models|suites|runs                     what there is
    sdebench export RUN [--csv PATH]                             a run's cells as CSV
    sdebench report RUN [RUN...] [--out DIR]                     HTML + Markdown report with figures
    sdebench compare BASE HEAD                                   regression gate (exit 1 quality/NFE, 3 time)
    sdebench sample MODEL SOLVER                                 sample once: NFE, time, error
    sdebench likelihood MODEL                                    ODE log-likelihood vs the exact one
    sdebench demo                                                every solver on the 2-D mixture, printed
    sdebench train NAME... [--out DIR] [--seed S]                reproduce a shipped checkpoint
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import pandas as pd
import torch

import solvers
from bench import metrics, models
from bench.reference import brownian_path_for, ode_reference, path_kind, sde_reference
from bench.runner import run_suite
from bench.store import Store, default_store_path
from bench.suite import available_suites, load_suite


def _exact_target(model, n, seed):
    """Exact samples of p_eps, or held-out data for a trained model."""
    g = torch.Generator().manual_seed(seed + 1)
    if not hasattr(model, "exact_sample"):
        return model.data_sample(min(n, int(min(model.data_size(0), 1e9))), g)
    return model.exact_sample(n, model.sde.eps, generator=g)


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


def run(args) -> int:
    suite = load_suite(args.suite)
    if args.n is not None:
        suite.n = args.n
    store = Store(args.store)
    resume = None
    if args.resume is not None:
        resume = store.latest_run(suite.name) if args.resume == "latest" else int(args.resume)
        if resume is None:
            raise solvers.InputError(f"--resume: no earlier run of suite {suite.name!r} in {store.path}")
    run_id = run_suite(suite, store, executor=args.executor, address=args.address, resume=resume,
                       progress=not args.quiet)
    info = store.run(run_id)
    df = store.cells(run_id)
    failed = int(df["error"].notna().sum()) if not df.empty else 0
    csv = store.to_csv(run_id, pathlib.Path(args.store).parent / f"run-{run_id}" / "cells.csv")
    print(f"run {run_id}: {len(df)} cells ({failed} failed) in {info['wall_s']:.1f} s; store {store.path}; "
          f"table {csv}\n{_time_shares(df, info['wall_s'])}")
    if not args.no_report:
        from bench.report import write_report

        out = write_report(store, [run_id])
        print(f"report: {out['html']}  (open in a browser; Markdown: {out['markdown']})")
    return 0  # failed cells are results (recorded, listed in the report), not a failed run


def _time_shares(df, wall) -> str:
    """Where the run's wall time went: solving, references, metrics, the rest (store, bookkeeping)."""
    if df.empty or not wall:
        return ""
    parts = {"solving": df["solve_s"].fillna(0).sum()}
    for key, col in (("references", "time_reference_s"), ("metrics", "time_metrics_s")):
        parts[key] = df[col].fillna(0).sum() if col in df else 0.0
    parts["store and bookkeeping"] = max(wall - sum(parts.values()), 0.0)
    return "time: " + ", ".join(f"{k} {v:.1f} s ({v / wall:.0%})" for k, v in parts.items())


def _run_id(store, ref) -> int:
    if ref == "latest":
        run_id = store.latest_run()
        if run_id is None:
            raise solvers.InputError(f"no runs in {store.path}")
        return run_id
    try:
        return int(ref)
    except ValueError:
        raise solvers.InputError(f"{ref!r} is not a run id (or 'latest')") from None


def export(args) -> int:
    store = Store(args.store)
    run_id = _run_id(store, args.run)
    store.run(run_id)
    path = args.csv or pathlib.Path(args.store).parent / f"run-{run_id}" / "cells.csv"
    print(store.to_csv(run_id, path))
    return 0


def report(args) -> int:
    from bench.report import write_report

    store = Store(args.store)
    runs = [_run_id(store, r) for r in args.runs]
    out = write_report(store, runs, pathlib.Path(args.out) if args.out else None)
    print(f"report: {out['html']}  (self-contained; open in a browser)\n        {out['markdown']}")
    return 0


def compare_(args) -> int:
    from bench.compare import compare, load_cells

    store = Store(args.store)
    base, head = load_cells(args.base, store), load_cells(args.head, store)
    table, code = compare(base, head, rtol=args.rtol, time_factor=None if args.no_time else args.time_factor,
                          min_time_s=args.min_time)
    with pd.option_context("display.width", 200, "display.max_rows", 1000, "display.max_colwidth", 80):
        print(table.to_string(index=False) if len(table) else "no changes")
    verdict = {0: "OK: no regression", 1: "FAIL: quality/NFE/coverage regression", 3: "FAIL: timing regression"}
    print(f"{len(base)} base cells, {len(head)} head cells; rtol={args.rtol}, "
          f"time factor={'off' if args.no_time else args.time_factor}. {verdict[code]}")
    return code


def list_(args) -> int:
    if args.what == "suites":
        for name in available_suites():
            print(f"{name:10s} {load_suite(name).description}")
        return 0
    if args.what == "runs":
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(Store(args.store).runs().to_string(index=False))
        return 0
    if args.what == "solvers":
        for name in solvers.available():
            c = solvers.get(name)
            doc = (c.__doc__ or "").strip().splitlines()[0]
            print(f"{name:20s} {c.kind:9s} order={c.order!s:5s} nfe/step={c.nfe_per_step}  {doc}")
    else:
        print("\n".join(models.available()))
    return 0


def sample(args) -> int:
    model = models.load(args.model)
    t0 = time.perf_counter()
    out = solvers.sample(model, args.solver, steps=args.steps, n=args.n, seed=args.seed, grid=args.grid)
    wall = time.perf_counter() - t0
    target = _exact_target(model, args.n, args.seed)
    x = out.x[: len(target)]
    print(f"{args.solver} on {args.model}: steps={out.steps} nfe={out.nfe} wall={wall:.3f}s "
          f"sliced_w2={metrics.sliced_wasserstein(x, target[: len(x)]):.4g} (against "
          f"{'exact samples' if models.is_exact(args.model) else 'held-out data'})")
    return 0


def likelihood(args) -> int:
    model = models.load(args.model)
    exact = models.is_exact(args.model)
    if args.prior == "exact" and not exact:
        args.prior = "sde"  # a trained model has no exact p_T
    x = _exact_target(model, args.n, args.seed)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="sdebench", description="Benchmark numerical SDE/ODE solvers of "
                                "score-based diffusion models on models with exact answers.")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="sample the 2-D mixture with every solver; print error and NFE")
    d.add_argument("--model", default="gmm2d-vp", choices=[m for m in models.available() if models.is_exact(m)])
    d.add_argument("--n", type=int, default=2000, help="samples (default 2000)")
    d.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50], help="NFE budgets (default 10 20 50)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    d.set_defaults(fn=demo)
    r = sub.add_parser("run", help="sweep a suite (a shipped name or a .toml path) into the results store")
    r.add_argument("suite", help=f"shipped: {', '.join(available_suites())}; or a path to a .toml file")
    r.add_argument("--store", default=str(default_store_path()), help="SQLite file (default %(default)s)")
    r.add_argument("--resume", nargs="?", const="latest", default=None, metavar="RUN",
                   help="finish an interrupted run (default: the latest run of this suite)")
    r.add_argument("--executor", choices=["local", "ray"], default="local")
    r.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    r.add_argument("--n", type=int, default=None, help="override the suite's number of samples")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    r.set_defaults(fn=run)
    ls = sub.add_parser("list", help="list solvers, models, suites or stored runs")
    ls.add_argument("what", choices=["solvers", "models", "suites", "runs"])
    ls.add_argument("--store", default=str(default_store_path()))
    ls.set_defaults(fn=list_)
    ex = sub.add_parser("export", help="write a run's cells to CSV")
    ex.add_argument("run", help="run id or 'latest'")
    ex.add_argument("--csv", default=None)
    ex.add_argument("--store", default=str(default_store_path()))
    ex.set_defaults(fn=export)
    rp = sub.add_parser("report", help="write an HTML and a Markdown report of one or more runs")
    rp.add_argument("runs", nargs="+", help="run ids (or 'latest')")
    rp.add_argument("--out", default=None, help="output folder (default results/run-<first run>/)")
    rp.add_argument("--store", default=str(default_store_path()))
    rp.set_defaults(fn=report)
    cp = sub.add_parser("compare", help="compare two runs (ids or CSV exports); exit 1 on a quality/NFE "
                        "regression, 3 on a timing regression only, 0 otherwise")
    cp.add_argument("base", help="run id or CSV (e.g. results/baselines/ci.csv)")
    cp.add_argument("head", help="run id or CSV")
    cp.add_argument("--rtol", type=float, default=0.05, help="allowed relative worsening of quality (default 0.05)")
    cp.add_argument("--time-factor", type=float, default=2.0, help="allowed slowdown factor (default 2.0)")
    cp.add_argument("--min-time", type=float, default=0.02, help="cells faster than this (s) are not timed-gated")
    cp.add_argument("--no-time", action="store_true", help="gate on quality and NFE only")
    cp.add_argument("--store", default=str(default_store_path()))
    cp.set_defaults(fn=compare_)
    s = sub.add_parser("sample", help="sample one model with one solver")
    s.add_argument("model", choices=models.available())
    s.add_argument("solver")
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--grid", default=None)
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: reliable on a shared machine)")
    s.set_defaults(fn=sample)
    lk = sub.add_parser("likelihood", help="log-likelihood through the probability-flow ODE vs the exact one")
    lk.add_argument("model", choices=models.available())
    lk.add_argument("--solver", default="dopri5")
    lk.add_argument("--rtol", type=float, default=1e-5)
    lk.add_argument("--atol", type=float, default=1e-5)
    lk.add_argument("--trace", choices=["exact", "hutchinson"], default="exact")
    lk.add_argument("--probes", type=int, default=1)
    lk.add_argument("--prior", choices=["exact", "sde"], default="exact",
                    help="exact p_T of the model, or the SDE's Gaussian prior (the gap is prior mismatch)")
    lk.add_argument("--n", type=int, default=500)
    lk.add_argument("--seed", type=int, default=0)
    lk.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: reliable on a shared machine)")
    lk.set_defaults(fn=likelihood)
    sub.add_parser("train", add_help=False, help="reproduce a shipped checkpoint (sdebench train --help)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from bench.train import main as train_main

        return train_main(argv[1:])
    args = p.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return args.fn(args)
    except solvers.InputError as e:
        print(f"sdebench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
