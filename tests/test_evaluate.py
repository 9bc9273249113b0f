"""Labelled evaluation: the Folder layout reader, the metrics at and beyond the threshold,
``Detector.evaluate`` and its HTML report (every picture on the page exists; rendered in
headless Chromium where it is installed)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contrasyn.api.detector import Detector
from contrasyn.api.evaluate import best_f1, confusion, evaluate_scores
from contrasyn.api.metrics import auroc
from contrasyn.data import load_dataset
from contrasyn.data.labelled import read_labelled_folder
from contrasyn.data.protocol import one_class_task
from contrasyn.errors import DataError

SIZE = 16


def _pngs(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img[..., 0]).save(folder / f"{i:02d}.png")


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", n_train_per_class=40, n_test_per_class=8, size=SIZE)


@pytest.fixture(scope="module")
def detector(data) -> Detector:
    """kNN on raw pixels: fitted in an instant, and a method without a network (maps by
    occlusion need only scores)."""
    task = one_class_task(data, 0)
    return Detector(method="knn", preset="tiny", image_size=SIZE, holdout=0.5, progress=False).fit(
        task
    )


@pytest.fixture(scope="module")
def labelled(data, tmp_path_factory) -> Path:
    """good/ (class 0), arrow/ (class 3), ring/ (class 5), ground_truth/ (ignored)."""
    root = tmp_path_factory.mktemp("labelled") / "data"
    test, labels = data.test_images, data.test_labels
    _pngs(root / "good", test[labels == 0])
    _pngs(root / "arrow", test[labels == 3])
    _pngs(root / "ring", test[labels == 5])
    _pngs(root / "ground_truth" / "arrow", test[labels == 3][:2])
    return root


# ---------------------------------------------------------------------------- the layout


def test_folder_layout_defaults_and_names(labelled: Path, tmp_path: Path) -> None:
    layout = read_labelled_folder(labelled)
    assert layout.normal.name == "good" and list(layout.anomalous) == ["arrow", "ring"]
    assert len(layout.paths) == 24 and layout.is_anomaly.sum() == 16
    assert layout.groups[:8] == ["good"] * 8 and set(layout.groups[8:]) == {"arrow", "ring"}
    only = read_labelled_folder(labelled, abnormal_dirs=["ring"])
    assert list(only.anomalous) == ["ring"] and len(only.paths) == 16
    # an MVTec AD category: train/good, test/good, test/<defect>, ground_truth/
    mvtec = tmp_path / "bottle"
    shutil.copytree(labelled / "good", mvtec / "train" / "good")
    shutil.copytree(labelled / "good", mvtec / "test" / "good")
    shutil.copytree(labelled / "arrow", mvtec / "test" / "broken")
    shutil.copytree(labelled / "ground_truth", mvtec / "ground_truth")
    layout = read_labelled_folder(mvtec)
    assert layout.root == mvtec / "test" and list(layout.anomalous) == ["broken"]
    # a named normal folder; loose images in the root are left out with a warning
    named = tmp_path / "named"
    shutil.copytree(labelled / "good", named / "fine")
    shutil.copytree(labelled / "ring", named / "bad")
    shutil.copy(labelled / "good" / "00.png", named / "loose.png")
    with pytest.warns(UserWarning, match="1 image.*belong to no folder"):
        layout = read_labelled_folder(named, normal_dir="fine")
    assert layout.normal_group == "fine" and list(layout.anomalous) == ["bad"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"normal_dir": "missing"}, "the normal folder .*missing: no such folder"),
        ({"abnormal_dirs": ["good"]}, "overlap"),
        ({"abnormal_dirs": ["ground_truth"]}, "mask folder"),
    ],
)
def test_bad_layouts_are_one_clear_error(labelled: Path, kwargs, needle) -> None:
    with pytest.raises(DataError, match=needle):
        read_labelled_folder(labelled, **kwargs)


def test_bad_layout_roots(labelled: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        read_labelled_folder(tmp_path / "nothing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DataError, match="not a folder"):
        read_labelled_folder(tmp_path / "file.png")
    shutil.copytree(labelled / "arrow", tmp_path / "x" / "arrow")
    with pytest.raises(DataError, match="no normal folder.*found arrow"):
        read_labelled_folder(tmp_path / "x")
    shutil.copytree(labelled / "good", tmp_path / "y" / "good")
    (tmp_path / "y" / "masks").mkdir()
    with pytest.raises(DataError, match="no anomalous folder"):
        read_labelled_folder(tmp_path / "y")
    (tmp_path / "y" / "empty").mkdir()
    with pytest.raises(DataError, match="the anomalous folder: .*no images found"):
        read_labelled_folder(tmp_path / "y")


# --------------------------------------------------------------------------- the metrics


def test_best_f1_and_confusion_on_known_scores() -> None:
    y = np.array([0, 0, 0, 1, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    best = best_f1(y, s)
    # above 0.3: 3 anomalies and 1 normal flagged -> precision 3/4, recall 1, F1 6/7; above
    # 0.5: 2 anomalies, none normal -> F1 0.8
    assert best["threshold"] == pytest.approx(0.3) and best["f1"] == pytest.approx(6 / 7)
    assert (best["precision"], best["recall"]) == (0.75, 1.0)
    c = confusion(y, s > 0.5)
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (2, 1, 0, 4)
    assert c["f1"] == pytest.approx(0.8) and c["false_alarm_rate"] == 0
    # every anomaly above every normal image: F1 1 at the highest such threshold
    assert best_f1(y, y + 0.0)["f1"] == 1 and best_f1(y, y + 0.0)["threshold"] == 0


def test_evaluate_arrays_with_groups_and_a_broken_score(detector: Detector, data) -> None:
    x, labels = data.test_images, data.test_labels
    keep = np.isin(labels, (0, 3, 5))
    y = (labels[keep] != 0).astype(int)
    groups = [data.class_names[c] for c in labels[keep]]
    ev = detector.evaluate(x[keep], y, groups)
    scores = detector.anomaly_score(x[keep])
    assert ev.metrics["auroc"] == pytest.approx(auroc(y, scores))
    names = [g["folder"] for g in ev.per_group]
    assert names == [data.class_names[3], data.class_names[5]]
    for g, c in zip(ev.per_group, (3, 5), strict=True):
        both = np.isin(labels[keep], (0, c))
        assert g["auroc"] == pytest.approx(auroc(y[both], scores[both])) and g["n"] == 8
    flagged = detector.predict(x[keep]) == -1
    t = ev.at_threshold
    assert (t["tp"], t["fn"], t["fp"], t["tn"]) == (
        int((flagged & (y == 1)).sum()),
        int((~flagged & (y == 1)).sum()),
        int((flagged & (y == 0)).sum()),
        int((~flagged & (y == 0)).sum()),
    )
    np.testing.assert_array_equal(ev.probability, detector.anomaly_probability(x[keep]))
    assert [r["label"] for r in ev.rows()] == ["anomaly" if f else "normal" for f in flagged]
    # a NaN score counts as the most anomalous, and is flagged
    broken = scores.copy()
    broken[0] = np.nan
    ev = evaluate_scores(detector, broken, y)
    assert ev.metrics["non_finite"] == 1 and np.isfinite(ev.metrics["auroc"])
    assert ev.flagged[0] and ev.probability[0] == 1.0
    with pytest.raises(DataError, match="normal and anomalous"):
        detector.evaluate(x[:4], np.zeros(4, int))
    with pytest.raises(DataError, match="1 .anomalous. or 0"):
        detector.evaluate(x[:4], np.array([0, 1, 2, 1]))
    with pytest.raises(DataError, match="needs labels"):
        detector.evaluate(x[:4])


def test_evaluate_a_folder_writes_metrics_and_a_report(
    detector: Detector, labelled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    ev = detector.evaluate(labelled, out=out)
    assert ev.normal_group == "good" and len(ev.scores) == 24
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["auroc"] == pytest.approx(ev.metrics["auroc"])
    assert [g["folder"] for g in metrics["per_folder"]] == ["arrow", "ring"]
    assert metrics["model"]["method"] == "knn" and metrics["normal"] == 8
    lines = (out / "scores.csv").read_text().splitlines()
    assert lines[0] == "path,folder,is_anomaly,anomaly_score,anomaly_probability,label"
    assert len(lines) == 25
    page = (out / "report.html").read_text()
    sources = re.findall(r"<img src='([^']+)'", page)
    assert all((out / s).is_file() for s in sources)
    for key in ("metrics", "threshold", "folders", "roc", "histograms", "most-anomalous"):
        assert f'id="{key}"' in page and f'href="#{key}"' in page  # the table of contents
    assert "borderline" in page and page.count("<figcaption>") >= len(sources)
    # a second report into the same folder leaves no picture of the first behind
    (out / "report" / "old-99.png").write_bytes(b"")
    detector.evaluate(labelled, out=out, maps=False)
    names = {p.name for p in (out / "report").iterdir()}
    page = (out / "report.html").read_text()
    assert names == {Path(s).name for s in re.findall(r"<img src='([^']+)'", page)}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_evaluation_report_renders_in_headless_chromium(
    detector: Detector, labelled: Path, tmp_path: Path, broken_images, screenshot
) -> None:
    out = tmp_path / "eval"
    detector.evaluate(labelled, out=out)
    sources = re.findall(r"<img src='([^']+)'", (out / "report.html").read_text())
    assert broken_images(out / "report.html") == (len(sources), [])
    pixels = screenshot(out / "report.html", "1200,2400")
    # the ROC curve (tab:blue) and the table headers (#eee) are on screen
    assert (np.abs(pixels - (31, 119, 180)).sum(axis=-1) < 30).sum() > 100
    assert (np.abs(pixels - 238).sum(axis=-1) == 0).sum() > 500
