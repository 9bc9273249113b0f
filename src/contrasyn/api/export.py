"""ONNX export of the feature extractor F, and a scorer that runs it without PyTorch.

``export_onnx(detector, folder)`` writes ``folder/model.onnx`` next to the detector's saved
``model.safetensors`` + ``model.json`` (saving them first when the folder has none). The ONNX
graph is F alone: images (N, C, S, S) float in [0, 1] -> ``h`` (penultimate), ``z``
(projection, unnormalised), ``shift`` (rotation logits), with a dynamic batch axis.

``OnnxDetector(folder)`` scores images with numpy + onnxruntime + safetensors only: it
reads the bank and weights from ``model.safetensors``, the config, threshold and score name
from ``model.json``, and runs the *deterministic* test-time transform: the K rotations
(shift-major, as ``rotate_shifts``), no flip and no random T, one pass (R = 1). That is
``ScoreConfig(augment=False, ensemble=1)``; ``torch_deterministic_scores`` computes the same
scores with PyTorch so an export can be verified. A detector fitted with ``augment=True``
keeps its bank of augmented training features, so its deterministic scores differ from
``Detector.score_samples`` (and its threshold was set with augmented scores); fit with
``augment=False`` for a detector whose PyTorch and ONNX scores are the same.

``model.onnx`` records a digest of the network weights it was exported from; loading refuses
an ONNX file whose weights are not those in ``model.safetensors`` (e.g. the detector was
refitted and saved again without re-exporting).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contrasyn.checkpoint import DETECTOR_FORMAT, read_checkpoint
from contrasyn.config import from_dict
from contrasyn.errors import CheckpointError, ConfigError, DataError
from contrasyn.methods.csi_config import COMBINED, RunConfig, pixel_factor
from contrasyn.version import __version__

if TYPE_CHECKING:
    from contrasyn.api.detector import Detector

ONNX_FILE = "model.onnx"
# ONNX opset 18 is the one torch's ONNX op library (torchlib) is written for, so the dynamo
# exporter emits it directly, without its opset version-conversion pass. F needs only Conv,
# Gemm, Relu, ReduceMean, Add, Sub, Div and Reshape; onnxruntime >= 1.14 implements opset 18,
# and >= 1.18 reads the IR version 10 files the exporter writes.
OPSET = 18
INPUT, OUTPUTS = "images", ("h", "z", "shift")
_DIGEST_KEY = "contrasyn.weights_sha256"
_BANK = ("bank_z", "bank_h", "weight_sim", "weight_shift")
_LATER = ("standard", "bank_x")


def _weights_digest(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 of the network weights (the ``model.*`` entries), names, dtypes and shapes."""
    digest = hashlib.sha256()
    for name in sorted(k for k in tensors if k.startswith("model.")):
        a = np.ascontiguousarray(tensors[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}\n".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def max_inner_product(queries: np.ndarray, bank: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``max_j <queries[i], bank[j]>`` for every i, holding at most chunk x chunk products
    (numpy twin of ``contrasyn.methods.csi.score.max_inner_product``)."""
    if queries.shape[1] != bank.shape[1]:
        raise ValueError(f"dimension mismatch: queries {queries.shape[1]}, bank {bank.shape[1]}")
    out = np.empty(len(queries), dtype=queries.dtype)
    for i in range(0, len(queries), chunk):
        q = queries[i : i + chunk]
        best = np.full(len(q), -np.inf, dtype=queries.dtype)
        for j in range(0, len(bank), chunk):
            np.maximum(best, (q @ bank[j : j + chunk].T).max(axis=1), out=best)
        out[i : i + chunk] = best
    return out


def _normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``torch.nn.functional.normalize`` along the last axis."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


# -- export (needs torch, onnx, onnxscript) ------------------------------------------------

# What torch's exporter says about itself on every normal export (torch 2.13), none of it
# about the model: torch.export's pytree code warns that its own ``isinstance(treespec,
# LeafSpec)`` is deprecated (a FutureWarning attributed to copyreg), and the ONNX op registry
# logs one warning per torchvision operator when torchvision is not installed.
_TORCH_FUTURE_WARNINGS = r".*\b(LeafSpec|TreeSpec)\b.*"
_TORCH_EXPORT_LOGGERS = ("torch.onnx._internal.exporter._registration",)


@contextlib.contextmanager
def _quiet_torch_export():
    """Around ``torch.onnx.export`` only: drop the FutureWarnings torch raises about its own
    internals (by message, and any attributed to a torch module) and the registry's
    torchvision log lines; every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _TORCH_FUTURE_WARNINGS, FutureWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch(\.|$)")
        loggers = [logging.getLogger(name) for name in _TORCH_EXPORT_LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def export_onnx(detector: Detector, path: str | Path) -> Path:
    """Write F of a fitted ``detector`` to ``path/model.onnx`` and return ``path``.

    ``path`` becomes a complete model folder: the detector is saved there first when
    ``path/model.json`` is absent; an existing save must hold this detector's network
    (otherwise ``CheckpointError``: save the detector there again, or use another folder).
    The graph takes any batch size and runs in fp32 on the CPU provider.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
        import torch
    except ImportError as e:
        raise ConfigError(
            f"ONNX export needs torch, onnx and onnxscript ({e}): pip install 'contrasyn[onnx]'"
        ) from e
    from contrasyn.checkpoint import atomic_write

    network = detector.model_  # not fitted, or a baseline (no network F): one clear ConfigError
    path = Path(path)
    if not (path / "model.json").is_file():
        detector.save(path)
    saved, _ = read_checkpoint(path / "model", "numpy")
    weights = {
        f"model.{k}": v.detach().cpu().contiguous().numpy() for k, v in network.state_dict().items()
    }
    digest = _weights_digest(weights)
    if _weights_digest(saved) != digest:
        raise CheckpointError(
            f"{path} holds the save of another network than this detector's; call "
            "detector.save(path) first, or export to a new folder"
        )

    cfg = detector.config_.train
    model = copy.deepcopy(network).float().cpu()
    model = model.to(memory_format=torch.contiguous_format).eval()
    example = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size)
    with _quiet_torch_export():
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )

    def write(tmp: str) -> None:
        program.save(tmp, external_data=False)
        proto = onnx.load(tmp)
        onnx.helper.set_model_props(
            proto,
            {
                _DIGEST_KEY: digest,
                "contrasyn.version": __version__,
                "contrasyn.num_shifts": str(cfg.num_shifts),
            },
        )
        proto.doc_string = (
            "contrasyn feature extractor F: images (N, C, S, S) in [0, 1] -> "
            "h (penultimate), z (projection), shift (rotation logits)"
        )
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)

    atomic_write(path / ONNX_FILE, write)
    return path


def torch_deterministic_scores(detector: Detector, images: Any) -> dict[str, np.ndarray]:
    """Every normality score of ``images`` with PyTorch under the test-time transform
    ``OnnxDetector`` runs (K rotations only, one pass), against the detector's bank, in fp32.

    ``images``: float (N, C, S, S) in [0, 1] as a numpy array or tensor (or anything
    ``Detector.score_samples`` accepts). Compare with ``OnnxDetector(folder).scores(images)``
    to verify an export.
    """
    import torch

    from contrasyn.methods.csi.score import Scorer

    bank = detector.scorer_.state_tensors()  # not fitted, or a baseline: one clear ConfigError
    if isinstance(images, np.ndarray) and images.dtype.kind == "f":
        images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    x, _ = detector._images(images, detector.input_)
    train_cfg = dataclasses.replace(detector.config_.train, precision="fp32")
    # The exported graph searches the bank exactly: so does the reference it is checked against.
    score_cfg = dataclasses.replace(
        detector.config_.score, augment=False, ensemble=1, index="exact"
    )
    scorer = Scorer(train_cfg, score_cfg).load_state(bank)
    return {k: v.numpy() for k, v in scorer.score_samples(detector.model_, x).items()}


# -- runtime (numpy + onnxruntime + safetensors) --------------------------------------------


class OnnxDetector:
    """A saved + exported detector run by onnxruntime: ``score_samples`` (higher = more
    normal), ``anomaly_score``, ``decision_function`` and ``predict`` (+1 normal / -1
    anomalous at the saved threshold) for the detector's score, as ``Detector`` offers them,
    under the deterministic transform (see the module docstring). Images are float numpy
    arrays (N, C, S, S) in [0, 1]. ``providers``/``threads`` go to onnxruntime (``threads``
    None: its default, all cores)."""

    def __init__(
        self,
        path: str | Path,
        providers: list[str] | None = None,
        threads: int | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ConfigError(
                "OnnxDetector needs onnxruntime: pip install 'contrasyn[onnx]'"
            ) from e
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such model folder")
        tensors, meta = read_checkpoint(path / "model", "numpy")
        if meta.get("format") != DETECTOR_FORMAT:
            raise CheckpointError(
                f"{path}: not a contrasyn detector (format {meta.get('format')!r})"
            )
        try:
            cfg = from_dict(RunConfig, meta["config"])
            threshold = meta["threshold"]
            if threshold is not None and (
                isinstance(threshold, bool) or not np.isfinite(float(threshold))
            ):
                raise ValueError(f"threshold must be a finite number or null, got {threshold!r}")
            self.threshold_ = None if threshold is None else float(threshold)
            bank = {name: np.asarray(tensors[f"scorer.{name}"], np.float32) for name in _BANK}
            # saved since the combined scores exist; older models score without them
            bank.update(
                {name: np.asarray(tensors[f"scorer.{name}"], np.float32) for name in _LATER}
                if all(f"scorer.{name}" in tensors for name in _LATER)
                else {}
            )
            if not all(np.isfinite(b).all() for b in bank.values()):
                raise ValueError("the bank holds non-finite values")
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise CheckpointError(f"{path}: model files are inconsistent ({e})") from e
        k = cfg.train.num_shifts
        bank_z, bank_h = bank["bank_z"], bank["bank_h"]
        if (
            bank_z.ndim != 3
            or bank_h.ndim != 3
            or bank_z.shape[:2] != bank_h.shape[:2]
            or bank_z.shape[1] != k
            or bank["weight_sim"].shape != (k,)
            or bank["weight_shift"].shape != (k,)
            or ("standard" in bank and bank["standard"].shape != (6,))
            or (
                "bank_x" in bank and (bank["bank_x"].ndim != 2 or len(bank["bank_x"]) < len(bank_z))
            )
        ):
            raise CheckpointError(f"{path}: the bank's shapes do not fit {k} shifts")

        onnx_path = path / ONNX_FILE
        if not onnx_path.is_file():
            raise CheckpointError(
                f"{onnx_path}: missing; write it with contrasyn.api.export.export_onnx(detector, "
                f"{str(path)!r})"
            )
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(
                str(onnx_path), options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail...)
            raise CheckpointError(f"{onnx_path}: not a loadable ONNX model ({e})") from e
        props = session.get_modelmeta().custom_metadata_map
        if props.get(_DIGEST_KEY) != _weights_digest(tensors):
            raise CheckpointError(
                f"{onnx_path} was not exported from the network in "
                f"{path / 'model.safetensors'} (re-export with export_onnx)"
            )
        inputs = session.get_inputs()
        expected = [cfg.train.channels, cfg.train.image_size, cfg.train.image_size]
        names = [o.name for o in session.get_outputs()]
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != expected or names != list(OUTPUTS):
            raise CheckpointError(f"{onnx_path}: inputs/outputs do not match {path}/model.json")

        self.path, self.config_, self.session_ = path, cfg, session
        self._input = inputs[0].name
        self.score_name = cfg.score.score
        self.n_train_ = len(bank_z)
        # shift-major copies of the bank, so each per-shift search reads contiguous memory
        self._bank_flat = bank_z.reshape(len(bank_z), -1)
        self._bank_z = np.ascontiguousarray(bank_z.transpose(1, 0, 2))
        self._bank_h = np.ascontiguousarray(bank_h.transpose(1, 0, 2))
        self._weight_sim, self._weight_shift = bank["weight_sim"], bank["weight_shift"]
        self._standard, self._bank_x = bank.get("standard"), bank.get("bank_x")
        if self._bank_x is not None:
            side = cfg.train.image_size // pixel_factor(cfg.train.image_size)
            if self._bank_x.shape[1] != cfg.train.channels * side * side:
                raise CheckpointError(f"{path}: the pixel bank does not fit {side}x{side} images")

    def _check(self, images: Any) -> np.ndarray:
        t = self.config_.train
        expected = (t.channels, t.image_size, t.image_size)
        if not isinstance(images, np.ndarray) or images.dtype.kind != "f":
            got = f"{images.dtype} array" if isinstance(images, np.ndarray) else type(images)
            raise DataError(f"images must be a float numpy array (N, C, H, W), got {got}")
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise DataError(
                f"images must be (N, {', '.join(map(str, expected))}), got {images.shape}"
            )
        if images.size and not (
            np.isfinite(images).all() and 0 <= images.min() <= images.max() <= 1
        ):
            raise DataError("images must be floats in [0, 1]")
        return np.ascontiguousarray(images, dtype=np.float32)

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per image and shift: z (N, K, d), h (N, K, e), the true shift's logit and its
        log-probability under the shift head (N, K), in batches of ``score.batch_size``
        images (K times as many rows through F)."""
        x = self._check(images)
        k, batch = self.config_.train.num_shifts, self.config_.score.batch_size
        zs, hs, logits, logliks = [], [], [], []
        for i in range(0, len(x), batch):
            b = len(x[i : i + batch])
            # shift-major rows (r * b + i), as contrasyn.methods.csi.augment.rotate_shifts
            views = np.concatenate([np.rot90(x[i : i + batch], r, axes=(2, 3)) for r in range(k)])
            h, z, shift = self.session_.run(
                list(OUTPUTS), {self._input: np.ascontiguousarray(views)}
            )
            rows = np.arange(k * b)
            true_logit = shift[rows, rows // b]
            top = shift.max(axis=1, keepdims=True)
            log_total = np.log(np.exp(shift - top).sum(axis=1)) + top[:, 0]
            zs.append(z.reshape(k, b, -1).transpose(1, 0, 2))
            hs.append(h.reshape(k, b, -1).transpose(1, 0, 2))
            logits.append(true_logit.reshape(k, b).T)
            logliks.append((true_logit - log_total).reshape(k, b).T)
        if not zs:
            empty = np.zeros((0, k), np.float32)
            return (
                np.zeros((0, k, self._bank_z.shape[2]), np.float32),
                np.zeros((0, k, self._bank_h.shape[2]), np.float32),
                empty,
                empty,
            )
        return (
            np.concatenate(zs),
            np.concatenate(hs),
            np.concatenate(logits),
            np.concatenate(logliks),
        )

    def scores(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every normality score (as ``Scorer.score_samples``; ``pix`` and the combined
        scores where the model has their bank)."""
        z, h, logit, loglik = self.features(images)
        chunk, k = self.config_.score.chunk, self.config_.train.num_shifts
        paper = max_inner_product(
            z.reshape(len(z), self._bank_flat.shape[1]), self._bank_flat, chunk
        )
        sim = np.stack([max_inner_product(z[:, s], self._bank_z[s], chunk) for s in range(k)], 1)
        csi = (sim * self._weight_sim + logit * self._weight_shift).mean(1)
        hn = _normalize(h)
        feat = np.stack(
            [max_inner_product(hn[:, s], self._bank_h[s], chunk) for s in range(k)], 1
        ).mean(1)
        flat = _normalize(z).reshape(len(z), self._bank_flat.shape[1])
        cos = max_inner_product(flat, self._bank_flat, chunk)
        norm = np.linalg.norm(z, axis=2).sum(1)
        head = loglik.mean(1)
        out = {
            "paper": paper,
            "csi": csi.astype(np.float32),
            "feat": feat.astype(np.float32),
            "head": head.astype(np.float32),
            "cos": cos.astype(np.float32),
            "norm": norm.astype(np.float32),
        }
        if self._standard is not None:
            x = self._check(images)
            f = pixel_factor(x.shape[-1])  # as contrasyn.methods.csi.score.pixels
            side = x.shape[-1] // f
            cut = x[..., : side * f, : side * f]
            pooled = (
                cut.reshape(*x.shape[:2], side, f, side, f)
                .mean((3, 5))
                .reshape(len(x), self._bank_x.shape[1])
            )
            a = np.concatenate([2 * pooled, -np.ones((len(x), 1), np.float32)], 1)
            b = np.concatenate([self._bank_x, (self._bank_x**2).sum(1, keepdims=True)], 1)
            best = max_inner_product(a, b, chunk)
            pix = -np.sqrt(np.maximum((pooled**2).sum(1) - best, 0))
            parts = {"feat": feat, "head": head, "pix": pix}
            stats = self._standard.reshape(3, 2)
            out["pix"] = pix.astype(np.float32)
            for name in COMBINED:
                total = np.zeros(len(x))
                for part in name.split("+"):
                    mean, std = stats[("feat", "head", "pix").index(part)]
                    weight = self.config_.score.head_weight if part == "head" else 1.0
                    total = total + weight * (parts[part] - mean) / std
                out[name] = total.astype(np.float32)
        return out

    def score_samples(self, images: np.ndarray) -> np.ndarray:
        """Normality M(x) of each image under the detector's score: higher = more normal."""
        return self.scores(images)[self.score_name]

    def anomaly_score(self, images: np.ndarray) -> np.ndarray:
        """-M(x): higher = more anomalous."""
        return -self.score_samples(images)

    def decision_function(self, images: np.ndarray) -> np.ndarray:
        """``threshold_ - anomaly_score``: negative for anomalies, >= 0 for normal images."""
        if self.threshold_ is None:
            raise ConfigError(f"{self.path}: fitted with holdout=0, it has no threshold")
        return self.threshold_ - self.anomaly_score(images)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """+1 for normal, -1 for anomalous at the saved threshold; a non-finite score is
        anomalous (as ``Detector.predict`` has it)."""
        decision = self.decision_function(images)
        return np.where(np.isfinite(decision) & (decision >= 0), 1, -1)

    def __repr__(self) -> str:
        return (
            f"OnnxDetector({str(self.path)!r}, score={self.score_name!r}, "
            f"threshold_={self.threshold_})"
        )
