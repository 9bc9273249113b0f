"""download(): checksums, atomic placement and the offline message; never touches the network."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from contrasyn.data import default_cache_dir, download, load_dataset
from contrasyn.errors import DataError

# contrasyn.data.download the attribute is the function; the module has the URL tables.
dl = importlib.import_module("contrasyn.data.download")


def serve(monkeypatch: pytest.MonkeyPatch, src: Path, name: str, files: dict[str, bytes]) -> None:
    """Put ``files`` in ``src`` and point dataset ``name`` at them via file://."""
    src.mkdir(parents=True, exist_ok=True)
    for filename, data in files.items():
        (src / filename).write_bytes(data)
    monkeypatch.setitem(dl.BASE_URLS, name, src.as_uri() + "/")
    monkeypatch.setitem(
        dl.FILES, name, {fn: hashlib.md5(data).hexdigest() for fn, data in files.items()}
    )


def no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_download_verifies_and_skips_present_files(tmp_path, monkeypatch) -> None:
    serve(monkeypatch, tmp_path / "mirror", "cifar10", {"cifar-10-python.tar.gz": b"tarball"})
    dest = download("cifar10", dest=tmp_path / "data")
    assert dest == tmp_path / "data"
    assert (dest / "cifar-10-python.tar.gz").read_bytes() == b"tarball"
    assert [p.name for p in dest.iterdir()] == ["cifar-10-python.tar.gz"]  # no temp left
    monkeypatch.setattr(dl.urllib.request, "urlopen", no_network)
    assert download("cifar10", dest=dest) == dest  # present with right md5: not fetched


def test_file_with_wrong_checksum_is_fetched_again(tmp_path, monkeypatch) -> None:
    serve(monkeypatch, tmp_path / "mirror", "cifar100", {"cifar-100-python.tar.gz": b"good"})
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "cifar-100-python.tar.gz").write_bytes(b"stale partial")
    download("cifar100", dest=dest)
    assert (dest / "cifar-100-python.tar.gz").read_bytes() == b"good"


def test_checksum_mismatch_discards_download(tmp_path, monkeypatch) -> None:
    serve(monkeypatch, tmp_path / "mirror", "cifar10", {"cifar-10-python.tar.gz": b"tampered"})
    monkeypatch.setitem(dl.FILES, "cifar10", {"cifar-10-python.tar.gz": "0" * 32})
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="cifar-10-python.tar.gz: checksum mismatch"):
        download("cifar10", dest=dest)
    assert list(dest.iterdir()) == []


def test_offline_message_lists_urls_and_destination(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(dl.urllib.request, "urlopen", no_network)
    monkeypatch.setenv("CONTRASYN_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        download("fashion-mnist")
    message = str(info.value)
    assert "network unreachable" in message
    assert dl.BASE_URLS["fashion-mnist"] + "t10k-labels-idx1-ubyte.gz" in message
    assert "bb300cfdad3c16e7a12a480ee83cd310" in message
    assert f"put them in {tmp_path / 'cache' / 'fashion-mnist'}/" in message
    assert list((tmp_path / "cache" / "fashion-mnist").iterdir()) == []


def test_cache_dir_and_unknown_name(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CONTRASYN_DATA", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CONTRASYN_DATA")
    assert default_cache_dir() == Path.home() / ".cache" / "contrasyn" / "data"
    with pytest.raises(DataError, match="downloadable datasets are"):
        download("imagenet30")


def test_downloaded_fashion_mnist_loads(tmp_path, monkeypatch) -> None:
    def idx(arr: np.ndarray) -> bytes:
        dims = b"".join(d.to_bytes(4, "big") for d in arr.shape)
        return gzip.compress(bytes([0, 0, 8, arr.ndim]) + dims + arr.tobytes())

    images, labels = np.zeros((2, 28, 28), np.uint8), np.array([3, 4], np.uint8)
    files = {
        "train-images-idx3-ubyte.gz": idx(images),
        "train-labels-idx1-ubyte.gz": idx(labels),
        "t10k-images-idx3-ubyte.gz": idx(images[:1]),
        "t10k-labels-idx1-ubyte.gz": idx(labels[:1]),
    }
    serve(monkeypatch, tmp_path / "mirror", "fashion-mnist", files)
    ds = load_dataset("fashion-mnist", root=download("fashion-mnist", dest=tmp_path / "d"))
    assert ds.train_labels.tolist() == [3, 4] and ds.test_images.shape == (1, 28, 28, 1)


def test_http_error_is_not_called_offline(tmp_path, monkeypatch) -> None:
    def not_found(url, *args, **kwargs):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)

    monkeypatch.setattr(dl.urllib.request, "urlopen", not_found)
    with pytest.raises(DataError, match=r"answered HTTP 404 Not Found(.|\n)*root="):
        download("cifar10", dest=tmp_path)
    assert list(tmp_path.iterdir()) == []
