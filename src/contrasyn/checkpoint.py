"""Checkpoints: one safetensors file of tensors plus a JSON sidecar, both written atomically.

Nothing is ever unpickled: tensors come from safetensors, everything else from JSON. The
sidecar (config, versions, progress) is duplicated into the safetensors header so that a
tensor file and a sidecar from different saves are detected rather than silently mixed.
Reading works without PyTorch (``framework="numpy"``), which the ONNX runtime scorer uses;
torch is imported only to save or to read torch tensors.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from contrasyn import __version__
from contrasyn.errors import CheckpointError

DETECTOR_FORMAT = "contrasyn-detector"


def versions() -> dict[str, str]:
    import torch

    return {
        "contrasyn": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` fills ``.NAME.*.tmp`` in the same folder, which is synced and renamed
    over ``path``: a crash leaves the previous complete file, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; saved files get the usual mode
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({e})") from e
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
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{tensor_path}: damaged metadata header ({e})") from e
    if header_meta != meta:
        raise CheckpointError(
            f"{meta_path} does not match {tensor_path} (edited, or from another save); "
            "refusing to load a mixed checkpoint"
        )
    saved = meta.get("versions", {}).get("contrasyn")
    if saved is not None and saved.split(".")[:2] != __version__.split(".")[:2]:
        raise CheckpointError(
            f"{stem}: written by contrasyn {saved}, this is {__version__}; "
            "retrain or load it with that version"
        )
    return tensors, meta


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
    if header_meta is None or meta == header_meta:
        return False
    atomic_write(meta_path, lambda tmp: Path(tmp).write_text(header + "\n"))
    return True


def load_checkpoint(stem: str | Path, device: str = "cpu") -> tuple[dict, dict[str, Any]]:
    """``read_checkpoint`` as torch tensors on ``device``."""
    return read_checkpoint(stem, "pt", device)
