"""IDX reader and the Fashion-MNIST loader, on tiny files written in the exact format."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from contrasyn.data import load_dataset
from contrasyn.data.fashion_mnist import CLASS_NAMES, DEBIAN_ROOT
from contrasyn.data.idx import read_idx
from contrasyn.errors import DataError


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Header (0x0000, dtype code, ndim, big-endian dims) followed by the payload."""
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def write_fmnist(folder: Path, n_train: int = 5, n_test: int = 3, compress: bool = True) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        data = idx_bytes(arr)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_root(tmp_path: Path, compress: bool) -> None:
    arrays = write_fmnist(tmp_path, compress=compress)
    ds = load_dataset("fashion-mnist", root=tmp_path)
    assert ds.train_images.shape == (5, 28, 28, 1) and ds.test_images.shape == (3, 28, 28, 1)
    assert ds.train_images.dtype == np.uint8 and ds.train_images.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(ds.train_images[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.test_images[..., 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.train_labels, arrays["train-labels-idx1-ubyte"])
    assert ds.test_labels.tolist() == [0, 1, 2] and ds.test_labels.dtype == np.int64
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert len(ds.class_names) == 10


def test_read_idx_big_endian_types(tmp_path: Path) -> None:
    arr = np.array([[1, -2, 300], [4, 5, -32768]], dtype=">i2")
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(arr, code=0x0B))
    out = read_idx(path)
    assert out.dtype == np.int16 and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("cut", [3, 10, 16 + 28 * 28 * 5 - 1])
def test_truncated_file_names_the_file(tmp_path: Path, cut: int) -> None:
    write_fmnist(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    write_fmnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_wrong_magic_names_the_file(tmp_path: Path) -> None:
    write_fmnist(tmp_path, compress=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[:4] = b"\x08\x00\x08\x01"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*not an IDX file"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_swapped_files_caught_by_dimension_check(tmp_path: Path) -> None:
    arrays = write_fmnist(tmp_path, compress=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(arrays["train-images-idx3-ubyte"]))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*3 dimensions, expected 1"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_unknown_dtype_and_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.idx"
    path.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 2) + b"\0\0")
    with pytest.raises(DataError, match="a.idx: unknown IDX dtype code 0x07"):
        read_idx(path)
    path.write_bytes(idx_bytes(np.arange(3, dtype=np.uint8)) + b"x")
    with pytest.raises(DataError, match="a.idx: IDX file has data after"):
        read_idx(path)


def test_label_count_mismatch(tmp_path: Path) -> None:
    write_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(2, np.uint8)))
    )
    with pytest.raises(DataError, match="3 images but .*t10k-labels.* 2 labels"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_missing_files_say_where_they_go(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset-fashion-mnist.*contrasyn data download"):
        load_dataset("fashion-mnist", root=tmp_path)


@pytest.mark.skipif(
    not (DEBIAN_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_debian_fashion_mnist() -> None:
    ds = load_dataset("fashion-mnist")
    assert ds.train_images.shape == (60000, 28, 28, 1)
    assert ds.test_images.shape == (10000, 28, 28, 1)
    assert ds.class_names == CLASS_NAMES
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
