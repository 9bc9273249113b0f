"""The CSI training loop: logs, checkpoints, exact resume, divergence and config errors."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import contrasyn.methods.csi.resume as resume
import contrasyn.methods.csi.trainer as trainer
from contrasyn import distributed
from contrasyn.checkpoint import load_checkpoint
from contrasyn.config import to_dict
from contrasyn.device import autocast, bf16_is_fast, effective_precision, resolve_device
from contrasyn.errors import ConfigError
from contrasyn.methods.csi.losses import CSILoss
from contrasyn.methods.csi.optim import LARS, warmup_cosine_lr
from contrasyn.methods.csi.trained import build_model, load_model
from contrasyn.methods.csi.trainer import TrainingError, build_optimizer, train
from contrasyn.methods.csi_config import TrainConfig


def _cfg(**kw) -> TrainConfig:
    base = dict(
        width=2,
        image_size=16,
        channels=1,
        proj_dim=8,
        batch_size=8,
        lr_reference_batch=8,
        epochs=3,
        warmup_epochs=1,
        checkpoint_every=1,
        log_every=1,
        device="cpu",
        seed=3,
    )
    return TrainConfig(**{**base, **kw})


def _images(n: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """An uninterrupted 3-epoch run (2 steps an epoch)."""
    out = tmp_path_factory.mktemp("full")
    model = train(_images(), _cfg(), out, progress=False)
    return out, _weights(model)


def test_run_writes_metrics_and_checkpoint(full_run) -> None:
    out, weights = full_run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(6))
    for r in records:
        for key in ("loss", "loss_con", "loss_cls", "lr"):
            assert math.isfinite(r[key])
        assert r["loss"] == pytest.approx(r["loss_con"] + r["loss_cls"], rel=1e-5)
        assert r["loss_cls"] > 0 and r["loss_con"] > 0
    # the schedule: base lr at step 0, the x10 peak at the end of the 1-epoch warm-up
    assert records[0]["lr"] == pytest.approx(0.1)
    assert records[2]["lr"] == pytest.approx(1.0)
    assert records[-1]["epoch"] == pytest.approx(3.0)
    assert sorted(p.name for p in out.iterdir()) == [
        "last.json",
        "last.safetensors",
        "metrics.jsonl",
    ]
    tensors, meta = load_checkpoint(out / "last")
    # saved as run: G's channels resolved from the (one-channel) data
    ran = dataclasses.replace(_cfg(), gen_channels=1)
    assert meta["epoch"] == 3 and meta["step"] == 6 and meta["config"] == to_dict(ran)
    assert any(k.startswith("optim.momentum.") for k in tensors) and "rng.cpu" in tensors
    model, cfg = load_model(out / "last")
    assert cfg == ran and not model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)


def test_training_changes_the_weights(full_run) -> None:
    _, weights = full_run
    torch.manual_seed(_cfg().seed)
    init = build_model(_cfg()).state_dict()
    moved = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(v, weights[k])]
    assert "backbone.stem.0.weight" in moved and "projection.2.weight" in moved
    assert "backbone.stem.1.running_mean" in moved


def test_same_seed_same_result_without_out_dir(full_run) -> None:
    _, weights = full_run
    model = train(_images(), _cfg(), None, progress=False)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)


def test_verbose_prints_each_logged_record(full_run, capsys) -> None:
    out, weights = full_run
    model = train(_images(), _cfg(), None, progress=False, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == len(records) == 6
    assert lines[0].startswith(f"{_cfg().method} step 1/6 epoch 0.50 lr 0.1 loss ")
    assert f"loss_con {records[-1]['loss_con']:.4g}" in lines[-1]
    # printing changes nothing in the run
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)


def _die_after_first_save(monkeypatch):
    """Make the trainer's next checkpoint save complete, then 'kill' the run; returns the
    real save function, to put back before resuming."""
    real_save = trainer.save_checkpoint

    def save_then_die(stem, tensors, meta):
        real_save(stem, tensors, meta)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    return real_save


def test_interrupted_run_resumes_exactly(full_run, tmp_path: Path, monkeypatch) -> None:
    _, reference = full_run
    real_save = trainer.save_checkpoint
    saves = []

    def save_then_die(stem, tensors, meta):
        real_save(stem, tensors, meta)
        saves.append(meta["epoch"])
        if meta["epoch"] == 1:
            raise KeyboardInterrupt  # killed right after the epoch-1 checkpoint

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_images(), _cfg(), tmp_path, progress=False)
    assert saves == [1]
    assert load_checkpoint(tmp_path / "last")[1]["epoch"] == 1
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)

    model = train(_images(), _cfg(), tmp_path, progress=False)
    # CPU, same thread count: the resumed run is bit-identical to the uninterrupted one
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, reference[k], rtol=0, atol=0, msg=k)
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(6))
    assert load_checkpoint(tmp_path / "last")[1]["epoch"] == 3


def test_finished_run_is_not_retrained(full_run, monkeypatch) -> None:
    out, weights = full_run

    def no_step(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(trainer, "csi_loss", no_step)
    model = train(_images(), _cfg(), out, progress=False)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0)


def test_config_mismatch_on_resume(full_run) -> None:
    out, _ = full_run
    with pytest.raises(ConfigError, match="different config"):
        train(_images(), _cfg(epochs=4), out, progress=False)
    with pytest.raises(ConfigError, match="different config"):
        train(_images(), _cfg(seed=4), out, progress=False)


def test_nan_loss_raises_training_error(tmp_path: Path, monkeypatch) -> None:
    real = trainer.csi_loss
    calls = []

    def nan_in_epoch_two(z, shift, labels, temperature):
        calls.append(1)
        out = real(z, shift, labels, temperature)
        if len(calls) > 2:  # epoch 1 has 2 steps
            nan = out.total * float("nan")
            return CSILoss(nan, out.con, out.cls)
        return out

    monkeypatch.setattr(trainer, "csi_loss", nan_in_epoch_two)
    with pytest.raises(TrainingError, match="nan") as info:
        train(_images(), _cfg(), tmp_path, progress=False)
    assert "epoch 1" in str(info.value) and str(tmp_path) in str(info.value)
    # the last good checkpoint (epoch 1) is kept and loadable
    assert load_checkpoint(tmp_path / "last")[1]["epoch"] == 1


def test_nan_without_out_dir(monkeypatch) -> None:
    def inf_loss(z, shift, labels, temperature):
        t = z.sum() * 0 + float("inf")
        return CSILoss(t, t, t)

    monkeypatch.setattr(trainer, "csi_loss", inf_loss)
    with pytest.raises(TrainingError, match="inf"):
        train(_images(8), _cfg(epochs=1), None, progress=False)


def test_wrong_image_shape(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="training images"):
        train(torch.rand(4, 3, 16, 16), _cfg(), tmp_path, progress=False)
    with pytest.raises(ConfigError):
        train(torch.rand(4, 16, 16), _cfg(), tmp_path, progress=False)
    assert not (tmp_path / "last.json").exists()


def test_sgd_optimizer_and_tiny_dataset() -> None:
    # fewer images than the batch size: one step per epoch on all of them
    model = train(_images(5), _cfg(optimizer="sgd", epochs=1, batch_size=64), None, progress=False)
    assert not model.training
    assert torch.isfinite(model(torch.rand(2, 1, 16, 16)).z).all()


def test_build_optimizer() -> None:
    model = build_model(_cfg())
    opt = build_optimizer(model, _cfg())
    assert isinstance(opt, LARS) and opt.trust_coef == 0.001
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 1e-6
    assert isinstance(build_optimizer(model, _cfg(optimizer="sgd")), torch.optim.SGD)
    with pytest.raises(ConfigError, match="optimizer"):
        build_optimizer(model, _cfg(optimizer="adam"))


def test_resolve_device() -> None:
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("an accelerator is present")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_device("cuda:1")


def test_autocast() -> None:
    cpu = torch.device("cpu")
    for bad in ("fp16", "float32", "BF16", ""):
        with pytest.raises(ConfigError, match="precision"):
            autocast(bad, cpu)
    with autocast("fp32", cpu):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("bf16", cpu):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast("auto", cpu):
        assert torch.is_autocast_enabled("cpu") == bf16_is_fast(cpu)


@pytest.mark.parametrize("native", [True, False])
def test_effective_precision_is_what_autocast_computes_in(monkeypatch, native: bool) -> None:
    """Rows record ``effective_precision``: bf16 for ``bf16``, ``auto`` follows the hardware."""
    import contrasyn.device as device
    from contrasyn.methods.registry import build_method, method_config

    monkeypatch.setattr(device, "bf16_is_fast", lambda d: native)
    cpu = torch.device("cpu")
    auto = "bf16" if native else "fp32"
    assert [effective_precision(p, cpu) for p in ("fp32", "bf16", "auto")] == ["fp32", "bf16", auto]
    with pytest.raises(ConfigError, match="precision"):
        effective_precision("fp16", cpu)
    with autocast("auto", cpu):
        assert torch.is_autocast_enabled("cpu") == native
    # the CSI family computes in its setting's precision; a baseline always in fp32
    csi = build_method("csi", method_config("csi", "cpu", {}))  # cpu preset: precision auto
    assert csi.precision == auto
    fp32 = method_config("csi", "cpu", {"train": {"precision": "fp32"}})
    assert build_method("csi", fp32).precision == "fp32"
    assert build_method("rot", method_config("rot", "cpu")).precision == "fp32"


def test_resume_with_sgd_and_sparse_checkpoints(tmp_path: Path, monkeypatch) -> None:
    # (no channels_last here: torch 2.13.0+cpu corrupts the heap in the backward of 1x1
    # stride-2 convolutions with <= 4 input channels in channels_last, i.e. at width <= 4)
    cfg = _cfg(optimizer="sgd", checkpoint_every=2, epochs=3, seed=11)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    reference = _weights(train(_images(), cfg, tmp_path / "a", progress=False))
    real_save = _die_after_first_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(_images(), cfg, tmp_path / "b", progress=False)
    assert load_checkpoint(tmp_path / "b" / "last")[1]["epoch"] == 2  # saved at 2, not 1
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    model = train(_images(), cfg, tmp_path / "b", progress=False)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, reference[k], rtol=0, atol=0, msg=k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda(tmp_path: Path, monkeypatch) -> None:
    cfg = _cfg(device="cuda")
    real_save = _die_after_first_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(_images(), cfg, tmp_path, progress=False)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    model = train(_images(), cfg, tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "last")[1]["epoch"] == 3
    assert all(
        torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()
    )


def test_out_dir_is_created(tmp_path: Path) -> None:
    out = tmp_path / "new" / "run"
    train(_images(8), _cfg(epochs=1), out, progress=False)
    assert (out / "last.json").is_file() and (out / "metrics.jsonl").is_file()


def test_steps_sets_the_run_length_and_the_schedule(tmp_path: Path) -> None:
    """steps=5 with 2 steps an epoch: 5 logged steps, the cosine ends at the last one, and
    the final checkpoint records step 5 (epoch 3, the partial last epoch)."""
    out = tmp_path / "run"
    train(_images(), _cfg(steps=5, epochs=1), out, progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(5))
    assert records[2]["lr"] == pytest.approx(1.0)  # peak after the 1-epoch warm-up
    assert records[-1]["lr"] == pytest.approx(warmup_cosine_lr(4 / 2, 0.1, 5 / 2, 1.0, 10.0))
    meta = json.loads((out / "last.json").read_text())
    assert (meta["epoch"], meta["step"]) == (3, 5)


def test_compile_runs_the_steps_through_torch_compile(monkeypatch) -> None:
    """``train.compile`` puts F's training steps through ``torch.compile`` (recorded here, not
    compiled: compiling takes minutes on a CPU); the returned and checkpointed F is the model."""
    compiled: list[torch.nn.Module] = []
    calls: list[int] = []

    def fake_compile(module: torch.nn.Module) -> torch.nn.Module:
        compiled.append(module)

        def forward(x: torch.Tensor):
            calls.append(len(x))
            return module(x)

        return forward

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = train(_images(), _cfg(method="csi", epochs=1, compile=True), progress=False)
    assert compiled == [model]
    assert calls == [8 * 2 * 4] * 2  # 2 steps, each 8 images x 2 views x 4 rotations
    uncompiled: list[torch.nn.Module] = []
    monkeypatch.setattr(torch, "compile", lambda m: uncompiled.append(m) or m)
    train(_images(), _cfg(method="csi", epochs=1), progress=False)
    assert not uncompiled


def test_resumes_a_checkpoint_written_before_newer_config_fields(tmp_path: Path) -> None:
    """A checkpoint whose config lacks fields added since (at their defaults now) resumes;
    one with a really different config is still refused."""
    from contrasyn.checkpoint import save_checkpoint

    cfg = _cfg(method="csi", epochs=2)
    trained = train(_images(), cfg, tmp_path, progress=False)
    tensors, meta = load_checkpoint(tmp_path / "last")
    for name in ("compile", "sync_bn"):
        del meta["config"][name]
    save_checkpoint(tmp_path / "last", tensors, {k: v for k, v in meta.items() if k != "versions"})
    resumed = train(_images(), cfg, tmp_path, progress=False)  # finished: nothing to do
    assert _weights(resumed).keys() == _weights(trained).keys()
    for k, v in _weights(trained).items():
        assert torch.equal(_weights(resumed)[k], v)
    with pytest.raises(ConfigError, match="different config"):
        train(_images(), _cfg(method="csi", epochs=3), tmp_path, progress=False)


def test_a_rank_added_on_resume_starts_its_own_random_stream(monkeypatch) -> None:
    """A checkpoint saved by one process, resumed by two: rank 1 finds no RNG state of its own
    and is seeded as a fresh rank 1 would be, not as rank 0 (which would repeat its draws)."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tensors = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    tensors["rng.cpu"] = torch.get_rng_state()
    with torch.random.fork_rng(devices=[]):
        monkeypatch.setattr(distributed, "rank", lambda: 1)
        resume.restore(model, optimizer, None, tensors, seed=7)
        assert torch.initial_seed() == 7 + 1_000_003 == resume.rank_seed(7)
        monkeypatch.setattr(distributed, "rank", lambda: 0)
        torch.manual_seed(0)
        resume.restore(model, optimizer, None, tensors, seed=7)
        assert torch.equal(torch.get_rng_state(), tensors["rng.cpu"])  # rank 0: its own stream
