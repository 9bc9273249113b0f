"""Sample quality: the Fréchet distance against an independent computation, the fixed random
feature space, the PNG grids, the Inception path's errors, and the benchmark's quality step."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from contrasyn.cli import main
from contrasyn.errors import ConfigError
from contrasyn.evaluation.quality import (
    InceptionFeatures,
    RandomFeatures,
    feature_space,
    features,
    frechet_distance,
    save_grid,
)


def _scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's sqrtm (as FID implementations compute it)."""
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    return float(mu @ mu + np.trace(ca + cb - 2 * root))


def test_frechet_distance_matches_the_textbook_formula() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(1.0, 2.0, size=(300, 6))
    assert frechet_distance(a, b) == pytest.approx(_scipy_fd(a, b), rel=1e-6)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_frechet_distance_of_shifted_copy_is_the_squared_shift() -> None:
    a = np.random.default_rng(1).normal(size=(200, 4))
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, a + shift) == pytest.approx(shift @ shift, rel=1e-6)


def test_frechet_distance_of_1d_gaussians_is_closed_form() -> None:
    a = np.array([[-1.0], [1.0]])  # mean 0, sample variance 2
    b = np.array([[2.0], [8.0]])  # mean 5, sample variance 18
    assert frechet_distance(a, b) == pytest.approx(25 + (2**0.5 - 18**0.5) ** 2)


def test_frechet_distance_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def test_random_features_are_fixed_and_leave_the_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    one, two = RandomFeatures(), RandomFeatures()
    assert torch.equal(torch.rand(1), expected)
    x = torch.rand(6, 1, 32, 32)
    f1, f2 = features(one, x, batch_size=4), features(two, x)
    assert f1.shape == (6, 128)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
    # batch-independent (eval mode): the same image gives the same features in any batch
    np.testing.assert_allclose(features(one, x[:1]), f1[:1], rtol=1e-5, atol=1e-6)


def test_fd_rand_separates_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 1, 32, 32, generator=g) * 0.5
    same = torch.rand(64, 1, 32, 32, generator=g) * 0.5
    other = torch.rand(64, 1, 32, 32, generator=g) * 0.5 + 0.5
    space = feature_space("fd-rand")
    fr = features(space, real)
    assert frechet_distance(fr, features(space, same)) < frechet_distance(
        fr, features(space, other)
    )


def test_memorisation_ratio_tells_copies_from_new_images() -> None:
    from contrasyn.evaluation.quality import memorisation_ratio, nearest_rows

    rng = torch.Generator().manual_seed(0)
    train, fresh, new = (torch.rand(n, 1, 8, 8, generator=rng) for n in (50, 200, 200))
    copies = train[torch.randint(0, 50, (200,), generator=rng)]
    copies = copies + 0.01 * torch.randn(copies.shape, generator=rng)
    assert memorisation_ratio(copies, train, fresh) < 0.05
    assert 0.9 < memorisation_ratio(new, train, fresh) < 1.1
    d, index = nearest_rows(train[[3, 7]], train)
    assert index.tolist() == [3, 7] and d.abs().max() < 1e-3


def test_save_grid_lays_out_rows(tmp_path: Path) -> None:
    rows = [torch.zeros(3, 1, 4, 5), torch.ones(3, 1, 4, 5)]
    path = save_grid(rows, tmp_path / "sub" / "grid.png", pad=2)
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (2 * (4 + 2) + 2, 3 * (5 + 2) + 2)
    assert pixels[2, 2] == 0 and pixels[2 + 6, 2] == 255 and pixels[0, 0] == 255
    rgb = save_grid([torch.rand(2, 3, 4, 4)], tmp_path / "rgb.png")
    assert np.asarray(Image.open(rgb)).shape == (8, 14, 3)
    with pytest.raises(ValueError, match="same number"):
        save_grid([torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4)], tmp_path / "x.png")


def test_fid_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown feature space"):
        feature_space("inception-score")
    has_torchvision = importlib.util.find_spec("torchvision") is not None
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(ConfigError, match="not found" if has_torchvision else "torchvision"):
        InceptionFeatures(missing)


@pytest.fixture(scope="module")
def variants_bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("variants")
    args = ["benchmark", "--dataset", "synthetic", "--classes", "0", "--methods"]
    args += ["csi+g,full", "--seeds", "0", "--preset", "tiny", "--out", str(out), "--quiet"]
    assert main(args) == 0
    return out


def test_benchmark_trains_the_variants_and_quality_reads_them(variants_bench: Path) -> None:
    out = variants_bench
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["method"] for r in rows] == ["csi+g", "full"]
    assert all(0 <= float(r["auroc"]) <= 1 for r in rows)
    assert main(["quality", "--results", str(out)]) == 0
    quality = list(csv.DictReader((out / "quality.csv").open()))
    assert [q["method"] for q in quality] == ["csi+g", "full"]
    assert all(float(q["fd_rand"]) > 0 for q in quality)
    assert all(0 <= float(q["synthetic_vs_normal_auroc"]) <= 1 for q in quality)
    runs = out / "runs" / "synthetic"
    samples = np.asarray(Image.open(runs / "full/class0/seed0/samples.png"))
    assert samples.shape[:2] == (8 * (32 + 2) + 2, 16 * (32 + 2) + 2)
    assert (runs / "full/class0/seed0/reconstructions.png").exists()
    assert not (runs / "csi+g/class0/seed0/reconstructions.png").exists()  # csi+g has no E
    assert "fd_rand" in (out / "quality.md").read_text()
    assert all(float(q["memorisation"]) > 0 for q in quality)
    assert "Memorisation" in (out / "quality.md").read_text()
    nearest = np.asarray(Image.open(runs / "full/class0/seed0/nearest.png"))
    assert nearest.shape[:2] == (2 * (32 + 2) + 2, 16 * (32 + 2) + 2)


def test_quality_keeps_rows_of_runs_whose_weights_are_gone(variants_bench: Path) -> None:
    out = variants_bench
    assert main(["quality", "--results", str(out)]) == 0
    before = (out / "quality.jsonl").read_text()
    weights = out / "runs/synthetic/full/class0/seed0/last.safetensors"
    moved = weights.rename(weights.with_suffix(".moved"))
    try:
        assert main(["quality", "--results", str(out)]) == 0
        assert (out / "quality.jsonl").read_text() == before
    finally:
        moved.rename(weights)


def test_quality_keeps_runs_measured_before_unless_asked(variants_bench: Path, monkeypatch) -> None:
    out = variants_bench
    assert main(["quality", "--results", str(out)]) == 0
    before = (out / "quality.jsonl").read_text()

    def must_not_load(*args, **kwargs):
        raise AssertionError("a run measured before was measured again")

    monkeypatch.setattr("contrasyn.methods.csi.trained.load_generator", must_not_load)
    assert main(["quality", "--results", str(out)]) == 0
    assert (out / "quality.jsonl").read_text() == before
    with pytest.raises(AssertionError, match="measured again"):
        main(["quality", "--results", str(out), "--recompute"])


def test_quality_refuses_other_training_images(variants_bench: Path, capsys) -> None:
    args = ["quality", "--results", str(variants_bench), "--val-normal", "3", "--recompute"]
    assert main(args) == 2
    assert "training images differ" in capsys.readouterr().err


def test_quality_without_generative_runs(tmp_path: Path, capsys) -> None:
    assert main(["quality", "--results", str(tmp_path)]) == 2
    assert "no trained csi+g or full runs" in capsys.readouterr().err


def test_grid_images_are_normal_then_anomalous() -> None:
    from contrasyn.data import load_dataset
    from contrasyn.data.protocol import one_class_task
    from contrasyn.evaluation.bench import _grid_images
    from contrasyn.methods.csi_config import RunConfig, TrainConfig

    task = one_class_task(load_dataset("synthetic"), 2)
    cfg = RunConfig(TrainConfig(image_size=32, channels=1))
    normal, anomalous = _grid_images(task, cfg, 12)
    labels = task.test_labels
    expected = torch.from_numpy(task.test_images[labels == 2][:12]).permute(0, 3, 1, 2) / 255
    assert torch.allclose(normal, expected, atol=1e-6)
    # anomalous ones cycle over the other classes: 12 images, none of class 2
    firsts = [np.flatnonzero(labels == c)[0] for c in (0, 1, 3, 4, 5)]
    assert torch.allclose(
        anomalous[:5],
        torch.from_numpy(task.test_images[firsts]).permute(0, 3, 1, 2).float() / 255,
        atol=1e-6,
    )
