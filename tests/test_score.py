"""Chunked bank search, per-draw embeddings and the three normality scores."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import contrasyn.device as device
from contrasyn.errors import ConfigError
from contrasyn.methods.baselines.knn import KNNConfig, PixelKNN
from contrasyn.methods.csi import score
from contrasyn.methods.csi.nets import CSINet
from contrasyn.methods.csi.score import (
    SCORES,
    Scorer,
    embed,
    max_inner_product,
    max_inner_product_others,
    top_inner_products,
)
from contrasyn.methods.csi_config import ScoreConfig, TrainConfig

K = 4
BOGUS_SCORE = f"score must be one of {', '.join(SCORES)}, got 'bogus'"


@pytest.mark.parametrize("chunk", [1, 2, 5, 7, 11, 4096])
def test_max_inner_product_matches_brute_force(chunk: int) -> None:
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(7, 5, generator=g), torch.randn(11, 5, generator=g)
    got = max_inner_product(q, bank, chunk)
    torch.testing.assert_close(got, (q @ bank.T).max(1).values, rtol=1e-6, atol=1e-6)
    assert got.shape == (7,) and got.dtype == q.dtype


def test_max_inner_product_negative_values_and_single_row_bank() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank = torch.tensor([[-3.0, -2.0]])
    torch.testing.assert_close(max_inner_product(q, bank, 1), torch.tensor([-3.0, -2.0]))


def test_max_inner_product_dimension_mismatch() -> None:
    with pytest.raises(ValueError, match="dimension"):
        max_inner_product(torch.zeros(2, 3), torch.zeros(4, 5))


def _setup(ensemble: int = 2, batch_size: int = 3, chunk: int = 2, seed: int = 7):
    train_cfg = TrainConfig(
        width=2, image_size=8, channels=3, proj_dim=8, num_shifts=K, device="cpu"
    )
    score_cfg = ScoreConfig(
        score="paper",
        ensemble=ensemble,
        crop_scale=0.54,
        batch_size=batch_size,
        chunk=chunk,
        seed=seed,
        head_weight=0.7,  # not 1, so a lost weight shows
    )
    torch.manual_seed(0)
    model = CSINet(2, 3, proj_dim=8, num_shifts=K)
    # non-trivial BatchNorm running statistics
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 8, 8))
    g = torch.Generator().manual_seed(1)
    train_x = torch.rand(7, 3, 8, 8, generator=g)
    test_x = torch.rand(5, 3, 8, 8, generator=g)
    return model.eval(), train_cfg, score_cfg, train_x, test_x


def test_embed_without_augment_is_rotations_through_the_model() -> None:
    model, cfg, _, x, _ = _setup()
    feats = embed(model, x, K, None, batch_size=3)
    assert (
        feats.z.shape == (7, K, 8) and feats.h.shape == (7, K, 16) and feats.logit.shape == (7, K)
    )
    with torch.no_grad():
        for k in range(K):
            out = model(torch.rot90(x, k, dims=(2, 3)))
            torch.testing.assert_close(feats.z[:, k], out.z, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(feats.h[:, k], out.h, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(feats.logit[:, k], out.shift[:, k], rtol=1e-4, atol=1e-5)
    # batching does not matter without random augmentation
    other = embed(model, x, K, None, batch_size=7)
    torch.testing.assert_close(other.z, feats.z, rtol=1e-4, atol=1e-5)
    assert not model.training


def test_embed_forwards_at_most_cpu_forward_rows_on_a_cpu(monkeypatch) -> None:
    """A batch's K rotations go through F in CPU_FORWARD_ROWS-row forwards on a CPU (a 1,024-row
    forward ran 1.6x slower), with the features of one forward of the whole batch (to rounding)."""
    model, _, _, x, _ = _setup()
    whole = embed(model, x, K, None, batch_size=7)
    monkeypatch.setattr(device, "CPU_FORWARD_ROWS", 5)
    seen = []
    model.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    chunked = embed(model, x, K, None, batch_size=7)
    assert seen == [5] * (7 * K // 5) + [7 * K % 5]
    for name in ("z", "h", "logit"):
        a, b = getattr(chunked, name), getattr(whole, name)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def _brute_force(
    model, train_cfg, score_cfg, scorer, train_x, test_x, spare=None
) -> dict[str, torch.Tensor]:
    """Eq. 11, CSI's score and the feature score written out with explicit loops; ``spare``
    images join the pixel bank only."""

    def draws(images):
        out = []
        for r in range(score_cfg.ensemble):
            torch.manual_seed(score_cfg.seed + r)
            out.append(embed(model, images, K, scorer.augment, score_cfg.batch_size))
        return out

    bank_draws = draws(train_x)
    bank_z = torch.stack([d.z for d in bank_draws]).mean(0)  # (M, K, d)
    bank_h = torch.stack([d.h for d in bank_draws]).mean(0)
    bank_logit = torch.stack([d.logit for d in bank_draws]).mean(0)
    bank_loglik = torch.stack([d.loglik for d in bank_draws]).mean(0)
    test_draws = draws(test_x)
    n, m = len(test_x), len(train_x)
    paper = torch.zeros(n, dtype=torch.float64)
    cos_only = torch.zeros(n, dtype=torch.float64)
    norm_only = torch.zeros(n, dtype=torch.float64)
    for d in test_draws:
        for i in range(n):
            best, best_cos = -float("inf"), -float("inf")
            for j in range(m):
                total, total_cos = 0.0, 0.0
                for k in range(K):
                    a, b = d.z[i, k].double(), bank_z[j, k].double()
                    total += a.norm() * F.cosine_similarity(a, b, dim=0)
                    total_cos += F.cosine_similarity(a, b, dim=0)
                best, best_cos = max(best, float(total)), max(best_cos, float(total_cos))
            paper[i] += best / len(test_draws)
            cos_only[i] += best_cos / len(test_draws)
            norm_only[i] += sum(float(d.z[i, k].double().norm()) for k in range(K)) / len(
                test_draws
            )
    z = torch.stack([d.z for d in test_draws]).mean(0)
    h = torch.stack([d.h for d in test_draws]).mean(0)
    logit = torch.stack([d.logit for d in test_draws]).mean(0)
    loglik = torch.stack([d.loglik for d in test_draws]).mean(0)
    csi = torch.zeros(n, dtype=torch.float64)
    feat = torch.zeros(n, dtype=torch.float64)
    for k in range(K):
        w_sim = 1.0 / bank_z[:, k].double().norm(dim=1).mean()
        w_shift = 1.0 / bank_logit[:, k].double().mean()
        for i in range(n):
            a = z[i, k].double()
            sims = [
                a.norm() * F.cosine_similarity(a, bank_z[j, k].double(), dim=0) for j in range(m)
            ]
            csi[i] += (w_sim * max(sims) + w_shift * logit[i, k].double()) / K
            cos = [
                F.cosine_similarity(h[i, k].double(), bank_h[j, k].double(), dim=0)
                for j in range(m)
            ]
            feat[i] += max(cos) / K

    # the combined scores: each part standardised by the training images' values, feat and
    # pix each training image against the others
    def shrunk(x):  # average pooling to at most 32 pixels a side (8x8 here: as it is)
        return x.flatten(1).double()

    pixel_bank = shrunk(train_x if spare is None else torch.cat([train_x, spare]))
    own = torch.zeros(m, dtype=torch.float64)
    own_pix = torch.tensor(
        [
            -min(float((pixel_bank[i] - b).norm()) for j, b in enumerate(pixel_bank) if j != i)
            for i in range(len(pixel_bank))
        ],
        dtype=torch.float64,
    )
    for i in range(m):
        for k in range(K):
            own[i] += (
                max(
                    float(F.cosine_similarity(bank_h[i, k].double(), bank_h[j, k].double(), dim=0))
                    for j in range(m)
                    if j != i
                )
                / K
            )
    pix = torch.tensor(
        [-min(float((a - b).norm()) for b in pixel_bank) for a in shrunk(test_x)],
        dtype=torch.float64,
    )
    head = loglik.double().mean(1)
    own_head = bank_loglik.double().mean(1)
    z = {
        "feat": (feat - own.mean()) / own.std(correction=0),
        "head": score_cfg.head_weight * (head - own_head.mean()) / own_head.std(correction=0),
        "pix": (pix - own_pix.mean()) / own_pix.std(correction=0),
    }
    return {
        "paper": paper,
        "csi": csi,
        "feat": feat,
        "head": head,
        "pix": pix,
        "feat+head": z["feat"] + z["head"],
        "feat+pix": z["feat"] + z["pix"],
        "feat+head+pix": z["feat"] + z["head"] + z["pix"],
        "cos": cos_only,
        "norm": norm_only,
    }


class SpreadNet(torch.nn.Module):
    """A stand-in for F whose projections point in random directions with norms spread over
    [0.5, 3]. A width-2 ``CSINet``'s projections are nearly parallel with nearly equal norms,
    so variants of eq. 11 (the norm factor outside the max, one nearest neighbour per shift)
    give the same numbers to 1e-4 there. Each output is a fixed random function of the
    pixels, so rotations and augmentations change it."""

    def __init__(self, pixels: int, proj_dim: int = 8, feat_dim: int = 6) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.z = torch.nn.Parameter(torch.randn(pixels, proj_dim, generator=g))
        self.size = torch.nn.Parameter(torch.randn(pixels, generator=g) / pixels**0.5 * 4)
        self.h = torch.nn.Parameter(torch.randn(pixels, feat_dim, generator=g))
        self.shift = torch.nn.Parameter(torch.randn(pixels, K, generator=g) / pixels**0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = (x - 0.5).flatten(1)
        norm = 0.5 + 2.5 * torch.sigmoid(flat @ self.size)
        z = F.normalize(flat @ self.z, dim=1) * norm[:, None]
        return flat @ self.h, z, flat @ self.shift  # CSIOutput's order: h, z, shift


def test_spread_fixture_is_spread() -> None:
    """What makes the brute-force test below able to tell eq. 11's variants apart."""
    model, train_cfg, score_cfg, train_x, test_x = _setup()
    net = SpreadNet(3 * 8 * 8).eval()
    z = embed(net, torch.cat([train_x, test_x]), K, None, 16).z.flatten(0, 1)  # (N K, d)
    norms = z.norm(dim=1)
    cos = F.normalize(z, dim=1) @ F.normalize(z, dim=1).T
    assert norms.max() / norms.min() > 2.5
    assert cos[~torch.eye(len(z), dtype=torch.bool)].abs().max() < 0.999
    assert cos[~torch.eye(len(z), dtype=torch.bool)].abs().mean() < 0.6


@pytest.mark.parametrize("net", ["csinet", "spread"])
@pytest.mark.parametrize("ensemble", [1, 2])
def test_scorer_matches_brute_force(ensemble: int, net: str) -> None:
    """Every score against eq. 11, CSI's score and the feature score written out as loops,
    on a real (narrow) F and on ``SpreadNet``, where eq. 11's variants differ: the norm
    factor averaged outside the max, the nearest neighbour taken per shift and summed (no
    shared x'), max and sum swapped; each is off by far more than the tolerance there."""
    model, train_cfg, score_cfg, train_x, test_x = _setup(ensemble=ensemble)
    if net == "spread":
        model = SpreadNet(3 * 8 * 8).eval()
    scorer = Scorer(train_cfg, score_cfg).fit(model, train_x)
    got = scorer.score_samples(model, test_x)
    assert set(got) == set(SCORES)
    assert set(SCORES) == {
        "paper", "csi", "feat", "head", "pix", "feat+head", "feat+pix", "feat+head+pix", "cos",
        "norm",
    }  # fmt: skip
    expected = _brute_force(model, train_cfg, score_cfg, scorer, train_x, test_x)
    for name in SCORES:
        assert got[name].shape == (5,) and got[name].device.type == "cpu"
        assert torch.isfinite(got[name]).all()
        tol = _tolerance(name, scorer, 1e-4)
        torch.testing.assert_close(got[name].double(), expected[name], rtol=1e-4, atol=tol)


def test_spare_images_join_the_pixel_bank_only() -> None:
    """``Scorer.fit(..., spare)``: ``pix`` and its standardisation are over the training and
    the spare images (brute force), everything F computes is the training images' alone."""
    model, train_cfg, score_cfg, train_x, test_x = _setup(ensemble=1)
    spare = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    plain = Scorer(train_cfg, score_cfg).fit(model, train_x)
    scorer = Scorer(train_cfg, score_cfg).fit(model, train_x, spare)
    assert scorer.bank_x_.shape == (11, 3 * 8 * 8) and scorer.bank_z_.shape[0] == 7
    got, without = scorer.score_samples(model, test_x), plain.score_samples(model, test_x)
    expected = _brute_force(model, train_cfg, score_cfg, scorer, train_x, test_x, spare)
    for name in SCORES:
        tol = _tolerance(name, scorer, 1e-4)
        torch.testing.assert_close(got[name].double(), expected[name], rtol=1e-4, atol=tol)
        if "pix" not in name:
            torch.testing.assert_close(got[name], without[name])
    assert not torch.allclose(got["pix"], without["pix"])  # a spare image is nearer to some


def _tolerance(name: str, scorer: Scorer, tol: float) -> float:
    """``tol``, or for a combined score the float32 rounding it divides by the bank's spread
    of its parts (about 1e-3 on the narrow F, so 1e-7 becomes 1e-4)."""
    if "+" not in name:
        return tol
    spread = scorer.standard_.double().view(3, 2)[:, 1].tolist()
    std = dict(zip(("feat", "head", "pix"), spread, strict=True))
    return max(tol, sum(1e-6 / std[part] for part in name.split("+")))


def test_scorer_on_its_own_training_images() -> None:
    """fit and score reset the RNG per draw, so the training images get the very same draws."""
    model, train_cfg, score_cfg, train_x, _ = _setup(ensemble=1)
    scorer = Scorer(train_cfg, score_cfg).fit(model, train_x)
    got = scorer.score_samples(model, train_x)
    torch.manual_seed(score_cfg.seed)
    d = embed(model, train_x, K, scorer.augment, score_cfg.batch_size)
    # cosine of each image with itself
    torch.testing.assert_close(got["feat"], torch.ones(7), rtol=0, atol=1e-5)
    # eq. 11 with x' = x is sum_S ||z_S(x)||, and by Cauchy-Schwarz nothing beats it
    torch.testing.assert_close(got["paper"], d.z.norm(dim=2).sum(1), rtol=1e-5, atol=1e-5)


def test_scorer_ensemble_own_images_bounds() -> None:
    model, train_cfg, score_cfg, train_x, _ = _setup(ensemble=3)
    scorer = Scorer(train_cfg, score_cfg).fit(model, train_x)
    got = scorer.score_samples(model, train_x)
    torch.testing.assert_close(got["feat"], torch.ones(7), rtol=0, atol=1e-5)
    # the max over the bank is at least the image's own bank entry
    bank_draws = []
    for r in range(3):
        torch.manual_seed(score_cfg.seed + r)
        bank_draws.append(embed(model, train_x, K, scorer.augment, score_cfg.batch_size).z)
    own = torch.stack(bank_draws).mean(0).norm(dim=2).sum(1)
    assert (got["paper"] >= own - 1e-4).all()


def test_scorer_is_deterministic() -> None:
    model, train_cfg, score_cfg, train_x, test_x = _setup()
    a = Scorer(train_cfg, score_cfg).fit(model, train_x).score_samples(model, test_x)
    b = Scorer(train_cfg, score_cfg).fit(model, train_x).score_samples(model, test_x)
    for name in SCORES:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_scorer_chunk_does_not_change_scores() -> None:
    model, train_cfg, score_cfg, train_x, test_x = _setup(chunk=1)
    a = Scorer(train_cfg, score_cfg).fit(model, train_x).score_samples(model, test_x)
    big = ScoreConfig(**{**score_cfg.__dict__, "chunk": 4096})
    fitted = Scorer(train_cfg, big).fit(model, train_x)
    b = fitted.score_samples(model, test_x)
    for name in SCORES:
        tol = _tolerance(name, fitted, 1e-5)
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=tol)


def test_scorer_weights() -> None:
    model, train_cfg, score_cfg, train_x, _ = _setup(ensemble=1)
    scorer = Scorer(train_cfg, score_cfg).fit(model, train_x)
    assert scorer.bank_z_.shape == (7, K, 8) and scorer.bank_h_.shape == (7, K, 16)
    torch.testing.assert_close(scorer.bank_z_.norm(dim=2), torch.ones(7, K))
    assert scorer.weight_sim_.shape == (K,) and (scorer.weight_sim_ > 0).all()
    assert scorer.weight_shift_.shape == (K,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"score": "bogus"}, BOGUS_SCORE),
        ({"score": "PAPER"}, "got 'PAPER'"),
        ({"ensemble": 0}, "score.ensemble must be >= 1, got 0"),  # ScoreConfig's own check
        ({"ensemble": -2}, "score.ensemble must be >= 1, got -2"),
    ],
)
def test_scorer_rejects_bad_config(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Scorer(TrainConfig(), ScoreConfig(**change))


@pytest.mark.parametrize("name", SCORES)
def test_scorer_accepts_every_score_name(name: str) -> None:
    assert Scorer(TrainConfig(), ScoreConfig(score=name)).cfg.score == name


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunk", [1, 4, 2048])
def test_pixel_knn_matches_cdist(k: int, chunk: int) -> None:
    g = torch.Generator().manual_seed(2)
    bank = torch.rand(9, 1, 8, 8, generator=g)
    queries = torch.rand(6, 1, 8, 8, generator=g)
    queries[0] = bank[4]  # an exact match: distance 0
    d = torch.cdist(queries.flatten(1).double(), bank.flatten(1).double())
    expected = d.topk(k, largest=False).values.mean(1)
    got = PixelKNN(KNNConfig(k=k, chunk=chunk)).fit(bank).anomaly_score(queries)
    assert got.shape == (6,)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=2e-3)
    if k == 1:
        assert got[0].item() == pytest.approx(0.0, abs=2e-3)
        assert (got >= 0).all()


def test_pixel_knn_ranks_outliers_higher() -> None:
    g = torch.Generator().manual_seed(3)
    bank = torch.rand(20, 3, 4, 4, generator=g) * 0.2
    near = bank[:3] + 0.01
    far = torch.ones(3, 3, 4, 4)
    knn = PixelKNN().fit(bank)
    assert knn.anomaly_score(near).max() < knn.anomaly_score(far).min()


# -- the bank index (score.index, score.nprobe) ----------------------------------------------


def _faiss_cfg(score_cfg: ScoreConfig, **change) -> ScoreConfig:
    return ScoreConfig(**{**score_cfg.__dict__, "index": "faiss", **change})


def _small_ivf(monkeypatch: pytest.MonkeyPatch, nlist: int = 3) -> None:
    """Let the 7-image test bank train a real IVF index of ``nlist`` cells."""
    import contrasyn.methods.csi.score as score

    monkeypatch.setattr(score, "default_nlist", lambda n: nlist)
    monkeypatch.setattr(score, "_MIN_POINTS_PER_CELL", 1)


def test_scorer_faiss_small_bank_matches_exact() -> None:
    """A 7-image bank is too small for IVF: FAISS searches it with an exact flat index."""
    pytest.importorskip("faiss")
    model, train_cfg, score_cfg, train_x, test_x = _setup()
    exact = Scorer(train_cfg, score_cfg).fit(model, train_x)
    approx = Scorer(train_cfg, _faiss_cfg(score_cfg)).fit(model, train_x)
    assert {type(i).__name__ for i in approx._indices["z"]} == {"FaissIndex"}
    assert not any(i.ivf for group in approx._indices.values() for i in group)
    a, b = exact.score_samples(model, test_x), approx.score_samples(model, test_x)
    for name in SCORES:
        # FAISS's float32 kernels sum in their own order: 4e-5 relative on the AMD EPYC with
        # AVX-512 (a wrong neighbour would move a score by far more)
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-4)


def test_scorer_faiss_ivf_every_cell_probed_matches_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    _small_ivf(monkeypatch, nlist=3)
    model, train_cfg, score_cfg, train_x, test_x = _setup()
    exact = Scorer(train_cfg, score_cfg).fit(model, train_x)
    approx = Scorer(train_cfg, _faiss_cfg(score_cfg, nprobe=3)).fit(model, train_x)
    groups = approx._indices
    assert len(groups["paper"]) == 1 and len(groups["z"]) == len(groups["h"]) == K
    assert all(i.ivf and i.nlist == 3 for group in groups.values() for i in group)
    a, b = exact.score_samples(model, test_x), approx.score_samples(model, test_x)
    for name in SCORES:
        # FAISS's float32 kernels sum in their own order: 4e-5 relative on the AMD EPYC with
        # AVX-512 (a wrong neighbour would move a score by far more)
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-4)


def test_scorer_faiss_reloaded_gives_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Indices are not saved: rebuilt from the bank after ``load_state``, deterministically
    (the very same IVF index, searched with 1 cell of 3 probed)."""
    faiss = pytest.importorskip("faiss")
    _small_ivf(monkeypatch, nlist=3)
    model, train_cfg, score_cfg, train_x, test_x = _setup()
    cfg = _faiss_cfg(score_cfg, nprobe=1)
    fitted = Scorer(train_cfg, cfg).fit(model, train_x)
    state = fitted.state_tensors()
    assert set(state) == {
        "bank_z", "bank_h", "weight_sim", "weight_shift", "standard", "bank_x",
    }  # fmt: skip
    reloaded = Scorer(train_cfg, cfg).load_state(state)
    assert reloaded._indices is None
    a, b = fitted.score_samples(model, test_x), reloaded.score_samples(model, test_x)
    for name in SCORES:
        assert torch.equal(a[name], b[name])
    for key, group in fitted._indices.items():
        for x, y in zip(group, reloaded._indices[key], strict=True):
            assert np.array_equal(faiss.serialize_index(x.index), faiss.serialize_index(y.index))
    # a max over the probed cells only: never above the exact max
    exact = Scorer(train_cfg, score_cfg).fit(model, train_x).score_samples(model, test_x)
    assert all((a[name] <= exact[name] + 1e-5).all() for name in ("paper", "feat"))


def test_scorer_exact_reloaded_gives_bit_identical_scores() -> None:
    model, train_cfg, score_cfg, train_x, test_x = _setup()
    fitted = Scorer(train_cfg, score_cfg).fit(model, train_x)
    reloaded = Scorer(train_cfg, score_cfg).load_state(fitted.state_tensors())
    a, b = fitted.score_samples(model, test_x), reloaded.score_samples(model, test_x)
    for name in SCORES:
        assert torch.equal(a[name], b[name])


@pytest.mark.parametrize(
    "change, match",
    [
        ({"index": "bogus"}, "index must be one of exact, faiss, got 'bogus'"),
        ({"index": "FAISS"}, "index must be one of"),
        ({"nprobe": 0}, "nprobe must be >= 1"),
        ({"index": "faiss", "nprobe": -1}, "nprobe must be >= 1"),
    ],
)
def test_config_rejects_bad_index_settings(change: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ScoreConfig(**change)


def test_scorer_faiss_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    model, train_cfg, score_cfg, train_x, _ = _setup()
    scorer = Scorer(train_cfg, _faiss_cfg(score_cfg))
    with pytest.raises(ConfigError, match=r"contrasyn\[faiss\].*faiss-gpu"):
        scorer.fit(model, train_x)
    Scorer(train_cfg, score_cfg).fit(model, train_x)  # exact needs no faiss


# -- what the mutation tests asked for: dtypes, devices, defaults, messages -------------------


def test_max_inner_product_keeps_the_queries_dtype_and_device() -> None:
    g = torch.Generator().manual_seed(4)
    q = torch.randn(5, 3, generator=g, dtype=torch.float64)
    bank = torch.randn(9, 3, generator=g, dtype=torch.float64)
    got = max_inner_product(q, bank, 2)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, (q @ bank.T).max(1).values, rtol=0, atol=1e-12)
    # any device: the meta device stands in for an accelerator (shapes, no values)
    meta = max_inner_product(q.float().to("meta"), bank.float().to("meta"), 2)
    assert meta.device.type == "meta" and meta.shape == (5,)


def test_default_nlist_is_four_sqrt_n_and_at_least_one() -> None:
    from contrasyn.methods.csi.score import default_nlist

    assert [default_nlist(n) for n in (0, 1, 100, 24_000)] == [1, 4, 40, 620]


def test_exact_index_searches_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import contrasyn.methods.csi.score as score
    from contrasyn.methods.csi.score import ExactIndex, build_index

    bank = torch.randn(6, 3)
    assert build_index(bank).chunk == 4096 and ExactIndex(bank).chunk == 4096
    index = build_index(bank, "exact", chunk=3)
    assert isinstance(index, ExactIndex) and index.chunk == 3 and index.bank is bank
    calls = []
    real = score.max_inner_product
    monkeypatch.setattr(
        score, "max_inner_product", lambda q, b, chunk: calls.append(chunk) or real(q, b, chunk)
    )
    index.max(torch.randn(2, 3))
    assert calls == [3]


def test_build_index_messages() -> None:
    from contrasyn.methods.csi.score import build_index

    bank = torch.randn(6, 3)
    with pytest.raises(ConfigError) as info:
        build_index(bank, "bogus")
    assert str(info.value) == "index must be one of exact, faiss, got 'bogus'"
    with pytest.raises(ConfigError) as info:
        build_index(bank, "faiss", nprobe=0)
    assert str(info.value) == "nprobe must be >= 1 IVF cells, got 0"


def test_faiss_missing_message_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from contrasyn.methods.csi.score import import_faiss

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ConfigError) as info:
        import_faiss()
    assert str(info.value) == (
        "score.index='faiss' needs the faiss package: pip install 'contrasyn[faiss]' "
        "(faiss-cpu; on a CUDA machine faiss-gpu provides the same module, the index "
        "still searches on the CPU), or set score.index='exact'"
    )


def test_faiss_index_settings_and_the_flat_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    faiss = pytest.importorskip("faiss")
    import contrasyn.methods.csi.score as score
    from contrasyn.methods.csi.score import FaissIndex, build_index

    g = torch.Generator().manual_seed(5)
    bank = torch.randn(78, 4, generator=g)  # 39 points a cell for 2 cells
    assert FaissIndex(bank, nlist=2).ivf and FaissIndex(bank, nlist=2).nlist == 2
    assert not FaissIndex(bank[:77], nlist=2).ivf
    assert build_index(bank, "faiss", nlist=2).nlist == 2
    monkeypatch.setattr(score, "_MIN_POINTS_PER_CELL", 1)
    big = torch.randn(200, 4, generator=g)
    index = build_index(big, "faiss", nlist=40)
    assert index.ivf and index.index.nprobe == 32 and index.index.nlist == 40
    assert FaissIndex(big, nlist=40).index.nprobe == 32
    assert build_index(big, "faiss", nprobe=3, nlist=40).index.nprobe == 3
    assert build_index(big, "faiss", nprobe=64, nlist=40).index.nprobe == 40

    def serialized(i):
        return faiss.serialize_index(i.index)

    # seeded (default 0): the same bank, the same index; another seed, another quantizer
    default = build_index(big, "faiss", nlist=5)
    assert np.array_equal(serialized(default), serialized(FaissIndex(big, nlist=5, seed=0)))
    assert np.array_equal(serialized(default), serialized(FaissIndex(big, nlist=5)))
    seeded = build_index(big, "faiss", nlist=5, seed=3)
    assert np.array_equal(serialized(seeded), serialized(FaissIndex(big, nlist=5, seed=3)))
    assert not np.array_equal(serialized(default), serialized(seeded))


def test_faiss_index_answers_empty_probes_exactly_and_keeps_dtype() -> None:
    pytest.importorskip("faiss")
    from contrasyn.methods.csi.score import FaissIndex

    g = torch.Generator().manual_seed(6)
    bank = torch.randn(10, 3, generator=g)
    index = FaissIndex(bank)
    queries = torch.randn(3, 3, generator=g, dtype=torch.float64)
    exact = (queries.float() @ bank.T).max(1).values

    class Probed:
        """FAISS's answer when query 1's probed cells are empty: id -1."""

        def search(self, q, k):
            assert q.dtype == np.float32 and k == 1
            return np.array([[5.0], [-3.4e38], [7.0]], dtype=np.float32), np.array([[0], [-1], [2]])

    index.index = Probed()
    got = index.max(queries)
    assert got.dtype == torch.float64
    assert got[0].item() == 5.0 and got[2].item() == 7.0
    assert got[1].item() == pytest.approx(exact[1].item(), rel=1e-6)
    with pytest.raises(ValueError) as info:
        index.max(torch.zeros(2, 5))
    assert str(info.value) == "dimension mismatch: queries 5, bank 3"


def test_scorer_messages_for_settings_it_cannot_run() -> None:
    cfg = ScoreConfig()
    cfg.score = "bogus"
    with pytest.raises(ConfigError) as info:
        Scorer(TrainConfig(), cfg)
    assert str(info.value) == BOGUS_SCORE
    with pytest.raises(ConfigError) as info:
        Scorer(TrainConfig(), ScoreConfig(ensemble=0))
    assert str(info.value) == "score.ensemble must be >= 1, got 0"
    with pytest.raises(ConfigError) as info:
        Scorer(TrainConfig(), ScoreConfig(augment=False, ensemble=2))
    assert str(info.value) == "score.augment=false is one deterministic pass: set ensemble=1"
    assert Scorer(TrainConfig(), ScoreConfig(augment=False, ensemble=1)).augment is None


def test_scorer_augment_is_T_at_the_fixed_crop_area_without_blur() -> None:
    from contrasyn.methods.csi.augment import ColorJitter, RandomGrayscale, RandomResizedCrop

    train_cfg = TrainConfig(jitter=(0.1, 0.2, 0.3, 0.04), jitter_p=0.7, gray_p=0.1, blur=True)
    scorer = Scorer(train_cfg, ScoreConfig(crop_scale=0.6))
    jitter, gray, crop = scorer.augment  # no blur layer, whatever training used
    assert isinstance(jitter, ColorJitter) and jitter.p == 0.7
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == train_cfg.jitter
    assert isinstance(gray, RandomGrayscale) and gray.p == 0.1
    assert isinstance(crop, RandomResizedCrop) and crop.fixed_scale == 0.6


def test_scorer_indices_take_chunk_nprobe_and_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    model, train_cfg, score_cfg, train_x, _ = _setup(chunk=3)
    scorer = Scorer(train_cfg, score_cfg).fit(model, train_x)
    assert {i.chunk for group in scorer._indices.values() for i in group} == {3}
    faiss = pytest.importorskip("faiss")
    from contrasyn.methods.csi.score import FaissIndex

    _small_ivf(monkeypatch, nlist=3)
    cfg = _faiss_cfg(score_cfg, nprobe=2, seed=5)
    fitted = Scorer(train_cfg, cfg).fit(model, train_x)
    paper = fitted._indices["paper"][0]
    assert paper.index.nprobe == 2
    direct = FaissIndex(fitted.bank_z_.flatten(1), nprobe=2, seed=5)
    assert np.array_equal(faiss.serialize_index(paper.index), faiss.serialize_index(direct.index))


def test_scorer_builds_its_indices_once_per_bank(monkeypatch: pytest.MonkeyPatch) -> None:
    """An IVF index is trained by k-means: rebuilding it at every call would make each
    ``score_samples`` pay the bank's cost again. One build at ``fit``, one after a
    ``load_state`` (at its first score), none for later calls."""
    import contrasyn.methods.csi.score as score

    model, train_cfg, score_cfg, train_x, test_x = _setup(ensemble=1)
    builds = []
    real = score.build_index

    def build_index(bank, *args, **kwargs):
        builds.append(bank.shape)
        return real(bank, *args, **kwargs)

    monkeypatch.setattr(score, "build_index", build_index)
    per_build = 1 + 2 * K  # eq. 11's concatenated bank, then z and h per shift
    scorer = Scorer(train_cfg, score_cfg).fit(model, train_x)
    assert len(builds) == per_build
    first = scorer.score_samples(model, test_x)
    second = scorer.score_samples(model, test_x)
    assert len(builds) == per_build
    assert all(torch.equal(first[k], second[k]) for k in first)
    reloaded = Scorer(train_cfg, score_cfg).load_state(scorer.state_tensors())
    assert len(builds) == per_build
    reloaded.score_samples(model, test_x)
    reloaded.score_samples(model, test_x)
    assert len(builds) == 2 * per_build


def test_scorer_embeds_in_the_training_memory_format(monkeypatch: pytest.MonkeyPatch) -> None:
    import contrasyn.methods.csi.score as score

    model, _, score_cfg, train_x, _ = _setup(ensemble=1)
    train_cfg = TrainConfig(
        width=8, image_size=8, channels=3, num_shifts=K, channels_last=True, precision="bf16"
    )
    calls = []
    real = score.embed

    def embed(model, images, k, augment, batch_size, precision, channels_last):
        calls.append((k, batch_size, precision, channels_last))
        return real(model, images, k, augment, batch_size)

    monkeypatch.setattr(score, "embed", embed)
    Scorer(train_cfg, score_cfg).fit(model, train_x)
    assert calls == [(K, 3, "bf16", True)]


def test_scorer_weights_are_one_over_the_mean_training_values() -> None:
    model, train_cfg, score_cfg, train_x, _ = _setup(ensemble=2)
    scorer = Scorer(train_cfg, score_cfg).fit(model, train_x)
    draws = []
    for r in range(2):
        torch.manual_seed(score_cfg.seed + r)
        draws.append(embed(model, train_x, K, scorer.augment, score_cfg.batch_size))
    z = torch.stack([d.z for d in draws]).mean(0)
    logit = torch.stack([d.logit for d in draws]).mean(0)
    torch.testing.assert_close(scorer.weight_sim_, 1 / z.norm(dim=2).mean(0))
    torch.testing.assert_close(scorer.weight_shift_, 1 / logit.mean(0))


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 50])
def test_max_inner_product_others_leaves_each_row_out(chunk: int) -> None:
    """Each row's best match among the *other* rows, whatever the chunking; a row repeated
    in the bank finds its twin."""
    g = torch.Generator().manual_seed(5)
    bank = F.normalize(torch.randn(7, 4, generator=g), dim=1)
    bank[6] = bank[2]
    products = bank @ bank.T
    expected = products.masked_fill(torch.eye(7, dtype=torch.bool), float("-inf")).amax(1)
    got = max_inner_product_others(bank, None, chunk)
    torch.testing.assert_close(got, expected)
    assert got[2] == pytest.approx(1.0) and got[6] == pytest.approx(1.0)
    assert (got < 1 - 1e-6)[[0, 1, 3, 4, 5]].all()  # no row matched itself
    assert max_inner_product_others(bank[:1], None, chunk).item() == float("-inf")


@pytest.mark.parametrize("chunk", [1, 3, 50])
@pytest.mark.parametrize("k", [1, 2, 7])
def test_top_inner_products_of_the_others_leave_each_row_out(chunk: int, k: int) -> None:
    """The k best matches among the *other* rows, whatever the chunking; -inf fills where
    fewer than k others are left."""
    g = torch.Generator().manual_seed(6)
    bank = F.normalize(torch.randn(7, 4, generator=g), dim=1)
    masked = (bank @ bank.T).masked_fill(torch.eye(7, dtype=torch.bool), float("-inf"))
    got = top_inner_products(bank, bank, k, chunk, others=True)
    torch.testing.assert_close(got, masked.topk(k, dim=1).values)
    assert (got[:, 6:] == float("-inf")).all()  # k = 7: six others each
    with pytest.raises(ValueError, match="others needs the bank's rows"):
        top_inner_products(bank[:3], bank, k, chunk, others=True)


def test_a_model_saved_before_the_combined_scores_scores_without_them() -> None:
    """A bank saved without ``standard`` and ``bank_x`` (models from before the combined
    scores) loads and gives every other score unchanged; a one-image bank standardises
    ``feat`` and ``pix`` by (0, 1)."""
    model, train_cfg, score_cfg, train_x, test_x = _setup()
    fitted = Scorer(train_cfg, score_cfg).fit(model, train_x)
    state = fitted.state_tensors()
    assert state["bank_x"].shape == (7, 3 * 8 * 8) and state["standard"].shape == (6,)
    old = {k: v for k, v in state.items() if k not in ("standard", "bank_x")}
    reloaded = Scorer(train_cfg, score_cfg).load_state(old)
    gone = {"pix", "feat+head", "feat+pix", "feat+head+pix"}
    assert set(reloaded.score_names) == set(SCORES) - gone
    a, b = fitted.score_samples(model, test_x), reloaded.score_samples(model, test_x)
    assert set(b) == set(SCORES) - gone
    for name in b:
        assert torch.equal(a[name], b[name])
    one = Scorer(train_cfg, score_cfg).fit(model, train_x[:1])
    assert one.standard_[[0, 1, 4, 5]].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert all(torch.isfinite(one.score_samples(model, test_x)[n]).all() for n in gone)


def test_pixels_pool_large_images_to_at_most_32_a_side() -> None:
    x = torch.rand(2, 3, 70, 70)
    got = score.pixels(x)  # factor 3: 23 x 23, the last row and column left out
    assert got.shape == (2, 3 * 23 * 23)
    torch.testing.assert_close(got[0, 0], x[0, 0, :3, :3].mean())
    assert score.pixels(torch.rand(1, 1, 32, 32)).shape == (1, 1024)
    assert score.pixels(torch.rand(1, 1, 33, 33)).shape == (1, 16 * 16)
