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
import math
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


def _count(v, what: str, *, required: bool = False):
    """A finite integer >= 0 (an integral float is accepted: JSON has one number type), None when absent."""
    if v is None and not required:
        return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 and v == int(v)
    if not ok:
        raise ValueError(f"{what} must be an integer >= 0, got {v!r}")
    return int(v)


def _seconds(v, what: str):
    """A finite number >= 0, None when absent."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {v!r}")
    return float(v)


def benchmark_cell(b: dict, device: str) -> tuple[Cell, dict]:
    """The cell and result of one pytest-benchmark entry; ValueError naming the key of a value
    that is not what pytest-benchmark writes (a NaN NFE, text rounds, infinite steps)."""
    if not isinstance(b, dict):
        raise ValueError(f"must be an object, got {type(b).__name__}")
    for key in ("params", "extra_info", "stats"):
        if b.get(key) is not None and not isinstance(b[key], dict):
            raise ValueError(f"{key} must be an object, got {type(b[key]).__name__}")
    params = dict(b.get("params") or {})
    test = str(b.get("name") or b.get("fullname") or "benchmark").split("[")[0]
    solver = str(params.pop("name", None) or re.sub(r"^test_", "", test))
    steps, batch = _count(params.pop("steps", None), "params.steps"), _count(params.pop("batch", None), "params.batch")
    extra, stats = dict(b.get("extra_info") or {}), b.get("stats") or {}
    cell = Cell(task="benchmark", model=_model_of(b.get("group") or ""), solver=solver,
                options={"test": test, **params}, grid=None, budget=None, steps=steps, n=batch or 0, seed=0,
                exact_prior=False, device=str(extra.get("device", device)), dtype="float32",
                threads=_count(extra.get("threads"), "extra_info.threads") or None,
                repeats=_count(stats.get("rounds"), "stats.rounds") or 0, warmup=0)
    timing = {f"{k}_s": _seconds(stats.get(k), f"stats.{k}") for k in _STATS if stats.get(k) is not None}
    timing["rounds"] = cell.repeats
    for k in ("overhead", "one_eval_s"):
        if extra.get(k) is not None:
            timing[k] = _seconds(extra[k], f"extra_info.{k}")
    result = {"nfe": _count(extra.get("nfe"), "extra_info.nfe"), "steps": cell.steps, "timing": timing,
              "metrics": {}, "stats": {"extra_info": extra, "group": b.get("group"), "fullname": b.get("fullname")},
              "error": None, "solve_s": timing.get("median_s")}
    return cell, result


def import_benchmark(store: Store, path, suite: str = "perf") -> tuple[int, int]:
    """Record a pytest-benchmark JSON file as one run of ``suite``; return (run id, cells). Every
    entry is checked before anything is written, and the run and its cells are written in one
    transaction: a bad file leaves no run behind."""
    path = pathlib.Path(path)
    data, raw = _read(path)
    digest = hashlib.sha1(raw).hexdigest()
    row = store.db.execute("SELECT id FROM runs WHERE uuid=?", (digest,)).fetchone()
    if row is not None:
        raise InputError(f"{path}: already imported as run {row[0]} in {store.path}")
    if not data["benchmarks"]:
        raise InputError(f"{path}: its 'benchmarks' list is empty: nothing to import")
    commit = data.get("commit_info") or {}
    machine = data.get("machine_info") or {}
    if not isinstance(commit, dict) or not isinstance(machine, dict):
        raise InputError(f"{path}: commit_info and machine_info must be objects")
    sha = str(commit.get("id") or "unknown") + ("+dirty" if commit.get("dirty") else "")
    cpu = machine.get("cpu") if isinstance(machine.get("cpu"), dict) else {}
    device = f"cpu: {cpu.get('brand_raw') or machine.get('processor') or machine.get('machine') or 'unknown'}"
    cells = []
    for i, b in enumerate(data["benchmarks"]):
        name = b.get("name") if isinstance(b, dict) else None
        try:
            cell, result = benchmark_cell(b, device)
            total = _seconds((b.get("stats") or {}).get("total"), "stats.total") or 0.0
        except ValueError as e:
            raise InputError(f"{path}: benchmarks[{i}]{f' ({name})' if name else ''}: {e}; nothing imported") from None
        cells.append((cell, result, total))
    when = data.get("datetime") or commit.get("time")
    text = json.dumps({"source": str(path), "version": data.get("version"), "commit_info": commit,
                       "machine_info": {k: machine.get(k) for k in ("node", "machine", "python_version", "system")}},
                      indent=1, sort_keys=True, default=str)
    fields = {"uuid": digest, "suite": suite, "suite_text": text, "git_commit": sha, "status": "complete",
              "host": machine.get("node"), "device": device, "executor": "pytest-benchmark", "dtype": "float32"}
    if when:
        fields.update(started=str(when), finished=str(when))
    return store.record_run(fields, cells), len(cells)
