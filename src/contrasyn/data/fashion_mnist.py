"""Fashion-MNIST from its four IDX files (60,000 train / 10,000 test, 28x28 grey, 10 classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contrasyn.data.base import ImageDataset, register
from contrasyn.data.download import default_cache_dir
from contrasyn.data.idx import read_idx
from contrasyn.errors import DataError

# Where the Debian package ``dataset-fashion-mnist`` installs the files.
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# Official file names without ``.gz``; each is accepted compressed or not.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _locate(root: str | Path | None) -> dict[str, Path]:
    """Map each of the four files to a path, or explain where they are expected."""
    folders = (
        [Path(root).expanduser()]
        if root is not None
        else [DEBIAN_ROOT, default_cache_dir() / "fashion-mnist"]
    )
    for folder in folders:
        found = {key: path for key, stem in FILES.items() if (path := _find(folder, stem))}
        if len(found) == len(FILES):
            return found
    missing = ", ".join(f"{stem}.gz" for stem in FILES.values())
    where = " or ".join(str(f) for f in folders)
    raise DataError(
        f"fashion-mnist: files not found in {where} (need {missing}; uncompressed also "
        f"accepted). Install the Debian package dataset-fashion-mnist (puts them in "
        f"{DEBIAN_ROOT}), run `contrasyn data download fashion-mnist` (puts them in "
        f"{default_cache_dir() / 'fashion-mnist'}), or pass root=<folder with the files>."
    )


def _split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    for path, arr in ((images_path, images), (labels_path, labels)):
        if arr.dtype != np.uint8:
            raise DataError(f"{path}: expected unsigned-byte IDX data, got {arr.dtype}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if len(labels) and labels.max() >= len(CLASS_NAMES):
        raise DataError(
            f"{labels_path}: label {labels.max()} out of range 0..{len(CLASS_NAMES) - 1}"
        )
    return np.ascontiguousarray(images[..., None]), labels.astype(np.int64)


@register("fashion-mnist")
def fashion_mnist(root: str | Path | None = None) -> ImageDataset:
    """Load Fashion-MNIST as uint8 images (N, 28, 28, 1) with the official train/test split.

    ``root`` is a folder holding ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` (or the same names
    without ``.gz``). Without ``root`` the Debian location ``/usr/share/datasets/fashion-mnist``
    is tried, then ``default_cache_dir()/fashion-mnist`` (where ``download`` puts them).
    The files' md5 is not checked here: the Debian package ships recompressed copies whose
    checksums differ from upstream; the IDX reader's header/length checks catch damage.
    """
    paths = _locate(root)
    train_images, train_labels = _split(paths["train_images"], paths["train_labels"])
    test_images, test_labels = _split(paths["test_images"], paths["test_labels"])
    return ImageDataset(
        name="fashion-mnist",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=list(CLASS_NAMES),
    )
