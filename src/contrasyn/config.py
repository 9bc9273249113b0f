"""Typed configuration: dataclasses that round-trip to JSON and YAML and are saved with runs.

Every default the paper does not fix is named here, with the reason in docs/METHOD.md
("Defaults the paper leaves open").
Unknown keys are refused (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from contrasyn.errors import ConfigError

T = TypeVar("T")

# The outlier scores (contrasyn.score); here so that torch-free code can name them.
SCORES = ("paper", "csi", "feat", "cos", "norm")
# The bank searches (contrasyn.score.build_index).
INDEXES = ("exact", "faiss")
# The training variants (docs/METHOD.md, "Variants and baselines"): CSI alone, CSI + GAN,
# the paper's full method.
TRAIN_METHODS = ("csi", "csi+g", "full")
# The adversarial losses of eq. 7 and 9: the paper's binary cross-entropy (non-saturating for
# the generator side) or SNGAN's hinge loss.
GAN_LOSSES = ("bce", "hinge")


@dataclass
class TrainConfig:
    """How F (and, for the generative variants, E, G, D, D') is trained."""

    method: str = "full"
    width: int = 64
    stem: str = "cifar"
    image_size: int = 32
    channels: int = 3
    proj_dim: int = 128
    num_shifts: int = 4
    temperature: float = 0.5
    batch_size: int = 128
    epochs: int = 1000
    steps: int | None = None  # when set, the run is this many steps and ``epochs`` is unused
    max_train: int | None = None
    optimizer: str = "lars"
    base_lr: float = 0.1
    lr_reference_batch: int = 128
    momentum: float = 0.9
    weight_decay: float = 1e-6
    lars_trust: float = 0.001
    warmup_epochs: float = 10.0
    warmup_multiplier: float = 10.0
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    crop_scale: tuple[float, float] = (0.08, 1.0)
    blur: bool = False
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False  # torch.compile F's training steps (README: "Speed options")
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 10
    log_every: int = 10
    # The generative side (variants csi+g and full; eq. 5-10 and Algorithm 1 in docs/METHOD.md).
    latent_dim: int = 128
    gen_width: int = 64  # SNGAN base channels: G/D/E run 8x..1x this (512..64 in the paper)
    gen_every: int = 5  # N: one adversarial round after every N real batches
    synth_batch: int | None = None  # synthetic images per round; None: the real batch size
    rec_weight: float = 100.0  # lambda of L_REC (eq. 8)
    gen_lr: float = 2e-4  # Adam for G and E
    disc_lr: float = 2e-4  # Adam for D and D'
    adam_betas: tuple[float, float] = (0.9, 0.999)
    gan_loss: str = "bce"  # eq. 7 and 9: "bce" (the paper's) or "hinge" (SNGAN's)
    # Channels G emits and D and E read; None: 1 when every training image is grey (its
    # channels equal), else train.channels. G's images are replicated to F's channels.
    gen_channels: int | None = None
    # Rounds of the adversarial autoencoder alone (eq. 7-10 without F) before F's training.
    gen_warmup: int = 0
    # Decay of an exponential moving average of G's weights that makes the images (L_JOINT's
    # X~, samples, reconstructions); 0: none, G itself samples (the paper).
    gen_ema: float = 0.0
    # Stability: stop when a discriminator loss stays below this for this many rounds in a row.
    d_win_loss: float = 1e-3
    d_win_rounds: int = 100

    def __post_init__(self) -> None:
        if self.method not in TRAIN_METHODS:
            raise ConfigError(
                f"train.method must be one of {', '.join(TRAIN_METHODS)}, got {self.method!r}"
            )
        for name in (
            "width",
            "image_size",
            "batch_size",
            "epochs",
            "checkpoint_every",
            "log_every",
            "num_shifts",
            "proj_dim",
            "latent_dim",
            "gen_width",
            "gen_every",
            "d_win_rounds",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.channels not in (1, 3):
            raise ConfigError(f"train.channels must be 1 or 3, got {self.channels}")
        if self.gen_channels not in (None, 1, self.channels):
            raise ConfigError(
                f"train.gen_channels must be null, 1 or train.channels ({self.channels}), "
                f"got {self.gen_channels}"
            )
        if self.gan_loss not in GAN_LOSSES:
            raise ConfigError(
                f"train.gan_loss must be one of {', '.join(GAN_LOSSES)}, got {self.gan_loss!r}"
            )
        if not 0 <= self.gen_ema < 1:
            raise ConfigError(f"train.gen_ema must be in [0, 1), got {self.gen_ema}")
        if self.gen_warmup < 0:
            raise ConfigError(f"train.gen_warmup must be >= 0 rounds, got {self.gen_warmup}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"train.steps must be >= 1 or null, got {self.steps}")
        if self.synth_batch is not None and self.synth_batch < 2:
            raise ConfigError(f"train.synth_batch must be >= 2 or null, got {self.synth_batch}")
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            if self.method != "csi":
                raise ConfigError(
                    f"train.image_size must be a power of two >= 8 for method {self.method!r} "
                    f"(the generator doubles 4x4 up to it), got {self.image_size}"
                )
        if self.max_train is not None and self.max_train < 2:
            raise ConfigError(f"train.max_train must be >= 2 or null, got {self.max_train}")
        if self.channels_last and self.width <= 4:
            # torch 2.13 CPU corrupts memory in the backward pass of a channels-last 1x1
            # stride-2 convolution with <= 4 input channels (the block shortcuts here).
            raise ConfigError("train.channels_last needs train.width > 4 (a PyTorch CPU bug)")

    @property
    def lr(self) -> float:
        """Base learning rate scaled linearly with the batch (CSI: 0.1 at 128 images)."""
        return self.base_lr * self.batch_size / self.lr_reference_batch


@dataclass
class ScoreConfig:
    """How test images are scored against the training bank (docs/METHOD.md, "The outlier
    scores")."""

    score: str = "paper"
    augment: bool = True  # False: one deterministic pass (rotations only), as ONNX export runs
    ensemble: int = 10
    crop_scale: float = 0.54
    batch_size: int = 256
    chunk: int = 4096
    # The bank search: "exact" (chunked matrix product on the device) or "faiss" (an IVF
    # inner-product index, approximate, for banks of millions; needs the faiss extra).
    index: str = "exact"
    nprobe: int = 32  # IVF cells visited per query ("faiss" only): recall against speed
    seed: int = 0

    def __post_init__(self) -> None:
        if self.index not in INDEXES:
            raise ConfigError(
                f"score.index must be one of {', '.join(INDEXES)}, got {self.index!r}"
            )
        if self.nprobe < 1:
            raise ConfigError(f"score.nprobe must be >= 1 IVF cells, got {self.nprobe}")
        for name in ("batch_size", "chunk", "ensemble"):
            if getattr(self, name) < 1:
                raise ConfigError(f"score.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.crop_scale <= 1:
            raise ConfigError(f"score.crop_scale must be in (0, 1], got {self.crop_scale}")


# Fields added after results were committed: left out of a benchmark's config hash while they
# keep their default, so folders written before them stay resumable (bench._config_sha).
LATER_FIELDS = {
    "train": ("compile", "sync_bn", "gan_loss", "gen_channels", "gen_warmup", "gen_ema"),
    "score": ("index", "nprobe"),
}


# TrainConfig fields only the generative side (csi+g, full) reads.
GENERATIVE_FIELDS = (
    "latent_dim", "gen_width", "gen_every", "synth_batch", "rec_weight", "gen_lr", "disc_lr",
    "adam_betas", "gan_loss", "gen_channels", "gen_warmup", "gen_ema", "d_win_loss",
    "d_win_rounds",
)  # fmt: skip


@dataclass
class RunConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config (tuples become lists, as in JSON)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from a dict, recursing into nested configs; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value)
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
