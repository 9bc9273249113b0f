"""Checks run under ``torchrun --nproc_per_node=2`` by tests/test_distributed.py (gloo, CPU).

1. The contrastive loss and F's gradient of 2 ranks x B/2 equal those of 1 process x B.
2. A short ``full`` training keeps F and G, D, E, D' identical on both ranks.

Rank 0 writes what it measured as JSON to the path given as the only argument.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch import nn

from contrasyn import distributed
from contrasyn.methods.csi.losses import csi_loss, nt_xent
from contrasyn.methods.csi.trainer import train_networks
from contrasyn.methods.csi_config import TrainConfig


class Heads(nn.Module):
    """A projection and a shift head on the same inputs: the shapes of F's two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.z = nn.Linear(6, 5)
        self.shift = nn.Linear(6, 4)

    def forward(self, x):
        return self.z(x), self.shift(x)


def loss_and_grads(model: nn.Module, x, labels) -> tuple[float, float, list[torch.Tensor]]:
    z, shift = model(x)
    loss = csi_loss(z, shift, labels)
    loss.total.backward()
    return loss.con.item(), loss.total.item(), [p.grad.clone() for p in model.parameters()]


def check_loss() -> dict:
    """Compare with the one-process reference, computed here before the group is used."""
    torch.manual_seed(0)
    n = 8  # views per half of the global batch
    x = torch.randn(2 * n, 6)  # [view1 (n); view2 (n)]
    labels = torch.randint(0, 4, (2 * n,))
    model = Heads()
    # The reference: one process, the whole batch, no gathering (the group is not yet used).
    reference = Heads()
    reference.load_state_dict(model.state_dict())
    z, shift = reference(x)
    ref = nt_xent(z)
    ref_total = ref + nn.functional.cross_entropy(shift, labels)
    ref_total.backward()
    ref_grads = [p.grad.clone() for p in reference.parameters()]

    distributed.init(torch.device("cpu"))
    lo, hi = distributed.shard(n)
    mine = torch.cat([x[lo:hi], x[n + lo : n + hi]])
    my_labels = torch.cat([labels[lo:hi], labels[n + lo : n + hi]])
    ddp = distributed.wrap(model, torch.device("cpu"), sync_bn=False)
    con, total, grads = loss_and_grads(ddp, mine, my_labels)
    mean_total = distributed.mean_over_ranks(torch.tensor(total)).item()
    return {
        "con": con,
        "ref_con": ref.item(),
        "mean_total": mean_total,
        "ref_total": ref_total.item(),
        "grad_max_abs_diff": max(
            (g - r).abs().max().item() for g, r in zip(grads, ref_grads, strict=True)
        ),
        "grad_max_abs": max(r.abs().max().item() for r in ref_grads),
    }


def check_training() -> dict:
    cfg = TrainConfig(
        method="full",
        width=4,
        image_size=8,
        channels=1,
        batch_size=8,
        lr_reference_batch=8,
        steps=6,
        warmup_epochs=0,
        gen_every=2,
        gen_width=4,
        latent_dim=8,
        device="cpu",
    )
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    model, side, _ = train_networks(images, cfg, progress=False)
    flat = torch.cat([t.detach().reshape(-1).float() for t in model.state_dict().values()])
    gen = torch.cat([t.detach().reshape(-1).float() for t in side.state_dict().values()])
    spread = {}
    for name, vec in (("model", flat), ("side", gen)):
        copies = [torch.empty_like(vec) for _ in range(distributed.world_size())]
        dist.all_gather(copies, vec)
        spread[name] = max((c - copies[0]).abs().max().item() for c in copies)
    return {"rank_spread": spread, "world_size": distributed.world_size()}


if __name__ == "__main__":
    result = {"loss": check_loss(), "training": check_training()}
    if distributed.is_main():
        with open(sys.argv[1], "w") as f:
            json.dump(result, f)
    distributed.shutdown()
