"""CSI's losses: NT-Xent over shifted instances and the shift-classification cross-entropy.

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
    """L_con-SI + L_cls-SI over a ``[view1; view2]`` batch of shifted instances."""
    con = nt_xent(z, temperature)
    cls = F.cross_entropy(shift_logits.float(), shift_labels)
    return CSILoss(con + cls, con, cls)
