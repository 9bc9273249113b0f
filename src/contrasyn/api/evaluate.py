"""Labelled evaluation of a fitted detector: metrics, per-folder AUROC and an HTML report.

``Detector.evaluate`` and ``contrasyn evaluate MODEL DATA`` score labelled images (a folder
in anomalib's ``Folder`` layout, ``contrasyn.data.labelled``, or images with labels) and
give, anomalies being the positive class (``contrasyn.api.metrics``):

- ``auroc``, ``aupr`` (average precision) and ``fpr95`` (the fraction of anomalies accepted
  when the threshold keeps 95% of the normal images);
- at the model's saved threshold: the confusion counts (``tp`` anomalies flagged, ``fn``
  anomalies missed, ``fp`` normal images flagged, ``tn`` normal images passed), precision,
  recall, F1 and the false-alarm rate seen on these normal images;
- for reference, the threshold with the best F1 on these very images (chosen on the labels,
  so its F1 is optimistic), with the share of the model's held-out normal images it would
  flag, the rate to give ``contrasyn threshold`` to move near it;
- the AUROC of the normal images against each anomalous folder alone.

A non-finite anomaly score (a broken input or model) counts as the most anomalous score in
the metrics, as it is flagged.

``write_report`` writes ``report.html`` with its figures in ``report/``: the metrics, the ROC
curve with the two thresholds' operating points, the score histograms per folder with the
thresholds drawn, and pictures of the most anomalous images, the borderline ones (nearest the
threshold on either side) and the mistakes, each with its anomaly map when maps are given.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from contrasyn.api import metrics
from contrasyn.errors import DataError
from contrasyn.htmlpage import FIGURES, Section, figure, save_figure, table, write_page
from contrasyn.textfiles import csv_text, write_text


class Calibrated(Protocol):
    """What the evaluation needs of a fitted detector (``contrasyn.api.detector.Detector`` is
    one): its threshold and held-out normal scores, read but never changed."""

    threshold_: float | None
    holdout_scores_: np.ndarray
    flag_rate: float
    score_name_: str
    method_: Any

    @property
    def decision_scores_(self) -> np.ndarray: ...

    @property
    def threshold_probability_(self) -> float: ...

    def probability_of(self, anomaly_scores: np.ndarray) -> np.ndarray: ...

    def is_anomalous(self, anomaly_scores: np.ndarray) -> np.ndarray: ...


SHOWN = 8  # images per picture section


def _rankable(scores: np.ndarray) -> np.ndarray:
    """Scores the metrics can rank: NaN and +inf above every finite score, -inf below."""
    s = np.asarray(scores, dtype=np.float64).copy()
    finite = np.isfinite(s)
    if finite.all():
        return s
    lo, hi = (s[finite].min(), s[finite].max()) if finite.any() else (0.0, 0.0)
    s[np.isnan(s) | (s == np.inf)] = hi + 1.0
    s[s == -np.inf] = lo - 1.0
    return s


def best_f1(is_anomaly: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The threshold t (on the anomaly score; above it: anomalous) with the largest F1 over
    every distinct score, and its F1, precision and recall. Ties: the highest t."""
    y = np.asarray(is_anomaly).astype(bool)
    s = _rankable(scores)
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    candidates = np.unique(s)
    candidates = np.r_[np.nextafter(candidates[0], -np.inf), candidates]
    tp = len(pos) - np.searchsorted(pos, candidates, side="right")
    fp = len(neg) - np.searchsorted(neg, candidates, side="right")
    precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=tp + fp > 0)
    recall = tp / max(len(pos), 1)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros(len(tp)),
        where=precision + recall > 0,
    )
    i = len(f1) - 1 - int(np.argmax(f1[::-1]))
    return {
        "threshold": float(candidates[i]),
        "f1": float(f1[i]),
        "precision": float(precision[i]),
        "recall": float(recall[i]),
    }


def confusion(is_anomaly: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Counts and rates of flagged vs labelled (anomalies positive)."""
    y, f = np.asarray(is_anomaly).astype(bool), np.asarray(flagged).astype(bool)
    tp, fn = int((y & f).sum()), int((y & ~f).sum())
    fp, tn = int((~y & f).sum()), int((~y & ~f).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "tn": tn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarm_rate": fp / (fp + tn) if fp + tn else 0.0,
        "accuracy": (tp + tn) / len(y),
    }


@dataclass
class Evaluation:
    """What ``Detector.evaluate`` measured (module docstring). ``scores`` are anomaly scores;
    ``probability`` is ``anomaly_probability`` (None for a model without held-out images)."""

    scores: np.ndarray
    is_anomaly: np.ndarray
    groups: list[str]
    normal_group: str
    metrics: dict[str, float]
    at_threshold: dict[str, Any] | None
    best_f1: dict[str, float]
    per_group: list[dict[str, Any]]
    model: dict[str, Any]
    probability: np.ndarray | None = None
    flagged: np.ndarray | None = None
    paths: list[str] | None = None
    data: str | None = None
    images: np.ndarray | None = field(default=None, repr=False)  # uint8 (N, S, S, C)

    def as_dict(self) -> dict[str, Any]:
        """Everything but the per-image rows, JSON-ready (``metrics.json``)."""
        return {
            "data": self.data,
            "model": self.model,
            "images": len(self.scores),
            "normal": int((self.is_anomaly == 0).sum()),
            "anomalous": int((self.is_anomaly == 1).sum()),
            "normal_folder": self.normal_group,
            "metrics": self.metrics,
            "at_threshold": self.at_threshold,
            "best_f1": self.best_f1,
            "per_folder": self.per_group,
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per image: path, folder, is_anomaly, anomaly_score, anomaly_probability,
        label (``anomaly``/``normal`` at the saved threshold; empty without one)."""
        out = []
        for i, s in enumerate(self.scores):
            out.append(
                {
                    "path": self.paths[i] if self.paths is not None else str(i),
                    "folder": self.groups[i],
                    "is_anomaly": int(self.is_anomaly[i]),
                    "anomaly_score": float(s),
                    "anomaly_probability": (
                        "" if self.probability is None else float(self.probability[i])
                    ),
                    "label": (
                        "" if self.flagged is None else ("anomaly" if self.flagged[i] else "normal")
                    ),
                }
            )
        return out

    def summary(self) -> list[str]:
        """The result in a few lines, for people."""
        m, n_norm = self.metrics, int((self.is_anomaly == 0).sum())
        n_anom = len(self.scores) - n_norm
        lines = [
            f"evaluated {len(self.scores)} images: {n_norm} normal ({self.normal_group}), "
            f"{n_anom} anomalous ({len(self.per_group)} folder"
            f"{'s' if len(self.per_group) != 1 else ''})",
            f"AUROC {m['auroc']:.4f}  AUPR {m['aupr']:.4f}  FPR@95%TPR {m['fpr95']:.4f}",
        ]
        t = self.at_threshold
        if t is None:
            lines.append("no saved threshold (the model was trained with --holdout 0)")
        else:
            lines.append(
                f"at the saved threshold {t['threshold']:.6g} (false-alarm rate "
                f"{t['target_rate'] * 100:g}%): F1 {t['f1']:.3f}, precision "
                f"{t['precision']:.3f}, recall {t['recall']:.3f}; {t['tp']} of {t['tp'] + t['fn']} "
                f"anomalies flagged, {t['fp']} of {t['fp'] + t['tn']} normal images flagged"
            )
        b = self.best_f1
        ref = f"best F1 {b['f1']:.3f} at threshold {b['threshold']:.6g} (chosen on these labels)"
        if b.get("holdout_rate") is not None:
            ref += (
                f"; it flags {b['holdout_rate'] * 100:.3g}% of the held-out normal images: "
                f"contrasyn threshold MODEL --false-alarm-rate {max(b['holdout_rate'], 1e-4):.3g} "
                "moves near it"
            )
        lines.append(ref)
        lines.append(
            "AUROC per anomalous folder: "
            + ", ".join(f"{g['folder']} {g['auroc']:.4f} ({g['n']})" for g in self.per_group)
        )
        return lines


def evaluate_scores(
    detector: Calibrated,
    scores: np.ndarray,
    is_anomaly: np.ndarray,
    groups: list[str] | None = None,
    normal_group: str = "normal",
    paths: list[str] | None = None,
) -> Evaluation:
    """The ``Evaluation`` of anomaly ``scores`` of labelled images (``is_anomaly`` 1 for
    anomalies) under ``detector``'s threshold and held-out images."""
    y = np.asarray(is_anomaly)
    if y.ndim != 1 or len(y) != len(scores):
        raise DataError(f"{len(scores)} images but labels of shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 1 (anomalous) or 0 (normal)")
    if y.all() or not y.any():
        raise DataError(
            "evaluation needs normal and anomalous images: "
            f"got {int((y == 0).sum())} normal and {int(y.sum())} anomalous"
        )
    y = y.astype(np.int64)
    if groups is None:
        groups = [normal_group if v == 0 else "anomalous" for v in y]
    if len(groups) != len(y):
        raise DataError(f"{len(y)} images but {len(groups)} group names")
    ranked = _rankable(scores)
    result = metrics.evaluate(y, ranked)
    result["non_finite"] = int((~np.isfinite(np.asarray(scores, dtype=np.float64))).sum())
    per_group = []
    normal = y == 0
    for name in dict.fromkeys(g for g, v in zip(groups, y, strict=True) if v == 1):
        keep = np.array([g == name for g in groups]) & (y == 1)
        if not keep.any():
            continue
        both = normal | keep
        per_group.append(
            {
                "folder": name,
                "n": int(keep.sum()),
                "auroc": metrics.auroc(y[both], ranked[both]),
                "mean_anomaly_score": float(np.mean(ranked[keep])),
            }
        )
    threshold = detector.threshold_
    has_holdout = len(detector.holdout_scores_) > 0
    probability = detector.probability_of(scores) if has_holdout else None
    flagged = at = None
    if threshold is not None:
        flagged = detector.is_anomalous(scores)
        at = {
            "threshold": float(threshold),
            "target_rate": float(detector.flag_rate),
            "threshold_probability": detector.threshold_probability_,
            **confusion(y, flagged),
        }
        for g in per_group:
            keep = np.array([name == g["folder"] for name in groups]) & (y == 1)
            g["flagged"] = float(flagged[keep].mean())
    best = best_f1(y, scores)
    best["holdout_rate"] = (
        float(np.mean(detector.decision_scores_ > best["threshold"])) if has_holdout else None
    )
    model = {
        "method": detector.method_.name,
        "score": detector.score_name_,
        "threshold": threshold,
        "false_alarm_rate": float(detector.flag_rate),
        "n_holdout": int(len(detector.holdout_scores_)),
    }
    return Evaluation(
        scores=np.asarray(scores, dtype=np.float64),
        is_anomaly=y,
        groups=list(groups),
        normal_group=normal_group,
        metrics=result,
        at_threshold=at,
        best_f1=best,
        per_group=per_group,
        model=model,
        probability=probability,
        flagged=flagged,
        paths=paths,
    )


# -- files ----------------------------------------------------------------------------------


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = ["path", "folder", "is_anomaly", "anomaly_score", "anomaly_probability", "label"]
    return csv_text(columns, rows)


def _json_ready(obj: Any) -> Any:
    """NaN and infinities as null (JSON has neither)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    return obj


def write_files(evaluation: Evaluation, out: Path) -> list[Path]:
    """``metrics.json`` and ``scores.csv`` (one row per image) into ``out``, atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "metrics.json", json.dumps(_json_ready(evaluation.as_dict()), indent=2) + "\n")
    write_text(out / "scores.csv", _csv(evaluation.rows()))
    return [out / "metrics.json", out / "scores.csv"]


# -- the report ----------------------------------------------------------------------------


def _roc_figure(ev: Evaluation, folder: Path) -> str:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(ev.is_anomaly, _rankable(ev.scores))
    fig = figure(4.6, 4.2)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color="tab:blue", label=f"ROC (AUROC {ev.metrics['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="chance")
    if ev.at_threshold is not None:
        t = ev.at_threshold
        ax.plot(t["false_alarm_rate"], t["recall"], "o", color="tab:red", label="saved threshold")
    b = ev.best_f1
    flagged = _rankable(ev.scores) > b["threshold"]
    normal = ev.is_anomaly == 0
    ax.plot(
        flagged[normal].mean(),
        b["recall"],
        "s",
        mfc="none",
        color="tab:green",
        label="best-F1 threshold",
    )
    ax.set_xlabel("normal images flagged (false-positive rate)")
    ax.set_ylabel("anomalies flagged (true-positive rate)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return save_figure(fig, folder, "roc.png")


def _histogram_figure(ev: Evaluation, folder: Path) -> str:
    from matplotlib import colormaps

    s = _rankable(ev.scores)
    bins = np.histogram_bin_edges(s, bins=min(40, max(10, len(s) // 5)))
    fig = figure(7.0, 3.6)
    ax = fig.add_subplot()
    names = [ev.normal_group, *(g["folder"] for g in ev.per_group)]
    cmap = colormaps["tab10"]
    for i, name in enumerate(names):
        keep = np.array([g == name for g in ev.groups]) & (
            (ev.is_anomaly == 0) if i == 0 else (ev.is_anomaly == 1)
        )
        label = f"{name} ({'normal' if i == 0 else 'anomalous'}, {int(keep.sum())})"
        ax.hist(s[keep], bins=bins, histtype="step", lw=1.6, color=cmap(i % 10), label=label)
    if ev.at_threshold is not None:
        ax.axvline(ev.at_threshold["threshold"], color="tab:red", lw=1.5, label="saved threshold")
    ax.axvline(
        ev.best_f1["threshold"], color="tab:green", lw=1.2, ls="--", label="best-F1 threshold"
    )
    ax.set_xlabel("anomaly score (higher = more anomalous)")
    ax.set_ylabel("images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, folder, "histograms.png")


def shown_indices(ev: Evaluation) -> list[int]:
    """Every image the report shows (those that get an anomaly map)."""
    return sorted({i for _, _, indices in _pick(ev).values() for i in indices})


def _pick(ev: Evaluation) -> dict[str, tuple[str, str, list[int]]]:
    """The picture sections: title, caption, image indices."""
    s = _rankable(ev.scores)
    order = np.argsort(-s, kind="stable")
    sections = {
        "most-anomalous": (
            "Most anomalous images",
            f"The {min(SHOWN, len(s))} images with the highest anomaly scores, highest first.",
            [int(i) for i in order[:SHOWN]],
        )
    }
    cut = ev.at_threshold["threshold"] if ev.at_threshold is not None else ev.best_f1["threshold"]
    which = "saved" if ev.at_threshold is not None else "best-F1"
    above = [int(i) for i in order if s[i] > cut][::-1][: SHOWN // 2][::-1]
    below = [int(i) for i in order if s[i] <= cut][: SHOWN // 2]
    sections["borderline"] = (
        "Borderline images",
        f"The images scored nearest the {which} threshold ({cut:.6g}): up to {SHOWN // 2} just "
        f"above it (flagged), then up to {SHOWN // 2} just below it (passed), highest first.",
        above + below,
    )
    if ev.flagged is not None:
        false_alarms = [int(i) for i in order if ev.flagged[i] and ev.is_anomaly[i] == 0]
        missed = [int(i) for i in order[::-1] if not ev.flagged[i] and ev.is_anomaly[i] == 1]
        sections["false-alarms"] = (
            "False alarms",
            f"Normal images flagged at the saved threshold, most anomalous first "
            f"({len(false_alarms)} in all; up to {SHOWN} shown).",
            false_alarms[:SHOWN],
        )
        sections["missed"] = (
            "Missed anomalies",
            f"Anomalous images passed at the saved threshold, most normal-looking first "
            f"({len(missed)} in all; up to {SHOWN} shown).",
            missed[:SHOWN],
        )
    return sections


def _tiles(
    ev: Evaluation, indices: list[int], maps: dict[int, np.ndarray] | None, folder: Path, key: str
) -> str:
    from PIL import Image

    from contrasyn.api.maps import as_rgb, map_panel, save_png

    if not indices:
        return "<p class='note'>None.</p>"
    cells = []
    for rank, i in enumerate(indices):
        image = ev.images[i]
        if maps is not None and i in maps:
            pixels = map_panel(image, maps[i])
        else:
            rgb = as_rgb(image)
            side = max(1, -(-128 // rgb.shape[0])) * rgb.shape[0]
            pixels = np.asarray(Image.fromarray(rgb).resize((side, side), Image.NEAREST))
        name = f"{key}-{rank:02d}.png"
        save_png(folder / name, pixels)
        truth = "anomalous" if ev.is_anomaly[i] else "normal"
        label = ""
        if ev.flagged is not None:
            label = " &middot; flagged" if ev.flagged[i] else " &middot; passed"
        prob = ""
        if ev.probability is not None:
            prob = f" &middot; anomaly_probability {ev.probability[i]:.3f}"
        where = html.escape(Path(ev.paths[i]).name if ev.paths is not None else f"image {i}")
        caption = (
            f"{where}<br>{html.escape(ev.groups[i])} ({truth}){label}<br>"
            f"score {ev.scores[i]:.5g}{prob}"
        )
        cells.append(
            f"<figure class='tile'><img src='{FIGURES}/{name}' alt='{where}'>"
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return "<div class='tiles'>" + "".join(cells) + "</div>"


def write_report(
    ev: Evaluation, out: Path, maps: dict[int, np.ndarray] | None = None, title: str | None = None
) -> Path:
    """``out/report.html`` and its figures in ``out/report/`` (module docstring), each file
    written atomically; figures left there by an earlier report are removed. ``maps``: image
    index -> anomaly map, drawn beside the images shown."""
    out = Path(out)
    folder = out / FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    roc = _roc_figure(ev, folder)
    hist = _histogram_figure(ev, folder)
    m, t, b = ev.metrics, ev.at_threshold, ev.best_f1
    sections: list[tuple[str, str, str]] = []
    summary_rows = [
        ["AUROC", m["auroc"]],
        ["AUPR (average precision)", m["aupr"]],
        ["FPR@95%TPR (anomalies accepted when 95% of normal images pass)", m["fpr95"]],
    ]
    if m.get("non_finite"):
        summary_rows.append(["non-finite scores (counted as most anomalous)", m["non_finite"]])
    body = table(summary_rows, ["metric", "value"])
    body += (
        "<p>Anomalies are the positive class. "
        + html.escape(
            f"{len(ev.scores)} images: {int((ev.is_anomaly == 0).sum())} normal "
            f"({ev.normal_group}), {int(ev.is_anomaly.sum())} anomalous."
        )
        + "</p>"
    )
    sections.append(("metrics", "Metrics", body))
    if t is not None:
        body = table(
            [
                ["anomalous", t["tp"], t["fn"]],
                ["normal", t["fp"], t["tn"]],
            ],
            ["true \\ predicted", "flagged", "passed"],
        )
        body += table(
            [
                ["threshold (anomaly score)", t["threshold"]],
                ["target false-alarm rate", t["target_rate"]],
                ["false-alarm rate on these normal images", t["false_alarm_rate"]],
                ["precision", t["precision"]],
                ["recall", t["recall"]],
                ["F1", t["f1"]],
                ["accuracy", t["accuracy"]],
            ],
            ["at the saved threshold", "value"],
        )
    else:
        body = "<p class='note'>The model has no threshold (trained with holdout 0).</p>"
    ref = [["threshold", b["threshold"]], ["F1", b["f1"]], ["precision", b["precision"]]]
    ref.append(["recall", b["recall"]])
    if b.get("holdout_rate") is not None:
        ref.append(["held-out normal images it flags", b["holdout_rate"]])
    body += table(ref, ["best-F1 threshold, for reference (chosen on these labels)", "value"])
    sections.append(("threshold", "At the threshold", body))
    rows = [[g["folder"], g["n"], g["auroc"], g.get("flagged", "")] for g in ev.per_group]
    sections.append(
        (
            "folders",
            "AUROC per anomalous folder",
            table(rows, ["folder", "images", "AUROC vs normal", "share flagged"]),
        )
    )
    sections.append(
        (
            "roc",
            "ROC curve",
            f"<figure><img src='{roc}' alt='ROC curve'><figcaption>The share of anomalies "
            "flagged against the share of normal images flagged, over every threshold; the "
            "dot is the saved threshold, the square the best-F1 threshold.</figcaption></figure>",
        )
    )
    sections.append(
        (
            "histograms",
            "Score histograms",
            f"<figure><img src='{hist}' alt='score histograms'><figcaption>Anomaly scores of "
            "the normal folder and of each anomalous folder; the solid line is the saved "
            "threshold (above it: flagged), the dashed line the best-F1 threshold."
            "</figcaption></figure>",
        )
    )
    maps_note = (
        " Each image is shown beside its anomaly map (occlusion: bright where hiding the "
        "region lowers the score; scaled per image)."
        if maps
        else ""
    )
    for key, (heading, caption, indices) in _pick(ev).items():
        tiles = _tiles(ev, indices, maps, folder, key)
        sections.append((key, heading, f"<p>{html.escape(caption)}{maps_note}</p>{tiles}"))
    title = title or "contrasyn evaluation"
    model = ev.model
    intro = html.escape(
        f"Model: method {model['method']}, score {model['score']}; data: {ev.data or 'arrays'}."
    )
    write_page(out / "report.html", title, f"<p>{intro}</p>", [Section(*s) for s in sections])
    return out / "report.html"
