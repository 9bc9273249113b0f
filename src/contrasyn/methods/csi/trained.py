"""Reading what training wrote: a checkpoint's configuration, F, and the generative side."""

from __future__ import annotations

from pathlib import Path

import torch

from contrasyn.checkpoint import load_checkpoint
from contrasyn.config import from_dict
from contrasyn.errors import ConfigError
from contrasyn.methods.backbone_names import is_pretrained
from contrasyn.methods.csi.adversarial import GenerativeSide
from contrasyn.methods.csi.nets import CSINet
from contrasyn.methods.csi_config import TrainConfig


def build_model(cfg: TrainConfig, pretrained: bool = True) -> CSINet:
    """F as ``cfg`` describes it: CIFAR ResNet-18 at ``width``, or a pretrained backbone
    (``pretrained=False``: its architecture only, for weights that are loaded next), with
    CSI's two heads. A trunk with ``backbone_lr`` 0 is frozen (no gradients, BatchNorm
    fixed), and so are its first ``backbone_freeze`` parts."""
    if not is_pretrained(cfg.backbone):
        return CSINet(cfg.width, cfg.channels, cfg.stem, cfg.proj_dim, cfg.num_shifts)
    from contrasyn.methods.pretrained.backbones import build_backbone, freeze_parts

    weights = cfg.backbone_weights if pretrained else "random"
    trunk = build_backbone(cfg.backbone, weights, cfg.backbone_resolution)
    trunk.requires_grad_(cfg.backbone_lr > 0)
    freeze_parts(trunk, cfg.backbone_freeze)
    frozen_bn = cfg.backbone_bn == "frozen"
    return CSINet(
        proj_dim=cfg.proj_dim, num_shifts=cfg.num_shifts, trunk=trunk, frozen_bn=frozen_bn
    )


def saved_config(meta: dict) -> TrainConfig:
    """The configuration a checkpoint was trained with. Fields added since take their
    defaults, except ``gen_channels``: before it existed G always made F's channels."""
    data = dict(meta["config"])
    if data.get("method", "full") != "csi" and "gen_channels" not in data:
        data["gen_channels"] = data.get("channels", TrainConfig.channels)
    return from_dict(TrainConfig, data)


def load_model(stem: str | Path, device: str | torch.device = "cpu") -> tuple[CSINet, TrainConfig]:
    """The trained F and its config from a checkpoint written by ``train``."""
    tensors, meta = load_checkpoint(stem, device)
    cfg = saved_config(meta)
    model = build_model(cfg, pretrained=False).to(device)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    return model.eval(), cfg


def load_generator(
    stem: str | Path, device: str | torch.device = "cpu"
) -> tuple[GenerativeSide, TrainConfig]:
    """G, D (and E, D') of a ``csi+g`` or ``full`` checkpoint, in eval mode."""
    tensors, meta = load_checkpoint(stem, device)
    cfg = saved_config(meta)
    if cfg.method == "csi":
        raise ConfigError(f"{stem}: a 'csi' run has no generator (train csi+g or full)")
    side = GenerativeSide(cfg).to(device)
    side.load_weight_tensors(tensors)
    return side.eval(), cfg
