"""Anomaly maps: occlusion on a known score, the detector's maps for every kind of method,
and the overlays written for people."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from contrasyn.api.detector import Detector
from contrasyn.api.maps import (
    default_window,
    map_panel,
    normalise_map,
    occlusion_map,
    overlay,
    overlay_names,
    window_starts,
    write_overlays,
)
from contrasyn.data import load_dataset
from contrasyn.data.protocol import one_class_task
from contrasyn.errors import ConfigError


def test_windows_cover_every_pixel() -> None:
    assert default_window(32) == (8, 4) and default_window(128) == (32, 16)
    assert window_starts(32, 8, 4) == [0, 4, 8, 12, 16, 20, 24]
    assert window_starts(10, 4, 4) == [0, 4, 6]  # the last window flush with the edge
    for bad in ((0, 1), (33, 1), (8, 0)):
        with pytest.raises(ConfigError):
            window_starts(32, *bad)


@pytest.mark.parametrize("fill", ["blur", "mean", "black", "grey"])
def test_occlusion_points_at_the_region_the_score_reads(fill) -> None:
    """A score that is the brightness of one 6 x 6 square: hiding the square (and only it)
    lowers the score, so the map is positive there and zero far from it."""
    images = torch.zeros(3, 1, 24, 24)
    images[:, :, 6:12, 14:20] = 1.0  # a bright square where the score looks

    def anomaly(x: torch.Tensor) -> np.ndarray:
        return x[:, :, 6:12, 14:20].mean(dim=(1, 2, 3)).numpy()

    maps = occlusion_map(anomaly, images, patch=6, stride=3, fill=fill, batch=40)
    assert maps.shape == (3, 24, 24) and maps.dtype == np.float32
    if fill == "grey":  # hiding it with grey lowers it too, but less
        assert maps[:, 6:12, 14:20].min() > 0
    for m in maps:
        r, c = np.unravel_index(np.argmax(m), m.shape)
        assert 6 <= r < 12 and 14 <= c < 20
        assert np.abs(m[18:, :8]).max() == 0  # windows that never touch the square


def test_detector_maps_for_a_baseline_and_bad_settings() -> None:
    task = one_class_task(load_dataset("synthetic", n_train_per_class=30, size=16), 0)
    det = Detector(method="knn", preset="tiny", image_size=16, holdout=0, progress=False)
    det.fit(task)
    x = task.test_images[:3]
    maps = det.anomaly_map(x)
    assert maps.shape == (3, 16, 16) and np.isfinite(maps).all()
    # the map is the score's own drop: an occlusion that changes nothing gives 0
    flat = np.zeros((1, 16, 16, 1), np.uint8)
    assert np.abs(det.anomaly_map(flat, fill="black")).max() == 0
    np.testing.assert_array_equal(det.anomaly_map(x), maps)  # deterministic
    with pytest.raises(ConfigError, match="method must be one of"):
        det.anomaly_map(x, method="saliency")
    with pytest.raises(ConfigError, match="baseline"):
        det.anomaly_map(x, method="gradient")  # gradients need the CSI family's network
    with pytest.raises(ConfigError, match="fill"):
        det.anomaly_map(x, fill="noise")


def test_overlays_are_clear_where_the_map_is_not_positive(tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 1), dtype=np.uint8)
    heat = np.zeros((16, 16), np.float32)
    heat[2:5, 2:5] = 1.0
    heat[10:, 10:] = -3.0  # negative: hiding it made the image *more* anomalous
    level = normalise_map(heat)
    assert level.max() == 1 and level.min() == 0
    out = overlay(image, heat)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    grey = np.repeat(image, 3, axis=2)
    np.testing.assert_array_equal(out[10:, 10:], grey[10:, 10:])
    assert not np.array_equal(out[3, 3], grey[3, 3])
    assert normalise_map(np.full((4, 4), np.nan)).max() == 0
    panel = map_panel(image, heat)
    assert panel.shape == (128, 2 * 128 + 4, 3)
    names = overlay_names(["a/x.png", "b/x.png", "c/=y z.jpg"], 3)
    assert names == ["0000-x.png", "0001-x.png", "0002-_y_z.png"]
    paths = write_overlays(tmp_path / "maps", np.stack([image] * 3), np.stack([heat] * 3), names)
    assert [p.name for p in paths] == names
    assert Image.open(paths[0]).size == (2 * 128 + 4, 128)
    assert not list((tmp_path / "maps").glob(".*"))  # no temporary files left
