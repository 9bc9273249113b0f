"""Fetch the public datasets (CIFAR-10/100, Fashion-MNIST) into the local data cache.

Nothing in the library downloads implicitly: loaders only read local files and point here
(or at ``contrasyn data download``) when they are missing. Each file is streamed to a
temporary name in the destination folder, its md5 checked, and only then renamed into
place, so an interrupted or corrupted transfer never leaves a file the loaders would
trust. Files already present with the right checksum are not fetched again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from contrasyn.checkpoint import file_mode
from contrasyn.errors import DataError

# Where each dataset's files are fetched from. Module-level so tests (and mirrors) can
# point it elsewhere, e.g. at a file:// URL.
BASE_URLS: dict[str, str] = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
    # Mirror of http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ (same files).
    "fashion-mnist": "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
}

# File name -> md5 of the canonical file, per dataset.
FILES: dict[str, dict[str, str]] = {
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    "cifar100": {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """The data cache: ``$CONTRASYN_DATA`` if set, else ``~/.cache/contrasyn/data``.

    ``download(name)`` saves to ``default_cache_dir() / name`` and the loaders look there
    when called without ``root``.
    """
    env = os.environ.get("CONTRASYN_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "contrasyn" / "data"


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _url(name: str, filename: str) -> str:
    return BASE_URLS[name].rstrip("/") + "/" + filename


def _manual_message(name: str, dest: Path, problem: str) -> str:
    """Explain ``problem`` and how to place the files by hand where the loader reads them."""
    lines = [
        f"cannot download {name}: {problem}.",
        "Fetch these files on a machine with network access:",
    ]
    lines += [f"  {_url(name, fn)}  (md5 {md5})" for fn, md5 in FILES[name].items()]
    if dest == default_cache_dir() / name:
        lines.append(
            f"and put them in {dest}/ (the folder load_dataset({name!r}) reads by default), "
            f"or anywhere and pass root=<that folder>."
        )
    else:
        lines.append(f"and put them in {dest}/, then load with root={str(dest)!r}.")
    return "\n".join(lines)


def _fetch(name: str, filename: str, md5: str, dest: Path) -> None:
    """Stream one file to a temporary name in ``dest``, verify its md5, rename into place."""
    url = _url(name, filename)
    target = dest / filename
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{filename}.", suffix=".part")
    except OSError as e:
        raise DataError(f"{dest}: cannot write the download there ({e})") from e
    tmp = Path(tmp_name)
    h = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)
            except urllib.error.HTTPError as e:
                problem = f"{url} answered HTTP {e.code} {e.reason}"
                raise DataError(_manual_message(name, dest, problem)) from e
            except (urllib.error.URLError, OSError) as e:
                problem = f"network unreachable ({getattr(e, 'reason', e)})"
                raise DataError(_manual_message(name, dest, problem)) from e
            with response:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except OSError as e:
                        problem = f"network unreachable (transfer broke off: {e})"
                        raise DataError(_manual_message(name, dest, problem)) from e
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != md5:
            raise DataError(
                f"{url}: checksum mismatch (md5 {h.hexdigest()}, expected {md5}); the "
                f"download was discarded. Retry, or fetch it by hand into {dest}/"
            )
        os.chmod(tmp, file_mode())  # mkstemp made it 0600: the usual mode, as every file
        os.replace(tmp, target)
    except OSError as e:  # local write/rename failure; network errors became DataError above
        tmp.unlink(missing_ok=True)
        raise DataError(f"{target}: cannot write the download ({e})") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def download(name: str, dest: str | Path | None = None) -> Path:
    """Download dataset ``name`` (``cifar10``, ``cifar100`` or ``fashion-mnist``).

    Files go to ``dest`` (default ``default_cache_dir() / name``), which is returned and is
    what to pass as ``root=`` to the loader (the loaders also look there by default).
    Files already there with the right md5 are kept; a file with the wrong md5 is fetched
    again. Raises ``DataError`` on an unknown name, a checksum mismatch (the partial file
    is deleted) or no network (the message lists the URLs and the destination folder).
    """
    if name not in FILES:
        raise DataError(f"cannot download {name!r}: downloadable datasets are {sorted(FILES)}")
    folder = Path(dest).expanduser() if dest is not None else default_cache_dir() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{folder}: cannot create download folder ({e})") from e
    for filename, md5 in FILES[name].items():
        target = folder / filename
        if target.is_file() and _md5(target) == md5:
            continue
        _fetch(name, filename, md5, folder)
    return folder
