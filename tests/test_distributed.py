"""Training under ``torchrun`` (DDP, gloo on CPU, 2 processes): the global-batch contrastive
loss and gradient, replicas that stay identical, and ``fit``/``benchmark`` end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from contrasyn import distributed
from contrasyn.api.metrics import auroc
from contrasyn.cli import main
from contrasyn.data import load_dataset
from contrasyn.errors import ConfigError
from contrasyn.methods.csi_config import TrainConfig

HERE = Path(__file__).parent


def torchrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 ARGS`` with this interpreter, one thread each."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_two_ranks_equal_one_process(tmp_path: Path) -> None:
    out = tmp_path / "checks.json"
    torchrun(str(HERE / "ddp_checks.py"), str(out))
    result = json.loads(out.read_text())
    loss = result["loss"]
    assert loss["con"] == pytest.approx(loss["ref_con"], abs=1e-6)
    assert loss["mean_total"] == pytest.approx(loss["ref_total"], abs=1e-6)
    assert loss["grad_max_abs"] > 1e-3  # the comparison below is not between zeros
    assert loss["grad_max_abs_diff"] < 1e-6
    training = result["training"]
    assert training["world_size"] == 2
    assert training["rank_spread"] == {"model": 0.0, "side": 0.0}


def _save_pngs(folder: Path, images, prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img[..., 0]).save(folder / f"{prefix}{i:03d}.png")


def test_torchrun_fit_then_score(tmp_path: Path) -> None:
    ds = load_dataset("synthetic", n_train_per_class=40, n_test_per_class=6, size=16)
    good, test = tmp_path / "good", tmp_path / "test"
    _save_pngs(good, ds.train_images[ds.train_labels == 0], "n")
    _save_pngs(test, ds.test_images[ds.test_labels == 0], "n")
    _save_pngs(test, ds.test_images[ds.test_labels == 3], "a")
    model = tmp_path / "model"
    done = torchrun(
        "-m",
        "contrasyn",
        "fit",
        "--data",
        str(good),
        "--out",
        str(model),
        "--preset",
        "tiny",
        "--image-size",
        "16",
        "--device",
        "cpu",
        "--holdout",
        "0.25",
        "--set",
        "train.epochs=2",
        "--set",
        "train.width=4",
    )
    assert done.stdout.count("saved to") == 1  # rank 0 reports; rank 1 only trains
    assert (model / "model.safetensors").exists()
    metrics = (model / "checkpoints" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in metrics]
    assert steps == sorted(set(steps))  # one writer
    scores = tmp_path / "scores.csv"
    assert main(["score", str(model), str(test), "--out", str(scores), "--quiet"]) == 0
    with scores.open(newline="") as f:
        rows = list(csv.DictReader(f))
    is_anomaly = [Path(r["path"]).name.startswith("a") for r in rows]
    assert sum(is_anomaly) > 0 and len(rows) > sum(is_anomaly)
    assert auroc(is_anomaly, [float(r["anomaly_score"]) for r in rows]) > 0.6


def test_torchrun_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    torchrun(
        "-m",
        "contrasyn",
        "benchmark",
        "--dataset",
        "synthetic",
        "--preset",
        "tiny",
        "--classes",
        "0",
        "--methods",
        "knn,csi+g",
        "--out",
        str(out),
        "--quiet",
        "--val-normal",
        "20",
        "--set",
        "train.device=cpu",
        "--set",
        "train.epochs=2",
        "--set",
        "train.image_size=16",
        "--set",
        "train.width=4",
    )
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in rows) == ["csi+g", "knn"]
    knn, gan = sorted(rows, key=lambda r: r["method"] == "csi+g")
    assert knn["auroc"] > 0.7  # rank 0 ran the baseline alone
    assert 0 <= gan["auroc"] <= 1 and gan["n_train"] == 180  # scored after the 2-rank training
    run = out / "runs" / "synthetic" / "csi+g" / "class0" / "seed0"
    assert (run / "last.safetensors").exists() and (run / "samples.png").exists()
    assert len(json.loads((out / "environment.json").read_text())) == 1
    assert (out / "report.html").exists()


def test_one_process_is_unchanged() -> None:
    """Without torchrun every helper is a no-op."""
    z = torch.randn(6, 3)
    assert distributed.gather_views(z) is z
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.shard(6) == (0, 6)
    assert distributed.init(torch.device("cpu")) == torch.device("cpu")


def test_sync_bn_on_cpu_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(distributed, "active", lambda: True)
    with pytest.raises(ConfigError, match="sync_bn needs GPUs"):
        distributed.wrap(torch.nn.Linear(2, 2), torch.device("cpu"), sync_bn=True)


def test_batch_must_split_over_ranks(monkeypatch) -> None:
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ConfigError, match="divisible by the number of processes"):
        distributed.shard(TrainConfig().batch_size)
