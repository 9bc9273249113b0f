"""Networks by name. Each architecture lives in its own module as plain ``nn.Module``s."""

from __future__ import annotations

from contrasyn.nets.aae import Encoder, LatentDiscriminator
from contrasyn.nets.resnet import CSINet, CSIOutput, ResNet18
from contrasyn.nets.sngan import Discriminator, Generator

__all__ = [
    "CSINet",
    "CSIOutput",
    "Discriminator",
    "Encoder",
    "Generator",
    "LatentDiscriminator",
    "ResNet18",
]
