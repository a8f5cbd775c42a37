"""Trained score models shipped as checkpoints: loading by name, safely.

A checkpoint is two files in ``bench/checkpoints/`` (or any directory):

    <name>.safetensors   the network's weights (float32; safetensors: no code is executed on load)
    <name>.json          its card: what the weights mean and how they were made

The card (``format`` 1) holds: ``name``; ``kind`` ("score" or "classifier"); ``weights`` (the
weights file, next to the card; ``.safetensors``, or ``.pt``/``.pth`` read with
``torch.load(weights_only=True)``) and its ``sha256``; ``arch`` (a name in ``bench.zoo.nets.ARCHS``)
and ``arch_args``; for score models ``sde`` (a name in ``solvers.SDES``) and ``sde_args``,
``prediction`` (eps | x0 | v | score), ``time_input`` and ``preconditioning`` (below), ``shape``
(one sample); ``data`` (name, scaling, dequantization); ``training`` (seed, steps, batch,
optimizer, loss, threads, wall time); ``final_loss``; ``commit``.

How the network sees time (``time_input``, one documented map per SDE family):

    "1000*t"          c = 1000 t               (VP, sub-VP: continuous t in [eps, 1])
    "250*log(sigma)"  c = 250 log sigma_t      (sigma-time / VE; = 1000 c_noise of EDM)

``preconditioning``: "none" (the network's output *is* the prediction) or "edm" (Karras et al.
2022, Table 1; SDEs with alpha = 1 only): D(x, sigma) = c_skip x + c_out F(c_in x, c), with
c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
c_in = 1 / sqrt(sigma^2 + sd^2) and sd = ``sigma_data``; the prediction is then x0.

Loading checks everything and fails with ``CheckpointError`` (an ``InputError``) naming the
file: a missing or unparsable card, a missing key, an unknown architecture / SDE / prediction,
a weights file that is missing, truncated or altered (sha256), unreadable, or whose tensors do
not match the architecture's names and shapes; a card without ``sha256`` (unless loaded with
``verify=False``, which warns); a ``weights`` path that leaves the card's directory; a ``shape``
the network does not map to itself.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import pathlib
import warnings

import torch

from solvers import PREDICTIONS, SDES, InputError, ScoreModel

from . import data as _data
from .nets import ARCHS

__all__ = ["TrainedModel", "CheckpointError", "CHECKPOINTS", "load", "load_net", "available", "read_card",
           "save_checkpoint", "NetFn", "TIME_INPUTS", "PRECONDITIONINGS", "DATASETS"]

CHECKPOINTS = pathlib.Path(__file__).parent / "checkpoints"
CARD_FORMAT = 1
TIME_INPUTS = ("1000*t", "250*log(sigma)")
PRECONDITIONINGS = ("none", "edm")
DATASETS = ("checkerboard", "digits")
KINDS = ("score", "classifier")
_REQUIRED = {"score": ("name", "kind", "weights", "arch", "arch_args", "sde", "sde_args", "prediction",
                       "time_input", "preconditioning", "shape", "data"),
             "classifier": ("name", "kind", "weights", "arch", "arch_args", "data")}


class CheckpointError(InputError):
    """A checkpoint (card or weights) that cannot be loaded; the message names the file."""


# ----------------------------------------------------------------------------------------------
# the network as a ScoreModel function
# ----------------------------------------------------------------------------------------------

class NetFn:
    """``fn(x, t)`` for ``ScoreModel``: maps continuous time to the network's input (``time_input``),
    applies the preconditioning, and runs the network in x's dtype and device (a cast copy is
    made once per dtype/device; float64 runs for reference solves)."""

    def __init__(self, net: torch.nn.Module, sde, *, time_input: str, preconditioning: str = "none",
                 sigma_data: float | None = None):
        self.net, self.sde = net, sde
        self.time_input, self.preconditioning = time_input, preconditioning
        self.sigma_data = None if sigma_data is None else float(sigma_data)
        self._copies: dict = {}
        self.__name__ = type(net).__name__

    def _net(self, dtype, device):
        key = (dtype, str(device))
        net = self._copies.get(key)
        if net is None:
            net = copy.deepcopy(self.net).to(device=device, dtype=dtype).eval()
            net.requires_grad_(False)
            self._copies[key] = net
        return net

    def conditioning(self, t: torch.Tensor) -> torch.Tensor:
        if self.time_input == "1000*t":
            return t * 1000
        return self.sde.log_sigma(t) * 250  # "250*log(sigma)"

    def apply(self, net, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The prediction of ``net`` (any copy, e.g. the one being trained) at (x, t)."""
        c = self.conditioning(t)
        if self.preconditioning == "none":
            return net(x, c)
        sigma = self.sde.sigma(t).reshape(-1, *([1] * (x.ndim - 1)))
        sd = self.sigma_data
        s2 = sigma * sigma + sd * sd
        c_in, c_skip, c_out = torch.rsqrt(s2), sd * sd / s2, sigma * sd * torch.rsqrt(s2)
        return c_skip * x + c_out * net(x * c_in, c)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.apply(self._net(x.dtype, x.device), x, t)


class TrainedModel(ScoreModel):
    """A ``ScoreModel`` on a shipped (or user-trained) checkpoint.

    Besides the ``ScoreModel`` interface: ``card`` (the JSON card), ``path`` (the card file),
    ``net`` (the float32 module), ``shape``, ``data`` (the data set's name), ``bin_width`` (grid
    spacing of discrete data in model units, for bits/dim; None for continuous data) and
    ``data_sample`` (real data to compare samples with: trained models have no exact target).
    """

    has_exact = False

    def __init__(self, net: torch.nn.Module, card: dict, path: pathlib.Path):
        sde = SDES[card["sde"]](**card["sde_args"])
        fn = NetFn(net, sde, time_input=card["time_input"], preconditioning=card["preconditioning"],
                   sigma_data=card.get("sigma_data"))
        super().__init__(fn, sde, card["prediction"], shape=card["shape"], name=card["name"])
        self.net, self.card, self.path = net, card, pathlib.Path(path)
        self.data = card["data"]["name"]
        self.bin_width = card["data"].get("bin_width")

    def data_sample(self, n: int, generator=None, *, part: int = 0,
                    dtype=torch.float64, device="cpu") -> torch.Tensor:
        """n samples of the data distribution the model was trained to match (model units): the
        target of distribution metrics (``part=0``) and an independent real set for their noise
        floor (``part=1``). Trained models have no exact samples; this is what replaces them.

        digits: ``part=0`` draws from the 600 held-out images (never used in training),
        ``part=1`` from the 1,197 training images (real data too, disjoint from part 0); drawn
        without replacement (n at most 600, resp. 1,197; ``data_size(part)``) and uniformly
        dequantized like the training data (see ``bench.zoo.data``).
        checkerboard: fresh exact samples; part k is the k-th of two independent sets drawn
        from ``generator``, so parts 0 and 1 differ for one generator state too."""
        if part not in (0, 1):
            raise InputError(f"part must be 0 (the target: held-out data) or 1 (an independent real set, for "
                             f"noise floors), got {part!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"n must be a positive integer, got {n!r}")
        if self.data == "checkerboard":
            x = _data.checkerboard(2 * n, generator=generator, dtype=dtype)[part * n:(part + 1) * n]
        else:
            x = _data.digits(n, split=("test", "train")[part], generator=generator, dtype=dtype)
        return x.to(device)

    def data_size(self, part: int = 0) -> float:
        """The most samples ``data_sample(..., part=part)`` can give (inf for an exact sampler)."""
        if part not in (0, 1):
            raise InputError(f"part must be 0 or 1, got {part!r}")
        if self.data == "checkerboard":
            return math.inf
        return _data.split_size(("test", "train")[part])

    def __repr__(self):
        return f"TrainedModel({self.name!r}, {self.sde!r}, prediction={self.prediction!r}, path={str(self.path)!r})"


# ----------------------------------------------------------------------------------------------
# reading and writing checkpoints
# ----------------------------------------------------------------------------------------------

def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _card_file(name_or_path, checkpoints) -> pathlib.Path:
    p = pathlib.Path(name_or_path)
    if p.suffix == ".json":
        return p
    if p.suffix in (".safetensors", ".pt", ".pth"):
        return p.with_suffix(".json")
    return pathlib.Path(checkpoints or CHECKPOINTS) / f"{name_or_path}.json"


def read_card(path) -> dict:
    """The validated card at ``path`` (a .json file)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint card")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: the card is not valid JSON ({e})") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{path}: the card must be a JSON object")
    kind = card.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{path}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    missing = [k for k in _REQUIRED[kind] if k not in card]
    if missing:
        raise CheckpointError(f"{path}: the card lacks {', '.join(missing)}")
    if card.get("format", CARD_FORMAT) != CARD_FORMAT:
        raise CheckpointError(f"{path}: card format {card['format']!r} is not supported (this version reads "
                              f"{CARD_FORMAT})")
    if card["arch"] not in ARCHS:
        raise CheckpointError(f"{path}: unknown architecture {card['arch']!r}; known: {', '.join(sorted(ARCHS))}")
    if not isinstance(card["arch_args"], dict):
        raise CheckpointError(f"{path}: arch_args must be a JSON object")
    data = card["data"]
    if not isinstance(data, dict) or data.get("name") not in DATASETS:
        raise CheckpointError(f"{path}: data.name must be one of {', '.join(DATASETS)}, got "
                              f"{data.get('name') if isinstance(data, dict) else data!r}")
    if kind == "score":
        if card["sde"] not in SDES:
            raise CheckpointError(f"{path}: unknown SDE {card['sde']!r}; known: {', '.join(SDES)}")
        if card["prediction"] not in PREDICTIONS:
            raise CheckpointError(f"{path}: unknown prediction {card['prediction']!r}; valid: {', '.join(PREDICTIONS)}")
        if card["time_input"] not in TIME_INPUTS:
            raise CheckpointError(f"{path}: unknown time_input {card['time_input']!r}; valid: {', '.join(TIME_INPUTS)}")
        if card["preconditioning"] not in PRECONDITIONINGS:
            raise CheckpointError(f"{path}: unknown preconditioning {card['preconditioning']!r}; valid: "
                                  f"{', '.join(PRECONDITIONINGS)}")
        if card["preconditioning"] == "edm":
            if card["prediction"] != "x0" or card["sde"] not in ("edm", "ve") or not card.get("sigma_data"):
                raise CheckpointError(f"{path}: EDM preconditioning needs prediction 'x0', an SDE with alpha = 1 "
                                      "(edm, ve) and sigma_data > 0")
        if not (isinstance(card["shape"], list) and card["shape"] and all(isinstance(s, int) and s > 0
                                                                            for s in card["shape"])):
            raise CheckpointError(f"{path}: shape must be a list of positive integers, got {card['shape']!r}")
        try:
            SDES[card["sde"]](**card["sde_args"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: sde_args {card['sde_args']!r} do not build {card['sde']!r}: {e}") from None
    return card


def _weights_path(card: dict, card_path: pathlib.Path) -> pathlib.Path:
    """The weights file named by the card: a file in the card's own directory, nowhere else."""
    name = card["weights"]
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{card_path}: weights must be a file name, got {name!r}")
    wpath = card_path.parent / name
    home = card_path.parent.resolve()
    if pathlib.PurePath(name).is_absolute() or home not in wpath.resolve().parents:
        raise CheckpointError(f"{card_path}: weights {name!r} is outside the card's directory {home}; a card may "
                              "only name a weights file next to it")
    return wpath


def _read_weights(wpath: pathlib.Path, card: dict, card_path: pathlib.Path, verify: bool = True) -> dict:
    if not wpath.exists():
        raise CheckpointError(f"{wpath}: weights file named by {card_path} does not exist")
    want = card.get("sha256")
    if want is None or not isinstance(want, str):
        if verify:
            raise CheckpointError(f"{card_path}: the card has no sha256 of its weights, so they cannot be verified; "
                                  "add it (sha256sum of the weights file) or load with verify=False "
                                  "(--no-verify) if you trust the file")
        warnings.warn(f"{wpath}: loading weights without verifying them (the card has no sha256)", stacklevel=3)
    elif _sha256(wpath) != want:
        raise CheckpointError(f"{wpath}: sha256 does not match the card {card_path} (file truncated, corrupt or "
                              "replaced); re-train it with `sdebench train` or restore the file")
    try:
        if wpath.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(wpath), device="cpu")
        elif wpath.suffix in (".pt", ".pth"):
            state = torch.load(wpath, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(f"{wpath}: unknown weights format {wpath.suffix!r} (use .safetensors, or .pt "
                                  "read with torch.load(weights_only=True))")
    except CheckpointError:
        raise
    except ImportError as e:
        raise CheckpointError(f"{wpath}: reading it needs the safetensors package (pip install safetensors)") from e
    except Exception as e:
        raise CheckpointError(f"{wpath}: not a readable weights file (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{wpath}: expected a flat mapping of names to tensors")
    return state


def load_net(name_or_path, *, checkpoints=None, verify: bool = True) -> tuple[torch.nn.Module, dict, pathlib.Path]:
    """(network in eval mode, card, card path) of a checkpoint, every check done (``verify=False``
    accepts a card without sha256, with a warning)."""
    card_path = _card_file(name_or_path, checkpoints)
    card = read_card(card_path)
    try:
        net = ARCHS[card["arch"]](**card["arch_args"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{card_path}: arch_args {card['arch_args']!r} do not build {card['arch']!r}: {e}"
                              ) from None
    wpath = _weights_path(card, card_path)
    state = _read_weights(wpath, card, card_path, verify)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs {card['arch']} {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensor(s) of mismatched shape ({'; '.join(wrong[:3])})")
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise CheckpointError(f"{wpath}: weights do not fit {card['arch']}({card['arch_args']}) from {card_path}: "
                              + "; ".join(parts))
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    net.eval().requires_grad_(False)
    if card["kind"] == "score":
        _check_shape(net, card, card_path)
    return net, card, card_path


def _check_shape(net, card, card_path):
    """The card's sample shape must be one the network maps to itself."""
    shape = tuple(card["shape"])
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, *shape), torch.zeros(1))
    except Exception as e:
        raise CheckpointError(f"{card_path}: shape {list(shape)} does not fit {card['arch']}({card['arch_args']}): "
                              f"{type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, *shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(f"{card_path}: shape {list(shape)} does not fit {card['arch']}: the network returns "
                              f"{got} for an input of {(1, *shape)}")


def load(name_or_path, *, checkpoints=None, verify: bool = True) -> TrainedModel:
    """A trained model by name (``available()``) or by the path of its card or weights file
    (``verify=False``: accept a card without sha256, with a warning)."""
    card_path = _card_file(name_or_path, checkpoints)
    p = pathlib.Path(name_or_path)
    if not card_path.exists() and p.suffix not in (".json", ".safetensors", ".pt", ".pth"):
        raise CheckpointError(f"unknown trained model {name_or_path!r}; available: {', '.join(available(checkpoints))} "
                              f"(no card {card_path})")
    net, card, card_path = load_net(card_path, verify=verify)
    if card["kind"] != "score":
        raise CheckpointError(f"{card_path}: {card['name']!r} is a {card['kind']}, not a score model")
    return TrainedModel(net, card, card_path)


def available(checkpoints=None) -> list[str]:
    """Names of the score-model checkpoints in ``checkpoints`` (default the shipped ones)."""
    out = []
    for p in sorted(pathlib.Path(checkpoints or CHECKPOINTS).glob("*.json")):
        try:
            if json.loads(p.read_text()).get("kind") == "score":
                out.append(p.stem)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            continue  # a broken card is reported when it is loaded by name
    return out


def save_checkpoint(net: torch.nn.Module, card: dict, out_dir) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``<name>.safetensors`` and ``<name>.json``; fills ``weights``, ``sha256``, ``bytes``."""
    from safetensors.torch import save_file

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = card["name"]
    wpath, cpath = out_dir / f"{name}.safetensors", out_dir / f"{name}.json"
    state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in net.state_dict().items()}
    save_file(state, str(wpath), metadata={"card": cpath.name})  # one key: bytes are deterministic
    card = {"format": CARD_FORMAT, **card, "weights": wpath.name, "sha256": _sha256(wpath),
            "bytes": wpath.stat().st_size}
    cpath.write_text(json.dumps(card, indent=2) + "\n")
    return wpath, cpath
