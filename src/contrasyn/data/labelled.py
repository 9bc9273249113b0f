"""Labelled image folders for evaluation: anomalib's ``Folder`` layout.

A root folder holds one folder of normal images and one or more folders of anomalous
images, each anomalous folder a kind of anomaly (its name is reported with its own AUROC)::

    DATA/good/...           normal images (the normal folder)
    DATA/crack/...          anomalous images, one folder per kind
    DATA/scratch/...
    DATA/ground_truth/...   optional masks: not used (the scores are per image)

Which folder is which:

- the normal folder is ``normal_dir`` when given (a name below the root, or a path), else
  the first of ``good``, ``normal``, ``ok`` that exists below the root;
- the anomalous folders are ``abnormal_dirs`` when given, else every other folder directly
  below the root except mask folders (``mask_dir`` when given, and any folder named
  ``ground_truth``, ``masks``, ``mask`` or ``gt``);
- an MVTec AD category folder (``train/``, ``test/good``, ``test/<defect>``,
  ``ground_truth/``) works as it is: when the root has no normal folder but has ``test/``,
  ``test/`` is the root.

Images are found recursively below each folder (the extensions of ``find_images``); images
lying directly in the root belong to no folder and are left out with a warning. A layout that
cannot be read this way (no normal folder, no anomalous folder, a folder without images, the
same or nested folders named twice) is one ``DataError`` saying what was found and what to
pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contrasyn.data.folder import _loose_images, _subfolders, find_images
from contrasyn.errors import DataError

NORMAL_NAMES = ("good", "normal", "ok")
MASK_NAMES = ("ground_truth", "masks", "mask", "gt")


@dataclass
class LabelledFolder:
    """Image paths with labels: ``is_anomaly`` 1 for anomalies, and ``groups`` the name of
    the folder each image came from (the normal folder's name for normal images)."""

    root: Path
    normal: Path
    anomalous: dict[str, Path]
    paths: list[Path]
    is_anomaly: np.ndarray
    groups: list[str]

    @property
    def normal_group(self) -> str:
        return self.normal.name


def _resolve(root: Path, name: str | Path, what: str) -> Path:
    path = Path(name).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_dir():
        raise DataError(f"{what} {path}: no such folder")
    return path


def _overlap(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def _describe(root: Path) -> str:
    names = [p.name for p in _subfolders(root)]
    return f"found {', '.join(names)}" if names else "found no folders"


def read_labelled_folder(
    root: str | Path,
    normal_dir: str | Path | None = None,
    abnormal_dirs: list[str | Path] | None = None,
    mask_dir: str | Path | None = None,
) -> LabelledFolder:
    """The labelled images below ``root`` (module docstring); ``DataError`` on a bad layout."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(
            f"{root}: not a folder; evaluation needs a folder holding a normal folder (good/) "
            "and one or more anomalous folders"
        )
    if (
        normal_dir is None
        and not any((root / n).is_dir() for n in NORMAL_NAMES)
        and (root / "test").is_dir()
    ):
        root = root / "test"  # an MVTec AD category: train/, test/good, test/<defect>
    if normal_dir is not None:
        normal = _resolve(root, normal_dir, "the normal folder")
    else:
        found = [root / n for n in NORMAL_NAMES if (root / n).is_dir()]
        if not found:
            raise DataError(
                f"{root}: no normal folder: expected a folder named "
                f"{' or '.join(NORMAL_NAMES)} below it ({_describe(root)}); name it with "
                "--normal-dir (normal_dir=)"
            )
        normal = found[0]
    masks = {(root / m).resolve() for m in MASK_NAMES}
    if mask_dir is not None:
        masks.add(_resolve(root, mask_dir, "the mask folder").resolve())
    if abnormal_dirs:
        anomalous = [_resolve(root, d, "the anomalous folder") for d in abnormal_dirs]
    else:
        anomalous = [
            p for p in _subfolders(root) if not _overlap(p, normal) and p.resolve() not in masks
        ]
        if not anomalous:
            raise DataError(
                f"{root}: no anomalous folder besides the normal folder {normal.name}/ "
                f"({_describe(root)}): put anomalous images in one or more folders beside it "
                "(one per kind of anomaly), or name them with --abnormal-dir (abnormal_dirs=)"
            )
    folders = [normal, *anomalous]
    for i, a in enumerate(folders):
        for b in folders[i + 1 :]:
            if _overlap(a, b):
                raise DataError(
                    f"{a} and {b} overlap (one is the other, or inside it): each image must "
                    "belong to one folder"
                )
        if any(_overlap(a, m) for m in masks if m.is_dir()):
            raise DataError(f"{a} is a mask folder (or holds one): masks are not scored")
    names = [p.name for p in anomalous]
    if len(set(names)) != len(names):
        raise DataError(f"two anomalous folders share a name: {', '.join(map(str, anomalous))}")
    if normal.name in names:
        raise DataError(f"an anomalous folder has the normal folder's name {normal.name!r}")
    paths, labels, groups = [], [], []
    for label, folder in ((0, normal), *((1, p) for p in anomalous)):
        try:
            images = find_images(folder)
        except DataError as e:
            kind = "normal" if label == 0 else "anomalous"
            raise DataError(f"the {kind} folder: {e}") from e
        paths.extend(images)
        labels.extend([label] * len(images))
        groups.extend([folder.name] * len(images))
    loose = _loose_images(root)
    if loose:
        warnings.warn(
            f"{len(loose)} image(s) directly in {root} belong to no folder and are not used "
            f"(e.g. {loose[0].name})",
            stacklevel=2,
        )
    return LabelledFolder(
        root=root,
        normal=normal,
        anomalous={p.name: p for p in anomalous},
        paths=paths,
        is_anomaly=np.asarray(labels, dtype=np.int64),
        groups=groups,
    )


def labelled_images(
    read: Callable[[Any], tuple[Any, list[Path] | None]],
    X: Any,
    y: Any = None,
    groups: list[str] | None = None,
    normal_dir: str | Path | None = None,
    abnormal_dirs: list[str | Path] | None = None,
    mask_dir: str | Path | None = None,
) -> tuple[Any, np.ndarray, list[str] | None, list[str] | None, str, str | None]:
    """The images, labels (1 anomalous), groups, paths, normal group and data name of a
    labelled evaluation: a folder in anomalib's ``Folder`` layout (``y`` None;
    ``contrasyn.data.labelled``) or any images with ``y``. ``read`` turns an input into model
    images and the paths it read (the detector's own reader)."""
    if y is None:
        if not isinstance(X, str | Path):
            raise DataError(
                "evaluate needs labels: pass y (1 anomalous, 0 normal) with the images, or "
                "a folder holding a normal folder (good/) and anomalous folders"
            )
        layout = read_labelled_folder(X, normal_dir, abnormal_dirs, mask_dir)
        images, kept = read(list(layout.paths))
        where = {p: i for i, p in enumerate(layout.paths)}
        index = [where[p] for p in kept]
        names = [layout.groups[i] for i in index]
        paths = [str(p) for p in kept]
        return images, layout.is_anomaly[index], names, paths, layout.normal_group, str(X)
    images, found = read(X)
    labels = np.asarray(y)
    if found is not None and len(found) != len(labels):
        raise DataError(
            f"{len(labels)} labels for {len(found)} readable images (skip_bad left "
            "some out): pass images and labels that match"
        )
    paths = None if found is None else [str(p) for p in found]
    return images, labels, groups, paths, "normal", str(X) if isinstance(X, str | Path) else None
