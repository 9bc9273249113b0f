"""Reader for the IDX format used by MNIST and Fashion-MNIST, plain or gzip-compressed.

Layout (big-endian): two zero bytes, a dtype code, the number of dimensions ``d``, then ``d``
uint32 sizes, then the payload in C order. The reader checks every part of that header and
that the payload has exactly the announced length, so a truncated download fails loudly
instead of yielding a short array.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from contrasyn.errors import DataError

# IDX dtype code -> numpy dtype (multi-byte types are big-endian on disk).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _open(path: Path) -> BinaryIO:
    """Open plain or gzip IDX by content, not by name: renamed files still work."""
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == _GZIP_MAGIC else open(path, "rb")


def _read_exact(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DataError(f"{path}: truncated IDX file: {what} has {len(data)} of {n} bytes")
    return data


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (``.gz`` or uncompressed) into a native-endian numpy array.

    ``ndim``, when given, is the number of dimensions the caller expects (3 for an image
    file, 1 for a label file); a mismatch means the wrong file was passed and is reported.
    Every problem (missing, unreadable, bad magic, unknown dtype, truncated, trailing bytes,
    corrupt gzip stream) raises ``DataError`` naming the file.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            magic = _read_exact(f, 4, path, "magic number")
            if magic[:2] != b"\0\0":
                raise DataError(
                    f"{path}: not an IDX file (magic number 0x{magic.hex()} should start "
                    f"with 0x0000)"
                )
            code, dims_count = magic[2], magic[3]
            if code not in IDX_DTYPES:
                raise DataError(f"{path}: unknown IDX dtype code 0x{code:02x}")
            if ndim is not None and dims_count != ndim:
                raise DataError(
                    f"{path}: IDX magic 0x{magic.hex()} announces {dims_count} dimensions, "
                    f"expected {ndim}"
                )
            if dims_count == 0:
                raise DataError(f"{path}: IDX header announces 0 dimensions")
            dims = struct.unpack(
                f">{dims_count}I", _read_exact(f, 4 * dims_count, path, "dimension header")
            )
            dtype = IDX_DTYPES[code]
            out = np.empty(dims, dtype=dtype)
            expected = out.nbytes
            # readinto fills the final array directly: no second copy of a 47 MB payload.
            view = memoryview(out).cast("B")
            got = 0
            while got < expected and (n := f.readinto(view[got:])):
                got += n
            if got != expected:
                raise DataError(
                    f"{path}: truncated IDX file: payload has {got} of {expected} bytes "
                    f"for shape {tuple(dims)}"
                )
            if f.read(1):
                raise DataError(
                    f"{path}: IDX file has data after the {expected}-byte payload announced "
                    f"for shape {tuple(dims)}"
                )
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except PermissionError as e:
        raise DataError(f"{path}: cannot read file: permission denied") from e
    except (OSError, EOFError, zlib.error) as e:
        # gzip raises EOFError for a cut-off stream and BadGzipFile/zlib.error for garbage.
        raise DataError(f"{path}: corrupt or truncated file ({e})") from e
    return out.astype(dtype.newbyteorder("="), copy=False)
