"""Rotations that leave a class unchanged: found on the training images, left out of the
shifts (methods/csi/symmetry.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from contrasyn.api.detector import Detector
from contrasyn.data import load_dataset
from contrasyn.errors import ConfigError
from contrasyn.methods.csi.symmetry import fitted_shifts, rotation_ratios
from contrasyn.methods.csi_config import TrainConfig


@pytest.fixture(scope="module")
def upright() -> np.ndarray:
    """200 images of the synthetic dataset's triangle_up class, uint8 (N, H, W, C)."""
    ds = load_dataset("synthetic")
    return ds.train_images[ds.train_labels == 0][:200]


def turned(x: np.ndarray, k: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(x, k, axes=(1, 2)))


def symmetric(x: np.ndarray) -> np.ndarray:
    """Each image made the same as its 180-degree turn."""
    return np.maximum(x, turned(x, 2))


def tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255


def test_ratios_tell_symmetric_classes_from_oriented_and_structureless_ones(upright) -> None:
    oriented = rotation_ratios(tensor(upright))
    assert min(oriented.values()) > 1.1  # every turn is further from the class than its own
    half = rotation_ratios(tensor(symmetric(upright)))
    assert half[2] < 0.05 and min(half[1], half[3]) > 1.05
    quarter = symmetric(upright)
    quarter = np.maximum(quarter, turned(quarter, 1))
    assert max(rotation_ratios(tensor(quarter)).values()) < 0.05
    # pixel noise on top of the symmetry (sigma 0.2 of the range) keeps it under 0.9,
    # whereas images with no structure at all sit at 1: the default threshold's margin
    noisy = tensor(symmetric(upright))
    noisy = noisy + 0.2 * torch.randn(noisy.shape, generator=torch.Generator().manual_seed(0))
    assert rotation_ratios(noisy.clamp(0, 1))[2] < 0.9
    flat = rotation_ratios(torch.rand(200, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    assert all(0.95 < r < 1.05 for r in flat.values())
    assert TrainConfig().shift_symmetry == 0.9


def test_a_symmetric_class_stays_symmetric_where_pooling_drops_pixels(upright) -> None:
    # 70-pixel images pool by 3 into 23 x 23 and leave out the last row and column: the
    # whole image is turned before pooling, so an exactly symmetric class still reads 0
    # (cropping to the pooled pixels first would turn an off-centre crop)
    big = torch.nn.functional.interpolate(tensor(upright[:60]), size=69, mode="bilinear")
    big = torch.nn.functional.pad(big, (0, 1, 0, 1))
    big = torch.maximum(big, torch.rot90(big, 2, (2, 3)))
    assert rotation_ratios(big)[2] < 0.05


def test_ratios_subsample_and_refuse_what_has_no_rotation(upright) -> None:
    x = tensor(symmetric(upright))
    few = rotation_ratios(x, max_images=50)
    assert few[2] < 0.05 and few != rotation_ratios(x)  # a subsample of 50, not all 200
    assert few == rotation_ratios(x, max_images=50)  # seeded
    for bad in (x[:1], x[:, :, :, :-1], x[0]):
        with pytest.raises(ValueError, match="square images"):
            rotation_ratios(bad)
    blank = torch.zeros(4, 1, 8, 8)  # every turn is the image itself
    assert rotation_ratios(blank) == {1: 0.0, 2: 0.0, 3: 0.0}


@pytest.mark.parametrize(
    ("ratios", "num_shifts", "threshold", "expected"),
    [
        ({1: 1.3, 2: 1.2, 3: 1.3}, 4, 0.9, 4),
        ({1: 1.3, 2: 0.9, 3: 1.3}, 4, 0.9, 2),  # at the threshold counts as symmetric
        ({1: 1.3, 2: 0.91, 3: 1.3}, 4, 0.9, 4),
        ({1: 0.2, 2: 0.1, 3: 0.2}, 4, 0.9, 1),
        ({1: 0.2, 2: 1.2, 3: 0.2}, 4, 0.9, 4),  # 90 without 180 is no subgroup: kept
        ({1: 0.2, 2: 0.1, 3: 1.2}, 4, 0.9, 2),  # 270 not symmetric: only the half turn
        ({1: 0.2, 2: 0.1, 3: 0.2}, 4, None, 4),  # None: never
        ({1: 1.3, 2: 0.1, 3: 1.3}, 2, 0.9, 2),  # 0 and 90 are already one of each coset
        ({1: 0.2, 2: 0.1, 3: 0.2}, 2, 0.9, 1),
        ({1: 1.3, 2: 0.1, 3: 1.3}, 3, 0.9, 2),
    ],
)
def test_fitted_shifts_keep_one_rotation_per_coset(ratios, num_shifts, threshold, expected):
    assert fitted_shifts(ratios, num_shifts, threshold) == expected


def test_shift_symmetry_is_checked() -> None:
    for bad in (0, -0.5):
        with pytest.raises(ConfigError, match="train.shift_symmetry must be > 0"):
            TrainConfig(shift_symmetry=bad)
    assert TrainConfig(shift_symmetry=None).shift_symmetry is None


def _fit(images: np.ndarray, method: str, **train) -> tuple[Detector, list[str]]:
    det = Detector(
        method=method, preset="tiny", progress=False, settings={"train": {"epochs": 1, **train}}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det.fit(images)
    return det, [str(w.message) for w in caught if "rotation shifts" in str(w.message)]


@pytest.mark.parametrize("method", ["csi", "full"])
def test_fit_leaves_out_the_turn_that_leaves_the_class_unchanged(upright, method, tmp_path):
    images = symmetric(upright)
    det, said = _fit(images, method)
    assert len(said) == 1 and "2 of 4 rotation shifts (0, 90 degrees)" in said[0]
    assert "180 degrees 0.00" in said[0]
    assert det.method_.config.train.num_shifts == 2
    assert det.scorer_.bank_z_.shape[1] == 2 and det.model_.shift_head.out_features == 2
    loaded = Detector.load(det.save(tmp_path / "model"))
    assert loaded.method_.config.train.num_shifts == 2
    np.testing.assert_allclose(
        loaded.score_samples(images[:16]), det.score_samples(images[:16]), rtol=1e-5, atol=1e-6
    )
    # null: the four rotations, as CSI always trains
    kept, said = _fit(images, method, shift_symmetry=None)
    assert not said and kept.method_.config.train.num_shifts == 4


def test_fit_keeps_every_shift_of_an_oriented_class(upright) -> None:
    det, said = _fit(upright, "csi")
    assert not said and det.method_.config.train.num_shifts == 4
    assert det.scorer_.bank_z_.shape[1] == 4
