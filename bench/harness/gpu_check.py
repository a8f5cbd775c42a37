"""The GPU check: what a lent GPU machine runs once, writing everything it measured under one folder.

    python -m bench.harness.gpu_check --out results/gpu-check            # on a CUDA machine (bench/gpu_check.sh)
    python -m bench.harness.gpu_check --out /tmp/gc --device cpu --quick  # what runs without a GPU

Parts (``--parts``, default all):

1. ``tests``:  the CUDA-marked tests (``pytest -m cuda``): CPU vs CUDA samples of every solver in
   float32/float64, graph vs eager, likelihood on CUDA.
2. ``sync``:   every fixed-step solver's loop under ``torch.cuda.set_sync_debug_mode("error")``
   (``solvers.sample(..., sync_debug=True)``; the final finiteness check is outside the guard):
   "ok" proves no host-device synchronisation inside the loop.
3. ``timing``: per solver, model and batch: wall time of an eager call and of a CUDA-graph replay
   (median of repeats after warm-up; CUDA events), one network evaluation, NFE, and
   overhead = wall / (NFE x one evaluation), on gmm2d-vp, checkerboard-vp and the timing-only
   CIFAR-10 U-Net (smaller batches).
4. ``suite``:  the quick suite with device = "cuda" (a generated suite file) and its report.

Writes ``summary.md`` (every part, what was skipped and why), ``timing.csv``, ``sync.csv``,
``tests.txt`` and ``suite/``. On a machine without CUDA it runs what it can on ``--device cpu``
(timing eager only) and says what it skipped.
"""
from __future__ import annotations

import argparse
import csv
import functools
import pathlib
import re
import statistics
import subprocess
import sys
import time

import torch

import solvers
from bench.zoo import models

PARTS = ("tests", "sync", "timing", "suite")
MIXTURES = ("gmm2d-vp", "checkerboard-vp")
UNET = "cifar10-unet-timing"
#: solvers timed on the U-Net (each U-Net evaluation is costly; the mixtures get every solver)
UNET_SOLVERS = ("euler", "heun", "ddim", "euler_maruyama", "dpmpp_2m", "unipc", "dpm_solver_3")


def fixed_step_solvers() -> list[str]:
    """Every registered fixed-step sampler (correctors and adaptive solvers excluded)."""
    return [n for n in solvers.available() if not solvers.get(n).adaptive and solvers.get(n).kind != "corrector"]


def graph_capable(name) -> bool:
    cls = solvers.get(name)
    return not (cls.adaptive or cls.needs_path)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn`` (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- 1. CUDA tests -------------------------------------------------------------------------------
def part_tests(out: pathlib.Path, device, args) -> list[str]:
    if device.type != "cuda":
        return ["tests: skipped (no CUDA device; the tests marked `cuda` skip themselves without one)"]
    root = pathlib.Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", str(root / "tests")]
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=args.tests_timeout)
    except subprocess.TimeoutExpired as e:
        (out / "tests.txt").write_text(_text(e.stdout) + _text(e.stderr))
        return [f"tests: stopped after {args.tests_timeout} s (partial output in tests.txt)"]
    (out / "tests.txt").write_text(proc.stdout + proc.stderr)
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    return [f"tests: `pytest -m cuda` exit {proc.returncode}: {last} (tests.txt)"]


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


# --- 2. no host-device sync inside the loop ----------------------------------------------------------
def part_sync(out: pathlib.Path, device, args) -> list[str]:
    if device.type != "cuda":
        return ["sync: skipped (torch.cuda.set_sync_debug_mode needs a CUDA device)"]
    m = models.load("gmm2d-vp")
    rows = []
    for name in fixed_step_solvers():
        try:  # one unguarded call first: first-use caches (parameters cast to the device) fill then
            solvers.sample(m, name, steps=5, n=args.sync_n, seed=0, device=device)
            solvers.sample(m, name, steps=5, n=args.sync_n, seed=0, device=device, sync_debug=True)
            rows.append({"solver": name, "result": "ok", "detail": ""})
        except Exception as e:
            rows.append({"solver": name, "result": "sync" if "synchron" in str(e) else "error",
                         "detail": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
    _write_csv(out / "sync.csv", rows)
    bad = [r["solver"] for r in rows if r["result"] != "ok"]
    lines = [f"sync: {len(rows) - len(bad)}/{len(rows)} fixed-step solvers run their loop without a "
             "host-device synchronisation (sync.csv)"]
    if bad:
        lines.append(f"sync: not ok: {', '.join(bad)}")
    return lines


# --- 3. timing table -----------------------------------------------------------------------------
def _one_eval(m, x, device, repeats) -> float:
    t = torch.full((x.shape[0],), 0.5 * (m.sde.T + m.sde.eps), dtype=x.dtype, device=device)
    return _time(lambda: m.fn(x, t), device, repeats)


def _cases(args):
    chosen = args.solvers or fixed_step_solvers()
    for model in MIXTURES:
        for batch in args.batches:
            for name in chosen:
                yield model, batch, name, args.steps
    for batch in args.unet_batches:
        for name in (args.solvers or UNET_SOLVERS):
            if name in solvers.available():
                yield UNET, batch, name, args.unet_steps


def _load(name, device):
    if name == UNET:
        from bench.zoo import cifar_unet
        return cifar_unet.load(device=device, **UNET_TINY) if _TINY_UNET[0] else cifar_unet.load(device=device)
    return models.load(name)


UNET_TINY = dict(block_out_channels=(32, 32, 32, 32), norm_num_groups=8)
_TINY_UNET = [False]


def part_timing(out: pathlib.Path, device, args) -> list[str]:
    rows, loaded, evals = [], {}, {}
    graph = device.type == "cuda"
    for model, batch, name, steps in _cases(args):
        m = loaded.get(model) or loaded.setdefault(model, _load(model, device))
        x = m.sample_prior(batch, generator=torch.Generator().manual_seed(0)).to(device)
        key = (model, batch)
        if key not in evals:
            evals[key] = _one_eval(m, x, device, args.repeats)
        row = {"model": model, "batch": batch, "solver": name, "steps": steps, "device": str(device),
               "one_eval_s": evals[key]}
        try:
            nfe0 = m.nfe
            solvers.sample(m, name, steps=steps, x_T=x, seed=0)
            row["nfe"] = m.nfe - nfe0
            run = functools.partial(solvers.sample, m, name, steps=steps, x_T=x, seed=0)
            row["eager_s"] = _time(run, device, args.repeats)
            row["eager_overhead"] = row["eager_s"] / (row["nfe"] * evals[key])
            if graph and graph_capable(name):
                row["graph_s"] = _time(functools.partial(run, graph=True), device, args.repeats)
                row["graph_overhead"] = row["graph_s"] / (row["nfe"] * evals[key])
                row["graph_speedup"] = row["eager_s"] / row["graph_s"]
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        rows.append(row)
        if args.verbose:
            print(_fmt_row(row), flush=True)
        if graph:
            solvers.graph.clear_cache()
    _write_csv(out / "timing.csv", rows)
    lines = [f"timing: {len(rows)} cells on {device} (timing.csv); overhead = wall / (NFE x one evaluation)"]
    if not graph:
        lines.append("timing: graph replay skipped (CUDA graphs need a CUDA device)")
    lines += ["", "| model | batch | solver | NFE | eager overhead | graph overhead | graph speedup |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['solver']} | {r.get('nfe', '')} | "
                     f"{_f(r.get('eager_overhead'))} | {_f(r.get('graph_overhead'))} | {_f(r.get('graph_speedup'))} |"
                     + (f" {r['error']}" if "error" in r else ""))
    return lines


def _f(v):
    return "" if v is None else f"{v:.3f}"


def _fmt_row(r):
    return " ".join(f"{k}={_f(v) if isinstance(v, float) else v}" for k, v in r.items())


# --- 4. the quick suite on the device ---------------------------------------------------------------
def part_suite(out: pathlib.Path, device, args) -> list[str]:
    if device.type != "cuda" and not args.suite_on_cpu:
        return ["suite: skipped (the quick suite on CUDA needs a CUDA device; --suite-on-cpu runs it on CPU)"]
    root = pathlib.Path(__file__).resolve().parent
    text = (root / "suites" / "quick.toml").read_text()
    text = re.sub(r'^name = ".*"$', 'name = "quick-gpu-check"', text, count=1, flags=re.M)
    text = re.sub(r'^device = ".*"$', f'device = "{device.type}"', text, count=1, flags=re.M)
    d = out / "suite"
    d.mkdir(parents=True, exist_ok=True)
    (d / "quick-gpu-check.toml").write_text(text)
    store = d / "store.sqlite"
    run = [sys.executable, "-m", "bench.cli", "run", str(d / "quick-gpu-check.toml"), "--store", str(store),
           "--quiet", "--no-report"] + (["--n", str(args.suite_n)] if args.suite_n else [])
    rep = [sys.executable, "-m", "bench.cli", "report", "latest", "--store", str(store), "--out", str(d / "report")]
    log = []
    for cmd in (run, rep):
        proc = subprocess.run(cmd, cwd=root.parent, capture_output=True, text=True, timeout=args.suite_timeout)
        log.append(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}exit {proc.returncode}\n")
        if proc.returncode:
            break
    (d / "suite.txt").write_text("\n".join(log))
    return [f"suite: quick suite with device = \"{device.type}\": exit {proc.returncode} "
            f"(suite/suite.txt, report in suite/report/)"]


# ---------------------------------------------------------------------------------------------------
def _write_csv(path, rows):
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _ints(s):
    return [int(v) for v in s.split(",") if v]


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.harness.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for summary.md, timing.csv, sync.csv, tests.txt, suite/")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--batches", type=_ints, default=[1, 1000, 100000], help="mixture batches (default 1,1000,100000)")
    p.add_argument("--unet-batches", type=_ints, default=[1, 8, 32, 128], help="U-Net batches (default 1,8,32,128)")
    p.add_argument("--steps", type=int, default=20, help="steps on the mixtures (default 20)")
    p.add_argument("--unet-steps", type=int, default=10, help="steps on the U-Net (default 10)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--solvers", type=lambda v: [n for n in v.split(",") if n], default=None,
                   help="timing: these solvers only (default every fixed-step solver; a U-Net subset)")
    p.add_argument("--sync-n", type=int, default=64)
    p.add_argument("--suite-n", type=int, default=None, help="override the quick suite's sample count")
    p.add_argument("--suite-on-cpu", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (tests): batches 1,16, U-Net batch 1 with a narrow U-Net, 3 steps, 2 repeats")
    p.add_argument("--tests-timeout", type=int, default=240)
    p.add_argument("--suite-timeout", type=int, default=240)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.unet_batches, args.steps, args.unet_steps, args.repeats = [1, 16], [1], 3, 2, 2
    return args


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench.harness.gpu_check: --device cuda but CUDA is not available; use --device cpu", file=sys.stderr)
        return 2
    _TINY_UNET[0] = args.quick
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"bench.harness.gpu_check: unknown part(s) {unknown}; valid: {', '.join(PARTS)}", file=sys.stderr)
        return 2
    started = time.time()
    env = (f"torch {torch.__version__}, device {device}"
           + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
           + f", {torch.get_num_threads()} CPU thread(s)")
    lines = ["# GPU check", "", env, ""]
    run = {"tests": part_tests, "sync": part_sync, "timing": part_timing, "suite": part_suite}
    for part in PARTS:
        if part not in parts:
            lines.append(f"{part}: not requested")
            continue
        t0 = time.time()
        try:
            lines += run[part](out, device, args)
        except Exception as e:
            lines.append(f"{part}: FAILED: {type(e).__name__}: {e}")
        lines += [f"({part}: {time.time() - t0:.1f} s)", ""]
        (out / "summary.md").write_text("\n".join(lines) + "\n")  # written as it goes: a timeout keeps the rest
    lines.append(f"total {time.time() - started:.1f} s")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
