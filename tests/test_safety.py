"""The fault suite of issue 15: nothing a user has is destroyed, no result is silently wrong.

Each numbered case of the issue is reproduced and now refused (one ``contrasyn: error:``
line, exit 2) or handled: outputs never overwrite inputs, models or existing files (and a
full disk keeps the previous file); one writer per model folder (a real lock, stale when its
process dies); every field of a saved model validated; input shapes never guessed; one NaN
policy; the conformal threshold's coverage on synthetic normal scores; large images decoded
at reduced size; progress lines in logs. The models are the tiny preset made smaller (16 px,
width 4, one epoch), so the suite runs in about a minute on one thread.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.stats import norm

from contrasyn.api.calibration import calibrate, conformal_rank, conformal_threshold, min_holdout
from contrasyn.api.detector import Detector
from contrasyn.api.lock import HOLDER_NAME, LOCK_NAME, folder_lock
from contrasyn.checkpoint import atomic_write, read_checkpoint
from contrasyn.cli import main
from contrasyn.data import find_images, load_dataset, load_images
from contrasyn.errors import CheckpointError, ConfigError, DataError, OutputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import large_image_memory  # noqa: E402

FAST = [
    "--preset", "tiny", "--image-size", "16", "--device", "cpu",
    "--set", "train.epochs=1", "--set", "train.width=4",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _fit_argv(data: Path, out: Path, method: str = "csi", *extra: str) -> list[str]:
    argv = ["fit", "--data", str(data), "--out", str(out), "--method", method, "--quiet"]
    if method in ("csi", "csi+g", "full"):
        return [*argv, *FAST, "--holdout", "0.5", *extra]
    return [*argv, "--preset", "tiny", "--image-size", "16", "--holdout", "0.5", *extra]


@pytest.fixture(scope="module")
def csi_model(folders, tmp_path_factory) -> Path:
    """A csi model with 20 held-out images (enough for a 5% guarantee)."""
    model = tmp_path_factory.mktemp("csi") / "model"
    assert main(_fit_argv(folders["good"], model)) == 0
    return model


@pytest.fixture
def model(csi_model, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(csi_model, copy)
    return copy


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.strip().splitlines() if "warning:" not in line]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("contrasyn: error:"), captured.err
    return lines[0]


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def rewrite(model: Path, meta_change=None, tensor_change=None) -> None:
    """Edit a saved model as a determined user would: model.json and the copy of it in the
    safetensors header together, so the two files still agree."""
    from safetensors.numpy import load_file, save_file

    meta = json.loads((model / "model.json").read_text())
    tensors = load_file(str(model / "model.safetensors"))
    if meta_change is not None:
        meta_change(meta)
    if tensor_change is not None:
        tensor_change(tensors)
    text = json.dumps(meta, indent=2, sort_keys=True)
    save_file(tensors, str(model / "model.safetensors"), metadata={"contrasyn": text})
    (model / "model.json").write_text(text + "\n")


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


# ------------------------------------------------ 1. score --out never destroys anything


def test_1_score_out_refuses_an_existing_file_without_overwrite(
    model, folders, tmp_path, capsys
) -> None:
    out = tmp_path / "scores.csv"
    out.write_text("precious\n")
    argv = ["score", str(model), str(folders["test"]), "--out", str(out)]
    assert main(argv) == 2
    assert "exists; pass --overwrite" in _one_error_line(capsys)
    assert out.read_text() == "precious\n"
    assert main([*argv, "--overwrite"]) == 0
    assert len(_rows(out)) == 12


def test_1_score_out_refuses_inputs_and_model_folders(
    model, csi_model, folders, tmp_path, capsys
) -> None:
    image = find_images(folders["test"])[0]
    before = image.read_bytes()
    json_before = (model / "model.json").read_text()
    cases = [
        (image, "one of the input images"),
        (model / "model.json", "inside the model folder"),
        (model / "scores.csv", "inside the model folder"),
        (csi_model / "scores.csv", f"inside the model folder {csi_model}"),
        (folders["test"] / "new.png", "inside the input folder"),
        (folders["test"], "is a folder"),
    ]
    for target, needle in cases:
        argv = ["score", str(model), str(folders["test"]), "--out", str(target), "--overwrite"]
        assert main(argv) == 2, target
        assert needle in _one_error_line(capsys)
    assert image.read_bytes() == before
    assert (model / "model.json").read_text() == json_before
    assert not (folders["test"] / "new.png").exists()
    Detector.load(model, device="cpu")  # still loads


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_1_full_disk_keeps_the_previous_results(
    model, folders, tmp_path, capsys, monkeypatch, where
) -> None:
    out = tmp_path / "results" / "scores.csv"
    out.parent.mkdir()
    out.write_text("previous results\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "fsync":
        monkeypatch.setattr(os, "fsync", full)
    else:  # the write itself fails part-way: a fragment lands in the temporary file
        real = Path.write_text

        def partial(self, text, *args, **kwargs):
            real(self, text[:10])
            full()

        monkeypatch.setattr(Path, "write_text", partial)
    argv = ["score", str(model), str(folders["test"]), "--out", str(out), "--overwrite"]
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert str(out) in err and "No space left on device" in err
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.csv"]


def test_1_atomic_write_error_names_the_file(tmp_path: Path) -> None:
    target = tmp_path / "missing-folder" / "x.txt"
    with pytest.raises(OutputError, match="missing-folder/x.txt: cannot write") as info:
        atomic_write(target, lambda tmp: Path(tmp).write_text("x"))
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOENT


def test_10_csv_cells_cannot_be_spreadsheet_formulas(model, tmp_path, monkeypatch) -> None:
    """Paths beginning with = + - @ get a leading apostrophe in CSV; JSON keeps them."""
    folder = tmp_path / "inputs"
    img = np.zeros((16, 16, 1), np.uint8)
    names = ["=HYPERLINK(1).png", "+1.png", "-2.png", "@SUM.png", "plain.png"]
    folder.mkdir()
    for name in names:
        Image.fromarray(img[..., 0]).save(folder / name)
    monkeypatch.chdir(folder)  # relative paths: the cells begin with the file names
    out = tmp_path / "s.csv"
    assert main(["score", str(model), ".", "--out", str(out), "--quiet"]) == 0
    cells = {r["path"] for r in _rows(out)}
    assert cells == {"'=HYPERLINK(1).png", "'+1.png", "'-2.png", "'@SUM.png", "plain.png"}
    assert main(["score", str(model), ".", "--out", str(tmp_path / "s.json"), "--quiet"]) == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    assert {r["path"] for r in doc["results"]} == set(names)
    for r in _rows(out):  # numbers are not text cells: written as they are (e.g. -0.99)
        assert float(r["anomaly_score"]) == pytest.approx(
            next(d["anomaly_score"] for d in doc["results"] if r["path"].endswith(d["path"]))
        )


# --------------------------------------------------------- 2. one writer per model folder

HOLD = """
import os, signal, sys, time
from contrasyn.api.lock import folder_lock
with folder_lock(sys.argv[1], "contrasyn fit (the test's holder)"):
    print("locked", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)
"""


def _hold(folder: Path, how: str = "hold") -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), how], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_2_second_writer_gets_one_line_naming_folder_and_holder(
    folders, model, tmp_path, capsys
) -> None:
    out = tmp_path / "m"
    holder = _hold(out)
    try:
        assert main(_fit_argv(folders["good"], out, "knn")) == 2
        err = _one_error_line(capsys)
        assert f"{out} is in use by another contrasyn process" in err
        assert f"process {holder.pid} on {socket.gethostname()}" in err
        assert "the test's holder" in err
        assert not (out / "model.json").exists()
    finally:
        holder.kill()  # SIGKILL: its lock is released by the operating system
        holder.wait()
    # the killed holder does not block: the next fit takes the folder
    assert main(_fit_argv(folders["good"], out, "knn")) == 0
    assert not (out / HOLDER_NAME).exists() and (out / LOCK_NAME).exists()

    holder = _hold(model)  # threshold rewrites the model folder: it waits for no one either
    try:
        assert main(["threshold", str(model), "--false-alarm-rate", "0.1"]) == 2
        assert "in use by another contrasyn process" in _one_error_line(capsys)
    finally:
        holder.kill()
        holder.wait()


def test_2_stale_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    proc = _hold(folder, "die")
    assert proc.wait() == -signal.SIGKILL
    assert (folder / HOLDER_NAME).exists()  # what the dead process left
    with folder_lock(folder, "next"):
        assert json.loads((folder / HOLDER_NAME).read_text())["pid"] == os.getpid()
        with folder_lock(folder):  # re-entrant within a process
            pass
    assert not (folder / HOLDER_NAME).exists()


def test_2_concurrent_fits_on_one_folder(folders, tmp_path: Path, capsys) -> None:
    """A real second `contrasyn fit` while the first trains: refused; the first finishes with
    its own model and one uninterrupted metrics.jsonl."""
    out = tmp_path / "m"
    argv = _fit_argv(folders["good"], out, "csi", "--set", "train.epochs=60")
    first = subprocess.Popen(
        [sys.executable, "-m", "contrasyn.cli", *argv],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / HOLDER_NAME).exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert main(argv) == 2
        err = _one_error_line(capsys)
        assert f"process {first.pid}" in err and "in use" in err
    finally:
        _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    records = [json.loads(line) for line in (out / "checkpoints" / "metrics.jsonl").open()]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)) and steps[-1] == 59  # one run, not interleaved
    Detector.load(out, device="cpu")


# ----------------------------------------------------------- 3. input shapes, never guessed


@pytest.fixture(scope="module")
def knn() -> tuple[Detector, np.ndarray]:
    ds = load_dataset("synthetic", n_train_per_class=40, n_test_per_class=4, size=16)
    train = ds.train_images[ds.train_labels == 0]
    det = Detector(method="knn", preset="tiny", image_size=16, holdout=0.5, progress=False)
    return det.fit(train), ds.test_images


def test_3_one_colour_image_is_one_image(knn) -> None:
    det, images = knn
    rgb = np.repeat(images[0], 3, axis=2)  # (16, 16, 3)
    assert det.anomaly_score(rgb).shape == (1,)
    np.testing.assert_allclose(det.anomaly_score(rgb), det.anomaly_score(rgb[None]))
    assert det.predict(rgb).shape == (1,)
    grey = images[0, ..., 0]  # (16, 16): one grey image
    np.testing.assert_allclose(det.anomaly_score(grey), det.anomaly_score(images[:1]))
    with pytest.raises(DataError, match="1 training image"):
        Detector(method="knn", preset="tiny", image_size=16).fit(rgb)


def test_3_layouts_and_floats_give_the_same_scores(knn) -> None:
    det, images = knn
    x = images[:5]  # uint8 (5, 16, 16, 1)
    reference = det.anomaly_score(x)
    np.testing.assert_allclose(det.anomaly_score(x[..., 0]), reference)  # (N, H, W)
    np.testing.assert_allclose(det.anomaly_score(x.transpose(0, 3, 1, 2)), reference)  # NCHW
    floats = x.astype(np.float32) / 255
    np.testing.assert_allclose(det.anomaly_score(floats), reference, atol=1e-5)
    np.testing.assert_allclose(
        det.anomaly_score(floats.transpose(0, 3, 1, 2).astype(np.float64)), reference, atol=1e-5
    )


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.zeros((3, 16, 16), np.uint8), "ambiguous"),
        (np.zeros((2, 3, 16, 3), np.uint8), "ambiguous"),
        (np.zeros((2, 16, 16, 5), np.uint8), "no channel axis"),
        (np.zeros((2, 2, 16, 16, 3), np.uint8), "dimensions"),
        (np.zeros((0, 16, 16, 3), np.uint8), "empty"),
        (np.full((1, 16, 16, 3), 2.0), r"\[0, 1\]"),
        (np.full((1, 16, 16, 3), np.nan), r"\[0, 1\]"),
        (np.zeros((1, 16, 16, 3), np.int64), "uint8"),
    ],
)
def test_3_and_5_ambiguous_or_empty_inputs_are_refused(knn, array, needle) -> None:
    det, _ = knn
    with pytest.raises(DataError, match=needle):
        det.predict(array)


def test_3_other_inputs_are_refused_clearly(knn) -> None:
    det, images = knn
    with pytest.raises(DataError, match="image file paths"):
        det.predict([images[0], images[1]])
    with pytest.raises(DataError, match="empty"):
        det.predict([])
    with pytest.raises(DataError, match="finite floats"):
        det.predict(torch.full((1, 3, 16, 16), float("nan")))


# ------------------------------------------------------ 4 and 5. every saved field validated


def _set(path: str, value):
    def change(meta: dict) -> None:
        *parents, last = path.split(".")
        node = meta
        for key in parents:
            node = node[key]
        node[last] = value

    return change


def _tensor(name: str, edit):
    def change(tensors: dict) -> None:
        tensors[name] = edit(tensors[name].copy())

    return change


def _nan_first(a: np.ndarray) -> np.ndarray:
    a.reshape(-1)[0] = np.nan
    return a


BAD_MODELS = [
    ("nan threshold", _set("threshold", float("nan")), None, "threshold must be a finite"),
    ("inf threshold", _set("threshold", float("inf")), None, "threshold must be a finite"),
    ("string threshold", _set("threshold", "0.5"), None, "threshold must be a finite"),
    ("rate 5", _set("false_alarm_rate", 5), None, "false_alarm_rate must be a number in (0, 1)"),
    ("bool rate", _set("false_alarm_rate", True), None, "false_alarm_rate must be"),
    ("int version", _set("versions.contrasyn", 0), None, "'versions' must map names"),
    ("batch 0", _set("config.score.batch_size", 0), None, "score.batch_size must be >= 1"),
    ("width text", _set("config.train.width", "wide"), None, "config.train.width must be 64-bit"),
    ("huge width", _set("config.train.width", 10**6), None, "do not fit the config"),
    ("huge input", _set("input.image_size", 10**9), None, "input must be"),
    ("method", _set("method", "gan"), None, "method must be one of"),
    ("n_holdout", _set("n_holdout", 3), None, "n_holdout must be"),
    ("nan bank", None, _tensor("scorer.bank_h", _nan_first), "scorer.bank_h holds NaN"),
    ("nan holdout", None, _tensor("holdout_scores", _nan_first), "holdout_scores holds NaN"),
    ("bank shape", None, _tensor("scorer.bank_z", lambda a: a[..., :-1].copy()), "bank_z is"),
    ("bank rows", None, _tensor("scorer.bank_h", lambda a: a[:-1].copy()), "the bank holds"),
    ("weight shape", None, _tensor("model.shift_head.bias", lambda a: a[:-1].copy()), "fit"),
    # issue 27, case 13: consistent re-signs that loaded before
    ("extra tensor", None, lambda t: t.update(evil=np.zeros(3, np.float32)), "unknown tensor"),
    ("bank vs n_train", _set("n_train", 999), None, "bank holds 20 training images, n_train"),
    ("augment", _set("config.score.augment", True), None, "deterministic must be false"),
]


@pytest.mark.parametrize(
    ("meta_change", "tensor_change", "needle"),
    [case[1:] for case in BAD_MODELS],
    ids=[case[0] for case in BAD_MODELS],
)
def test_4_and_5_bad_fields_are_one_line_and_exit_2(
    model, folders, capsys, meta_change, tensor_change, needle
) -> None:
    rewrite(model, meta_change, tensor_change)
    with pytest.raises(CheckpointError):
        Detector.load(model, device="cpu")
    argv = ["score", str(model), str(folders["test"]), "--fail-on-anomaly"]
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert needle in err and str(model) in err


def test_4_nan_scores_are_anomalies_in_the_cli_and_the_api(
    model, folders, tmp_path, capsys, monkeypatch
) -> None:
    """One policy: an image whose score is not finite is anomalous (predict -1, CLI label
    'anomaly', --fail-on-anomaly exit 3), with one warning line."""
    from contrasyn.methods.csi import CSIFamily

    det = Detector.load(model, device="cpu")
    calm = min(find_images(folders["test"]), key=lambda p: det.anomaly_score(p)[0])
    assert det.predict(calm)[0] == 1
    real = CSIFamily.score_samples

    def broken(self, images):
        scores = real(self, images)
        return {k: torch.full_like(v, float("nan")) for k, v in scores.items()}

    monkeypatch.setattr(CSIFamily, "score_samples", broken)
    with pytest.warns(UserWarning, match="non-finite"):
        assert det.predict(calm)[0] == -1
    out = tmp_path / "s.csv"
    argv = ["score", str(model), str(calm), "--out", str(out), "--fail-on-anomaly"]
    assert main(argv) == 3
    assert _rows(out)[0]["label"] == "anomaly"
    err = capsys.readouterr().err
    assert "contrasyn: warning: 1 of 1 image(s) got a non-finite feat score" in err
    assert ": 1 anomalous" in err and "Traceback" not in err
    assert main(["score", str(model), str(calm), "--format", "json", "--quiet"]) == 0
    row = json.loads(capsys.readouterr().out)["results"][0]
    assert row["anomaly_score"] is None and row["label"] == "anomaly"


def test_4_old_models_load_with_their_threshold(model) -> None:
    """A model saved before the conformal rule (no calibration) keeps its threshold; the
    interval is computed on load from the held-out scores."""
    threshold = json.loads((model / "model.json").read_text())["threshold"]
    rewrite(model, lambda meta: meta.pop("calibration"))
    det = Detector.load(model, device="cpu")
    assert det.threshold_ == threshold
    assert det.calibration_.n == 20 and 0 < det.calibration_.low < det.calibration_.high < 1


MUTABLE = [
    "threshold", "false_alarm_rate", "contamination", "method", "preset", "resize", "seed",
    "n_train", "n_holdout", "score", "input", "input.image_size", "input.channels",
    "calibration", "versions", "versions.contrasyn", "config", "config.train.width",
    "config.train.channels", "config.train.image_size", "config.train.proj_dim",
    "config.train.num_shifts", "config.train.method", "config.train.stem",
    "config.score.score", "config.score.batch_size", "config.score.chunk",
    "config.score.augment", "config.score.ensemble", "config.score.index", "config.score",
]  # fmt: skip
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(0, 3), max_size=2),
    st.sampled_from(["csi", "full", "knn", "feat", "paper", "exact", "faiss", "fit", "pad", 1, 3]),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(field=st.sampled_from(MUTABLE), value=VALUES)
@example(field="versions.contrasyn", value="\n")  # once printed a line break in the error
def test_4_any_rewritten_field_loads_validly_or_is_refused(csi_model, tmp_path, field, value):
    """Hypothesis: a field of model.json (and of the header) rewritten with a random type and
    value gives either CheckpointError (exit 2 in the CLI) or a detector that is valid:
    finite threshold, rates in (0, 1), and it scores."""
    model = tmp_path / f"m{time.monotonic_ns()}"
    shutil.copytree(csi_model, model)
    try:
        rewrite(model, _set(field, value))
        try:
            det = Detector.load(model, device="cpu")
        except CheckpointError as e:
            assert "\n" not in str(e)
            return
        assert det.threshold_ is None or np.isfinite(det.threshold_)
        assert 0 < det.flag_rate < 1
        assert det.input_["channels"] in (1, 3)
        if not det.config_.score.augment or det.config_.score.ensemble <= 4:
            scores = det.anomaly_score(np.zeros((2, 16, 16, 1), np.uint8))
            assert scores.shape == (2,)
    finally:
        shutil.rmtree(model, ignore_errors=True)


def test_5_cli_maps_a_bad_field_to_exit_2(model, folders, capsys) -> None:
    rewrite(model, _set("config.train", ["not", "a", "mapping"]))
    assert main(["score", str(model), str(folders["test"])]) == 2
    assert "config.train must be a mapping" in _one_error_line(capsys)


def test_5_full_disk_during_fit_is_one_line(folders, tmp_path, capsys, monkeypatch) -> None:
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "m"
    assert main(_fit_argv(folders["good"], out)) == 2
    err = _one_error_line(capsys)
    assert "checkpoints/last.safetensors: cannot write (No space left on device)" in err
    assert not (out / "model.json").exists() and not _temporaries(out)


# ----------------------------------------------------------- 6. set_threshold changes nothing


def test_6_a_bad_rate_changes_nothing_and_save_refuses_bad_state(knn, tmp_path) -> None:
    det, _ = knn
    det.set_threshold(false_alarm_rate=0.2)
    before = (det.false_alarm_rate, det.contamination, det.threshold_)
    for bad in (float("nan"), float("inf"), 1.5, 0, "0.1", True, None):
        with pytest.raises(ConfigError, match=r"\(0, 1\)"):
            if bad is None:
                det.set_threshold(contamination=float("nan"))
            else:
                det.set_threshold(false_alarm_rate=bad)
        assert (det.false_alarm_rate, det.contamination, det.threshold_) == before
    det.save(tmp_path / "m")
    assert Detector.load(tmp_path / "m").false_alarm_rate == 0.2
    det.false_alarm_rate = float("nan")  # set by hand: save refuses, writes nothing
    with pytest.raises(ConfigError, match="false_alarm_rate"):
        det.save(tmp_path / "m2")
    assert not (tmp_path / "m2").exists()
    det.false_alarm_rate = 0.2


# --------------------------------------------------------------- 7. --out inside --data


def test_7_model_folder_inside_the_data_is_refused(folders, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(folders["good"], data)
    before = sorted(p.name for p in data.rglob("*"))
    for out in (data / "model", data):
        assert main(_fit_argv(data, out)) == 2
        assert "is inside --data" in _one_error_line(capsys)
    assert sorted(p.name for p in data.rglob("*")) == before


# ------------------------------------------------------ 8. a kill during the final save

KILL_SAVE = """
import os, signal, sys
real = os.replace
def replace(src, dst, *args, **kwargs):
    if str(dst).endswith("model.json"):  # model.safetensors is renamed in; model.json not yet
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)
os.replace = replace
from contrasyn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_8_kill_during_the_final_save_then_rerun(folders, tmp_path, capsys) -> None:
    out = tmp_path / "m"
    argv = _fit_argv(folders["good"], out)
    run = subprocess.run(
        [sys.executable, "-c", KILL_SAVE, *argv], env=ENV, capture_output=True, text=True
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert [p.name[:12] for p in _temporaries(out)] == [".model.json."]
    assert main(["score", str(out), str(folders["test"])]) == 2  # not a finished model
    assert "training has not finished" in _one_error_line(capsys)
    argv.remove("--quiet")
    assert main(argv) == 0  # resumes the finished run and saves again
    captured = capsys.readouterr()
    assert "left by an interrupted save" in captured.err
    assert not _temporaries(out)
    Detector.load(out, device="cpu")


# ---------------------------------------------------------------- 9. one mode for every file


def test_9_every_saved_file_gets_the_umask_mode(folders, tmp_path) -> None:
    old = os.umask(0o027)
    try:
        out = tmp_path / "m"
        argv = _fit_argv(folders["good"], out, "full")
        assert main(argv) == 0
        argv = ["score", str(out), str(folders["test"]), "--out", str(tmp_path / "s.csv")]
        assert main(argv) == 0
        assert main(["sample", str(out), "--out", str(tmp_path / "g.png"), "--n", "16"]) == 0
    finally:
        os.umask(old)
    files = [
        out / "model.safetensors",
        out / "model.json",
        out / "samples.png",
        out / "checkpoints" / "last.safetensors",
        out / "checkpoints" / "last.json",
        tmp_path / "s.csv",
        tmp_path / "g.png",
    ]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {
        f.name: "0o640" for f in files
    }


# ------------------------------------------------------------------------ 10. smaller


def test_10_dangling_symlink_is_skipped_with_a_warning(folders, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(folders["good"], data)
    (data / "gone.png").symlink_to(tmp_path / "nowhere.png")
    out = tmp_path / "m"
    assert main(_fit_argv(data, out, "knn")) == 0
    err = capsys.readouterr().err
    assert "contrasyn: warning: skipped 1 symbolic link(s) to missing files" in err
    assert "gone.png" in err and "Traceback" not in err


def test_10_pillow_warnings_are_one_contrasyn_line(model, folders, capsys, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # 16 x 16 = 256: "could be a bomb"
    assert main(["score", str(model), str(folders["test"] / "normal"), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("contrasyn: warning: Pillow warned about 6 file(s):")
    assert "decompression bomb" in err[0]


def test_10_large_images_are_reduced_before_conversion(tmp_path, monkeypatch) -> None:
    """The decoded size: a JPEG via its DCT scale (draft), other formats by reduce() before
    the mode conversions; the result stays within a few levels of a full-size resize."""
    from contrasyn.data import folder

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (40, 60, 3), np.uint8)
    big = np.asarray(Image.fromarray(small).resize((1200, 800), Image.Resampling.BILINEAR))
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)
    rgba = np.dstack([big, np.full(big.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "big.png")
    reduced, resized = [], []
    real_reduce, real_reshape = Image.Image.reduce, folder._reshape

    def spy_reduce(self, factor, box=None):
        reduced.append((self.mode, self.size, factor))
        return real_reduce(self, factor, box)

    def spy_reshape(img, size, resize):
        resized.append(img.size)
        return real_reshape(img, size, resize)

    monkeypatch.setattr(Image.Image, "reduce", spy_reduce)
    monkeypatch.setattr(folder, "_reshape", spy_reshape)
    jpg, _ = load_images([tmp_path / "big.jpg"], 32)
    # decoded at 1/8 scale (150 x 100 keeps 3x the 32-pixel target), nothing more to reduce
    assert reduced == [] and resized == [(150, 100)]
    png, _ = load_images([tmp_path / "big.png"], 32)
    # (Pillow reduces RGBA as premultiplied RGBa: the second record is its own)
    assert reduced[0] == ("RGBA", (1200, 800), (12, 8)) and resized[1] == (100, 100)
    monkeypatch.undo()

    def full_size(path: Path) -> np.ndarray:  # what decoding at full size gives
        with Image.open(path) as img:
            img.load()
            rgb = folder._standardise(img)
        return np.asarray(rgb.resize((32, 32), Image.Resampling.BILINEAR)).astype(int)

    for got, path in ((jpg, "big.jpg"), (png, "big.png")):
        diff = np.abs(got[0].astype(int) - full_size(tmp_path / path))
        assert diff.mean() < 1.5 and diff.max() <= 12, (path, diff.mean(), diff.max())


@pytest.mark.parametrize(("name", "mode", "side", "low_mb", "limit_mb"), [
    ("big.jpg", "L", 10000, 0, 30),  # 100 MB decoded at full size; 1/8: 1.6 MB
    ("big.png", "RGBA", 5000, 100, 260),  # 100 MB decoded: + one premultiplied copy, not 4 more
])  # fmt: skip
def test_10_memory_bound_for_a_large_image(tmp_path, name, mode, side, low_mb, limit_mb) -> None:
    """The peak of a fresh process loading the image (benchmarks/large_image_memory.py, which
    measures the README's figures), within bounds: at least the decoded PNG (so the
    measurement sees the decoding), and no more than the limit."""
    arr = np.zeros((side, side, len(mode)), np.uint8)
    arr[::97] = 255
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(tmp_path / name)
    del arr
    grown = large_image_memory.measure(tmp_path / name, runs=1)["peak_growth_MB"]
    assert low_mb <= grown < limit_mb, grown


# ----------------------------------------------------- 11. a threshold that keeps its promise


@pytest.mark.parametrize(
    ("n", "rate", "old_misses"),
    [(20, 0.05, True), (68, 0.05, True), (50, 0.1, True), (200, 0.01, True), (9, 0.1, False)],
)
def test_11_conformal_threshold_coverage_on_synthetic_normal_scores(n, rate, old_misses) -> None:
    """Over many draws of n held-out normal scores, the false-alarm rate on new normal images
    at the conformal threshold (exact here: 1 - Phi(t)) averages at most the target, and the
    saved 90% interval holds the realised rate in about 90% of draws."""
    draws = 20000
    rng = np.random.default_rng(n)
    held = rng.standard_normal((draws, n))
    thresholds = np.array([conformal_threshold(h, rate) for h in held[:2000]])
    k = conformal_rank(n, rate)
    np.testing.assert_array_equal(thresholds, np.sort(held[:2000], axis=1)[:, k - 1])
    realised = norm.sf(np.sort(held, axis=1)[:, k - 1])
    se = realised.std() / np.sqrt(draws)
    assert realised.mean() <= rate + 3 * se
    assert realised.mean() == pytest.approx((n + 1 - k) / (n + 1), abs=4 * se)
    cal = calibrate(held[0], np.sort(held[0])[k - 1], rate)
    assert cal.guaranteed and cal.rank == k
    inside = ((realised >= cal.low) & (realised <= cal.high)).mean()
    assert inside == pytest.approx(0.9, abs=0.01)
    # the quantile rule it replaces flags more than promised on small held-out sets
    old = norm.sf(np.quantile(held, 1 - rate, axis=1, method="inverted_cdf")).mean()
    assert (old > rate + 3 * se) == old_misses


def test_11_too_few_held_out_images_is_said() -> None:
    assert min_holdout(0.05) == 19 and conformal_rank(19, 0.05) == 19
    held = np.arange(10.0)
    assert conformal_threshold(held, 0.05) == 9.0  # the highest: k = 11 > n = 10
    cal = calibrate(held, 9.0, 0.05)
    assert not cal.guaranteed and cal.expected == pytest.approx(1 / 11)
    assert "cannot be guaranteed with so few images (at least 19" in cal.describe()
    cal = calibrate(np.arange(68.0), 65.0, 0.05)
    assert cal.describe().startswith(
        "5% target; with 68 held-out images the rate on new normal images is between 1.2% and "
        "9.0% with 90% confidence"
    )


def test_11_fit_and_threshold_print_and_save_the_interval(folders, tmp_path, capsys) -> None:
    out = tmp_path / "m"
    argv = _fit_argv(folders["good"], out, "ocsvm", "--holdout", "0.25")  # it learns: held out
    argv.remove("--quiet")
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "5% target; with 10 held-out images the rate on new normal images is between" in (
        captured.out
    )
    assert "--holdout" in captured.out and "drift" in captured.out
    assert "cannot be guaranteed with so few images" in captured.err  # 10 < 19
    saved = json.loads((out / "model.json").read_text())["calibration"]
    assert saved["rule"] == "conformal" and saved["n_holdout"] == 10
    assert not saved["guaranteed"] and saved["confidence"] == 0.9
    assert main(["threshold", str(out), "--false-alarm-rate", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "(it is the 6th smallest of them)" in text
    assert "50% target; with 10 held-out images" in text
    _, meta = read_checkpoint(out / "model", "numpy")
    assert meta["calibration"]["rank"] == 6 and meta["calibration"]["guaranteed"]
    # kNN only stores its images: all 40 calibrate, leave-one-out, and 5% is guaranteed
    assert main(_fit_argv(folders["good"], tmp_path / "k", "knn", "--holdout", "0.25")) == 0
    saved = json.loads((tmp_path / "k" / "model.json").read_text())["calibration"]
    assert (saved["scores"], saved["n_holdout"], saved["guaranteed"]) == ("leave-one-out", 40, True)


# ------------------------------------------------------------- progress when not a terminal


def test_fit_prints_progress_lines_when_not_a_terminal(folders, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CONTRASYN_PROGRESS_SECONDS", "0.05")
    argv = _fit_argv(folders["good"], tmp_path / "m", "csi", "--set", "train.epochs=30")
    argv.remove("--quiet")
    text = StringIO()
    with redirect_stdout(text):
        assert main(argv) == 0
    lines = [line for line in text.getvalue().splitlines() if "elapsed" in line]
    assert lines and all(line.startswith("contrasyn fit: training csi") for line in lines)
    assert any("/30 (" in line for line in lines)  # the step reached, from metrics.jsonl


# ------------------------------------------------------- issue 27: the last fourteen holes


def test_27_1_safetensors_full_disk_is_one_line(model, folders, tmp_path, capsys, monkeypatch):
    """safetensors reports a full disk as its own SafetensorError, not an OSError: fit and
    threshold still end in one line naming the file, and keep what was there."""
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "m"
    assert main(_fit_argv(folders["good"], out, "knn")) == 2
    err = _one_error_line(capsys)
    assert f"{out / 'model.safetensors'}: cannot write (No space left on device)" in err
    before = (model / "model.json").read_text()
    assert main(["threshold", str(model), "--false-alarm-rate", "0.2"]) == 2
    assert "model.safetensors: cannot write (No space left on device)" in _one_error_line(capsys)
    assert (model / "model.json").read_text() == before and not _temporaries(model)


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        (["--set", "train.epochs=abc"], "train.epochs must be 64-bit int, got 'abc'"),
        (["--set", "train.epochs=1e9"], "train.epochs must be 64-bit int, got '1e9'"),
        (["--set", "train.epochs="], "train.epochs must be 64-bit int, got None"),
        (["--set", "train.epochs=1000000000000000000000"], "train.epochs must be 64-bit int"),
        (["--set", "train.temperature=nan"], "train.temperature must be finite float"),
        (["--set", "train.temperature=.nan"], "train.temperature must be finite float, got nan"),
        (["--set", "train.base_lr=inf"], "train.base_lr must be finite float"),
        (["--set", "train.base_lr=-1"], "train.base_lr must be > 0, got -1"),
        (["--set", "train.crop_scale=2"], "train.crop_scale must be tuple[finite float"),
        (["--set", "train.crop_scale=[0.5, 2]"], "train.crop_scale must be [low, high]"),
        (["--set", "train.momentum=1"], "train.momentum must be in [0, 1)"),
        (["--set", "train.optimizer=adam"], "train.optimizer must be one of lars, sgd"),
        (["--set", "score.seed=-1"], "score.seed must be an integer in [0, 2**63)"),
        (["--config", "CONFIG"], "train.epochs must be 64-bit int, got '3'"),
        (["--method", "rot", "--set", "rot.lr=0"], "method 'rot': rot.lr must be > 0"),
        (["--method", "knn", "--set", "knn.k=1.5"], "method 'knn': k must be 64-bit int"),
    ],
)
def test_27_2_bad_settings_are_one_line_before_any_folder(
    folders, tmp_path, capsys, settings, needle
) -> None:
    (tmp_path / "c.yaml").write_text('train: {epochs: "3"}\n')
    settings = [str(tmp_path / "c.yaml") if s == "CONFIG" else s for s in settings]
    out = tmp_path / "m"
    method, settings = (
        (settings[1], settings[2:]) if settings[0] == "--method" else ("csi", settings)
    )
    argv = _fit_argv(folders["good"], out, method)
    if "--config" in settings:  # --set beats --config: leave train.epochs to the file
        del argv[argv.index("train.epochs=1") - 1 : argv.index("train.epochs=1") + 1]
    argv += settings  # the last --set wins
    assert main(argv) == 2
    assert needle in _one_error_line(capsys)
    assert not out.exists()  # checked before any folder is made


def test_27_2_api_settings_are_checked_too() -> None:
    images = np.zeros((4, 16, 16, 1), np.uint8)
    for kwargs, needle in [
        ({"epochs": "3"}, "train.epochs must be 64-bit int"),
        ({"temperature": float("nan")}, "train.temperature must be finite float"),
        ({"crop_scale": (0.9, 0.1)}, "train.crop_scale must be"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            Detector(preset="tiny", progress=False, settings={"train": kwargs}).fit(images)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--holdout", "nan"], "--holdout must be a number in [0, 1), got nan"),
        (["--holdout", "-0.1"], "--holdout must be a number in [0, 1)"),
        (["--seed", "-1"], "--seed must be an integer in [0, 2**63), got -1"),
        (["--seed", "99999999999999999999999"], "--seed must be an integer in [0, 2**63)"),
        (["--false-alarm-rate", "nan"], "--false-alarm-rate must be a number in (0, 1)"),
        (["--draws", "-1"], "--draws must be an integer in [0, 1000]"),
        (["--image-size", "0"], "--image-size must be an integer in [1, 8192]"),
    ],
)
def test_27_3_cli_numbers_are_range_checked(folders, tmp_path, capsys, extra, needle) -> None:
    out = tmp_path / "m"
    assert main([*_fit_argv(folders["good"], out, "csi"), *extra]) == 2
    assert needle in _one_error_line(capsys)
    assert not out.exists()


def test_27_3_other_verbs_check_their_numbers(model, tmp_path, capsys) -> None:
    for argv, needle in [
        (["sample", str(model), "--out", str(tmp_path / "s.png"), "--seed", "-1"], "--seed"),
        (["threshold", str(model), "--false-alarm-rate", "inf"], "--false-alarm-rate must be"),
        (
            [
                "benchmark",
                "--dataset",
                "synthetic",
                "--seeds",
                "0,-2",
                "--out",
                str(tmp_path / "b"),
            ],
            "--seeds must be",
        ),
    ]:
        assert main(argv) == 2, argv
        assert needle in _one_error_line(capsys)


def test_27_4_ctrl_c_at_any_moment_of_start_up(folders, tmp_path) -> None:
    """SIGINT while Python imports torch (or later): the one line and 130, never a
    traceback (KeyboardInterrupt, or "cannot load module more than once" from re-importing
    a half-imported torch on the way out)."""
    argv = [sys.executable, "-m", "contrasyn", *_fit_argv(folders["good"], tmp_path / "m")]
    for delay in (0.1, 0.3, 0.6, 1.0, 1.5):
        run = subprocess.Popen(argv, env=ENV, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=120)
        # 130, or ended by SIGINT itself (a shell shows 130 too): Python does that at exit
        # when a KeyboardInterrupt went through its C API's exec (torch's lazy imports)
        assert run.returncode in (130, -signal.SIGINT) and "Traceback" not in err, (delay, err)
        assert (
            err.strip().splitlines()[-1]
            == "contrasyn: interrupted; rerun the same command to resume"
        )


def test_27_5_control_characters_in_names_are_quoted(model, tmp_path) -> None:
    """A carriage return (or any control character) in a file name stays inside its cell,
    in score --out and in evaluate's scores.csv; no row starts with an unescaped =."""
    names = ["a\r=cmd.png", "b\x1b[31m.png", "c\u2028d.png", "plain.png"]
    data = tmp_path / "data"
    for folder in ("good", "bad"):
        (data / folder).mkdir(parents=True)
        for name in names:
            Image.fromarray(np.zeros((16, 16), np.uint8)).save(data / folder / name, "PNG")
    out = tmp_path / "s.csv"
    assert main(["score", str(model), str(data / "good"), "--out", str(out), "--quiet"]) == 0
    rows = _rows(out)
    assert sorted(Path(r["path"]).name for r in rows) == sorted(names)
    Detector.load(model, device="cpu").evaluate(data, out=tmp_path / "ev", maps=False)
    rows = _rows(tmp_path / "ev" / "scores.csv")
    assert sorted(Path(r["path"]).name for r in rows) == sorted(names * 2)
    assert all(r["label"] in ("normal", "anomaly") for r in rows)


def test_27_6_two_writers_of_one_new_out(model, folders, tmp_path, capsys, monkeypatch) -> None:
    """Both runs find --out free; the other finishes first: this one is refused, its result
    stays, rather than both exiting 0 with one file."""
    out = tmp_path / "same.csv"
    real = Detector.anomaly_score

    def other_run_finishes_first(self, X):
        out.write_text("the other run's results\n")
        return real(self, X)

    monkeypatch.setattr(Detector, "anomaly_score", other_run_finishes_first)
    assert main(["score", str(model), str(folders["test"]), "--out", str(out)]) == 2
    assert "same.csv: exists (another process wrote it first)" in _one_error_line(capsys)
    assert out.read_text() == "the other run's results\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "model") == ["same.csv"]


def test_27_7_overwrite_replaces_only_regular_files(model, folders, tmp_path, capsys) -> None:
    fifo, link, target = tmp_path / "fifo", tmp_path / "link.csv", tmp_path / "target.csv"
    os.mkfifo(fifo)
    target.write_text("kept\n")
    link.symlink_to(target)
    for path, kind in ((fifo, "a fifo"), (link, "a symbolic link")):
        argv = ["score", str(model), str(folders["test"]), "--out", str(path), "--overwrite"]
        assert main(argv) == 2
        assert f"is {kind}, not a regular file" in _one_error_line(capsys)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert target.read_text() == "kept\n"
    with pytest.raises(OutputError, match="is a fifo, not a regular file"):
        atomic_write(fifo, lambda tmp: Path(tmp).write_text("x"))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_27_8_another_method_needs_overwrite_and_clears_its_files(folders, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(_fit_argv(folders["good"], out, "full")) == 0
    assert (out / "samples.png").is_file() and (out / "checkpoints" / "last.json").is_file()
    before = (out / "model.json").read_text()
    assert main(_fit_argv(folders["good"], out, "knn")) == 2
    assert f"--out {out} holds a model of method full" in _one_error_line(capsys)
    assert (out / "model.json").read_text() == before
    assert main([*_fit_argv(folders["good"], out, "knn"), "--overwrite"]) == 0
    assert "deleting the full model" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "model.json", "model.safetensors"]
    assert Detector.load(out, device="cpu").method_.name == "knn"
    assert main([*_fit_argv(folders["good"], out, "knn"), "--overwrite"]) == 0  # same method


def test_27_9_detector_save_has_the_cli_guards(knn, folders, model, tmp_path) -> None:
    det, _ = knn
    det.save(tmp_path / "a")
    before = (tmp_path / "a" / "model.json").read_text()
    for target in (tmp_path / "a", model):  # itself again, or another model
        with pytest.raises(ConfigError, match="already holds a model"):
            det.save(target)
    assert (tmp_path / "a" / "model.json").read_text() == before
    det.save(tmp_path / "a", overwrite=True)
    on_files = Detector(method="knn", preset="tiny", image_size=16, progress=False)
    on_files.fit(str(folders["good"]))
    for target in (folders["good"], folders["good"] / "model"):
        with pytest.raises(ConfigError, match="holds the images this detector was fitted on"):
            on_files.save(target, overwrite=True)
    assert not (folders["good"] / "model").exists()
    assert not (folders["good"] / "model.json").exists()


def test_27_10_a_failed_fit_leaves_no_lock_and_the_message_names_one(
    folders, model, tmp_path, capsys
) -> None:
    five = tmp_path / "five"
    five.mkdir()
    for path in find_images(folders["good"])[:5]:
        shutil.copy(path, five)
    made, existing = tmp_path / "new" / "m", tmp_path / "existing"
    existing.mkdir()
    for out in (made, existing):
        assert main(_fit_argv(five, out, "ocsvm", "--holdout", "0.9")) == 2
        assert "training needs at least 2" in _one_error_line(capsys)
    assert not (tmp_path / "new").exists() and list(existing.iterdir()) == []
    argv = ["score", str(model), str(folders["test"]), "--quiet", "--out"]
    assert main([*argv, str(existing / "s.csv")]) == 0  # not taken for a model folder
    (existing / LOCK_NAME).touch()  # what a fit that is running, or stopped, holds
    assert main([*argv, str(existing / "t.csv")]) == 2
    assert f"which holds {existing / LOCK_NAME}, the lock of a `contrasyn fit`" in (
        _one_error_line(capsys)
    )


def test_27_11_threads_are_checked_against_the_cores(model, folders, capsys, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    argv = ["score", str(model), str(folders["test"] / "normal"), "--quiet", "--threads"]
    assert main([*argv, "1000"]) == 2
    assert "--threads 1000 is far more than the 2 core(s)" in _one_error_line(capsys)
    threads = torch.get_num_threads()
    try:
        assert main([*argv, "3"]) == 0
        assert "contrasyn: warning: --threads 3 is more than the 2 core(s)" in (
            capsys.readouterr().err
        )
    finally:
        torch.set_num_threads(threads)


def test_27_12_five_images_with_the_default_holdout(folders, tmp_path, capsys) -> None:
    images = load_images(find_images(folders["good"])[:5], 16)[0]
    det = Detector(method="ocsvm", preset="tiny", image_size=16, progress=False)
    with pytest.warns(UserWarning, match="cannot be guaranteed"):
        det.fit(images)
    assert (det.n_train_, len(det.holdout_scores_)) == (4, 1) and det.threshold_ is not None
    with pytest.raises(DataError, match=r"2 training image\(s\) with holdout=0.1: 1 held out"):
        det.fit(images[:2])
    # kNN holds none out: all 5 calibrate (still too few for 5%), and 2 images are enough
    knn = Detector(method="knn", preset="tiny", image_size=16, progress=False)
    with pytest.warns(UserWarning, match="at least 19 images are needed"):
        knn.fit(images)
    assert (knn.n_train_, len(knn.holdout_scores_)) == (5, 5) and knn.leave_one_out_
    with pytest.warns(UserWarning, match="with 2 training images each scored against"):
        knn.fit(images[:2])


def test_27_13_meta_tensors_are_refused_clearly(knn) -> None:
    det, _ = knn
    with pytest.raises(DataError, match="meta device"):
        det.predict(torch.zeros(2, 3, 16, 16, device="meta"))
