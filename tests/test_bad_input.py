"""Bad and hostile input, table-driven: through the Python API (``solvers.InputError`` naming the
offending thing) and every CLI command (exit 2 and one line naming it, never a traceback, never
a silently wrong result). Damaged stores, a full disk, Ctrl-C and a changed ``--resume``
definition lose no committed cell. Tiny suites (n=16, one model, 2 step counts, no references)."""
import json
import math
import os
import shutil
import sqlite3

import numpy as np
import pytest
import torch
from cli_helpers import BASE, EULER, call, interrupt_at_second_cell, run_cli, suite_file

import solvers
from bench.harness.store import Store
from bench.harness.suite import SuiteError, load_suite
from bench.report.compare import compare
from bench.zoo import models, trained
from bench.zoo.trained import CHECKPOINTS, CheckpointError
from solvers import InputError, StepLimitError


@pytest.fixture
def model():
    return models.load("gmm2d-vp")


# --------------------------------------------------------------------------------------------
# the Python API: every bad argument is an InputError naming it
# --------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _registry_restored():
    """Solvers registered by a case here never leak into other test files (list, README, orders)."""
    from solvers import registry

    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


class Bad(solvers.Solver):
    name = "test_bad_shape"

    def step(self, i, x):
        return x[:, :1]


def _register(**attrs):
    cls = type("UserSolver", (solvers.Solver,), {"step": lambda self, i, x: x, **attrs})
    return solvers.register(cls)


API = [
    ("seed -1 (SDE solver)", lambda m: solvers.sample(m, "euler_maruyama", steps=2, n=4, seed=-1), "seed"),
    ("seed 2^64", lambda m: solvers.sample(m, "euler", steps=2, n=4, seed=2**64), "seed"),
    ("seed float", lambda m: solvers.sample(m, "euler", steps=2, n=4, seed=1.5), "seed"),
    ("seed bool", lambda m: solvers.sample(m, "euler", steps=2, n=4, seed=True), "seed"),
    ("steps 0", lambda m: solvers.sample(m, "euler", steps=0, n=4), "steps"),
    ("steps float", lambda m: solvers.sample(m, "euler", steps=2.5, n=4), "steps"),
    ("n 0", lambda m: solvers.sample(m, "euler", steps=2, n=0), "n must"),
    ("n str", lambda m: solvers.sample(m, "euler", steps=2, n="4"), "n must"),
    ("dtype int", lambda m: solvers.sample(m, "euler", steps=2, n=4, dtype=torch.int64), "dtype"),
    ("dtype str", lambda m: solvers.sample(m, "euler", steps=2, n=4, dtype="banana"), "dtype"),
    ("device unknown", lambda m: solvers.sample(m, "euler", steps=2, n=4, device="banana"), "device"),
    ("device absent", lambda m: solvers.sample(m, "euler", steps=2, n=4, device="cuda:7"), "cuda:7"),
    ("brownian not a path", lambda m: solvers.sample(m, "euler_maruyama", steps=2, n=4, brownian=42), "brownian"),
    ("option nan", lambda m: solvers.sample(m, "ddim", steps=2, n=4, eta=math.nan), "eta"),
    ("option inf", lambda m: solvers.sample(m, "ddim", steps=2, n=4, eta=math.inf), "eta"),
    ("option rtol inf", lambda m: solvers.sample(m, "dopri5", n=4, rtol=math.inf), "rtol"),
    ("unknown option", lambda m: solvers.sample(m, "euler", steps=2, n=4, etaa=1.0), "etaa"),
    ("pc adaptive predictor", lambda m: solvers.sample(m, "pc", steps=2, n=4, predictor="dopri5"), "dopri5"),
    ("trajectory flag", lambda m: solvers.sample(m, "euler", steps=2, n=4, return_trajectory="yes"),
     "return_trajectory"),
    ("VP eps > T", lambda m: solvers.VP(eps=2), "eps"),
    ("VP reversed betas", lambda m: solvers.VP(beta_min=20, beta_max=0.1), "beta_min"),
    ("VP nan beta", lambda m: solvers.VP(beta_max=math.nan), "beta_max"),
    ("VE reversed sigmas", lambda m: solvers.VE(sigma_min=50, sigma_max=1), "sigma_min"),
    ("VE inf sigma", lambda m: solvers.VE(sigma_max=math.inf), "sigma_max"),
    ("EDM negative sigma", lambda m: solvers.EDM(sigma_min=-1), "sigma_min"),
    ("SubVP str T", lambda m: solvers.SubVP(T="1"), "T"),
    ("DiscreteVP beta > 1", lambda m: solvers.DiscreteVP([0.1, 2.0]), "betas"),
    ("DiscreteVP one beta", lambda m: solvers.DiscreteVP([0.1]), "betas"),
    ("ScoreModel shape negative", lambda m: solvers.ScoreModel(lambda x, t: x, solvers.VP(), shape=(2, -1)), "shape"),
    ("ScoreModel shape int", lambda m: solvers.ScoreModel(lambda x, t: x, solvers.VP(), shape=2), "shape"),
    ("ScoreModel shape float", lambda m: solvers.ScoreModel(lambda x, t: x, solvers.VP(), shape=(2.5,)), "shape"),
    ("from_discrete bad betas", lambda m: solvers.ScoreModel.from_discrete(lambda x, k: x, [0.5, 1.5]), "betas"),
    ("from_discrete unknown kw", lambda m: solvers.ScoreModel.from_discrete(lambda x, k: x, [0.1, 0.2], foo=1),
     "foo"),
    ("models.load unknown kw", lambda m: models.load("gmm2d-vp", foo=1), "foo"),
    ("models.load trained kw", lambda m: models.load("digits-vp", beta_max=3.0), "beta_max"),
    ("models.load unknown name", lambda m: models.load("gmm3d-vp"), "gmm3d-vp"),
    ("register non-string name", lambda m: _register(name=5), "name"),
    ("register blank name", lambda m: _register(name=" padded "), "name"),
    ("register nfe_per_step 0", lambda m: _register(name="test_nfe0", nfe_per_step=0), "nfe_per_step"),
    ("register nfe_per_step float", lambda m: _register(name="test_nfe15", nfe_per_step=1.5), "nfe_per_step"),
    ("register negative order", lambda m: _register(name="test_order", order=-1), "order"),
    ("register not a solver", lambda m: solvers.register(dict), "Solver"),
    ("log_likelihood seed -1", lambda m: solvers.log_likelihood(m, torch.zeros(4, 2), seed=-1), "seed"),
    ("log_likelihood probes 0", lambda m: solvers.log_likelihood(m, torch.zeros(4, 2), trace="hutchinson", probes=0),
     "probes"),
    ("log_likelihood rtol nan", lambda m: solvers.log_likelihood(m, torch.zeros(4, 2), rtol=math.nan), "rtol"),
    ("step returns wrong shape", lambda m: solvers.sample(m, solvers.register(Bad, replace=True), steps=2, n=4),
     "step(0, x) returned"),
]


@pytest.mark.parametrize("case", API, ids=[c[0] for c in API])
def test_api_bad_input_is_an_input_error_naming_it(case, model):
    _, fn, needle = case
    with pytest.raises(InputError) as info:
        fn(model)
    assert needle in str(info.value)


def test_integers_from_numpy_and_0d_tensors_are_accepted(model):
    out = solvers.sample(model, "euler_maruyama", steps=np.int64(3), n=torch.tensor(8), seed=np.uint32(5))
    ref = solvers.sample(model, "euler_maruyama", steps=3, n=8, seed=5)
    assert out.steps == 3 and torch.equal(out.x, ref.x)
    assert solvers.ScoreModel(lambda x, t: x, solvers.VP(), shape=(np.int64(2),)).shape == (2,)
    x = torch.zeros(4, 2, dtype=torch.float64)
    ll = solvers.log_likelihood(model, x, rtol=1e-3, atol=1e-3, trace="hutchinson", probes=np.int64(1),
                                seed=torch.tensor(3))
    assert ll.logp.shape == (4,)


def test_inf_is_allowed_where_it_means_something(model):
    out = solvers.sample(model, "edm_stochastic", steps=3, n=8, S_max=math.inf)  # churn at every noise level
    assert torch.isfinite(out.x).all()


def test_exhausting_max_num_steps_is_its_own_error(model):
    with pytest.raises(StepLimitError, match="max_num_steps=3"):
        solvers.sample(model, "dopri5", n=8, rtol=1e-9, atol=1e-9, max_num_steps=3)
    assert not issubclass(StepLimitError, solvers.NonFiniteError)


# --------------------------------------------------------------------------------------------
# suites: everything is checked on load, before a run row exists
# --------------------------------------------------------------------------------------------

SUITES = [
    ("reference negative/zero", BASE + "reference = {ode_rtol = -1.0, sde_steps = 0}\n" + EULER, "reference.ode_rtol"),
    ("reference sde_steps 0", BASE + "reference = {sde_steps = 0}\n" + EULER, "reference.sde_steps"),
    ("reference sde_steps float", BASE + "reference = {sde_steps = 64.5}\n" + EULER, "reference.sde_steps"),
    ("reference ode_rtol nan", BASE + "reference = {ode_rtol = nan}\n" + EULER, "reference.ode_rtol"),
    ("reference unknown model table", BASE + 'reference = {"gmm9" = {ode_rtol = 1e-6}}\n' + EULER, "reference.gmm9"),
    ("models empty", BASE.replace('["gmm2d-vp"]', "[]") + EULER, "models"),
    ("models unknown", BASE.replace('"gmm2d-vp"', '"gmm3d"') + EULER, "gmm3d"),
    ("models not strings", BASE.replace('["gmm2d-vp"]', "[1]") + EULER, "models"),
    ("models scalar", BASE.replace('["gmm2d-vp"]', '"gmm2d-vp"') + EULER, "models"),
    ("models duplicate", BASE.replace('["gmm2d-vp"]', '["gmm2d-vp", "gmm2d-vp"]') + EULER, "more than once"),
    ("steps int in entry", BASE + '[[solvers]]\nname = "euler"\nsteps = 3\n', "steps"),
    ("steps int at top", BASE.replace("steps = [2, 4]", "steps = 3") + EULER, "steps"),
    ("steps empty", BASE.replace("steps = [2, 4]", "steps = []") + EULER, "steps"),
    ("steps zero", BASE.replace("steps = [2, 4]", "steps = [0, 2]") + EULER, "steps"),
    ("threads negative", BASE + "threads = -4\n" + EULER, "threads"),
    ("n too small", BASE.replace("n = 16", "n = 1") + EULER, "n"),
    ("repeats 0", BASE.replace("repeats = 1", "repeats = 0") + EULER, "repeats"),
    ("warmup negative", BASE.replace("warmup = 0", "warmup = -1") + EULER, "warmup"),
    ("seed beyond 2^63", BASE + "seeds = [-1]\n" + EULER, "seeds"),
    ("seeds empty", BASE + "seeds = []\n" + EULER, "seeds"),
    ("option nan", BASE + '[[solvers]]\nname = "ddim"\neta = nan\n', "eta"),
    ("option inf", BASE + '[[solvers]]\nname = "ddim"\neta = inf\n', "eta"),
    ("option list empty", BASE + '[[solvers]]\nname = "ddim"\neta = []\n', "eta"),
    ("option out of range", BASE + '[[solvers]]\nname = "ddim"\neta = 2.0\n', "eta"),
    ("option unknown", BASE + '[[solvers]]\nname = "euler"\netta = 1.0\n', "etta"),
    ("solver unknown", BASE + '[[solvers]]\nname = "eulr"\n', "eulr"),
    ("solver without name", BASE + "[[solvers]]\ngrid = \"uniform\"\n", "name"),
    ("budget too small", BASE.replace("steps = [2, 4]", "nfe = [1, 8]") + '[[solvers]]\nname = "heun"\n',
     "budget 1 is too small"),
    ("pc adaptive predictor", BASE + '[[solvers]]\nname = "pc"\npredictor = "dopri5"\n', "dopri5"),
    ("adaptive with steps", BASE + '[[solvers]]\nname = "dopri5"\nsteps = [3]\n', "adaptive"),
    ("grid unknown", BASE + 'grid = "banana"\n' + EULER, "banana"),
    ("entry grid unknown", BASE + '[[solvers]]\nname = "euler"\ngrid = "banana"\n', "banana"),
    ("metrics time and quality", BASE.replace('["sliced_w2"]', '["time", "sliced_w2"]') + EULER, "timing only"),
    ("metrics unknown", BASE.replace('"sliced_w2"', '"fid"') + EULER, "fid"),
    ("dtype", BASE + 'dtype = "float16"\n' + EULER, "dtype"),
    ("device", BASE + 'device = "tpu"\n' + EULER, "device"),
    ("unknown key", BASE + "sampels = 3\n" + EULER, "sampels"),
    ("no solvers", BASE, "solvers"),
    ("duplicate entries", BASE + EULER + EULER, "same cell"),
    ("likelihood rtol nan", BASE + "[[likelihood]]\nrtol = nan\n", "likelihood[0].rtol"),
    ("likelihood n 0", BASE + "[[likelihood]]\nn = 0\n", "likelihood[0].n"),
    ("likelihood probes 0", BASE + '[[likelihood]]\ntrace = "hutchinson"\nprobes = 0\n', "probes"),
    ("likelihood trace", BASE + '[[likelihood]]\ntrace = "approx"\n', "trace"),
    ("likelihood solver", BASE + '[[likelihood]]\nsolver = "euler"\n', "solver"),
    ("likelihood models empty", BASE + "[[likelihood]]\nmodels = []\n", "models"),
    ("likelihood exact prior trained", BASE.replace('["gmm2d-vp"]', '["checkerboard-vp"]')
     + '[[likelihood]]\nprior = "exact"\n', "prior"),
    ("name empty", BASE.replace('name = "tiny"', 'name = " "') + EULER, "name"),
    ("n too large", BASE.replace("n = 16", "n = 10000000000") + EULER, "n"),
    ("seeds float", BASE + "seeds = [0.5]\n" + EULER, "seeds"),
    ("predictor option nan", BASE + '[[solvers]]\nname = "pc"\npredictor = "ddim"\npredictor_options = {eta = nan}\n',
     "eta"),
    ("option wrong type", BASE + '[[solvers]]\nname = "euler"\ndenoise = "yes"\n', "denoise"),
    ("option nested list", BASE + '[[solvers]]\nname = "ddim"\neta = [[0.1]]\n', "eta"),
    ("solvers scalar", BASE + "solvers = 3\n", "solvers"),
    ("solvers entry scalar", BASE + "solvers = [3]\n", "solvers[0]"),
    ("likelihood entry scalar", BASE + "likelihood = [3]\n", "likelihood[0]"),
    ("likelihood models scalar", BASE + '[[likelihood]]\nmodels = "gmm2d-vp"\n', "likelihood[0].models"),
    ("reference model table key", BASE + 'reference = {"gmm2d-vp" = {foo = 1}}\n' + EULER, "foo"),
    ("steps and nfe in entry", BASE + '[[solvers]]\nname = "euler"\nsteps = [2]\nnfe = [4]\n', "not both"),
    ("imports missing module", BASE + 'imports = ["no_such_module_xyz"]\n' + EULER, "no_such_module_xyz"),
]


@pytest.mark.parametrize("case", SUITES, ids=[c[0] for c in SUITES])
def test_bad_suites_are_refused_before_a_run_exists(case, tmp_path, capsys):
    _, text, needle = case
    with pytest.raises(SuiteError) as info:
        load_suite(str(suite_file(tmp_path, text)))
    assert needle in str(info.value) and "tiny.toml" in str(info.value)
    store = tmp_path / "s.sqlite"
    code, _, err = run_cli(tmp_path, capsys, suite=suite_file(tmp_path, text), store=store)
    assert code == 2 and needle in err
    assert not store.exists()  # refused before the store is even opened: no orphan run


@pytest.mark.parametrize("argv,needle", [
    (["--n", "1"], "--n"),
    (["--n", "0"], "--n"),
    (["--threads", "-4"], "--threads"),
    (["--resume", "abc"], "abc"),
    (["--resume", "-3"], "-3"),
    (["--resume", "99"], "no run 99"),
    (["--models", "gmm64-vp"], "not in the suite: gmm64-vp"),
    (["--models", ","], "--models"),
], ids=["n 1", "n 0", "threads -4", "resume abc", "resume negative", "resume unknown", "models foreign",
        "models empty"])
def test_run_overrides_go_through_the_same_checks(argv, needle, tmp_path, capsys):
    code, _, err = run_cli(tmp_path, capsys, *argv)
    assert code == 2 and needle in err


@pytest.mark.parametrize("what", ["directory", "binary", "missing", "latin-1"])
def test_bad_suite_paths(what, tmp_path, capsys):
    p = {"directory": tmp_path, "missing": tmp_path / "nope.toml", "binary": tmp_path / "b.toml",
         "latin-1": tmp_path / "l.toml"}[what]
    if what == "binary":
        p.write_bytes(bytes(range(256)) * 4)
    if what == "latin-1":
        p.write_bytes("name = 'caf\xe9'\n".encode("latin-1"))
    code, _, err = call(["run", p, "--store", tmp_path / "s.sqlite", "--no-report"], capsys)
    assert code == 2 and str(p) in err


# --------------------------------------------------------------------------------------------
# the store: damaged, foreign, newer, unusable paths; read-only commands create nothing
# --------------------------------------------------------------------------------------------

def _committed_store(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    assert run_cli(tmp_path, capsys, store=store)[0] == 0
    return store


def _random(p, tmp_path, capsys):
    p.write_bytes(os.urandom(4096))


def _truncated(p, tmp_path, capsys):
    src = _committed_store(tmp_path, capsys)
    Store(src).close()  # checkpoint the WAL into the file
    data = src.read_bytes()
    p.write_bytes(data[: len(data) // 3 + 100])


def _header_damaged(p, tmp_path, capsys):
    src = _committed_store(tmp_path, capsys)
    Store(src).close()
    data = bytearray(src.read_bytes())
    data[:16] = b"not sqlite at al"
    p.write_bytes(bytes(data))


def _foreign(p, tmp_path, capsys):
    db = sqlite3.connect(p)
    db.execute("CREATE TABLE photos (id INTEGER, path TEXT)")
    db.commit()
    db.close()


def _half_schema(p, tmp_path, capsys):
    db = sqlite3.connect(p)
    db.execute("CREATE TABLE runs (id INTEGER, name TEXT)")
    db.commit()
    db.close()


def _newer(p, tmp_path, capsys):
    Store(p).close()
    db = sqlite3.connect(p)
    db.execute("PRAGMA user_version=99")
    db.close()


STORES = [("random bytes", _random, "not an SQLite database"), ("truncated", _truncated, "damaged"),
          ("damaged header", _header_damaged, "not an SQLite database"),
          ("another schema", _foreign, "something else"), ("half a schema", _half_schema, "lacks"),
          ("newer version", _newer, "newer")]


@pytest.mark.parametrize("case", STORES, ids=[c[0] for c in STORES])
@pytest.mark.parametrize("command", ["list", "run", "export", "compare"])
def test_damaged_or_foreign_stores_are_one_clear_line_and_left_untouched(case, command, tmp_path, capsys):
    _, make, needle = case
    p = tmp_path / "bad.sqlite"
    make(p, tmp_path, capsys)
    before = p.read_bytes()
    argv = {"list": ["list", "runs"], "export": ["export", "latest"], "compare": ["compare", "1", "latest"],
            "run": ["run", suite_file(tmp_path), "--no-report", "--quiet"]}[command]
    code, _, err = call([*argv, "--store", p], capsys)
    assert code == 2 and str(p) in err and needle in err
    assert "--store" in err or "upgrade" in err
    assert p.read_bytes() == before  # nothing written into someone else's file


@pytest.mark.parametrize("where", ["under a file", "in /proc", "a directory", "a device"])
def test_unusable_store_paths(where, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    p = {"under a file": tmp_path / "f" / "s.sqlite", "in /proc": "/proc/sdebench-test/s.sqlite",
         "a directory": tmp_path, "a device": "/dev/null"}[where]
    code, _, err = call(["run", suite_file(tmp_path), "--store", p, "--no-report", "--quiet"], capsys)
    assert code == 2 and str(p) in err


def test_read_only_commands_create_no_store(tmp_path, capsys):
    missing = tmp_path / "results" / "none.sqlite"
    code, out, _ = call(["list", "runs", "--store", missing], capsys)
    assert code == 0 and "no runs" in out
    for argv in (["export", "latest"], ["report", "1"], ["compare", "1", "2"]):
        code, _, err = call([*argv, "--store", missing], capsys)
        assert code == 2 and "no results store" in err
    assert not missing.parent.exists()
    Store(tmp_path / "empty.sqlite").close()
    code, out, _ = call(["list", "runs", "--store", tmp_path / "empty.sqlite"], capsys)
    assert code == 0 and "no runs" in out


# --------------------------------------------------------------------------------------------
# runs: disk full, Ctrl-C, stale "running", changed --resume definitions
# --------------------------------------------------------------------------------------------

def _cells(store):
    s = Store(store)
    try:
        return s.cells(1), s.run(1)
    finally:
        s.close()


def test_disk_full_keeps_committed_cells_and_resumes(tmp_path, capsys, monkeypatch):
    real, calls = Store.add_cell, []

    def full(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, *a, **kw)

    monkeypatch.setattr(Store, "add_cell", full)
    code, _, err = run_cli(tmp_path, capsys)
    assert code == 2 and "disk is full" in err and "is lost" in err and "1 committed cells are kept" in err
    assert "--resume 1" in err
    cells, run = _cells(tmp_path / "s.sqlite")
    assert len(cells) == 1 and run["status"] == "interrupted"
    monkeypatch.setattr(Store, "add_cell", real)
    assert run_cli(tmp_path, capsys, "--resume", "1")[0] == 0
    cells2, run2 = _cells(tmp_path / "s.sqlite")
    assert len(cells2) == 2 and run2["status"] == "complete"
    assert cells2["key"].iloc[0] == cells["key"].iloc[0]  # the committed cell was kept, not recomputed


def test_ctrl_c_ends_a_run_with_the_resume_command(tmp_path, capsys, monkeypatch):
    interrupt_at_second_cell(monkeypatch)
    code, _, err = run_cli(tmp_path, capsys)
    assert code == 130 and "interrupted" in err and "--resume 1" in err and len(err.strip().splitlines()) == 1
    cells, run = _cells(tmp_path / "s.sqlite")
    assert len(cells) == 1 and run["status"] == "interrupted"
    code, out, _ = call(["list", "runs", "--store", tmp_path / "s.sqlite"], capsys)
    assert "interrupted" in out and "--resume 1" in out


def test_resuming_a_run_still_running_in_another_process_is_refused(tmp_path, capsys):
    store = _committed_store(tmp_path, capsys)
    s = Store(store)
    s.set_status(1, "running")
    s.db.execute("UPDATE run_process SET pid=? WHERE run_id=1", (os.getppid(),))  # alive, not us
    s.close()
    code, _, err = run_cli(tmp_path, capsys, "--resume", "1", store=store)
    assert code == 2 and "still running" in err and str(os.getppid()) in err


def test_a_running_run_whose_process_is_gone_lists_as_interrupted(tmp_path, capsys):
    store = _committed_store(tmp_path, capsys)
    s = Store(store)
    s.set_status(1, "running")
    dead = 2**22 + 12345
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    s.db.execute("UPDATE run_process SET pid=? WHERE run_id=1", (dead,))
    s.close()
    code, out, _ = call(["list", "runs", "--store", store], capsys)
    assert code == 0 and "interrupted" in out and "--resume 1" in out


@pytest.mark.parametrize("change,needle", [
    (["--n", "50"], "n: 16 -> 50"),
    ("seeds = [1]\n", "seed: 0 -> 1"),
    ('[[solvers]]\nname = "ddim"\neta = 0.5\n', "solver"),
    ("steps = [2, 8]", "steps"),
], ids=["n", "seeds", "another solver", "steps"])
def test_resume_with_another_definition_is_refused_and_loses_nothing(change, needle, tmp_path, capsys):
    store = _committed_store(tmp_path, capsys)
    before, _ = _cells(store)
    if isinstance(change, list):
        code, _, err = run_cli(tmp_path, capsys, "--resume", "1", *change)
    else:
        text = BASE.replace("steps = [2, 4]", change) + EULER if change.startswith("steps") else \
            (BASE + change + EULER if change.startswith("seeds") else BASE + EULER + change)
        code, _, err = run_cli(tmp_path, capsys, "--resume", "1", suite=suite_file(tmp_path, text))
    assert code == 2 and needle in err and "--resume 1" in err
    after, run = _cells(store)
    assert list(after["key"]) == list(before["key"]) and run["status"] == "complete"


# --------------------------------------------------------------------------------------------
# outputs: no collisions, no silent overwrites, never into the package
# --------------------------------------------------------------------------------------------

def test_two_stores_in_one_directory_write_to_distinct_places(tmp_path, capsys):
    for name in ("a.sqlite", "b.sqlite"):
        assert run_cli(tmp_path, capsys, store=tmp_path / name)[0] == 0
    assert (tmp_path / "a-run-1" / "cells.csv").exists() and (tmp_path / "b-run-1" / "cells.csv").exists()
    out = tmp_path / "exports"
    out.mkdir()
    for name in ("a", "b"):
        assert call(["export", "1", "--store", tmp_path / f"{name}.sqlite", "--csv", out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["a-run-1.csv", "b-run-1.csv"]
    code, _, err = call(["report", "1", "--store", tmp_path / "a.sqlite", "--out", tmp_path / "a.sqlite"], capsys)
    assert code == 2 and "--out" in err


def test_train_never_writes_into_the_package_nor_overwrites(tmp_path, capsys, monkeypatch):
    from bench.zoo import train as train_mod

    def fake(name, recipe, out_dir, seed, steps, log):  # where it writes is under test, not training
        out_dir.mkdir(parents=True, exist_ok=True)
        for ext in (".safetensors", ".json"):
            (out_dir / f"{name}{ext}").write_text("{}")
        return {}

    monkeypatch.setattr(train_mod, "_train", fake)
    monkeypatch.chdir(tmp_path)
    shipped = (CHECKPOINTS / "checkerboard-vp.safetensors").read_bytes()
    code, _, err = call(["train", "checkerboard-vp", "--steps", "1", "--out", CHECKPOINTS], capsys)
    assert code == 2 and "shipped checkpoints" in err
    (tmp_path / "file").write_text("x")
    for argv, needle in ((["--out", tmp_path / "file"], "is a file"), (["--threads", "-1"], "--threads"),
                         (["--steps", "0"], "--steps"), (["--seed", "-1"], "--seed")):
        code, _, err = call(["train", "checkerboard-vp", *argv], capsys)
        assert code == 2 and needle in err
    assert call(["train", "checkerboard-vp", "--steps", "2"], capsys)[0] == 0  # default: ./checkpoints
    assert (tmp_path / "checkpoints" / "checkerboard-vp.json").exists()
    code, _, err = call(["train", "checkerboard-vp", "--steps", "2"], capsys)
    assert code == 2 and "--force" in err
    assert call(["train", "checkerboard-vp", "--steps", "2", "--force"], capsys)[0] == 0
    assert (CHECKPOINTS / "checkerboard-vp.safetensors").read_bytes() == shipped


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------

def _copy(tmp_path, name="checkerboard-vp"):
    for ext in (".json", ".safetensors"):
        shutil.copy(CHECKPOINTS / f"{name}{ext}", tmp_path / f"{name}{ext}")
    card = tmp_path / f"{name}.json"
    return card, json.loads(card.read_text())


def _flip(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def test_card_without_sha256_is_refused_unless_verify_false(tmp_path):
    card_path, card = _copy(tmp_path)
    del card["sha256"]
    card_path.write_text(json.dumps(card))
    _flip(tmp_path / card["weights"])
    with pytest.raises(CheckpointError, match="sha256"):
        trained.load(card_path)
    with pytest.warns(UserWarning, match="without verifying"):
        trained.load(card_path, verify=False)


@pytest.mark.parametrize("change,needle", [
    ({"weights": "../outside.safetensors"}, "outside"),
    ({"weights": "/etc/passwd"}, "outside"),
    ({"shape": [3]}, "shape"),
    ({"shape": [1, 8, 8]}, "shape"),
], ids=["weights ../", "weights absolute", "shape 3", "shape image"])
def test_card_paths_and_shapes_are_checked(change, needle, tmp_path):
    sub = tmp_path / "ck"
    sub.mkdir()
    card_path, card = _copy(sub)
    shutil.copy(sub / card["weights"], tmp_path / "outside.safetensors")
    card.update(change)
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=needle):
        trained.load(card_path)


def test_flipped_byte_with_sha256_is_refused(tmp_path):
    card_path, card = _copy(tmp_path)
    _flip(tmp_path / card["weights"])
    with pytest.raises(CheckpointError, match="sha256"):
        trained.load(card_path)


# --------------------------------------------------------------------------------------------
# the compare gate
# --------------------------------------------------------------------------------------------

def _frame(**cols):
    import pandas as pd

    row = {"key": "k1", "model": "gmm2d-vp", "solver": "euler", "options": "{}", "budget": None, "seed": 0,
           "nfe": 4, "sliced_w2": 0.1, "time_median_s": 0.1, **cols}
    return pd.DataFrame([row]).set_index("key")


@pytest.mark.parametrize("kw", [{"rtol": math.nan}, {"rtol": -1.0}, {"rtol": math.inf}, {"time_factor": math.nan},
                                {"time_factor": 0.5}, {"min_time_s": math.nan}, {"atol": -1.0}],
                         ids=["rtol nan", "rtol negative", "rtol inf", "time nan", "time < 1", "min_time nan",
                              "atol negative"])
def test_compare_options_are_validated(kw):
    with pytest.raises(InputError):
        compare(_frame(), _frame(), **kw)


@pytest.mark.parametrize("argv", [["--rtol", "nan"], ["--time-factor", "nan"], ["--rtol", "-0.1"],
                                  ["--time-factor", "1"], ["--min-time", "inf"]])
def test_compare_cli_options_are_validated(argv, tmp_path, capsys):
    csv = tmp_path / "x.csv"
    _frame().to_csv(csv)
    code, _, err = call(["compare", csv, csv, *argv, "--store", tmp_path / "none.sqlite"], capsys)
    assert code == 2 and argv[0] in err
    assert not (tmp_path / "none.sqlite").exists()


@pytest.mark.parametrize("content,needle", [
    (b"format,key\nabc,k\n", "format"), (b"a,b\n1,2\n", "key"), (bytes(range(128, 256)) * 4, "not a cells CSV"),
    (b"", "not a cells CSV"), (b"format,key\n1,k\n1,k\n", "repeat"),
], ids=["format text", "no key", "binary", "empty", "duplicate keys"])
def test_compare_of_bad_csvs(content, needle, tmp_path, capsys):
    bad, good = tmp_path / "bad.csv", tmp_path / "good.csv"
    bad.write_bytes(content)
    _frame().to_csv(good)
    code, _, err = call(["compare", bad, good, "--store", tmp_path / "none.sqlite"], capsys)
    assert code == 2 and needle in err and str(bad) in err
    assert not (tmp_path / "none.sqlite").exists()


def test_nan_in_head_where_base_was_finite_is_a_regression():
    for col in ("sliced_w2", "nfe"):
        _, code = compare(_frame(), _frame(**{col: math.nan}))
        assert code == 1, col
    _, code = compare(_frame(), _frame(time_median_s=math.nan))
    assert code == 3


def test_compare_of_different_definitions_says_what_differs(tmp_path, capsys):
    store = _committed_store(tmp_path, capsys)
    assert run_cli(tmp_path, capsys, "--n", "32", store=store)[0] == 0
    code, out, _ = call(["compare", "1", "2", "--store", store, "--no-time"], capsys)
    assert code == 1 and "definition" in out and "n=16" in out and "n=32" in out
    assert "new" not in out and "missing" not in out


# --------------------------------------------------------------------------------------------
# the CLI: every command's bad input ends in one line and exit 2
# --------------------------------------------------------------------------------------------

CLI = [
    (["sample", "gmm2d-vp", "euler_maruyama", "--seed", "-1"], "--seed"),
    (["sample", "gmm2d-vp", "euler", "--n", "0"], "--n"),
    (["sample", "gmm2d-vp", "euler", "--steps", "0"], "--steps"),
    (["sample", "gmm2d-vp", "eulr"], "eulr"),
    (["sample", "gmm2d-vp", "ddim", "-o", "eta=nan", "--n", "16"], "eta"),
    (["sample", "gmm2d-vp", "ddim", "-o", "etta=1", "--n", "16"], "etta"),
    (["sample", "gmm2d-vp", "ddim", "-o", "eta", "--n", "16"], "KEY=VALUE"),
    (["sample", "gmm2d-vp", "euler", "--grid", "banana", "--n", "16"], "banana"),
    (["sample", "gmm2d-vp", "euler", "--threads", "0"], "--threads"),
    (["likelihood", "gmm2d-vp", "--n", "0"], "--n"),
    (["likelihood", "gmm2d-vp", "--rtol", "nan", "--n", "8"], "rtol"),
    (["likelihood", "gmm2d-vp", "--probes", "0"], "--probes"),
    (["demo", "--n", "0"], "--n"),
    (["demo", "--nfe", "0"], "--nfe"),
    (["train", "nope", "--steps", "1"], "nope"),
    (["export", "abc"], "abc"),
    (["report", "0"], "0"),
    (["list", "things"], "things"),
    (["compare", "missing.csv", "1"], "missing.csv"),
]


@pytest.mark.parametrize("argv,needle", CLI, ids=[" ".join(c[0]) for c in CLI])
def test_cli_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    Store(store).close()
    code, _, err = call([*argv, "--store", store] if argv[0] in ("export", "report", "list", "compare") else argv,
                        capsys)
    assert code == 2 and needle in err


def test_sample_takes_solver_options(capsys):
    code, out, _ = call(["sample", "gmm2d-vp", "ddim", "--steps", "4", "--n", "64", "-o", "eta=1.0"], capsys)
    assert code == 0 and "nfe=4" in out
    code, out, _ = call(["sample", "gmm2d-vp", "dopri5", "--n", "16", "-o", "rtol=1e-3", "-o", "atol=1e-3"], capsys)
    assert code == 0

