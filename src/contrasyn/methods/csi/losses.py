"""The losses: CSI's NT-Xent over shifted instances and shift cross-entropy (eq. 1-4), and the
adversarial autoencoder's (eq. 7-10; eq. 5 and 6 are L_CSI on other batches).

Layout convention (see ``augment.shifted_views``): a batch of 2N embeddings is
``[view1 (N); view2 (N)]`` and row i's positive is row (i + N) mod 2N. With N = K * B
shifted instances, the other rotations of the same image are negatives, which is what makes
the contrast "shifted-instance" (CSI, eq. 2).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from contrasyn.distributed import gather_views


def nt_xent(z: Tensor, temperature: float = 0.5) -> Tensor:
    """Normalised-temperature cross-entropy, averaged over all 2N anchors.

    ``z`` (2N, d) need not be normalised. For anchor i with positive p(i):
    ``-log( exp(s_ip / t) / sum_{j != i} exp(s_ij / t) )`` with s the cosine similarity.
    Computed with log-sum-exp; it equals CSI's ``NT_xent`` up to its 1e-8 guards.
    """
    if z.ndim != 2 or len(z) % 2:
        raise ValueError(f"nt_xent expects (2N, d) embeddings, got {tuple(z.shape)}")
    n2 = len(z)
    z = F.normalize(z.float(), dim=1, eps=1e-8)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(n2, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.arange(n2, device=z.device).roll(n2 // 2)
    return F.cross_entropy(logits, positives)


class CSILoss(NamedTuple):
    """L_CSI (eq. 4) and its two parts, kept separate for logging."""

    total: Tensor
    con: Tensor
    cls: Tensor


def csi_loss(
    z: Tensor, shift_logits: Tensor, shift_labels: Tensor, temperature: float = 0.5
) -> CSILoss:
    """L_con-SI + L_cls-SI over a ``[view1; view2]`` batch of shifted instances. Under
    ``torchrun`` the contrast runs over the views of every rank (``distributed.gather_views``)."""
    con = nt_xent(gather_views(z), temperature)
    cls = F.cross_entropy(shift_logits.float(), shift_labels)
    return CSILoss(con + cls, con, cls)


# The generative side (eq. 7-10, docs/METHOD.md). Discriminators output logits; the GAN terms are
# binary cross-entropies with the usual semantics (D: real -> 1, generated -> 0; G and E are
# trained non-saturating, to make D answer 1), whatever way round the paper writes min/max.


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, target))


def discriminator_loss(real: Tensor, *generated: Tensor) -> Tensor:
    """L_D (eq. 7) for D, or L_LD (eq. 9) for D': BCE(real -> 1) plus one BCE(-> 0) per kind
    of generated sample (synthetic x~ and reconstruction x^; for D', the encodings E(x))."""
    loss = _bce(real, 1.0)
    for g in generated:
        loss = loss + _bce(g, 0.0)
    return loss


def generator_loss(*generated: Tensor) -> Tensor:
    """The G/E side of eq. 7 and the E side of eq. 9, non-saturating: sum of BCE(-> 1)."""
    first, *rest = generated
    loss = _bce(first, 1.0)
    for g in rest:
        loss = loss + _bce(g, 1.0)
    return loss


def hinge_discriminator_loss(real: Tensor, *generated: Tensor) -> Tensor:
    """SNGAN's hinge loss in place of eq. 7's (or eq. 9's) cross-entropies:
    ``mean(relu(1 - D(real)))`` plus one ``mean(relu(1 + D(g)))`` per kind of generated sample."""
    loss = F.relu(1 - real.float()).mean()
    for g in generated:
        loss = loss + F.relu(1 + g.float()).mean()
    return loss


def hinge_generator_loss(*generated: Tensor) -> Tensor:
    """The generator side of the hinge loss: ``-mean(D(g))`` summed over the kinds of sample;
    it never saturates, however confident D is."""
    first, *rest = generated
    loss = -first.float().mean()
    for g in rest:
        loss = loss - g.float().mean()
    return loss


class RecLoss(NamedTuple):
    """L_REC (eq. 8) and its two parts, kept separate for logging."""

    total: Tensor
    mse: Tensor
    sim: Tensor


def reconstruction_loss(
    x: Tensor, x_hat: Tensor, z_real: Tensor, z_rec: Tensor, weight: float = 100.0
) -> RecLoss:
    """lambda * mean((x - x^)^2) - mean cosine similarity of z(T1(x)) and z(T2(x^)) (eq. 8):
    pixel fidelity plus agreement in F's contrastive space."""
    mse = F.mse_loss(x_hat.float(), x.float())
    sim = F.cosine_similarity(z_real.float(), z_rec.float(), dim=1, eps=1e-8).mean()
    return RecLoss(weight * mse - sim, mse, sim)


def latent_reconstruction_loss(h_rec: Tensor, h: Tensor) -> Tensor:
    """L_LREC (eq. 10): mean over the batch of ||E(G(h)) - h||^2."""
    return (h_rec.float() - h.float()).pow(2).sum(dim=1).mean()
