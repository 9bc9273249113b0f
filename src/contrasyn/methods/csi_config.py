"""The CSI family's settings (``csi``, ``csi+g``, ``full``): how F, and for the generative
variants E, G, D and D', are trained (``TrainConfig``), how images are scored
(``ScoreConfig``), and both together (``RunConfig``), saved with every run and model.

Every default the paper does not fix is named here, with the reason in docs/METHOD.md
("Defaults the paper leaves open"); values are checked where a config is built
(``contrasyn.config.from_dict`` and ``__post_init__``). Torch-free, like ``contrasyn.config``,
so the command line and the ONNX runtime read them without importing PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contrasyn.config import (
    MAX_IMAGE_SIZE,
    SEED_LIMIT,
    at_least,
    below_one,
    check_choice,
    check_fields,
    fraction,
    positive,
)
from contrasyn.errors import ConfigError
from contrasyn.methods.backbone_names import SCRATCH, check_backbone
from contrasyn.names import names_in

# The outlier scores (contrasyn.methods.csi.score); here so that torch-free code can name them.
SCORES = (
    "paper", "csi", "feat", "head", "pix", "feat+head", "feat+pix", "feat+head+pix", "cos", "norm",
)  # fmt: skip
# The combined scores (contrasyn.methods.csi.score.combined): their parts, each standardised
# on the training images, summed.
COMBINED = ("feat+head", "feat+pix", "feat+head+pix")
# The pixel part ``pix`` compares images average-pooled by ``pixel_factor`` to at most this
# side: Fashion-MNIST's 32 x 32 inputs as they are, a 224 x 224 photo's bank 49x smaller.
PIXEL_SIDE = 32


def pixel_factor(size: int) -> int:
    """The pooling window of ``pix`` for ``size``-pixel images: the least f with
    ``size // f <= PIXEL_SIDE`` (the last ``size % f`` rows and columns are left out)."""
    return -(-size // PIXEL_SIDE)


# The bank searches (contrasyn.methods.csi.score.build_index).
INDEXES = ("exact", "faiss")
# What ``pix`` compares with (``ScoreConfig.pixel_bank``): the images F trained on, or every
# image the fit was given that is not held out for the threshold.
PIXEL_BANKS = ("trained", "all")
# The training variants (docs/METHOD.md, "Variants and baselines"): CSI alone, CSI + GAN,
# the paper's full method.
# The adversarial losses of eq. 7 and 9: the paper's binary cross-entropy (non-saturating for
# the generator side) or SNGAN's hinge loss.
GAN_LOSSES = ("bce", "hinge")
OPTIMIZERS = ("lars", "sgd")
PRECISIONS = ("fp32", "bf16", "auto")
STEMS = ("cifar", "imagenet")
BACKBONE_BN = ("train", "frozen")


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
    # A rotation whose turned training images lie this close to the class (their median
    # nearest-neighbour pixel distance over the images' own, methods/csi/symmetry.py) is a
    # symmetry of the class, not a shift: fit trains and scores without it. None: never.
    shift_symmetry: float | None = 0.9
    temperature: float = 0.5
    batch_size: int = 128
    epochs: int = 1000
    steps: int | None = None  # when set, the run is this many steps and ``epochs`` is unused
    # Seconds for the whole fit: the trainer times its steps here and sets ``steps`` so that
    # training, the bank, the held-out scores and the save end within it (contrasyn.budget).
    time_budget: float | None = None
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
    # F's backbone: CSI's CIFAR ResNet-18 from scratch (``width``, ``stem``), or an ImageNet-
    # pretrained network that L_CSI fine-tunes (docs/METHOD.md, "Pretrained backbones").
    backbone: str = SCRATCH
    backbone_weights: str = "packaged"  # a pretrained backbone's weights (backbone_names)
    backbone_resolution: int = 64  # the side a pretrained backbone sees images at, inside F
    backbone_lr: float = 1.0  # the pretrained trunk's learning rate, x the heads'; 0 freezes it
    backbone_bn: str = "train"  # "frozen": the trunk keeps its pretrained BatchNorm statistics
    backbone_freeze: int = 0  # the trunk's first parts kept as pretrained (lite0: 9 parts)

    def __post_init__(self) -> None:
        for name, choices in (
            ("method", names_in("contrasyn.methods.csi")),
            ("optimizer", OPTIMIZERS),
            ("precision", PRECISIONS),
            ("stem", STEMS),
            ("gan_loss", GAN_LOSSES),
            ("backbone_bn", BACKBONE_BN),
        ):
            check_choice(getattr(self, name), choices, f"train.{name}")
        check_backbone(
            self.backbone, self.backbone_weights, ("train.backbone", "train.backbone_weights"),
            scratch=True,
        )  # fmt: skip
        for names, ok, words in (
            (
                (
                    "width", "image_size", "batch_size", "epochs", "checkpoint_every",
                    "log_every", "num_shifts", "proj_dim", "latent_dim", "gen_width",
                    "gen_every", "d_win_rounds", "lr_reference_batch", "steps",
                ),
                at_least(1),
                ">= 1",
            ),
            (("max_train", "synth_batch"), at_least(2), ">= 2 or null"),
            (
                (
                    "temperature", "base_lr", "gen_lr", "disc_lr", "lars_trust",
                    "warmup_multiplier", "time_budget", "shift_symmetry",
                ),
                positive,
                "> 0",
            ),
            (
                (
                    "weight_decay", "warmup_epochs", "rec_weight", "d_win_loss", "gen_warmup",
                    "backbone_lr", "backbone_freeze",
                ),
                at_least(0),
                ">= 0",
            ),
            (("jitter_p", "gray_p"), fraction, "in [0, 1]"),
            (("momentum", "gen_ema"), below_one, "in [0, 1)"),
            (("seed",), lambda v: 0 <= v < SEED_LIMIT, "an integer in [0, 2**63)"),
            (("image_size",), lambda v: v <= MAX_IMAGE_SIZE, f"<= {MAX_IMAGE_SIZE}"),
            (("backbone_resolution",), lambda v: 32 <= v <= MAX_IMAGE_SIZE, "in [32, 8192]"),
            (
                ("jitter",),
                lambda v: all(fraction(x) for x in v) and v[3] <= 0.5,
                "4 numbers in [0, 1], the last (hue) at most 0.5",
            ),
            (("crop_scale",), lambda v: 0 < v[0] <= v[1] <= 1, "[low, high], 0 < low <= high <= 1"),
            (("adam_betas",), lambda v: all(below_one(x) for x in v), "two numbers in [0, 1)"),
        ):  # fmt: skip
            check_fields(self, "train", names, ok, words)
        if self.channels not in (1, 3):
            raise ConfigError(f"train.channels must be 1 or 3, got {self.channels}")
        if self.gen_channels not in (None, 1, self.channels):
            raise ConfigError(
                f"train.gen_channels must be null, 1 or train.channels ({self.channels}), "
                f"got {self.gen_channels}"
            )
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            if self.method != "csi":
                raise ConfigError(
                    f"train.image_size must be a power of two >= 8 for method {self.method!r} "
                    f"(the generator doubles 4x4 up to it), got {self.image_size}"
                )
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
    # The combined scores' weight on the standardised shift-head log-likelihood (1: equal).
    head_weight: float = 1.0
    # The images ``pix`` compares with: "trained" (those F trained on, ``train.max_train`` of
    # them) or "all" (every image the fit was given and did not hold out for the threshold:
    # raw pixels cost little to bank; docs/METHOD.md, "The outlier scores").
    pixel_bank: str = "trained"
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.score, SCORES, "score.score")
        check_choice(self.index, INDEXES, "score.index")
        check_choice(self.pixel_bank, PIXEL_BANKS, "score.pixel_bank")
        for names, ok, words in (
            (("nprobe", "batch_size", "chunk", "ensemble"), at_least(1), ">= 1"),
            (("crop_scale",), lambda v: 0 < v <= 1, "in (0, 1]"),
            (("head_weight",), at_least(0), ">= 0"),
            (("seed",), lambda v: 0 <= v < SEED_LIMIT, "an integer in [0, 2**63)"),
        ):
            check_fields(self, "score", names, ok, words)


# Fields added after results were committed: left out of a benchmark's config hash while they
# keep their default, so folders written before them stay resumable (bench._config_sha).
LATER_FIELDS = {
    "train": (
        "compile",
        "sync_bn",
        "gan_loss",
        "gen_channels",
        "gen_warmup",
        "gen_ema",
        "time_budget",
        "backbone",
        "backbone_weights",
        "backbone_resolution",
        "backbone_lr",
        "backbone_bn",
        "backbone_freeze",
        "shift_symmetry",
    ),
    "score": ("index", "nprobe", "head_weight", "pixel_bank"),
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
