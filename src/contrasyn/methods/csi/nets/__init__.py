"""Networks by name. Each architecture lives in its own module as plain ``nn.Module``s."""

from __future__ import annotations

from contrasyn.methods.csi.nets.aae import Encoder, LatentDiscriminator
from contrasyn.methods.csi.nets.resnet import CSINet, CSIOutput, ResNet18
from contrasyn.methods.csi.nets.sngan import Discriminator, Generator

__all__ = [
    "CSINet",
    "CSIOutput",
    "Discriminator",
    "Encoder",
    "Generator",
    "LatentDiscriminator",
    "ResNet18",
]
