"""Typed configuration: dataclasses that round-trip to JSON and YAML and are saved with runs.

Every default the paper does not fix is named here, with the reason in docs/METHOD.md
("Defaults the paper leaves open").
Unknown keys are refused (a typo must not silently fall back to a default), and every value
is checked where a config is built (``from_dict``, so ``--set``, ``--config``, keyword
overrides and saved models alike): its type against the field's (finite numbers, integers
that fit in 64 bits), then its range in the dataclass's ``__post_init__``. The checks here
need no PyTorch, so the command line runs them before it imports it or makes any folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import numpy as np
import yaml

from contrasyn.errors import ConfigError

T = TypeVar("T")

MAX_IMAGE_SIZE = 8192  # a larger input size is refused (a typo, or a damaged or hostile file)
SEED_LIMIT = 2**63  # seeds are integers in [0, 2**63): numpy and torch take them all

# -------------------------------------------------------------------------- value checks


def is_real(value: Any) -> bool:
    """A finite int or float (bools are not numbers here)."""
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
    )


def is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def fits(hint: Any, value: Any) -> bool:
    """Whether a JSON/YAML value has the type a dataclass field declares: a float field takes
    finite numbers only, an int field integers that fit in 64 bits (what torch and numpy
    take; a larger one would overflow deep inside them)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(a, value) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value) and -(2**63) <= value < 2**63
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
    text = text.replace("<class '", "").replace("'>", "")
    return re.sub(r"\bint\b", "64-bit int", re.sub(r"\bfloat\b", "finite float", text))


def check_rate(rate: Any, name: str = "false_alarm_rate/contamination") -> float:
    """``rate`` as a float in (0, 1), or one ``ConfigError`` saying what is wrong."""
    if not is_real(rate) or not 0 < rate < 1:
        raise ConfigError(f"{name} must be a number in (0, 1), got {rate!r}")
    return float(rate)


def check_holdout(holdout: Any, name: str = "holdout") -> float:
    """The held-out fraction, a number in [0, 1)."""
    if not is_real(holdout) or not 0 <= holdout < 1:
        raise ConfigError(f"{name} must be a number in [0, 1), got {holdout!r}")
    return float(holdout)


def check_seed(seed: Any, name: str = "seed") -> int:
    """A random seed: an integer in [0, 2**63)."""
    if not is_int(seed) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"{name} must be an integer in [0, 2**63), got {seed!r:.40}")
    return int(seed)


def check_fields(
    cfg: Any, section: str, names: Iterable[str], ok: Callable[[Any], bool], words: str
) -> None:
    """Each field of ``names`` that is set (not None) satisfies ``ok``, or one ``ConfigError``
    naming ``section.field``: the range checks of the settings dataclasses."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not ok(value):
            raise ConfigError(f"{section}.{name} must be {words}, got {value!r}")


def check_choice(value: Any, choices: Iterable[str], name: str) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: v >= low


def positive(v: Any) -> bool:
    return v > 0


def fraction(v: Any) -> bool:
    """In [0, 1]: a probability."""
    return 0 <= v <= 1


def below_one(v: Any) -> bool:
    """In [0, 1): a momentum or an Adam beta."""
    return 0 <= v < 1


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config (tuples become lists, as in JSON)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build ``cls`` from a dict, recursing into nested configs: unknown keys and values of
    another type than the field's (``fits``) are one ``ConfigError`` naming the field as
    ``where.field`` (``where`` the section: ``train``, ``config.score``...); the dataclass
    then checks the ranges."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        hint, name = hints[key], f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, name)
        elif not fits(hint, value):
            raise ConfigError(f"{name} must be {type_words(hint)}, got {value!r:.60}")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def merge(cfg: T, overrides: dict[str, Any]) -> T:
    """A copy of ``cfg`` with ``overrides`` (nested dicts for nested configs) applied."""
    data = to_dict(cfg)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return from_dict(type(cfg), data)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML (``.yaml``/``.yml``) or JSON, atomically."""
    from contrasyn.checkpoint import atomic_write

    path = Path(path)
    data = to_dict(cfg)
    if path.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def load_config(cls: type[T], path: str | Path) -> T:
    path = Path(path)
    try:
        raw = path.read_text()
        data = yaml.safe_load(raw) if path.suffix in (".yaml", ".yml") else json.loads(raw)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {e}") from e
    return from_dict(cls, data or {})
