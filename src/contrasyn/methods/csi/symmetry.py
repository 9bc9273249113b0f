"""Rotations that leave a class unchanged, found on its training images.

CSI's shifts assume that a turned normal image is not normal: F learns to tell the four
rotations apart, each turned copy of a training image is a negative of the others, and the
score asks whether an image looks upright. A class that a rotation maps onto itself (a
symmetric part seen from above, a 0 or an 8 turned by 180 degrees) breaks that: the shift
head cannot learn what is not there, the contrastive loss pushes apart copies that look
alike, and at scoring time a normal image looks as "turned" as an anomaly.

The test is in pixels, on the training images: for rotation k, the median distance of the
turned images to their nearest training image (itself included, unturned), over the median
distance of each image to its nearest *other* training image. Near or below 1, turned
images lie as close to the class as its own images do: the rotation is no shift for it.

Rotations form a group, so what is left out is a subgroup: the 180-degree turn (keep 0 and
90 degrees: two shifts, one from each coset {0, 180}, {90, 270}), or all four (one shift:
CSI without shifts). ``fitted_shifts`` gives the number of shifts to train and score with,
which ``rotate_shifts`` turns into the rotations 0, 90, ... degrees.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrasyn.methods.csi.score import nearest_distance, pixels

# The test compares medians over at most this many images (a seeded subsample): the ratio
# is stable well below it, and the search stays a fraction of a second.
MAX_IMAGES = 2000


def rotation_ratios(
    images: Tensor, seed: int = 0, max_images: int = MAX_IMAGES
) -> dict[int, float]:
    """For k = 1, 2, 3 (x 90 degrees): median nearest-neighbour pixel distance of the turned
    images to the images, over the median leave-one-out nearest-neighbour distance of the
    images. ``images`` (N, C, S, S), N >= 2; pixels average-pooled as the ``pix`` score's."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2] or len(images) < 2:
        raise ValueError(f"need >= 2 square images (N, C, S, S), got {tuple(images.shape)}")
    if len(images) > max_images:
        generator = torch.Generator().manual_seed(seed)
        images = images[torch.randperm(len(images), generator=generator)[:max_images]]
    flat = pixels(images)
    own = nearest_distance(flat, flat, others=True).median().item()
    out = {}
    for k in (1, 2, 3):
        turned = nearest_distance(pixels(torch.rot90(images, k, (2, 3))), flat).median().item()
        out[k] = turned / own if own > 0 else (0.0 if turned == 0 else float("inf"))
    return out


def fitted_shifts(ratios: dict[int, float], num_shifts: int, threshold: float | None) -> int:
    """How many of the rotations 0, 90, 180, 270 degrees stay shifts: ``num_shifts`` less
    those a symmetry of the class makes copies of one another. A rotation is a symmetry when
    its ratio is at most ``threshold`` (None: never); the symmetries kept are a subgroup:
    all three turns (1 shift), the 180-degree turn (2 shifts, 0 and 90 degrees), or none."""
    if threshold is None:
        return num_shifts
    symmetric = {k for k, r in ratios.items() if r <= threshold}
    if symmetric >= {1, 2, 3}:
        distinct = 1
    elif 2 in symmetric:
        distinct = 2
    else:
        distinct = 4
    return min(num_shifts, distinct)


def describe(ratios: dict[int, float], before: int, after: int, threshold: float) -> str:
    """One line for the user: which turns leave the training images unchanged, and what
    fit does about it."""
    turns = ", ".join(f"{90 * k} degrees {r:.2f}" for k, r in sorted(ratios.items()))
    kept = ", ".join(f"{90 * k}" for k in range(after))
    return (
        f"the training images look the same turned (nearest-neighbour distance ratio, "
        f"<= {threshold:g} is a symmetry: {turns}): training and scoring with {after} of "
        f"{before} rotation shifts ({kept} degrees); --set train.shift_symmetry=null keeps all"
    )
