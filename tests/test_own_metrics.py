"""Metrics for a model a user brings: held-out data (``data = ...``) and features (``features =
...``) in a [[models]] table, and ``ref_sliced_w2``, which needs no data.

The model is the exact noise predictor of Gaussian data N(0, S2 I) on the VP SDE (a ``callable:``
spec), so its samples are N(0, ~S2 I) in closed form. Its held-out "data" are N(0, I): the model
is wrong by a known amount, sliced W2 = |sqrt(S2) - 1| = 0.5 on every projection, which the data
metrics must see and ``ref_sliced_w2`` (the solver against the reference solver) must not."""
import numpy as np
import pytest
import torch
from cli_helpers import call

from bench.harness import metrics
from bench.harness.store import Store
from bench.harness.suite import SuiteError, load_suite

MODULE = '''
import torch
import solvers

S2 = 0.25
_SDE = solvers.VP()


def net(x, t):
    """eps of N(0, S2 I) data: sigma x / (alpha^2 S2 + sigma^2)."""
    a, s = _SDE.alpha(t.double())[:, None], _SDE.sigma(t.double())[:, None]
    return (s * x.double() / (a * a * S2 + s * s)).to(x.dtype)


def heldout():
    return torch.randn(1200, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def feats(x):
    return torch.cat([x, x ** 2], 1)


def bad_feats(x):
    return x.sum()
'''

SUITE = '''name = "own-data"
n = 400
steps = [{steps}]
metrics = {metrics}
repeats = 1
warmup = 0
threads = 1
reference = {{ ode_rtol = 1e-7 }}

[[models]]
name = "gauss"
spec = "callable:own_gauss:net"
sde = "vp"
prediction = "eps"
shape = [2]
{table}

[[solvers]]
name = "{solver}"
'''


@pytest.fixture
def folder(tmp_path, monkeypatch):
    (tmp_path / "own_gauss.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _suite(folder, table='data = "held.npy"', metrics='["sliced_w2", "ref_sliced_w2"]', steps="3, 64",
           solver="heun"):
    p = folder / "suite.toml"
    p.write_text(SUITE.format(table=table, metrics=metrics, steps=steps, solver=solver))
    return p


def _run(folder, capsys, suite):
    code, out, err = call(["run", suite, "--store", folder / "s.sqlite", "--quiet", "--no-report"], capsys)
    assert code == 0, err
    cells = Store(folder / "s.sqlite").cells(1)
    assert cells["error"].isna().all(), cells["error"].tolist()
    return cells.set_index("steps")


def test_data_file_is_the_target_and_the_reference_metric_cancels_the_model_error(folder, capsys):
    np.save(folder / "held.npy", torch.randn(1200, 2, generator=torch.Generator().manual_seed(3)).numpy())
    skip = 'skip_at_floor = false\n'
    cells = _run(folder, capsys, _suite(folder, metrics='["sliced_w2", "ref_sliced_w2", "mmd2"]' + "\n" + skip))
    fine = cells.loc[64]
    # the data metrics see the model's own error: |0.5 - 1| on every projection, in closed form
    assert abs(fine["sliced_w2"] - 0.5) < 4 * fine["sliced_w2_se"] + 0.02
    assert fine["sliced_w2_floor"] < 0.15 and fine["mmd2"] > 10 * max(fine["mmd2_floor"], 1e-4)
    # ... the reference metric does not: at 64 Heun steps the solver's samples are the reference's
    assert fine["ref_sliced_w2"] < 3 * fine["ref_sliced_w2_floor"] + 3 * fine["ref_sliced_w2_se"]
    assert fine["ref_sliced_w2"] < 0.2 * fine["sliced_w2"]
    # 3 steps: the solver's error, seen as a distribution, well above the reference floor
    coarse = cells.loc[3]
    assert coarse["ref_sliced_w2"] > coarse["ref_sliced_w2_floor"] + 3 * coarse["ref_sliced_w2_se"]
    assert metrics.get_metric("ref_sliced_w2").at_floor is metrics.below_noise_floor


def test_reference_metric_compares_with_independent_reference_samples(folder):
    """Its value is sliced W2 against the float64 PF-ODE solution from x_T independent of the cell's."""
    from bench.harness import execute
    from bench.harness.formulas import sliced_wasserstein
    from bench.harness.reference import ode_reference

    cell = load_suite(str(_suite(folder, table="", metrics='["ref_sliced_w2"]', steps="8"))).cells()[0]
    shared = execute.SharedResults(cell)
    a, b = shared.reference_samples(0), shared.reference_samples(1)
    own = ode_reference(shared.model, shared.x_T(torch.float64), rtol=1e-7, atol=1e-7)
    assert a.shape == b.shape == own.shape and not torch.allclose(a, own) and not torch.allclose(a, b)
    floor = shared.noise_floor(metrics.get_metric("ref_sliced_w2"))["ref_sliced_w2"]
    assert floor == pytest.approx(sliced_wasserstein(b, a))
    # a model with no data: the reference metric is allowed, the data metrics are refused
    with pytest.raises(SuiteError, match="sliced_w2 compare samples with exact samples or data"):
        load_suite(str(_suite(folder, table="", metrics='["sliced_w2"]')))


def test_data_from_a_function_and_features(folder, capsys):
    table = 'data = "own_gauss:heldout"\nfeatures = "own_gauss:feats"'
    cells = _run(folder, capsys, _suite(folder, table=table, metrics='["fd_features", "energy"]', steps="64"))
    row = cells.loc[64]
    # features (x, x^2) of N(0, 0.25 I) vs N(0, I): the means of x^2 alone give 2 x 0.75^2 = 1.125;
    # the covariances (x: 0.25 vs 1; x^2: 0.125 vs 2) add 2 x 0.5^2 + 2 x (0.354 - 1.414)^2 = 2.75
    assert 3.0 < row["fd_features"] < 5.0 and row["fd_features"] > 10 * row["fd_features_floor"]
    assert row["energy"] > 10 * row["energy_floor"]


@pytest.mark.parametrize("table, key, why", [
    ('data = "missing.npy"', "data", "no such file"),
    ('data = "no_such_mod_xyz:f"', "data", "cannot import module 'no_such_mod_xyz'"),
    ('data = "own_gauss:nope"', "data", "has no attribute 'nope'"),
    ('data = "ints.npy"', "data", "holds int64 values"),
    ('data = "wide.npy"', "data", "shape (40, 3)"),
    ('data = "nan.npy"', "data", "NaN or inf"),
    ('data = "few.npy"', "data", "need at least 16"),
    ('data = "two.npz"', "data", "give one, or one named 'data'"),
    ('data = "held.npy"\nfeatures = "own_gauss:bad_feats"', "features", "expected (n, k)"),
    ('features = "own_gauss:feats"', "features", "needs data"),
])
def test_bad_data_is_one_line_naming_the_key_and_no_store(folder, capsys, table, key, why):
    rng = np.random.default_rng(0)
    np.save(folder / "held.npy", rng.normal(size=(40, 2)))
    np.save(folder / "ints.npy", np.arange(80).reshape(40, 2))
    np.save(folder / "wide.npy", rng.normal(size=(40, 3)))
    np.save(folder / "nan.npy", np.full((40, 2), np.nan))
    np.save(folder / "few.npy", rng.normal(size=(5, 2)))
    np.savez(folder / "two.npz", a=rng.normal(size=(40, 2)), b=rng.normal(size=(40, 2)))
    suite = _suite(folder, table=table, metrics='["energy"]')
    with pytest.raises(SuiteError, match=rf"models\[0\]\.{key}: ") as e:
        load_suite(str(suite))
    assert why in str(e.value) and "\n" not in str(e.value)
    code, out, err = call(["run", suite, "--store", folder / "s.sqlite", "--quiet"], capsys)
    assert code == 2 and why in err and not (folder / "s.sqlite").exists()


def test_data_is_split_in_two_disjoint_halves_and_fingerprinted(folder):
    np.save(folder / "held.npy", np.arange(64, dtype=np.float64).reshape(32, 2))
    suite = load_suite(str(_suite(folder, metrics='["energy"]')))
    model = suite.model_table.load("gauss")
    a, b = model.data_sample(16, part=0), model.data_sample(16, part=1)
    assert not set(a[:, 0].tolist()) & set(b[:, 0].tolist()) and model.data_size(0) == 16
    assert {c.n for c in suite.cells()} == {16}  # n = 400 capped at a half's rows
    before = suite.model_table.provenance("gauss")["fingerprint"]
    np.save(folder / "held.npy", np.arange(64, dtype=np.float64).reshape(32, 2) + 1)
    after = load_suite(str(_suite(folder, metrics='["energy"]'))).model_table.provenance("gauss")["fingerprint"]
    assert before != after  # other data: other floors, nothing cached is shared
