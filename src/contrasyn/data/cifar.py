"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

The pickle batches are the official distribution format, so reading them needs
``pickle``. A plain ``pickle.load`` would run any callable a tampered file names, so the
batches are read with ``RestrictedUnpickler``, which resolves only the three numpy globals
an ndarray needs and refuses every other global. ``encoding="bytes"`` decodes the Python 2
strings in the files as ``bytes`` (keys are ``b"data"``, ``b"labels"``, ...).

Each loader accepts, as ``root``: the tarball itself, the folder the tarball extracts to,
or a folder containing either. Without ``root`` it looks in
``default_cache_dir()/<name>``, where ``download`` saves the tarball.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from contrasyn.data.base import ImageDataset, register
from contrasyn.data.download import default_cache_dir
from contrasyn.errors import ConfigError, DataError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

# Everything a pickled ndarray references. Files written by numpy 1 name
# numpy.core.multiarray, files written by numpy 2 name numpy._core.multiarray.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the numpy allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only builtin containers, bytes, numbers and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name} (only numpy arrays are allowed "
                f"in a CIFAR batch)"
            ) from None


def safe_unpickle(data: bytes, source: str) -> Any:
    """Unpickle ``data`` with ``RestrictedUnpickler``; any failure is a DataError on ``source``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafePickleError as e:
        raise DataError(f"{source}: {e}") from e
    # Garbage bytes can make the unpickler raise almost anything (EOFError, KeyError,
    # ValueError, struct.error, ...); all of them mean the same thing here.
    except Exception as e:
        raise DataError(f"{source}: not a valid pickle ({type(e).__name__}: {e})") from e


def _read_members(
    root: Path, folder_name: str, tar_name: str, members: list[str], dataset: str
) -> dict[str, tuple[Any, str]]:
    """Unpickle ``members`` from the extracted folder or the tarball found at ``root``.

    Returns member -> (unpickled object, source description for error messages).
    """
    if root.is_file():
        return _read_tar(root, folder_name, members)
    if (root / members[0]).is_file():
        return _read_folder(root, members)
    if (root / folder_name).is_dir():
        return _read_folder(root / folder_name, members)
    if (root / tar_name).is_file():
        return _read_tar(root / tar_name, folder_name, members)
    state = "" if root.is_dir() else " (that folder does not exist)"
    raise DataError(
        f"{dataset}: no data at {root}{state}: expected {tar_name} or the extracted "
        f"{folder_name}/ there. Run `contrasyn data download {dataset}` (saves to "
        f"{default_cache_dir() / dataset}) or pass root=<folder holding one of them>."
    )


def _read_folder(folder: Path, members: list[str]) -> dict[str, tuple[Any, str]]:
    out = {}
    for member in members:
        path = folder / member
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise DataError(f"{path}: missing (the folder should hold {', '.join(members)})") from e
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e})") from e
        out[member] = (safe_unpickle(data, str(path)), str(path))
    return out


def _read_tar(tar_path: Path, folder_name: str, members: list[str]) -> dict[str, tuple[Any, str]]:
    raw = {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            by_name = {info.name.removeprefix("./"): info for info in tar.getmembers()}
            for member in members:
                info = by_name.get(f"{folder_name}/{member}")
                extracted = tar.extractfile(info) if info is not None else None
                if extracted is None:
                    raise DataError(
                        f"{tar_path}: no file {folder_name}/{member} in the archive "
                        f"(is this the right tarball?)"
                    )
                raw[member] = extracted.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{tar_path}: corrupt or truncated archive ({e})") from e
    out = {}
    for member, data in raw.items():
        source = f"{tar_path}:{folder_name}/{member}"
        out[member] = (safe_unpickle(data, source), source)
    return out


def _field(batch: Any, key: bytes, source: str) -> Any:
    if not isinstance(batch, dict):
        raise DataError(f"{source}: expected a dict, got {type(batch).__name__}")
    if key not in batch:
        keys = ", ".join(repr(k) for k in batch)
        raise DataError(f"{source}: no {key!r} entry (entries: {keys})")
    return batch[key]


def _names(meta: Any, source: str, key: bytes) -> list[str]:
    names = _field(meta, key, source)
    if not isinstance(names, list) or not all(isinstance(n, bytes | str) for n in names):
        raise DataError(f"{source}: {key!r} should be a list of strings")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


def _images_labels(
    batches: list[tuple[Any, str]], label_key: bytes, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stack batches' rows into (N, 32, 32, 3) images and int64 labels, checking each."""
    all_data, all_labels = [], []
    for batch, source in batches:
        data = _field(batch, b"data", source)
        labels = np.asarray(_field(batch, label_key, source))
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3072,):
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data)
            raise DataError(f"{source}: b'data' should be uint8 of shape (N, 3072), got {got}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
            raise DataError(
                f"{source}: {label_key!r} should be {len(data)} integers, got "
                f"{labels.dtype} {labels.shape}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise DataError(
                f"{source}: {label_key!r} has values outside 0..{n_classes - 1} "
                f"(min {labels.min()}, max {labels.max()})"
            )
        all_data.append(data)
        all_labels.append(labels.astype(np.int64))
    # Each row is the 1024-value R plane, then G, then B, each plane row-major (32 x 32).
    images = np.concatenate(all_data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.concatenate(all_labels)


def _root(root: str | Path | None, name: str) -> Path:
    return Path(root).expanduser() if root is not None else default_cache_dir() / name


@register("cifar10")
def cifar10(root: str | Path | None = None) -> ImageDataset:
    """CIFAR-10: 50,000 train / 10,000 test RGB images (N, 32, 32, 3), 10 classes.

    ``root``: ``cifar-10-python.tar.gz``, the extracted ``cifar-10-batches-py/`` (with
    ``data_batch_1``..``data_batch_5``, ``test_batch``, ``batches.meta``), or a folder
    containing either; default ``default_cache_dir()/cifar10``.
    """
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    members = train_names + ["test_batch", "batches.meta"]
    found = _read_members(
        _root(root, "cifar10"), "cifar-10-batches-py", "cifar-10-python.tar.gz", members, "cifar10"
    )
    class_names = _names(*found["batches.meta"], b"label_names")
    n = len(class_names)
    train = _images_labels([found[m] for m in train_names], b"labels", n)
    test = _images_labels([found["test_batch"]], b"labels", n)
    return ImageDataset("cifar10", *train, *test, class_names=class_names)


@register("cifar100")
def cifar100(root: str | Path | None = None, label_mode: str = "coarse") -> ImageDataset:
    """CIFAR-100: 50,000 train / 10,000 test RGB images (N, 32, 32, 3).

    ``label_mode="coarse"`` (default) uses the 20 superclasses (``coarse_labels``), the
    standard one-class CIFAR-100 protocol (CSI and the paper); ``"fine"`` uses the 100
    classes. ``root``: ``cifar-100-python.tar.gz``, the extracted ``cifar-100-python/``
    (with ``train``, ``test``, ``meta``), or a folder containing either; default
    ``default_cache_dir()/cifar100``.
    """
    if label_mode not in ("coarse", "fine"):
        raise ConfigError(f"cifar100: label_mode must be 'coarse' or 'fine', got {label_mode!r}")
    found = _read_members(
        _root(root, "cifar100"),
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ["train", "test", "meta"],
        "cifar100",
    )
    label_key = f"{label_mode}_labels".encode()
    class_names = _names(*found["meta"], f"{label_mode}_label_names".encode())
    n = len(class_names)
    train = _images_labels([found["train"]], label_key, n)
    test = _images_labels([found["test"]], label_key, n)
    return ImageDataset("cifar100", *train, *test, class_names=class_names)
