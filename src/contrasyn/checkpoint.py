"""Checkpoints: one safetensors file of tensors plus a JSON sidecar, both written atomically.

Nothing is ever unpickled: tensors come from safetensors, everything else from JSON. The
sidecar (config, versions, progress) is duplicated into the safetensors header so that a
tensor file and a sidecar from different saves are detected rather than silently mixed.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from contrasyn import __version__
from contrasyn.errors import ContrasynError


class CheckpointError(ContrasynError):
    """A checkpoint is missing, truncated, tampered with or from an incompatible version."""


def versions() -> dict[str, str]:
    return {
        "contrasyn": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    stem: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Write ``stem.safetensors`` and ``stem.json`` (each via a temporary file and a rename)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "versions": versions()}
    text = json.dumps(meta, indent=2, sort_keys=True)
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_write(
        stem.with_suffix(".safetensors"),
        lambda tmp: save_file(contiguous, tmp, metadata={"contrasyn": text}),
    )
    _atomic_write(stem.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n"))


def load_checkpoint(
    stem: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint``; a clear error for any damage."""
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
        with safe_open(str(tensor_path), framework="pt") as f:
            header = (f.metadata() or {}).get("contrasyn")
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
