import pytest
import torch

import solvers
from solvers import EDM, VE, VP, SubVP
from solvers.grids import GRIDS, make_grid

SDES = [VP(), SubVP(), VE(), EDM()]


def coordinate(sde, kind, t):
    return {"uniform": lambda: t, "quadratic": lambda: t.sqrt(), "logsnr": lambda: sde.lam(t),
            "edm": lambda: torch.exp(-sde.lam(t)) ** (1 / 7), "tan": lambda: torch.atan(torch.exp(-sde.lam(t)))}[kind]()


@pytest.mark.parametrize("sde", SDES, ids=repr)
@pytest.mark.parametrize("kind", list(GRIDS))
def test_builtin_grids_are_uniform_in_their_coordinate(sde, kind):
    t = make_grid(sde, 12, kind, **({"data_std": 1.0} if kind == "tan" else {}))
    assert t.dtype == torch.float64 and t.shape == (13,)
    assert t[0].item() == sde.T and t[-1].item() == sde.eps
    assert bool((torch.diff(t) < 0).all())
    d = torch.diff(coordinate(sde, kind, t))
    torch.testing.assert_close(d, d.mean().expand_as(d), rtol=1e-7, atol=1e-12)


def test_aliases_and_default():
    sde = VP()
    torch.testing.assert_close(make_grid(sde, 5, "time_uniform"), make_grid(sde, 5, "uniform"))
    torch.testing.assert_close(make_grid(sde, 5, "logSNR"), make_grid(sde, 5, "logsnr"))
    torch.testing.assert_close(make_grid(EDM(), 5), make_grid(EDM(), 5, "edm"))


@pytest.mark.parametrize("bad, match", [
    ([1.0, 0.5, 0.5, 1e-3], "strictly decreasing"),
    ([1.0, 0.5, 0.7, 1e-3], "strictly decreasing"),
    ([2.0, 0.5, 1e-3], r"\[eps, T\]"),
    ([1.0, 0.5, 1e-5], r"\[eps, T\]"),
    ([1.0, float("nan"), 1e-3], "NaN"),
    ([[1.0, 0.5]], "1-D"),
    ([1.0], "at least 2"),
])
def test_bad_user_grids(bad, match):
    with pytest.raises(solvers.InputError, match=match):
        solvers.check_times(VP(), torch.tensor(bad))


def test_bad_grid_name_and_steps():
    with pytest.raises(solvers.InputError, match="valid grids: uniform"):
        make_grid(VP(), 5, "cosine")
    for steps in (0, -3, 2.5, True):
        with pytest.raises(solvers.InputError, match="steps must be an integer >= 1"):
            make_grid(VP(), steps)
