"""Outlier scores against a bank of training features (docs/METHOD.md, "The outlier scores").

All scores here are *normality* scores M(x): higher means more normal. The anomaly score is
``-M(x)``. Three scores are computed from the same forward passes, so they can be reported
side by side at no extra cost:

- ``paper`` (eq. 11): ``max_x' sum_S ||z_S(x)|| sim(z_S(x), z_S(x'))``, averaged over R
  draws of T (``M_ens``). Since ``||a|| cos(a, b) = <a, b/||b||>`` the sum over S is one inner
  product between the concatenation of the K unnormalised test vectors and the
  concatenation of the K normalised bank vectors, so the max is a single bank search.
- ``csi``: CSI's ``s_CSI-ens``: per shift, the max of ``<z_k(x), z_k(x')/||z_k(x')||>``
  weighted by 1 / the mean training norm, plus the shift head's logit of the true rotation
  weighted by 1 / its mean training value, averaged over the K shifts.
- ``feat``: the mean over shifts of the cosine 1-NN similarity of the penultimate features
  (before the projection head): the most stable score in our calibration runs.
- ``head``: the shift head's mean log-likelihood of the true shift, ``mean_S log p(S | S(x))``
  (Rot+Trans's score, with CSI's rotations): F trains the head anyway, so it costs nothing.
- ``pix``: minus the Euclidean distance to the nearest training image in pixels (the images
  average-pooled to at most 32 x 32): raw-pixel kNN, which F's features do not see.
- ``feat+head``, ``feat+pix``, ``feat+head+pix``: the sum of those parts, each standardised
  by its mean and standard deviation over the training images (``feat`` and ``pix``
  leave-one-out: each training image against the others), ``head`` weighted by
  ``ScoreConfig.head_weight``. The parts see different things: ``feat`` how far an image is
  from its nearest normal neighbour in F's features, ``head`` whether F can tell how it is
  turned, ``pix`` how far it is in pixels (docs/METHOD.md, "The outlier scores").
- ``cos`` and ``norm``, eq. 11 taken apart (for diagnosis): ``cos`` is eq. 11 without the
  norm factor, ``max_x' sum_S sim(z_S(x), z_S(x'))``; ``norm`` is the factor alone,
  ``sum_S ||z_S(x)||``; both averaged over the R draws as eq. 11 is.

Features of every image are averaged over the R draws (CSI's ensemble); the training bank
holds, for every training image and shift, that average. Every search goes through a
``BankIndex`` (``build_index``), chosen by ``ScoreConfig.index``: ``"exact"`` (the default) is
a chunked matrix product on the model's device whose memory stays bounded whatever the bank
size; ``"faiss"`` is an approximate FAISS IVF inner-product index on the CPU for banks of
millions (the ``faiss`` extra). The indices are rebuilt from the bank tensors, never saved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrasyn.device import autocast, forward_in_chunks
from contrasyn.errors import ConfigError
from contrasyn.methods.csi.augment import HorizontalFlip, SimCLRAugment, rotate_shifts
from contrasyn.methods.csi.nets import CSINet, CSIOutput
from contrasyn.methods.csi_config import (
    COMBINED,
    INDEXES,
    SCORES,
    ScoreConfig,
    TrainConfig,
    pixel_factor,
)


def max_inner_product(queries: Tensor, bank: Tensor, chunk: int = 4096) -> Tensor:
    """``max_j <queries[i], bank[j]>`` for every i, holding at most chunk x chunk products."""
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(f"dimension mismatch: queries {queries.shape[1]}, bank {bank.shape[1]}")
    out = torch.empty(len(queries), device=queries.device, dtype=queries.dtype)
    for i in range(0, len(queries), chunk):
        q = queries[i : i + chunk]
        best = torch.full((len(q),), float("-inf"), device=q.device, dtype=q.dtype)
        for j in range(0, len(bank), chunk):
            best = torch.maximum(best, (q @ bank[j : j + chunk].T).amax(dim=1))
        out[i : i + chunk] = best
    return out


def top_inner_products(
    queries: Tensor, bank: Tensor, k: int, chunk: int = 4096, others: bool = False
) -> Tensor:
    """The ``k`` largest ``<queries[i], bank[j]>`` over j for every i, (N, min(k, len(bank))),
    holding at most chunk x chunk products (``max_inner_product`` is k = 1). ``others``:
    ``queries[i]`` stands for ``bank[i]``, and its own row is left out (leave-one-out; -inf
    where fewer than k other rows remain)."""
    if others and len(queries) != len(bank):
        raise ValueError(f"others needs the bank's rows as queries: {len(queries)} != {len(bank)}")
    k = min(k, len(bank))
    out = []
    for i in range(0, len(queries), chunk):
        q = queries[i : i + chunk]
        best = q.new_empty(len(q), 0)
        for j in range(0, len(bank), chunk):
            products = q @ bank[j : j + chunk].T
            if others:
                _leave_own_out(products, i, j)
            both = torch.cat([best, products], dim=1)
            best = both.topk(min(k, both.shape[1]), dim=1).values
        out.append(best)
    return torch.cat(out)


def _leave_own_out(products: Tensor, i: int, j: int) -> None:
    """Set to -inf, in the block of query rows from ``i`` against bank rows from ``j``, each
    query's product with its own bank row."""
    rows = torch.arange(len(products), device=products.device)
    own = rows + i - j  # column of each query's own row in this block
    inside = (own >= 0) & (own < products.shape[1])
    products[rows[inside], own[inside]] = float("-inf")


def max_inner_product_others(
    queries: Tensor, bank: Tensor | None = None, chunk: int = 4096
) -> Tensor:
    """``max_{j != i} <queries[i], bank[j]>`` for every i, where ``queries[i]`` stands for
    ``bank[i]`` (default: the bank itself): each row's best match among the *other* rows
    (leave-one-out); -inf for a bank of one row."""
    bank = queries if bank is None else bank
    out = torch.empty(len(queries), device=queries.device, dtype=queries.dtype)
    for i in range(0, len(queries), chunk):
        q = queries[i : i + chunk]
        best = torch.full((len(q),), float("-inf"), device=q.device, dtype=q.dtype)
        for j in range(0, len(bank), chunk):
            products = q @ bank[j : j + chunk].T
            _leave_own_out(products, i, j)
            best = torch.maximum(best, products.amax(dim=1))
        out[i : i + chunk] = best
    return out


def pixels(images: Tensor) -> Tensor:
    """(N, C * s * s) float32: the images average-pooled by ``pixel_factor`` (side s)."""
    f = pixel_factor(images.shape[-1])
    side = images.shape[-1] // f
    x = images[..., : side * f, : side * f].float()
    return F.avg_pool2d(x, f).flatten(1) if f > 1 else x.flatten(1)


def nearest_distance(
    queries: Tensor, bank: Tensor, chunk: int = 4096, others: bool = False, k: int = 1
) -> Tensor:
    """Euclidean distance of each query to its nearest bank row, or the mean over its ``k``
    nearest (``others``: queries are the bank, each row's nearest *other* rows): one
    inner-product search, since ``-||a - b||^2 = <[2a, -1], [b, ||b||^2]> - ||a||^2``."""
    a = torch.cat(
        [2 * queries, -torch.ones(len(queries), 1, dtype=queries.dtype, device=queries.device)],
        dim=1,
    )
    b = torch.cat([bank, bank.pow(2).sum(1, keepdim=True)], dim=1)
    if k == 1:
        search = max_inner_product_others if others else max_inner_product
        best = search(a, b, chunk)[:, None]
    else:
        best = top_inner_products(a, b, k, chunk, others)
    return (queries.pow(2).sum(1, keepdim=True) - best).clamp_min(0).sqrt().mean(1)


# FAISS trains an IVF quantizer on the bank itself and warns below this many points per cell
# (faiss.ClusteringParameters.min_points_per_centroid); smaller banks get an exact flat index.
_MIN_POINTS_PER_CELL = 39
# k-means runs on a seeded subsample of at most this many points per cell (FAISS's default
# is 256): training costs about 10 x 64 x nlist^2 x d, a few times the cost of adding the bank.
_TRAIN_POINTS_PER_CELL = 64


def import_faiss() -> Any:
    """The ``faiss`` module, or a ``ConfigError`` that says how to install it."""
    try:
        import faiss
    except ImportError as e:
        raise ConfigError(
            "score.index='faiss' needs the faiss package: pip install 'contrasyn[faiss]' "
            "(faiss-cpu; on a CUDA machine faiss-gpu provides the same module, the index "
            "still searches on the CPU), or set score.index='exact'"
        ) from e
    return faiss


def default_nlist(n: int) -> int:
    """IVF cells for a bank of ``n`` vectors: about ``4 sqrt(n)`` (FAISS's usual rule)."""
    return max(1, round(4 * math.sqrt(n)))


class BankIndex:
    """A fixed bank of vectors (M, d) searched for the max inner product of each query."""

    def max(self, queries: Tensor) -> Tensor:
        """``max_j <queries[i], bank[j]>`` for every i: (N,), on the queries' device and dtype."""
        raise NotImplementedError


class ExactIndex(BankIndex):
    """``max_inner_product`` on the bank's device: exact, at most chunk x chunk products."""

    def __init__(self, bank: Tensor, chunk: int = 4096) -> None:
        self.bank, self.chunk = bank, chunk

    def max(self, queries: Tensor) -> Tensor:
        return max_inner_product(queries, self.bank, self.chunk)


class FaissIndex(BankIndex):
    """A FAISS inner-product index on the CPU (float32), searched with k = 1.

    IVF-Flat with ``nlist`` cells (``default_nlist`` of the bank size unless given), whose
    quantizer is trained by spherical k-means on the bank itself (at most 64 points a cell,
    subsampled), seeded with ``seed`` (the Scorer passes ``ScoreConfig.seed``), so the same
    bank gives the same index. A search
    visits the ``nprobe`` cells nearest the query and is exact when ``nprobe >= nlist``. A
    bank smaller than 39 points per cell (``4 sqrt(M)`` cells: under about 24,000 vectors)
    cannot train the quantizer: it gets an exact ``IndexFlatIP`` instead (``self.ivf`` is
    False). The index stores a float32 copy of the bank on the CPU whatever the bank's
    device; queries are copied to the CPU and the result back to their device. A query whose
    probed cells are all empty (FAISS returns no neighbour) is answered by the exact search.
    """

    def __init__(
        self, bank: Tensor, nprobe: int = 32, nlist: int | None = None, seed: int = 0
    ) -> None:
        faiss = import_faiss()
        self.bank = bank
        x = np.ascontiguousarray(bank.detach().float().cpu().numpy(), dtype=np.float32)
        n, d = x.shape
        self.nlist = default_nlist(n) if nlist is None else nlist
        self.ivf = n >= _MIN_POINTS_PER_CELL * self.nlist
        if self.ivf:
            quantizer = faiss.IndexFlatIP(d)  # faiss's wrapper keeps it alive with the index
            index = faiss.IndexIVFFlat(quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed  # k-means initialisation and subsampling
            index.cp.max_points_per_centroid = _TRAIN_POINTS_PER_CELL
            index.train(x)
            index.nprobe = min(nprobe, self.nlist)
        else:
            index = faiss.IndexFlatIP(d)
        index.add(x)
        self.index = index

    def max(self, queries: Tensor) -> Tensor:
        if queries.shape[1] != self.bank.shape[1]:
            raise ValueError(
                f"dimension mismatch: queries {queries.shape[1]}, bank {self.bank.shape[1]}"
            )
        q = np.ascontiguousarray(queries.detach().float().cpu().numpy(), dtype=np.float32)
        scores, ids = self.index.search(q, 1)
        out = torch.from_numpy(scores[:, 0].copy())
        missing = torch.from_numpy(ids[:, 0] < 0)
        if missing.any():
            out[missing] = max_inner_product(
                queries[missing.to(queries.device)].to(self.bank), self.bank
            ).to(out)
        return out.to(device=queries.device, dtype=queries.dtype)


def build_index(
    bank: Tensor,
    kind: str = "exact",
    nprobe: int = 32,
    chunk: int = 4096,
    *,
    nlist: int | None = None,
    seed: int = 0,
) -> BankIndex:
    """The search over ``bank`` (M, d): ``"exact"`` (``ExactIndex``, chunk x chunk products on
    the bank's device) or ``"faiss"`` (``FaissIndex``: IVF-Flat, ``nprobe`` cells a query,
    ``nlist`` cells, exact flat for small banks; needs faiss)."""
    if kind == "exact":
        return ExactIndex(bank, chunk)
    if kind == "faiss":
        if nprobe < 1:
            raise ConfigError(f"nprobe must be >= 1 IVF cells, got {nprobe}")
        return FaissIndex(bank, nprobe, nlist, seed)
    raise ConfigError(f"index must be one of {', '.join(INDEXES)}, got {kind!r}")


@dataclass
class DrawFeatures:
    """Per image and shift: projection z (N, K, d), penultimate h (N, K, e), the true shift's
    logit and its log-probability under the shift head (N, K)."""

    z: Tensor
    h: Tensor
    logit: Tensor
    loglik: Tensor

    def __add__(self, other: DrawFeatures) -> DrawFeatures:
        return DrawFeatures(*(a + b for a, b in zip(self.parts(), other.parts(), strict=True)))

    def __truediv__(self, n: float) -> DrawFeatures:
        return DrawFeatures(*(a / n for a in self.parts()))

    def parts(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.z, self.h, self.logit, self.loglik


@torch.inference_mode()
def embed(
    model: CSINet,
    images: Tensor,
    num_shifts: int,
    augment: SimCLRAugment | None,
    batch_size: int,
    precision: str = "fp32",
    channels_last: bool = False,
) -> DrawFeatures:
    """One draw: ``T(S_k(flip(x)))`` for every k, through F in eval mode (BN running stats).

    ``channels_last`` must match the model's memory format (a mismatch converts every layer).
    """
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model.eval()
    device = next(model.parameters()).device
    flip = HorizontalFlip() if augment is not None else None
    zs, hs, logits, logliks = [], [], [], []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device)
        b = len(x)
        if flip is not None:
            x = flip(x)
        views = rotate_shifts(x, num_shifts)
        if augment is not None:
            views = augment(views)
        with autocast(precision, device):
            out = CSIOutput(*forward_in_chunks(model, views.contiguous(memory_format=memory)))
        labels = torch.arange(num_shifts, device=device).repeat_interleave(b)
        shift = out.shift.float()
        true_logit = shift.gather(1, labels[:, None]).squeeze(1)
        loglik = F.log_softmax(shift, dim=1).gather(1, labels[:, None]).squeeze(1)
        # rows are shift-major (k * b + i); bring them to (b, K, d)
        zs.append(out.z.float().view(num_shifts, b, -1).transpose(0, 1))
        hs.append(out.h.float().view(num_shifts, b, -1).transpose(0, 1))
        logits.append(true_logit.view(num_shifts, b).T)
        logliks.append(loglik.view(num_shifts, b).T)
    return DrawFeatures(torch.cat(zs), torch.cat(hs), torch.cat(logits), torch.cat(logliks))


class Scorer:
    """Builds the training bank (``fit``) and scores new images (``score_samples``).

    ``score_samples`` returns a dict ``{score name: normality (N,)}`` for every score in
    ``SCORES``; ``ScoreConfig.score`` names the one the detector reports by default.

    Its 2K + 1 bank searches (``paper``: one over the K concatenated shifts; ``csi`` and
    ``feat``: one per shift) each get a ``BankIndex`` of kind ``ScoreConfig.index``, built in
    ``fit`` or at the first score after ``load_state`` (indices are not saved: the bank
    tensors are the state, and rebuilding is deterministic). With ``"faiss"`` every index
    holds a float32 copy of its part of the bank on the CPU, besides the bank itself.
    """

    def __init__(self, train_cfg: TrainConfig, cfg: ScoreConfig) -> None:
        if cfg.score not in SCORES:
            raise ConfigError(f"score must be one of {', '.join(SCORES)}, got {cfg.score!r}")
        if not cfg.augment and cfg.ensemble != 1:
            raise ConfigError("score.augment=false is one deterministic pass: set ensemble=1")
        self.train_cfg, self.cfg = train_cfg, cfg
        self._indices: dict[str, list[BankIndex]] | None = None
        self.standard_: Tensor | None = None
        self.bank_x_: Tensor | None = None
        self.augment = (
            SimCLRAugment(
                train_cfg.jitter,
                train_cfg.jitter_p,
                train_cfg.gray_p,
                fixed_crop_scale=cfg.crop_scale,
                blur=False,
            )
            if cfg.augment
            else None
        )

    _STATE = ("bank_z_", "bank_h_", "weight_sim_", "weight_shift_")
    # Added later: models saved before them load without them and score without the
    # combined scores and ``pix``.
    _LATER = ("standard_", "bank_x_")

    def state_tensors(self) -> dict[str, Tensor]:
        """The fitted bank and weights, for saving (``load_state`` restores them)."""
        names = self._STATE + tuple(n for n in self._LATER if getattr(self, n) is not None)
        return {name.rstrip("_"): getattr(self, name) for name in names}

    def load_state(self, tensors: dict[str, Tensor]) -> Scorer:
        """Restore the bank and weights; the search indices are rebuilt at the first score."""
        for name in self._STATE:
            setattr(self, name, tensors[name.rstrip("_")])
        later = [tensors.get(name.rstrip("_")) for name in self._LATER]
        if any(t is None for t in later):
            later = [None] * len(later)  # both or neither
        self.standard_, self.bank_x_ = later
        self._indices = None
        return self

    @property
    def score_names(self) -> tuple[str, ...]:
        """The scores ``score_samples`` returns: all of ``SCORES``, less ``pix`` and the
        combined scores for a model saved before them."""
        if self.standard_ is not None:
            return SCORES
        return tuple(s for s in SCORES if s != "pix" and s not in COMBINED)

    def _build_indices(self) -> dict[str, list[BankIndex]]:
        """The bank searches ``score_samples`` does: ``paper`` (one over the K concatenated
        shifts), ``z`` and ``h`` (one per shift)."""
        cfg, k = self.cfg, self.train_cfg.num_shifts

        def build(bank: Tensor) -> BankIndex:
            return build_index(bank, cfg.index, cfg.nprobe, cfg.chunk, seed=cfg.seed)

        self._indices = {
            "paper": [build(self.bank_z_.flatten(1))],
            "z": [build(self.bank_z_[:, s]) for s in range(k)],
            "h": [build(self.bank_h_[:, s]) for s in range(k)],
        }
        return self._indices

    def _mean_features(
        self, model: CSINet, images: Tensor, on_draw: Callable[[DrawFeatures], None] | None = None
    ) -> DrawFeatures:
        """Features averaged over the R draws (draw r seeded with ``seed + r``, so train and
        test images see the same draws); ``on_draw`` sees each draw as it is computed. The
        caller's RNG state is left untouched."""
        device = next(model.parameters()).device
        total: DrawFeatures | None = None
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for r in range(self.cfg.ensemble):
                torch.manual_seed(self.cfg.seed + r)
                d = embed(
                    model,
                    images,
                    self.train_cfg.num_shifts,
                    self.augment,
                    self.cfg.batch_size,
                    self.train_cfg.precision,
                    self.train_cfg.channels_last,
                )
                if on_draw is not None:
                    on_draw(d)
                total = d if total is None else total + d
        return total / self.cfg.ensemble

    def fit(self, model: CSINet, images: Tensor, spare: Tensor | None = None) -> Scorer:
        """Bank of the training images' features, averaged over the R draws, the weights of
        ``csi``, the shrunken pixels of ``pix`` (of ``spare`` images too: more normal images
        that F did not train on) and the standardisation of the combined scores."""
        bank = self._mean_features(model, images)
        self.bank_z_ = F.normalize(bank.z, dim=2)  # (M, K, d)
        self.bank_h_ = F.normalize(bank.h, dim=2)
        self.weight_sim_ = 1.0 / bank.z.norm(dim=2).mean(0)  # (K,)
        self.weight_shift_ = 1.0 / bank.logit.mean(0)  # (K,)
        pixel_images = images if spare is None else torch.cat([images, spare.to(images)])
        self.bank_x_ = pixels(pixel_images).to(self.bank_h_.device)
        self.standard_ = self._standardisation(bank.loglik.mean(1))
        self._build_indices()
        return self

    def _standardisation(self, head: Tensor) -> Tensor:
        """Mean and standard deviation over the training images of ``feat``, ``head`` and
        ``pix``, (6,) in that order; ``feat`` and ``pix`` leave-one-out (each training image
        against the others). A bank of one image has no neighbour: its ``feat`` and ``pix``
        get mean 0, std 1."""
        k, chunk = self.train_cfg.num_shifts, self.cfg.chunk
        parts, feat, pix = [], None, None
        if len(self.bank_h_) > 1:
            feat = torch.stack(
                [max_inner_product_others(self.bank_h_[:, s], None, chunk) for s in range(k)],
                dim=1,
            ).mean(1)
        if len(self.bank_x_) > 1:
            pix = -nearest_distance(self.bank_x_, self.bank_x_, chunk, others=True)
        for values in (feat, head, pix):
            if values is None:
                parts += [torch.tensor(0.0), torch.tensor(1.0)]
            else:
                parts += [values.mean(), values.std(correction=0)]
        stats = torch.stack(parts).to(self.bank_h_)
        # a constant part (e.g. a head that is certain on every image) contributes nothing
        stats[1::2] = stats[1::2].clamp_min(1e-6)
        return stats

    def score_samples(self, model: CSINet, images: Tensor) -> dict[str, Tensor]:
        indices = self._indices if self._indices is not None else self._build_indices()
        k = self.train_cfg.num_shifts
        per_draw = torch.zeros(3, len(images), device=self.bank_z_.device)

        def add_draw(d: DrawFeatures) -> None:
            # eq. 11 and its parts are averaged over draws (M_ens), not computed on the mean
            per_draw[0].add_(indices["paper"][0].max(d.z.flatten(1)))
            per_draw[1].add_(indices["paper"][0].max(F.normalize(d.z, dim=2).flatten(1)))
            per_draw[2].add_(d.z.norm(dim=2).sum(1))

        mean = self._mean_features(model, images, add_draw)
        sim = torch.stack([indices["z"][s].max(mean.z[:, s]) for s in range(k)], dim=1)
        csi = (sim * self.weight_sim_ + mean.logit * self.weight_shift_).mean(1)
        h = F.normalize(mean.h, dim=2)
        feat = torch.stack([indices["h"][s].max(h[:, s]) for s in range(k)], dim=1).mean(1)
        head = mean.loglik.mean(1)
        paper, cos, norm = (per_draw / self.cfg.ensemble).cpu()
        scores = {"paper": paper, "csi": csi.cpu(), "feat": feat.cpu(), "head": head.cpu()}
        if self.standard_ is not None:
            x = pixels(images).to(self.bank_x_.device)
            pix = -nearest_distance(x, self.bank_x_, self.cfg.chunk)
            parts = {"feat": feat, "head": head, "pix": pix}
            scores["pix"] = pix.cpu()
            for name in COMBINED:
                scores[name] = combined(name, parts, self.standard_, self.cfg.head_weight).cpu()
        return {**scores, "cos": cos, "norm": norm}


_PARTS = ("feat", "head", "pix")  # the order of ``Scorer.standard_``'s (mean, std) pairs


def combined(name: str, parts: dict[str, Tensor], standard: Tensor, head_weight: float) -> Tensor:
    """Score ``name`` of ``COMBINED``: the sum of its parts, each standardised by the
    training images' mean and standard deviation (``standard``), ``head`` weighted by
    ``head_weight``."""
    stats = standard.to(parts["feat"]).view(len(_PARTS), 2)
    total = torch.zeros_like(parts["feat"])
    for part in name.split("+"):
        mean, std = stats[_PARTS.index(part)]
        weight = head_weight if part == "head" else 1.0
        total = total + weight * (parts[part] - mean) / std
    return total
