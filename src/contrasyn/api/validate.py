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
from contrasyn.methods.registry import build_method

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
