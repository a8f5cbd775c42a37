"""GPU readiness, checked on CPU where it can be: the default step noise, the cached set-up, the
pre-generated-noise loop a CUDA graph replays, graph/sync refusals, torch.compile and autocast
on ScoreModel, the timing-only CIFAR-10 U-Net, and bench.harness.gpu_check. Tests marked ``cuda`` run
only where CUDA is available (bench/gpu_check.sh runs them)."""
import math

import pytest
import torch
from conftest import case_id, solver_cases

import solvers
from bench.zoo import models
from solvers import InputError, ScoreModel
from solvers.graph import check, draw_normals, pregenerated, run_with_normals
from solvers.sampling import prepare

cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
FIXED = [c for c in solver_cases() if not solvers.get(c[0]).adaptive]
CAPTURABLE = [c for c in FIXED if not solvers.get(c[0]).needs_path]


def _x(m, n=32, dtype=torch.float32):
    return m.sample_prior(n, generator=torch.Generator().manual_seed(0), dtype=dtype)


# --- noise and the set-up cache --------------------------------------------------------------------
def test_step_noise_is_the_default_and_draws_scaled_normals(gmm2d_vp):
    x = _x(gmm2d_vp, 4000)
    em = prepare(gmm2d_vp, "euler_maruyama", steps=4, x_T=x).instance()
    assert isinstance(em.noise, solvers.StepNoise)
    dw = em.noise.increment(0.5, 0.25)
    assert abs(dw.var().item() / 0.25 - 1) < 0.1
    srk = prepare(gmm2d_vp, "torchsde_euler", steps=4, x_T=x).instance()
    assert isinstance(srk.noise, solvers.BrownianPath)  # torchsde queries a path: it keeps one


def test_cached_setup_gives_each_call_fresh_state(gmm2d_vp):
    x = _x(gmm2d_vp)
    a = solvers.sample(gmm2d_vp, "unipc", steps=7, x_T=x).x
    b = solvers.sample(gmm2d_vp, "unipc", steps=7, x_T=x).x
    solvers.clear_caches()
    c = solvers.sample(gmm2d_vp, "unipc", steps=7, x_T=x).x
    assert torch.equal(a, b) and torch.equal(a, c)
    pc = dict(predictor="dpmpp_2m_sde", corrector="langevin")
    assert torch.equal(solvers.sample(gmm2d_vp, "pc", steps=5, x_T=x, **pc).x,
                       solvers.sample(gmm2d_vp, "pc", steps=5, x_T=x, **pc).x)


# --- the loop a graph replays, on CPU ------------------------------------------------------------------
@pytest.mark.parametrize("case", CAPTURABLE, ids=case_id)
def test_pregenerated_noise_loop_gives_the_eager_samples(case, gmm2d_vp):
    name, opts = case
    x = _x(gmm2d_vp, 16)
    eager = solvers.sample(gmm2d_vp, name, steps=5, x_T=x, seed=2, **opts)
    nfe = gmm2d_vp.nfe
    taped = pregenerated(prepare(gmm2d_vp, name, steps=5, x_T=x, seed=2, **opts))
    assert torch.equal(taped, eager.x)
    assert gmm2d_vp.nfe - nfe == eager.nfe  # the counting pass is not counted


def test_graph_and_sync_debug_are_refused_where_they_cannot_run(gmm2d_vp):
    x = _x(gmm2d_vp, 8)
    with pytest.raises(InputError, match="cuda"):
        solvers.sample(gmm2d_vp, "euler", steps=3, x_T=x, graph=True)
    with pytest.raises(InputError, match="cuda"):
        solvers.sample(gmm2d_vp, "euler", steps=3, x_T=x, sync_debug=True)
    with pytest.raises(InputError, match="adaptive"):
        check(prepare(gmm2d_vp, "dopri5", x_T=x), device_check=False)
    with pytest.raises(InputError, match="torchsde"):
        check(prepare(gmm2d_vp, "torchsde_euler", steps=3, x_T=x), device_check=False)
    path = solvers.BrownianPath.for_sde(gmm2d_vp.sde, x.shape, seed=0)
    with pytest.raises(InputError, match="brownian"):
        check(prepare(gmm2d_vp, "euler_maruyama", steps=3, x_T=x, brownian=path), device_check=False)
    with pytest.raises(InputError, match="trajectory"):
        check(prepare(gmm2d_vp, "euler", steps=3, x_T=x), device_check=False, trajectory=True)
    check(prepare(gmm2d_vp, "pc", steps=3, x_T=x), device_check=False)  # capturable


# --- compile and autocast ------------------------------------------------------------------------------
class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2))
        self.requires_grad_(False)

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None]], dim=1))


def test_compile_records_its_time_apart_and_keeps_results():
    net = _Tiny()
    plain = ScoreModel(net, solvers.VP(), "eps", shape=(2,))
    comp = ScoreModel(net, solvers.VP(), "eps", shape=(2,), compile=True)
    x = _x(plain, 8)
    assert comp.warm_compile(x) > 0 and comp.compile_s > 0 and comp.nfe == 0
    warm = comp.compile_s
    out = solvers.sample(comp, "euler", steps=3, x_T=x)
    assert out.nfe == 3 and comp.compile_s == warm  # compiled once, for this signature
    torch.testing.assert_close(out.x, solvers.sample(plain, "euler", steps=3, x_T=x).x, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_runs_the_network_low_and_the_solver_in_float32():
    net = _Tiny()
    seen = []
    net.net[0].register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    low = ScoreModel(net, solvers.VP(), "eps", shape=(2,), autocast="bf16")
    ref = ScoreModel(net, solvers.VP(), "eps", shape=(2,))
    x = _x(ref, 64)
    out = solvers.sample(low, "dpmpp_2m", steps=4, x_T=x)
    assert out.x.dtype == torch.float32 and seen[-1] == torch.bfloat16
    exact = solvers.sample(ref, "dpmpp_2m", steps=4, x_T=x).x
    assert 0 < (out.x - exact).abs().max() < 0.02 * exact.abs().max()  # bf16 rounding, not garbage
    with pytest.raises(InputError, match="autocast"):
        ScoreModel(net, solvers.VP(), "eps", autocast="int8")


# --- the timing-only U-Net -----------------------------------------------------------------------------
def test_cifar_unet_is_registered_timing_only_and_has_the_ddpm_size():
    from bench.zoo import cifar_unet
    assert cifar_unet.NAME in models.available()
    m = models.load(cifar_unet.NAME)
    assert m.timing_only and m.shape == (3, 32, 32)
    assert abs(sum(p.numel() for p in m.net.parameters()) / 1e6 - 35.7) < 0.1
    for refused in (lambda: m.exact_sample(4, 0.5), lambda: m.data_sample(4)):
        with pytest.raises(InputError, match="timing-only"):
            refused()


def test_cifar_unet_samples_and_narrow_variant_is_cheap():
    from bench.zoo import cifar_unet
    m = cifar_unet.load(block_out_channels=(32, 32, 32, 32), norm_num_groups=8)
    out = solvers.sample(m, "ddim", steps=2, n=2)
    assert out.x.shape == (2, 3, 32, 32) and out.nfe == 2 and bool(torch.isfinite(out.x).all())


# --- bench.harness.gpu_check on CPU ------------------------------------------------------------------------------
def test_gpu_check_runs_what_it_can_on_cpu(tmp_path):
    from bench.harness import gpu_check
    rc = gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--quick", "--parts", "tests,sync,timing,suite",
                         "--solvers", "euler,euler_maruyama", "--unet-batches", "1"])
    assert rc == 0
    summary = (tmp_path / "summary.md").read_text()
    for skipped in ("tests: skipped", "sync: skipped", "graph replay skipped", "suite: skipped"):
        assert skipped in summary
    rows = (tmp_path / "timing.csv").read_text().splitlines()
    assert rows[0].startswith("model,batch,solver") and len(rows) == 1 + 2 * 2 * 2 + 2
    assert "error" not in rows[0]


# --- CUDA (bench/gpu_check.sh) ---------------------------------------------------------------------------
def _same_noise_on(device, dtype, case, x64):
    """Sample on ``device`` in ``dtype`` from x64 with the normals a CPU float64 call draws."""
    name, opts = case
    m = models.load("gmm2d-vp")
    cls = solvers.get(name)
    if cls.per_sample_noise:  # counter-based: the same path on every device
        path = solvers.CounterBrownianPath.for_sde(m.sde, x64.shape, seed=0, dtype=dtype, device=device)
        return solvers.sample(m, name, steps=6, x_T=x64.to(device, dtype), brownian=path, **opts).x
    cpu = prepare(m, name, steps=6, x_T=x64, **opts)
    normals = draw_normals(cpu) if not cls.adaptive else (torch.zeros(0, *x64.shape),) * 2
    call = prepare(m, name, steps=6, x_T=x64.to(device, dtype), **opts)
    if cls.adaptive:
        return solvers.sample(m, name, steps=6, x_T=call.x, **opts).x
    return run_with_normals(call, *normals)


@cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", [c for c in solver_cases() if not solvers.get(c[0]).needs_path
                                  or solvers.get(c[0]).per_sample_noise or not solvers.get(c[0]).uses_brownian],
                         ids=case_id)
def test_cuda_matches_cpu_on_the_same_x_T_and_noise(case, dtype):
    x64 = _x(models.load("gmm2d-vp"), 64, torch.float64)
    gpu = _same_noise_on(torch.device("cuda"), dtype, case, x64)
    cpu = _same_noise_on(torch.device("cpu"), dtype, case, x64)
    tol = 1e-3 if dtype == torch.float32 else 1e-8
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=tol, atol=tol)


@cuda
@needs_cuda
@pytest.mark.parametrize("case", CAPTURABLE, ids=case_id)
def test_cuda_graph_replay_matches_eager(case):
    name, opts = case
    m = models.load("gmm2d-vp")
    x = _x(m, 256).cuda()
    eager = solvers.sample(m, name, steps=6, x_T=x, seed=1, **opts)
    for seed in (1, 2):  # the second replay of one capture, and a new seed
        g = solvers.sample(m, name, steps=6, x_T=x, seed=seed, graph=True, **opts)
        e = eager if seed == 1 else solvers.sample(m, name, steps=6, x_T=x, seed=seed, **opts)
        assert g.nfe == e.nfe
        torch.testing.assert_close(g.x, e.x, rtol=1e-5, atol=1e-5)


@cuda
@needs_cuda
def test_cuda_likelihood_matches_cpu():
    m = models.load("gmm2d-vp")
    x = m.exact_sample(128, m.sde.eps, generator=torch.Generator().manual_seed(0))
    cpu = solvers.log_likelihood(m, x, rtol=1e-6, atol=1e-6)
    gpu = solvers.log_likelihood(m, x.cuda(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gpu.logp.cpu(), cpu.logp, rtol=1e-4, atol=1e-4)
    assert math.isfinite(float(gpu.logp.mean()))
