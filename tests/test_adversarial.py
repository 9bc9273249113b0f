"""The generative side (eq. 5-10): loss values against hand computations, which networks each
step of Algorithm 1 trains, the full round, and the stability checks."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

import contrasyn.methods.csi.adversarial as adversarial
import contrasyn.methods.csi.trainer as trainer
from contrasyn.checkpoint import load_checkpoint
from contrasyn.errors import ConfigError, TrainingError
from contrasyn.methods.csi.adversarial import GenerativeSide
from contrasyn.methods.csi.augment import HorizontalFlip, shifted_views
from contrasyn.methods.csi.losses import (
    csi_loss,
    discriminator_loss,
    generator_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    latent_reconstruction_loss,
    reconstruction_loss,
)
from contrasyn.methods.csi.steps import frozen
from contrasyn.methods.csi.trained import build_model, load_generator
from contrasyn.methods.csi.trainer import (
    Batch,
    algorithm_1,
    build_augment,
    resolve_gen_channels,
    train,
    train_networks,
)
from contrasyn.methods.csi_config import TrainConfig


def _cfg(**kw) -> TrainConfig:
    base = dict(
        method="full",
        width=2,
        image_size=16,
        channels=1,
        proj_dim=8,
        gen_width=2,
        latent_dim=8,
        batch_size=4,
        lr_reference_batch=4,
        epochs=2,
        warmup_epochs=1,
        checkpoint_every=1,
        log_every=1,
        device="cpu",
        seed=0,
    )
    return TrainConfig(**{**base, **kw})


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


# -- loss values ----------------------------------------------------------------------------


def test_discriminator_loss_by_hand() -> None:
    real, synth, rec = torch.tensor([2.0, -1.0]), torch.tensor([0.5]), torch.tensor([-3.0, 0.0])
    expected = (
        -(math.log(_sigmoid(2.0)) + math.log(_sigmoid(-1.0))) / 2
        - math.log(1 - _sigmoid(0.5))
        - (math.log(1 - _sigmoid(-3.0)) + math.log(1 - _sigmoid(0.0))) / 2
    )
    assert discriminator_loss(real, synth, rec).item() == pytest.approx(expected, rel=1e-6)
    # without the reconstruction term (csi+g) the third part is absent
    assert discriminator_loss(real, synth).item() == pytest.approx(
        expected + (math.log(1 - _sigmoid(-3.0)) + math.log(0.5)) / 2, rel=1e-6
    )


def test_generator_loss_is_non_saturating() -> None:
    synth, rec = torch.tensor([0.5, -2.0]), torch.tensor([1.0])
    expected = -(math.log(_sigmoid(0.5)) + math.log(_sigmoid(-2.0))) / 2 - math.log(_sigmoid(1.0))
    assert generator_loss(synth, rec).item() == pytest.approx(expected, rel=1e-6)
    # non-saturating: a confident D (logit -10) still gives G a gradient of ~1 per sample
    logit = torch.tensor([-10.0], requires_grad=True)
    generator_loss(logit).backward()
    assert logit.grad.item() == pytest.approx(-1.0, abs=1e-4)


def test_reconstruction_loss_by_hand() -> None:
    x = torch.tensor([[[[0.0, 1.0]]], [[[0.5, 0.5]]]])  # (2, 1, 1, 2)
    x_hat = torch.tensor([[[[0.5, 1.0]]], [[[0.5, 0.0]]]])
    z1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z2 = torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    mse = (0.25 + 0 + 0 + 0.25) / 4
    sim = (0.0 + 1.0) / 2
    rec = reconstruction_loss(x, x_hat, z1, z2, weight=100.0)
    assert rec.mse.item() == pytest.approx(mse)
    assert rec.sim.item() == pytest.approx(sim)
    assert rec.total.item() == pytest.approx(100 * mse - sim)


def test_latent_reconstruction_loss_by_hand() -> None:
    h = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    h_rec = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    assert latent_reconstruction_loss(h_rec, h).item() == pytest.approx((4 + 25) / 2)


# -- which networks each step trains --------------------------------------------------------


@pytest.fixture
def parts():
    cfg = _cfg()
    torch.manual_seed(0)
    model, side = build_model(cfg), GenerativeSide(cfg)
    model.train(), side.train()
    x = torch.rand(4, 1, 16, 16)
    h = torch.randn(4, cfg.latent_dim)
    return model, side, x, h, build_augment(cfg), HorizontalFlip()


def _snapshot(model, side) -> dict[str, list[torch.Tensor]]:
    nets = {"F": model, "G": side.G, "D": side.D, "E": side.E, "Dz": side.Dz}
    return {k: [p.detach().clone() for p in v.parameters()] for k, v in nets.items()}


def _changed(before, model, side) -> set[str]:
    after = _snapshot(model, side)
    return {
        k
        for k in before
        if any(not torch.equal(a, b) for a, b in zip(before[k], after[k], strict=True))
    }


def test_d_step_trains_only_D(parts) -> None:
    model, side, x, h, _, _ = parts
    fakes = side.fakes(x, h)
    before = _snapshot(model, side)
    side.d_step(x, fakes)
    assert _changed(before, model, side) == {"D"}


def test_adversarial_step_trains_G_and_E_only(parts) -> None:
    model, side, x, h, _, _ = parts
    fakes = side.fakes(x, h)
    before = _snapshot(model, side)
    d_params = [p.detach().clone() for p in side.D.parameters()]
    side.g_adv_step(fakes)
    assert _changed(before, model, side) == {"G", "E"}
    assert all(p.grad is None for p in side.D.parameters())
    assert all(torch.equal(a, b) for a, b in zip(d_params, side.D.parameters(), strict=True))


def test_csi_s_step_trains_G_only_and_leaves_F_buffers(parts) -> None:
    model, side, x, h, augment, flip = parts
    before = _snapshot(model, side)
    bn = [b.clone() for b in model.buffers()]
    losses = side.csi_s_step(model, h, augment, flip)
    assert _changed(before, model, side) == {"G"}
    assert all(torch.equal(a, b) for a, b in zip(bn, model.buffers(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    assert losses["loss_csi_s"].item() > 0


def test_latent_step_trains_Dz_and_E(parts) -> None:
    model, side, x, h, _, _ = parts
    before = _snapshot(model, side)
    side.latent_step(x, h)
    assert _changed(before, model, side) == {"Dz", "E"}


def test_rec_step_trains_G_and_E_only(parts) -> None:
    model, side, x, h, augment, flip = parts
    before = _snapshot(model, side)
    losses = side.rec_step(model, x, augment, flip)
    assert _changed(before, model, side) == {"G", "E"}
    assert losses["loss_rec"].item() == pytest.approx(
        100 * losses["rec_mse"].item() - losses["rec_sim"].item(), rel=1e-5
    )


def test_lrec_step_trains_only_E(parts) -> None:
    model, side, x, h, _, _ = parts
    before = _snapshot(model, side)
    side.lrec_step(h)
    assert _changed(before, model, side) == {"E"}


def test_joint_loss_does_not_reach_G(parts) -> None:
    model, side, x, _, augment, flip = parts
    losses, synthetic = side.round(model, x, augment, flip)
    assert synthetic.shape == x.shape and not synthetic.requires_grad
    side.zero_grad(set_to_none=True)
    views, labels = shifted_views(torch.cat([x, synthetic]), augment, 4, flip)
    out = model(views)
    csi_loss(out.z, out.shift, labels).total.backward()
    assert all(p.grad is None for p in side.parameters())
    assert all(p.grad is not None for p in model.parameters())


def test_round_runs_every_step_in_full_and_fewer_in_csi_g(parts) -> None:
    model, side, x, _, augment, flip = parts
    losses, _ = side.round(model, x, augment, flip)
    assert set(losses) == {
        "loss_d", "loss_g_adv", "loss_csi_s", "loss_ld", "loss_e_adv",
        "loss_rec", "rec_mse", "rec_sim", "loss_lrec",
    }  # fmt: skip
    side_g = GenerativeSide(_cfg(method="csi+g", synth_batch=6))
    assert side_g.E is None and side_g.Dz is None and set(side_g.optimizers) == {"G", "D"}
    before = _snapshot(model, side)
    losses, synthetic = side_g.round(model, x, augment, flip)
    assert set(losses) == {"loss_d", "loss_g_adv", "loss_csi_s"}
    assert len(synthetic) == 6  # synth_batch synthetic images
    assert not _changed({"F": before["F"]}, model, side)


def test_frozen_restores_buffers_and_grad_flags() -> None:
    bn = torch.nn.BatchNorm1d(3)
    bn.weight.requires_grad_(False)
    with frozen(bn):
        bn(torch.randn(8, 3) + 5)
        assert not bn.bias.requires_grad
    assert torch.equal(bn.running_mean, torch.zeros(3)) and bn.num_batches_tracked == 0
    assert bn.bias.requires_grad and not bn.weight.requires_grad


# -- training, checkpoints, stability --------------------------------------------------------


def _images(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def test_full_training_logs_every_loss_and_resumes_exactly(tmp_path: Path, monkeypatch) -> None:
    cfg = _cfg(epochs=3, gen_every=1)  # 2 steps an epoch, a round after every step
    ref = train_networks(_images(), cfg, tmp_path / "ref", progress=False)
    log = [json.loads(s) for s in (tmp_path / "ref/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(6)) and [r["gen_step"] for r in log] == [
        *range(6)
    ]
    assert {"loss_d", "loss_g_adv", "loss_csi_s", "loss_ld", "loss_e_adv"} <= set(log[-1])
    assert {"loss_rec", "rec_mse", "rec_sim", "loss_lrec", "loss_joint"} <= set(log[-1])

    real_save = trainer.save_checkpoint

    def save_then_die(stem, tensors, meta):
        real_save(stem, tensors, meta)
        if meta["epoch"] == 1:
            raise KeyboardInterrupt  # killed right after the epoch-1 checkpoint

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(_images(), cfg, tmp_path / "cut", progress=False)
    tensors = load_checkpoint(tmp_path / "cut/last")[0]
    assert any(k.startswith("adam.G.") for k in tensors) and any(
        k.startswith("gen.E.") for k in tensors
    )
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    resumed = train_networks(_images(), cfg, tmp_path / "cut", progress=False)
    # every network, Adam moments included, continues bit-identically
    pairs = zip(ref.side.state_dict().items(), resumed.side.state_dict().items(), strict=True)
    for a, b in pairs:
        torch.testing.assert_close(a[1], b[1], rtol=0, atol=0, msg=a[0])
    f_pairs = zip(ref.model.state_dict().values(), resumed.model.state_dict().values(), strict=True)
    for a, b in f_pairs:
        assert torch.equal(a, b)
    side, loaded_cfg = load_generator(tmp_path / "cut/last")
    assert loaded_cfg == dataclasses.replace(cfg, gen_channels=1) and not side.training
    assert all(
        torch.equal(a, b) for a, b in zip(side.G.parameters(), ref.side.G.parameters(), strict=True)
    )


def test_nan_in_a_generative_loss_names_it_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch
) -> None:
    real = adversarial.reconstruction_loss
    calls = []

    def nan_in_epoch_two(x, x_hat, z1, z2, weight):
        calls.append(1)
        out = real(x, x_hat, z1, z2, weight)
        return out._replace(total=out.total * float("nan")) if len(calls) > 2 else out

    monkeypatch.setattr(adversarial, "reconstruction_loss", nan_in_epoch_two)
    with pytest.raises(TrainingError, match="loss_rec became nan") as info:
        train(_images(), _cfg(gen_every=1), tmp_path, progress=False)
    assert "epoch 1" in str(info.value) and "last good checkpoint" in str(info.value)
    assert load_checkpoint(tmp_path / "last")[1]["epoch"] == 1


def test_discriminator_winning_outright_stops_training(tmp_path: Path, monkeypatch) -> None:
    real = adversarial.discriminator_loss
    calls = []

    def d_wins_after_epoch_one(*logits):
        calls.append(1)
        out = real(*logits)
        return out * 0 if len(calls) > 4 else out  # 2 rounds an epoch, D and D' each call

    monkeypatch.setattr(adversarial, "discriminator_loss", d_wins_after_epoch_one)
    with pytest.raises(TrainingError, match="discriminator D won outright") as info:
        train(_images(), _cfg(epochs=6, gen_every=1, d_win_rounds=3), tmp_path, progress=False)
    assert "loss_d < 0.001 for 3 rounds" in str(info.value)
    # the streak began in epoch 2: no checkpoint was written during it
    assert load_checkpoint(tmp_path / "last")[1]["epoch"] == 1


def test_generator_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        _cfg(image_size=24)
    assert _cfg(method="csi", image_size=24).image_size == 24
    with pytest.raises(ConfigError, match="train.method"):
        _cfg(method="gan")
    with pytest.raises(ConfigError, match="makes 16x16"):
        train(torch.rand(8, 1, 32, 32), _cfg(), None, progress=False)


def test_load_generator_refuses_a_csi_run(tmp_path: Path) -> None:
    train(_images(), _cfg(method="csi", epochs=1), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="no generator"):
        load_generator(tmp_path / "last")


def test_generator_images_are_in_the_unit_range() -> None:
    side = GenerativeSide(_cfg()).eval()
    x = side.G(torch.randn(5, 8) * 10)
    assert x.shape == (5, 1, 16, 16) and x.min() >= 0 and x.max() <= 1


# -- Algorithm 1's structure: when the round runs and what L_JOINT sees -----------------------


def test_round_after_every_nth_batch_and_joint_step_on_real_and_synthetic() -> None:
    calls, records = [], []
    batches = [
        Batch(s, s + 1.0, torch.full((2, 1, 4, 4), float(s)), 0.01 * (s + 1), f"step {s}", None)
        for s in range(7)
    ]
    synthetic = torch.full((3, 1, 4, 4), -1.0)

    def f_step(x, lr, name, where):
        calls.append((name, x.clone(), lr, where))
        return {"loss": float(len(x))}

    def gen_round(x, where):
        calls.append(("round", x.clone(), None, where))
        return {"loss_d": 0.5}, synthetic

    algorithm_1(batches, f_step, gen_round, 3, lambda b, r: records.append(r))
    names = [c[0] for c in calls]
    # N = 3: a round after the 3rd and 6th batches (steps 2 and 5), never after the 1st
    assert names == [
        "L_CSI", "L_CSI", "L_CSI", "round", "L_JOINT",
        "L_CSI", "L_CSI", "L_CSI", "round", "L_JOINT", "L_CSI",
    ]  # fmt: skip
    assert torch.equal(calls[3][1], batches[2].x)  # the round sees the batch X just stepped on
    joint = calls[4][1]  # L_JOINT: X and X~ together, real first
    assert joint.shape == (5, 1, 4, 4)
    assert torch.equal(joint[:2], batches[2].x) and torch.equal(joint[2:], synthetic)
    assert records[2] == {"loss": 2.0, "loss_d": 0.5, "loss_joint": 5.0, "gen_step": 2}
    assert records[3] == {"loss": 2.0}
    # every step at its batch's learning rate, and errors name the batch where they happened
    assert [c[2:] for c in calls[2:5]] == [(0.03, "step 2"), (None, "step 2"), (0.03, "step 2")]
    # CSI alone: no round, no joint step
    calls.clear()
    algorithm_1(batches, f_step, None, 3, lambda b, r: None)
    assert [c[0] for c in calls] == ["L_CSI"] * 7


def test_d_loss_has_the_reconstruction_term(parts) -> None:
    model, side, x, h, _, _ = parts
    side.D.eval()  # no spectral-norm power iteration: the same logits before and after a copy
    fakes = [f.detach() for f in side.fakes(x, h)]
    assert len(fakes) == 2  # full: x~ and x^
    D = copy.deepcopy(side.D)
    with torch.no_grad():
        real, synth, rec = D(x), D(fakes[0]), D(fakes[1])
    three = discriminator_loss(real, synth, rec).item()
    got = side.d_step(x, fakes)["loss_d"].item()
    assert got == pytest.approx(three, rel=1e-5)
    assert abs(got - discriminator_loss(real, synth).item()) > 1e-3  # the x^ term counts


def test_logged_round_losses_and_rounds_follow_gen_every(tmp_path: Path) -> None:
    cfg = _cfg(epochs=3, gen_every=2)  # 2 steps an epoch: rounds after steps 1, 3, 5
    train_networks(_images(), cfg, tmp_path, progress=False)
    log = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("gen_step") for r in log] == [None, 1, 1, 3, 3, 5]


def test_warm_up_trains_the_autoencoder_before_F_and_is_logged(tmp_path: Path) -> None:
    cfg = _cfg(epochs=1, gen_warmup=3, gen_every=4)  # 2 steps: no round, only the warm-up
    torch.manual_seed(cfg.seed)  # the trainer's initialisation: F first, then G, D, E, D'
    build_model(cfg)
    side_init = GenerativeSide(dataclasses.replace(cfg, gen_channels=1))
    ran = train_networks(_images(), cfg, tmp_path, progress=False)
    log = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("warmup_round") for r in log[:3]] == [0, 1, 2]
    assert {"loss_d", "loss_g_adv", "loss_ld", "loss_rec", "loss_lrec"} <= set(log[0])
    assert "loss_csi_s" not in log[0] and [r["step"] for r in log[3:]] == [0, 1]
    # G changed though no round of the joint training ran
    assert not torch.equal(ran.side.G.dense.weight, side_init.G.dense.weight)
    no_warmup = train_networks(_images(), dataclasses.replace(cfg, gen_warmup=0), progress=False)
    assert torch.equal(no_warmup.side.G.dense.weight, side_init.G.dense.weight)


def test_gan_losses_by_hand() -> None:
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-0.5, 1.5])
    expected_d = (max(0, 1 - 2.0) + max(0, 1 - 0.5)) / 2 + (max(0, 1 - 0.5) + max(0, 1 + 1.5)) / 2
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(expected_d)
    assert hinge_generator_loss(fake, real).item() == pytest.approx(-(0.5 + 1.25))


def test_grey_data_gets_a_grey_generator() -> None:
    grey = torch.rand(6, 1, 16, 16).expand(-1, 3, -1, -1)
    cfg = resolve_gen_channels(_cfg(channels=3), grey)
    assert cfg.gen_channels == 1
    assert resolve_gen_channels(_cfg(channels=3), torch.rand(6, 3, 16, 16)).gen_channels == 3
    assert resolve_gen_channels(_cfg(channels=3, method="csi"), grey).gen_channels is None
    side = GenerativeSide(cfg)
    assert side.G(torch.randn(2, 8)).shape == (2, 1, 16, 16)
    assert side.to_model(torch.rand(2, 1, 16, 16)).shape == (2, 3, 16, 16)
    torch.testing.assert_close(side.from_model(grey), grey[:, :1])


def test_moving_average_generator(tmp_path: Path) -> None:
    side = GenerativeSide(_cfg(gen_ema=0.25))
    before = [p.clone() for p in side.G_ema.parameters()]
    with torch.no_grad():
        for p in side.G.parameters():
            p.add_(1.0)
    side.update_average()  # ema = 0.25 ema + 0.75 G
    for avg, old, new in zip(side.G_ema.parameters(), before, side.G.parameters(), strict=True):
        torch.testing.assert_close(avg, 0.25 * old + 0.75 * new)
    assert side.sampler is side.G_ema and GenerativeSide(_cfg()).G_ema is None
    # trained, checkpointed and resumed with the average; it makes L_JOINT's images
    cfg = _cfg(epochs=2, gen_every=1, gen_ema=0.5)
    ran = train_networks(_images(), cfg, tmp_path / "run", progress=False)
    tensors = load_checkpoint(tmp_path / "run" / "last")[0]
    assert any(k.startswith("gen.G_ema.") for k in tensors)
    side, _ = load_generator(tmp_path / "run" / "last")
    saved, trained = side.G_ema.state_dict(), ran.side.G_ema.state_dict()
    assert saved.keys() == trained.keys()
    assert all(torch.equal(saved[k], trained[k]) for k in saved)
    x = _images(4)
    ran.side.train()
    torch.manual_seed(5)
    model = build_model(cfg)
    _, synthetic = ran.side.round(model, x, build_augment(cfg), HorizontalFlip())
    torch.manual_seed(5)
    h = torch.randn(4, cfg.latent_dim)
    assert not torch.equal(synthetic, ran.side.G(h).detach())  # not G's own images
