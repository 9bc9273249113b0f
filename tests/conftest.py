"""Shared test settings.

One intra-op thread: the suite's networks are tiny, and on a small machine shared with other
jobs, OpenMP threads spinning against each other make a 6-step run take 15 s instead of 0.3 s.

``broken_images`` loads an HTML page in headless Chromium (skipping the test where it is not
installed; ``make test`` installs it) and returns the page's images that the browser could not
show: a missing file, or one it cannot decode.

``folders`` writes, once per test module, the folders of PNGs the command-line tests fit and
score: ``good/`` (40 normal synthetic images, class 0) and ``test/normal``, ``test/anomalous``
(6 class-0 and 6 class-3 test images), all 16 x 16 grey.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrasyn.data import load_dataset

torch.set_num_threads(1)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# After the load event (every image loaded or failed), the page writes what it found into
# attributes of <body>, which --dump-dom prints.
_PROBE = """<script>
window.addEventListener('load', () => {
  const broken = [...document.images]
    .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  document.body.setAttribute('data-images', document.images.length);
  document.body.setAttribute('data-broken', JSON.stringify(broken));
});
</script>"""


@pytest.fixture
def broken_images() -> Callable[[Path], tuple[int, list[str]]]:
    """``check(page)`` -> (images on the page, the ``src`` of each one Chromium could not
    show). The page is loaded as a copy with a probe script, beside it so that its relative
    paths resolve the same way; the copy is removed afterwards."""
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed")

    def check(page: Path) -> tuple[int, list[str]]:
        probe = page.with_name(f".probe-{page.name}")
        probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
        try:
            dom = subprocess.run(
                [
                    CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--virtual-time-budget=20000",
                    "--dump-dom",
                    probe.resolve().as_uri(),
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            ).stdout
        finally:
            probe.unlink(missing_ok=True)
        found = re.search(r"<body[^>]*data-images=\"(\d+)\"[^>]*data-broken=\"([^\"]*)\"", dom)
        assert found, "the page's load event never ran in Chromium"
        return int(found.group(1)), json.loads(html.unescape(found.group(2)))

    return check


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Path, str], np.ndarray]:
    """``shoot(page, "W,H")`` -> the page as headless Chromium draws it in a W x H window, an
    (H, W, 3) integer RGB array."""
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed")

    def shoot(page: Path, size: str) -> np.ndarray:
        shot = tmp_path / "shot.png"
        subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--screenshot={shot}",
                f"--window-size={size}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return np.asarray(Image.open(shot).convert("RGB")).astype(int)

    return shoot


def _save_pngs(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img[..., 0]).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    ds = load_dataset("synthetic", n_train_per_class=40, n_test_per_class=6, size=16)
    _save_pngs(root / "good", ds.train_images[ds.train_labels == 0])
    _save_pngs(root / "test" / "normal", ds.test_images[ds.test_labels == 0])
    _save_pngs(root / "test" / "anomalous", ds.test_images[ds.test_labels == 3])
    return {"root": root, "good": root / "good", "test": root / "test"}
