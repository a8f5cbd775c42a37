"""A suite's models: names, specs and [[models]] tables (bench.harness.suite_models)."""

import pytest

from bench.harness.suite import Suite, SuiteError, load_suite
from bench.zoo import models

EULER = '\nnfe = [4]\nmetrics = ["discretization"]\n[[solvers]]\nname = "euler"\n'


def suite(tmp_path, text) -> Suite:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return load_suite(str(path))


def test_tables_name_models_and_set_their_cells(user_modules, tmp_path):
    s = suite(tmp_path, 'models = ["gmm2d-vp", {name = "gauss", spec = "denoiser:user_denoiser:denoise", batch = 24, '
                        'dtype = "float64", sigma_max = 20.0, reference = {ode_rtol = 1e-7}}]\nn = 64' + EULER)
    assert s.models == ["gmm2d-vp", "gauss"]
    by_model = {c.model: c for c in s.cells()}
    mine, exact = by_model["gauss"], by_model["gmm2d-vp"]
    assert (mine.n, mine.dtype, mine.reference["ode_rtol"]) == (24, "float64", 1e-7)
    assert (exact.n, exact.dtype, exact.reference["ode_rtol"]) == (64, "float32", 1e-10)
    assert mine.model_spec == {"spec": "denoiser:user_denoiser:denoise", "settings": {"sigma_max": 20.0},
                               "fingerprint": models.fingerprint("denoiser:user_denoiser:denoise?sigma_max=20")}
    assert exact.model_spec["spec"] == "gmm2d-vp" and exact.model_id == "gmm2d-vp"
    assert mine.model_id.startswith("gauss@") and models.load(mine.model_ref()).sde.T == 20.0
    # the key is the definition's: provenance stays out of it
    assert mine.key == mine.replace(model_spec={}).key
    assert {c.n for c in s.override(n=8).cells()} == {8}  # --n sets every model's samples


def test_a_relative_path_is_the_suite_files(tmp_path):
    pytest.importorskip("diffusers")
    from conftest import save_tiny_ddpm

    save_tiny_ddpm(tmp_path / "pipes" / "a")
    (tmp_path / "sub").mkdir()
    s = suite(tmp_path, 'models = ["diffusers:pipes/a"]' + EULER)
    assert s.models == ["diffusers:pipes/a"]
    assert s.cells()[0].model_spec["spec"] == f"diffusers:{tmp_path / 'pipes' / 'a'}"


@pytest.mark.parametrize("models_toml, match", [
    ('[{spec = "gmm2d-vp", colour = 1}]', r"models\[0\].colour: unknown key; allowed: name, spec, batch, dtype, "
                                           "reference and the spec's settings"),
    ('[{name = "x"}]', r"models\[0\]: needs spec"),
    ('["gmm2d-vp", {spec = "gmm2d-vp"}]', "models: lists gmm2d-vp more than once"),
    ('[{name = "fast", spec = "gmm2d-vp"}]', r"models\[0\].name: 'gmm2d-vp' is a registered model: it keeps its name"),
    ('[{name = "gmm2d-ve", spec = "denoiser:user_denoiser:denoise"}]', "is a registered model's name"),
    ('[{spec = "denoiser:user_denoiser:denoise", batch = 1}]', r"models\[0\].batch: must be an integer in \[2"),
    ('[{spec = "denoiser:user_denoiser:denoise", dtype = "float16"}]', r"models\[0\].dtype: must be one of float32"),
    ('[{spec = "denoiser:user_denoiser:denoise", reference = {rtol = 1}}]',
     r"models\[0\].reference.rtol: unknown reference setting"),
    ('[{spec = "denoiser:user_denoiser:denoise", sde = "vp"}]', r"models\[0\].spec: .*unknown setting 'sde' for a "
                                                                 "denoiser spec"),
    ('[{spec = "callable:user_callable:net"}]', r"models\[0\].spec: callable:user_callable:net: needs sde"),
    ('["nope"]', "models: unknown model 'nope'; available: gmm2d-vp"),
    ('["difusers:x"]', "models: unknown model spec prefix 'difusers'"),
    ('[3]', r"models\[0\]: must be a model name, a spec or a table"),
    ('[]', "models: is empty"),
])
def test_wrong_models_are_one_line_suite_errors(user_modules, tmp_path, models_toml, match):
    with pytest.raises(SuiteError, match=match) as e:
        suite(tmp_path, f"models = {models_toml}" + EULER)
    assert "\n" not in str(e.value)
