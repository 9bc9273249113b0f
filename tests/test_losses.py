"""CSI's losses: NT-Xent over shifted instances and L_CSI = L_con-SI + L_cls-SI."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrasyn.methods.csi.losses import CSILoss, csi_loss, nt_xent


def _nt_xent_loop(z: torch.Tensor, temperature: float) -> float:
    """NT-Xent written out anchor by anchor in float64: row i's positive is (i + N) mod 2N."""
    z = z.double()
    n2 = len(z)
    unit = [z[i] / z[i].norm() for i in range(n2)]
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        denom = 0.0
        for j in range(n2):
            if j != i:
                denom += math.exp(float(unit[i] @ unit[j]) / temperature)
        num = math.exp(float(unit[i] @ unit[pos]) / temperature)
        total += -math.log(num / denom)
    return total / n2


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("shape", [(2, 3), (8, 5), (12, 16)])
def test_nt_xent_matches_loop(temperature: float, shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(hash((temperature, shape)) % 2**31)
    z = torch.randn(*shape, generator=g)
    got = nt_xent(z, temperature)
    assert got.ndim == 0
    assert got.item() == pytest.approx(_nt_xent_loop(z, temperature), rel=1e-5, abs=1e-6)


def test_nt_xent_default_temperature_is_half() -> None:
    z = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    assert nt_xent(z).item() == pytest.approx(_nt_xent_loop(z, 0.5), rel=1e-5)
    assert nt_xent(z).item() != pytest.approx(_nt_xent_loop(z, 1.0), rel=1e-3)


def test_nt_xent_invariant_to_consistent_pair_permutation() -> None:
    g = torch.Generator().manual_seed(2)
    v1, v2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    perm = torch.randperm(6, generator=g)
    base = nt_xent(torch.cat([v1, v2]))
    permuted = nt_xent(torch.cat([v1[perm], v2[perm]]))
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-6)
    # Permuting only one view breaks the pairs and changes the loss.
    broken = nt_xent(torch.cat([v1, v2[perm.roll(1)]]))
    assert not torch.allclose(broken, base, rtol=1e-3)


def test_nt_xent_swapping_views_is_invariant() -> None:
    g = torch.Generator().manual_seed(3)
    v1, v2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    torch.testing.assert_close(nt_xent(torch.cat([v1, v2])), nt_xent(torch.cat([v2, v1])))


def test_nt_xent_lower_when_positives_aligned() -> None:
    g = torch.Generator().manual_seed(4)
    v1 = torch.randn(16, 32, generator=g)
    aligned = nt_xent(torch.cat([v1, v1 + 1e-3 * torch.randn(16, 32, generator=g)]))
    random = nt_xent(torch.cat([v1, torch.randn(16, 32, generator=g)]))
    assert aligned.item() < random.item() - 0.5


def test_nt_xent_scale_invariant_per_row() -> None:
    g = torch.Generator().manual_seed(5)
    z = torch.randn(8, 6, generator=g)
    scales = torch.rand(8, 1, generator=g) * 100 + 0.01
    torch.testing.assert_close(nt_xent(z * scales), nt_xent(z), rtol=1e-5, atol=1e-5)


def test_nt_xent_gradient_flows() -> None:
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(6), requires_grad=True)
    nt_xent(z).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(5, 3), (1, 3), (4,), (2, 2, 2)])
def test_nt_xent_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        nt_xent(torch.randn(*shape))


def test_csi_loss_total_is_con_plus_cls() -> None:
    g = torch.Generator().manual_seed(7)
    z = torch.randn(16, 8, generator=g)  # B=2, K=4, two views
    logits = torch.randn(16, 4, generator=g)
    labels = torch.arange(4).repeat_interleave(2).repeat(2)
    out = csi_loss(z, logits, labels, temperature=0.5)
    assert isinstance(out, CSILoss)
    torch.testing.assert_close(out.con, nt_xent(z, 0.5))
    # Cross-entropy by hand: mean of -log softmax at the true label.
    log_p = logits.double() - torch.logsumexp(logits.double(), dim=1, keepdim=True)
    by_hand = -log_p[torch.arange(16), labels].mean()
    assert out.cls.item() == pytest.approx(by_hand.item(), rel=1e-6)
    torch.testing.assert_close(out.cls, F.cross_entropy(logits, labels))
    torch.testing.assert_close(out.total, out.con + out.cls)


def test_csi_loss_temperature_is_passed_on() -> None:
    g = torch.Generator().manual_seed(8)
    z, logits = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    labels = torch.arange(4).repeat(2)
    a, b = csi_loss(z, logits, labels, 0.5), csi_loss(z, logits, labels, 0.1)
    torch.testing.assert_close(b.con, nt_xent(z, 0.1))
    assert a.con.item() != pytest.approx(b.con.item())
    torch.testing.assert_close(a.cls, b.cls)


# -- the edges the mutation tests asked about -------------------------------------------------


def test_nt_xent_message_names_the_shape() -> None:
    with pytest.raises(ValueError) as info:
        nt_xent(torch.randn(5, 3))
    assert str(info.value) == "nt_xent expects (2N, d) embeddings, got (5, 3)"
    with pytest.raises(ValueError, match=r"got \(4,\)$"):
        nt_xent(torch.randn(4))


def test_nt_xent_normalises_tiny_embeddings_too() -> None:
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(nt_xent(z * 1e-5), nt_xent(z), rtol=1e-5, atol=1e-6)
    assert nt_xent(z * 1e-5).item() == pytest.approx(_nt_xent_loop(z, 0.5), rel=1e-5)


def test_csi_loss_default_temperature_is_half_and_it_contrasts_every_rank(monkeypatch) -> None:
    import contrasyn.methods.csi.losses as losses

    g = torch.Generator().manual_seed(10)
    z, logits = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    labels = torch.arange(4).repeat(2)
    torch.testing.assert_close(csi_loss(z, logits, labels).con, nt_xent(z, 0.5))
    gathered = torch.randn(16, 4, generator=g)
    seen = []
    monkeypatch.setattr(losses, "gather_views", lambda t: seen.append(t) or gathered)
    out = csi_loss(z, logits, labels, 0.3)
    assert len(seen) == 1 and seen[0] is z
    torch.testing.assert_close(out.con, nt_xent(gathered, 0.3))


def _bce_by_hand(logits: list[float], target: float) -> float:
    total = 0.0
    for v in logits:
        p = 1 / (1 + math.exp(-v))
        total -= target * math.log(p) + (1 - target) * math.log(1 - p)
    return total / len(logits)


def test_gan_losses_sum_one_term_per_kind_of_sample() -> None:
    from contrasyn.methods.csi.losses import (
        discriminator_loss,
        generator_loss,
        hinge_discriminator_loss,
        hinge_generator_loss,
    )

    real, a, b = [1.5, -0.5], [0.25], [-2.0, 3.0, 0.5]
    t = [torch.tensor(v) for v in (real, a, b)]
    assert discriminator_loss(t[0]).item() == pytest.approx(_bce_by_hand(real, 1.0), rel=1e-6)
    assert discriminator_loss(*t).item() == pytest.approx(
        _bce_by_hand(real, 1.0) + _bce_by_hand(a, 0.0) + _bce_by_hand(b, 0.0), rel=1e-6
    )
    assert generator_loss(t[1]).item() == pytest.approx(_bce_by_hand(a, 1.0), rel=1e-6)
    assert generator_loss(t[1], t[2], t[0]).item() == pytest.approx(
        _bce_by_hand(a, 1.0) + _bce_by_hand(b, 1.0) + _bce_by_hand(real, 1.0), rel=1e-6
    )
    hinge_d = sum(max(0, 1 - v) for v in real) / 2 + max(0, 1 + a[0])
    hinge_d += sum(max(0, 1 + v) for v in b) / 3
    assert hinge_discriminator_loss(*t).item() == pytest.approx(hinge_d, rel=1e-6)
    assert hinge_discriminator_loss(t[0]).item() == pytest.approx(0.75, rel=1e-6)
    assert hinge_generator_loss(t[2]).item() == pytest.approx(-0.5, rel=1e-6)
    assert hinge_generator_loss(t[1], t[2], t[0]).item() == pytest.approx(
        -(0.25 + 0.5 + 0.5), rel=1e-6
    )


def test_reconstruction_loss_default_weight_and_tiny_embeddings() -> None:
    from contrasyn.methods.csi.losses import latent_reconstruction_loss, reconstruction_loss

    g = torch.Generator().manual_seed(11)
    x, x_hat = torch.rand(3, 1, 4, 4, generator=g), torch.rand(3, 1, 4, 4, generator=g)
    z1, z2 = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    rec = reconstruction_loss(x, x_hat, z1, z2)
    assert rec.total.item() == pytest.approx(100 * rec.mse.item() - rec.sim.item(), rel=1e-6)
    # the cosine of tiny vectors is still their cosine
    tiny = reconstruction_loss(x, x_hat, z1 * 1e-5, z2 * 1e-5)
    assert tiny.sim.item() == pytest.approx(rec.sim.item(), rel=1e-5)
    cos = F.cosine_similarity(z1.double(), z2.double(), dim=1).mean().item()
    assert rec.sim.item() == pytest.approx(cos, rel=1e-5)
    assert rec.mse.item() == pytest.approx(((x - x_hat) ** 2).mean().item(), rel=1e-6)
    # eq. 10 sums the squares over the latent dimensions, averages over the batch
    h, h_rec = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    by_hand = sum(float(((h_rec[i] - h[i]) ** 2).sum()) for i in range(5)) / 5
    assert latent_reconstruction_loss(h_rec, h).item() == pytest.approx(by_hand, rel=1e-6)
