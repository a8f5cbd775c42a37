"""Your own model through every command: a diffusers pipeline, a k-diffusion-style denoiser and a
callable module, built inside the tests, each swept by ``sdebench run``, reported and compared
with a baseline (the same weights: no change; other weights: "model changed", not a regression);
``sample``, ``tune`` and ``recommend`` on a ``diffusers:`` spec; a model from an installed
package's entry point in a suite; every wrong spec one line, exit 2, and no store."""
import importlib
import shutil
import sys

import pytest
from conftest import cheap_scheduler, install_plugin, save_tiny_ddpm, uninstall_plugin, write_user_modules

from bench.cli import main
from bench.harness.cell import Cell
from bench.harness.store import Store
from bench.zoo import models

SUITE = """name = "own-{kind}"
n = 8
nfe = [3, 6]
repeats = 1
warmup = 0
metrics = ["discretization"]
reference = {{ ode_rtol = 1e-6 }}

[[models]]
name = "mine"
spec = "{spec}"
{settings}

[[solvers]]
name = "ddim"
[[solvers]]
name = "heun"
"""
SETTINGS = {"diffusers": 'ignore = ["clip_sample"]', "denoiser": "",
            "callable": 'sde = "vp"\nprediction = "eps"\nshape = [2]'}


def build(kind, folder, version=0):
    """The model of ``kind`` in ``folder``; ``version`` changes its weights."""
    if kind == "diffusers":
        save_tiny_ddpm(folder / "pipe", seed=version, scheduler=cheap_scheduler())
        return "diffusers:pipe"
    write_user_modules(folder)
    if version:  # other weights: another seed, another Gaussian
        for name, old, new in (("user_callable", "manual_seed(0)", "manual_seed(1)"), ("user_denoiser", "C = 0.5",
                                                                                         "C = 0.7")):
            path = folder / f"{name}.py"
            path.write_text(path.read_text().replace(old, new))
    for name in ("user_callable", "user_denoiser"):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return {"denoiser": "denoiser:user_denoiser:denoise", "callable": "callable:user_callable:net"}[kind]


@pytest.mark.parametrize("kind", ["diffusers", "denoiser", "callable"])
def test_own_model_is_run_reported_and_compared(tmp_path, monkeypatch, capsys, kind):
    if kind == "diffusers":
        pytest.importorskip("diffusers")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = build(kind, tmp_path)
    suite, store, base = tmp_path / "own.toml", tmp_path / "own.sqlite", tmp_path / "base.csv"
    suite.write_text(SUITE.format(kind=kind, spec=spec, settings=SETTINGS[kind]))
    run = ["run", str(suite), "--store", str(store), "--no-report", "--quiet"]
    assert main(run) == 0
    df = Store(store, create=False).cells(1)
    assert len(df) == 4 and df["error"].isna().all() and (df["discretization"] > 0).all()
    cell = Cell.from_json(df["cell"].iloc[0])
    assert cell.model == "mine" and cell.model_spec["spec"].startswith(f"{kind}:")
    assert cell.model_spec["fingerprint"] == models.fingerprint(cell.model_ref())
    assert main(["export", "1", "--csv", str(base), "--store", str(store)]) == 0
    assert main(run) == 0  # same weights: the gate passes, nothing changed
    assert main(["compare", str(base), "latest", "--store", str(store), "--time-factor", "1000"]) == 0
    assert "model changed" not in capsys.readouterr().out
    build(kind, tmp_path, version=1)
    assert main(run) == 0
    assert main(["compare", str(base), "latest", "--store", str(store), "--time-factor", "1000"]) == 0
    out = capsys.readouterr().out
    assert out.count("model changed") == 4 and "REGRESSION" not in out
    assert main(["report", "latest", "--store", str(store)]) == 0
    report = next(tmp_path.glob("own-run-3/report.md")).read_text()
    assert "mine" in report


def test_sample_tune_and_recommend_on_a_diffusers_spec(tmp_path, tiny_ddpm, capsys):
    spec = f"diffusers:{tiny_ddpm}?ignore=clip_sample"
    assert main(["sample", spec, "ddim", "--steps", "3", "--n", "4", "-o", "denoise=true"]) == 0
    assert "steps=3 nfe=4" in capsys.readouterr().out
    grid = tmp_path / "grid.json"
    assert main(["tune", spec, "ddim", "--nfe", "3", "--n", "4", "--out", str(grid)]) == 0
    assert grid.exists() and "held-out error" in capsys.readouterr().out
    store = tmp_path / "rec.sqlite"
    assert main(["recommend", spec, "--nfe", "4", "--n", "8", "--solvers", "ddim", "dpmpp_2m", "--store", str(store),
                 "--no-report", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "ranked by discretization" in out and "reproduce: sdebench sample" in out


def test_an_installed_packages_model_runs_in_a_suite(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch)
    suite = tmp_path / "plug.toml"
    suite.write_text('models = ["plug-mixture"]\nn = 16\nnfe = [4]\nrepeats = 1\nwarmup = 0\n'
                     'metrics = ["discretization"]\n[[solvers]]\nname = "plug_euler_ep"\n')
    try:
        assert main(["run", str(suite), "--store", str(tmp_path / "p.sqlite"), "--no-report", "--quiet"]) == 0
        df = Store(tmp_path / "p.sqlite", create=False).cells(1)
        assert df["error"].isna().all() and df["solver"].tolist() == ["plug_euler_ep"]
    finally:
        uninstall_plugin()


BAD = [
    ("difusers:pipe", "unknown model spec prefix 'difusers'"),
    ("diffusers:no-such-dir", "no-such-dir: not a directory"),
    ("diffusers:ve", "scheduler ScoreSdeVeScheduler: a VE"),
    ("diffusers:pipe", "clip_sample=True"),
    ("diffusers:pipe?ignore=clip", "ignore: unknown setting 'clip'"),
    ("callable:no_such_module_xyz:f?sde=vp&prediction=eps&shape=2", "cannot import module 'no_such_module_xyz'"),
    ("callable:user_callable:nope?sde=vp&prediction=eps&shape=2", "has no attribute 'nope'"),
    ("denoiser:user_denoiser", "expected denoiser:MODULE:FUNCTION"),
    ("no-such-model", "unknown model 'no-such-model'"),
]


@pytest.mark.parametrize("spec, match", BAD, ids=[b[1].split(":")[0][:30] for b in BAD])
def test_every_wrong_spec_is_one_line_and_creates_no_store(tmp_path, monkeypatch, capsys, spec, match):
    diffusers = pytest.importorskip("diffusers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    write_user_modules(tmp_path)
    save_tiny_ddpm(tmp_path / "pipe", scheduler=diffusers.DDPMScheduler(num_train_timesteps=10))
    save_tiny_ddpm(tmp_path / "ve", scheduler=diffusers.ScoreSdeVeScheduler())
    (tmp_path / "bad.toml").write_text(f'models = ["{spec}"]\nnfe = [4]\n[[solvers]]\nname = "euler"\n')
    store = tmp_path / "s.sqlite"
    commands = [["run", "bad.toml", "--store", str(store)], ["sample", spec, "euler"], ["describe", spec],
                ["likelihood", spec], ["tune", spec, "euler", "--nfe", "4"],
                ["recommend", spec, "--nfe", "4", "--store", str(store)]]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert match in err and "\n" not in err and "Traceback" not in err, (argv, err)
        assert not store.exists(), argv
    shutil.rmtree(tmp_path / "results", ignore_errors=True)


def test_the_estimate_leaves_a_cached_model_as_it_was(tmp_path):
    """The estimate counts an adaptive solve's network calls by wrapping the model's function; a
    loader that returns one cached model must get it back unwrapped (before, every cell of such a
    model failed with the estimate's _OverBudget)."""
    cached = models.load("gmm2d-vp")
    fn = cached.fn
    models.register("cached-once", lambda: cached)
    try:
        suite = tmp_path / "c.toml"
        suite.write_text('models = ["cached-once"]\nn = 16\nrepeats = 1\nwarmup = 0\nmetrics = ["discretization"]\n'
                         '[[solvers]]\nname = "dopri5"\nrtol = 1e-3\n')
        assert main(["run", str(suite), "--store", str(tmp_path / "c.sqlite"), "--no-report"]) == 0  # estimated
        assert cached.fn is fn
        df = Store(tmp_path / "c.sqlite", create=False).cells(1)
        assert df["error"].isna().all() and df["nfe"].iloc[0] > 0
    finally:
        models.unregister("cached-once")


def test_a_model_without_data_refuses_metrics_that_need_a_target(tmp_path, tiny_ddpm, capsys):
    suite = tmp_path / "s.toml"
    suite.write_text(f'models = ["diffusers:{tiny_ddpm}?ignore=clip_sample"]\nnfe = [4]\n'
                     'metrics = ["discretization", "sliced_w2"]\n[[solvers]]\nname = "ddim"\n')
    assert main(["run", str(suite), "--store", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "metrics: sliced_w2 compare samples with exact samples or data" in err and "has neither" in err
    assert not (tmp_path / "s.sqlite").exists()


def test_resume_refuses_a_model_that_changed(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = build("callable", tmp_path)
    suite, store = tmp_path / "own.toml", tmp_path / "own.sqlite"
    suite.write_text(SUITE.format(kind="callable", spec=spec, settings=SETTINGS["callable"]))
    assert main(["run", str(suite), "--store", str(store), "--no-report", "--quiet"]) == 0
    build("callable", tmp_path, version=1)
    assert main(["run", str(suite), "--store", str(store), "--resume", "1", "--quiet"]) == 2
    assert "--resume 1: model 'mine' changed since the run started" in capsys.readouterr().err
