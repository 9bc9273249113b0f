"""The generative side of the paper's method: G, D (and, for ``full``, E and D') with their
Adam optimisers, and one adversarial round of Algorithm 1 (SPEC.md, "Training").

Every ``gen_every`` real batches the trainer calls ``GenerativeSide.round``, which runs, in
this order: the D step and the G(/E) adversarial step (eq. 7), the G step on L_CSI-S (eq. 6),
and for ``full`` the D' step and E's latent adversarial step (eq. 9), the G/E step on L_REC
(eq. 8) and the E step on L_LREC (eq. 10). It returns the synthetic batch (detached) for the
trainer's F step on L_JOINT (eq. 5). A network that a step must not train is ``frozen``: no
gradient reaches its parameters and its buffers (BatchNorm statistics) are restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor, nn

from contrasyn import distributed
from contrasyn.augment import HorizontalFlip, shifted_views
from contrasyn.config import TrainConfig
from contrasyn.errors import TrainingError
from contrasyn.losses import (
    csi_loss,
    discriminator_loss,
    generator_loss,
    latent_reconstruction_loss,
    reconstruction_loss,
)
from contrasyn.nets import CSINet, Discriminator, Encoder, Generator, LatentDiscriminator


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Run ``modules`` forward (in their current mode) without training them: parameters get no
    gradient and buffers (BatchNorm running statistics, spectral-norm vectors) are restored on
    exit, so the backward pass and the optimiser step belong inside the block."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


_SHOWN = {"D": "D", "Dz": "D'"}
Context = Callable[[], AbstractContextManager]


def check_finite(name: str, value: float, where: str) -> None:
    if value != value or value in (float("inf"), float("-inf")):
        raise TrainingError(
            f"{name} became {value} {where}; the last good checkpoint is kept. "
            "Lower the learning rates (train.base_lr, train.gen_lr, train.disc_lr) or use "
            "precision fp32."
        )


def _step(loss: Tensor, *optimizers: torch.optim.Optimizer) -> None:
    """One optimiser step; under ``torchrun`` the gradients are averaged over ranks first, so
    the replicated networks stay identical on every rank."""
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    distributed.average_gradients(
        p for opt in optimizers for group in opt.param_groups for p in group["params"]
    )
    for opt in optimizers:
        opt.step()


class GenerativeSide(nn.Module):
    """G and D, plus E and D' for ``full``; trained by ``round``. Module names (``G``, ``D``,
    ``E``, ``Dz``) are the checkpoint's tensor prefixes."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        if cfg.method == "csi":
            raise ValueError("the csi variant has no generative side")
        self.cfg = cfg
        size, c, w, d = cfg.image_size, cfg.channels, cfg.gen_width, cfg.latent_dim
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

    # Each step below is one optimiser step of Algorithm 1; ``round`` runs them in order.
    # ``ctx`` opens the precision context (autocast or nothing).

    def d_step(self, x: Tensor, h: Tensor, ctx: Context = nullcontext) -> dict[str, Tensor]:
        """Eq. 7, D's side: real x -> 1, synthetic x~ = G(h) (and x^ = G(E(x))) -> 0."""
        G, D, E = self.G, self.D, self.E
        with torch.no_grad(), ctx():
            fakes = [G(h)] + ([G(E(x))] if E is not None else [])
        with ctx():
            # One D forward per step: spectral norm updates its vectors in place on each call.
            logits = D(torch.cat([x, *fakes])).split([len(x)] + [len(f) for f in fakes])
            loss = discriminator_loss(*logits)
        _step(loss, self.optimizers["D"])
        return {"loss_d": loss}

    def g_adv_step(self, x: Tensor, h: Tensor, ctx: Context = nullcontext) -> dict[str, Tensor]:
        """Eq. 7, the other side: G (and E) make D answer 1 on x~ (and x^)."""
        G, D, E = self.G, self.D, self.E
        with frozen(D), ctx():
            fakes = [G(h)] + ([G(E(x))] if E is not None else [])
            loss = generator_loss(*D(torch.cat(fakes)).split([len(f) for f in fakes]))
            _step(loss, *(self.optimizers[n] for n in ("G", "E") if n in self.optimizers))
        return {"loss_g_adv": loss}

    def csi_s_step(
        self,
        model: CSINet,
        h: Tensor,
        augment: nn.Module,
        flip: HorizontalFlip,
        ctx: Context = nullcontext,
    ) -> dict[str, Tensor]:
        """Eq. 6: L_CSI on synthetic images only; the gradient goes through F and T into G."""
        cfg = self.cfg
        with frozen(model), ctx():
            views, labels = shifted_views(self.G(h), augment, cfg.num_shifts, flip)
            out = model(views)
            loss = csi_loss(out.z, out.shift, labels, cfg.temperature)
            _step(loss.total, self.optimizers["G"])
        return {"loss_csi_s": loss.total}

    def latent_step(self, x: Tensor, h: Tensor, ctx: Context = nullcontext) -> dict[str, Tensor]:
        """Eq. 9: D' tells N(0, I) draws (-> 1) from encodings E(x) (-> 0); then E makes D'
        answer 1 on E(x)."""
        E, Dz = self._encoder()
        with torch.no_grad(), ctx():
            encoded = E(x)
        with ctx():
            loss_ld = discriminator_loss(*Dz(torch.cat([h, encoded])).split([len(h), len(x)]))
        _step(loss_ld, self.optimizers["Dz"])
        with frozen(Dz), ctx():
            loss_e = generator_loss(Dz(E(x)))
            _step(loss_e, self.optimizers["E"])
        return {"loss_ld": loss_ld, "loss_e_adv": loss_e}

    def rec_step(
        self,
        model: CSINet,
        x: Tensor,
        augment: nn.Module,
        flip: HorizontalFlip,
        ctx: Context = nullcontext,
    ) -> dict[str, Tensor]:
        """Eq. 8: lambda * pixel MSE of x^ = G(E(x)) minus the agreement of z(T1(x)) and
        z(T2(x^)) in F's space; updates G and E."""
        E, _ = self._encoder()
        with frozen(model), ctx():
            x_rec = self.G(E(x))
            with torch.no_grad():
                z_real = model(augment(flip(x))).z
            z_rec = model(augment(flip(x_rec))).z
            rec = reconstruction_loss(x, x_rec, z_real, z_rec, self.cfg.rec_weight)
            _step(rec.total, self.optimizers["G"], self.optimizers["E"])
        return {"loss_rec": rec.total, "rec_mse": rec.mse, "rec_sim": rec.sim}

    def lrec_step(self, h: Tensor, ctx: Context = nullcontext) -> dict[str, Tensor]:
        """Eq. 10: E inverts G on synthetic images; updates E only."""
        E, _ = self._encoder()
        with torch.no_grad(), ctx():
            synthetic = self.G(h)
        with ctx():
            loss = latent_reconstruction_loss(E(synthetic), h)
        _step(loss, self.optimizers["E"])
        return {"loss_lrec": loss}

    def _encoder(self) -> tuple[Encoder, LatentDiscriminator]:
        if self.E is None or self.Dz is None:
            raise ValueError(f"method {self.cfg.method!r} has no encoder")
        return self.E, self.Dz

    def round(
        self,
        model: CSINet,
        x: Tensor,
        augment: nn.Module,
        flip: HorizontalFlip,
        ctx: Context = nullcontext,
        where: str = "",
    ) -> tuple[dict[str, float], Tensor]:
        """One adversarial round on the real batch ``x`` in SPEC.md's order; returns every
        loss and the synthetic batch (detached) for L_JOINT. ``where`` names the step in error
        messages."""
        # synth_batch is global, like the real batch: each rank draws its share.
        n = len(x)
        if self.cfg.synth_batch is not None:
            lo, hi = distributed.shard(self.cfg.synth_batch)
            n = hi - lo
        h = torch.randn(n, self.cfg.latent_dim, device=x.device)
        losses = self.d_step(x, h, ctx)
        losses.update(self.g_adv_step(x, h, ctx))
        losses.update(self.csi_s_step(model, h, augment, flip, ctx))
        if self.E is not None:
            losses.update(self.latent_step(x, h, ctx))
            losses.update(self.rec_step(model, x, augment, flip, ctx))
            losses.update(self.lrec_step(h, ctx))
        # Every rank takes the same decisions (stop, log) from the losses averaged over ranks.
        mean = distributed.mean_over_ranks(
            torch.stack([v.detach().float() for v in losses.values()])
        )
        values = dict(zip(losses, mean.tolist(), strict=True))
        for name, value in values.items():
            check_finite(name, value, where)
        self._watch_discriminators(values, where)
        with torch.no_grad(), ctx():
            synthetic = self.G(h).float()
        distributed.broadcast_buffers(self)  # rank 0's BatchNorm statistics on every rank
        return values, synthetic

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
