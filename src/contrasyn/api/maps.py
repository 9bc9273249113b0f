"""Anomaly maps: where in an image its anomaly score comes from, and overlays to look at them.

``occlusion_map`` (the default of ``Detector.anomaly_map``, every method): a square window of
``patch`` pixels slides over the model input with step ``stride``; each window in turn is
replaced by ``fill`` and the occluded image is scored again. The map at a pixel is the mean,
over the windows covering it, of

    anomaly_score(x) - anomaly_score(x with the window replaced)

in the anomaly score's own units: positive where hiding the region makes the image look more
normal (the region carries the anomaly), negative where hiding it makes the image look less
normal. It needs nothing but forward passes, so it works for every registered method (the
baselines included) and for any score; it costs one score per window per image (49 windows at
the defaults: 49x the cost of scoring the image). ``fill`` is ``blur`` (the default: the
image box-blurred over the window's size, so the window keeps its local colour but loses its
shapes), ``mean`` (the image's mean colour), ``black`` or ``grey`` (0.5).

``gradient_map`` (the CSI family with the ``feat`` score only): the magnitude of the gradient
of the anomaly score with respect to the input pixels (summed over channels, box-smoothed over
3x3 pixels): one forward and one backward pass per image.

Which to use was measured (``benchmarks/pointing_game.py``; the figures are in
``benchmarks/results/README.md``): a patch of an image of another class pasted into normal
test images, and how often the map's peak falls inside the pasted region. Both maps are as
coarse as the model input (32 x 32 pixels at the default size): they point at a region, they
do not outline a defect.

``overlay`` draws a map over its image (the map's positive part, scaled per image, in the
``inferno`` colour map) and ``map_panel`` puts the image and its overlay side by side, scaled
up for display; ``write_overlays`` writes one PNG per image, atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrasyn.errors import ConfigError

MAP_METHODS = ("occlusion", "gradient")
FILLS = ("blur", "mean", "black", "grey")
PANEL_SIZE = 128  # the smallest side an image is shown at in an overlay PNG
PANEL_GAP = 4


def default_window(size: int) -> tuple[int, int]:
    """The default occlusion window of a ``size``-pixel input: a quarter of the side, moved by
    an eighth (8 and 4 pixels at 32: 7 x 7 = 49 windows), whatever the size."""
    patch = max(2, size // 4)
    return patch, max(1, patch // 2)


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Top-left corners along one axis: every ``stride`` pixels, and the last window flush
    with the edge, so every pixel is covered."""
    if not 1 <= patch <= size:
        raise ConfigError(f"the occlusion patch must be 1..{size} pixels, got {patch}")
    if stride < 1:
        raise ConfigError(f"the occlusion stride must be >= 1 pixel, got {stride}")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _fill_images(images: Tensor, fill: str, patch: int) -> Tensor:
    """What a window is replaced by, per image, at full size (N, C, S, S)."""
    if fill == "blur":
        k = 2 * (patch // 2) + 1
        return F.avg_pool2d(images, k, stride=1, padding=k // 2, count_include_pad=False)
    if fill == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    if fill == "black":
        return torch.zeros_like(images)
    if fill == "grey":
        return torch.full_like(images, 0.5)
    raise ConfigError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")


def occlusion_map(
    anomaly_score: Callable[[Tensor], np.ndarray | Tensor],
    images: Tensor,
    patch: int,
    stride: int,
    fill: str = "blur",
    batch: int = 512,
) -> np.ndarray:
    """Occlusion maps (N, H, W) of float images (N, C, H, W) in [0, 1] (module docstring).

    ``anomaly_score`` scores a batch of model inputs (higher = more anomalous); it is called
    on at most ``batch`` images at a time (whole images' windows together)."""
    if images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ConfigError(f"occlusion needs square model input (N, C, S, S), got {images.shape}")
    n, _, size, _ = images.shape
    starts = window_starts(size, patch, stride)
    windows = [(r, c) for r in starts for c in starts]
    per_chunk = max(1, batch // (len(windows) + 1))
    fills = _fill_images(images, fill, patch)
    cover = torch.zeros(size, size)
    for r, c in windows:
        cover[r : r + patch, c : c + patch] += 1
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(0, n, per_chunk):
        x, f = images[i : i + per_chunk], fills[i : i + per_chunk]
        b = len(x)
        copies = x.repeat(len(windows) + 1, 1, 1, 1)  # window-major; the last block: x itself
        for w, (r, c) in enumerate(windows):
            rows = slice(w * b, (w + 1) * b)
            copies[rows, :, r : r + patch, c : c + patch] = f[:, :, r : r + patch, c : c + patch]
        scores = torch.as_tensor(np.asarray(anomaly_score(copies), dtype=np.float32))
        scores = scores.view(len(windows) + 1, b)
        drop = scores[-1][None] - scores[:-1]  # (W, b): how much hiding each window lowers it
        total = torch.zeros(b, size, size)
        for w, (r, c) in enumerate(windows):
            total[:, r : r + patch, c : c + patch] += drop[w][:, None, None]
        out[i : i + b] = (total / cover).numpy()
    return out


def feat_anomaly(model, scorer, images: Tensor, num_shifts: int) -> Tensor:
    """The ``feat`` anomaly score, differentiably: minus the mean over shifts of the cosine
    1-NN similarity of the penultimate features to the bank (``Scorer.score_samples``'s
    ``feat`` with the exact search, one deterministic pass)."""
    from contrasyn.methods.csi.augment import rotate_shifts

    b = len(images)
    views = rotate_shifts(images, num_shifts)
    memory = next(model.parameters())
    if views.device != memory.device:
        views = views.to(memory.device)
    h = model(views).h.float().view(num_shifts, b, -1).transpose(0, 1)  # (b, K, e)
    h = F.normalize(h, dim=2)
    bank = scorer.bank_h_.to(h.device)  # (M, K, e), normalised
    sims = torch.stack([(h[:, s] @ bank[:, s].T).amax(dim=1) for s in range(num_shifts)], 1)
    return -sims.mean(1)


def gradient_map(model, scorer, images: Tensor, num_shifts: int, batch: int = 64) -> np.ndarray:
    """|d anomaly score / d pixel| summed over channels and smoothed over 3 x 3 pixels
    (N, H, W), for the CSI family's ``feat`` score (``feat_anomaly``)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            score = feat_anomaly(model, scorer, x, num_shifts)
            (grad,) = torch.autograd.grad(score.sum(), x)
        g = grad.abs().sum(1, keepdim=True)
        out.append(F.avg_pool2d(g, 3, stride=1, padding=1, count_include_pad=False)[:, 0])
    return torch.cat(out).cpu().numpy().astype(np.float32)


# -- pictures ---------------------------------------------------------------------------------


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) or (H, W), C 1 or 3, as uint8 (H, W, 3)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def normalise_map(heat: np.ndarray) -> np.ndarray:
    """The map's positive part scaled to [0, 1] by its own maximum (0 where the map has no
    positive value, or is not finite)."""
    h = np.nan_to_num(np.asarray(heat, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    h = np.clip(h, 0, None)
    top = h.max()
    return h / top if top > 0 else h


def overlay(image: np.ndarray, heat: np.ndarray, size: int | None = None) -> np.ndarray:
    """``image`` (uint8 (H, W, C)) with ``heat`` (H, W) drawn over it in the ``inferno``
    colour map, opaque where the map is at its maximum and clear where it is <= 0; ``size``
    scales both up (nearest for the image, bilinear for the map). uint8 (size, size, 3)."""
    from matplotlib import colormaps
    from PIL import Image

    rgb = as_rgb(image)
    size = size or rgb.shape[0]
    base = np.asarray(Image.fromarray(rgb).resize((size, size), Image.NEAREST), dtype=np.float64)
    level = normalise_map(heat).astype(np.float32)
    level = np.asarray(Image.fromarray(level, mode="F").resize((size, size), Image.BILINEAR))
    level = np.clip(level, 0, 1)
    colour = colormaps["inferno"](level)[..., :3] * 255
    alpha = 0.75 * level[..., None]
    return np.round((1 - alpha) * base + alpha * colour).astype(np.uint8)


def map_panel(image: np.ndarray, heat: np.ndarray, size: int | None = None) -> np.ndarray:
    """The image and its overlay side by side, each ``size`` pixels square (default: at least
    ``PANEL_SIZE``, an integer multiple of the image's side), on white. uint8 (size, 2 x size
    + gap, 3)."""
    from PIL import Image

    rgb = as_rgb(image)
    side = rgb.shape[0]
    size = size or side * max(1, -(-PANEL_SIZE // side))
    left = np.asarray(Image.fromarray(rgb).resize((size, size), Image.NEAREST))
    panel = np.full((size, 2 * size + PANEL_GAP, 3), 255, dtype=np.uint8)
    panel[:, :size] = left
    panel[:, size + PANEL_GAP :] = overlay(rgb, heat, size)
    return panel


def save_png(path: Path, pixels: np.ndarray) -> None:
    """A uint8 image array to ``path`` as PNG, atomically."""
    from PIL import Image

    from contrasyn.checkpoint import atomic_write

    atomic_write(Path(path), lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"), ".png")


def overlay_names(paths: Sequence[Path | str] | None, n: int) -> list[str]:
    """File names for ``n`` overlay PNGs: ``0007-<stem>.png`` after the image's own name
    (numbered, so two images of the same name in different folders never collide), or
    ``0007.png`` when there are no paths."""
    if paths is None:
        return [f"{i:04d}.png" for i in range(n)]
    names = []
    for i, p in enumerate(paths):
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(p).stem)
        names.append(f"{i:04d}-{stem[:80]}.png")
    return names


def write_overlays(
    folder: Path, images: np.ndarray, maps: np.ndarray, names: Sequence[str]
) -> list[Path]:
    """One ``map_panel`` PNG per image into ``folder`` (created), each written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for image, heat, name in zip(images, maps, names, strict=True):
        path = folder / name
        save_png(path, map_panel(image, heat))
        written.append(path)
    return written


def to_uint8(images: Tensor) -> np.ndarray:
    """Model input (N, C, S, S) in [0, 1] as uint8 (N, S, S, C)."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
