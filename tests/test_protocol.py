"""The one-class protocol on a tiny hand-made dataset whose images carry their own ids."""

from __future__ import annotations

import numpy as np
import pytest

from contrasyn.data.base import ImageDataset
from contrasyn.data.protocol import one_class_task, resolve_classes, subsample_test
from contrasyn.errors import DataError

TRAIN_LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1, 0, 2, 0])  # six of class 0
TEST_LABELS = np.array([2, 0, 1, 1, 0, 2, 0])


def _ids(images: np.ndarray) -> list[int]:
    """Every image is filled with its id: train ids 0..11, test ids 100..106."""
    return [int(im[0, 0, 0]) for im in images]


def _dataset() -> ImageDataset:
    def fill(ids: np.ndarray) -> np.ndarray:
        return np.broadcast_to(ids[:, None, None, None], (len(ids), 4, 4, 1)).astype(np.uint8)

    return ImageDataset(
        name="toy",
        train_images=fill(np.arange(len(TRAIN_LABELS))),
        train_labels=TRAIN_LABELS,
        test_images=fill(100 + np.arange(len(TEST_LABELS))),
        test_labels=TEST_LABELS,
        class_names=["a", "b", "c"],
    )


def test_task_counts_and_labels() -> None:
    task = one_class_task(_dataset(), 0)
    assert task.dataset == "toy" and task.normal_classes == (0,) and task.name == "a"
    assert _ids(task.train_images) == [0, 3, 6, 7, 9, 11]  # only class 0, in order
    assert _ids(task.test_images) == list(range(100, 107))  # the whole test split
    assert task.test_labels.tolist() == TEST_LABELS.tolist()
    assert task.test_is_anomaly.tolist() == [1, 0, 1, 1, 0, 1, 0]
    assert task.test_is_anomaly.dtype == np.int64
    assert task.val_images is None and task.val_is_anomaly is None
    assert task.class_names == ["a", "b", "c"]


def test_other_normal_class() -> None:
    task = one_class_task(_dataset(), 2)
    assert _ids(task.train_images) == [2, 5, 10]
    assert task.test_is_anomaly.tolist() == [0, 1, 1, 1, 1, 0, 1]


@pytest.mark.parametrize("val_seed", [0, 1, 2])
def test_validation_comes_from_the_train_split_only(val_seed: int) -> None:
    task = one_class_task(_dataset(), 0, val_normal=2, val_seed=val_seed)
    val_ids, train_ids = _ids(task.val_images), _ids(task.train_images)
    assert len(val_ids) == 4 and task.val_is_anomaly.tolist() == [0, 0, 1, 1]
    assert all(i < 100 for i in val_ids)  # no test image
    normal_val, anomal_val = val_ids[:2], val_ids[2:]
    assert all(TRAIN_LABELS[i] == 0 for i in normal_val)
    assert all(TRAIN_LABELS[i] != 0 for i in anomal_val)
    assert len(set(val_ids)) == 4
    # held-out normal images are removed from training; the rest of class 0 stays
    assert not set(normal_val) & set(train_ids)
    assert sorted(train_ids + normal_val) == [0, 3, 6, 7, 9, 11]
    assert train_ids == sorted(train_ids)
    # the test split is unchanged by validation
    assert _ids(task.test_images) == list(range(100, 107))


def test_validation_is_seeded() -> None:
    a = one_class_task(_dataset(), 0, val_normal=3, val_seed=5)
    b = one_class_task(_dataset(), 0, val_normal=3, val_seed=5)
    assert _ids(a.val_images) == _ids(b.val_images)
    seeds = {
        tuple(_ids(one_class_task(_dataset(), 0, val_normal=3, val_seed=s).val_images))
        for s in range(8)
    }
    assert len(seeds) > 1


def test_validation_anomalies_limited_by_other_classes() -> None:
    # class 2 has 3 train images; asking 2 normal + 2 anomalies from the 9 others works
    task = one_class_task(_dataset(), 2, val_normal=2)
    assert task.val_is_anomaly.tolist() == [0, 0, 1, 1]
    assert len(task.train_images) == 1


@pytest.mark.parametrize("val_normal", [6, 7, 100])
def test_cannot_hold_out_every_normal_image(val_normal: int) -> None:
    with pytest.raises(DataError, match="hold out"):
        one_class_task(_dataset(), 0, val_normal=val_normal)


def test_class_names_and_lists() -> None:
    ds = _dataset()
    assert one_class_task(ds, "b").normal_classes == (1,)
    assert resolve_classes(ds, "2") == (2,)
    assert resolve_classes(ds, ["c", 0, "a"]) == (0, 2)
    task = one_class_task(ds, [0, "b"])
    assert task.name == "a+b"
    assert _ids(task.train_images) == [0, 1, 3, 4, 6, 7, 8, 9, 11]
    assert task.test_is_anomaly.tolist() == [1, 0, 0, 0, 0, 1, 0]


@pytest.mark.parametrize("bad", [3, -1, 10, "3", "d", "A", []])
def test_bad_classes(bad) -> None:
    with pytest.raises(DataError, match="toy"):
        one_class_task(_dataset(), bad)


def test_class_without_train_images_or_without_anomalies() -> None:
    ds = _dataset()
    no_train = ImageDataset(
        "toy",
        ds.train_images[TRAIN_LABELS != 1],
        TRAIN_LABELS[TRAIN_LABELS != 1],
        ds.test_images,
        TEST_LABELS,
        ["a", "b", "c"],
    )
    with pytest.raises(DataError, match="no images"):
        one_class_task(no_train, 1)
    only_zero = ImageDataset(
        "toy",
        ds.train_images,
        TRAIN_LABELS,
        ds.test_images[[1, 4]],
        TEST_LABELS[[1, 4]],
        ["a", "b", "c"],
    )
    with pytest.raises(DataError, match="both"):
        one_class_task(only_zero, 0)


def test_numpy_integer_class() -> None:
    assert one_class_task(_dataset(), np.int64(2)).normal_classes == (2,)


def test_test_subsample_is_stratified_seeded_and_located() -> None:
    labels = np.repeat([0, 1, 2, 3], [100, 300, 500, 100])  # 1,000 test images
    ds = ImageDataset(
        name="toy",
        train_images=np.zeros((4, 4, 4, 1), np.uint8),
        train_labels=np.array([0, 1, 2, 3]),
        test_images=(np.arange(1000) % 256).astype(np.uint8)[:, None, None, None],
        test_labels=labels,
        class_names=["a", "b", "c", "d"],
    )
    task = one_class_task(ds, 0)
    sub = subsample_test(task, 101)
    # shares 10.1 / 30.3 / 50.5 / 10.1: floors 10/30/50/10, the one left over goes to
    # the largest remainder (class 2's 0.5)
    assert np.bincount(sub.test_labels).tolist() == [10, 30, 51, 10]
    assert len(sub.test_index) == 101 and np.all(np.diff(sub.test_index) > 0)
    assert np.array_equal(sub.test_labels, labels[sub.test_index])
    assert np.array_equal(sub.test_images, ds.test_images[sub.test_index])
    assert np.array_equal(sub.test_is_anomaly, task.test_is_anomaly[sub.test_index])
    assert np.array_equal(subsample_test(task, 101).test_index, sub.test_index)  # seeded
    assert not np.array_equal(subsample_test(task, 101, seed=1).test_index, sub.test_index)
    assert subsample_test(task, 1000) is task and task.test_index is None
    with pytest.raises(DataError, match="too few"):
        subsample_test(task, 3)  # 0.3 normal images round to none
