"""Networks by name. Each architecture lives in its own module as plain ``nn.Module``s."""

from __future__ import annotations

from contrasyn.nets.resnet import CSINet, CSIOutput, ResNet18

__all__ = ["CSINet", "CSIOutput", "ResNet18"]
