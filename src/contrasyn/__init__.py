"""contrasyn: one-class image anomaly detection with contrasted synthetic images."""

from __future__ import annotations

__version__ = "0.1.0"
