"""Validation of what a model folder holds beyond its config's fields (whose types, ranges
and finiteness ``contrasyn.config.from_dict`` checks): tensor names and shapes against the
networks the config builds and the bank against the images it was built from, so that a
damaged or hostile ``model.json`` / safetensors pair is one clear error, never a traceback
from inside torch or silently wrong scores."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from contrasyn.errors import ConfigError
from contrasyn.methods.registry import Method, build_method

RESIZE_NAMES = ("resize", "fit", "none", "pad")


def one_line(error: BaseException, limit: int = 240) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def probe_shapes(name: str, cfg: Any, tensors: dict[str, Tensor]) -> None:
    """Build the method's networks on the meta device (no memory) and load the tensors into
    them: a tensor of another shape, a missing or an unexpected one is an error, before a
    config asking for huge networks allocates anything. A tensor the method does not have
    at all (not even under another prefix its loader skips) is refused too: a saved model
    holds exactly its method's state."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "copying ... to a meta parameter is a no-op"
        with torch.device("meta"):
            method = build_method(name, cfg, 0, "meta").load_state(tensors)
            unknown = sorted(set(tensors) - set(method.state_tensors()))
    if unknown:
        raise ConfigError(
            f"unknown tensor(s) {', '.join(unknown)[:120]}: method {name} with this config "
            "has no such state"
        )


def check_bank(cfg: Any, method: Method) -> None:
    """The CSI family's bank: (N, K, d) projections and (N, K, e) features of the same N
    training images, K = num_shifts, and the K score weights."""
    t = cfg.train
    scorer, k = method.scorer, t.num_shifts
    z, h = scorer.bank_z_, scorer.bank_h_
    d = method.model.backbone.out_dim
    expected = {
        "scorer.bank_z": (z, (None, k, t.proj_dim)),
        "scorer.bank_h": (h, (None, k, d)),
        "scorer.weight_sim": (scorer.weight_sim_, (k,)),
        "scorer.weight_shift": (scorer.weight_shift_, (k,)),
    }
    for key, (tensor, shape) in expected.items():
        if (
            not torch.is_floating_point(tensor)
            or tensor.ndim != len(shape)
            or any(
                want is not None and got != want
                for got, want in zip(tensor.shape, shape, strict=True)
            )
        ):
            words = ", ".join("N" if s is None else str(s) for s in shape)
            raise ConfigError(
                f"tensor {key} is {tuple(tensor.shape)} {tensor.dtype}; method {method.name} "
                f"with this config needs floats ({words})"
            )
    if len(z) != len(h) or len(z) < 1:
        raise ConfigError(
            f"the bank holds {len(z)} projections and {len(h)} feature rows; "
            "they must be the same images, at least one"
        )
