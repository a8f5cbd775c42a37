"""Trained checkpoints: loading by name, sampling, safe loading, reproducible training, FD-digits,
bits/dim. Everything loads the shipped checkpoints; training runs only a handful of steps."""
import json
import math
import shutil

import pytest
import torch

import solvers
from bench.harness.reference import ode_reference
from bench.zoo import data, fd, models, trained
from bench.zoo.train import RECIPES, train
from bench.zoo.trained import CHECKPOINTS, CheckpointError, TrainedModel
from solvers import InputError

SHIPPED = ("checkerboard-vp", "checkerboard-edm", "digits-vp")
SOLVERS = [s for s in ("euler", "heun", "ddim", "euler_maruyama", "ancestral", "dpm_solver_3", "dpmpp_2m", "unipc")
           if s in solvers.available()]




@pytest.fixture(scope="module")
def loaded():
    return {name: models.load(name) for name in SHIPPED}


def copy_checkpoint(name, tmp_path):
    for ext in (".json", ".safetensors"):
        shutil.copy(CHECKPOINTS / f"{name}{ext}", tmp_path / f"{name}{ext}")
    return tmp_path / f"{name}.json", tmp_path / f"{name}.safetensors"


def rewrite_card(card_path, **changes):
    card = json.loads(card_path.read_text())
    card.update(changes)
    card_path.write_text(json.dumps(card))
    return card


# --------------------------------------------------------------------------------------------
# the shipped checkpoints
# --------------------------------------------------------------------------------------------

def test_shipped_checkpoints_are_in_the_zoo_small_and_carded():
    for name in SHIPPED:
        assert name in models.available() and name in trained.available()
        assert not models.is_exact(name)
    assert "digits-classifier" not in models.available()  # a feature network, not a score model
    for name in (*SHIPPED, "digits-classifier"):
        card = json.loads((CHECKPOINTS / f"{name}.json").read_text())
        weights = CHECKPOINTS / card["weights"]
        assert weights.stat().st_size < 5_000_000
        for key in ("arch", "arch_args", "data", "training", "final_loss", "commit", "sha256"):
            assert key in card, (name, key)
        assert card["training"]["seed"] == 0 and card["training"]["steps"] == RECIPES[name]["steps"]
        if card["kind"] == "score":
            for key in ("sde", "sde_args", "prediction", "time_input", "preconditioning", "shape"):
                assert key in card, (name, key)
    assert json.loads((CHECKPOINTS / "digits-classifier.json").read_text())["heldout_accuracy"] > 0.95


def test_loaded_models_expose_shape_sde_and_data(loaded):
    cb, edm, dg = loaded["checkerboard-vp"], loaded["checkerboard-edm"], loaded["digits-vp"]
    assert isinstance(dg, TrainedModel) and isinstance(dg, solvers.ScoreModel)
    assert cb.shape == (2,) and dg.shape == (1, 8, 8) and edm.shape == (2,)
    assert isinstance(cb.sde, solvers.VP) and isinstance(edm.sde, solvers.EDM) and isinstance(dg.sde, solvers.VP)
    assert cb.prediction == "eps" and edm.prediction == "x0"
    assert dg.bin_width == pytest.approx(2 / 17) and cb.bin_width is None
    g = torch.Generator().manual_seed(0)
    x0, x1 = dg.data_sample(600, g, part=0), dg.data_sample(50, g, part=1)
    assert x0.shape == (600, 1, 8, 8) and x1.shape == (50, 1, 8, 8) and x0.dtype == torch.float64
    assert float(x0.min()) >= -1 and float(x0.max()) < 1
    with pytest.raises(InputError, match="600 images"):
        dg.data_sample(601, g)
    assert dg.data_size(0) == 600 and dg.data_size(1) == 1197 and cb.data_size(0) == math.inf
    a, b = cb.data_sample(100, torch.Generator().manual_seed(1), part=0), \
        cb.data_sample(100, torch.Generator().manual_seed(1), part=1)
    assert not torch.equal(a, b) and float(a.abs().max()) <= 2
    with pytest.raises(InputError, match="part"):
        cb.data_sample(10, part=2)


def test_trained_models_have_no_exact_prior():
    with pytest.raises(InputError, match="no exact p_T"):
        models.load("digits-vp", exact_prior=True)
    with pytest.raises(InputError, match="fixed by its checkpoint"):
        models.load("checkerboard-vp", beta_max=10.0)
    with pytest.raises(InputError, match="available"):
        models.load("no-such-model")


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("solver", SOLVERS)
def test_sample_shipped_models_with_several_solvers(loaded, name, solver):
    m = loaded[name]
    cls = solvers.get(solver)
    steps = max(2, cls.steps_for_nfe(12))
    out = solvers.sample(m, solver, steps=steps, n=32, seed=0)
    assert out.x.shape == (32, *m.shape) and bool(torch.isfinite(out.x).all())
    assert out.nfe == cls.expected_nfe(steps)


def test_samples_look_like_the_data(loaded):
    """20 Heun steps: the checkerboard samples land on its black squares; digits in range."""
    for name in ("checkerboard-vp", "checkerboard-edm"):
        x = solvers.sample(loaded[name], "heun", steps=20, n=2000, seed=0).x.double()
        i, j = torch.floor(x[:, 0] + 2), torch.floor(x[:, 1] + 2)
        inside = (x.abs() <= 2.1).all(1) & ((i + j) % 2 == 0)
        assert inside.double().mean() > 0.85, (name, float(inside.double().mean()))
    x = solvers.sample(loaded["digits-vp"], "heun", steps=10, n=64, seed=0).x
    assert float(x.mean()) < -0.2 and float(x.abs().max()) < 2  # mostly background (-1), ink up to +1


def test_float64_runs_match_float32(loaded):
    m = loaded["digits-vp"]
    x = m.sample_prior(8, generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), 0.3)
    e32, e64 = m.eps(x, t), m.eps(x.double(), t.double())
    assert e64.dtype == torch.float64
    torch.testing.assert_close(e64.float(), e32, rtol=1e-4, atol=1e-4)


def test_discretization_error_against_the_reference_works_on_a_trained_model(loaded):
    m = loaded["checkerboard-vp"]
    x_T = m.sample_prior(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = ode_reference(m, x_T, rtol=1e-7, atol=1e-7)
    err = [float((solvers.sample(m, "heun", steps=s, x_T=x_T).x - ref).norm(dim=1).median()) for s in (5, 10, 20)]
    assert err[0] > err[1] > err[2], err
    assert err[1] / err[2] > 2.5, err  # second order, roughly


# --------------------------------------------------------------------------------------------
# safe loading
# --------------------------------------------------------------------------------------------

def test_load_by_path(tmp_path):
    card, weights = copy_checkpoint("checkerboard-vp", tmp_path)
    for p in (card, weights, str(card)):
        assert trained.load(p).name == "checkerboard-vp"
    assert trained.available(tmp_path) == ["checkerboard-vp"]
    assert trained.load("checkerboard-vp", checkpoints=tmp_path).path == card


def test_truncated_checkpoint_gets_an_error_naming_the_file(tmp_path):
    card, weights = copy_checkpoint("checkerboard-vp", tmp_path)
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=f"{weights}.*sha256"):
        trained.load(card)
    rewrite_card(card, sha256=None)  # without the checksum, safetensors itself refuses
    with pytest.raises(CheckpointError, match=f"{weights}.*not a readable weights file"):
        trained.load(card, verify=False)


def test_corrupt_checkpoint_gets_an_error_naming_the_file(tmp_path):
    card, weights = copy_checkpoint("checkerboard-vp", tmp_path)
    weights.write_bytes(b"\x00garbage" * 100)
    rewrite_card(card, sha256=None)
    with pytest.raises(CheckpointError, match=f"{weights}.*not a readable weights file"):
        trained.load(card, verify=False)
    card.write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{card}.*not valid JSON"):
        trained.load(card)
    weights.unlink()
    card2, _ = copy_checkpoint("checkerboard-edm", tmp_path)
    (tmp_path / "checkerboard-edm.safetensors").unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        trained.load(card2)


def test_mismatched_shapes_get_an_error_naming_the_file(tmp_path):
    from safetensors.torch import save_file

    from bench.zoo.nets import ToyMLP

    card, weights = copy_checkpoint("checkerboard-vp", tmp_path)
    save_file({k: v.contiguous() for k, v in ToyMLP(hidden=64).state_dict().items()}, str(weights))
    rewrite_card(card, sha256=None)
    with pytest.raises(CheckpointError, match=f"{weights}.*mismatched shape"):
        trained.load(card, verify=False)
    # a card whose arch_args disagree with the file is the same mistake seen from the other side
    card, weights = copy_checkpoint("checkerboard-vp", tmp_path)
    rewrite_card(card, arch_args={"dim": 2, "hidden": 128, "depth": 4, "emb": 64})
    with pytest.raises(CheckpointError, match=f"{weights}.*missing"):
        trained.load(card)


def test_unknown_architecture_and_bad_cards_get_errors_naming_the_card(tmp_path):
    card, _ = copy_checkpoint("digits-vp", tmp_path)
    rewrite_card(card, arch="transformer")
    with pytest.raises(CheckpointError, match=f"{card}.*unknown architecture 'transformer'.*digits_unet"):
        trained.load(card)
    for change, match in (({"sde": "cld"}, "unknown SDE"), ({"prediction": "noise"}, "unknown prediction"),
                          ({"time_input": "t"}, "unknown time_input"), ({"kind": "gan"}, "kind"),
                          ({"arch_args": {"channels": 3}}, "do not build"), ({"format": 9}, "format")):
        card, _ = copy_checkpoint("digits-vp", tmp_path)
        rewrite_card(card, **change)
        with pytest.raises(CheckpointError, match=f"{card}.*{match}"):
            trained.load(card)
    with pytest.raises(CheckpointError, match="not a score model"):
        trained.load("digits-classifier")
    with pytest.raises(CheckpointError, match="unknown trained model 'nope'"):
        trained.load("nope")


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,steps", [("checkerboard-vp", 5), ("checkerboard-edm", 5), ("digits-vp", 2)])
def test_training_is_reproducible_from_the_seed(tmp_path, name, steps):
    a = train(name, tmp_path / "a", seed=3, steps=steps, log=None)
    b = train(name, tmp_path / "b", seed=3, steps=steps, log=None)
    c = train(name, tmp_path / "c", seed=4, steps=steps, log=None)
    assert a["sha256"] == b["sha256"] and a["final_loss"] == b["final_loss"]
    assert a["sha256"] != c["sha256"]
    m = trained.load(tmp_path / "a" / f"{name}.json")
    assert m.card["training"]["steps"] == steps and m.card["training"]["seed"] == 3
    assert solvers.sample(m, "euler", steps=2, n=4).x.shape == (4, *m.shape)


def test_train_cli_and_bad_recipe(tmp_path, capsys):
    from bench.cli import main

    assert main(["train", "checkerboard-vp", "--steps", "3", "--out", str(tmp_path), "--seed", "1"]) == 0
    assert (tmp_path / "checkerboard-vp.safetensors").exists()
    assert "wrote" in capsys.readouterr().out
    assert main(["train", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown training recipe 'nope'" in capsys.readouterr().err
    with pytest.raises(InputError, match="steps"):
        train("checkerboard-vp", tmp_path, steps=0)


# --------------------------------------------------------------------------------------------
# FD-digits, precision / recall, bits per dimension
# --------------------------------------------------------------------------------------------

def test_fd_digits_real_vs_real_is_small_and_noise_vs_real_large():
    g = torch.Generator().manual_seed(0)
    a, b = data.digits(None, split="test_a", generator=g), data.digits(None, split="test_b", generator=g)
    real = fd.fd_digits(a, b)
    noise = fd.fd_digits(torch.randn(300, 1, 8, 8, generator=g).clamp(-1, 1), b)
    blur = fd.fd_digits(torch.nn.functional.avg_pool2d(a, 3, 1, 1), b)
    assert 0 < real < noise / 10 and real < blur / 5, (real, noise, blur)
    floor = fd.fd_digits_floor(300)
    assert 0 < floor < noise / 10
    p, r = fd.precision_recall(fd.digits_features(a), fd.digits_features(b))
    assert p > 0.8 and r > 0.8
    q = fd.digits_quality(torch.randn(300, 1, 8, 8, generator=g).clamp(-1, 1))
    assert q["fd_digits"] > 10 * q["fd_digits_floor"] and q["precision"] < 0.3 < q["precision_floor"]
    assert q["n"] == 300 and q["n_real"] == 600


def test_fd_digits_bad_input_and_inception_without_weights():
    with pytest.raises(InputError, match=r"\(n, 1, 8, 8\)"):
        fd.fd_digits(torch.zeros(10, 3, 32, 32))
    with pytest.raises(InputError, match="NaN"):
        fd.fd_digits(torch.full((10, 64), float("nan")))
    with pytest.raises(InputError, match="weights_path"):
        fd.inception_fid(torch.zeros(4, 1, 8, 8), torch.zeros(4, 1, 8, 8))
    with pytest.raises(InputError, match="no such weights file"):
        fd.inception_fid(torch.zeros(4, 1, 8, 8), torch.zeros(4, 1, 8, 8), weights_path="/nonexistent/inception.pth")


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, 3, generator=g, dtype=torch.float64)
    y = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5]) + 1.0
    # ||mu||^2 = 3; tr(I + D^2 - 2 D) = sum (1 - d)^2 = 0 + 1 + 0.25
    assert fd.frechet_distance(x, y) == pytest.approx(4.25, rel=1e-2)


def test_bits_per_dim_of_held_out_digits():
    likelihood = pytest.importorskip("solvers.likelihood")
    m = models.load("digits-vp")
    x = m.data_sample(8, torch.Generator().manual_seed(0))
    res = likelihood.log_likelihood(m, x, solver="dopri5", rtol=1e-3, atol=1e-3, trace="hutchinson", probes=1,
                                    seed=0, bin_width=m.bin_width)
    bpd = float(res.bpd.mean())
    # below the uniform-dequantized bound log2(17) = 4.09 bits/dim, and far below noise images
    assert 0 < bpd < math.log2(17), bpd
    noise = (torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1)
    worse = likelihood.log_likelihood(m, noise, solver="dopri5", rtol=1e-3, atol=1e-3, trace="hutchinson",
                                      probes=1, seed=0, bin_width=m.bin_width)
    assert float(worse.bpd.mean()) > bpd + 1
