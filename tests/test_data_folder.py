"""Folder-of-images datasets (folder, imagenet30) and the shared decoding in load_images."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from contrasyn.data import find_images, load_dataset, load_images
from contrasyn.data.folder import stratified_split
from contrasyn.errors import ConfigError, DataError


def save(path: Path, arr: np.ndarray) -> Path:
    """Save with the mode PIL infers: (H, W) uint8 L, uint16 I;16; (H, W, 2|3|4) LA/RGB/RGBA."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def grey(value: int, shape: tuple[int, int] = (6, 6)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def rgb(seed: int, shape: tuple[int, int] = (6, 6)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def make_classes(root: Path, counts: dict[str, int]) -> None:
    for name, n in counts.items():
        for i in range(n):
            save(root / name / f"{i:03d}.png", rgb(i))


# ------------------------------------------------------------------------------ layouts


def test_train_test_layout_unions_classes(tmp_path: Path) -> None:
    make_classes(tmp_path / "train", {"good": 4})
    make_classes(tmp_path / "test", {"good": 2, "crack": 3})
    ds = load_dataset("folder", root=tmp_path, size=8)
    assert ds.class_names == ["crack", "good"]
    assert ds.train_images.shape == (4, 8, 8, 3) and ds.test_images.shape == (5, 8, 8, 3)
    assert ds.train_labels.tolist() == [1] * 4
    assert sorted(ds.test_labels.tolist()) == [0, 0, 0, 1, 1]


def test_class_folders_get_documented_split(tmp_path: Path) -> None:
    make_classes(tmp_path, {"a": 10, "b": 7, "c": 1})
    ds = load_dataset("folder", root=tmp_path, size=6)
    # round(10 * 0.2) = 2, round(7 * 0.2) = 1, round(0.2) = 0 (and at most n - 1).
    assert np.bincount(ds.test_labels, minlength=3).tolist() == [2, 1, 0]
    assert np.bincount(ds.train_labels, minlength=3).tolist() == [8, 6, 1]
    again = load_dataset("folder", root=tmp_path, size=6)
    np.testing.assert_array_equal(again.test_images, ds.test_images)
    half = load_dataset("folder", root=tmp_path, size=6, test_fraction=0.5)
    # round(5) = 5, round(3.5) = 4 (halves up), 1 image -> stays in train.
    assert np.bincount(half.test_labels, minlength=3).tolist() == [5, 4, 0]


def test_stratified_split_depends_on_seed() -> None:
    labels = np.repeat(np.arange(3), 20)
    tr0, te0 = stratified_split(labels, 0.25, seed=0)
    tr1, te1 = stratified_split(labels, 0.25, seed=1)
    assert len(te0) == len(te1) == 15 and not np.array_equal(te0, te1)
    assert sorted(np.concatenate([tr0, te0]).tolist()) == list(range(60))
    with pytest.raises(ConfigError):
        stratified_split(labels, 1.0, seed=0)


def test_loose_images_form_one_class(tmp_path: Path) -> None:
    root = tmp_path / "widgets"
    for i in range(5):
        save(root / f"{i}.png", grey(i * 10))
    ds = load_dataset("folder", root=root, size=6)
    assert ds.class_names == ["widgets"]
    assert (len(ds.train_images), len(ds.test_images)) == (4, 1)
    assert ds.train_images.shape[-1] == 1


def test_ambiguous_layouts_rejected(tmp_path: Path) -> None:
    make_classes(tmp_path, {"a": 2})
    save(tmp_path / "stray.png", grey(1))
    with pytest.raises(DataError, match="stray.png.*folders of images"):
        load_dataset("folder", root=tmp_path)
    only_train = tmp_path / "x"
    make_classes(only_train / "train", {"a": 2})
    with pytest.raises(DataError, match="train/ folder but no test/"):
        load_dataset("folder", root=only_train)


def test_imagenet30_layout(tmp_path: Path) -> None:
    for split in ("one_class_train", "one_class_test"):
        make_classes(tmp_path / split, {"acorn": 2, "airliner": 2})
    save(tmp_path / "one_class_train" / "acorn" / "grey.JPEG", grey(50, (40, 30)))
    ds = load_dataset("imagenet30", root=tmp_path)
    assert ds.train_images.shape == (5, 64, 64, 3) and ds.test_images.shape == (4, 64, 64, 3)
    assert ds.class_names == ["acorn", "airliner"]
    make_classes(tmp_path / "one_class_test", {"ambulance": 1})
    with pytest.raises(DataError, match=r"same class folders.*only in test: \['ambulance'\]"):
        load_dataset("imagenet30", root=tmp_path)
    with pytest.raises(DataError, match="train/<class>"):
        load_dataset("imagenet30", root=tmp_path / "nothing")


# ---------------------------------------------------------------------------- bad input


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope: no such folder"):
        load_dataset("folder", root=tmp_path / "nope")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no images found \(looked for .png, .jpg, .jpeg"):
        load_dataset("folder", root=tmp_path / "empty")
    with pytest.raises(DataError, match="no images found"):
        find_images(tmp_path / "empty")


def test_corrupt_and_truncated_files_named(tmp_path: Path) -> None:
    make_classes(tmp_path, {"a": 3})
    bad = tmp_path / "a" / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="bad.png: corrupt or unreadable image"):
        load_dataset("folder", root=tmp_path)
    bad.unlink()
    full = save(tmp_path / "a" / "cut.png", rgb(5, (64, 64))).read_bytes()
    (tmp_path / "a" / "cut.png").write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="cut.png: corrupt or unreadable image"):
        load_dataset("folder", root=tmp_path)


def test_skip_bad_warns_once_with_count(tmp_path: Path) -> None:
    make_classes(tmp_path, {"a": 5, "b": 5})
    for name in ("a/x.png", "b/y.jpg"):
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image file\(s\): .*x.png.*y.jpg"):
        ds = load_dataset("folder", root=tmp_path, skip_bad=True, size=6)
    assert len(ds.train_images) + len(ds.test_images) == 10


def test_permission_denied_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: the tests may run as root, for whom chmod 000 does not deny reading.
    target = save(tmp_path / "locked.png", grey(3))
    real_open = Image.open

    def fake_open(fp, *args, **kwargs):
        if Path(fp) == target:
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", fake_open)
    with pytest.raises(DataError, match="locked.png: cannot read file: permission denied"):
        load_images([target])


def test_mixed_sizes_with_resize_none(tmp_path: Path) -> None:
    a = save(tmp_path / "a.png", grey(1, (4, 5)))
    b = save(tmp_path / "b.png", grey(1, (4, 5)))
    c = save(tmp_path / "c.png", grey(1, (7, 3)))
    images, _ = load_images([a, b], resize="none")
    assert images.shape == (2, 4, 5, 1)
    with pytest.raises(DataError, match=r"a.png is 5x4, .*c.png is 3x7"):
        load_images([a, b, c], resize="none")
    assert load_images([a, c], size=9)[0].shape == (2, 9, 9, 1)


def test_bad_options(tmp_path: Path) -> None:
    a = save(tmp_path / "a.png", grey(1))
    with pytest.raises(ConfigError, match="resize"):
        load_images([a], resize="stretch")
    with pytest.raises(ConfigError, match="channels"):
        load_images([a], channels=2)


# ---------------------------------------------------------------------------- pixel modes


def test_modes_decode_by_documented_policy(tmp_path: Path) -> None:
    g = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
    alpha = np.linspace(0, 255, 36).astype(np.uint8).reshape(6, 6)
    colour = rgb(1)
    sixteen = (np.arange(36, dtype=np.uint16).reshape(6, 6) * 1800).astype(np.uint16)
    cmyk = Image.fromarray(np.concatenate([colour, g[..., None]], axis=2), "CMYK")
    cmyk.save(tmp_path / "cmyk.tif")
    pal = Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "pal.png")
    pal.save(tmp_path / "pal_t.png", transparency=0)
    files = {
        "L": save(tmp_path / "l.png", g),
        "LA": save(tmp_path / "la.png", np.stack([g, alpha], axis=2)),
        "RGBA": save(tmp_path / "rgba.png", np.dstack([colour, alpha])),
        "I;16": save(tmp_path / "i16.png", sixteen),
        "CMYK": tmp_path / "cmyk.tif",
        "P": tmp_path / "pal.png",
        "P+t": tmp_path / "pal_t.png",
    }
    with Image.open(files["I;16"]) as im:
        assert im.mode in ("I;16", "I")
    images, kept = load_images(list(files.values()), size=6, channels=3)
    out = dict(zip(files, images, strict=True))
    np.testing.assert_array_equal(out["L"][..., 0], g)
    np.testing.assert_array_equal(out["L"][..., 1], g)
    composite_la = (g.astype(int) * alpha + 127) // 255
    np.testing.assert_array_equal(out["LA"][..., 0], composite_la)
    composite = (colour.astype(int) * alpha[..., None] + 127) // 255
    np.testing.assert_array_equal(out["RGBA"], composite)
    # 16-bit: scaled from the full range, not clipped at 255.
    np.testing.assert_array_equal(out["I;16"][..., 0], np.rint(sixteen * (255 / 65535)))
    assert out["I;16"].max() == round(35 * 1800 * 255 / 65535)
    np.testing.assert_array_equal(out["CMYK"], np.asarray(cmyk.convert("RGB")))
    np.testing.assert_array_equal(out["P"], np.asarray(pal.convert("RGB")))
    index0 = np.asarray(pal) == 0
    assert index0.any() and (out["P+t"][index0] == 0).all()
    assert kept == list(files.values())


def test_channels_auto_and_luma(tmp_path: Path) -> None:
    g = save(tmp_path / "g.png", grey(100))
    c = save(tmp_path / "c.png", np.full((6, 6, 3), (255, 0, 0), np.uint8))
    assert load_images([g], size=6)[0].shape == (1, 6, 6, 1)
    mixed, _ = load_images([g, c], size=6)
    assert mixed.shape == (2, 6, 6, 3) and (mixed[0] == 100).all()
    luma, _ = load_images([c], size=6, channels=1)
    assert luma.shape == (1, 6, 6, 1) and (luma == round(0.299 * 255)).all()


def test_fit_crops_centre_and_resize_squashes(tmp_path: Path) -> None:
    src = np.tile(np.arange(20, dtype=np.uint8) * 10, (10, 1))  # 10 high, 20 wide
    path = save(tmp_path / "wide.png", src)
    fit, _ = load_images([path], size=10, resize="fit")
    np.testing.assert_array_equal(fit[0, ..., 0], src[:, 5:15])
    squashed, _ = load_images([path], size=10, resize="resize")
    assert squashed.shape == (1, 10, 10, 1)
    assert squashed[0, 0, 0] < 20 and squashed[0, 0, -1] > 170  # whole width kept


def test_find_images_recursive_case_insensitive(tmp_path: Path) -> None:
    for name in ("b/deep/x.PNG", "a.JpEg", "c.tiff", "d.WEBP", "e.bmp", ".hidden.png"):
        save(tmp_path / name, grey(1))
    save(tmp_path / ".cache" / "f.png", grey(1))
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.JpEg", "b/deep/x.PNG", "c.tiff", "d.WEBP", "e.bmp"]


# --------------------------------------------------------------------------- properties

_MODES = st.sampled_from(["L", "LA", "RGB", "RGBA", "I;16"])


@settings(max_examples=40, deadline=None)
@given(mode=_MODES, h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_png_round_trip_within_rounding(mode: str, h: int, w: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 1}[mode]
    if mode == "I;16":
        arr = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        expected = arr * (255 / 65535)
    else:
        arr = rng.integers(0, 256, (h, w) if bands == 1 else (h, w, bands), dtype=np.uint8)
        if mode in ("LA", "RGBA"):
            expected = arr[..., :-1] * (arr[..., -1:] / 255)
        else:
            expected = arr.astype(float)
    expected = expected.reshape(h, w, -1)
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("error")
        path = Path(d) / "x.png"
        save(path, arr)
        # Native size kept either by policy or because it already equals ``size``.
        for resize, size in [("none", 0)] + ([("resize", h)] if h == w else []):
            images, kept = load_images([path], size=size, resize=resize)
            assert kept == [path] and images.dtype == np.uint8
            assert images.shape == (1, h, w, expected.shape[-1])
            assert np.abs(images[0] - expected).max() <= 0.5 + 1e-9


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    size=st.integers(1, 24),
    resize=st.sampled_from(["resize", "fit"]),
    value=st.integers(0, 255),
)
def test_constant_image_any_geometry(h: int, w: int, size: int, resize: str, value: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = save(Path(d) / "c.png", np.full((h, w, 3), value, np.uint8))
        images, _ = load_images([path], size=size, resize=resize)
    assert images.shape == (1, size, size, 3)
    assert (images == value).all()
