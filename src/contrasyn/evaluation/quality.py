"""Sample quality of the generator: Fréchet distances and image grids (the paper's Figure 2).

Two feature spaces:
- ``fd-rand`` (the default, always available): the Fréchet distance between the penultimate
  features (128-d) of a fixed, randomly initialised CIFAR ResNet-18 at width 16 (seed 0, eval
  mode). It needs no download and is the same network in every run, so runs are comparable
  with each other; it is *not* FID and its values are not comparable to published FIDs.
- ``fid``: the standard Inception FID features (2048-d pool features of Inception-v3 at
  299x299), when the user has torchvision and the ImageNet Inception-v3 weights on disk
  (torchvision's ``inception_v3_google-0cc3c7bd.pth``, or a ``.safetensors`` of that state
  dict). Put the file at ``~/.cache/contrasyn/inception_v3_google-0cc3c7bd.pth`` or pass its
  path (``INCEPTION_PATH`` below, ``--inception`` on the command line). These are
  torchvision's weights, not the TF-FID graph, so values are close to but not exactly the
  published TF-FID numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from contrasyn.checkpoint import atomic_write
from contrasyn.errors import CheckpointError, ConfigError
from contrasyn.methods.csi.adversarial import sample
from contrasyn.methods.csi.nets import ResNet18

INCEPTION_PATH = Path(
    os.environ.get(
        "CONTRASYN_INCEPTION",
        Path.home() / ".cache" / "contrasyn" / "inception_v3_google-0cc3c7bd.pth",
    )
)
FEATURE_SPACES = ("fd-rand", "fid")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two feature sets (n, d).

    tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix S_a^(1/2) S_b S_a^(1/2) (same spectrum), in float64, so no complex
    ``sqrtm`` results need patching.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (n >= 2, d) feature sets, got {a.shape} and {b.shape}")
    mu = a.mean(0) - b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace = np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(cross, 0, None)).sum()
    return float(mu @ mu + trace)


class RandomFeatures(nn.Module):
    """The ``fd-rand`` feature space: a seed-0 random CIFAR ResNet-18 (width 16), eval mode.

    Its initialisation draws from its own seeded RNG, so the global RNG is left as it was and
    the network is the same in every process."""

    name = "fd-rand"

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.net = ResNet18(width=16, in_channels=3)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(_three_channels(x))  # ResNet18 normalises [0, 1] inputs itself


class InceptionFeatures(nn.Module):
    """The FID feature space: Inception-v3 pool features (2048-d) at 299x299."""

    name = "fid"

    def __init__(self, weights: str | Path = INCEPTION_PATH) -> None:
        super().__init__()
        weights = Path(weights)
        try:
            from torchvision.models import inception_v3
        except (ImportError, RuntimeError) as e:  # missing, or built for another torch
            raise ConfigError(
                f"FID needs a torchvision built for this torch ({e}); "
                "pip install 'contrasyn[fid]', or use fd-rand"
            ) from e
        if not weights.is_file():
            raise ConfigError(
                f"{weights}: Inception-v3 weights not found; put torchvision's "
                "inception_v3_google-0cc3c7bd.pth there (or pass its path), or use fd-rand"
            )
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            try:  # weights_only: tensors only, never arbitrary unpickling
                state = torch.load(weights, map_location="cpu", weights_only=True)
            except Exception as e:
                raise CheckpointError(f"{weights}: not a readable weights file ({e})") from e
        self.net = inception_v3(weights=None, aux_logits=False, init_weights=False)
        self.net.fc = nn.Identity()
        state = {k: v for k, v in state.items() if not k.startswith(("AuxLogits.", "fc."))}
        try:
            self.net.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{weights}: not Inception-v3 weights ({e})") from e
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(_three_channels(x), size=(299, 299), mode="bilinear")
        return self.net((x - self.mean) / self.std)


def _three_channels(x: Tensor) -> Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def feature_space(name: str = "fd-rand", inception: str | Path | None = None) -> nn.Module:
    if name == "fd-rand":
        return RandomFeatures()
    if name == "fid":
        return InceptionFeatures(inception or INCEPTION_PATH)
    raise ConfigError(f"unknown feature space {name!r}; known: {', '.join(FEATURE_SPACES)}")


@torch.no_grad()
def features(space: nn.Module, images: Tensor, batch_size: int = 200) -> np.ndarray:
    device = next(space.parameters()).device
    out = [
        space(images[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy()


def sample_distance(
    generator: nn.Module, real: Tensor, space: nn.Module, seed: int = 0
) -> tuple[float, float]:
    """G's Fréchet distance to the real images and its floor, on equal footing.

    ``real`` is split (seeded) into two disjoint halves A and B. Returns the distance of
    |A| samples G(h) to B, and the distance of A to B: what two samples of real images of
    the class are apart at this size (the estimate's own bias and noise). A generator that
    matched the class would score about the floor; the ratio says how far it is from that."""
    half = len(real) // 2
    if half < 2:
        raise ValueError(f"need at least 4 real images (a distance and its floor), got {len(real)}")
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    a, b = real[perm[:half]], real[perm[half : 2 * half]]
    target = features(space, b)
    fake = sample(generator, half, seed)
    return (
        frechet_distance(features(space, fake), target),
        frechet_distance(features(space, a), target),
    )


def save_grid(rows: list[Tensor], path: str | Path, pad: int = 2) -> Path:
    """Save rows of images (each (n, C, H, W) in [0, 1], same n) as one PNG grid."""
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError("save_grid needs rows with the same number of images")
    _, c, h, w = rows[0].shape
    n = len(rows[0])
    canvas = torch.ones(c, len(rows) * (h + pad) + pad, n * (w + pad) + pad)
    for i, row in enumerate(rows):
        for j, img in enumerate(row.detach().float().cpu().clamp(0, 1)):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, top : top + h, left : left + w] = img
    pixels = (canvas * 255).round().byte().permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels[..., 0] if c == 1 else pixels)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), suffix=".png")
    return path


def nearest_rows(queries: Tensor, bank: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """For each query image, the pixel (L2) distance to its nearest image in ``bank`` and
    that image's index; images (n, C, H, W) of one size."""
    flat = bank.reshape(len(bank), -1).float()
    dists, index = [], []
    for chunk in queries.split(batch_size):
        d = torch.cdist(chunk.reshape(len(chunk), -1).float(), flat)
        best = d.min(dim=1)
        dists.append(best.values)
        index.append(best.indices)
    return torch.cat(dists), torch.cat(index)


def memorisation_ratio(samples: Tensor, train: Tensor, fresh: Tensor) -> float:
    """Whether a generator copies its training images: the median distance of its samples
    to their nearest training image over the same median for ``fresh`` real images of the
    class that were not trained on. About 1: samples are as new as an unseen real image; near
    0: they are near-copies of training images (memorised, the risk with 50 of them)."""
    from contrasyn.methods.csi.score import nearest_distance

    bank = train.flatten(1).float()
    sampled, real = (
        nearest_distance(x.flatten(1).float(), bank).median() for x in (samples, fresh)
    )
    return float(sampled / real.clamp_min(1e-12))
