"""CIFAR loaders on tiny batches written in the official (Python 2 pickle) format."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from contrasyn.data import load_dataset
from contrasyn.errors import ConfigError, DataError


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the official batches: protocol 2, every
    string as BINSTRING (no _codecs.encode wrapper) and ndarray via numpy.core.multiarray."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_string(self, obj: bytes | str) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def batch(n: int, labels: dict[bytes, list[int]], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch 1 of 1",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        **labels,
    }


def write_cifar10(folder: Path) -> dict[str, dict]:
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    batches = {f"data_batch_{i}": batch(4, {b"labels": [i % 10, 1, 2, 3]}, i) for i in range(1, 6)}
    batches["test_batch"] = batch(3, {b"labels": [9, 8, 7]}, 0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"num_cases_per_batch": 4, b"label_names": names, b"num_vis": 3072}
    for name, obj in {**batches, "batches.meta": meta}.items():
        (root / name).write_bytes(py2_pickle(obj))
    return batches


def write_cifar100(folder: Path, dump=py2_pickle) -> dict[str, dict]:
    root = folder / "cifar-100-python"
    root.mkdir(parents=True)
    batches = {
        "train": batch(
            6, {b"fine_labels": [0, 99, 5, 6, 7, 8], b"coarse_labels": [4, 19, 0, 1, 2, 3]}, 1
        ),
        "test": batch(2, {b"fine_labels": [50, 51], b"coarse_labels": [10, 11]}, 2),
    }
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    for name, obj in {**batches, "meta": meta}.items():
        (root / name).write_bytes(dump(obj))
    return batches


def make_tarball(folder: Path, inner: str, tar_name: str) -> Path:
    out = folder / tar_name
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder / inner, arcname=inner)
    return out


def test_cifar10_folder_pixel_layout(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.train_images.shape == (20, 32, 32, 3) and ds.test_images.shape == (3, 32, 32, 3)
    assert ds.train_images.flags["C_CONTIGUOUS"] and ds.train_labels.dtype == np.int64
    assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"
    assert ds.train_labels[:4].tolist() == [1, 1, 2, 3] and ds.test_labels.tolist() == [9, 8, 7]
    # Row layout: 1024 R values, 1024 G, 1024 B; each plane row-major 32 x 32.
    row = batches["data_batch_2"][b"data"][1]
    image = ds.train_images[4 + 1]
    h, w = 5, 17
    assert image[h, w, 0] == row[h * 32 + w]
    assert image[h, w, 1] == row[1024 + h * 32 + w]
    assert image[h, w, 2] == row[2048 + h * 32 + w]
    np.testing.assert_array_equal(image[..., 2].ravel(), row[2048:])


def test_cifar10_tarball_equals_folder(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    from_folder = load_dataset("cifar10", root=tmp_path / "cifar-10-batches-py")
    tar = make_tarball(tmp_path, "cifar-10-batches-py", "cifar-10-python.tar.gz")
    tar_dir = tmp_path / "only_tar"
    tar_dir.mkdir()
    tar.rename(tar_dir / tar.name)
    for root in (tar_dir, tar_dir / tar.name):
        from_tar = load_dataset("cifar10", root=root)
        np.testing.assert_array_equal(from_tar.train_images, from_folder.train_images)
        np.testing.assert_array_equal(from_tar.test_labels, from_folder.test_labels)


def test_cifar100_coarse_by_default_and_fine(tmp_path: Path) -> None:
    batches = write_cifar100(tmp_path)
    make_tarball(tmp_path, "cifar-100-python", "cifar-100-python.tar.gz")
    tar_only = tmp_path / "cifar-100-python.tar.gz"
    coarse = load_dataset("cifar100", root=tar_only)
    assert coarse.num_classes == 20 and coarse.class_names[19] == "coarse19"
    assert coarse.train_labels.tolist() == [4, 19, 0, 1, 2, 3]
    assert coarse.test_labels.tolist() == [10, 11]
    row = batches["test"][b"data"][1]
    assert coarse.test_images[1, 31, 0, 1] == row[1024 + 31 * 32]
    fine = load_dataset("cifar100", root=tmp_path, label_mode="fine")
    assert fine.num_classes == 100 and fine.train_labels.tolist() == [0, 99, 5, 6, 7, 8]
    with pytest.raises(ConfigError, match="label_mode"):
        load_dataset("cifar100", root=tmp_path, label_mode="super")


def test_numpy2_pickles_accepted(tmp_path: Path) -> None:
    write_cifar100(tmp_path, dump=lambda obj: pickle.dumps(obj, protocol=4))
    assert load_dataset("cifar100", root=tmp_path).train_images.shape == (6, 32, 32, 3)


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_foreign_global_is_refused(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = batch(4, {b"labels": [0, 0, 0, 0]}, 0)
    evil[b"batch_label"] = Exploit(marker)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(py2_pickle(evil))
    with pytest.raises(
        DataError, match=r"data_batch_3.*refusing to load global (posix|os)\.system"
    ):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_bad_contents_name_the_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes(py2_pickle(batch(3, {b"labels": [0, 1]}, 0)))
    with pytest.raises(DataError, match="test_batch.*b'labels' should be 3 integers"):
        load_dataset("cifar10", root=tmp_path)
    (folder / "test_batch").write_bytes(py2_pickle(batch(3, {b"labels": [0, 1, 10]}, 0)))
    with pytest.raises(DataError, match="test_batch.*outside 0..9"):
        load_dataset("cifar10", root=tmp_path)
    (folder / "test_batch").write_bytes(py2_pickle([1, 2]))
    with pytest.raises(DataError, match="test_batch: expected a dict"):
        load_dataset("cifar10", root=tmp_path)
    (folder / "test_batch").write_bytes(py2_pickle(batch(3, {b"labels": [1, 2, 3]}, 0))[:-40])
    with pytest.raises(DataError, match="test_batch: not a valid pickle"):
        load_dataset("cifar10", root=tmp_path)
    (folder / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5: missing"):
        load_dataset("cifar10", root=tmp_path)


def test_truncated_tarball(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    tar = make_tarball(tmp_path, "cifar-100-python", "cifar-100-python.tar.gz")
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(DataError, match="cifar-100-python.tar.gz: corrupt or truncated"):
        load_dataset("cifar100", root=tar)


def test_missing_data_points_to_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-10-python.tar.gz.*contrasyn data download cifar10"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar100", root=tmp_path / "nope")
