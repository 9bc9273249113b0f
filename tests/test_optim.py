"""LARS (torchlars semantics) and CSI's warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from contrasyn.methods.csi.optim import LARS, warmup_cosine_lr

LR, MOM, WD, TRUST, EPS = 0.1, 0.9, 1e-6, 0.001, 1e-8


def _lars(params: list[torch.Tensor]) -> LARS:
    sgd = torch.optim.SGD(params, lr=LR, momentum=MOM, weight_decay=WD)
    return LARS(sgd, trust_coef=TRUST, eps=EPS)


def _scaled_grad(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """torchlars: (g + wd w) * trust ||w|| / (||g|| + wd ||w|| + eps); scale 1 on a zero norm."""
    w, g = w.double(), g.double()
    wn, gn = w.norm().item(), g.norm().item()
    scale = TRUST * wn / (gn + WD * wn + EPS) if wn > 0 and gn > 0 else 1.0
    return (g + WD * w) * scale


def test_lars_one_step_matches_hand_computation() -> None:
    w0 = torch.tensor([3.0, 4.0])  # ||w|| = 5
    g0 = torch.tensor([0.6, -0.8])  # ||g|| = 1
    p = torch.nn.Parameter(w0.clone())
    opt = _lars([p])
    p.grad = g0.clone()
    opt.step()
    # scale = 0.001 * 5 / (1 + 5e-6 + 1e-8); first SGD step: buf = d, w -= lr * buf
    scale = 0.001 * 5 / (1 + 5e-6 + 1e-8)
    d = (g0.double() + 1e-6 * w0.double()) * scale
    expected = w0.double() - LR * d
    torch.testing.assert_close(p.data.double(), expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(opt.optim.state[p]["momentum_buffer"].double(), d, rtol=1e-6, atol=0)
    # The inner optimiser's weight decay is hidden during the step and restored after it.
    assert opt.param_groups[0]["weight_decay"] == WD


def test_lars_zero_weight_gets_scale_one() -> None:
    g0 = torch.tensor([1.0, -2.0, 0.5])
    p = torch.nn.Parameter(torch.zeros(3))
    opt = _lars([p])
    p.grad = g0.clone()
    opt.step()
    # ||w|| = 0 -> scale 1 and wd * w = 0: a plain SGD step on g.
    torch.testing.assert_close(p.data, -LR * g0)


def test_lars_zero_grad_gets_scale_one() -> None:
    w0 = torch.tensor([2.0, -1.0])
    p = torch.nn.Parameter(w0.clone())
    opt = _lars([p])
    p.grad = torch.zeros(2)
    opt.step()
    torch.testing.assert_close(p.data.double(), w0.double() - LR * WD * w0.double())


def test_lars_two_steps_with_momentum_and_several_tensors() -> None:
    gen = torch.Generator().manual_seed(0)
    w_a, w_b = torch.randn(3, 2, generator=gen), torch.zeros(4)
    pa, pb = torch.nn.Parameter(w_a.clone()), torch.nn.Parameter(w_b.clone())
    opt = _lars([pa, pb])
    ref = {"a": w_a.double().clone(), "b": w_b.double().clone()}
    buf: dict[str, torch.Tensor] = {}
    for _ in range(2):
        grads = {"a": torch.randn(3, 2, generator=gen), "b": torch.randn(4, generator=gen)}
        pa.grad, pb.grad = grads["a"].clone(), grads["b"].clone()
        opt.step()
        for k in ("a", "b"):
            d = _scaled_grad(ref[k], grads[k])
            buf[k] = d if k not in buf else MOM * buf[k] + d
            ref[k] = ref[k] - LR * buf[k]
    torch.testing.assert_close(pa.data.double(), ref["a"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(pb.data.double(), ref["b"], rtol=1e-5, atol=1e-7)
    assert pb.data.abs().sum() > 0  # the zero tensor did move (scale 1 on the first step)


def test_lars_skips_params_without_grad_and_keeps_per_group_decay() -> None:
    p1, p2 = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    sgd = torch.optim.SGD(
        [{"params": [p1], "weight_decay": 0.5}, {"params": [p2], "weight_decay": 0.0}],
        lr=LR,
        momentum=MOM,
    )
    opt = LARS(sgd)
    p1.grad = torch.ones(2)
    opt.step()
    torch.testing.assert_close(p2.data, torch.ones(2))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]


def test_lars_restores_weight_decay_when_inner_step_fails(monkeypatch) -> None:
    p = torch.nn.Parameter(torch.ones(2))
    opt = _lars([p])
    p.grad = torch.ones(2)

    def boom(*args, **kwargs):
        assert opt.param_groups[0]["weight_decay"] == 0.0  # hidden during the inner step
        raise RuntimeError("boom")

    monkeypatch.setattr(opt.optim, "step", boom)
    with pytest.raises(RuntimeError, match="boom"):
        opt.step()
    assert opt.param_groups[0]["weight_decay"] == WD


def test_lars_state_dict_round_trip_and_zero_grad() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = _lars([p])
    p.grad = torch.ones(3)
    opt.step()
    state = opt.state_dict()
    q = torch.nn.Parameter(torch.ones(3))
    other = _lars([q])
    other.load_state_dict(state)
    torch.testing.assert_close(
        other.optim.state[q]["momentum_buffer"], opt.optim.state[p]["momentum_buffer"]
    )
    opt.zero_grad()
    assert p.grad is None
    assert "LARS" in repr(opt)


BASE, TOTAL, WARM, MULT = 0.1, 100.0, 10.0, 10.0


def _lr(e: float) -> float:
    return warmup_cosine_lr(e, BASE, TOTAL, WARM, MULT)


def test_schedule_key_points() -> None:
    peak = BASE * MULT
    assert _lr(0.0) == pytest.approx(BASE)
    assert _lr(WARM / 2) == pytest.approx((BASE + peak) / 2)
    assert _lr(WARM) == pytest.approx(peak)
    assert _lr(WARM + (TOTAL - WARM) / 2) == pytest.approx(peak / 2)
    assert _lr(WARM + (TOTAL - WARM) / 4) == pytest.approx(peak * (1 + math.cos(math.pi / 4)) / 2)
    assert _lr(TOTAL) == pytest.approx(0.0, abs=1e-12)
    assert _lr(TOTAL + 5) == pytest.approx(0.0, abs=1e-12)


def test_schedule_monotone_pieces_and_continuous() -> None:
    warm = [_lr(e) for e in torch.linspace(0, WARM, 41).tolist()]
    decay = [_lr(e) for e in torch.linspace(WARM, TOTAL, 181).tolist()]
    assert all(b > a for a, b in zip(warm, warm[1:], strict=False))
    assert all(b < a for a, b in zip(decay, decay[1:], strict=False))
    assert _lr(WARM - 1e-9) == pytest.approx(_lr(WARM), rel=1e-6)


def test_schedule_defaults_follow_csi() -> None:
    # CSI: x10 over 10 epochs: 0.1 * (1 + 0.9 e) during the warm-up.
    for e in (0.0, 2.5, 7.0):
        assert warmup_cosine_lr(e, 0.1, 1000) == pytest.approx(0.1 * (1 + 0.9 * e))
    assert warmup_cosine_lr(10.0, 0.1, 1000) == pytest.approx(1.0)


def test_schedule_without_warmup() -> None:
    assert warmup_cosine_lr(0.0, 0.2, 10, warmup_epochs=0, warmup_multiplier=1) == pytest.approx(
        0.2
    )
    assert warmup_cosine_lr(5.0, 0.2, 10, warmup_epochs=0, warmup_multiplier=1) == pytest.approx(
        0.1
    )
