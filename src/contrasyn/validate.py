"""Validation of what a model folder holds: field types against the config dataclasses,
ranges, finiteness, and tensor shapes against the networks the config builds, so that a
damaged or hostile ``model.json`` / safetensors pair is one clear error, never a traceback
from inside torch or silently wrong scores."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrasyn.errors import ConfigError
from contrasyn.registry import Method, build_method

MAX_IMAGE_SIZE = 8192  # a saved input size beyond this is refused (a damaged or hostile file)
RESIZE_NAMES = ("resize", "fit", "none", "pad")


def is_real(value: Any) -> bool:
    """A finite int or float (bools are not numbers here)."""
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
    )


def is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def check_rate(rate: Any, name: str = "false_alarm_rate/contamination") -> float:
    """``rate`` as a float in (0, 1), or one ``ConfigError`` saying what is wrong."""
    if not is_real(rate) or not 0 < rate < 1:
        raise ConfigError(f"{name} must be a number in (0, 1), got {rate!r}")
    return float(rate)


def fits(hint: Any, value: Any) -> bool:
    """Whether a JSON value has the type a dataclass field declares."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(a, value) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return is_real(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(fits(args[0], v) for v in value)
        return len(value) == len(args) and all(fits(a, v) for a, v in zip(args, value, strict=True))
    return True  # other declared types: the dataclass's own checks decide


def type_words(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("NoneType", "null")
    return text.replace("<class '", "").replace("'>", "")


def check_config_fields(cls: type, data: Any, where: str) -> None:
    """Every field of a saved config has its declared type (recursively), so that the
    dataclass's own range checks then run on values of the right kind."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue  # a field added since: its default
        hint, value = hints[f.name], data[f.name]
        if dataclasses.is_dataclass(hint):
            check_config_fields(hint, value, f"{where}.{f.name}")
        elif not fits(hint, value):
            raise ConfigError(f"{where}.{f.name} must be {type_words(hint)}, got {value!r:.60}")


def one_line(error: BaseException, limit: int = 240) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def probe_shapes(name: str, cfg: Any, tensors: dict[str, Tensor]) -> None:
    """Build the method's networks on the meta device (no memory) and load the tensors into
    them: a tensor of another shape, a missing or an unexpected one is an error, before a
    config asking for huge networks allocates anything."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "copying ... to a meta parameter is a no-op"
        with torch.device("meta"):
            build_method(name, cfg, 0, "meta").load_state(tensors)


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
