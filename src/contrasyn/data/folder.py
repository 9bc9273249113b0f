"""Datasets from a user's folder of image files, and the image decoding they share.

Layouts accepted by the ``folder`` loader:

(a) ``root/train/<class>/...`` and ``root/test/<class>/...``: the split is given. Classes
    are the union of the class folders of both splits, so an MVTec-style tree
    (``train/good``, ``test/good``, ``test/<defect>``) works.
(b) ``root/<class>/...``: no split on disk; a seeded stratified split is made (below).
(c) ``root/*.png`` (images directly in root): one class named after the folder, split the
    same way.

Images are found recursively below each class folder. Extensions (case-insensitive): png,
jpg, jpeg, bmp, tif, tiff, webp. Hidden files and folders (name starting with ".", e.g.
macOS ``._x.jpg`` resource forks) are ignored; symbolic links to folders below a class
folder are not followed; a symbolic link to an image that no longer exists (a dangling
link) is skipped with one warning giving the count.

Split (layouts b and c): for each class separately, ``round(n * test_fraction)`` of its
``n`` files (at most ``n - 1``, so every class keeps a training image) go to test, chosen
by a permutation drawn from ``numpy.random.default_rng(seed)``; classes are processed in
name order and files in sorted path order, so the split depends only on the file names,
``test_fraction`` (default 0.2) and ``seed`` (default 0) -- not on which files decode.

Pixel policies (``load_images``):

* Modes: greyscale modes (1, L, LA, I;16*, I) give one plane; everything else (P, RGB,
  RGBA, CMYK, YCbCr, ...) is converted to RGB. 32-bit float images (mode F) are refused:
  they have no defined intensity range.
* Alpha (LA, RGBA, PA, palette with transparency) is composited onto black:
  ``value * alpha / 255``. What is invisible in the file becomes background, so
  transparent areas do not carry whatever colour the encoder left there.
* 16-bit (I;16, and I as PIL opens 16-bit PNGs) is scaled linearly from the full 16-bit
  range: ``round(v * 255 / 65535)``, not clipped at 255 and not contrast-stretched per
  image. Values of a mode-I image outside 0..65535 are clipped to it.
* Size: ``resize="resize"`` (default) squashes to size x size with PIL's bilinear filter
  (antialiased when shrinking); ``"fit"`` scales the shorter side to ``size`` and takes the
  centre size x size crop (keeps aspect ratio); ``"none"`` keeps native sizes, which must
  then all be equal.
* Large images are brought down before any conversion: a JPEG is decoded at 1/2, 1/4 or
  1/8 scale by its DCT (``Image.draft``) while that stays at least ``REDUCING_GAP`` times the
  target size, and any image still at least ``REDUCING_GAP`` x 2 times the target is
  box-averaged by an integer factor (``Image.reduce``, alpha premultiplied) before the mode
  conversions and the final bilinear resize. Memory per image is then bounded by the decoded
  file as Pillow holds it (W x H x bytes per pixel: 1 grey, 4 RGB and RGBA (Pillow keeps an
  RGB pixel in 4 bytes), 2 for 16-bit; a JPEG's at its reduced scale) plus, for palette,
  1-bit and 16-bit files, one converted copy (at most 4 bytes per pixel): measured
  (``benchmarks/large_image_memory.py``), a 12000 x 12000 grey PNG costs 145 MB, an RGB PNG
  577 MB, an RGB JPEG of that size 10 MB. Pillow refuses images over
  2 x ``Image.MAX_IMAGE_PIXELS`` (179 million) pixels as decompression bombs, which caps the
  worst case (about 1.4 GB, 16-bit).
* Pillow's warnings about a file (e.g. a large image, odd EXIF data) are collected and
  given as one ``contrasyn`` warning naming the files.
* Channels: ``"auto"`` gives 1 channel if every image is in a greyscale mode, else 3
  (greyscale images replicated); ``1`` converts colour with BT.601 luma
  (0.299 R + 0.587 G + 0.114 B); ``3`` replicates grey.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from contrasyn.data.base import ImageDataset, register
from contrasyn.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
RESIZE_POLICIES = ("resize", "fit", "none")

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_GREY_MODES = ("1", "L", "LA", "La", *_SIXTEEN_BIT_MODES)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# Errors PIL raises for a file that is not a decodable image: UnidentifiedImageError and
# "image file is truncated" are OSError; broken chunks raise SyntaxError, ValueError or
# EOFError; huge images raise DecompressionBombError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class _BadImage(Exception):
    """A single file cannot be used; carries the reason for the user."""


# ----------------------------------------------------------------------------- discovery


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _raise_walk_error(e: OSError) -> None:
    raise DataError(f"{e.filename}: cannot list folder ({e.strerror})")


def _walk_images(folder: Path, dangling: list[Path] | None = None) -> list[Path]:
    """All image files below ``folder``, sorted; hidden entries skipped, and symbolic links
    to nothing left out (appended to ``dangling`` when given)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise_walk_error):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            if not _is_image(path):
                continue
            if path.is_symlink() and not path.exists():
                if dangling is not None:
                    dangling.append(path)
                continue
            found.append(path)
    return sorted(found)


def _warn_dangling(dangling: list[Path]) -> None:
    if dangling:
        shown = ", ".join(map(str, sorted(dangling)[:3])) + (", ..." if len(dangling) > 3 else "")
        warnings.warn(
            f"skipped {len(dangling)} symbolic link(s) to missing files: {shown}", stacklevel=3
        )


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        raise DataError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")


def _no_images(folder: Path) -> DataError:
    exts = ", ".join(IMAGE_EXTENSIONS)
    return DataError(f"{folder}: no images found (looked for {exts}, any case, recursively)")


def find_images(folder: str | Path) -> list[Path]:
    """All image files below ``folder`` (recursive), sorted by path.

    Raises ``DataError`` if the folder is missing or holds no image files.
    """
    folder = Path(folder).expanduser()
    _check_folder(folder)
    dangling: list[Path] = []
    images = _walk_images(folder, dangling)
    _warn_dangling(dangling)
    if not images:
        raise _no_images(folder)
    return images


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise DataError(f"{folder}: cannot list folder ({e.strerror})") from e


def _subfolders(folder: Path) -> list[Path]:
    return [p for p in _entries(folder) if p.is_dir() and not p.name.startswith(".")]


def _loose_images(folder: Path) -> list[Path]:
    return [p for p in _entries(folder) if p.is_file() and _is_image(p)]


def scan_class_folders(split_dir: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image paths, for a folder of class folders (one split).

    Images lying directly in ``split_dir`` and class folders without images are errors:
    both usually mean a mistaken layout, and silently dropping them would hide it.
    """
    _check_folder(split_dir)
    loose = _loose_images(split_dir)
    if loose:
        raise DataError(
            f"{split_dir}: images must be inside class folders, found {loose[0].name} directly"
        )
    classes = {}
    dangling: list[Path] = []
    for sub in _subfolders(split_dir):
        images = _walk_images(sub, dangling)
        if not images:
            raise _no_images(sub)
        classes[sub.name] = images
    _warn_dangling(dangling)
    if not classes:
        raise _no_images(split_dir)
    return classes


# ------------------------------------------------------------------------------ splitting


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: (train indices, test indices), each sorted ascending.

    For each class (ascending label) with ``n`` members, ``round(n * test_fraction)``
    members (clamped to ``n - 1``, so every class keeps a training example; halves round
    up) are chosen for test by one ``numpy.random.default_rng(seed)`` stream.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = min(len(members) - 1, int(np.floor(len(members) * test_fraction + 0.5)))
        test.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask), test_idx


# ------------------------------------------------------------------------------- decoding


def _composite_on_black(img: Image.Image, mode: str) -> Image.Image:
    """``mode`` is "LA" or "RGBA"; returns L or RGB with colour * alpha / 255 (rounded)."""
    arr = np.asarray(img.convert(mode), dtype=np.uint16)
    colour, alpha = arr[..., :-1], arr[..., -1:]
    out = ((colour * alpha + 127) // 255).astype(np.uint8)
    return Image.fromarray(out[..., 0] if mode == "LA" else out, mode[:-1])


def _standardise(img: Image.Image) -> Image.Image:
    """Any PIL mode -> L or RGB (8-bit), or F holding 0..255 floats for 16-bit sources."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        scaled = np.asarray(img).astype(np.float32)
        scaled = np.clip(scaled, 0, 65535) * np.float32(255.0 / 65535.0)
        return Image.fromarray(scaled, "F")
    if mode == "F":
        raise _BadImage("32-bit float image: no defined intensity range (save it as 8 or 16 bit)")
    if mode in ("1", "L"):
        return img.convert("L")
    if mode in ("LA", "La"):
        return _composite_on_black(img, "LA")
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        return _composite_on_black(img, "RGBA")
    return img.convert("RGB")


def _reshape(img: Image.Image, size: int, resize: str) -> Image.Image:
    w, h = img.size
    if resize == "none" or (w, h) == (size, size):
        return img
    if resize == "resize":
        return img.resize((size, size), Image.Resampling.BILINEAR)
    scale = size / min(w, h)  # "fit": shorter side to size, then centre crop
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.resize((nw, nh), Image.Resampling.BILINEAR).crop(
        (left, top, left + size, top + size)
    )


# Reduced decoding keeps at least this many source pixels per target pixel for the final
# antialiased resize (Pillow's ``reducing_gap``: 3 is "indistinguishable" from a full resize).
REDUCING_GAP = 3
# Modes ``Image.reduce`` averages meaningfully (palette indices and 1-bit cannot be).
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "I", "F")


def _target(width: int, height: int, size: int, resize: str) -> tuple[int, int] | None:
    """The size ``_reshape`` resamples to (before a "fit" crop); None: native size."""
    if resize == "none" or (width, height) == (size, size):
        return None
    if resize == "resize":
        return size, size
    scale = size / min(width, height)
    return max(size, round(width * scale)), max(size, round(height * scale))


def _reduce(img: Image.Image, size: int, resize: str) -> Image.Image:
    """``img`` box-averaged by integer factors while it stays ``REDUCING_GAP`` times the
    target size ("fit": the same factor on both axes, keeping the aspect ratio)."""
    target = _target(*img.size, size, resize)
    if target is None:
        return img
    fx = img.width // (target[0] * REDUCING_GAP)
    fy = img.height // (target[1] * REDUCING_GAP)
    if resize == "fit":
        fx = fy = min(fx, fy)
    if max(fx, fy) < 2:
        return img
    if img.mode in _SIXTEEN_BIT_MODES and img.mode != "I":
        img = img.convert("I")  # I;16 cannot be reduced; I can, and keeps every value
    elif img.mode not in _REDUCIBLE:
        img = _standardise(img)  # palette, 1-bit, CMYK...: to L/RGB first
    return img.reduce((max(fx, 1), max(fy, 1)))


def _decode(path: Path, size: int, resize: str) -> tuple[np.ndarray, bool, list[str]]:
    """One file -> (uint8 array (H, W) or (H, W, 3), stored in a greyscale mode?, Pillow's
    warnings about it)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # Pillow's warnings, given back per file
            with Image.open(path) as img:
                grey = img.mode in _GREY_MODES
                target = _target(*img.size, size, resize)
                if target is not None and img.format == "JPEG":
                    # decoded at 1/2, 1/4 or 1/8 scale while that keeps the gap to the target
                    img.draft(img.mode, (target[0] * REDUCING_GAP, target[1] * REDUCING_GAP))
                img.load()  # decode now: truncation surfaces here, not later
                out = _reshape(_standardise(_reduce(img, size, resize)), size, resize)
        noted = [" ".join(str(w.message).split()) for w in caught]
    except FileNotFoundError as e:
        raise _BadImage("file not found") from e
    except PermissionError as e:
        raise _BadImage("cannot read file: permission denied") from e
    except _DECODE_ERRORS as e:
        raise _BadImage(f"corrupt or unreadable image ({e})") from e
    arr = np.asarray(out)
    if out.mode == "F":
        arr = np.clip(np.rint(arr), 0, 255)
    return arr.astype(np.uint8), grey, noted


def _validate_options(size: int, channels: int | str, resize: str) -> None:
    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
    if channels not in ("auto", 1, 3):
        raise ConfigError(f"channels must be 'auto', 1 or 3, got {channels!r}")
    if resize != "none" and size < 1:
        raise ConfigError(f"size must be positive, got {size}")


def load_images(
    paths: Sequence[str | Path],
    size: int = 32,
    channels: int | str = "auto",
    resize: str = "resize",
    skip_bad: bool = False,
) -> tuple[np.ndarray, list[Path]]:
    """Decode image files into one uint8 array (N, H, W, C) by the module's pixel policies.

    Returns the array and the paths actually loaded, in input order. A file that cannot be
    decoded (missing, permission denied, corrupt, truncated, unsupported mode) raises
    ``DataError`` naming it; with ``skip_bad=True`` such files are left out and one
    warning gives their count and first names. With ``resize="none"`` images of different
    sizes raise ``DataError`` naming two of them with their sizes.
    """
    _validate_options(size, channels, resize)
    arrays: list[np.ndarray] = []
    kept: list[Path] = []
    bad: list[str] = []
    all_grey = True
    noted: list[str] = []
    for p in paths:
        path = Path(p)
        try:
            arr, grey, notes = _decode(path, size, resize)
        except _BadImage as e:
            if not skip_bad:
                raise DataError(f"{path}: {e}") from e
            bad.append(str(path))
            continue
        arrays.append(arr)
        kept.append(path)
        all_grey &= grey
        noted += [f"{path}: {note}" for note in notes]
    if noted:
        shown = "; ".join(noted[:3]) + ("; ..." if len(noted) > 3 else "")
        warnings.warn(f"Pillow warned about {len(noted)} file(s): {shown}", stacklevel=2)
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        warnings.warn(f"skipped {len(bad)} unreadable image file(s): {shown}", stacklevel=2)
    if not arrays:
        raise DataError("no readable images" + (f" ({len(bad)} skipped)" if bad else ""))
    if resize == "none":
        first = arrays[0].shape[:2]
        for path, arr in zip(kept, arrays, strict=True):
            if arr.shape[:2] != first:
                raise DataError(
                    f"images differ in size and resize='none': {kept[0]} is "
                    f"{first[1]}x{first[0]}, {path} is {arr.shape[1]}x{arr.shape[0]} "
                    f"(width x height); use resize='resize' or 'fit'"
                )
    out_channels = (1 if all_grey else 3) if channels == "auto" else channels
    return np.stack([_to_channels(a, out_channels) for a in arrays]), kept


def _to_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) grey or (H, W, 3) colour -> (H, W, channels) uint8."""
    if arr.ndim == 2:
        return np.repeat(arr[..., None], channels, axis=2)
    if channels == 3:
        return arr
    return np.rint(arr.astype(np.float32) @ _LUMA).clip(0, 255).astype(np.uint8)[..., None]


# ----------------------------------------------------------------------------- datasets


def dataset_from_files(
    name: str,
    files: Sequence[tuple[Path, int, str]],
    class_names: list[str],
    size: int,
    channels: int | str,
    resize: str,
    skip_bad: bool,
) -> ImageDataset:
    """Build an ImageDataset from (path, label, "train" | "test") entries.

    All files are decoded in one ``load_images`` call so that ``channels="auto"``, the
    ``resize="none"`` size check and the ``skip_bad`` warning cover the whole dataset.
    """
    entry = {path: (label, split) for path, label, split in files}
    images, kept = load_images([f[0] for f in files], size, channels, resize, skip_bad)
    labels = np.array([entry[p][0] for p in kept], dtype=np.int64)
    is_test = np.array([entry[p][1] == "test" for p in kept], dtype=bool)
    return ImageDataset(
        name=name,
        train_images=np.ascontiguousarray(images[~is_test]),
        train_labels=labels[~is_test],
        test_images=np.ascontiguousarray(images[is_test]),
        test_labels=labels[is_test],
        class_names=class_names,
    )


def split_layout_files(
    train_dir: Path, test_dir: Path, same_classes: bool
) -> tuple[list[tuple[Path, int, str]], list[str]]:
    """Entries and class names for layout (a): ``train_dir/<class>/``, ``test_dir/<class>/``.

    With ``same_classes`` both splits must hold the same class folders (benchmarks such as
    ImageNet-30); otherwise classes are the union (MVTec-style trees).
    """
    per_split = {"train": scan_class_folders(train_dir), "test": scan_class_folders(test_dir)}
    train_classes, test_classes = set(per_split["train"]), set(per_split["test"])
    if same_classes and train_classes != test_classes:
        raise DataError(
            f"{train_dir} and {test_dir} must hold the same class folders; only in train: "
            f"{sorted(train_classes - test_classes) or 'none'}, only in test: "
            f"{sorted(test_classes - train_classes) or 'none'}"
        )
    class_names = sorted(train_classes | test_classes)
    index = {c: i for i, c in enumerate(class_names)}
    files = [
        (path, index[c], split)
        for split, classes in per_split.items()
        for c, paths in classes.items()
        for path in paths
    ]
    return files, class_names


def _unsplit_layout_files(
    root: Path, test_fraction: float, seed: int
) -> tuple[list[tuple[Path, int, str]], list[str]]:
    """Entries and class names for layouts (b) class folders and (c) loose images."""
    loose = _loose_images(root)
    subfolders = _subfolders(root)
    if loose:
        if any(_walk_images(sub) for sub in subfolders):
            raise DataError(
                f"{root}: holds both images ({loose[0].name}, ...) and folders of images; "
                f"put every image in a class folder, or only images directly in {root}"
            )
        classes = {root.resolve().name: loose}
    elif subfolders:
        classes = scan_class_folders(root)
    else:
        raise _no_images(root)
    class_names = sorted(classes)
    paths = [p for c in class_names for p in classes[c]]
    labels = np.array([i for i, c in enumerate(class_names) for _ in classes[c]], dtype=np.int64)
    _, test_idx = stratified_split(labels, test_fraction, seed)
    test = set(test_idx.tolist())
    files = [
        (p, int(y), "test" if i in test else "train")
        for i, (p, y) in enumerate(zip(paths, labels, strict=True))
    ]
    return files, class_names


@register("folder")
def folder(
    root: str | Path | None = None,
    size: int = 32,
    channels: int | str = "auto",
    resize: str = "resize",
    test_fraction: float = 0.2,
    seed: int = 0,
    skip_bad: bool = False,
) -> ImageDataset:
    """A dataset from a folder of images in layout (a), (b) or (c) (see the module doc).

    ``size``/``resize``/``channels`` follow ``load_images``; ``test_fraction`` and ``seed``
    define the split for layouts (b) and (c) and are ignored for (a). ``skip_bad=True``
    skips undecodable files with one warning instead of raising ``DataError``.
    """
    if root is None:
        raise DataError("folder: pass root=<folder of images>")
    root = Path(root).expanduser()
    _check_folder(root)
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train and has_test:
        files, class_names = split_layout_files(root / "train", root / "test", same_classes=False)
    elif has_train or has_test:
        present, absent = ("train", "test") if has_train else ("test", "train")
        raise DataError(
            f"{root}: has a {present}/ folder but no {absent}/ folder; give both, or put "
            f"class folders directly in {root} to have a split made"
        )
    else:
        files, class_names = _unsplit_layout_files(root, test_fraction, seed)
    return dataset_from_files(
        f"folder:{root.name}", files, class_names, size, channels, resize, skip_bad
    )
