"""safetensors + JSON sidecar checkpoints: round trip, atomicity and every kind of damage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

import contrasyn
import contrasyn.checkpoint as ckpt
from contrasyn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from contrasyn.errors import ContrasynError


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "model.w": torch.randn(3, 4, generator=g),
        "model.b": torch.arange(5, dtype=torch.int64),
        "half": torch.randn(2, 2, generator=g).to(torch.bfloat16),
        "rng.cpu": torch.get_rng_state(),
        "strided": torch.randn(4, 4, generator=g).T,  # non-contiguous on purpose
    }


META = {"config": {"width": 4, "jitter": [0.4, 0.4, 0.4, 0.1], "max_train": None}, "epoch": 3}


def test_round_trip(tmp_path: Path) -> None:
    tensors = _tensors()
    save_checkpoint(tmp_path / "sub" / "last", tensors, META)
    loaded, meta = load_checkpoint(tmp_path / "sub" / "last")
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0)
    assert meta["config"] == META["config"] and meta["epoch"] == 3
    assert meta["versions"]["contrasyn"] == contrasyn.__version__
    assert meta["versions"]["torch"] == torch.__version__
    assert "python" in meta["versions"]
    # the caller's meta is not mutated
    assert "versions" not in META
    # the sidecar is plain, readable JSON
    assert json.loads((tmp_path / "sub" / "last.json").read_text()) == meta


def test_stem_accepts_str_and_overwrites(tmp_path: Path) -> None:
    stem = str(tmp_path / "ck")
    save_checkpoint(stem, {"a": torch.zeros(2)}, {"epoch": 1})
    save_checkpoint(stem, {"a": torch.ones(2)}, {"epoch": 2})
    loaded, meta = load_checkpoint(stem)
    torch.testing.assert_close(loaded["a"], torch.ones(2))
    assert meta["epoch"] == 2


def test_load_puts_tensors_on_the_device_asked(tmp_path: Path, monkeypatch) -> None:
    """The device reaches safetensors, which places the tensors there (a resumed GPU run
    loads onto its GPU); checked by the device safetensors is asked for, as CI has no GPU."""
    save_checkpoint(tmp_path / "last", {"a": torch.ones(2)}, {"epoch": 1})
    asked = []
    real = safetensors.torch.load_file

    def load_file(path: str, device: str = "cpu") -> dict:
        asked.append(device)
        return real(path, device="cpu")

    monkeypatch.setattr(safetensors.torch, "load_file", load_file)
    load_checkpoint(tmp_path / "last", "cuda:1")
    load_checkpoint(tmp_path / "last")
    assert asked == ["cuda:1", "cpu"]


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _tensors(), META)
    save_checkpoint(tmp_path / "last", _tensors(), META)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    save_checkpoint(tmp_path / "last", {"a": torch.zeros(2)}, {"epoch": 1})

    def crash(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", {"a": torch.ones(2)}, {"epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]
    monkeypatch.undo()
    loaded, meta = load_checkpoint(tmp_path / "last")
    assert meta["epoch"] == 1
    torch.testing.assert_close(loaded["a"], torch.zeros(2))


def test_tampered_sidecar(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _tensors(), META)
    path = tmp_path / "last.json"
    meta = json.loads(path.read_text())
    meta["epoch"] = 4
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(tmp_path / "last")


def test_sidecar_from_another_save(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a", {"x": torch.zeros(1)}, {"epoch": 1})
    save_checkpoint(tmp_path / "b", {"x": torch.zeros(1)}, {"epoch": 2})
    (tmp_path / "a.json").write_bytes((tmp_path / "b.json").read_bytes())
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "a")


def test_sidecar_not_json(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _tensors(), META)
    (tmp_path / "last.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "last")


@pytest.mark.parametrize("keep", [0, 7, 100, -1])
def test_truncated_safetensors(tmp_path: Path, keep: int) -> None:
    save_checkpoint(tmp_path / "last", _tensors(), META)
    path = tmp_path / "last.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[: len(data) - 1])
    with pytest.raises(CheckpointError, match="last.safetensors"):
        load_checkpoint(tmp_path / "last")


def test_garbage_safetensors(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _tensors(), META)
    (tmp_path / "last.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "last")


@pytest.mark.parametrize("missing", ["last.safetensors", "last.json"])
def test_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    save_checkpoint(tmp_path / "last", _tensors(), META)
    (tmp_path / missing).unlink()
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")) as info:
        load_checkpoint(tmp_path / "last")
    assert "missing" in str(info.value)
    assert isinstance(info.value, ContrasynError)


def test_nothing_there(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "nope")


@pytest.mark.parametrize("other", ["0.2.0", "1.1.0", "0.0.9"])
def test_other_minor_version_refused(tmp_path: Path, monkeypatch, other: str) -> None:
    monkeypatch.setattr(ckpt, "__version__", other)
    save_checkpoint(tmp_path / "last", _tensors(), META)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=other.replace(".", r"\.")):
        load_checkpoint(tmp_path / "last")


def test_patch_version_difference_accepted(tmp_path: Path, monkeypatch) -> None:
    major, minor, _ = contrasyn.__version__.split(".")
    monkeypatch.setattr(ckpt, "__version__", f"{major}.{minor}.99")
    save_checkpoint(tmp_path / "last", _tensors(), META)
    monkeypatch.undo()
    _, meta = load_checkpoint(tmp_path / "last")
    assert meta["versions"]["contrasyn"] == f"{major}.{minor}.99"


def test_damaged_header_metadata(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "last", _tensors(), META)
    path = tmp_path / "last.safetensors"
    data = path.read_bytes()
    needle = b'"contrasyn":"{'
    assert data.count(needle) == 1
    path.write_bytes(data.replace(needle, b'"contrasyn":"x'))  # same length: header still valid
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "last")
