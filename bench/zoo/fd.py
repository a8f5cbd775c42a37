"""Image-quality metrics for learned models, offline: FD-digits and precision/recall in the feature
space of the shipped digits classifier; Inception FID only from weights a user has on disk.

FD-digits is *not* FID. It is the Fréchet distance between Gaussians fitted to the 32-D
penultimate-layer features of ``digits-classifier`` (a small CNN trained by ``sdebench train
digits-classifier`` on the train split of scikit-learn's 8x8 digits, 98-99% held-out accuracy;
card in ``bench/checkpoints/digits-classifier.json``):

    FD = ||mu_x - mu_y||^2 + tr(S_x + S_y - 2 (S_x^1/2 S_y S_x^1/2)^1/2)

computed in float64 (the matrix square root by symmetric eigendecompositions). The reference
set is the 600 held-out images (never seen by the score models nor the classifier). Its values
are on their own scale: compare them only with each other and with the noise floor
``fd_digits_floor(n)`` — real vs real: n real training images (disjoint from the reference)
against the same 600 held-out images, the value a model as good as the data would get at that
sample size. FD is biased upward at finite n and its sampling spread is ~10-20% at n = 600,
so compare at equal n and look at differences well above that.

Precision and recall (Kynkäänniemi et al. 2019, "Improved precision and recall"): each set's
manifold is the union of balls around its points with radius the distance to the k-th nearest
neighbour (k = 3) within the set; precision = share of generated points inside the real
manifold, recall = share of real points inside the generated one.

Inception FID (``inception_fid``) goes through torchmetrics' ``FrechetInceptionDistance`` with
``feature_extractor_weights_path`` pointing at Inception-v3 FID weights already on disk; nothing is
downloaded, and without a path (or without torchmetrics / torch-fidelity) it raises a clear
``InputError``. On 8x8 digits upsampled to 299x299 it is of little meaning: it is there for
image models users bring.
"""
from __future__ import annotations

import functools
import pathlib

import torch

from solvers import InputError

from . import data as _data

__all__ = ["FEATURE_NET", "digits_features", "frechet_distance", "fd_digits", "fd_digits_floor",
           "precision_recall", "digits_quality", "inception_fid"]

#: the checkpoint whose features define FD-digits
FEATURE_NET = "digits-classifier"


@functools.lru_cache(maxsize=4)
def _classifier(checkpoints: str | None):
    from .trained import load_net

    net, card, _ = load_net(FEATURE_NET, checkpoints=checkpoints)
    if card["kind"] != "classifier":
        raise InputError(f"{FEATURE_NET}: expected a classifier card, got kind {card['kind']!r}")
    return net


def _images(x: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InputError(f"{who}: expected a floating-point tensor of digits images, got {type(x).__name__}")
    if x.ndim == 2 and x.shape[1] == 64:
        x = x.reshape(-1, 1, 8, 8)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise InputError(f"{who}: expected digits images of shape (n, 1, 8, 8) or (n, 64) in model units "
                         f"([-1, 1], see bench.zoo.data), got {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise InputError(f"{who}: need at least 2 images, got {x.shape[0]}")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{who}: the images contain NaN or inf")
    return x


def digits_features(x: torch.Tensor, *, checkpoints=None, batch: int = 4096) -> torch.Tensor:
    """(n, 64) float64 features of digits images (model units) from the shipped classifier."""
    x = _images(x, "digits_features")
    net = _classifier(None if checkpoints is None else str(checkpoints))
    with torch.no_grad():
        feats = [net.features(x[i:i + batch].detach().to("cpu", torch.float32)) for i in range(0, len(x), batch)]
    return torch.cat(feats).double()


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(0.5 * (a + a.T))
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(fx: torch.Tensor, fy: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n, d) and (m, d)."""
    fx, fy = fx.double().flatten(1), fy.double().flatten(1)
    if fx.shape[1] != fy.shape[1] or len(fx) < 2 or len(fy) < 2:
        raise InputError(f"frechet_distance: need two sets of >= 2 feature vectors of one dimension, got "
                         f"{tuple(fx.shape)} and {tuple(fy.shape)}")
    mx, my = fx.mean(0), fy.mean(0)
    sx, sy = torch.cov(fx.T).reshape(fx.shape[1], -1), torch.cov(fy.T).reshape(fy.shape[1], -1)
    rx = _sqrtm_psd(sx)
    cross = torch.linalg.eigvalsh(rx @ sy @ rx).clamp_min(0).sqrt().sum()
    return float((mx - my).pow(2).sum() + torch.trace(sx) + torch.trace(sy) - 2 * cross)


def _heldout(seed: int = 0) -> torch.Tensor:
    """The reference set: all 600 held-out images, dequantized with a fixed generator."""
    return _data.digits(None, split="test", generator=torch.Generator().manual_seed(seed))


def fd_digits(x: torch.Tensor, y: torch.Tensor | None = None, *, checkpoints=None) -> float:
    """FD-digits between images ``x`` and ``y`` (default: the 600 held-out images)."""
    y = _heldout() if y is None else y
    return frechet_distance(digits_features(x, checkpoints=checkpoints), digits_features(y, checkpoints=checkpoints))


def _train_images(n: int, seed: int) -> torch.Tensor:
    size = _data.split_size("train")
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= size:
        raise InputError(f"the noise floor draws n real training images: need 2 <= n <= {size}, got {n!r}")
    return _data.digits(n, split="train", generator=torch.Generator().manual_seed(1_000 + seed))


def fd_digits_floor(n: int = 600, *, seed: int = 0, checkpoints=None) -> float:
    """The noise floor of FD-digits at n samples: n real training images against the 600 held-out."""
    return fd_digits(_train_images(n, seed), checkpoints=checkpoints)


def precision_recall(fx: torch.Tensor, fy: torch.Tensor, *, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of generated features ``fx`` against real features ``fy`` (k-NN manifolds)."""
    fx, fy = fx.double().flatten(1), fy.double().flatten(1)
    if len(fx) <= k or len(fy) <= k:
        raise InputError(f"precision_recall: each set needs more than k={k} points, got {len(fx)} and {len(fy)}")

    def radii(f):  # distance to the k-th nearest other point
        return torch.cdist(f, f).kthvalue(k + 1, dim=1).values

    d = torch.cdist(fx, fy)  # (n_gen, n_real)
    precision = (d <= radii(fy)[None, :]).any(1).double().mean()
    recall = (d <= radii(fx)[:, None]).any(0).double().mean()
    return float(precision), float(recall)


def digits_quality(x: torch.Tensor, *, seed: int = 0, k: int = 3, checkpoints=None) -> dict:
    """FD-digits, precision and recall of generated images ``x`` against the 600 held-out images,
    each with its noise floor (``len(x)`` real training images in place of ``x``)."""
    x = _images(x, "digits_quality")
    ref, real = _heldout(), _train_images(min(len(x), _data.split_size("train")), seed)
    fx, fr, fy = (digits_features(v, checkpoints=checkpoints) for v in (x, real, ref))
    p, r = precision_recall(fx, fy, k=k)
    p0, r0 = precision_recall(fr, fy, k=k)
    return {"fd_digits": frechet_distance(fx, fy), "fd_digits_floor": frechet_distance(fr, fy),
            "precision": p, "recall": r, "precision_floor": p0, "recall_floor": r0, "n": len(fx), "n_real": len(fy)}


def inception_fid(x: torch.Tensor, y: torch.Tensor, *, weights_path=None, batch: int = 64) -> float:
    """Inception FID (torchmetrics) between images x (generated) and y (real), values in [-1, 1],
    shape (n, C, H, W) with C = 1 or 3, using Inception-v3 FID weights at ``weights_path``."""
    if weights_path is None:
        raise InputError("inception_fid needs Inception-v3 FID weights on disk (e.g. torch-fidelity's "
                         "weights-inception-2015-12-05-6726825d.pth): pass weights_path=...; this project never "
                         "downloads weights. For the digits models use bench.zoo.fd.fd_digits (FD-digits, not FID).")
    path = pathlib.Path(weights_path)
    if not path.is_file():
        raise InputError(f"inception_fid: {path}: no such weights file")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as e:
        raise InputError("inception_fid needs torchmetrics with its image extra (pip install 'torchmetrics[image]', "
                         "which brings torch-fidelity)") from e
    for name, v in (("x", x), ("y", y)):
        if not isinstance(v, torch.Tensor) or v.ndim != 4 or v.shape[1] not in (1, 3):
            raise InputError(f"inception_fid: {name} must be images (n, 1 or 3, H, W), got "
                             f"{tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}")
    try:
        fid = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(path))
    except Exception as e:
        raise InputError(f"inception_fid: could not build Inception-v3 from {path}: {type(e).__name__}: {e}") from None

    def feed(v, real):
        for i in range(0, len(v), batch):
            b = ((v[i:i + batch].detach().float().cpu() + 1) / 2).clamp(0, 1)
            fid.update(b.expand(-1, 3, -1, -1) if b.shape[1] == 1 else b, real=real)

    feed(y, True)
    feed(x, False)
    return float(fid.compute())
