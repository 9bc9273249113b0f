"""Algorithm 1 step by step: the generative side's steps (the losses they take, against the
networks run by hand; which optimiser each uses; the precision context and the ``where`` of
every step), the order of a round, and the training loop around it (the warm-up, F's step,
the batches and schedule, the log, checkpoints and their state). Networks are tiny (width 2,
16x16 images, latent 8), so every test here runs in well under a second."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import contrasyn.methods.csi.resume as resume
import contrasyn.methods.csi.trainer as trainer
from contrasyn import distributed
from contrasyn.errors import ConfigError, TrainingError
from contrasyn.methods.csi.adversarial import GenerativeSide
from contrasyn.methods.csi.augment import (
    ColorJitter,
    HorizontalFlip,
    RandomGaussianBlur,
    RandomGrayscale,
    RandomResizedCrop,
    grayscale,
    shifted_views,
)
from contrasyn.methods.csi.losses import (
    csi_loss,
    discriminator_loss,
    generator_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    latent_reconstruction_loss,
    reconstruction_loss,
)
from contrasyn.methods.csi.optim import LARS, warmup_cosine_lr
from contrasyn.methods.csi.resume import data_fingerprint
from contrasyn.methods.csi.trained import build_model
from contrasyn.methods.csi.trainer import (
    Batch,
    FStep,
    Trained,
    TrainingRun,
    build_augment,
    build_optimizer,
    resolve_gen_channels,
    warm_up,
)
from contrasyn.methods.csi_config import TrainConfig
from test_adversarial import _cfg  # tests/ is on sys.path: the same tiny networks


def _images(n: int = 8, channels: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, 16, 16, generator=torch.Generator().manual_seed(1))


def _side(**kw) -> GenerativeSide:
    torch.manual_seed(0)
    return GenerativeSide(_cfg(**kw)).train()


def _equal_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


class _Ctx:
    """A precision context that counts how often it is opened."""

    def __init__(self) -> None:
        self.opened = 0

    def __call__(self) -> contextlib.AbstractContextManager:
        self.opened += 1
        return contextlib.nullcontext()


# -- the generative side: construction --------------------------------------------------------


def test_csi_has_no_generative_side() -> None:
    with pytest.raises(ValueError, match="^the csi variant has no generative side$"):
        GenerativeSide(_cfg(method="csi"))


def test_networks_optimisers_and_rates() -> None:
    cfg = _cfg(gen_lr=3e-4, disc_lr=5e-4, adam_betas=(0.5, 0.99))
    side = GenerativeSide(cfg)
    assert set(side.optimizers) == {"G", "D", "E", "Dz"}
    nets = {"G": side.G, "D": side.D, "E": side.E, "Dz": side.Dz}
    rates = {"G": 3e-4, "D": 5e-4, "E": 3e-4, "Dz": 5e-4}
    for name, opt in side.optimizers.items():
        assert isinstance(opt, torch.optim.Adam)
        (group,) = opt.param_groups
        assert group["lr"] == rates[name] and group["betas"] == (0.5, 0.99)
        assert [id(p) for p in group["params"]] == [id(p) for p in nets[name].parameters()]
    assert side.win_streak == {"D": 0, "Dz": 0}
    assert side.G_ema is None and side.sampler is side.G
    g_only = GenerativeSide(_cfg(method="csi+g"))
    assert set(g_only.optimizers) == {"G", "D"} and g_only.E is None and g_only.Dz is None


def test_generator_channels_follow_gen_channels_else_F() -> None:
    colour = GenerativeSide(_cfg(channels=3))
    assert colour.channels == 3 and colour.G(torch.randn(2, 8)).shape == (2, 3, 16, 16)
    assert colour.D(torch.rand(2, 3, 16, 16)).shape[0] == 2
    assert colour.E(torch.rand(2, 3, 16, 16)).shape == (2, 8)
    grey = GenerativeSide(_cfg(channels=3, gen_channels=1))
    assert grey.channels == 1 and grey.G(torch.randn(2, 8)).shape == (2, 1, 16, 16)
    # F's channels: G's grey images replicated; real colour images stay as they are for a
    # colour G, and become their luma for a grey one
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(colour.from_model(x), x)
    torch.testing.assert_close(grey.from_model(x), grayscale(x))
    y = torch.rand(3, 1, 16, 16)
    assert torch.equal(grey.to_model(y), y.expand(3, 3, 16, 16))
    assert GenerativeSide(_cfg()).to_model(y).shape == (3, 1, 16, 16)


def test_generator_discriminator_and_encoder_take_gen_width() -> None:
    from contrasyn.methods.csi.nets.aae import Encoder
    from contrasyn.methods.csi.nets.sngan import Discriminator, Generator

    def size(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    side = GenerativeSide(_cfg(gen_width=3))
    assert size(side.G) == size(Generator(8, 1, 16, 3)) != size(Generator(8, 1, 16, 2))
    assert size(side.D) == size(Discriminator(1, 16, 3)) != size(Discriminator(1, 16, 2))
    assert size(side.E) == size(Encoder(8, 1, 16, 3)) != size(Encoder(8, 1, 16, 2))


def test_moving_average_starts_as_a_frozen_copy_of_G() -> None:
    side = _side(gen_ema=0.9)
    assert side.sampler is side.G_ema and side.G_ema is not side.G
    assert _equal_params(side.G_ema, side.G)
    assert not any(p.requires_grad for p in side.G_ema.parameters())


# -- checkpoint tensors -----------------------------------------------------------------------


def test_weight_tensors_round_trip_under_the_gen_prefix() -> None:
    side = _side()
    tensors = side.weight_tensors()
    assert set(tensors) == {f"gen.{k}" for k in side.state_dict()}
    torch.manual_seed(1)
    other = GenerativeSide(_cfg())
    assert not _equal_params(other.G, side.G)
    # other entries of a checkpoint (F's, Adam's) are ignored
    loaded = other.load_weight_tensors({**tensors, "model.w": torch.zeros(1)})
    assert loaded is other
    for k, v in side.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k


def test_optimizer_tensors_round_trip_and_continue_identically() -> None:
    side = _side()
    x, h = _images(4), torch.randn(4, 8)
    fakes = side.fakes(x, h)
    side.d_step(x, fakes)
    side.g_adv_step(fakes)
    tensors = side.optimizer_tensors()
    assert "adam.D.0.exp_avg" in tensors and "adam.G.0.exp_avg_sq" in tensors
    assert "adam.E.0.step" in tensors and not any(k.startswith("adam.Dz.") for k in tensors)
    assert all(k.split(".")[1] in {"G", "D", "E"} for k in tensors)
    other = copy.deepcopy(side)
    for opt in other.optimizers.values():
        opt.state.clear()
    other.load_optimizer_tensors({k: v.clone() for k, v in tensors.items()})  # as if saved
    for name, opt in side.optimizers.items():
        mine, theirs = opt.state_dict()["state"], other.optimizers[name].state_dict()["state"]
        assert mine.keys() == theirs.keys()
        for i in mine:
            for key in mine[i]:
                assert torch.equal(torch.as_tensor(mine[i][key]), torch.as_tensor(theirs[i][key]))
    # the next step is the same
    torch.manual_seed(3)
    side.d_step(x, fakes)
    torch.manual_seed(3)
    other.d_step(x, [f.detach() for f in fakes])
    assert _equal_params(side.D, other.D)


# -- each step's loss, against the networks run by hand ---------------------------------------


@pytest.mark.parametrize("gan_loss", ["bce", "hinge"])
def test_d_step_and_adversarial_step_take_the_configured_gan_loss(gan_loss: str) -> None:
    d_loss = hinge_discriminator_loss if gan_loss == "hinge" else discriminator_loss
    g_loss = hinge_generator_loss if gan_loss == "hinge" else generator_loss
    side = _side(gan_loss=gan_loss, method="csi+g")
    side.D.eval()  # no power iteration: the copies give the same logits
    x, h = _images(4), torch.randn(3, 8)
    fakes = side.fakes(x, h)
    assert len(fakes) == 1 and fakes[0].requires_grad
    D = copy.deepcopy(side.D)
    with torch.no_grad():
        expected_d = d_loss(D(x), D(fakes[0])).item()
    got = side.d_step(x, fakes)
    assert got.keys() == {"loss_d"} and got["loss_d"].item() == pytest.approx(expected_d, rel=1e-5)
    D = copy.deepcopy(side.D)  # the updated D
    with torch.no_grad():
        expected_g = g_loss(D(fakes[0])).item()
    got = side.g_adv_step(fakes)
    assert got.keys() == {"loss_g_adv"}
    assert got["loss_g_adv"].item() == pytest.approx(expected_g, rel=1e-5)


def test_adversarial_step_in_full_takes_both_kinds_of_fake() -> None:
    side = _side()
    side.D.eval()
    x, h = _images(4), torch.randn(4, 8)
    fakes = side.fakes(x, h)
    assert len(fakes) == 2
    D = copy.deepcopy(side.D)
    with torch.no_grad():
        expected = generator_loss(D(fakes[0]), D(fakes[1])).item()
    assert side.g_adv_step(fakes)["loss_g_adv"].item() == pytest.approx(expected, rel=1e-5)


def test_fakes_are_G_of_h_and_G_of_E_of_x() -> None:
    side = _side()
    side.eval()  # BatchNorm on running statistics: one forward equals another
    x, h = _images(4), torch.randn(4, 8)
    synth, rec = side.fakes(x, h)
    torch.testing.assert_close(synth, side.G(h))
    torch.testing.assert_close(rec, side.G(side.E(x)))
    ctx = _Ctx()
    assert len(_side(method="csi+g").fakes(x, h, ctx)) == 1 and ctx.opened == 1


def test_csi_s_step_is_L_CSI_of_G_images_at_the_configured_temperature() -> None:
    cfg = _cfg(temperature=0.2, num_shifts=2)
    torch.manual_seed(0)
    model, side = build_model(cfg).train(), GenerativeSide(cfg).train()
    augment, flip = build_augment(cfg), HorizontalFlip()
    h = torch.randn(4, 8)
    G, F_ = copy.deepcopy(side.G), copy.deepcopy(model)
    torch.manual_seed(7)
    views, labels = shifted_views(G(h), augment, 2, flip)
    assert len(views) == 2 * 2 * 4
    out = F_(views)
    expected = csi_loss(out.z, out.shift, labels, 0.2).total.item()
    torch.manual_seed(7)
    got = side.csi_s_step(model, h, augment, flip)["loss_csi_s"].item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(csi_loss(out.z, out.shift, labels, 0.5).total.item(), rel=1e-3)


def test_csi_s_step_uses_the_flip_it_is_given() -> None:
    cfg = _cfg()
    torch.manual_seed(0)
    model, side = build_model(cfg).train(), GenerativeSide(cfg).train()
    augment, always = build_augment(cfg), HorizontalFlip(p=1.0)
    h = torch.randn(4, 8)
    G, F_ = copy.deepcopy(side.G), copy.deepcopy(model)
    torch.manual_seed(3)
    views, labels = shifted_views(G(h), augment, 4, always)
    out = F_(views)
    expected = csi_loss(out.z, out.shift, labels).total.item()
    torch.manual_seed(3)
    assert side.csi_s_step(model, h, augment, always)["loss_csi_s"].item() == pytest.approx(
        expected, rel=1e-5
    )


def test_latent_step_losses_by_hand() -> None:
    side = _side()
    x, h = _images(4), torch.randn(5, 8)
    E, Dz = copy.deepcopy(side.E), copy.deepcopy(side.Dz)
    with torch.no_grad():
        encoded = E(x)
        expected_ld = discriminator_loss(Dz(h), Dz(encoded)).item()
    got = side.latent_step(x, h)
    assert got.keys() == {"loss_ld", "loss_e_adv"}
    assert got["loss_ld"].item() == pytest.approx(expected_ld, rel=1e-5)
    with torch.no_grad():  # E before its step, against the updated D'
        expected_e = generator_loss(side.Dz(encoded)).item()
    assert got["loss_e_adv"].item() == pytest.approx(expected_e, rel=1e-5)
    # E's BatchNorm statistics moved once, by its own training forward (D' ran on the
    # encodings frozen)
    torch.testing.assert_close(side.E.body[1].running_mean, E.body[1].running_mean)


def test_latent_step_with_the_hinge_loss() -> None:
    side = _side(gan_loss="hinge")
    x, h = _images(4), torch.randn(4, 8)
    E, Dz = copy.deepcopy(side.E), copy.deepcopy(side.Dz)
    with torch.no_grad():
        encoded = E(x)
        expected_ld = hinge_discriminator_loss(Dz(h), Dz(encoded)).item()
    got = side.latent_step(x, h)
    assert got["loss_ld"].item() == pytest.approx(expected_ld, rel=1e-5)
    with torch.no_grad():
        expected_e = hinge_generator_loss(side.Dz(encoded)).item()
    assert got["loss_e_adv"].item() == pytest.approx(expected_e, rel=1e-5)


def test_rec_step_without_F_is_the_weighted_pixel_term() -> None:
    side = _side(rec_weight=7.0)
    x = _images(4)
    G, E = copy.deepcopy(side.G), copy.deepcopy(side.E)
    with torch.no_grad():
        mse = F.mse_loss(G(E(x)), x).item()
    d_before = [p.clone() for p in side.D.parameters()]
    got = side.rec_step(None, x)
    assert got.keys() == {"loss_rec", "rec_mse"}
    assert got["rec_mse"].item() == pytest.approx(mse, rel=1e-5)
    assert got["loss_rec"].item() == pytest.approx(7.0 * mse, rel=1e-5)
    assert not _equal_params(side.G, G) and not _equal_params(side.E, E)
    assert all(torch.equal(a, b) for a, b in zip(d_before, side.D.parameters(), strict=True))


def test_rec_step_with_F_is_eq_8_at_the_configured_weight() -> None:
    cfg = _cfg(rec_weight=3.0)
    torch.manual_seed(0)
    model, side = build_model(cfg).train(), GenerativeSide(cfg).train()
    augment, flip = build_augment(cfg), HorizontalFlip()
    x = _images(4)
    G, E, F_ = copy.deepcopy(side.G), copy.deepcopy(side.E), copy.deepcopy(model)
    torch.manual_seed(11)
    with torch.no_grad():
        x_rec = G(E(x))
        z_real = F_(augment(flip(x))).z
        z_rec = F_(augment(flip(x_rec))).z
    expected = reconstruction_loss(x, x_rec, z_real, z_rec, 3.0)
    torch.manual_seed(11)
    got = side.rec_step(model, x, augment, flip)
    assert got.keys() == {"loss_rec", "rec_mse", "rec_sim"}
    assert got["rec_mse"].item() == pytest.approx(expected.mse.item(), rel=1e-5)
    assert got["rec_sim"].item() == pytest.approx(expected.sim.item(), rel=1e-5)
    assert got["loss_rec"].item() == pytest.approx(expected.total.item(), rel=1e-5)


def test_lrec_step_by_hand_and_G_runs_frozen() -> None:
    side = _side()
    h = torch.randn(4, 8)
    G, E = copy.deepcopy(side.G), copy.deepcopy(side.E)
    g_buffers = [b.clone() for b in side.G.buffers()]
    with torch.no_grad():
        expected = latent_reconstruction_loss(E(G(h)), h).item()
    got = side.lrec_step(h)
    assert got.keys() == {"loss_lrec"}
    assert got["loss_lrec"].item() == pytest.approx(expected, rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(g_buffers, side.G.buffers(), strict=True))
    assert _equal_params(side.G, G) and not _equal_params(side.E, E)


def test_steps_that_need_the_encoder_refuse_csi_g() -> None:
    side = _side(method="csi+g")
    x, h = _images(4), torch.randn(4, 8)
    for call in (
        lambda: side.latent_step(x, h),
        lambda: side.rec_step(None, x),
        lambda: side.lrec_step(h),
    ):
        with pytest.raises(ValueError, match="^method 'csi\\+g' has no encoder$"):
            call()


def test_every_step_runs_its_forwards_in_the_precision_context() -> None:
    cfg = _cfg()
    torch.manual_seed(0)
    model, side = build_model(cfg).train(), GenerativeSide(cfg).train()
    augment, flip = build_augment(cfg), HorizontalFlip()
    x, h = _images(4), torch.randn(4, 8)
    opened = {}
    for name, call in {
        "fakes": lambda c: side.fakes(x, h, c),
        "d_step": lambda c: side.d_step(x, side.fakes(x, h), c),
        "g_adv_step": lambda c: side.g_adv_step(side.fakes(x, h), c),
        "csi_s_step": lambda c: side.csi_s_step(model, h, augment, flip, c),
        "latent_step": lambda c: side.latent_step(x, h, c),
        "rec_step": lambda c: side.rec_step(model, x, augment, flip, c),
        "rec_step_pixels": lambda c: side.rec_step(None, x, ctx=c),
        "lrec_step": lambda c: side.lrec_step(h, c),
    }.items():
        ctx = _Ctx()
        call(ctx)
        opened[name] = ctx.opened
    assert opened == {
        "fakes": 1, "d_step": 1, "g_adv_step": 1, "csi_s_step": 1, "latent_step": 3,
        "rec_step": 2, "rec_step_pixels": 2, "lrec_step": 2,
    }  # fmt: skip


# -- a round: the order of Algorithm 1's lines 6-13 -------------------------------------------


def _record_steps(side: GenerativeSide, calls: list) -> None:
    """Wrap every step of ``side`` so that ``calls`` records (name, args, kwargs)."""
    for name in (
        "fakes", "d_step", "g_adv_step", "csi_s_step", "latent_step", "rec_step", "lrec_step",
        "_check", "update_average",
    ):  # fmt: skip
        real = getattr(side, name)

        def wrapped(*args, _real=real, _name=name, **kwargs):
            out = _real(*args, **kwargs)
            calls.append((_name, args, kwargs, out))
            return out

        setattr(side, name, wrapped)


@pytest.mark.parametrize("ema", [0.0, 0.5])
def test_round_runs_lines_6_to_13_in_order_with_one_h(monkeypatch, ema: float) -> None:
    cfg = _cfg(channels=3, gen_channels=1, gen_ema=ema)
    torch.manual_seed(0)
    model, side = build_model(cfg).train(), GenerativeSide(cfg).train()
    augment, flip = build_augment(cfg), HorizontalFlip()
    broadcast = []
    monkeypatch.setattr(distributed, "broadcast_buffers", lambda m: broadcast.append(m))
    calls: list = []
    _record_steps(side, calls)
    x, ctx = _images(4, 3), _Ctx()
    losses, synthetic = side.round(model, x, augment, flip, ctx, "at step 3")
    names = [c[0] for c in calls]
    assert names == [
        "fakes", "d_step", "g_adv_step", "csi_s_step", "latent_step", "rec_step", "lrec_step",
        "_check", "update_average",
    ]  # fmt: skip
    args = {c[0]: c[1] for c in calls}
    kwargs = {c[0]: c[2] for c in calls}
    real, h, fakes = args["fakes"][0], args["fakes"][1], calls[0][3]
    torch.testing.assert_close(real, grayscale(x))  # G's channels
    assert h.shape == (4, 8)
    assert args["fakes"][2] is ctx
    assert args["d_step"][0] is real and args["d_step"][1] is fakes and args["d_step"][2] is ctx
    assert args["g_adv_step"] == (fakes, ctx)
    assert args["csi_s_step"][0] is model and args["csi_s_step"][1] is h
    assert args["csi_s_step"][2:] == (augment, flip, ctx)
    assert args["latent_step"][0] is real and args["latent_step"][1] is h
    assert args["latent_step"][2] is ctx
    assert args["rec_step"][0] is model and args["rec_step"][1] is real
    assert args["rec_step"][2:] == (augment, flip, ctx) and not kwargs["rec_step"]
    assert args["lrec_step"][0] is h and args["lrec_step"][1] is ctx
    assert args["_check"][1] == "at step 3"
    assert set(args["_check"][0]) == set(losses)
    assert broadcast == [side]
    # the X~ that L_JOINT sees: line 7's G(h) (or the average's image of the same h), detached,
    # in F's channels
    assert synthetic.shape == (4, 3, 16, 16) and not synthetic.requires_grad
    if ema:
        with torch.no_grad():
            expected = side.G_ema(h)  # the updated average, in training mode as the round's
        torch.testing.assert_close(synthetic, expected.expand(-1, 3, -1, -1))
    else:
        assert torch.equal(synthetic, fakes[0].detach().expand(-1, 3, -1, -1))


def test_round_in_csi_g_skips_the_encoder_lines() -> None:
    cfg = _cfg(method="csi+g")
    torch.manual_seed(0)
    model, side = build_model(cfg).train(), GenerativeSide(cfg).train()
    calls: list = []
    _record_steps(side, calls)
    losses, synthetic = side.round(model, _images(4), build_augment(cfg), HorizontalFlip())
    assert [c[0] for c in calls] == [
        "fakes", "d_step", "g_adv_step", "csi_s_step", "_check", "update_average",
    ]  # fmt: skip
    assert set(losses) == {"loss_d", "loss_g_adv", "loss_csi_s"}
    assert calls[-2][1][1] == ""  # the default ``where``
    assert torch.equal(synthetic, calls[0][3][0].detach())


def test_warmup_round_is_the_autoencoder_alone_in_order(monkeypatch) -> None:
    side = _side()
    broadcast = []
    monkeypatch.setattr(distributed, "broadcast_buffers", lambda m: broadcast.append(m))
    calls: list = []
    _record_steps(side, calls)
    x, ctx = _images(4), _Ctx()
    values = side.warmup_round(x, ctx, "in warm-up round 2")
    assert [c[0] for c in calls] == [
        "fakes", "d_step", "g_adv_step", "latent_step", "rec_step", "lrec_step", "_check",
        "update_average",
    ]  # fmt: skip
    args = {c[0]: c[1] for c in calls}
    kwargs = {c[0]: c[2] for c in calls}
    real, h, fakes = args["fakes"][0], args["fakes"][1], calls[0][3]
    assert torch.equal(real, x) and h.shape == (4, 8) and args["fakes"][2] is ctx
    assert args["d_step"] == (real, fakes, ctx) and args["g_adv_step"] == (fakes, ctx)
    assert args["latent_step"] == (real, h, ctx)
    assert args["rec_step"] == (None, real) and kwargs["rec_step"] == {"ctx": ctx}
    assert args["lrec_step"] == (h, ctx)
    assert args["_check"][1] == "in warm-up round 2"
    assert set(values) == {
        "loss_d", "loss_g_adv", "loss_ld", "loss_e_adv", "loss_rec", "rec_mse", "loss_lrec",
    }  # fmt: skip
    assert broadcast == [side]
    assert side.warmup_round(x) and calls[-2][1][1] == ""  # the default ``where``
    g_only = _side(method="csi+g")
    assert set(g_only.warmup_round(x)) == {"loss_d", "loss_g_adv"}


def test_latent_is_the_batch_size_or_this_ranks_share_of_synth_batch(monkeypatch) -> None:
    x = _images(4)
    assert _side()._latent(x).shape == (4, 8)
    on_meta = _side()._latent(x.to("meta"))  # drawn on the batch's device
    assert on_meta.device.type == "meta" and on_meta.shape == (4, 8)
    side = _side(synth_batch=6)
    assert side._latent(x).shape == (6, 8)
    monkeypatch.setattr(distributed, "shard", lambda n: (n // 3, n // 3 + 3))  # rank 1 of 2
    assert side._latent(x).shape == (3, 8)
    torch.manual_seed(4)
    expected = torch.randn(3, 8)
    torch.manual_seed(4)
    assert torch.equal(side._latent(x), expected)


# -- the checks after every round -------------------------------------------------------------


def test_check_returns_floats_averaged_over_ranks(monkeypatch) -> None:
    side = _side()
    monkeypatch.setattr(distributed, "mean_over_ranks", lambda v: v / 2)
    losses = {"loss_d": torch.tensor(3.0), "loss_g_adv": torch.tensor(5.0, requires_grad=True)}
    assert side._check(losses, "here") == {"loss_d": 1.5, "loss_g_adv": 2.5}


def test_check_names_a_non_finite_loss_and_where() -> None:
    side = _side()
    losses = {"loss_d": torch.tensor(1.0), "loss_lrec": torch.tensor(float("inf"))}
    with pytest.raises(TrainingError, match="^loss_lrec became inf at epoch 4, step 9; the last"):
        side._check(losses, "at epoch 4, step 9")


def test_check_stops_a_winning_discriminator_naming_where() -> None:
    side = _side(d_win_rounds=1)
    with pytest.raises(TrainingError, match="for 1 rounds in a row, at epoch 2, step 5; its"):
        side._check({"loss_d": torch.tensor(0.0)}, "at epoch 2, step 5")


def test_discriminator_streak_counts_consecutive_outright_wins() -> None:
    side = _side(d_win_loss=0.01, d_win_rounds=4)
    watch = side._watch_discriminators
    watch({"loss_d": 0.005, "loss_ld": 0.5}, "r0")
    assert side.win_streak == {"D": 1, "Dz": 0}
    watch({"loss_d": 0.01, "loss_ld": 0.001}, "r1")  # at the threshold is not a win
    assert side.win_streak == {"D": 0, "Dz": 1}
    watch({"loss_d": 0.001}, "r2")  # no D' loss (csi+g, warm-up of csi+g): its streak stays
    assert side.win_streak == {"D": 1, "Dz": 1}
    watch({"loss_ld": 0.001}, "r2b")  # each discriminator is watched on its own loss
    assert side.win_streak == {"D": 1, "Dz": 2}
    watch({"loss_d": 0.001}, "r2c")
    watch({"loss_d": 0.002, "loss_ld": 0.009}, "r3")
    assert side.win_streak == {"D": 3, "Dz": 3}
    message = (
        "the discriminator D won outright: loss_d < 0.01 for 4 rounds in a row, r4; its "
        "opponent gets no useful gradient any more. The last good checkpoint is kept. Lower "
        "train.disc_lr or raise train.gen_lr."
    )
    with pytest.raises(TrainingError) as info:
        watch({"loss_d": 0.0, "loss_ld": 1.0}, "r4")
    assert str(info.value) == message


def test_latent_discriminator_winning_is_named_D_prime() -> None:
    side = _side(d_win_rounds=2)
    side._watch_discriminators({"loss_d": 1.0, "loss_ld": 1e-4}, "r0")
    with pytest.raises(TrainingError) as info:
        side._watch_discriminators({"loss_d": 1.0, "loss_ld": 1e-4}, "in warm-up round 1")
    assert str(info.value).startswith(
        "the discriminator D' won outright: loss_ld < 0.001 for 2 rounds in a row, in warm-up "
        "round 1; its opponent"
    )


# -- Algorithm 1's loop: the warm-up before it ------------------------------------------------


def test_warm_up_draws_its_own_seeded_order_and_this_ranks_slice(monkeypatch) -> None:
    side, images, ctx = _side(), _images(10), _Ctx()
    seen, logged = [], []

    def warmup_round(x, ctx_, where):
        seen.append((x, ctx_, where))
        return {"loss_d": float(len(seen))}

    monkeypatch.setattr(side, "warmup_round", warmup_round)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    warm_up(side, images, 5, 4, (1, 3), ctx, 3, lambda r, v: logged.append((r, v)), Path("/o"))
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is left alone
    order = torch.Generator().manual_seed(3 + 7_919)
    perms = [torch.randperm(10, generator=order) for _ in range(3)]  # 2 batches a pass
    expected = [
        perms[0][0:4][1:3], perms[0][4:8][1:3], perms[1][0:4][1:3], perms[1][4:8][1:3],
        perms[2][0:4][1:3],
    ]  # fmt: skip
    assert len(seen) == 5
    for r, (x, ctx_, where) in enumerate(seen):
        assert torch.equal(x, images[expected[r]]), r
        assert ctx_ is ctx and where == f"in warm-up round {r} (in /o)"
    assert logged == [(r, {"loss_d": r + 1.0}) for r in range(5)]


def test_warm_up_on_fewer_images_than_a_batch(monkeypatch) -> None:
    side, images = _side(), _images(3)
    seen = []
    monkeypatch.setattr(side, "warmup_round", lambda x, c, w: seen.append((x, w)) or {})
    warm_up(side, images, 2, 4, (0, 4), _Ctx(), 0, lambda r, v: None, None)
    order = torch.Generator().manual_seed(7_919)
    # one batch a pass: a new order every round, each batch all of the images
    for x, _ in seen:
        assert torch.equal(x, images[torch.randperm(3, generator=order)])
    assert [w for _, w in seen] == ["in warm-up round 0", "in warm-up round 1"]


def test_warm_up_batches_go_to_the_generators_device(monkeypatch) -> None:
    side = _side().to("meta")  # the meta device stands in for an accelerator
    seen = []
    monkeypatch.setattr(side, "warmup_round", lambda x, c, w: seen.append(x) or {})
    warm_up(side, _images(4), 1, 4, (0, 4), _Ctx(), 0, lambda r, v: None, None)
    assert seen[0].device.type == "meta" and seen[0].shape == (4, 1, 16, 16)


def test_warm_up_runs_only_on_a_fresh_start_of_a_generative_run(tmp_path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(trainer, "warm_up", lambda *args: calls.append(args))
    cfg = _cfg(epochs=1, gen_warmup=2, gen_every=4, seed=5)
    ran = trainer.train_networks(_images(), cfg, tmp_path, progress=False)
    (args,) = calls
    side, images, rounds, batch, shard, ctx, seed, log, out = args
    assert side is ran.side and torch.equal(images, _images()) and rounds == 2
    assert (batch, shard, seed, out) == (4, (0, 4), 5, tmp_path)
    assert log.__name__ == "log_warmup"
    with ctx():
        assert not torch.is_autocast_enabled("cpu")  # the run's precision (fp32)
    trainer.train_networks(_images(), cfg, tmp_path, progress=False)  # resumed: done already
    assert len(calls) == 1
    trainer.train_networks(_images(), dataclasses.replace(cfg, gen_warmup=0), progress=False)
    trainer.train_networks(_images(), _cfg(method="csi", epochs=1, gen_warmup=2), progress=False)
    assert len(calls) == 1


def test_train_networks_runs_algorithm_1_with_the_round_and_N(monkeypatch) -> None:
    seen = {}

    def fake_algorithm_1(batches, f_step, gen_round, every, after_batch):
        seen.update(batches=list(batches), f_step=f_step, gen_round=gen_round, every=every)
        seen["after_batch"] = after_batch

    monkeypatch.setattr(trainer, "algorithm_1", fake_algorithm_1)
    ran = trainer.train_networks(_images(), _cfg(gen_every=3), progress=False)
    assert seen["every"] == 3 and len(seen["batches"]) == 4
    assert isinstance(seen["f_step"], FStep) and seen["after_batch"].__name__ == "after_batch"
    rounds = []
    monkeypatch.setattr(
        GenerativeSide, "round", lambda self, *args: rounds.append((self, args)) or ({}, None)
    )
    assert seen["gen_round"](_images(4), "at step 2") == ({}, None)
    ((side, (model, x, augment, flip, ctx, where)),) = rounds
    assert side is ran.side and model is ran.model and where == "at step 2"
    assert isinstance(flip, HorizontalFlip) and len(augment) == 3 and torch.equal(x, _images(4))
    trainer.train_networks(_images(), _cfg(method="csi"), progress=False)
    assert seen["gen_round"] is None


def test_train_defaults_to_a_progress_bar_and_quiet(monkeypatch) -> None:
    calls = []
    model = build_model(_cfg())

    def fake(images, cfg, out_dir, progress, verbose):
        calls.append((out_dir, progress, verbose))
        return Trained(model, None, cfg)

    monkeypatch.setattr(trainer, "train_networks", fake)
    assert trainer.train(_images(), _cfg()) is model
    assert trainer.train(_images(), _cfg(), "o", False, True) is model
    assert calls == [(None, True, False), ("o", False, True)]


# -- building the run -------------------------------------------------------------------------


def test_build_optimizer_takes_every_setting() -> None:
    cfg = _cfg(
        base_lr=0.3, batch_size=8, lr_reference_batch=4, momentum=0.8, weight_decay=1e-3,
        lars_trust=0.02,
    )  # fmt: skip
    model = build_model(cfg)
    lars = build_optimizer(model, cfg)
    assert isinstance(lars, LARS) and lars.trust_coef == 0.02
    (group,) = lars.param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.6, 0.8, 1e-3)
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
    sgd = build_optimizer(model, dataclasses.replace(cfg, optimizer="sgd"))
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["lr"] == 0.6
    with pytest.raises(ConfigError, match="^train.optimizer must be one of lars, sgd, got 'adam'$"):
        dataclasses.replace(cfg, optimizer="adam")  # refused where the config is made
    cfg.optimizer = "adam"  # set by hand afterwards: the optimizer's own check
    with pytest.raises(ConfigError, match="^optimizer must be 'lars' or 'sgd', got 'adam'$"):
        build_optimizer(model, cfg)


@pytest.mark.parametrize("blur", [False, True])
def test_build_augment_takes_every_setting(blur: bool) -> None:
    cfg = _cfg(jitter=(0.1, 0.2, 0.3, 0.05), jitter_p=0.6, gray_p=0.3, crop_scale=(0.2, 0.9))
    augment = build_augment(dataclasses.replace(cfg, blur=blur))
    jitter, gray, crop, *rest = augment
    assert isinstance(jitter, ColorJitter) and jitter.p == 0.6
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == cfg.jitter
    assert isinstance(gray, RandomGrayscale) and gray.p == 0.3
    assert isinstance(crop, RandomResizedCrop) and crop.scale == (0.2, 0.9)
    assert crop.fixed_scale is None
    assert [type(m) for m in rest] == ([RandomGaussianBlur] if blur else [])


def test_resolve_gen_channels_cases() -> None:
    grey3 = torch.rand(4, 1, 16, 16).expand(-1, 3, -1, -1).clone()
    assert resolve_gen_channels(_cfg(), _images(4)).gen_channels == 1
    assert resolve_gen_channels(_cfg(channels=3), grey3).gen_channels == 1
    almost = grey3.clone()
    almost[3, 2, 5, 5] += 0.1  # one pixel of colour in one image
    assert resolve_gen_channels(_cfg(channels=3), almost).gen_channels == 3
    fixed = _cfg(channels=3, gen_channels=3)
    assert resolve_gen_channels(fixed, grey3) is fixed
    csi = _cfg(channels=3, method="csi")
    assert resolve_gen_channels(csi, grey3) is csi


def test_data_fingerprint_is_sha256_of_shape_dtype_and_bytes() -> None:
    x = _images(3)
    digest = hashlib.sha256(b"(3, 1, 16, 16)|torch.float32")
    digest.update(x.numpy().tobytes())
    assert data_fingerprint(x) == digest.hexdigest()
    # the same bytes in another shape or type are other data; a strided view is its values
    assert data_fingerprint(x.view(1, 3, 16, 16)) != data_fingerprint(x)
    assert data_fingerprint(x.double()) != data_fingerprint(x)
    t = x.transpose(2, 3)
    assert data_fingerprint(t) == data_fingerprint(t.contiguous())
    assert data_fingerprint(x.requires_grad_()) == digest.hexdigest()


def test_rank_seed(monkeypatch) -> None:
    assert resume.rank_seed(5) == 5
    monkeypatch.setattr(distributed, "rank", lambda: 3)
    assert resume.rank_seed(5) == 5 + 3 * 1_000_003


class _Bar:
    """Stands in for tqdm: records what the run asks of its progress bar."""

    made: list[_Bar] = []
    lines: list[str] = []

    def __init__(self, **kw) -> None:
        self.kw, self.n, self.postfix, self.closed = kw, 0, None, False
        _Bar.made.append(self)

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix(self, refresh: bool = True, **kw) -> None:
        self.postfix, self.refreshed = kw, refresh

    def close(self) -> None:
        self.closed = True

    @staticmethod
    def write(line: str) -> None:
        _Bar.lines.append(line)


@pytest.fixture
def bar(monkeypatch) -> type[_Bar]:
    _Bar.made, _Bar.lines = [], []
    monkeypatch.setattr(trainer, "tqdm", _Bar)
    return _Bar


def test_training_run_sizes_and_progress_bar(tmp_path, bar) -> None:
    run = TrainingRun(_images(10), _cfg(steps=5), tmp_path, True, False)
    assert (run.batch, run.steps_per_epoch, run.total, run.epochs) == (4, 2, 5, 3)
    assert run.shard == (0, 4) and run.start_epoch == 0 and run.out == tmp_path
    assert run.data_sha == data_fingerprint(_images(10)) and run.cfg.gen_channels == 1
    assert bar.made[-1].kw == dict(
        total=5, initial=0, disable=None, desc="train full", unit="step", dynamic_ncols=True
    )
    assert run.model.training and run.side.training and run.latest == {}
    assert isinstance(run.optimizer, LARS) and isinstance(run.f_step, FStep)
    assert run.f_step.forward is run.model and run.memory == torch.contiguous_format
    assert run.log is not None and (tmp_path / "metrics.jsonl").exists()
    run.close()
    small = TrainingRun(_images(3), _cfg(method="csi", epochs=2), None, False, False)
    assert (small.batch, small.steps_per_epoch, small.total, small.epochs) == (3, 1, 2, 2)
    assert small.side is None and small.log is None and small.out is None
    assert bar.made[-1].kw["disable"] is True and bar.made[-1].kw["desc"] == "train csi"


def test_training_run_progress_only_on_the_main_rank(monkeypatch, tmp_path, bar) -> None:
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    run = TrainingRun(_images(), _cfg(), tmp_path, True, True)
    assert run.log is None and not run.main and bar.made[-1].kw["disable"] is True
    run._write({"step": 0, "epoch": 0.5, "lr": 0.1, "loss": 1.0, "seconds": 0.0})
    assert bar.lines == []  # only rank 0 prints


def test_training_run_refuses_images_it_cannot_train_on() -> None:
    with pytest.raises(ConfigError) as info:
        TrainingRun(torch.rand(4, 16, 16), _cfg(), None, False, False)
    assert str(info.value) == "training images must be (N, 1, H, W), got (4, 16, 16)"
    with pytest.raises(ConfigError, match=r"^training images must be \(N, 3, H, W\), got \(4, 1,"):
        TrainingRun(_images(4), _cfg(channels=3), None, False, False)
    with pytest.raises(ConfigError) as info:
        TrainingRun(torch.rand(4, 1, 32, 32), _cfg(method="csi+g"), None, False, False)
    assert str(info.value) == (
        "training images are 32x32 but the generator of method 'csi+g' makes 16x16 "
        "(train.image_size)"
    )
    with pytest.raises(ConfigError) as info:  # either side off: G makes square images
        TrainingRun(torch.rand(4, 1, 16, 32), _cfg(), None, False, False)
    assert str(info.value).startswith("training images are 16x32 but the generator")
    # F alone takes any size
    run = TrainingRun(torch.rand(4, 1, 32, 32), _cfg(method="csi"), None, False, False)
    assert run.side is None


def test_training_run_resolves_the_generators_channels_from_its_images() -> None:
    grey = _images(4).expand(-1, 3, -1, -1)  # replicated grey, as Fashion-MNIST reaches F
    run = TrainingRun(grey, _cfg(channels=3), None, False, False)
    assert run.cfg.gen_channels == 1 and run.side.channels == 1
    run = TrainingRun(_images(4, channels=3), _cfg(channels=3), None, False, False)
    assert run.cfg.gen_channels == 3 and run.side.channels == 3


def test_training_run_memory_format_and_precision() -> None:
    run = TrainingRun(
        _images(), _cfg(channels_last=True, width=8, precision="bf16"), None, False, False
    )
    assert run.memory is torch.channels_last
    convs = [p for p in run.model.parameters() if p.ndim == 4 and p.shape[1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not any(p.is_contiguous() for p in convs if p.shape[-1] > 1)
    with run.precision():
        assert torch.is_autocast_enabled("cpu")
    with TrainingRun(_images(), _cfg(), None, False, False).precision():
        assert not torch.is_autocast_enabled("cpu")


def test_training_run_seeds_other_ranks_apart(monkeypatch) -> None:
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    TrainingRun(_images(), _cfg(batch_size=8, seed=4), None, False, False)
    after = torch.get_rng_state()
    torch.manual_seed(4 + 1_000_003)
    assert torch.equal(after, torch.get_rng_state())
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    TrainingRun(_images(), _cfg(batch_size=8, seed=4), None, False, False)
    assert not torch.equal(after, torch.get_rng_state())


# -- the batches and the schedule -------------------------------------------------------------


def test_batches_shuffle_per_epoch_and_follow_the_schedule(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(distributed, "shard", lambda n: (1, 3))  # this rank's slice
    cfg = _cfg(method="csi", steps=5, base_lr=0.2, warmup_epochs=1.5, warmup_multiplier=3.0, seed=9)
    images = _images(12)
    run = TrainingRun(images, cfg, tmp_path, False, False)
    assert (run.steps_per_epoch, run.total, run.epochs) == (3, 5, 2)
    got = list(run.batches())
    assert [b.step for b in got] == [0, 1, 2, 3, 4]
    for b in got:
        epoch, i = divmod(b.step, 3)
        order = torch.randperm(12, generator=torch.Generator().manual_seed(9 + epoch))
        assert torch.equal(b.x, images[order[i * 4 : (i + 1) * 4][1:3]]), b.step
        assert b.lr == pytest.approx(warmup_cosine_lr(epoch + i / 3, 0.2, 5 / 3, 1.5, 3.0))
        assert b.epoch == round(epoch + (i + 1) / 3, 4)
        assert b.where == f"at epoch {epoch}, step {b.step} (in {tmp_path})"
    assert [b.epoch for b in got] == [0.3333, 0.6667, 1.0, 1.3333, 1.6667]
    assert [b.epoch_end for b in got] == [None, None, 1, None, 2]  # the partial last epoch
    run.start_epoch = 1  # resumed after epoch 1
    assert [b.step for b in run.batches()] == [3, 4]
    run.close()
    no_out = TrainingRun(images, cfg, None, False, False)
    assert next(no_out.batches()).where == "at epoch 0, step 0"


# -- F's step ---------------------------------------------------------------------------------


def test_f_step_is_one_LARS_step_on_L_CSI_at_the_given_rate() -> None:
    cfg = _cfg(method="csi", temperature=0.2, num_shifts=2)
    run = TrainingRun(_images(), cfg, None, False, False)
    model = copy.deepcopy(run.model)
    opt = build_optimizer(model, cfg)
    x = _images(4)
    for step, lr in enumerate((0.37, 0.05)):
        for group in opt.param_groups:
            group["lr"] = lr
        torch.manual_seed(step)
        views, labels = shifted_views(x, run.augment, 2, run.flip)
        out = model(views)
        loss = csi_loss(out.z, out.shift, labels, 0.2)
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        opt.step()
        torch.manual_seed(step)
        got = run.f_step(x, lr, "L_CSI", "here")
        assert [g["lr"] for g in run.optimizer.param_groups] == [lr]
        assert got == pytest.approx(
            {"loss": loss.total.item(), "loss_con": loss.con.item(), "loss_cls": loss.cls.item()}
        )
        assert got["loss"] != pytest.approx(got["loss_con"])
        for p, q in zip(run.model.parameters(), model.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_f_step_logs_the_mean_over_ranks(monkeypatch) -> None:
    run = TrainingRun(_images(), _cfg(method="csi"), None, False, False)
    means = []
    monkeypatch.setattr(distributed, "mean_over_ranks", lambda v: means.append(v) or v * 2)
    got = run.f_step(_images(4), 0.1, "L_CSI", "here")
    (values,) = means
    assert values.shape == (3,) and not values.requires_grad
    assert got["loss"] == pytest.approx(2 * values[0].item())
    assert got["loss_con"] == pytest.approx(2 * values[1].item())
    assert got["loss_cls"] == pytest.approx(2 * values[2].item())
    assert values[0].item() == pytest.approx(values[1].item() + values[2].item(), rel=1e-5)


def test_f_step_names_the_loss_and_its_parts_when_it_diverges(monkeypatch) -> None:
    run = TrainingRun(_images(), _cfg(method="csi"), None, False, False)
    real = trainer.csi_loss

    def nan_total(z, shift, labels, temperature):
        out = real(z, shift, labels, temperature)
        return out._replace(total=out.total * float("nan"), con=out.con * 0 + 2.5)

    monkeypatch.setattr(trainer, "csi_loss", nan_total)
    with pytest.raises(TrainingError) as info:
        run.f_step(_images(4), 0.1, "L_JOINT", "at epoch 3, step 7")
    message = str(info.value)
    assert message.startswith("L_JOINT (L_con-SI 2.5, L_cls-SI ")
    assert ") became nan at epoch 3, step 7; the last good checkpoint is kept." in message


def test_f_step_runs_F_in_the_run_memory_format_and_precision() -> None:
    run = TrainingRun(_images(), _cfg(method="csi", precision="bf16"), None, False, False)
    run.memory = torch.channels_last
    seen = []

    class Stop(Exception):
        pass

    def forward(views):
        seen.append((views.shape, views.is_contiguous(memory_format=torch.channels_last)))
        seen.append(torch.is_autocast_enabled("cpu"))
        raise Stop

    with pytest.raises(Stop):
        FStep(run, forward)(_images(4), 0.1, "L_CSI", "here")
    assert seen == [(torch.Size([32, 1, 16, 16]), True), True]


# -- after each batch: log, progress, checkpoints ---------------------------------------------


def test_after_batch_logs_every_log_every_steps_and_the_last(tmp_path, bar, monkeypatch) -> None:
    cfg = _cfg(epochs=3, log_every=2, checkpoint_every=2)  # 2 steps an epoch, 6 steps
    run = TrainingRun(_images(), cfg, tmp_path, False, False)
    written, saved, calibrated = [], [], []
    monkeypatch.setattr(run, "_write", lambda entry: written.append(entry))
    monkeypatch.setattr(run, "checkpoint", lambda epoch: saved.append(epoch))
    monkeypatch.setattr(run.side, "calibrate_sampler", lambda: calibrated.append(len(saved)))
    run.tick = time.perf_counter() - 10.25
    for step in range(6):
        record = {"loss": step + 0.5}
        if step == 1:
            record.update(loss_d=0.25, loss_joint=1.5)
        epoch_end = step // 2 + 1 if step % 2 else None
        b = Batch(step, (step + 1) / 2, _images(4), 0.01 * (step + 1), "w", epoch_end)
        run.after_batch(b, record)
        assert bar.made[-1].n == step + 1
        assert bar.made[-1].postfix == {"loss": f"{step + 0.5:.3f}", "lr": f"{b.lr:.3g}"}
        assert bar.made[-1].refreshed is False
    assert [e["step"] for e in written] == [0, 2, 4, 5]
    # a round's losses (step 1's) stay in the log until the next round
    assert written[1] == {
        "step": 2,
        "epoch": 1.5,
        "lr": 0.03,
        "loss": 2.5,
        "loss_d": 0.25,
        "loss_joint": 1.5,
        "seconds": written[1]["seconds"],
    }
    assert all(
        10.25 <= e["seconds"] < 60 and e["seconds"] == round(e["seconds"], 3) for e in written
    )
    assert list(written[0]) == ["step", "epoch", "lr", "loss", "seconds"]
    assert saved == [2, 3] and calibrated == [1]  # calibrated before the final checkpoint


def test_after_batch_checkpoints_every_checkpoint_every_epochs(monkeypatch) -> None:
    run = TrainingRun(
        _images(4), _cfg(method="csi", epochs=7, checkpoint_every=3), None, False, False
    )
    saved = []
    monkeypatch.setattr(run, "checkpoint", lambda epoch: saved.append(epoch))
    for epoch in range(1, 8):
        run.after_batch(Batch(epoch - 1, epoch, _images(4), 0.1, "w", epoch), {"loss": 1.0})
    run.after_batch(Batch(7, 7.5, _images(4), 0.1, "w", None), {"loss": 1.0})
    assert saved == [3, 6, 7]


def test_log_warmup_every_log_every_rounds_and_the_last(monkeypatch) -> None:
    run = TrainingRun(_images(), _cfg(gen_warmup=5, log_every=3), None, False, False)
    written = []
    monkeypatch.setattr(run, "_write", lambda entry: written.append(entry))
    run.tick = time.perf_counter() - 10.25
    for r in range(5):
        run.log_warmup(r, {"loss_d": r / 4})
    assert [e["warmup_round"] for e in written] == [0, 3, 4]
    assert [list(e) for e in written] == [["warmup_round", "loss_d", "seconds"]] * 3
    assert [e["loss_d"] for e in written] == [0, 0.75, 1.0]
    assert all(
        10.25 <= e["seconds"] < 60 and e["seconds"] == round(e["seconds"], 3) for e in written
    )


def test_write_logs_and_prints_when_verbose(tmp_path, bar) -> None:
    entry = {"step": 0, "epoch": 0.5, "lr": 0.1, "loss": 1.25, "seconds": 0.5}
    run = TrainingRun(_images(), _cfg(), tmp_path, False, True)
    run._write(entry)
    run.close()
    assert bar.lines == [trainer.log_line("full", 4, entry)]
    assert [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [entry]
    assert bar.made[-1].closed and run.log._file.closed
    quiet = TrainingRun(_images(), _cfg(), None, False, False)
    quiet._write(entry)
    assert len(bar.lines) == 1


def test_checkpoint_meta_and_the_wait_during_a_winning_streak(tmp_path, monkeypatch) -> None:
    saves = []
    monkeypatch.setattr(trainer, "save_checkpoint", lambda *args: saves.append(args))
    cfg = _cfg(steps=5)  # 2 steps an epoch, epochs 1..3, 5 steps
    run = TrainingRun(_images(), cfg, tmp_path, False, False)
    run.checkpoint(1)
    stem, tensors, meta = saves[-1]
    assert stem == tmp_path / "last"
    assert meta == {
        "config": trainer.to_dict(run.cfg),
        "epoch": 1,
        "step": 2,
        "data_sha256": run.data_sha,
    }
    assert set(tensors) >= {"rng.cpu", "gen.G.dense.weight", "model.projection.2.weight"}
    run.side.win_streak["Dz"] = 1  # D' on a winning streak: intermediate checkpoints wait
    run.checkpoint(2)
    assert len(saves) == 1
    run.checkpoint(3)  # the final one is kept
    assert saves[-1][2]["epoch"] == 3 and saves[-1][2]["step"] == 5
    run.side.win_streak["Dz"] = 0
    monkeypatch.setattr(run, "main", False)  # other ranks take part but do not write
    run.checkpoint(2)
    assert len(saves) == 2
    TrainingRun(_images(), cfg, None, False, False).checkpoint(3)
    assert len(saves) == 2
    csi = TrainingRun(_images(), _cfg(method="csi"), tmp_path / "csi", False, False)
    csi.checkpoint(1)
    assert saves[-1][2]["epoch"] == 1 and not any(k.startswith("gen.") for k in saves[-1][1])


def test_finish_shares_rank_0_statistics_and_returns_eval_networks(monkeypatch) -> None:
    run = TrainingRun(_images(), _cfg(), None, False, False)
    calls = []
    monkeypatch.setattr(distributed, "broadcast_buffers", lambda m: calls.append(m))
    monkeypatch.setattr(distributed, "barrier", lambda: calls.append("barrier"))
    done = run.finish()
    assert calls == [run.model, "barrier"]
    assert done == Trained(run.model, run.side, run.cfg) and done.config.gen_channels == 1
    assert not done.model.training and not done.side.training


# -- the checkpoint's state: save and restore ---------------------------------------------------


def _trained_state(cfg: TrainConfig):
    torch.manual_seed(cfg.seed)
    model, side = build_model(cfg), GenerativeSide(cfg)
    optimizer = build_optimizer(model, cfg)
    out = model(torch.rand(8, 1, 16, 16))
    (out.z.sum() + out.shift.sum()).backward()
    optimizer.step()
    x, h = _images(4), torch.randn(4, 8)
    side.d_step(x, side.fakes(x, h))
    return model, optimizer, side


@pytest.mark.parametrize("optimizer", ["lars", "sgd"])
def test_state_tensors_hold_everything_to_resume(optimizer: str) -> None:
    model, opt, side = _trained_state(_cfg(optimizer=optimizer))
    cpu0, cpu1, cuda1 = torch.arange(3), torch.arange(4), torch.arange(5)
    tensors = resume.state_tensors(model, opt, side, [(cpu0, None), (cpu1, cuda1)])
    assert tensors["rng.cpu"] is cpu0 and tensors["rng.cpu.rank1"] is cpu1
    assert tensors["rng.cuda.rank1"] is cuda1 and "rng.cuda" not in tensors
    sgd = opt.optim if optimizer == "lars" else opt
    params = [p for g in sgd.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        assert tensors[f"optim.momentum.{i}"] is sgd.state[p]["momentum_buffer"]
    for k, v in model.state_dict().items():
        assert torch.equal(tensors[f"model.{k}"], v)
    assert {k for k in tensors if k.startswith("gen.")} == set(side.weight_tensors())
    assert {k for k in tensors if k.startswith("adam.")} == set(side.optimizer_tensors())
    assert resume.state_tensors(model, opt, None, [(cpu0, cuda1)])["rng.cuda"] is cuda1
    assert not any(k.startswith(("gen.", "adam.")) for k in resume.state_tensors(
        model, opt, None, [(cpu0, None)]
    ))  # fmt: skip


def test_restore_puts_back_weights_momentum_adam_and_this_ranks_rng(monkeypatch) -> None:
    cfg = _cfg()
    model, opt, side = _trained_state(cfg)
    torch.manual_seed(123)
    rng0 = torch.get_rng_state()
    torch.manual_seed(456)
    rng1 = torch.get_rng_state()
    tensors = {
        k: v.clone() for k, v in resume.state_tensors(
            model, opt, side, [(rng0, None), (rng1, None)]
        ).items()
    }  # fmt: skip
    torch.manual_seed(99)
    fresh, fresh_side = build_model(cfg), GenerativeSide(cfg)
    fresh_opt = build_optimizer(fresh, cfg)
    resume.restore(fresh, fresh_opt, fresh_side, tensors, cfg.seed)
    assert torch.equal(torch.get_rng_state(), rng0)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    for k, v in side.state_dict().items():
        assert torch.equal(fresh_side.state_dict()[k], v), k
    for p, q in zip(
        opt.param_groups[0]["params"], fresh_opt.param_groups[0]["params"], strict=True
    ):
        assert torch.equal(
            fresh_opt.optim.state[q]["momentum_buffer"], opt.optim.state[p]["momentum_buffer"]
        )
    assert (
        fresh_side.optimizers["D"].state_dict()["state"].keys()
        == side.optimizers["D"].state_dict()["state"].keys()
    )
    # rank 1 takes its own stream; a rank the run was not saved with starts a fresh one
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    resume.restore(fresh, fresh_opt, None, tensors, cfg.seed)
    assert torch.equal(torch.get_rng_state(), rng1)
    monkeypatch.setattr(distributed, "rank", lambda: 2)
    resume.restore(fresh, fresh_opt, None, tensors, 7)
    state = torch.get_rng_state()
    torch.manual_seed(7 + 2 * 1_000_003)
    assert torch.equal(state, torch.get_rng_state())


def test_restore_sets_the_cuda_rng_only_where_there_is_cuda(monkeypatch) -> None:
    cfg = _cfg(method="csi")
    model, opt, _ = _trained_state(dataclasses.replace(cfg, method="full"))
    cuda = torch.arange(6, dtype=torch.uint8)
    tensors = resume.state_tensors(model, opt, None, [(torch.get_rng_state(), cuda)])
    set_states = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s: set_states.append(s))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    resume.restore(model, opt, None, tensors, 0)
    assert set_states == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    resume.restore(model, opt, None, {k: v for k, v in tensors.items() if k != "rng.cuda"}, 0)
    assert set_states == []
    resume.restore(model, opt, None, tensors, 0)
    (state,) = set_states
    assert torch.equal(state, cuda)


def test_resume_checks_config_and_data_and_rebuilds_an_interrupted_sidecar(tmp_path) -> None:
    cfg = _cfg(method="csi", epochs=1)
    trainer.train_networks(_images(), cfg, tmp_path, progress=False)
    run = TrainingRun(_images(), cfg, tmp_path, False, False)
    assert run.start_epoch == 1
    run.close()
    with pytest.raises(ConfigError) as info:
        TrainingRun(_images(), dataclasses.replace(cfg, seed=1), tmp_path, False, False)
    assert (
        str(info.value) == f"{tmp_path}: a run with a different config is there; use another --out"
    )
    with pytest.raises(ConfigError) as info:
        TrainingRun(_images() * 0.5, cfg, tmp_path, False, False)
    assert str(info.value) == (
        f"{tmp_path}: the run there was trained on other images; use the same images, another "
        "output folder, or delete that folder to start over"
    )
    (tmp_path / "last.json").unlink()  # killed between the two renames of a save
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = TrainingRun(_images(), cfg, tmp_path, False, False)
    run.close()
    assert run.start_epoch == 1
    (w,) = [w for w in caught if "interrupted" in str(w.message)]
    assert str(w.message) == f"{tmp_path / 'last.json'} was left by an interrupted save; rebuilt it"


def test_f_steps_run_through_the_distributed_wrapper(monkeypatch) -> None:
    wrapped = []

    def wrap(model, device, sync_bn):
        wrapped.append((model, device, sync_bn))
        return model

    monkeypatch.setattr(distributed, "wrap", wrap)
    run = TrainingRun(_images(), _cfg(method="csi", sync_bn=True), None, False, False)
    assert wrapped == [(run.model, torch.device("cpu"), True)]
    assert run.f_step.forward is run.model and run.f_step.run is run
