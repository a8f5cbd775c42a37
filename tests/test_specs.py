"""Model specs and the model registry (bench.zoo.specs, bench.zoo.models): every form loads, every
wrong spec is one line naming it, registered and entry-point models load by name, and the
fingerprint follows the weights, not the path."""
import shutil
import sys

import pytest
import torch
from conftest import install_plugin, save_tiny_ddpm, uninstall_plugin

import solvers
from bench.zoo import models, specs, trained
from solvers import InputError


def test_parse_forms_settings_and_paths(tmp_path):
    assert specs.parse("gmm2d-vp") == specs.ModelSpec("name", "gmm2d-vp", {})
    s = specs.parse("diffusers:pipe?ignore=thresholding,clip_sample&prediction=epsilon", base=tmp_path)
    assert s.kind == "diffusers" and s.target == str(tmp_path / "pipe")
    assert s.settings == {"ignore": ["clip_sample", "thresholding"], "prediction": "epsilon"}
    assert s.text == f"diffusers:{tmp_path / 'pipe'}"
    s = specs.parse("denoiser:pkg.mod:obj.fn?shape=3,8,8&sigma_max=10", {"sigma_min": 0.01})
    assert s.target == "pkg.mod:obj.fn" and s.settings == {"shape": [3, 8, 8], "sigma_max": 10.0, "sigma_min": 0.01}
    assert specs.ModelSpec.from_dict(s.to_dict()) == s
    c = specs.parse("callable:m:f", {"sde": "vp", "sde_args": {"beta_max": 10.0}, "prediction": "v", "shape": [2]})
    assert c.settings["sde_args"] == {"beta_max": 10.0}


@pytest.mark.parametrize("spec, settings, match", [
    ("difusers:/x", None, r"unknown model spec prefix 'difusers' in 'difusers:/x'; valid: diffusers:PATH"),
    ("diffusers:", None, "needs a PATH"),
    ("denoiser:just_a_module", None, "expected denoiser:MODULE:FUNCTION"),
    ("callable:m:f?sde", None, "'sde' is not KEY=VALUE"),
    ("callable:m:f?sde=vpp", None, "unknown sde 'vpp'"),
    ("callable:m:f?color=red", None, "unknown setting 'color' for a callable spec; allowed: sde, sde_args"),
    ("callable:m:f?prediction=noise", None, "prediction 'noise'"),
    ("denoiser:m:f?shape=0,2", None, "shape must be a non-empty list of positive integers"),
    ("denoiser:m:f?sigma_min=-1", None, "sigma_min must be a finite number > 0"),
    ("diffusers:/x?ignore=clip", None, "ignore: unknown setting 'clip'; ignorable: clip_sample"),
    ("diffusers:/x?ignore=clip_sample", {"ignore": ["thresholding"]}, "ignore set both in the spec and in its table"),
    ("gmm2d-vp", {"shape": [2]}, "apply to model specs"),
    ("", None, "a model must be a name or a spec"),
])
def test_wrong_specs_are_one_line_errors(spec, settings, match):
    with pytest.raises(InputError, match=match) as e:
        specs.parse(spec, settings)
    assert "\n" not in str(e.value)


def test_denoiser_and_callable_specs_load(user_modules):
    d = models.load("denoiser:user_denoiser:denoise")
    assert isinstance(d.sde, solvers.EDM) and d.prediction == "x0" and d.shape == (2,)
    assert (d.sde.eps, d.sde.T) == (0.002, 80.0) and d.name == "denoiser:user_denoiser:denoise"
    # its D is exact for N(0, C^2 I): the score at sigma is -x / (C^2 + sigma^2)
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.7, dtype=torch.float64)
    torch.testing.assert_close(d.score(x, t), -x / (0.25 + 0.49))
    narrow = models.load("denoiser:user_denoiser:denoise?sigma_max=5")
    assert narrow.sde.T == 5.0
    c = models.load(specs.parse("callable:user_callable:net", {"sde": "vp", "prediction": "eps", "shape": [2]}))
    assert isinstance(c.sde, solvers.VP) and c.net is sys.modules["user_callable"].net
    assert solvers.sample(c, "heun", steps=3, n=4).x.shape == (4, 2)
    with pytest.raises(InputError, match="callable:user_callable:net: needs sde"):
        models.load("callable:user_callable:net")


@pytest.mark.parametrize("spec, match", [
    ("callable:no_such_module_xyz:f?sde=vp", "cannot import module 'no_such_module_xyz'"),
    ("callable:user_callable:nope?sde=vp", "module 'user_callable' has no attribute 'nope'"),
    ("denoiser:user_denoiser:C", "'C' is a float, not a function or module"),
    ("checkpoint:/no/such/card.json", "no such file"),
    ("checkpoint:/no/such/dir", r"expected a checkpoint card \(.json\)"),
    ("diffusers:/no/such/pipe", "/no/such/pipe: not a directory"),
])
def test_specs_that_do_not_load_name_what_is_wrong(user_modules, spec, match):
    with pytest.raises(InputError, match=match) as e:
        models.load(spec)
    assert "\n" not in str(e.value)


def test_checkpoint_spec_checks_the_weights(tmp_path):
    for suffix in (".json", ".safetensors"):
        shutil.copy(trained.CHECKPOINTS / f"checkerboard-vp{suffix}", tmp_path / f"cb{suffix}")
    card = tmp_path / "cb.json"
    card.write_text(card.read_text().replace('"checkerboard-vp.safetensors"', '"cb.safetensors"'))
    m = models.load(f"checkpoint:{card}")
    assert m.name == f"checkpoint:{card}" and isinstance(m, trained.TrainedModel)
    assert models.fingerprint(f"checkpoint:{card}") == models.fingerprint(f"checkpoint:{tmp_path / 'cb.safetensors'}")
    weights = tmp_path / "cb.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))
    with pytest.raises(InputError, match="sha256 does not match"):
        models.load(f"checkpoint:{card}")


def test_diffusers_spec_strictness_and_ignore(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    clipped = save_tiny_ddpm(tmp_path / "clipped", scheduler=diffusers.DDPMScheduler(num_train_timesteps=100))
    with pytest.raises(InputError, match=r"clipped: clip_sample=True: .*ignore=\['clip_sample'\]"):
        models.load(f"diffusers:{clipped}")
    m = models.load(f"diffusers:{clipped}?ignore=clip_sample")
    assert m.ignored == ("clip_sample",) and m.shape == (1, 8, 8)
    assert ("ignored", "clip_sample") in models.describe(f"diffusers:{clipped}?ignore=clip_sample")
    ve = save_tiny_ddpm(tmp_path / "ve", scheduler=diffusers.ScoreSdeVeScheduler())
    with pytest.raises(InputError, match="scheduler ScoreSdeVeScheduler: a VE"):
        models.load(f"diffusers:{ve}")
    fm = save_tiny_ddpm(tmp_path / "flow", scheduler=diffusers.FlowMatchEulerDiscreteScheduler())
    with pytest.raises(InputError, match="FlowMatchEulerDiscreteScheduler: not a DDPM-type"):
        models.load(f"diffusers:{fm}")
    learned = save_tiny_ddpm(tmp_path / "learned", time_embedding_type="learned", num_train_timesteps=100)
    with pytest.raises(InputError, match="time_embedding_type='learned'"):
        models.load(f"diffusers:{learned}?ignore=clip_sample")
    thresh = save_tiny_ddpm(tmp_path / "thresh", scheduler=diffusers.DDPMScheduler(
        num_train_timesteps=100, clip_sample=False, thresholding=True))
    with pytest.raises(InputError, match="thresholding=True"):
        models.load(f"diffusers:{thresh}")


def test_learned_variance_keeps_the_prediction_channels(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=2, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    sched = diffusers.DDPMScheduler(num_train_timesteps=100, clip_sample=False, variance_type="learned_range")
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path / "iddpm")
    with pytest.raises(InputError, match="variance_type='learned_range'"):
        models.load(f"diffusers:{tmp_path / 'iddpm'}")
    m = models.load(f"diffusers:{tmp_path / 'iddpm'}?ignore=variance_type")
    x, k = torch.randn(2, 1, 8, 8), 40
    with torch.no_grad():
        direct = unet(x, torch.full((2,), float(k))).sample[:, :1]
    torch.testing.assert_close(m.eps(x, torch.full((2,), (k + 1) / 100)), direct, rtol=1e-5, atol=1e-6)


def test_fingerprint_follows_weights_and_settings_not_the_path(tmp_path):
    pytest.importorskip("diffusers")
    a = save_tiny_ddpm(tmp_path / "a")
    fp = models.fingerprint(f"diffusers:{a}")
    shutil.copytree(a, tmp_path / "moved")
    assert models.fingerprint(f"diffusers:{tmp_path / 'moved'}") == fp
    assert models.fingerprint(f"diffusers:{a}?ignore=clip_sample") != fp
    save_tiny_ddpm(tmp_path / "moved", seed=1)
    assert models.fingerprint(f"diffusers:{tmp_path / 'moved'}") != fp
    assert models.fingerprint("gmm2d-vp") == models.fingerprint("gmm2d-vp") != models.fingerprint("gmm2d-ve")
    assert models.fingerprint("digits-vp") == trained.read_card(trained.CHECKPOINTS / "digits-vp.json")["sha256"]


def test_register_a_model_by_name_and_load_it_anywhere():
    calls = []
    cached = models.load("gmm2d-vp")

    def loader():
        calls.append(1)
        return cached

    models.register("my-cached", loader)
    try:
        assert "my-cached" in models.available() and models.load("my-cached") is cached and calls == [1]
        with pytest.raises(InputError, match="already registered"):
            models.register("my-cached", lambda: cached)
        with pytest.raises(InputError, match="no exact p_T"):
            models.load("my-cached", exact_prior=True)
        with pytest.raises(InputError, match=r"models.load\('my-cached'\): unknown keyword argument\(s\) size"):
            models.load("my-cached", size=3)
        models.register("my-cached", lambda: "not a model", replace=True)
        with pytest.raises(InputError, match="returned str, not a solvers.ScoreModel"):
            models.load("my-cached")
    finally:
        models.unregister("my-cached")
    for bad in ("a:b", " x", "", 3):
        with pytest.raises(InputError, match="model name"):
            models.register(bad, loader)
    with pytest.raises(InputError, match="unknown model 'no-such'; available: gmm2d-vp.*or a model spec: diffusers:PATH"):
        models.load("no-such")


def test_entry_point_plugins_register_models_and_solvers(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch)
    try:
        assert "plug-mixture" in models.available()
        m = models.load("plug-mixture")
        assert m.name == "gmm2d-ve" and models.load("plug-mixture") is not m
        assert solvers.get("plug_euler_ep").order == 1 and "plug_euler_ep" in solvers.available()
        out = solvers.sample(m, "plug_euler_ep", steps=4, n=8)
        torch.testing.assert_close(out.x, solvers.sample(m, "euler", steps=4, n=8).x)
    finally:
        uninstall_plugin()


def test_a_broken_entry_point_is_named(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch, "[sdebench.models]\nbroken = no_such_pkg_xyz:load\n")
    with pytest.raises(InputError, match=r"model 'broken': its entry point 'no_such_pkg_xyz:load' \(group "
                                         r"sdebench.models\) cannot be loaded: ModuleNotFoundError"):
        models.load("broken")
