"""ImageNet-30 (Hendrycks et al. 2019): 30 ImageNet classes, 39,000 train / 3,000 test images.

It cannot be downloaded by this library; unpack the two archives so that ``root`` holds
``train/<class>/`` and ``test/<class>/`` (the archives' own names ``one_class_train/`` and
``one_class_test/`` are accepted too). Images are decoded like the ``folder`` dataset
(``contrasyn.data.folder``), always as RGB.
"""

from __future__ import annotations

from pathlib import Path

from contrasyn.data.base import ImageDataset, register
from contrasyn.data.download import default_cache_dir
from contrasyn.data.folder import dataset_from_files, split_layout_files
from contrasyn.errors import DataError

_SPLIT_NAMES = (("train", "test"), ("one_class_train", "one_class_test"))


@register("imagenet30")
def imagenet30(
    root: str | Path | None = None, size: int = 64, resize: str = "resize", skip_bad: bool = False
) -> ImageDataset:
    """Load ImageNet-30 as uint8 RGB images (N, size, size, 3).

    ``size`` defaults to 64 to keep memory modest (39,000 x 64 x 64 x 3 = 479 MB); the
    paper trains at 224. ``resize`` and ``skip_bad`` are as for ``folder``. Train and test
    must hold the same class folders. Without ``root``: ``default_cache_dir()/imagenet30``.
    """
    base = Path(root).expanduser() if root is not None else default_cache_dir() / "imagenet30"
    for train_name, test_name in _SPLIT_NAMES:
        train_dir, test_dir = base / train_name, base / test_name
        if train_dir.is_dir() and test_dir.is_dir():
            files, class_names = split_layout_files(train_dir, test_dir, same_classes=True)
            return dataset_from_files("imagenet30", files, class_names, size, 3, resize, skip_bad)
    raise DataError(
        f"imagenet30: expected {base}/train/<class>/ and {base}/test/<class>/ (or "
        f"one_class_train/ and one_class_test/); ImageNet-30 is not downloadable by "
        f"contrasyn: get it from github.com/hendrycks/ss-ood and pass root=<that folder>"
    )
