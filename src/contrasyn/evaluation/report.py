"""The HTML report of a benchmark folder: tables, charts and images on one page.

``write_report(out)`` reads only what the harness wrote (``results.jsonl``, each run's
``test_scores.npz``, ``metrics.jsonl``, ``settings.json``, sample grids, ``quality.jsonl``,
``preset-*.json``, ``environment.json``) and writes ``report.html`` with its figures in
``report/``, so every number and curve on the page can be traced to a file beside it and the
page can be rebuilt at any time (``contrasyn report DIR``). The only extra input is the
dataset, for the most normal and most anomalous test images; without it that part is left
out with a note.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from contrasyn.data.base import ImageDataset
from contrasyn.evaluation.results import (
    interval_table,
    markdown_table,
    paired_class_table,
    paired_matrix,
    read_jsonl,
    read_rows,
    run_path,
    summary_table,
)
from contrasyn.htmlpage import (
    FIGURES,
    Section,
    figure,
    markdown_to_html,
    panels,
    save_figure,
    write_page,
)
from contrasyn.methods.registry import method_class

# numeric metrics.jsonl fields that are bookkeeping, not losses
_NOT_LOSSES = {"step", "epoch", "lr", "seconds", "gen_step", "warmup_round"}
EXTREMES = 8  # most normal and most anomalous test images shown per method


def _colors(methods: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _auroc_chart(rows: list[dict], methods, classes, names, colors, folder: Path) -> str:
    fig = figure(max(8.0, 1.0 + 0.12 * len(methods) * (len(classes) + 1)), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    lows = []
    for i, m in enumerate(methods):
        per_class = []
        for c in classes:
            vals = [r["auroc"] for r in rows if r["method"] == m and r["normal_class"] == c]
            per_class.append((np.mean(vals), np.std(vals)) if vals else (np.nan, 0.0))
        means = [p[0] for p in per_class]
        complete = not np.isnan(means).any()
        means.append(float(np.mean(means)) if complete else np.nan)
        stds = [p[1] for p in per_class] + [0.0]
        x = np.arange(len(classes) + 1) + (i - (len(methods) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds, color=colors[m], label=m)
        lows.extend(v for v in means if not np.isnan(v))
    ax.set_xticks(np.arange(len(classes) + 1))
    ax.set_xticklabels([f"{c} {names[c]}" for c in classes] + ["mean"], rotation=30, ha="right")
    ax.set_ylim(max(0.0, min(lows) - 0.05), 1.0)
    ax.set_ylabel("AUROC (anomalies positive)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, folder, "auroc.png")


def _scores(out: Path, row: dict) -> dict[str, np.ndarray] | None:
    path = run_path(out, row) / "test_scores.npz"
    if not path.exists():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _roc_and_histograms(
    cells: dict[str, dict], scores: dict[str, dict], colors, title: str, folder: Path, stem: str
) -> tuple[str, str]:
    from sklearn.metrics import roc_auc_score, roc_curve

    roc = figure(5.0, 4.6)
    ax = roc.add_subplot()
    hist, axes = panels(len(cells), 3.2, 2.4)
    for a, (m, row) in zip(axes, cells.items(), strict=False):
        y = scores[m]["is_anomaly"].astype(bool)
        s = scores[m][row["score"]]
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, color=colors[m], label=f"{m} ({roc_auc_score(y, s):.3f})")
        bins = np.histogram_bin_edges(s, bins=40)
        a.hist(s[~y], bins, density=True, alpha=0.6, color="tab:green", label="normal")
        a.hist(s[y], bins, density=True, alpha=0.6, color="tab:red", label="anomalous")
        a.set_title(f"{m} ({row['score']})", fontsize="medium")
        a.set_yticks([])
        a.locator_params(axis="x", nbins=4)
    axes[0].legend(fontsize="small", loc="upper right")
    hist.suptitle(f"{title}: anomaly score (higher = more anomalous)")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, {title}")
    ax.legend(fontsize="small", loc="lower right")
    roc_src = save_figure(roc, folder, f"roc_{stem}.png")
    return roc_src, save_figure(hist, folder, f"hist_{stem}.png")


def _tile(image: np.ndarray, anomalous: bool, border: int = 2) -> np.ndarray:
    """A uint8 (H, W, C) image as RGB in a green (normal) or red (anomaly) frame."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    h, w = rgb.shape[:2]
    tile = np.empty((h + 2 * border, w + 2 * border, 3), np.uint8)
    tile[:] = (200, 30, 30) if anomalous else (30, 160, 30)
    tile[border : border + h, border : border + w] = rgb
    return tile


def _extremes(
    cells: dict[str, dict], scores: dict[str, dict], images: np.ndarray, title, folder, stem
) -> str:
    """Per method, the test images it finds most normal and most anomalous, framed by truth."""
    rows = []
    for m, row in cells.items():
        s, y = scores[m][row["score"]], scores[m]["is_anomaly"].astype(bool)
        order = np.argsort(s, kind="stable")
        picks = [*order[:EXTREMES], None, *order[::-1][:EXTREMES]]
        tiles = [_tile(images[i], bool(y[i])) if i is not None else None for i in picks]
        blank = np.full_like(next(t for t in tiles if t is not None), 255)
        rows.append(np.concatenate([t if t is not None else blank for t in tiles], axis=1))
    canvas = np.concatenate(rows, axis=0)
    fig = figure(0.5 * canvas.shape[1] / rows[0].shape[0] + 1.5, 0.5 * len(rows) + 0.8)
    ax = fig.add_subplot()
    ax.imshow(canvas, interpolation="nearest")
    h = rows[0].shape[0]
    ax.set_yticks([h * (i + 0.5) for i in range(len(rows))])
    ax.set_yticklabels(list(cells))
    ax.set_xticks([])
    ax.set_title(
        f"{title}: the {EXTREMES} most normal test images (left) and the {EXTREMES} most "
        "anomalous (right); frame green = normal class, red = anomaly",
        fontsize="small",
    )
    return save_figure(fig, folder, f"extremes_{stem}.png")


def _test_images(dataset: ImageDataset | None, stored: dict) -> np.ndarray | None:
    """The scored test images, if ``dataset`` is the one the scores were computed on."""
    if dataset is None:
        return None
    index = stored.get("test_index", np.arange(len(dataset.test_labels)))
    if len(index) != len(stored["labels"]) or index.max() >= len(dataset.test_labels):
        return None
    if not np.array_equal(dataset.test_labels[index], stored["labels"]):
        return None
    return dataset.test_images[index]


def _loss_curves(out: Path, method: str, cells: list[dict], names, folder: Path) -> str | None:
    """One panel per logged loss, one line per class (each class's first seed): the CSI
    family per optimiser step (and per warm-up round of its generator), the baselines per
    epoch. Curves of a few points get markers, so a one-epoch loss is a dot, not nothing."""
    curves: dict[str, dict[int, tuple[list, list]]] = {}
    axis: dict[str, str] = {}
    for row in cells:
        for rec in read_jsonl(run_path(out, row) / "metrics.jsonl"):
            if "warmup_round" in rec:
                phase, x, unit = "warm-up ", rec["warmup_round"], "warm-up round"
            elif "step" in rec:
                phase, x, unit = "", rec["step"], "step"
            else:
                phase, x, unit = f"{rec.get('phase', 'train')} ", rec.get("epoch"), "epoch"
            for key, value in rec.items():
                if key in _NOT_LOSSES or key == "phase" or not isinstance(value, int | float):
                    continue
                per_class = curves.setdefault(phase + key, {})
                axis[phase + key] = unit
                xs, ys = per_class.setdefault(row["normal_class"], ([], []))
                xs.append(x)
                ys.append(value)
    if not curves:
        return None
    fig, axes = panels(max(len(curves), 2), 3.4, 2.5)
    for a, (key, per_class) in zip(axes, curves.items(), strict=False):
        for c, (xs, ys) in sorted(per_class.items()):
            a.plot(
                xs, ys, lw=1, marker="o" if len(xs) <= 5 else None, ms=3, label=f"{c} {names[c]}"
            )
        a.set_title(key, fontsize="medium")
        a.set_xlabel(axis[key], fontsize="small")
    axes[0].legend(fontsize="x-small", loc="upper right")
    fig.suptitle(f"{method}: training losses")
    return save_figure(fig, folder, f"loss_{method.replace('+', '_')}.png")


def _earlier_figures(folder: Path, stem: str) -> str:
    """A class whose score files are gone (``test_scores.npz`` is not committed, say) keeps
    the figures an earlier build drew from them, said so; without any, a note says why."""
    names = [f"{kind}_{stem}.png" for kind in ("roc", "hist", "extremes")]
    kept = [n for n in names if (folder / n).exists()]
    if not kept:
        return "<p class=note>no score files (test_scores.npz) for this class</p>"
    images = "".join(f'<img src="{FIGURES}/{n}" alt="{n[:-4]}">' for n in kept)
    return (
        "<p class=note>drawn by an earlier build of this report: the score files they came "
        "from (test_scores.npz) are no longer in this folder, so they may show other cells "
        f"than the tables</p><div class=row>{images}</div>"
    )


def _first_seed_cells(rows: list[dict], c: int, methods: list[str]) -> dict[str, dict]:
    cells = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m and r["normal_class"] == c]
        if mine:
            cells[m] = min(mine, key=lambda r: r["seed"])
    return cells


def _pre(obj) -> str:
    return f"<pre>{html.escape(json.dumps(obj, indent=2), quote=False)}</pre>"


def _wall_time_table(rows: list[dict], methods: list[str]) -> str:
    lines = [
        "| method | cells | train s (total) | score s (total) | minutes per cell |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        train = sum(r["train_seconds"] for r in mine)
        score = sum(r["score_seconds"] for r in mine)
        per_cell = (train + score) / len(mine) / 60
        lines.append(f"| {m} | {len(mine)} | {train:.0f} | {score:.0f} | {per_cell:.1f} |")
    total = sum(r["train_seconds"] + r["score_seconds"] for r in rows)
    lines.append(f"| **all** | {len(rows)} | | | {total / 3600:.2f} h in all |")
    return "\n".join(lines)


def _statistics(rows: list[dict], methods: list[str]) -> str:
    """Mean AUROC with its 95% interval, the paired-difference matrix, and per class the
    paired differences of each generative method (the paper's contribution) against every
    other method (all from ``evaluation.statistics``: classes fixed, seeds as replicates)."""
    parts = [
        "<p class=note>The classes are the fixed set of tasks and the seeds are the "
        "replicates: each mean is over classes of the per-class means over seeds, and its "
        "95% Student-t interval comes from the spread between seeds within each class, "
        "pooled over classes (one seed: no interval). Paired differences A - B are over the "
        "cells both methods have (same class, same seed: the same training subsample), with "
        "the classes where A's mean over seeds is higher. Each method's precision (bf16 or "
        "fp32) is the one its rows were computed in.</p>",
        markdown_to_html(interval_table(rows)),
        markdown_to_html(paired_matrix(rows)),
    ]
    shown: set[frozenset[str]] = set()
    for a in [m for m in methods if method_class(m).generative(m)]:
        for b in methods:
            if b != a and frozenset((a, b)) not in shown:
                shown.add(frozenset((a, b)))
                parts.append(f"<h3>{html.escape(a)} - {html.escape(b)} per class</h3>")
                parts.append(markdown_to_html(paired_class_table(rows, a, b)))
    return "\n".join(parts)


def _per_class(out: Path, rows, methods, classes, names, colors, dataset, folder) -> str:
    """Per class (each method's first seed and default score): ROC curves, score
    histograms, the most normal and most anomalous test images, the generator's grids."""
    body = ["<p class=note>each method's first seed and default score</p>"]
    for c in classes:
        cells = _first_seed_cells(rows, c, methods)
        scores = {m: s for m, r in cells.items() if (s := _scores(out, r)) is not None}
        cells = {m: r for m, r in cells.items() if m in scores}
        body.append(f"<h3>normal class {c}: {html.escape(names[c])}</h3>")
        if not cells:
            body.append(_earlier_figures(folder, f"class{c}"))
            continue
        title, stem = f"class {c} {names[c]}", f"class{c}"
        roc, hist = _roc_and_histograms(cells, scores, colors, title, folder, stem)
        body.append(
            f'<div class=row><img src="{roc}" alt="ROC"><img src="{hist}" alt="histograms"></div>'
        )
        images = _test_images(dataset, next(iter(scores.values())))
        if images is not None:
            path = _extremes(cells, scores, images, title, folder, stem)
            body.append(f'<img src="{path}" alt="most normal and most anomalous">')
        else:
            body.append(
                "<p class=note>test images not shown: the dataset was not given or does not "
                "match the stored labels (<code>contrasyn report DIR --root ...</code>)</p>"
            )
        grids = [
            (m, name)
            for m, r in cells.items()
            for name in ("samples.png", "reconstructions.png")
            if (run_path(out, r) / name).exists()
        ]
        for m, name in grids:
            rel = (run_path(out, cells[m]) / name).relative_to(out).as_posix()
            what = (
                f"128 images the generator makes from h ~ N(0, I): it was trained on "
                f"{html.escape(names[c])} images only, so these should look like them"
                if name == "samples.png"
                else "rows, top to bottom: 16 normal test images, their reconstructions "
                "G(E(x)), 16 anomalous test images (one per other class in turn), theirs: "
                "anomalies come back looking like the normal class (the paper's Figure 2)"
            )
            body.append(
                f'<figure><img class=grid src="{rel}" alt="{m} {name}">'
                f"<figcaption>{m}: {what}</figcaption></figure>"
            )
    return "\n".join(body)


def _losses(out: Path, rows, methods, classes, names, folder) -> str:
    body = []
    for m in methods:
        firsts = [cell for c in classes if (cell := _first_seed_cells(rows, c, [m]).get(m))]
        path = _loss_curves(out, m, firsts, names, folder)
        if path:
            body.append(f'<img src="{path}" alt="{m} losses">')
        else:
            body.append(f"<p class=note>{m}: nothing trained by gradient steps, no losses</p>")
    return "\n".join(body)


def _configuration(out: Path, rows, methods) -> str:
    body = []
    for preset_file in sorted(out.glob("preset-*.json")):
        body.append(f"<h3>{preset_file.name} (the CSI family and the input size)</h3>")
        body.append(_pre(json.loads(preset_file.read_text())))
    for m in methods:
        settings = [run_path(out, r) / "settings.json" for r in rows if r["method"] == m]
        found = next((p for p in settings if p.exists()), None)
        if found:
            body.append(f"<h3>{m} settings</h3>" + _pre(json.loads(found.read_text())))
    return "\n".join(body)


def write_report(out: str | Path, dataset: ImageDataset | None = None, log=print) -> Path:
    """Write ``out/report.html`` (figures in ``out/report/``) from a benchmark folder.

    ``dataset`` supplies the test images for the most normal / most anomalous panels; it is
    used only if its test labels match the ones stored with the scores.
    """
    import matplotlib

    matplotlib.rcParams["font.size"] = 9
    out = Path(out)
    rows = read_rows(out)
    if not rows:
        raise FileNotFoundError(f"{out / 'results.jsonl'}: no results to report")
    folder = out / FIGURES
    folder.mkdir(exist_ok=True)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    classes = sorted({r["normal_class"] for r in rows})
    names = {r["normal_class"]: r.get("class_name", str(r["normal_class"])) for r in rows}
    colors = _colors(methods)
    datasets = sorted({r["dataset"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    presets = sorted({r["preset"] for r in rows})
    subsample = sorted({r["max_test"] for r in rows if r.get("max_test")})
    test = (
        f"a class-stratified subsample of {', '.join(map(str, subsample))} test images is scored"
        if subsample
        else "the whole test split is scored"
    )
    intro = (
        f"<p>{len(rows)} cell(s): {len(classes)} normal class(es) x {len(methods)} method(s) "
        f"x seeds {', '.join(map(str, seeds))}; preset {html.escape(', '.join(presets))}. "
        f"Each task: one class is normal, {test}, every other class "
        "is anomalous; AUROC with anomalies positive. Report written "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from "
        f"<code>{html.escape(str(out))}</code>.</p>"
    )
    chart = _auroc_chart(rows, methods, classes, names, colors, folder)
    sections = [
        Section(
            "auroc",
            "AUROC per normal class",
            "<p class=note>mean ± std over seeds; best of each row in bold</p>"
            + markdown_to_html(markdown_table(rows))
            + f'<img src="{chart}" alt="AUROC per class">',
        ),
        Section("means", "Means over tasks and seeds", markdown_to_html(summary_table(rows))),
        Section("statistics", "Intervals and paired differences", _statistics(rows, methods)),
        Section("time", "Wall time per method", markdown_to_html(_wall_time_table(rows, methods))),
    ]
    quality = out / "quality.md"
    if quality.exists():
        text = markdown_to_html(quality.read_text())
        sections.append(Section("quality", "Sample quality (contrasyn quality)", text))
    body = _per_class(out, rows, methods, classes, names, colors, dataset, folder)
    sections += [
        Section("classes", "Per class: ROC curves, score histograms, extreme test images", body),
        Section("losses", "Training losses", _losses(out, rows, methods, classes, names, folder)),
        Section("configuration", "Configuration", _configuration(out, rows, methods)),
    ]
    env = out / "environment.json"
    if env.exists():
        sessions = json.loads(env.read_text())
        text = (
            f"<p>{len(sessions)} benchmark invocation(s) wrote this folder; the last one:</p>"
            + _pre(sessions[-1])
        )
        sections.append(Section("machine", "Versions and machine", text))
    title = f"contrasyn benchmark: {', '.join(datasets)}"
    path = write_page(out / "report.html", title, intro, sections)
    log(f"report: {path}")
    return path
