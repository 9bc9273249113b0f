"""A fitted detector's folder: ``model.safetensors`` (weights, bank, held-out scores) and
``model.json`` (config, threshold, calibration, versions).

``save`` writes both atomically, with the command line's guards; ``load`` reads them back on
any device without unpickling and validates every field and tensor first (``from_saved``:
types, ranges, finiteness, the tensors' shapes against the networks the config builds, on
PyTorch's meta device), so a damaged or edited folder is one ``CheckpointError`` naming what
is wrong. The method answers what only it knows (its input, score, seed, scoring pass and
state checks: ``contrasyn.methods.registry.Method``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from contrasyn.api.validate import RESIZE_NAMES, one_line, probe_shapes
from contrasyn.checkpoint import DETECTOR_FORMAT, inside, load_checkpoint, save_checkpoint
from contrasyn.config import (
    MAX_IMAGE_SIZE,
    SEED_LIMIT,
    check_rate,
    from_dict,
    is_int,
    is_real,
    to_dict,
)
from contrasyn.device import resolve_device
from contrasyn.errors import CheckpointError, ConfigError
from contrasyn.methods.registry import build_method, method_class
from contrasyn.names import METHOD_NAMES

# ``Detector`` here is the caller's class (saved.py is below detector.py: no import of it)
Detector = Any


def save(self: Detector, path: Path, overwrite: bool = False) -> Path:
    """Write ``path/model.safetensors`` (weights, bank, held-out scores) and
    ``path/model.json`` (config, threshold and its calibration, versions), each
    atomically. The command line's guards hold here too: a folder that already holds a
    model is replaced only with ``overwrite=True``, and a folder inside the one the
    detector was fitted from (``fit`` on a folder or on image paths) is refused, as its
    files would be found among the training images next time. What would not load back
    (a non-finite threshold, a rate outside (0, 1)) raises ``ConfigError`` too, and
    nothing is written."""
    self._check_fitted()
    path = Path(path)
    for folder in getattr(self, "data_folders_", ()):
        if inside(path, folder):
            raise ConfigError(
                f"{path} is inside {folder}, which holds the images this detector was "
                "fitted on: its files would be read as training images next time; save "
                "the model outside it"
            )
    existing = [n for n in ("model.json", "model.safetensors") if (path / n).exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"{path} already holds a model ({existing[0]}); pass overwrite=True to replace "
            "it, or save elsewhere"
        )
    check_rate(self.false_alarm_rate, "false_alarm_rate")
    if self.contamination is not None:
        check_rate(self.contamination, "contamination")
    if self.threshold_ is not None and not is_real(self.threshold_):
        raise ConfigError(f"threshold_ must be a finite number, got {self.threshold_!r}")
    tensors = dict(self.method_.state_tensors())
    tensors["holdout_scores"] = torch.as_tensor(self.holdout_scores_)
    calibration = self.calibration_
    meta = {
        "format": DETECTOR_FORMAT,
        "method": self.method_.name,
        "preset": self.preset,
        "config": to_dict(self.config_),
        "input": self.input_,
        "score": self.score_name_,
        "threshold": self.threshold_,
        "false_alarm_rate": self.false_alarm_rate,
        "contamination": self.contamination,
        "calibration": None if calibration is None else calibration.as_dict(),
        "resize": self.resize,
        "seed": self.method_.seed,
        "n_train": self.n_train_,
        "n_holdout": len(self.holdout_scores_),
        "deterministic": self.method_.deterministic,
    }
    save_checkpoint(path / "model", tensors, meta)
    return path


def load(cls: type[Detector], path: Path, device: str = "auto") -> Detector:
    """A fitted Detector from a folder written by ``save``; loads on any device.

    Everything read is validated first (types, ranges, finiteness, tensor shapes
    against what the method builds): a bad field is one ``CheckpointError`` naming it.
    Nothing is unpickled. ``calibration_`` is recomputed from the held-out scores, so
    models saved before it existed load with their threshold unchanged."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such model folder")
    dev = resolve_device(device)
    tensors, meta = load_checkpoint(path / "model", dev)
    if meta.get("format") != DETECTOR_FORMAT:
        raise CheckpointError(f"{path}: not a contrasyn detector (format {meta.get('format')!r})")
    try:
        return from_saved(cls, meta, tensors, device, dev)
    except ConfigError as e:
        raise CheckpointError(
            f"{path}: invalid model ({e}); the folder is damaged or was edited: "
            "retrain, or restore it"
        ) from e


def from_saved(
    cls: type[Detector], meta: dict[str, Any], tensors: dict[str, Tensor], device: str, dev: Any
) -> Detector:
    """The one validation of a saved detector (``load``): ``ConfigError`` on any bad
    field or tensor, else the fitted Detector."""

    def field(key: str, ok, words: str, default: Any = ...) -> Any:
        if key not in meta:
            if default is ...:
                raise ConfigError(f"model.json has no {key!r}")
            return default
        value = meta[key]
        if not ok(value):
            raise ConfigError(f"{key} must be {words}, got {value!r:.60}")
        return value

    name = field("method", lambda v: v in METHOD_NAMES, f"one of {', '.join(METHOD_NAMES)}")
    config_class = method_class(name).config_class
    try:
        cfg = from_dict(config_class, meta.get("config"), "config")
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config: {one_line(e)}") from e
    unfitted = build_method(name, cfg, 0, "cpu")  # what the settings say, nothing built
    preset = field("preset", lambda v: isinstance(v, str), "a preset name")
    default_spec = unfitted.config_input  # None: older baseline saves use the preset's
    spec = field(
        "input",
        lambda v: (
            v is None
            or (
                isinstance(v, dict)
                and set(v) == {"image_size", "channels"}
                and is_int(v["image_size"])
                and 1 <= v["image_size"] <= MAX_IMAGE_SIZE
                and v["channels"] in (1, 3)
                and is_int(v["channels"])
            )
        ),
        f"{{image_size: 1..{MAX_IMAGE_SIZE}, channels: 1 or 3}}",
        None,
    )
    if default_spec is not None and spec is not None and spec != default_spec:
        raise ConfigError(f"input {spec} differs from the config's {default_spec}")
    default_score = unfitted.default_score
    field("score", lambda v: v == default_score, f"{default_score!r} (the config's)", None)
    threshold = field("threshold", lambda v: v is None or is_real(v), "a finite number or null")
    far = field("false_alarm_rate", lambda v: is_real(v) and 0 < v < 1, "a number in (0, 1)")
    contamination = field(
        "contamination", lambda v: v is None or (is_real(v) and 0 < v < 1),
        "null or a number in (0, 1)", None,
    )  # fmt: skip
    resize = field("resize", lambda v: v in RESIZE_NAMES, f"one of {', '.join(RESIZE_NAMES)}")
    seed = field(
        "seed", lambda v: is_int(v) and 0 <= v < SEED_LIMIT, "an integer in [0, 2**63)",
        unfitted.config_seed,
    )  # fmt: skip
    n_train = field("n_train", lambda v: is_int(v) and v >= 0, "a count >= 0")
    # how the bank and the held-out scores were computed: one deterministic pass, or
    # test-time draws (config.score.augment); models saved before it: the config's
    deterministic = unfitted.deterministic
    field(
        "deterministic", lambda v: v is deterministic,
        f"{str(deterministic).lower()}, as config.score.augment has it for method {name}",
        deterministic,
    )  # fmt: skip
    calibration = field(
        "calibration", lambda v: v is None or isinstance(v, dict), "a mapping or null", None
    )
    # where the calibration scores came from; models saved before leave-one-out: held out
    scores = (calibration or {}).get("scores", "held-out")
    if scores not in ("held-out", "leave-one-out"):
        raise ConfigError(
            f"calibration.scores must be held-out or leave-one-out, got {scores!r:.60}"
        )

    holdout = tensors.get("holdout_scores")
    if holdout is None or holdout.ndim != 1 or not torch.is_floating_point(holdout):
        raise ConfigError("tensor holdout_scores must be a 1-D float tensor")
    n_hold = field(
        "n_holdout", lambda v: v == len(holdout) and is_int(v),
        f"{len(holdout)} (the held-out scores saved)", len(holdout),
    )  # fmt: skip
    if (threshold is None) != (n_hold == 0):
        raise ConfigError(
            f"threshold {threshold!r} with {n_hold} held-out scores: a threshold needs "
            "held-out scores, and held-out scores come with a threshold"
        )
    if scores == "leave-one-out" and n_hold != n_train:
        raise ConfigError(
            f"{n_hold} leave-one-out scores for {n_train} training images: each training "
            "image has one"
        )
    for key, tensor in tensors.items():
        if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
            raise ConfigError(f"tensor {key} holds NaN or infinite values")
    state = {k: v for k, v in tensors.items() if k != "holdout_scores"}
    try:
        probe_shapes(name, cfg, state)
    except Exception as e:  # the networks' own shape checks, on the meta device
        raise ConfigError(f"the tensors do not fit the config: {one_line(e)}") from e
    det = cls(
        method=name,
        preset=preset,
        score=default_score if unfitted.trains_network else None,
        false_alarm_rate=float(far),
        contamination=None if contamination is None else float(contamination),
        deterministic=deterministic,
        resize=resize,
        device=device,
        seed=int(seed),
    )
    try:
        method = build_method(name, cfg, int(seed), dev).load_state(state)
        if spec is None:
            spec = default_spec if default_spec is not None else det.resolve().input
        method.check_loaded()
        if method.bank_rows not in (None, n_train):
            raise ConfigError(
                f"the bank holds {method.bank_rows} training images, n_train says {n_train}"
            )
        if method.probe_safe:
            size, channels = spec["image_size"], spec["channels"]
            probe = method.score_samples(torch.zeros(1, channels, size, size))
            got = probe.get(method.default_score)
            if got is None or tuple(got.shape) != (1,):
                raise ConfigError(f"scoring one image gave {probe!r:.80}")
    except ConfigError:
        raise
    except Exception as e:  # the state loads but does not run: a bank of another shape
        raise ConfigError(f"the saved state does not run: {one_line(e)}") from e
    det.method_ = method
    det.config_ = cfg
    det.input_ = spec
    det.n_train_ = int(n_train)
    det.holdout_scores_ = holdout.cpu().numpy()
    det.leave_one_out_ = scores == "leave-one-out"
    det.threshold_ = None if threshold is None else float(threshold)
    return det
