"""The harness end to end: suites, the runner, the SQLite store, resume after SIGKILL,
concurrent writers, the Ray executor, CLI and progress."""
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from bench import cli
from bench.harness import execute, runner
from bench.harness.store import Store
from bench.harness.suite import SuiteError, available_suites, load_suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """
name = "tiny"
models = ["gmm2d-vp"]
n = 64
seeds = [0]
nfe = [4, 8]
metrics = ["discretization", "sliced_w2", "mmd2", "energy", "w2"]
repeats = 1
warmup = 0
reference = {{ ode_rtol = 1e-8, sde_steps = 256 }}
{extra}
[[solvers]]
name = "euler"
[[solvers]]
name = "heun"
[[solvers]]
name = "ddim"
eta = [0.0, 1.0]
[[solvers]]
name = "euler_maruyama"
[[solvers]]
name = "pc"
snr = 0.1
"""


def write_suite(tmp_path, extra="", name="tiny.toml", body=TINY):
    p = tmp_path / name
    p.write_text(body.format(extra=extra))
    return p


def run_cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_shipped_suites_parse_and_cover_every_family():
    assert {"quick", "full"} <= set(available_suites())
    quick = load_suite("quick")
    kinds = {__import__("solvers").get(c.solver).kind for c in quick.cells()}
    assert {"ode", "sde", "corrector"} <= kinds
    full = load_suite("full")
    import solvers
    assert {c.solver for c in full.cells() if c.task == "sample"} >= set(solvers.available()) - {
        n for n in solvers.available() if n.startswith("test_") or n.startswith("my_")}
    assert len(full.steps) == 8 and min(full.steps) == 5 and max(full.steps) == 1000 and len(full.seeds) == 3


def test_models_override_keeps_a_part_of_a_suite():
    part = load_suite("full").override(models="gmm2d-ve, gmm2d-vp")
    cells = part.cells()
    assert {c.model for c in cells} == {"gmm2d-vp", "gmm2d-ve"} and {c.task for c in cells} == {"sample", "likelihood"}
    whole = {c.key for c in load_suite("full").cells()}
    assert {c.key for c in cells} <= whole  # the same cells as in the whole suite, fewer of them


def test_tiny_suite_runs_and_the_store_holds_every_cell(tmp_path):
    suite = load_suite(str(write_suite(tmp_path)))
    cells = suite.cells()
    assert len(cells) == 2 * 6  # two budgets x (euler, heun, ddim x2, euler_maruyama, pc)
    store = Store(tmp_path / "s.sqlite")
    stream = io.StringIO()
    run_id = runner.run_suite(suite, store, stream=stream)
    df = store.cells(run_id)
    assert len(df) == len(cells) and df["error"].isna().all()
    assert set(df["key"]) == {c.key for c in cells}
    for col in ("sliced_w2_floor", "time_median_s", "time_overhead"):
        assert df[col].notna().all(), col
    for col in ("sliced_w2", "mmd2", "energy", "w2"):  # measured, or at floor at the budget of 4
        at_floor = df[col + "_at_floor"].eq(1) if col + "_at_floor" in df else False
        assert (df[col].notna() | at_floor).all() and df.loc[df.budget == 4, col].notna().all(), col
    det = df[df.solver.isin(["euler", "heun"])]
    assert (det["discretization"] > 0).all()
    # heun spends 2 NFE per step: at a budget of 8 it takes 4 steps
    assert df[(df.solver == "heun") & (df.budget == 8)]["steps"].item() == 4
    assert "[12/12]" in stream.getvalue() and "ETA" in stream.getvalue()
    info = store.run(run_id)
    assert info["status"] == "complete" and info["wall_s"] > 0 and info["torch"] == torch.__version__
    csv = store.to_csv(run_id, tmp_path / "cells.csv")
    assert csv.read_text().count("\n") == len(cells) + 1


def test_resume_after_sigkill_finishes_without_recomputing_or_duplicating(tmp_path):
    # slow enough cells that the kill lands mid-run
    suite = write_suite(tmp_path, body=TINY.replace("nfe = [4, 8]", "nfe = [4, 8, 16, 32, 64]"))
    db = tmp_path / "s.sqlite"
    proc = run_cli(["run", str(suite), "--store", str(db)])
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline:
        time.sleep(0.2)
        if db.exists():
            try:
                done = sqlite3.connect(db).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if done >= 3:
                break
    assert done >= 3, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = sqlite3.connect(db).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    total = len(load_suite(str(suite)).cells())
    assert before < total, "the kill came too late to test resuming"
    res = run_cli(["run", str(suite), "--store", str(db), "--resume"])
    out, err = res.communicate(timeout=600)
    assert res.returncode == 0, err
    assert f"{before} already done, {total - before} to run" in err
    assert err.count("elapsed") == total - before, "finished cells were recomputed"
    con = sqlite3.connect(db)
    n, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM cells").fetchone()
    assert n == distinct == total
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1


def test_two_runs_write_to_one_store_concurrently(tmp_path):
    suite = write_suite(tmp_path)
    db = tmp_path / "shared.sqlite"
    procs = [run_cli(["run", str(suite), "--store", str(db), "--quiet"]) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = con.execute("SELECT run_id, COUNT(*) FROM cells GROUP BY run_id").fetchall()
    assert [c for _, c in counts] == [12, 12]


@pytest.mark.parametrize("body, match", [
    ('name = "x"\nmodels = ["gmm2d-vp"]\nnfe = [4]\nsolverz = []\n[[solvers]]\nname = "euler"\n', r"solverz: unknown key; allowed: description"),
    ('models = ["nope"]\nnfe = [4]\n[[solvers]]\nname = "euler"\n', r"models: unknown model 'nope'; available: gmm2d"),
    ('models = ["gmm2d-vp"]\nnfe = [4]\n[[solvers]]\nname = "eulr"\n', r"solvers\[0\]\.name: unknown solver 'eulr'"),
    ('models = ["gmm2d-vp"]\nnfe = [4]\n[[solvers]]\nname = "ddim"\neta = [0.0, 7.0]\n', r"solvers\[0\]: .*option eta must be a number in \[0, 1\], got 7.0"),
    ('models = ["gmm2d-vp"]\nnfe = [4]\n[[solvers]]\nname = "euler"\nfoo = 1\n', r"solvers\[0\]: .*unknown option\(s\) foo"),
    ('models = ["gmm2d-vp"]\n[[solvers]]\nname = "euler"\n', r"solvers\[0\]: euler needs steps or nfe"),
    ('models = ["gmm2d-vp"]\nnfe = [4]\nmetrics = ["fid"]\n[[solvers]]\nname = "euler"\n', r"metrics: unknown \['fid'\]"),
    ('models = ["gmm2d-vp"]\nnfe = [0]\n[[solvers]]\nname = "euler"\n', r"nfe: must be a non-empty list of integers in \[1, 1000000\]"),
    ('models = "gmm2d-vp"\n', r"models: must be a list"),
    ('models = ["gmm2d-vp"\n', r"not valid TOML"),
    ('models = ["gmm2d-vp"]\nnfe = [4]\ndtype = "float16"\n[[solvers]]\nname = "euler"\n', r"dtype: must be one of float32, float64"),
])
def test_malformed_suites_are_rejected_naming_file_and_key(tmp_path, body, match):
    p = tmp_path / "bad.toml"
    p.write_text(body)
    with pytest.raises(SuiteError, match=match) as e:
        load_suite(str(p))
    assert str(p) in str(e.value)


def test_unknown_suite_name_lists_the_shipped_ones():
    with pytest.raises(SuiteError, match="shipped suites: ci, full, quick"):
        load_suite("quik")


def test_cli_reports_bad_suites_without_a_traceback(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text('models = ["gmm2d-vp"]\nnfe = [4]\n[[solvers]]\nname = "eulr"\n')
    assert cli.main(["run", str(p), "--store", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "unknown solver 'eulr'" in err and "Traceback" not in err


def test_cuda_is_refused_cleanly_when_absent(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    p = write_suite(tmp_path, extra='device = "cuda"')
    with pytest.raises(SuiteError, match="cuda requested but torch.cuda.is_available"):
        load_suite(str(p))
    from bench.harness.timing import time_call
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        time_call(lambda: None, device="cuda")


def test_failed_cell_is_recorded_not_lost(tmp_path, monkeypatch):
    suite = load_suite(str(write_suite(tmp_path)))
    cell = suite.cells()[0]
    monkeypatch.setattr(execute, "_sample_cell", lambda c, *a, **k: (_ for _ in ()).throw(FloatingPointError("boom")))
    result = execute.execute_cell(cell)
    assert result.error == "FloatingPointError: boom" and "Traceback" in result.traceback


def test_progress_plain_lines_in_logs():
    s = io.StringIO()
    p = runner.Progress(3, s)
    for k in range(3):
        p.update(f"cell {k}")
    lines = s.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("[3/3]") and "ETA 0:00:00" in lines[-1]


def test_ray_executor_matches_local_on_deterministic_cells(tmp_path):
    pytest.importorskip("ray")
    body = TINY.replace('[[solvers]]\nname = "euler_maruyama"\n[[solvers]]\nname = "pc"\nsnr = 0.1\n', "")
    suite = load_suite(str(write_suite(tmp_path, body=body)))
    store = Store(tmp_path / "s.sqlite")
    local = store.cells(runner.run_suite(suite, store, progress=False))
    remote = store.cells(runner.run_suite(suite, store, executor="ray", progress=False))
    cols = ["discretization", "sliced_w2", "mmd2", "energy", "w2", "nfe"]
    det = local[~((local.solver == "ddim") & local.options.str.contains("1.0"))]
    merged = det.merge(remote, on="key", suffixes=("_l", "_r"))
    assert len(merged) == len(det) > 0
    for c in cols:
        assert (merged[c + "_l"] - merged[c + "_r"]).abs().max() < 1e-12, c


def test_cli_sample_and_likelihood(capsys):
    assert cli.main(["sample", "gmm2d-vp", "heun", "--steps", "5", "--n", "100"]) == 0
    assert "nfe=10" in capsys.readouterr().out
    assert cli.main(["likelihood", "gmm2d-vp", "--n", "50", "--rtol", "1e-4", "--atol", "1e-4"]) == 0
    out = capsys.readouterr().out
    assert "nats/dim" in out and "bits/dim" in out
    assert cli.main(["likelihood", "gmm2d-vp", "--rtol", "0"]) == 2
    assert "rtol" in capsys.readouterr().err
    assert cli.main(["list", "solvers"]) == 0
    assert "dopri5" in capsys.readouterr().out


def test_trained_models_run_through_the_harness(tmp_path):
    """Trained models: no exact prior, held-out data as the target, NLL for likelihood cells."""
    p = tmp_path / "t.toml"
    p.write_text('models = ["checkerboard-vp", "digits-vp"]\nn = 16\nnfe = [4]\nrepeats = 1\nwarmup = 0\n'
                 'metrics = ["discretization", "sliced_w2", "fd_digits"]\n'
                 'reference = { ode_rtol = 1e-5, sde_steps = 64 }\n'
                 '[[solvers]]\nname = "dpmpp_2m"\n[[solvers]]\nname = "euler_maruyama"\n'
                 '[[likelihood]]\nsolver = "dopri5"\nrtol = 1e-3\natol = 1e-3\ntrace = "hutchinson"\nn = 8\n')
    suite = load_suite(str(p))
    assert all(not c.exact_prior for c in suite.cells())
    store = Store(tmp_path / "s.sqlite")
    df = store.cells(runner.run_suite(suite, store, progress=False))
    assert df["error"].isna().all(), df["error"].dropna().tolist()
    sample = df[df.task == "sample"]
    assert sample["discretization"].notna().all() and sample["sliced_w2_floor"].notna().all()
    digits = sample[sample.model == "digits-vp"]
    assert digits["fd_digits"].notna().all() and digits["fd_digits_floor"].notna().all()
    assert sample[sample.model == "checkerboard-vp"]["fd_digits"].isna().all()
    lik = df[df.task == "likelihood"]
    assert len(lik) == 2 and lik["bpd"].notna().all()
