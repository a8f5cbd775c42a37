"""One definition of a cell and of a metric: typed cells stored whole, the metric registry, the
versioned store (migration from format 0, refusal of a newer one), the executor interface."""
import json
import pathlib
import shutil
import sqlite3

import pytest

from bench.harness import execute, executors, metrics, runner
from bench.harness.cell import Cell
from bench.harness.store import SCHEMA_VERSION, Store
from bench.harness.suite import load_suite
from bench.report import compare as compare_mod
from bench.report import convergence_table, load_cells
from solvers import InputError

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "store_v0.sqlite"

PER_MODEL = """
name = "per-model"
models = ["gmm2d-vp", "gmm2d-ve"]
n = 48
seeds = [0]
steps = [4, 8, 16]
metrics = ["discretization"]
repeats = 1
warmup = 0
reference = { ode_rtol = 1e-10, sde_steps = 512, "gmm2d-vp" = { ode_rtol = 1e-6, sde_steps = 32 } }
[[solvers]]
name = "euler"
[[solvers]]
name = "euler_maruyama"
"""


def test_a_cell_round_trips_through_json_and_keeps_its_key():
    c = Cell(task="sample", model="gmm2d-vp", solver="heun", options={"last_step_euler": True}, grid="edm",
             budget=10, steps=5, n=64, seed=3, exact_prior=True, device="cpu", dtype="float32", threads=1,
             metrics=("discretization",), reference={"ode_rtol": 1e-9, "sde_steps": 256},
             solver_meta={"declared_order": 2})
    back = Cell.from_json(c.to_json())
    assert back == c and back.key == c.key and back.solver_meta == {"declared_order": 2}
    assert c.replace(seed=4).key != c.key and c.replace(solver_meta={}).key == c.key  # metadata is not identity
    assert json.loads(c.to_json())["key"] == c.key


def test_every_metric_a_suite_may_name_comes_from_the_registry(tmp_path):
    assert set(metrics.requestable()) <= set(metrics.METRICS)
    assert all(metrics.METRICS[m].better == "lower" for m in metrics.quality())  # the gate's direction
    p = tmp_path / "s.toml"
    p.write_text(PER_MODEL.replace('metrics = ["discretization"]', 'metrics = ["precision"]'))
    with pytest.raises(InputError, match="allowed: " + ", ".join(metrics.requestable())):
        load_suite(str(p))
    for name in metrics.requestable():
        assert metrics.get_metric(name).label and metrics.get_metric(name).tex


def test_report_floor_and_cutoff_are_each_models_own(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(PER_MODEL)
    suite = load_suite(str(p))
    refs = {c.model: c.reference for c in suite.cells()}
    assert refs == {"gmm2d-vp": {"ode_rtol": 1e-6, "sde_steps": 32}, "gmm2d-ve": {"ode_rtol": 1e-10, "sde_steps": 512}}
    store = Store(tmp_path / "s.sqlite")
    run_id = runner.run_suite(suite, store, progress=False)
    stored = {Cell.from_json(t).model: Cell.from_json(t) for t in store.cells(run_id)["cell"]}
    assert stored["gmm2d-vp"].reference["sde_steps"] == 32 and stored["gmm2d-vp"].solver_meta["declared_order"] == 1
    conv = convergence_table(load_cells(store, [run_id])).set_index(["model", "solver"])
    assert conv.loc[("gmm2d-vp", "euler"), "floor"] == pytest.approx(1e-5)
    assert conv.loc[("gmm2d-ve", "euler"), "floor"] == pytest.approx(1e-9)
    # stochastic fits keep only steps with 4 x steps <= the model's own sde_steps: 4, 8, 16 for VE; 4, 8 (not 16) for VP
    assert conv.loc[("gmm2d-vp", "euler_maruyama"), "steps"].endswith("-8")  # 16 x 4 > 32: cut off
    assert conv.loc[("gmm2d-ve", "euler_maruyama"), "steps"].endswith("-16")


def _copy_fixture(tmp_path):
    dst = tmp_path / "old.sqlite"
    shutil.copy(FIXTURE, dst)
    return dst


def test_a_format_0_store_is_migrated_forward_and_keeps_every_cell(tmp_path):
    path = _copy_fixture(tmp_path)
    before = sqlite3.connect(path).execute("SELECT key, metrics FROM cells ORDER BY key").fetchall()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 0
    store = Store(path)
    assert store.version == SCHEMA_VERSION
    df = store.cells(1)
    assert sorted(df["key"]) == [k for k, _ in before]
    cells = [Cell.from_json(t) for t in df["cell"]]
    # the stored suite text still parses: per-model reference settings are recovered exactly
    sample = [c for c in cells if c.task == "sample"]
    assert sample and all(c.reference == {"ode_rtol": 1e-8, "sde_steps": 128} for c in sample)
    assert all(c.key == k for c, k in zip(cells, df["key"]))
    assert {c.solver_meta.get("declared_order") for c in sample if c.solver == "euler"} == {1}
    store.close()
    assert Store(path).version == SCHEMA_VERSION  # idempotent


def test_a_damaged_suite_text_migrates_partially_from_the_columns(tmp_path):
    path = _copy_fixture(tmp_path)
    db = sqlite3.connect(path)
    db.execute("UPDATE runs SET suite_text = 'models = [\"no-such-model\"]'")
    db.commit()
    db.close()
    cells = [json.loads(t) for t in Store(path).cells(1)["cell"]]
    assert all(c["migrated"] == "partial" for c in cells)
    assert {c["solver"] for c in cells} == {"euler", "euler_maruyama", "dopri5"}


def test_a_newer_store_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "new.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(InputError, match="newer than this sdebench"):
        Store(path)


def test_exports_say_their_format_and_newer_ones_are_refused(tmp_path):
    store = Store(_copy_fixture(tmp_path))
    csv = store.to_csv(1, tmp_path / "cells.csv")
    text = csv.read_text().splitlines()
    assert text[0].startswith("format,") and text[1].startswith("1,")
    assert len(compare_mod.load_run_or_export(str(csv))) == 5
    newer = tmp_path / "newer.csv"
    newer.write_text(text[0] + "\n" + "\n".join("9" + line[1:] for line in text[1:]) + "\n")
    with pytest.raises(InputError, match="newer"):
        compare_mod.load_run_or_export(str(newer))


def test_executors_share_one_interface_and_import_neither_sweep_nor_store():
    import ast

    for mod in (executors, execute):
        tree = ast.parse(pathlib.Path(mod.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"bench.harness.suite", "bench.harness.store", "bench.harness.runner"}, mod.__name__
    out = list(executors.get_executor("local").map(lambda c: c * 2, [1, 2]))
    assert out == [(1, 2), (2, 4)]
    with pytest.raises(InputError, match="valid: local, ray"):
        executors.get_executor("dask")


def test_recommend_ranks_with_ties_and_prints_the_reproducing_command(tmp_path, capsys):
    from bench import cli

    code = cli.main(["recommend", "gmm2d-vp", "--nfe", "8", "--solvers", "euler", "heun", "--n", "200", "--quiet",
                     "--no-report", "--store", str(tmp_path / "r.sqlite")])
    out = capsys.readouterr().out
    assert code == 0 and "ranked by exact_kl" in out and "reproduce: sdebench sample gmm2d-vp" in out
    assert out.count("grid=") >= 2 * 5  # two solvers x five grids (tan: the mixture knows its data_std)
    assert cli.main(["recommend", "gmm2d-vp", "--nfe", "8", "--solvers", "euler_maruyama", "--quiet",
                     "--store", str(tmp_path / "r.sqlite")]) == 2
