"""The bank indices: exact chunked search and the FAISS inner-product index against it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrasyn.errors import ConfigError
from contrasyn.methods.csi.score import (
    ExactIndex,
    FaissIndex,
    build_index,
    default_nlist,
    max_inner_product,
)

faiss = pytest.importorskip("faiss")


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


def _recall(got: torch.Tensor, exact: torch.Tensor) -> float:
    return ((got - exact).abs() <= 1e-5).float().mean().item()


def test_exact_index_is_max_inner_product_bit_for_bit() -> None:
    bank, q = _unit(50, 8, 0), torch.randn(9, 8)
    index = build_index(bank, "exact", chunk=7)
    assert isinstance(index, ExactIndex)
    assert torch.equal(index.max(q), max_inner_product(q, bank, 7))


def test_faiss_ivf_with_every_cell_probed_is_exact() -> None:
    bank, q = _unit(4000, 16, 0), _unit(500, 16, 1)
    index = build_index(bank, "faiss", nprobe=32, nlist=32)
    assert isinstance(index, FaissIndex) and index.ivf and index.index.nprobe == 32
    got = index.max(q)
    assert got.shape == (500,) and got.dtype == q.dtype and got.device == q.device
    torch.testing.assert_close(got, max_inner_product(q, bank), rtol=0, atol=1e-5)


def test_faiss_ivf_with_few_cells_probed_is_approximate() -> None:
    """Uniform random unit vectors are IVF's worst case; measured recall@1 with 8 of 32 cells
    probed is 0.90-0.93 over five other seeds (0.934 for these), 0.34-0.39 with 1 cell."""
    bank, q = _unit(4000, 16, 0), _unit(500, 16, 1)
    exact = max_inner_product(q, bank)
    recall = {}
    for nprobe in (1, 8):
        got = build_index(bank, "faiss", nprobe=nprobe, nlist=32).max(q)
        # a max over the probed cells only: never above the exact max
        assert (got <= exact + 1e-5).all()
        recall[nprobe] = _recall(got, exact)
    assert 0.85 < recall[8] < 1.0
    assert recall[1] < recall[8]


def test_faiss_index_is_deterministic() -> None:
    bank, q = _unit(4000, 16, 0), _unit(300, 16, 1)
    a = build_index(bank, "faiss", nprobe=2, nlist=32, seed=3)
    b = build_index(bank, "faiss", nprobe=2, nlist=32, seed=3)
    assert np.array_equal(faiss.serialize_index(a.index), faiss.serialize_index(b.index))
    assert torch.equal(a.max(q), b.max(q))


def test_faiss_small_bank_falls_back_to_exact_flat_index() -> None:
    bank, q = _unit(500, 16, 2), _unit(200, 16, 3)
    # default nlist 89 cells need 39 * 89 points to train: this bank gets a flat index
    index = build_index(bank, "faiss", nprobe=1)
    assert not index.ivf and index.nlist == default_nlist(500) == 89
    assert isinstance(index.index, faiss.IndexFlatIP)
    torch.testing.assert_close(index.max(q), max_inner_product(q, bank), rtol=0, atol=1e-5)


def test_default_nlist() -> None:
    assert [default_nlist(n) for n in (1, 100, 10_000, 1_000_000)] == [4, 40, 400, 4000]


def test_faiss_queries_without_a_neighbour_get_the_exact_max() -> None:
    """FAISS answers id -1 when every probed cell is empty; those rows are searched exactly."""
    bank, q = _unit(60, 8, 4), _unit(5, 8, 5)
    index = build_index(bank, "faiss")

    class NoNeighbourForRow1:
        def __init__(self, inner):
            self.inner = inner

        def search(self, x, k):
            scores, ids = self.inner.search(x, k)
            scores[1], ids[1] = -3.4e38, -1
            return scores, ids

    index.index = NoNeighbourForRow1(index.index)
    torch.testing.assert_close(index.max(q), max_inner_product(q, bank), rtol=0, atol=1e-5)


def test_faiss_unnormalised_queries_and_dimension_check() -> None:
    bank = _unit(100, 8, 6)
    q = 3 * torch.randn(4, 8, generator=torch.Generator().manual_seed(7))
    got = build_index(bank, "faiss").max(q)
    torch.testing.assert_close(got, max_inner_product(q, bank), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="dimension"):
        build_index(bank, "faiss").max(torch.zeros(2, 5))


@pytest.mark.parametrize(
    "kind, nprobe, match",
    [("bogus", 32, "index must be one of exact, faiss"), ("faiss", 0, "nprobe must be >= 1")],
)
def test_build_index_rejects_bad_arguments(kind: str, nprobe: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_index(_unit(10, 4, 0), kind, nprobe)


def test_faiss_missing_is_a_config_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    bank = _unit(10, 4, 0)
    with pytest.raises(ConfigError, match=r"pip install 'contrasyn\[faiss\]'"):
        build_index(bank, "faiss")
    # the exact search does not need it
    assert build_index(bank, "exact").max(bank).shape == (10,)


def test_bank_search_benchmark_smoke() -> None:
    """benchmarks/bank_search.py end to end on one tiny bank (flat fallback)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "bank_search.py"
    spec = importlib.util.spec_from_file_location("bank_search", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.run([300], n_queries=20, nprobes=[1], repeats=1)
    (row,) = out["rows"]
    assert row["bank_size"] == 300 and row["bank_mib"] == round(300 * 128 * 4 / 2**20, 2)
    assert row["exact"]["peak_extra_mib_computed"] == round(20 * 300 * 4 / 2**20, 2)
    assert row["faiss"]["nlist"] is None and row["faiss"]["index_mib"] > 0
    (search,) = row["faiss"]["search"]
    assert search["nprobe"] is None and search["recall_at_1"] == 1.0
    assert {"faiss", "torch", "numpy"} <= set(out["versions"])


def test_detector_without_faiss_fails_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing faiss is reported at once, not after the whole training run."""
    from contrasyn.api.detector import Detector
    from contrasyn.methods import csi as csi_family

    monkeypatch.setitem(sys.modules, "faiss", None)
    trained = []
    monkeypatch.setattr(csi_family, "train_networks", lambda *a, **k: trained.append(1))
    det = Detector(
        preset="tiny", device="cpu", settings={"score": {"index": "faiss"}}, progress=False
    )
    with pytest.raises(ConfigError, match=r"contrasyn\[faiss\]"):
        det.fit(torch.rand(20, 3, 32, 32))
    assert not trained
