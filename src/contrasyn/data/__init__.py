"""Datasets: loaders by name, folder-of-images decoding, conversion to model input, downloads.

Importing this package registers every built-in loader, so ``load_dataset(name)`` works for
``cifar10``, ``cifar100``, ``digits``, ``fashion-mnist``, ``folder``, ``imagenet30`` and
``synthetic``.
"""

from __future__ import annotations

# Imported for their @register side effect.
from contrasyn.data import (  # noqa: F401
    cifar,
    digits,
    fashion_mnist,
    folder,
    imagenet30,
    synthetic,
)
from contrasyn.data.base import ImageDataset, list_datasets, load_dataset, register
from contrasyn.data.convert import default_resize_policy, to_model_input
from contrasyn.data.download import default_cache_dir, download
from contrasyn.data.folder import find_images, load_images

__all__ = [
    "ImageDataset",
    "default_cache_dir",
    "default_resize_policy",
    "download",
    "find_images",
    "list_datasets",
    "load_dataset",
    "load_images",
    "register",
    "to_model_input",
]
