"""contrasyn: one-class image anomaly detection with contrasted synthetic images."""

from __future__ import annotations

from typing import Any

from contrasyn.version import __version__

__all__ = ["Detector", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import contrasyn`` stays torch-free for the ONNX runtime scorer.
    if name == "Detector":
        from contrasyn.api.detector import Detector

        return Detector
    raise AttributeError(f"module 'contrasyn' has no attribute {name!r}")
