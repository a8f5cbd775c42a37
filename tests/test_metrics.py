"""Hand-written metrics checked against well-kept libraries or direct definitions."""
import math

import numpy as np
import pytest
import torch

from bench.harness import formulas, metrics


def sets(n=200, d=3, shift=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.randn(n, d, generator=g, dtype=torch.float64) + shift)


def test_sliced_wasserstein_matches_pot_on_the_same_projections():
    ot = pytest.importorskip("ot")
    x, y = sets()
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(3, 256, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    ref = ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), n_projections=256, p=2, projections=theta.numpy())
    assert metrics.sliced_wasserstein(x, y, projections=256, seed=0) == pytest.approx(float(ref), rel=1e-10)


def test_w2_matches_an_assignment_solution():
    scipy = pytest.importorskip("scipy.optimize")
    x, y = sets(n=60)
    cost = torch.cdist(x, y).pow(2).numpy()
    r, c = scipy.linear_sum_assignment(cost)
    assert metrics.w2(x, y) == pytest.approx(math.sqrt(cost[r, c].mean()), rel=1e-9)


def test_mmd2_matches_the_definition():
    x, y = sets(n=40, d=2)
    z = torch.cat([x, y])
    d2 = [float(((a - b) ** 2).sum()) for i, a in enumerate(z) for b in z[i + 1:]]
    s2 = float(np.sort(d2)[(len(d2) - 1) // 2])  # the lower median, as torch.median
    k = lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * s2))  # noqa: E731
    n = len(x)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(a, b) for a in x for b in y) / n**2
    assert metrics.mmd2(x, y) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-9)


def test_energy_distance_matches_scipy_in_1d():
    stats = pytest.importorskip("scipy.stats")
    x, y = sets(n=300, d=1)
    assert metrics.energy_distance(x, y) == pytest.approx(stats.energy_distance(x[:, 0], y[:, 0]) ** 2, rel=1e-9)


def test_metrics_separate_different_distributions_from_the_noise_floor():
    a, b = sets(n=500, shift=0.0, seed=1)
    _, c = sets(n=500, shift=1.0, seed=2)
    for name, fn in metrics.distribution().items():
        assert fn(a, c) > 2 * abs(fn(a, b)), name


def test_discretization_error_is_median_per_dimension():
    x = torch.zeros(5, 4, dtype=torch.float64)
    ref = torch.tensor([[1.0, 0, 0, 0]] * 3 + [[100.0, 0, 0, 0]] * 2, dtype=torch.float64)
    assert metrics.discretization_error(x, ref) == pytest.approx(1.0 / 2)


def test_metric_input_errors():
    x, y = sets()
    with pytest.raises(ValueError, match="equal-size"):
        metrics.sliced_wasserstein(x, y[:10])
    with pytest.raises(ValueError, match="at most"):
        metrics.w2(torch.zeros(metrics.W2_MAX_N + 1, 2), torch.zeros(metrics.W2_MAX_N + 1, 2))


def test_sliced_w2_standard_error_matches_the_generic_bootstrap():
    from bench.harness.verdicts import bootstrap_interval

    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g, dtype=torch.float64)
    y = torch.randn(400, 2, generator=g, dtype=torch.float64) + 0.3
    fast = metrics.sliced_wasserstein_se(x, y, boot=300, seed=1)
    slow = bootstrap_interval(metrics.sliced_wasserstein, x, y, n_boot=300, seed=2)["stderr"]
    assert fast == pytest.approx(slow, rel=0.2)


def test_sliced_w2_standard_error_replicates_equal_resampling_and_sorting():
    """The linear-time replicates (sorted once, repeated by multiplicity) are the replicates of
    resampling the pairs and sorting each projection again, draw for draw."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64)
    y = 1.2 * torch.randn(300, 5, generator=g, dtype=torch.float64)
    px, py = (p.T for p in formulas._projections(x, y, 64, 0))
    gen, reps = torch.Generator().manual_seed(7), []
    for start in range(0, 40, 25):
        for idx in torch.randint(0, 300, (min(25, 40 - start), 300), generator=gen):
            a, b = px[:, idx].sort(dim=-1)[0], py[:, idx].sort(dim=-1)[0]
            reps.append(float(((a - b) ** 2).mean().sqrt()))
    assert metrics.sliced_wasserstein_se(x, y, boot=40, seed=7, projections=64) == pytest.approx(
        float(torch.tensor(reps, dtype=torch.float64).std()), rel=1e-12)


def test_pooled_bootstrap_standard_errors_equal_recomputing_on_each_resample():
    from bench.harness.verdicts import bootstrap_interval

    g = torch.Generator().manual_seed(0)
    x = torch.randn(150, 3, generator=g, dtype=torch.float64)
    y = torch.randn(150, 3, generator=g, dtype=torch.float64) + 0.2
    fast = metrics.pooled_bootstrap_se(x, y, ["mmd2", "energy"], boot=30, seed=5)
    slow = bootstrap_interval(metrics.energy_distance, x, y, n_boot=30, seed=5)["stderr"]
    assert fast["energy"] == pytest.approx(slow, rel=1e-9)
    # MMD^2 with its bandwidth held at the estimate's, recomputed on each resample
    z = torch.cat([x, y])
    s2 = formulas._median_pair(torch.cdist(z, z).pow(2))

    def mmd2_fixed(a, b):
        k = lambda u, v: torch.exp(-torch.cdist(u, v).pow(2) / (2 * s2))  # noqa: E731
        n = len(a)
        kxx, kyy = k(a, a), k(b, b)
        return float((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - n) / (n * (n - 1)) - 2 * k(a, b).mean())

    slow = bootstrap_interval(mmd2_fixed, x, y, n_boot=30, seed=5)["stderr"]
    assert fast["mmd2"] == pytest.approx(slow, rel=1e-9)
    assert metrics.standard_error(metrics.METRICS["energy"], metrics.energy_distance, x, y, seed=5) == pytest.approx(
        metrics.pooled_bootstrap_se(x, y, ["energy"], boot=metrics.METRICS["energy"].boot, seed=5)["energy"])


def test_a_cell_stores_every_requested_metric_with_its_interval():
    from bench.harness.cell import Cell
    from bench.harness.execute import execute_cell

    cell = Cell(task="sample", model="gmm2d-vp", solver="heun", options={}, grid=None, budget=None, steps=8, n=300,
                seed=0, exact_prior=True, device="cpu", dtype="float32", threads=1, repeats=1, warmup=0,
                metrics=("discretization", "exact_kl", "xent_gap", "mode_tv", "sliced_w2"),
                reference={"ode_rtol": 1e-9, "sde_steps": 256})
    res = execute_cell(cell)
    assert res.error is None
    m = res.metrics
    for name in ("discretization", "exact_kl", "xent_gap", "mode_tv", "sliced_w2"):
        assert math.isfinite(m[name].value) and m[name].se > 0, name
    assert m["exact_kl"].value > 0 and m["mode_tv"].floor > 0 and m["sliced_w2"].floor > 0
    # exact KL is for deterministic samplers only: a stochastic one stores none (not a NaN to gate on)
    res = execute_cell(cell.replace(solver="euler_maruyama"))
    assert "exact_kl" not in res.metrics and math.isfinite(res.metrics["xent_gap"].value)
    # the stored form round-trips: flat columns, read back typed
    assert type(res).from_dict(res.to_dict()) == res
    assert "xent_gap_se" in res.to_dict()["metrics"] and "exact_kl" not in res.to_dict()["metrics"]
