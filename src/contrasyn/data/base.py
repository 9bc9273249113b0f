"""The in-memory dataset every loader returns, and the registry of loaders by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from contrasyn.errors import DataError


@dataclass
class ImageDataset:
    """Train and test splits as uint8 arrays of shape (N, H, W, C) with integer labels.

    Images stay uint8 and channels-last (as stored on disk) so a 60k-image dataset costs
    47 MB, not 750 MB; conversion to model input happens per task (``to_model_input``).
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim != 4:
                raise DataError(
                    f"{self.name}: {split} images must be uint8 (N, H, W, C), got "
                    f"{images.dtype} {images.shape}"
                )
            if len(images) != len(labels):
                raise DataError(
                    f"{self.name}: {len(images)} {split} images but {len(labels)} labels"
                )
            if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
                raise DataError(
                    f"{self.name}: {split} label out of range [0, {len(self.class_names)}): "
                    f"min {labels.min()}, max {labels.max()}"
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        """A human-readable description: split sizes, image shape, per-class counts."""
        lines = [
            f"dataset      {self.name}",
            f"train        {len(self.train_images)} images, shape {self.train_images.shape[1:]}",
            f"test         {len(self.test_images)} images, shape {self.test_images.shape[1:]}",
            f"classes      {self.num_classes}",
        ]
        tr = np.bincount(self.train_labels, minlength=self.num_classes)
        te = np.bincount(self.test_labels, minlength=self.num_classes)
        for i, name in enumerate(self.class_names):
            lines.append(f"  {i:>3} {name:<24} train {tr[i]:>6}  test {te[i]:>6}")
        return "\n".join(lines)


Loader = Callable[..., ImageDataset]
_REGISTRY: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make a loader available to ``load_dataset(name)``."""

    def wrap(fn: Loader) -> Loader:
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def load_dataset(name: str, **kwargs) -> ImageDataset:
    """Load a registered dataset by name; keyword arguments go to its loader (e.g. ``root``)."""
    if name not in _REGISTRY:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return _REGISTRY[name](**kwargs)
