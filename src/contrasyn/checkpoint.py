"""Checkpoints: one safetensors file of tensors plus a JSON sidecar, both written atomically.

Nothing is ever unpickled: tensors come from safetensors, everything else from JSON. The
sidecar (config, versions, progress) is duplicated into the safetensors header so that a
tensor file and a sidecar from different saves are detected rather than silently mixed.
Reading works without PyTorch (``framework="numpy"``), which the ONNX runtime scorer uses;
torch is imported only to save or to read torch tensors.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from contrasyn.errors import CheckpointError, ContrasynError, OutputError
from contrasyn.version import __version__

DETECTOR_FORMAT = "contrasyn-detector"


def versions() -> dict[str, str]:
    import torch

    return {
        "contrasyn": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


# The temporary files ``atomic_write`` makes: ``.NAME.XXXXXXXX.tmp`` (mkstemp's 8 random
# characters), with an optional suffix such as ``.png`` for writers that pick the format by it.
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def file_mode() -> int:
    """0666 less the process's umask: the mode ``open()`` gives a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# safetensors reports an I/O failure as SafetensorError("... (os error 28)"): its errno
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def output_error(path: Path, error: OSError | SafetensorError) -> OutputError:
    """One line naming ``path`` for an ``OSError`` (or safetensors' own error, which carries
    the operating system's error number in its text) met while writing it."""
    if isinstance(error, OSError):
        code, reason = error.errno, error.strerror or str(error)
    else:
        found = _RUST_OS_ERROR.search(str(error))
        code = int(found.group(1)) if found else None
        reason = os.strerror(code) if code is not None else " ".join(str(error).split())
    return OutputError(
        f"{path}: cannot write ({reason}); any previous version of it is unchanged", code
    )


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or below it (both resolved, symbolic links followed)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def not_regular(path: Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file (a symbolic link, a device,
    a fifo, a socket, a folder): only regular files are ever replaced. None otherwise."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    )
    return next((words for test, words in kinds if test(mode)), None)


def atomic_write(
    path: Path, write: Callable[[str], None], suffix: str = "", replace: bool = True
) -> None:
    """``write(tmp)`` fills ``.NAME.XXXXXXXX.tmp`` (+ ``suffix``) in the same folder, which
    is given the usual mode (0666 less the umask, whatever mode ``write`` created it with),
    synced and renamed over ``path``; the folder is synced too. A crash leaves the previous
    complete file, never half of one. Any failure to write (an ``OSError``, safetensors' own
    error: a full disk, a read-only folder...) becomes ``OutputError`` naming ``path``; the
    temporary file is removed. Only a regular file is replaced: a device, a fifo or a
    symbolic link at ``path`` is refused. ``replace=False`` claims ``path`` instead: it is
    linked into place only if nothing is there, atomically, so of two processes writing a
    new ``path`` at once exactly one succeeds and the other gets ``OutputError``
    (``errno.EEXIST``), nothing replaced."""
    path = Path(path)
    kind = not_regular(path)
    if kind is not None:
        raise OutputError(f"{path}: is {kind}, not a regular file; it is never replaced")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix)
        os.close(fd)
    except OSError as e:
        raise output_error(path, e) from e
    try:
        write(tmp)
        # after writing: some writers (safetensors) replace the file, created 0600
        os.chmod(tmp, file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _claim(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError | SafetensorError) and not isinstance(e, ContrasynError):
            raise output_error(path, e) from e
        raise
    _sync_folder(path.parent)


def _claim(tmp: str, path: Path) -> None:
    """Put the complete file ``tmp`` at ``path`` only if nothing is there: a hard link fails
    at once if ``path`` exists (the check and the rename are one step); the temporary name
    is then removed. Where hard links are not supported (FAT, some network filesystems),
    ``path`` is created exclusively first and the file renamed over that claim."""
    try:
        try:
            os.link(tmp, path)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                raise  # FileExistsError among them
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode()))
            os.replace(tmp, path)
            return
    except FileExistsError:
        raise OutputError(
            f"{path}: exists (another process wrote it first); nothing was replaced",
            errno.EEXIST,
        ) from None
    os.unlink(tmp)


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a process killed inside ``atomic_write`` left in ``folder``
    (not below it); the removed paths. Only for a folder this process holds the lock of
    (``contrasyn.api.lock``): another writer's temporary file must not be taken away."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if _TEMP_NAME.match(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def save_checkpoint(stem: str | Path, tensors: dict, meta: dict[str, Any]) -> None:
    """Write ``stem.safetensors`` and ``stem.json`` (each via a temporary file and a rename)."""
    from safetensors.torch import save_file

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "versions": versions()}
    text = json.dumps(meta, indent=2, sort_keys=True)
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(
        stem.with_suffix(".safetensors"),
        lambda tmp: save_file(contiguous, tmp, metadata={"contrasyn": text}),
    )
    atomic_write(stem.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n"))


def read_checkpoint(
    stem: str | Path, framework: str = "pt", device: str = "cpu"
) -> tuple[dict, dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint`` as torch tensors (``framework="pt"``,
    on ``device``) or numpy arrays (``"numpy"``, no torch needed); a clear error for any
    damage: a missing file, invalid JSON, a truncated tensor file, a sidecar that differs from
    the copy in the tensor file's header, or another contrasyn major.minor version."""
    stem = Path(stem)
    tensor_path, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for path in (tensor_path, meta_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({e})") from e
    except OSError as e:
        raise CheckpointError(f"{meta_path}: cannot read ({e.strerror or e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    try:
        with safe_open(str(tensor_path), framework="np") as f:
            header = (f.metadata() or {}).get("contrasyn")
        if framework == "numpy":
            from safetensors.numpy import load_file

            tensors = load_file(str(tensor_path))
        else:
            from safetensors.torch import load_file

            tensors = load_file(str(tensor_path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{tensor_path}: unreadable or truncated safetensors file ({e})"
        ) from e
    try:
        header_meta = json.loads(header) if header is not None else None
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{tensor_path}: damaged metadata header ({e})") from e
    if not _same(header_meta, meta):
        raise CheckpointError(
            f"{meta_path} does not match {tensor_path} (edited, or from another save); "
            "refusing to load a mixed checkpoint"
        )
    saved = _saved_version(meta, meta_path)
    if saved is not None and saved.split(".")[:2] != __version__.split(".")[:2]:
        raise CheckpointError(
            f"{stem}: written by contrasyn {saved}, this is {__version__}; "
            "retrain or load it with that version"
        )
    return tensors, meta


def _same(a: Any, b: Any) -> bool:
    """JSON values equal, NaN included (NaN != NaN in Python), so that a sidecar holding a
    NaN is compared, and then refused by what reads it, not called a mixed save."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


_VERSION = re.compile(r"\d+(\.\d+)*[0-9A-Za-z.+-]*")  # 0.1.0, 0.2.0rc1, 1.0+local


def _saved_version(meta: dict[str, Any], meta_path: Path) -> str | None:
    """``versions.contrasyn``, checked: ``versions`` maps names to version strings."""
    found = meta.get("versions", {})
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise CheckpointError(
            f"{meta_path}: 'versions' must map names to version strings, got {found!r:.80}"
        )
    saved = found.get("contrasyn")
    if saved is not None and not _VERSION.fullmatch(saved):
        raise CheckpointError(
            f"{meta_path}: 'versions.contrasyn' is not a version number, got {saved!r:.80}"
        )
    return saved


def recover_interrupted_save(stem: str | Path) -> bool:
    """Tidy up after a process killed while saving ``stem``; True if the sidecar was rebuilt.

    Stale temporary files are removed. The tensor file is renamed into place before the
    sidecar, so a kill between the two renames leaves a new tensor file beside the previous
    sidecar: the sidecar is then rebuilt from the copy in the tensor file's header, which
    belongs to those tensors. Use it for one's own training checkpoints, not for files from
    elsewhere, where a mismatch means tampering and must be refused.
    """
    stem = Path(stem)
    for stale in stem.parent.glob(f".{stem.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    tensor_path, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not tensor_path.is_file():
        return False
    try:
        with safe_open(str(tensor_path), framework="np") as f:
            header = (f.metadata() or {}).get("contrasyn")
        header_meta = json.loads(header) if header is not None else None
    except (SafetensorError, OSError, ValueError):
        return False  # damaged tensor file: read_checkpoint will say so
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        meta = None
    if header_meta is None or _same(meta, header_meta):
        return False
    atomic_write(meta_path, lambda tmp: Path(tmp).write_text(header + "\n"))
    return True


def load_checkpoint(stem: str | Path, device: str = "cpu") -> tuple[dict, dict[str, Any]]:
    """``read_checkpoint`` as torch tensors on ``device``."""
    return read_checkpoint(stem, "pt", device)
