"""The one-class protocol: which images train, which validate, which test, and their labels.

A task names the normal class(es). Training uses only their train-split images; testing uses
the whole test split with every other class anomalous. An optional validation set is carved
from the *train* split only (held-out normal images plus other classes' train images as
anomalies) so that model selection never touches the test split.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from contrasyn.data.base import ImageDataset
from contrasyn.errors import DataError


@dataclass
class OneClassTask:
    """Images are uint8 (N, H, W, C) as stored; ``*_is_anomaly`` is 1 for anomalies.
    ``test_index`` locates a subsampled test set in the dataset's test split (None: the
    whole split, in order); ``train_index`` a subsampled training set among the class's
    training images left after the validation split (None: all of them)."""

    dataset: str
    normal_classes: tuple[int, ...]
    class_names: list[str]
    train_images: np.ndarray
    test_images: np.ndarray
    test_is_anomaly: np.ndarray
    test_labels: np.ndarray
    val_images: np.ndarray | None = None
    val_is_anomaly: np.ndarray | None = None
    test_index: np.ndarray | None = None
    train_index: np.ndarray | None = None

    @property
    def name(self) -> str:
        return "+".join(self.class_names[c] for c in self.normal_classes)


def resolve_classes(ds: ImageDataset, normal: int | str | Sequence[int | str]) -> tuple[int, ...]:
    """Class indices from indices or names; errors name the dataset and the valid range."""
    items = [normal] if isinstance(normal, Integral | str) else list(normal)
    out = []
    for item in items:
        if isinstance(item, str) and not item.isdigit():
            if item not in ds.class_names:
                raise DataError(f"{ds.name}: no class named {item!r}; classes: {ds.class_names}")
            out.append(ds.class_names.index(item))
        else:
            idx = int(item)
            if not 0 <= idx < ds.num_classes:
                raise DataError(f"{ds.name}: class {idx} out of range [0, {ds.num_classes})")
            out.append(idx)
    if not out:
        raise DataError(f"{ds.name}: no normal class given")
    return tuple(sorted(set(out)))


def one_class_task(
    ds: ImageDataset,
    normal: int | str | Sequence[int | str],
    val_normal: int = 0,
    val_seed: int = 0,
) -> OneClassTask:
    """Build the task; ``val_normal > 0`` holds out that many normal train images for validation,
    paired with as many anomalies drawn from the other classes' train images."""
    classes = resolve_classes(ds, normal)
    is_normal_train = np.isin(ds.train_labels, classes)
    normal_idx = np.flatnonzero(is_normal_train)
    if len(normal_idx) == 0:
        raise DataError(f"{ds.name}: the train split has no images of classes {classes}")
    val_images = val_is_anomaly = None
    if val_normal > 0:
        if val_normal >= len(normal_idx):
            raise DataError(
                f"{ds.name}: cannot hold out {val_normal} of {len(normal_idx)} normal train images"
            )
        rng = np.random.default_rng(val_seed)
        normal_idx = rng.permutation(normal_idx)
        val_norm, normal_idx = normal_idx[:val_normal], np.sort(normal_idx[val_normal:])
        others = np.flatnonzero(~is_normal_train)
        val_anom = rng.choice(others, size=min(val_normal, len(others)), replace=False)
        val_images = np.concatenate([ds.train_images[val_norm], ds.train_images[val_anom]])
        val_is_anomaly = np.r_[np.zeros(len(val_norm), np.int64), np.ones(len(val_anom), np.int64)]
    test_is_anomaly = (~np.isin(ds.test_labels, classes)).astype(np.int64)
    if test_is_anomaly.all() or not test_is_anomaly.any():
        raise DataError(f"{ds.name}: the test split needs both normal and anomalous images")
    return OneClassTask(
        dataset=ds.name,
        normal_classes=classes,
        class_names=ds.class_names,
        train_images=ds.train_images[normal_idx],
        test_images=ds.test_images,
        test_is_anomaly=test_is_anomaly,
        test_labels=ds.test_labels,
        val_images=val_images,
        val_is_anomaly=val_is_anomaly,
    )


def subsample_test(task: OneClassTask, n: int, seed: int = 0) -> OneClassTask:
    """The task with a seeded subsample of ``n`` test images, stratified by class so that the
    normal/anomalous mix is the whole split's. For quick runs (the demo); reported
    benchmarks score the whole split."""
    labels = task.test_labels
    if n >= len(labels):
        return task
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * n / len(labels)
    quota = np.floor(share).astype(int)
    quota[np.argsort(quota - share, kind="stable")[: n - quota.sum()]] += 1
    rng = np.random.default_rng(seed)
    keep = np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(labels == c), q, replace=False)
                for c, q in zip(classes, quota, strict=True)
            ]
        )
    )
    is_anomaly = task.test_is_anomaly[keep]
    if is_anomaly.all() or not is_anomaly.any():
        raise DataError(
            f"{task.dataset}: {n} test images are too few to hold both normal and anomalous ones"
        )
    return dataclasses.replace(
        task,
        test_images=task.test_images[keep],
        test_is_anomaly=is_anomaly,
        test_labels=labels[keep],
        test_index=keep,
    )


def subsample_train(task: OneClassTask, n: int, seed: int) -> OneClassTask:
    """The task trained on a seeded subset of ``n`` of its training images (the few-images
    regime: a practitioner with 50 good parts); the validation and test splits are unchanged.
    Each seed draws its own subset, so seeds replicate the choice of images as well as the
    training; every method of one seed gets the same subset, so they pair; and one seed's
    subsets are nested (its 50 images are among its 200), so sizes differ only in images."""
    available = len(task.train_images)
    if not 1 <= n <= available:
        raise DataError(
            f"{task.dataset} {task.name}: cannot train on {n} images; the class has "
            f"{available} training images besides the validation split"
        )
    keep = np.sort(np.random.default_rng(seed).permutation(available)[:n])
    return dataclasses.replace(task, train_images=task.train_images[keep], train_index=keep)


def index_sha(index: np.ndarray) -> str:
    """A short hash of a subset's indices, recorded in result rows to name the subset."""
    return hashlib.sha1(np.asarray(index, dtype=np.int64).tobytes()).hexdigest()[:12]
