"""``contrasyn fit``, ``score`` and ``threshold`` end to end on PNG folders of the synthetic data.

The model is the tiny preset made smaller (16 px, width 4, one epoch). Scoring is the
Detector's default deterministic pass, so a file scored alone gets the score it gets in a
folder and the per-image checks below need no tolerance.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrasyn.api.detector import Detector
from contrasyn.cli import main
from contrasyn.data import find_images

FAST = [
    "--preset",
    "tiny",
    "--image-size",
    "16",
    "--holdout",
    "0.25",
    "--device",
    "cpu",
    "--set",
    "train.epochs=1",
    "--set",
    "train.width=4",
]
SUMMARY = re.compile(
    r"^scored (\d+) images?(?: \((\d+) unreadable skipped\))?: (\d+) anomalous "
    r"\(threshold (\S+), false-alarm rate ([\d.]+)%\)"
)


@pytest.fixture(scope="module")
def fitted(folders, tmp_path_factory) -> tuple[Path, str]:
    """A model trained once for the module, and what ``fit`` printed."""
    model = tmp_path_factory.mktemp("fitted") / "model"
    out = StringIO()
    with redirect_stdout(out):
        assert main(["fit", "--data", str(folders["good"]), "--out", str(model), *FAST]) == 0
    return model, out.getvalue()


@pytest.fixture
def model_copy(fitted, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(fitted[0], copy)
    return copy


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _threshold(model: Path) -> float:
    return json.loads((model / "model.json").read_text())["threshold"]


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("contrasyn: error:"), err
    assert "Traceback" not in captured.err
    return err


# ------------------------------------------------------------------------------------ fit


def test_fit_saves_model_and_prints_summary(fitted) -> None:
    model, text = fitted
    assert (model / "model.safetensors").is_file() and (model / "model.json").is_file()
    last = json.loads((model / "checkpoints" / "last.json").read_text())
    assert last["epoch"] == 1 and last["config"]["width"] == 4
    assert "trained on 30 images; 10 held out to set the threshold" in text
    assert f"threshold {_threshold(model):.6g}" in text and "false-alarm rate 5%" in text
    assert f"saved to {model}" in text
    # the preset's method is full: its generator's samples are saved beside the model
    assert f"samples: {model / 'samples.png'}" in text
    assert Image.open(model / "samples.png").size == (16 * (16 + 2) + 2, 4 * (16 + 2) + 2)
    det = Detector.load(model, device="cpu")
    assert det.n_train_ == 30 and len(det.holdout_scores_) == 10
    assert det.config_.train.image_size == 16 and det.config_.score.augment is False
    assert not list(model.rglob("*.tmp"))


def test_rerun_resumes_and_refuses_other_images(fitted, model_copy, folders, capsys) -> None:
    argv = ["fit", "--data", str(folders["good"]), "--out", str(model_copy), *FAST]
    ckpt = model_copy / "checkpoints"
    # what a process killed in the middle of a save can leave behind
    (ckpt / ".last.safetensors.abc123.tmp").write_bytes(b"partial")
    (ckpt / "last.json").unlink()
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "resuming from the checkpoint of epoch 1" in captured.out
    assert "interrupted save; rebuilt it" in captured.err
    assert not list(model_copy.rglob("*.tmp"))
    assert json.loads((ckpt / "last.json").read_text())["epoch"] == 1
    # the finished run was not retrained: same weights as the first fit
    a = Detector.load(fitted[0], device="cpu").model_.state_dict()
    b = Detector.load(model_copy, device="cpu").model_.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)

    argv[2] = str(folders["test"] / "normal")  # other images, same model folder
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()  # a small-holdout warning may precede
    assert err[-1].startswith("contrasyn: error:") and "trained on other images" in err[-1]


def test_corrupt_png_fails_naming_it_or_is_skipped(folders, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(folders["good"], data)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    argv = ["fit", "--data", str(data), "--out", str(tmp_path / "m"), *FAST]
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert "broken.png" in err and "corrupt" in err
    assert not (tmp_path / "m" / "model.json").exists()

    assert main([*argv, "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "contrasyn: warning: skipped 1 unreadable image file(s)" in captured.err
    assert "broken.png" in captured.err and "Traceback" not in captured.err
    assert "(1 unreadable skipped)" in captured.out
    assert "trained on 30 images; 10 held out" in captured.out
    assert (tmp_path / "m" / "model.json").is_file()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--set", "train.epoch=2"], "epoch"),
        (["--set", "model.depth=2"], "unknown config section 'model'"),
        (["--set", "train.seed=1"], "--seed"),
        (["--set", "train.epochs"], "--set expects"),
        (["--set", "train.epochs=["], "cannot read the value"),
        (["--image-size", "8", "--set", "train.image_size=12"], "contradicts"),
        (["--false-alarm-rate", "1.5"], "--false-alarm-rate must be a number in (0, 1)"),
        (["--holdout", "0.99"], "holdout"),
        (["--method", "gan"], "not available"),
        (["--preset", "huge"], "unknown preset"),
        (["--device", "gpu0"], "not a device name"),
    ],
)
def test_fit_config_errors_exit_2(folders, tmp_path: Path, capsys, extra, needle) -> None:
    out = tmp_path / "m"
    argv = ["fit", "--data", str(folders["good"]), "--out", str(out), *FAST, *extra]
    assert main(argv) == 2
    assert needle in _one_error_line(capsys)
    assert not (out / "model.json").exists()


def test_fit_empty_or_missing_data_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    for data, needle in [("empty", "no images found"), ("missing", "no such folder")]:
        argv = ["fit", "--data", str(tmp_path / data), "--out", str(tmp_path / "m"), *FAST]
        assert main(argv) == 2
        err = _one_error_line(capsys)
        assert needle in err and data in err


# ---------------------------------------------------------------------------------- score


def test_score_csv_rows_labels_and_summary(fitted, folders, tmp_path: Path, capsys) -> None:
    model = fitted[0]
    out = tmp_path / "results" / "scores.csv"
    assert main(["score", str(model), str(folders["test"]), "--out", str(out)]) == 0
    with out.open(newline="") as f:
        assert next(csv.reader(f)) == ["path", "anomaly_score", "anomaly_probability", "label"]
    rows = _rows(out)
    expected = find_images(folders["test"])  # recursive, sorted: anomalous/ then normal/
    assert [r["path"] for r in rows] == [str(p) for p in expected]
    threshold = _threshold(model)
    scores = np.array([float(r["anomaly_score"]) for r in rows])
    labels = [r["label"] for r in rows]
    assert labels == ["anomaly" if s > threshold else "normal" for s in scores]
    # the same numbers as the Python API, and the same labels as predict()
    det = Detector.load(model, device="cpu")
    np.testing.assert_allclose(scores, det.anomaly_score(expected), rtol=0, atol=1e-6)
    assert labels == ["anomaly" if p == -1 else "normal" for p in det.predict(expected)]
    # every row: the fraction of the 10 held-out normal images scoring lower, next to the score
    probability = np.array([float(r["anomaly_probability"]) for r in rows])
    held = -det.holdout_scores_
    np.testing.assert_array_equal(probability, [(held < s).mean() for s in scores])
    flagged = probability >= det.threshold_probability_
    assert labels == ["anomaly" if f else "normal" for f in flagged]

    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    match = SUMMARY.match(lines[0])
    assert match, lines[0]
    assert int(match[1]) == 12 and int(match[3]) == labels.count("anomaly")
    assert float(match[4]) == pytest.approx(threshold, rel=1e-5) and match[5] == "5"
    assert str(out) in lines[0]


def test_score_to_stdout_and_json(fitted, folders, tmp_path: Path, capsys) -> None:
    model = fitted[0]
    files = sorted((folders["test"] / "anomalous").glob("*.png"))[:2]
    # files and folders mixed; a file also inside a folder given is scored once
    inputs = [str(files[0]), str(folders["test"] / "normal"), str(files[1]), str(files[0])]
    assert main(["score", str(model), *inputs]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(StringIO(captured.out)))
    normal = find_images(folders["test"] / "normal")
    assert [r["path"] for r in rows] == [str(files[0]), *map(str, normal), str(files[1])]
    assert SUMMARY.match(captured.err.strip())

    out = tmp_path / "scores.json"  # the format follows the suffix
    assert main(["score", str(model), *inputs, "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    doc = json.loads(out.read_text())
    assert set(doc) == {"summary", "results"}
    assert [r["path"] for r in doc["results"]] == [r["path"] for r in rows]
    for r, c in zip(doc["results"], rows, strict=True):
        assert set(r) == {"path", "anomaly_score", "anomaly_probability", "label"}
        assert r["anomaly_score"] == float(c["anomaly_score"]) and r["label"] == c["label"]
        assert r["anomaly_probability"] == float(c["anomaly_probability"])
        assert 0 <= r["anomaly_probability"] <= 1
    summary = doc["summary"]
    assert summary["images"] == len(rows) and summary["skipped"] == []
    assert summary["anomalous"] == sum(r["label"] == "anomaly" for r in rows)
    assert summary["threshold"] == _threshold(model)
    assert summary["false_alarm_rate"] == 0.05 and summary["score"] == "feat"

    assert main(["score", str(model), str(files[0]), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["images"] == 1


def test_fail_on_anomaly_exit_3(fitted, model_copy, folders, tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.csv"
    # a threshold that flags 99% of normal images: anomalies are certain
    assert main(["threshold", str(model_copy), "--false-alarm-rate", "0.99"]) == 0
    argv = ["score", str(model_copy), str(folders["test"]), "--out", str(out), "--overwrite"]
    assert main([*argv, "--fail-on-anomaly"]) == 3
    assert any(r["label"] == "anomaly" for r in _rows(out))  # results are still written
    assert main(argv) == 0  # without the flag, anomalies are not a failure

    # the image scored most normal by the original model: no anomaly, exit 0
    argv = ["score", str(fitted[0]), str(folders["test"]), "--out", str(out), "--overwrite"]
    assert main(argv) == 0
    calmest = min(_rows(out), key=lambda r: float(r["anomaly_score"]))
    assert calmest["label"] == "normal"
    capsys.readouterr()
    assert main(["score", str(fitted[0]), calmest["path"], "--fail-on-anomaly"]) == 0
    assert ": 0 anomalous" in capsys.readouterr().err


def test_score_corrupt_input_fails_or_is_skipped(fitted, folders, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    good = str(folders["test"] / "normal")
    assert main(["score", str(fitted[0]), good, str(bad)]) == 2
    assert "bad.png" in _one_error_line(capsys)

    out = tmp_path / "s.json"
    assert main(["score", str(fitted[0]), good, str(bad), "--skip-bad", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "contrasyn: warning: skipped 1 unreadable image file(s)" in err
    match = SUMMARY.match(err.strip().splitlines()[-1])
    assert match and match[1] == "6" and match[2] == "1"
    doc = json.loads(out.read_text())
    assert doc["summary"]["skipped"] == [str(bad)] and len(doc["results"]) == 6


def test_score_model_errors_exit_2(fitted, folders, tmp_path: Path, capsys) -> None:
    test = str(folders["test"])

    def model_with(change) -> Path:
        path = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        shutil.copytree(fitted[0], path)
        change(path)
        return path

    def edit_json(path: Path) -> None:
        meta = json.loads((path / "model.json").read_text())
        meta["threshold"] = 0.5
        (path / "model.json").write_text(json.dumps(meta))

    def unfinished(path: Path) -> None:
        (path / "model.json").unlink()
        (path / "model.safetensors").unlink()

    cases = [
        (tmp_path / "nowhere", "no such model folder"),
        (model_with(lambda p: (p / "model.safetensors").unlink()), "model.safetensors"),
        (model_with(edit_json), "does not match"),
        (model_with(unfinished), "training has not finished"),
    ]
    for model, needle in cases:
        assert main(["score", str(model), test]) == 2, needle
        err = _one_error_line(capsys)
        assert needle in err
    assert main(["score", str(fitted[0]), str(tmp_path / "missing.png")]) == 2
    assert "missing.png: no such file or folder" in _one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["score", str(fitted[0]), str(tmp_path / "empty")]) == 2
    assert "no images found" in _one_error_line(capsys)


# ------------------------------------------------------------------------------ threshold


def test_threshold_changes_saved_value_and_next_score_uses_it(
    model_copy, folders, tmp_path: Path, capsys
) -> None:
    old = _threshold(model_copy)
    holdout = Detector.load(model_copy, device="cpu").holdout_scores_
    assert main(["threshold", str(model_copy), "--false-alarm-rate", "0.5"]) == 0
    new = _threshold(model_copy)
    # the conformal order statistic: the ceil(11 * 0.5) = 6th smallest of the 10 held-out
    expected = float(np.sort(-holdout)[5])
    assert new == pytest.approx(expected) and new != old
    text = capsys.readouterr().out
    assert f"{old:.6g} (false-alarm rate 5%) -> {new:.6g} (false-alarm rate 50%)" in text
    det = Detector.load(model_copy, device="cpu")
    assert det.threshold_ == new and det.false_alarm_rate == 0.5

    out = tmp_path / "s.json"
    assert main(["score", str(model_copy), str(folders["test"]), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["summary"]["threshold"] == new and doc["summary"]["false_alarm_rate"] == 0.5
    for r in doc["results"]:
        assert r["label"] == ("anomaly" if r["anomaly_score"] > new else "normal")
    assert "false-alarm rate 50%" in capsys.readouterr().err

    assert main(["threshold", str(model_copy), "--contamination", "0.05"]) == 0
    assert _threshold(model_copy) == pytest.approx(old)
    assert Detector.load(model_copy, device="cpu").contamination == 0.05

    before = (model_copy / "model.json").read_text()
    capsys.readouterr()
    assert main(["threshold", str(model_copy), "--false-alarm-rate", "1.5"]) == 2
    assert "--false-alarm-rate must be a number in (0, 1)" in _one_error_line(capsys)
    assert (model_copy / "model.json").read_text() == before
    with pytest.raises(SystemExit) as info:  # one of the two rates is required
        main(["threshold", str(model_copy)])
    assert info.value.code == 2


def test_help_explains_commands_and_exit_codes(capsys) -> None:
    for command in ("fit", "score", "threshold"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        assert "exit codes:" in text and "--fail-on-anomaly" in text and "examples:" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "contrasyn fit --data" in text and "130" in text


def test_export_then_onnx_scores_equal_the_cli_scores(model_copy, folders, tmp_path, capsys):
    """`contrasyn export` writes model.onnx; onnxruntime's anomaly scores of the same files
    equal what `contrasyn score` wrote (the Detector's default deterministic pass)."""
    pytest.importorskip("onnxruntime")
    from contrasyn.api.export import OnnxDetector
    from contrasyn.data import load_images

    assert main(["export", str(model_copy)]) == 0
    assert (model_copy / "model.onnx").is_file()
    out = tmp_path / "scores.csv"
    assert main(["score", str(model_copy), str(folders["test"]), "--out", str(out)]) == 0
    rows = _rows(out)
    onnx = OnnxDetector(model_copy)
    t = onnx.config_.train
    images, _ = load_images([r["path"] for r in rows], t.image_size, t.channels)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    np.testing.assert_allclose(
        onnx.anomaly_score(x), [float(r["anomaly_score"]) for r in rows], rtol=0, atol=1e-4
    )


# ---------------------------------------------------------------------------------- sample


def test_sample_writes_grids_of_samples_and_reconstructions(
    fitted, folders, tmp_path: Path, capsys
) -> None:
    model, _ = fitted
    assert main(["sample", str(model), "--out", str(tmp_path / "s.png"), "--n", "40"]) == 0
    assert "wrote" in capsys.readouterr().out
    # 40 samples -> two whole rows of 16 (16x16 images, 2-pixel padding)
    assert Image.open(tmp_path / "s.png").size == (16 * 18 + 2, 2 * 18 + 2)
    args = ["sample", str(model), "--reconstruct", str(folders["test"] / "anomalous"), "--n", "5"]
    assert main([*args, "--out", str(tmp_path / "r.png")]) == 0
    assert "5 images (top) and their reconstructions" in capsys.readouterr().out
    assert Image.open(tmp_path / "r.png").size == (5 * 18 + 2, 2 * 18 + 2)


def test_sample_errors(fitted, tmp_path: Path, capsys) -> None:
    model, _ = fitted
    assert main(["sample", str(model), "--out", str(tmp_path / "s.png"), "--n", "0"]) == 2
    assert "--n must be an integer in [1, 10000], got 0" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "none"), "--out", str(tmp_path / "s.png")]) == 2


# ---------------------------------------------------------------- every method, flags


def _fit_method(folders, out: Path, method: str, *extra: str) -> list[str]:
    """Tiny settings for any method, without the CSI family's --set train.* of FAST."""
    data = ["fit", "--data", str(folders["good"]), "--out", str(out), "--method", method]
    return [*data, "--preset", "tiny", "--image-size", "16", "--holdout", "0.25", *extra]


@pytest.mark.parametrize(
    ("method", "extra"), [("rot", ["--set", "rot.epochs=1"]), ("knn", []), ("dn2", [])]
)
def test_fit_a_baseline_then_score_it(folders, tmp_path: Path, capsys, method, extra) -> None:
    model = tmp_path / method
    argv = _fit_method(folders, model, method, "--device", "cpu", *extra)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"; {method}, preset tiny (" in text and "16x16, device cpu" in text
    if method == "rot":
        assert "trained on 30 images; 10 held out to set the threshold" in text
    else:  # knn and dn2 only store their images: all 40 in the bank, each calibrates
        assert (
            "trained on 40 images; each scored against the others to set the threshold "
            "(leave-one-out)"
        ) in text
    assert f"on the anomaly score ({method})" in text and "checkpoints" not in text
    meta = json.loads((model / "model.json").read_text())
    assert meta["method"] == method and meta["input"] == {"image_size": 16, "channels": 3}
    if method == "rot":
        assert meta["config"]["epochs"] == 1  # --set rot.epochs reached the baseline
    assert not (model / "checkpoints").exists() and not (model / "samples.png").exists()

    out = tmp_path / "scores.csv"
    assert main(["score", str(model), str(folders["test"]), "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["path"] for r in rows] == [str(p) for p in find_images(folders["test"])]
    scores = np.array([float(r["anomaly_score"]) for r in rows])
    assert len(scores) == 12 and np.isfinite(scores).all()
    threshold = _threshold(model)
    assert [r["label"] for r in rows] == ["anomaly" if s > threshold else "normal" for s in scores]
    assert SUMMARY.match(capsys.readouterr().err.strip())
    det = Detector.load(model, device="cpu")
    expected = det.anomaly_score(find_images(folders["test"]))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)

    assert main(["score", str(model), str(folders["test"]), "--format", "json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["method"] == method
    # a baseline has no generator and no network to export: one line each
    assert main(["sample", str(model), "--out", str(tmp_path / "s.png")]) == 2
    assert "has no generator" in _one_error_line(capsys)
    assert main(["export", str(model)]) == 2
    assert "is a baseline" in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("method", "extra", "needle"),
    [
        ("full", ["--set", "rot.epochs=1"], "config section 'rot' is for method rot"),
        ("knn", ["--set", "rot.epochs=1"], "config section 'rot' is for method rot"),
        ("rot", ["--set", "train.epochs=1"], "train.epochs does not apply to method 'rot'"),
        ("rot", ["--set", "score.score=feat"], "does not apply to method 'rot'"),
        ("rot", ["--set", "rot.epoch=1"], "epoch"),
        ("rot", ["--set", "rot.seed=1"], "--seed"),
        ("rot", ["--set", "model.depth=2"], "unknown config section 'model'"),
        ("rot", ["--draws", "2"], "--draws is for the CSI family"),
        ("rot", ["--score", "feat"], "has one score"),
        ("rot", ["--image-size", "8", "--set", "rot.image_size=12"], "contradicts"),
        ("magic", [], "not available"),
    ],
)
def test_set_sections_must_fit_the_method(
    folders, tmp_path: Path, capsys, method, extra, needle
) -> None:
    out = tmp_path / "m"
    argv = _fit_method(folders, out, method, "--device", "cpu", *extra)
    if "--image-size" in extra:
        argv.remove("16")
        argv.remove("--image-size")
    assert main(argv) == 2
    assert needle in _one_error_line(capsys)
    assert not out.exists()


def test_fit_baseline_takes_the_input_size_from_train(folders, tmp_path: Path) -> None:
    """train.image_size/channels are every method's input, so a baseline accepts them."""
    model = tmp_path / "knn"
    argv = _fit_method(folders, model, "knn", "--set", "train.channels=1", "--quiet")
    assert main(argv) == 0
    assert json.loads((model / "model.json").read_text())["input"]["channels"] == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "MODEL", "--out", "OUT/s.png"],
        ["score", "MODEL", "MODEL"],
        ["fit", "--data", "MODEL", "--out", "OUT/m"],
        ["benchmark", "--dataset", "synthetic", "--out", "OUT/b"],
        ["demo", "--out", "OUT/d"],
    ],
)
def test_bad_device_exits_2_in_one_line(fitted, tmp_path: Path, capsys, argv) -> None:
    argv = [a.replace("MODEL", str(fitted[0])).replace("OUT", str(tmp_path)) for a in argv]
    assert main([*argv, "--device", "nonsense"]) == 2
    assert "'nonsense' is not a device name" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []  # nothing was written
    if not torch.cuda.is_available():
        assert main([*argv, "--device", "cuda:1"]) == 2
        assert "CUDA is not available" in _one_error_line(capsys)


def test_sample_on_the_chosen_device(fitted, tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.png"
    assert main(["sample", str(fitted[0]), "--out", str(out), "--n", "16", "--device", "cpu"]) == 0
    assert Image.open(out).size == (16 * 18 + 2, 18 + 2)


def test_export_out_writes_a_complete_model_folder(fitted, folders, tmp_path: Path, capsys):
    """`export --out DIR`: DIR gets model.onnx and the detector's files; the model folder
    is left as it was."""
    pytest.importorskip("onnxruntime")
    from contrasyn.api.export import OnnxDetector
    from contrasyn.data import load_images

    model = fitted[0]
    had_onnx = (model / "model.onnx").exists()
    deploy = tmp_path / "deploy" / "m"
    assert main(["export", str(model), "--out", str(deploy)]) == 0
    assert f"wrote {deploy / 'model.onnx'}" in capsys.readouterr().out
    assert {"model.onnx", "model.json", "model.safetensors"} <= {p.name for p in deploy.iterdir()}
    assert (model / "model.onnx").exists() == had_onnx
    onnx = OnnxDetector(deploy)
    paths = find_images(folders["test"])
    t = onnx.config_.train
    images, _ = load_images(paths, t.image_size, t.channels)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    expected = Detector.load(model, device="cpu").anomaly_score(paths)
    np.testing.assert_allclose(onnx.anomaly_score(x), expected, rtol=0, atol=1e-4)

    (tmp_path / "file").write_text("")
    assert main(["export", str(model), "--out", str(tmp_path / "file")]) == 2
    assert "is not a folder" in _one_error_line(capsys)


VERBS = [
    ["fit"], ["score"], ["evaluate"], ["threshold"], ["export"], ["sample"], ["benchmark"],
    ["demo"], ["report"], ["quality"], ["data"], ["data", "list"], ["data", "info"],
    ["data", "download"],
]  # fmt: skip


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_verb_has_a_description_and_examples(capsys, verb) -> None:
    with pytest.raises(SystemExit) as info:
        main([*verb, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    usage, description = text.split("\n\n")[:2]
    assert usage.startswith(f"usage: contrasyn {' '.join(verb)}")
    assert len(description) > 40 and not description.lstrip().startswith(("options", "positional"))
    examples = text.split("examples:\n", 1)[1].split("\n\n")[0].splitlines()
    assert examples and examples[0].startswith("  contrasyn ")
    assert all(line.startswith(("  contrasyn ", "      ")) for line in examples)
    assert "exit codes:" in text


def test_shared_flags_mean_the_same_on_every_verb(capsys) -> None:
    """--device, --out, --seed and --preset are declared once: the same help wherever they
    appear; every verb that runs a network takes --device."""
    helps: dict[str, set[str]] = {}
    for verb in ("fit", "score", "evaluate", "sample", "benchmark", "demo"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        match = re.search(r"--device DEVICE (.*?\(default auto\))", text)
        assert match, verb
        helps.setdefault("--device", set()).add(match[1])
        assert "--out " in text and "where this command writes:" in text
    assert len(helps["--device"]) == 1


# ------------------------------------------------------------------- evaluate, maps


def _labelled(folders, root: Path) -> Path:
    """anomalib's Folder layout from the test images: good/, arrow/ (anomalous), and a mask
    folder that must be left out."""
    data = root / "labelled"
    shutil.copytree(folders["test"] / "normal", data / "good")
    shutil.copytree(folders["test"] / "anomalous", data / "arrow")
    shutil.copytree(folders["test"] / "anomalous", data / "ground_truth")
    return data


def _report_images(page: Path) -> list[str]:
    return re.findall(r"<img src='([^']+)'", page.read_text())


def test_evaluate_writes_metrics_scores_and_a_report(
    fitted, folders, tmp_path, capsys, monkeypatch
) -> None:
    from contrasyn.api.metrics import auroc

    model = fitted[0]
    data = _labelled(folders, tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", str(model), str(data), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "evaluated 12 images: 6 normal (good), 6 anomalous (1 folder)" in text
    assert "AUROC per anomalous folder: arrow " in text and f"wrote {out / 'report.html'}" in text
    metrics = json.loads((out / "metrics.json").read_text())
    det = Detector.load(model, device="cpu")
    normal, anomalous = find_images(data / "good"), find_images(data / "arrow")
    scores = det.anomaly_score([*normal, *anomalous])
    y = np.r_[np.zeros(6), np.ones(6)]
    assert metrics["metrics"]["auroc"] == pytest.approx(auroc(y, scores))
    assert metrics["per_folder"][0]["folder"] == "arrow"
    assert metrics["per_folder"][0]["auroc"] == pytest.approx(metrics["metrics"]["auroc"])
    at = metrics["at_threshold"]
    flagged = scores > det.threshold_
    assert (at["tp"], at["fn"]) == (int(flagged[6:].sum()), int((~flagged[6:]).sum()))
    assert (at["fp"], at["tn"]) == (int(flagged[:6].sum()), int((~flagged[:6]).sum()))
    assert at["threshold"] == pytest.approx(det.threshold_)
    assert 0 <= metrics["best_f1"]["f1"] <= 1 and metrics["best_f1"]["f1"] >= at["f1"]
    rows = _rows(out / "scores.csv")
    assert len(rows) == 12 and {r["folder"] for r in rows} == {"good", "arrow"}
    assert all(0 <= float(r["anomaly_probability"]) <= 1 for r in rows)
    images = _report_images(out / "report.html")
    assert "report/roc.png" in images and "report/histograms.png" in images
    assert len(images) >= 2 + 8 and all((out / src).is_file() for src in images)
    # the pictures come with their anomaly maps: image and overlay side by side
    tile = Image.open(out / next(s for s in images if "most-anomalous" in s))
    assert tile.size[0] > 2 * tile.size[1]
    # an existing evaluation is not replaced without --overwrite
    assert main(["evaluate", str(model), str(data), "--out", str(out)]) == 2
    assert "--overwrite" in _one_error_line(capsys)
    # relative paths, as typed in a shell (the folders are found below DATA, not twice over)
    monkeypatch.chdir(tmp_path)
    argv = ["evaluate", str(model), "labelled", "--out", "eval", "--overwrite", "--no-maps"]
    assert main([*argv, "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert all((out / src).is_file() for src in _report_images(out / "report.html"))
    assert {r["path"].split("/")[0] for r in _rows(out / "scores.csv")} == {"labelled"}


@pytest.mark.parametrize(
    ("layout", "extra", "needle"),
    [
        ({"fine": 0, "arrow": 1}, [], "no normal folder"),
        ({"good": 0}, [], "no anomalous folder"),
        ({"good": 0, "arrow": None}, [], "no images found"),
        ({"good": 0, "arrow": 1}, ["--normal-dir", "fine"], "no such folder"),
        ({"good": 0, "arrow": 1}, ["--abnormal-dir", "good"], "overlap"),
        ({}, [], "no such folder"),
    ],
)
def test_evaluate_bad_layouts_exit_2(fitted, folders, tmp_path, capsys, layout, extra, needle):
    data = tmp_path / "data"
    if layout:
        data.mkdir()
    sources = [folders["test"] / "normal", folders["test"] / "anomalous"]
    for name, which in layout.items():
        if which is None:
            (data / name).mkdir()
        else:
            shutil.copytree(sources[which], data / name)
    argv = ["evaluate", str(fitted[0]), str(data), "--out", str(tmp_path / "e"), *extra]
    assert main(argv) == 2
    assert needle in _one_error_line(capsys)


def test_evaluate_refuses_an_out_inside_the_data_or_a_model(fitted, folders, tmp_path, capsys):
    data = _labelled(folders, tmp_path)
    for out in (data / "eval", fitted[0] / "eval"):
        assert main(["evaluate", str(fitted[0]), str(data), "--out", str(out)]) == 2
        assert "write elsewhere" in _one_error_line(capsys)


def test_score_maps_writes_one_overlay_per_image(fitted, folders, tmp_path, capsys) -> None:
    model = fitted[0]
    out, maps = tmp_path / "s.csv", tmp_path / "maps"
    argv = ["score", str(model), str(folders["test"]), "--out", str(out), "--maps", str(maps)]
    assert main(argv) == 0
    assert f"anomaly maps: {maps}" in capsys.readouterr().err
    rows = _rows(out)
    assert list(rows[0]) == ["path", "anomaly_score", "anomaly_probability", "label", "map"]
    pngs = sorted(maps.glob("*.png"))
    assert len(pngs) == 12 and sorted(r["map"] for r in rows) == [str(p) for p in pngs]
    assert Image.open(pngs[0]).size == (2 * 128 + 4, 128)  # 16 px shown at 128, side by side
    # existing overlays, a model folder or an input folder: refused before any work
    assert main([*argv[:-4], "--out", str(tmp_path / "t.csv"), "--maps", str(maps)]) == 2
    assert "--overwrite" in _one_error_line(capsys)
    for bad in (model / "maps", folders["test"] / "maps"):
        assert main(["score", str(model), str(folders["test"]), "--maps", str(bad)]) == 2
        assert "write elsewhere" in _one_error_line(capsys)


def test_score_without_held_out_images_leaves_the_probability_empty(folders, tmp_path, capsys):
    model = tmp_path / "knn"
    argv = _fit_method(folders, model, "knn", "--device", "cpu")
    argv[argv.index("--holdout") + 1] = "0"
    assert main(argv) == 0
    out = tmp_path / "s.csv"
    assert main(["score", str(model), str(folders["test"]), "--out", str(out)]) == 0
    rows = _rows(out)
    assert rows and all(r["anomaly_probability"] == "" and r["label"] == "" for r in rows)
