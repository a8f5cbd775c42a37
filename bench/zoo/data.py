"""Data for the trained models, all offline: a 2-D checkerboard (an exact sampler) and the 8x8
handwritten digits that scikit-learn ships inside its package (``sklearn.datasets.load_digits``,
1,797 images, pixel levels 0..16; nothing is downloaded).

Scaling and dequantization (one convention, written in every checkpoint card):

- checkerboard: uniform on the 8 squares (i, j) with i + j even of the 4x4 board on [-2, 2]^2
  (density 1/8 there); standard deviation sqrt(4/3) per coordinate. Used as is.
- digits: a pixel level v in {0, .., 16} becomes x = (v + u) * 2/17 - 1 with u ~ U[0, 1)
  (uniform dequantization; x in [-1, 1)), bin width ``DIGITS_BIN_WIDTH`` = 2/17 in model units.
  Models are trained on dequantized images and their likelihood is reported on dequantized
  held-out images, so bits/dim = -log p / (64 ln 2) + log2(17/2) bounds the discrete model's
  (Theis et al. 2016). ``dequantize=False`` gives the bin centres (u = 1/2).
- split: a fixed permutation (``torch.Generator`` seeded with ``SPLIT_SEED``) of the 1,797
  images; the first ``DIGITS_TEST`` are held out, in two disjoint halves ``test_a``/``test_b``
  (two independent real sets for noise floors); the rest (``train``) trains every model and the
  digits classifier. Images are (1, 8, 8).
"""
from __future__ import annotations

import functools
import math

import torch

from solvers import InputError

__all__ = ["checkerboard", "CHECKERBOARD_STD", "digits_levels", "digits_scale", "digits",
           "DIGITS_LEVELS", "DIGITS_BIN_WIDTH", "DIGITS_TEST", "SPLITS", "SPLIT_SEED", "split_size"]

CHECKERBOARD_STD = math.sqrt(4 / 3)
DIGITS_LEVELS = 17
DIGITS_BIN_WIDTH = 2 / DIGITS_LEVELS
DIGITS_TEST = 600
SPLIT_SEED = 0
SPLITS = ("train", "test", "test_a", "test_b", "all")


def checkerboard(n: int, *, generator=None, dtype=torch.float64) -> torch.Tensor:
    """n exact samples of the 2-D checkerboard, shape (n, 2)."""
    i = torch.randint(0, 4, (n,), generator=generator)
    j = 2 * torch.randint(0, 2, (n,), generator=generator) + i % 2
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    x = torch.stack([i, j], 1).double() + u - 2
    return x.to(dtype)


@functools.lru_cache(maxsize=1)
def _digits_all() -> torch.Tensor:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise InputError("the digits data needs scikit-learn (pip install scikit-learn): it ships the 8x8 "
                         "digits inside the package") from e
    images = torch.as_tensor(load_digits().images, dtype=torch.uint8)  # (1797, 8, 8), levels 0..16
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(SPLIT_SEED))
    return images[perm][:, None]


@functools.lru_cache(maxsize=1)
def _digits_labels_all() -> torch.Tensor:
    from sklearn.datasets import load_digits

    labels = torch.as_tensor(load_digits().target, dtype=torch.long)
    perm = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(SPLIT_SEED))
    return labels[perm]


def _slice(split: str) -> slice:
    half = DIGITS_TEST // 2
    table = {"test": slice(0, DIGITS_TEST), "test_a": slice(0, half), "test_b": slice(half, DIGITS_TEST),
             "train": slice(DIGITS_TEST, None), "all": slice(None)}
    if split not in table:
        raise InputError(f"unknown digits split {split!r}; valid: {', '.join(SPLITS)}")
    return table[split]


def split_size(split: str) -> int:
    return len(range(*_slice(split).indices(_digits_all().shape[0])))


def digits_levels(split: str = "train", *, labels: bool = False):
    """The uint8 pixel levels (0..16) of a split, shape (n, 1, 8, 8); with labels, (levels, labels)."""
    s = _slice(split)
    return (_digits_all()[s], _digits_labels_all()[s]) if labels else _digits_all()[s]


def digits_scale(levels: torch.Tensor, *, dequantize: bool = True, generator=None,
                 dtype=torch.float64) -> torch.Tensor:
    """Levels 0..16 -> model units in [-1, 1): x = (v + u) 2/17 - 1, u ~ U[0,1) (or u = 1/2)."""
    v = levels.to(torch.float64)
    u = torch.rand(v.shape, generator=generator, dtype=torch.float64) if dequantize else 0.5
    return ((v + u) * DIGITS_BIN_WIDTH - 1).to(dtype)


def digits(n: int | None = None, *, split: str = "test", generator=None, dequantize: bool = True,
           dtype=torch.float64) -> torch.Tensor:
    """n images of a split in model units, drawn without replacement (all, in order, when n is
    None), shape (n, 1, 8, 8)."""
    levels = digits_levels(split)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"n must be a positive integer, got {n!r}")
        if n > levels.shape[0]:
            raise InputError(f"the digits {split!r} split has {levels.shape[0]} images; asked for n={n} "
                             "(held-out data are drawn without replacement)")
        levels = levels[torch.randperm(levels.shape[0], generator=generator)[:n]]
    return digits_scale(levels, dequantize=dequantize, generator=generator, dtype=dtype)
