"""ONNX export of F and the torch-free ``OnnxDetector`` against PyTorch's deterministic scores."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from contrasyn.api.detector import Detector  # noqa: E402
from contrasyn.api.export import (  # noqa: E402
    ONNX_FILE,
    OnnxDetector,
    export_onnx,
    max_inner_product,
    torch_deterministic_scores,
)
from contrasyn.checkpoint import CheckpointError  # noqa: E402
from contrasyn.data import load_dataset, to_model_input  # noqa: E402
from contrasyn.data.protocol import one_class_task  # noqa: E402
from contrasyn.errors import DataError  # noqa: E402
from contrasyn.methods.csi_config import SCORES  # noqa: E402


@pytest.fixture(scope="module")
def task():
    # real images: scikit-learn's digits (8x8, brought to 32x32), normal = "0"
    return one_class_task(load_dataset("digits"), 0)


@pytest.fixture(scope="module")
def fitted(task, tmp_path_factory):
    """A tiny detector, exported into a folder that had no save (export completes it)."""
    det = Detector(
        preset="tiny", progress=False, settings={"train": {"epochs": 1, "width": 4}}, device="cpu"
    )
    det.fit(task)
    folder = tmp_path_factory.mktemp("exported") / "model"
    assert export_onnx(det, folder) == folder
    return det, folder


@pytest.fixture(scope="module")
def images(task) -> np.ndarray:
    """54 real digits test images of every class (normal and anomalous), float NCHW."""
    return to_model_input(task.test_images[::10], 32, 3).numpy()


@pytest.fixture(scope="module")
def torch_scores(fitted, images) -> dict[str, np.ndarray]:
    return torch_deterministic_scores(fitted[0], images)


@pytest.fixture(scope="module")
def onnx_det(fitted) -> OnnxDetector:
    return OnnxDetector(fitted[1], threads=1)


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_export_completes_the_folder(fitted) -> None:
    _, folder = fitted
    assert {p.name for p in folder.iterdir()} == {"model.json", "model.safetensors", ONNX_FILE}
    proto = onnx.load(str(folder / ONNX_FILE))
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 18)]
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["h", "z", "shift"]
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # symbolic: any batch size


@pytest.mark.parametrize("name", SCORES)
def test_onnx_scores_equal_torch_deterministic_scores(onnx_det, images, torch_scores, name) -> None:
    got = onnx_det.scores(images)[name]
    assert got.shape == (len(images),) and got.dtype == np.float32
    tol = _atol(onnx_det, name, 1e-4)
    np.testing.assert_allclose(got, torch_scores[name], rtol=1e-5, atol=tol)


def test_score_samples_anomaly_score_and_predict(fitted, onnx_det, images, torch_scores) -> None:
    det, _ = fitted
    name = det.config_.score.score
    assert onnx_det.score_name == name == "feat"
    assert onnx_det.threshold_ == det.threshold_
    normality = onnx_det.score_samples(images)
    np.testing.assert_allclose(normality, torch_scores[name], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(onnx_det.anomaly_score(images), -normality)
    expected = np.where(det.threshold_ + torch_scores[name] >= 0, 1, -1)
    predicted = onnx_det.predict(images)
    np.testing.assert_array_equal(predicted, expected)
    assert set(np.unique(predicted)) <= {-1, 1}


def _atol(onnx_det, name: str, atol: float) -> float:
    """``atol``, scaled for a combined score by what it divides its parts by (their spread
    over the training images: 1e-5 in a part becomes 1e-5 / std)."""
    if "+" not in name:
        return atol
    std = dict(zip(("feat", "head", "pix"), onnx_det._standard.reshape(3, 2)[:, 1], strict=True))
    return sum(atol / float(std[part]) for part in name.split("+"))


@pytest.mark.parametrize("n", [1, 7])
def test_dynamic_batch(onnx_det, images, n) -> None:
    full = onnx_det.scores(images)
    part = onnx_det.scores(images[3 : 3 + n])
    assert set(full) == set(SCORES)
    for name in full:
        assert part[name].shape == (n,)
        tol = _atol(onnx_det, name, 1e-5)
        np.testing.assert_allclose(part[name], full[name][3 : 3 + n], rtol=1e-5, atol=tol)
    h, z, shift = onnx_det.session_.run(None, {"images": images[:n]})  # raw F, n rows
    assert len(h) == len(z) == len(shift) == n


def test_batching_and_chunked_bank_search(fitted, images) -> None:
    small = OnnxDetector(fitted[1], threads=1)
    cfg = small.config_
    small.config_ = dataclasses.replace(
        cfg, score=dataclasses.replace(cfg.score, batch_size=7, chunk=5)
    )
    full = OnnxDetector(fitted[1], threads=1).scores(images)
    for name, values in small.scores(images).items():
        # pix: a distance of ~10 found by an inner product of ~100s, rounded in float32
        tol = _atol(small, name, 1e-5)
        np.testing.assert_allclose(values, full[name], rtol=1e-5, atol=tol)
    assert all(len(v) == 0 for v in small.scores(images[:0]).values())


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_numpy_max_inner_product(chunk) -> None:
    rng = np.random.default_rng(0)
    q, bank = rng.normal(size=(7, 5)), rng.normal(size=(11, 5))
    np.testing.assert_allclose(max_inner_product(q, bank, chunk), (q @ bank.T).max(1))
    with pytest.raises(ValueError, match="dimension"):
        max_inner_product(q, bank[:, :4])


def test_bad_images_are_refused(onnx_det, images) -> None:
    with pytest.raises(DataError, match="float"):
        onnx_det.score_samples((images * 255).astype(np.uint8))
    with pytest.raises(DataError, match=r"\(N, 3, 32, 32\)"):
        onnx_det.score_samples(images[:, :1])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        onnx_det.score_samples(images * 2)


def test_missing_onnx_file(fitted, tmp_path) -> None:
    folder = _copy(fitted[1], tmp_path)
    (folder / ONNX_FILE).unlink()
    with pytest.raises(CheckpointError, match="model.onnx: missing.*export_onnx"):
        OnnxDetector(folder)


def test_corrupt_onnx_file(fitted, tmp_path) -> None:
    folder = _copy(fitted[1], tmp_path)
    (folder / ONNX_FILE).write_bytes(b"not an onnx model")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        OnnxDetector(folder)


def test_onnx_from_another_network(fitted, tmp_path) -> None:
    folder = _copy(fitted[1], tmp_path)
    proto = onnx.load(str(folder / ONNX_FILE))
    onnx.helper.set_model_props(proto, {"contrasyn.weights_sha256": "0" * 64})
    onnx.save(proto, str(folder / ONNX_FILE))
    with pytest.raises(CheckpointError, match="not exported from the network"):
        OnnxDetector(folder)


def test_export_refuses_a_folder_holding_another_detector(fitted, tmp_path) -> None:
    det, folder = fitted
    other = copy.deepcopy(det)
    with torch.no_grad():
        next(other.model_.parameters()).add_(1.0)
    folder = _copy(folder, tmp_path)
    with pytest.raises(CheckpointError, match="another network"):
        export_onnx(other, folder)


def test_missing_sidecar(fitted, tmp_path) -> None:
    folder = _copy(fitted[1], tmp_path)
    (folder / "model.json").unlink()
    with pytest.raises(CheckpointError, match="model.json: checkpoint file is missing"):
        OnnxDetector(folder)


def test_tampered_sidecar(fitted, tmp_path) -> None:
    folder = _copy(fitted[1], tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    meta["threshold"] = 0.0
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        OnnxDetector(folder)


def test_missing_folder(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such model folder"):
        OnnxDetector(tmp_path / "absent")


def test_onnx_detector_does_not_import_torch(fitted, images, tmp_path) -> None:
    np.save(tmp_path / "x.npy", images[:5])
    code = (
        "import sys, numpy as np\n"
        "from contrasyn.api.export import OnnxDetector\n"
        f"det = OnnxDetector({str(fitted[1])!r}, threads=1)\n"
        f"det.predict(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_normal_export_shows_no_warning(fitted, tmp_path) -> None:
    """torch's exporter warns about its own internals (a FutureWarning on every export with
    torch 2.13); export_onnx keeps that from the user, and lets every other warning through."""
    import warnings

    det, _ = fitted
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # shown even if raised before
        export_onnx(det, tmp_path / "quiet")
    assert [f"{w.category.__name__}: {w.message}" for w in seen] == []


def test_a_pixel_bank_larger_than_f_s_bank_exports(task, images, tmp_path: Path) -> None:
    """``score.pixel_bank="all"`` banks more pixel rows than F's bank has features: the ONNX
    model scores ``pix`` (and the default ``feat+pix``) against all of them, as torch does."""
    settings = {
        "train": {"epochs": 1, "width": 4, "max_train": 60},
        "score": {"pixel_bank": "all", "score": "feat+pix"},
    }
    det = Detector(method="csi", preset="tiny", progress=False, settings=settings).fit(task)
    assert len(det.scorer_.bank_x_) > len(det.scorer_.bank_z_) == 60
    onnx_det = OnnxDetector(export_onnx(det, tmp_path / "model"), threads=1)
    expected = torch_deterministic_scores(det, images)
    for name in ("pix", "feat+pix"):
        got = onnx_det.scores(images)[name]
        np.testing.assert_allclose(got, expected[name], rtol=1e-5, atol=_atol(onnx_det, name, 1e-4))
