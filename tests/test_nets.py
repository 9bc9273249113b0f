"""CIFAR ResNet-18 and CSI's heads."""

from __future__ import annotations

import pytest
import torch

from contrasyn.methods.csi.nets import CSINet, CSIOutput, ResNet18


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_csi() -> None:
    net = CSINet(width=64, in_channels=3)
    assert _count(net.backbone) == 11_168_832
    assert _count(net.projection) == 328_320
    assert _count(net.shift_head) == 2_052
    assert net.backbone.out_dim == 512


def test_one_channel_stem_has_fewer_parameters() -> None:
    # only the first conv depends on the input channels: 2 * 64 * 3 * 3 fewer weights
    assert _count(ResNet18(64, in_channels=3)) - _count(ResNet18(64, in_channels=1)) == 2 * 64 * 9


@pytest.mark.parametrize("side", [8, 16])
def test_csinet_output_shapes(side: int) -> None:
    torch.manual_seed(0)
    net = CSINet(width=4, in_channels=3, proj_dim=16, num_shifts=4)
    out = net(torch.rand(5, 3, side, side))
    assert isinstance(out, CSIOutput)
    assert out.h.shape == (5, 32) and out.z.shape == (5, 16) and out.shift.shape == (5, 4)
    assert all(torch.isfinite(t).all() for t in out)
    # the heads really are applied to h
    torch.testing.assert_close(out.z, net.projection(out.h))
    torch.testing.assert_close(out.shift, net.shift_head(out.h))
    # penultimate features come after a ReLU and an average pool
    assert (out.h >= 0).all()


def test_csinet_one_channel_and_other_head_sizes() -> None:
    torch.manual_seed(1)
    net = CSINet(width=2, in_channels=1, proj_dim=8, num_shifts=3)
    out = net(torch.rand(2, 1, 8, 8))
    assert out.h.shape == (2, 16) and out.z.shape == (2, 8) and out.shift.shape == (2, 3)


def test_cifar_stem_keeps_resolution_imagenet_stem_reduces() -> None:
    cifar, imnet = ResNet18(2, stem="cifar"), ResNet18(2, stem="imagenet")
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in cifar.modules())
    assert any(isinstance(m, torch.nn.MaxPool2d) for m in imnet.modules())
    x = torch.rand(2, 3, 16, 16)
    assert cifar.stem(x).shape[-2:] == (16, 16)
    assert imnet.stem(x).shape[-2:] == (4, 4)


def test_imagenet_stem_on_64px() -> None:
    torch.manual_seed(2)
    net = CSINet(width=2, stem="imagenet", proj_dim=8)
    out = net(torch.rand(2, 3, 64, 64))
    assert out.h.shape == (2, 16) and out.z.shape == (2, 8) and out.shift.shape == (2, 4)
    assert torch.isfinite(out.z).all()


def test_unknown_stem() -> None:
    with pytest.raises(ValueError, match="stem"):
        ResNet18(2, stem="vgg")


def test_stage_strides_and_widths() -> None:
    net = ResNet18(4)
    x = torch.rand(1, 3, 16, 16)
    x = net.stem(x)
    shapes = []
    for stage in net.layers:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(4, 16, 16), (8, 8, 8), (16, 4, 4), (32, 2, 2)]


def test_network_normalises_its_input() -> None:
    torch.manual_seed(3)
    net = ResNet18(2).eval()
    seen = []
    handle = net.stem[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].clone()))
    x = torch.rand(2, 3, 8, 8)
    net(x)
    # constant 0.5 reaches the stem as zeros, 0 as -1 and 1 as +1
    net(torch.tensor([0.5, 0.0, 1.0]).view(3, 1, 1, 1).expand(3, 3, 8, 8))
    handle.remove()
    torch.testing.assert_close(seen[0], (x - 0.5) / 0.5)
    expected = torch.tensor([0.0, -1.0, 1.0]).view(3, 1, 1, 1).expand(3, 3, 8, 8)
    torch.testing.assert_close(seen[1], expected)


def test_eval_mode_is_deterministic_and_batch_independent() -> None:
    torch.manual_seed(4)
    net = CSINet(width=2, proj_dim=8).eval()
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        full = net(x).z
        single = torch.cat([net(x[i : i + 1]).z for i in range(4)])
    torch.testing.assert_close(full, single, rtol=1e-4, atol=1e-5)


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(5)
    net = CSINet(width=2, proj_dim=8)
    out = net(torch.rand(4, 3, 8, 8))
    (out.z.sum() + out.shift.sum()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []
