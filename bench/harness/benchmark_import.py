"""pytest-benchmark results in the results store, beside the suites' runs.

    import_benchmark(store, path, suite="perf") -> (run id, number of cells)

reads a file written by ``pytest bench/perf --benchmark-enable --benchmark-json=FILE`` (its
``machine_info``, ``commit_info``, ``datetime`` and ``benchmarks``) and records one finished run
of suite ``perf`` with one cell per benchmark. The run's commit is ``commit_info.id`` (with
``+dirty`` when the tree was dirty), its start time the file's ``datetime``, its device the
machine's CPU. Each cell is a ``Cell`` of task ``"benchmark"``: solver from the ``name``
parameter (else the test function, ``test_`` dropped), model from the benchmark group when it
names a model (else ``"perf"``), steps and batch (as ``n``) from the parameters, the test
function and the other parameters as options; so the same benchmark has the same key in every
import and ``compare`` / ``history`` match it across commits. Its timing holds the statistics in
seconds (``median_s``, ``min_s``, ``max_s``, ``mean_s``, ``stddev_s``, ``iqr_s``, ``rounds``) and
the ``overhead`` of ``extra_info``; its NFE is ``extra_info.nfe``; the whole ``extra_info`` is kept
in the cell's stats. Importing the same file twice is refused (the run's uuid is the file's hash).
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import re

from bench.harness.cell import Cell
from bench.harness.store import Store
from solvers import InputError

__all__ = ["import_benchmark", "benchmark_cell"]

_STATS = ("median", "min", "max", "mean", "stddev", "iqr")


def _read(path: pathlib.Path) -> tuple[dict, bytes]:
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise InputError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list); write one with "
                         "pytest bench/perf --benchmark-enable --benchmark-json=FILE")
    return data, raw


def _model_of(group: str) -> str:
    from bench.zoo import models

    names = set(models.available())
    return next((tok for tok in re.split(r"\s+", group or "") if tok in names), "perf")


def benchmark_cell(b: dict, device: str) -> tuple[Cell, dict]:
    """The cell and result of one pytest-benchmark entry."""
    params = dict(b.get("params") or {})
    test = str(b.get("name") or b.get("fullname") or "benchmark").split("[")[0]
    solver = str(params.pop("name", None) or re.sub(r"^test_", "", test))
    steps, batch = params.pop("steps", None), params.pop("batch", None)
    extra = dict(b.get("extra_info") or {})
    cell = Cell(task="benchmark", model=_model_of(b.get("group") or ""), solver=solver,
                options={"test": test, **params}, grid=None, budget=None,
                steps=int(steps) if isinstance(steps, (int, float)) else None,
                n=int(batch) if isinstance(batch, (int, float)) else 0, seed=0, exact_prior=False,
                device=str(extra.get("device", device)), dtype="float32",
                threads=int(extra["threads"]) if isinstance(extra.get("threads"), int) else None,
                repeats=int((b.get("stats") or {}).get("rounds") or 0), warmup=0)
    stats = b.get("stats") or {}
    timing = {f"{k}_s": float(stats[k]) for k in _STATS if isinstance(stats.get(k), (int, float))}
    timing["rounds"] = stats.get("rounds")
    for k in ("overhead", "one_eval_s"):
        if isinstance(extra.get(k), (int, float)):
            timing[k] = float(extra[k])
    nfe = extra.get("nfe")
    result = {"nfe": int(nfe) if isinstance(nfe, (int, float)) else None, "steps": cell.steps, "timing": timing,
              "metrics": {}, "stats": {"extra_info": extra, "group": b.get("group"), "fullname": b.get("fullname")},
              "error": None, "solve_s": timing.get("median_s")}
    return cell, result


def import_benchmark(store: Store, path, suite: str = "perf") -> tuple[int, int]:
    """Record a pytest-benchmark JSON file as one run of ``suite``; return (run id, cells)."""
    path = pathlib.Path(path)
    data, raw = _read(path)
    digest = hashlib.sha1(raw).hexdigest()
    row = store.db.execute("SELECT id FROM runs WHERE uuid=?", (digest,)).fetchone()
    if row is not None:
        raise InputError(f"{path}: already imported as run {row[0]} in {store.path}")
    commit = data.get("commit_info") or {}
    machine = data.get("machine_info") or {}
    sha = str(commit.get("id") or "unknown") + ("+dirty" if commit.get("dirty") else "")
    cpu = machine.get("cpu") or {}
    device = f"cpu: {cpu.get('brand_raw') or machine.get('processor') or machine.get('machine') or 'unknown'}"
    when = data.get("datetime") or commit.get("time")
    text = json.dumps({"source": str(path), "version": data.get("version"), "commit_info": commit,
                       "machine_info": {k: machine.get(k) for k in ("node", "machine", "python_version", "system")}},
                      indent=1, sort_keys=True, default=str)
    fields = {"uuid": digest, "suite": suite, "suite_text": text, "git_commit": sha, "status": "complete",
              "host": machine.get("node"), "device": device, "executor": "pytest-benchmark", "dtype": "float32"}
    if when:
        fields.update(started=str(when), finished=str(when))
    run_id = store.record_run(fields)
    for b in data["benchmarks"]:
        cell, result = benchmark_cell(b, device)
        store.add_cell(run_id, cell, result, wall_s=float((b.get("stats") or {}).get("total") or 0.0))
    return run_id, len(data["benchmarks"])
