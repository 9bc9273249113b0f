"""The generative side of the paper's method: G, D (and, for ``full``, E and D') with their
Adam optimisers, and one adversarial round of Algorithm 1 (lines 6-13 in docs/METHOD.md).

Every ``gen_every`` real batches the trainer calls ``GenerativeSide.round``, which runs, in
this order: the D step and the G(/E) adversarial step (eq. 7), the G step on L_CSI-S (eq. 6),
and for ``full`` the D' step and E's latent adversarial step (eq. 9), the G/E step on L_REC
(eq. 8) and the E step on L_LREC (eq. 10). It returns the synthetic batch (detached) for the
trainer's F step on L_JOINT (eq. 5). A network that a step must not train is ``frozen``: no
gradient reaches its parameters and its buffers (BatchNorm statistics) are restored.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrasyn import distributed
from contrasyn.errors import TrainingError
from contrasyn.methods.csi.augment import HorizontalFlip, grayscale, shifted_views
from contrasyn.methods.csi.losses import (
    csi_loss,
    discriminator_loss,
    generator_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    latent_reconstruction_loss,
    reconstruction_loss,
)
from contrasyn.methods.csi.nets import (
    CSINet,
    Discriminator,
    Encoder,
    Generator,
    LatentDiscriminator,
)
from contrasyn.methods.csi.steps import check_finite, frozen, step
from contrasyn.methods.csi_config import TrainConfig

_SHOWN = {"D": "D", "Dz": "D'"}
Context = Callable[[], AbstractContextManager]


class GenerativeSide(nn.Module):
    """G and D, plus E and D' for ``full``; trained by ``round``. Module names (``G``, ``D``,
    ``E``, ``Dz``) are the checkpoint's tensor prefixes."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        if cfg.method == "csi":
            raise ValueError("the csi variant has no generative side")
        self.cfg = cfg
        # G's channels (``gen_channels``, resolved by the trainer from the data; unresolved: F's)
        self.channels = cfg.gen_channels or cfg.channels
        size, c, w, d = cfg.image_size, self.channels, cfg.gen_width, cfg.latent_dim
        self.G = Generator(d, c, size, w)
        self.D = Discriminator(c, size, w)
        self.E = Encoder(d, c, size, w) if cfg.method == "full" else None
        self.Dz = LatentDiscriminator(d) if cfg.method == "full" else None
        self.optimizers: dict[str, torch.optim.Adam] = {}
        rates = {"G": cfg.gen_lr, "D": cfg.disc_lr, "E": cfg.gen_lr, "Dz": cfg.disc_lr}
        for name, lr in rates.items():
            net = getattr(self, name)
            if net is not None:
                self.optimizers[name] = torch.optim.Adam(
                    net.parameters(), lr=lr, betas=tuple(cfg.adam_betas)
                )
        self.win_streak = {"D": 0, "Dz": 0}  # consecutive rounds each discriminator won outright
        # The generator's exponential moving average (``gen_ema`` > 0): what samples, for
        # L_JOINT and every output; G itself is what the steps train.
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if cfg.gen_ema > 0 else None

    @property
    def sampler(self) -> Generator:
        """The generator that makes images: G's moving average when there is one, else G."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def update_average(self) -> None:
        """G_ema <- gen_ema * G_ema + (1 - gen_ema) * G, after each round."""
        if self.G_ema is None:
            return
        for avg, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            avg.lerp_(p, 1 - self.cfg.gen_ema)
        for avg, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            avg.copy_(b)

    @torch.no_grad()
    def calibrate_sampler(self, batches: int = 20, batch_size: int = 128) -> None:
        """Re-estimate the sampling generator's BatchNorm statistics from its own forwards
        (a cumulative average over ``batches`` batches of h), so that eval-mode samples use
        statistics of the averaged weights rather than of G's."""
        if self.G_ema is None:
            return
        device = next(self.G_ema.parameters()).device
        norms = [m for m in self.G_ema.modules() if isinstance(m, nn.BatchNorm2d)]
        saved = [(m.momentum, m.training) for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
            m.train()
        gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed)
        for _ in range(batches):
            self.G_ema(torch.randn(batch_size, self.cfg.latent_dim, generator=gen).to(device))
        for m, (momentum, training) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.train(training)

    def weight_tensors(self) -> dict[str, Tensor]:
        """The networks' weights under the checkpoint prefix ``gen.``."""
        return {f"gen.{k}": v for k, v in self.state_dict().items()}

    def load_weight_tensors(self, tensors: dict[str, Tensor]) -> GenerativeSide:
        """Load the ``gen.`` entries of a checkpoint (other entries are ignored)."""
        self.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("gen.")})
        return self

    def optimizer_tensors(self) -> dict[str, Tensor]:
        """The Adam states as flat tensors for a safetensors checkpoint."""
        tensors = {}
        for name, opt in self.optimizers.items():
            for i, state in opt.state_dict()["state"].items():
                for key, value in state.items():
                    tensors[f"adam.{name}.{i}.{key}"] = torch.as_tensor(value)
        return tensors

    def load_optimizer_tensors(self, tensors: dict[str, Tensor]) -> None:
        for name, opt in self.optimizers.items():
            sd = opt.state_dict()
            state: dict[int, dict[str, Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith(f"adam.{name}."):
                    i, field = key[len(f"adam.{name}.") :].split(".")
                    state.setdefault(int(i), {})[field] = value
            opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})

    # -- channels: G works in the data's own channels, F in train.channels ---------------------

    def to_model(self, images: Tensor) -> Tensor:
        """G's images as F's input: one grey channel replicated to F's channels."""
        return images.expand(-1, self.cfg.channels, -1, -1)

    def from_model(self, x: Tensor) -> Tensor:
        """Real images in G's channels: the luma of replicated grey (itself) when G is grey."""
        return grayscale(x) if self.channels < x.shape[1] else x

    def _d_loss(self, real: Tensor, *generated: Tensor) -> Tensor:
        hinge = self.cfg.gan_loss == "hinge"
        return (hinge_discriminator_loss if hinge else discriminator_loss)(real, *generated)

    def _g_loss(self, *generated: Tensor) -> Tensor:
        hinge = self.cfg.gan_loss == "hinge"
        return (hinge_generator_loss if hinge else generator_loss)(*generated)

    # Each step below is one optimiser step of Algorithm 1; ``round`` runs them in order.
    # ``x`` is the real batch in G's channels; ``ctx`` opens the precision context.

    def fakes(self, x: Tensor, h: Tensor, ctx: Context = nullcontext) -> list[Tensor]:
        """Eq. 7's generated images, with their graph: x~ = G(h) and, for ``full``,
        x^ = G(E(x)). Both halves of eq. 7 (``d_step`` on them detached, then ``g_adv_step``)
        use this one forward of G (and E), which is G's training forward of the round."""
        with ctx():
            out = [self.G(h)]
            if self.E is not None:
                out.append(self.G(self.E(x)))
        return out

    def d_step(self, x: Tensor, fakes: list[Tensor], ctx: Context = nullcontext) -> dict:
        """Eq. 7, D's side: real x -> 1, synthetic x~ (and reconstructed x^) -> 0."""
        fakes = [f.detach() for f in fakes]
        with ctx():
            # One D forward per step: spectral norm updates its vectors in place on each call.
            logits = self.D(torch.cat([x, *fakes])).split([len(x)] + [len(f) for f in fakes])
            loss = self._d_loss(*logits)
        step(loss, self.optimizers["D"])
        return {"loss_d": loss}

    def g_adv_step(self, fakes: list[Tensor], ctx: Context = nullcontext) -> dict:
        """Eq. 7, the other side: G (and E) make the updated D answer "real" on x~ (and x^)."""
        with frozen(self.D), ctx():
            loss = self._g_loss(*self.D(torch.cat(fakes)).split([len(f) for f in fakes]))
            step(loss, *(self.optimizers[n] for n in ("G", "E") if n in self.optimizers))
        return {"loss_g_adv": loss}

    def csi_s_step(
        self,
        model: CSINet,
        h: Tensor,
        augment: nn.Module,
        flip: HorizontalFlip,
        ctx: Context = nullcontext,
    ) -> dict:
        """Eq. 6: L_CSI on synthetic images only; the gradient goes through F and T into G."""
        cfg = self.cfg
        with frozen(model), ctx():
            views, labels = shifted_views(self.to_model(self.G(h)), augment, cfg.num_shifts, flip)
            out = model(views)
            loss = csi_loss(out.z, out.shift, labels, cfg.temperature)
            step(loss.total, self.optimizers["G"])
        return {"loss_csi_s": loss.total}

    def latent_step(self, x: Tensor, h: Tensor, ctx: Context = nullcontext) -> dict:
        """Eq. 9: D' tells N(0, I) draws (-> 1) from encodings E(x) (-> 0); then E makes D'
        answer 1 on E(x)."""
        E, Dz = self._encoder()
        with torch.no_grad(), frozen(E), ctx():
            encoded = E(x)
        with ctx():
            loss_ld = self._d_loss(*Dz(torch.cat([h, encoded])).split([len(h), len(x)]))
        step(loss_ld, self.optimizers["Dz"])
        with frozen(Dz), ctx():
            loss_e = self._g_loss(Dz(E(x)))
            step(loss_e, self.optimizers["E"])
        return {"loss_ld": loss_ld, "loss_e_adv": loss_e}

    def rec_step(
        self,
        model: CSINet | None,
        x: Tensor,
        augment: nn.Module | None = None,
        flip: HorizontalFlip | None = None,
        ctx: Context = nullcontext,
    ) -> dict:
        """Eq. 8: lambda * pixel MSE of x^ = G(E(x)) minus the agreement of z(T1(x)) and
        z(T2(x^)) in F's space; updates G and E. Without ``model`` (the warm-up, before F
        has learnt anything) only the pixel term."""
        E, _ = self._encoder()
        with ctx():
            x_rec = self.G(E(x))
        if model is None:
            with ctx():
                mse = F.mse_loss(x_rec.float(), x.float())
                total = self.cfg.rec_weight * mse
            step(total, self.optimizers["G"], self.optimizers["E"])
            return {"loss_rec": total, "rec_mse": mse}
        with frozen(model), ctx():
            with torch.no_grad():
                z_real = model(augment(flip(self.to_model(x)))).z
            z_rec = model(augment(flip(self.to_model(x_rec)))).z
            rec = reconstruction_loss(x, x_rec, z_real, z_rec, self.cfg.rec_weight)
            step(rec.total, self.optimizers["G"], self.optimizers["E"])
        return {"loss_rec": rec.total, "rec_mse": rec.mse, "rec_sim": rec.sim}

    def lrec_step(self, h: Tensor, ctx: Context = nullcontext) -> dict:
        """Eq. 10: E inverts G on synthetic images; updates E only (G runs frozen)."""
        E, _ = self._encoder()
        with torch.no_grad(), frozen(self.G), ctx():
            synthetic = self.G(h)
        with ctx():
            loss = latent_reconstruction_loss(E(synthetic), h)
        step(loss, self.optimizers["E"])
        return {"loss_lrec": loss}

    def _encoder(self) -> tuple[Encoder, LatentDiscriminator]:
        if self.E is None or self.Dz is None:
            raise ValueError(f"method {self.cfg.method!r} has no encoder")
        return self.E, self.Dz

    def _latent(self, x: Tensor) -> Tensor:
        """The round's h: the real batch's size, or this rank's share of ``synth_batch``."""
        n = len(x)
        if self.cfg.synth_batch is not None:
            lo, hi = distributed.shard(self.cfg.synth_batch)
            n = hi - lo
        return torch.randn(n, self.cfg.latent_dim, device=x.device)

    def round(
        self,
        model: CSINet,
        x: Tensor,
        augment: nn.Module,
        flip: HorizontalFlip,
        ctx: Context = nullcontext,
        where: str = "",
    ) -> tuple[dict[str, float], Tensor]:
        """One adversarial round of Algorithm 1 on the real batch ``x`` (F's channels), in the
        paper's order; returns every loss and X~ = G(h) as drawn at the top of the round
        (detached, in F's channels) for L_JOINT. ``where`` names the step in errors."""
        real = self.from_model(x)
        h = self._latent(x)  # line 6: sample h ~ N(0, I)
        fakes = self.fakes(real, h, ctx)  # line 7: X~, X^ <- G(h), G(E(X))
        losses = self.d_step(real, fakes, ctx)  # line 8: D, then G and E, on L_D (eq. 7)
        losses.update(self.g_adv_step(fakes, ctx))
        losses.update(self.csi_s_step(model, h, augment, flip, ctx))  # line 9: L_CSI-S (eq. 6)
        if self.E is not None:
            losses.update(self.latent_step(real, h, ctx))  # line 10: D', then E, on L_LD (eq. 9)
            # lines 11-12: T1, T2 drawn inside; G and E on L_REC (eq. 8)
            losses.update(self.rec_step(model, real, augment, flip, ctx))
            losses.update(self.lrec_step(h, ctx))  # line 13: E on L_LREC (eq. 10)
        values = self._check(losses, where)
        self.update_average()
        distributed.broadcast_buffers(self)  # rank 0's BatchNorm statistics on every rank
        synthetic = fakes[0].detach()  # line 7's X~, or the moving average's images of h
        if self.G_ema is not None:
            with torch.no_grad(), ctx():
                synthetic = self.G_ema(h)
        return values, self.to_model(synthetic.float())

    def warmup_round(
        self, x: Tensor, ctx: Context = nullcontext, where: str = ""
    ) -> dict[str, float]:
        """A round of the adversarial autoencoder alone (before F trains): eq. 7, and for
        ``full`` eq. 9, eq. 8's pixel term and eq. 10; the steps that need F are left out."""
        real = self.from_model(x)
        h = self._latent(x)
        fakes = self.fakes(real, h, ctx)
        losses = self.d_step(real, fakes, ctx)
        losses.update(self.g_adv_step(fakes, ctx))
        if self.E is not None:
            losses.update(self.latent_step(real, h, ctx))
            losses.update(self.rec_step(None, real, ctx=ctx))
            losses.update(self.lrec_step(h, ctx))
        values = self._check(losses, where)
        self.update_average()
        distributed.broadcast_buffers(self)
        return values

    def _check(self, losses: dict[str, Tensor], where: str) -> dict[str, float]:
        """The losses as floats averaged over ranks (every rank takes the same decisions),
        checked for NaN/inf and for a discriminator that wins outright."""
        mean = distributed.mean_over_ranks(
            torch.stack([v.detach().float() for v in losses.values()])
        )
        values = dict(zip(losses, mean.tolist(), strict=True))
        for name, value in values.items():
            check_finite(name, value, where)
        self._watch_discriminators(values, where)
        return values

    def _watch_discriminators(self, values: dict[str, float], where: str) -> None:
        """Stop when D (or D') has won outright for ``d_win_rounds`` rounds in a row: its loss
        near zero means it separates perfectly and the other side learns nothing."""
        for name, key in (("D", "loss_d"), ("Dz", "loss_ld")):
            if key not in values:
                continue
            won = values[key] < self.cfg.d_win_loss
            self.win_streak[name] = self.win_streak[name] + 1 if won else 0
            if self.win_streak[name] >= self.cfg.d_win_rounds:
                raise TrainingError(
                    f"the discriminator {_SHOWN[name]} won outright: "
                    f"{key} < {self.cfg.d_win_loss:g} for {self.win_streak[name]} rounds in a "
                    f"row, {where}; its opponent gets no useful gradient any more. The last good "
                    "checkpoint is kept. Lower train.disc_lr or raise train.gen_lr."
                )


@torch.no_grad()
def sample(generator: nn.Module, n: int, seed: int = 0, batch_size: int = 200) -> Tensor:
    """``n`` images G(h), h ~ N(0, I) from a seeded RNG, in [0, 1] on the CPU."""
    device = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    h = torch.randn(n, generator.latent_dim, generator=rng)
    return torch.cat(
        [generator(h[i : i + batch_size].to(device)).float().cpu() for i in range(0, n, batch_size)]
    )


@torch.no_grad()
def reconstructions(side: nn.Module, images: Tensor) -> Tensor:
    """G(E(x)) for [0, 1] images (F's channels) by a ``GenerativeSide`` (its sampling
    generator), on the CPU, in G's channels."""
    device = next(side.parameters()).device
    return side.sampler(side.E(side.from_model(images.to(device)))).float().cpu()
