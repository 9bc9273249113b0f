"""Methods from several benchmark folders side by side, with intervals and paired differences.

Each ``--add FOLDER:SPEC`` takes the rows of some methods from a folder's ``results.jsonl``
(SPEC: comma-separated ``METHOD`` or ``METHOD=LABEL``, to tell apart, say, ``csi`` at 12 and
at 42 epochs; ``METHOD@SCORE`` takes a CSI-family row under another of the scores it
computed, ``auroc_SCORE`` as its ``auroc``, say ``csi@feat+pix=default`` for cells run when
the preset scored with ``feat+head+pix``); cells are matched by (dataset, normal class,
seed). Writes one Markdown file: AUROC per class (mean +- std over seeds), mean AUROC with
its 95% interval and precision, the matrix of paired differences, and for every ``--pairs
A:B`` the per-class paired table (``contrasyn.evaluation.results``, from
``contrasyn.evaluation.statistics``: classes fixed, seeds as replicates, the same statistics
as ``table.md``, the benchmark's printout and the report). A label whose rows were computed
in two precisions (bf16 and fp32) is refused: they are different cells. ``--common`` keeps
only the cells every label has, so that the means of a folder that is still filling (some
classes or seeds missing) compare with the others over the same cells. ``--deterministic
LABEL`` pairs a deterministic method's one run per class (a kNN: its task and its score do
not depend on the seed) with every seed of the others. ``--metric val_auroc`` compares each
row's own score on the validation split. ``--speed`` adds what each label's cells cost: the
median fit seconds (``train_seconds``), the median test images scored a second
(``n_test / score_seconds``) and the machines that ran them, so that a table of budgets reads
as quality per minute.

    python benchmarks/compare.py \
        --add benchmarks/results/fashion-mnist-seeds-cpu:csi,full \
        --add benchmarks/results/fashion-mnist-equal-time-cpu:csi=csi-42-epochs \
        --add benchmarks/results/fashion-mnist-variants-cpu:knn,rot \
        --pairs full:csi,full:csi-42-epochs,full:rot --out benchmarks/results/comparison.md
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import median

from contrasyn.evaluation.results import (
    interval_table,
    markdown_table,
    paired_class_table,
    paired_matrix,
    read_rows,
)
from contrasyn.textfiles import write_text


def collect(adds: list[str]) -> list[dict]:
    """The rows named by every ``FOLDER:SPEC``, relabelled; one row per (label, class, seed)."""
    rows: list[dict] = []
    seen: set[tuple] = set()
    for add in adds:
        folder, _, spec = add.rpartition(":")
        if not folder:
            raise SystemExit(f"--add {add!r}: expected FOLDER:METHOD[=LABEL],...")
        picks = []  # (method, score or "", label)
        for part in filter(None, spec.split(",")):
            name, _, label = part.partition("=")
            method, _, score = name.partition("@")
            picks.append((method, score, label or name))
        for r in read_rows(Path(folder)):
            for method, score, label in picks:
                if r["method"] != method:
                    continue
                key = (label, r["dataset"], r["normal_class"], r["seed"])
                if key in seen:
                    raise SystemExit(f"{folder}: a second {key} row (two folders give one label)")
                seen.add(key)
                row = rescored(r, score, folder) if score else r
                rows.append({**row, "method": label, "folder": folder})
    for label in dict.fromkeys(r["method"] for r in rows):
        found = {r.get("precision") for r in rows if r["method"] == label}
        if len(found) > 1:
            raise SystemExit(
                f"label {label!r} mixes rows computed in {', '.join(sorted(map(str, found)))}: "
                "they are different cells; give each precision its own label"
            )
    return rows


def rescored(row: dict, score: str, folder: str) -> dict:
    """``row`` under ``score``: its ``auroc_SCORE`` as ``auroc`` (and ``score`` set, so that
    ``--metric val_auroc`` reads ``val_auroc_SCORE``); the columns of the score the row was
    run with alone (``aupr``, ``fpr95``, ``auroc_per_class_mean``) are dropped."""
    key = f"auroc_{score}"
    if key not in row:
        raise SystemExit(
            f"{folder}: a {row['method']} row (class {row['normal_class']}, seed "
            f"{row['seed']}) has no {key}"
        )
    own = ("aupr", "fpr95", "auroc_per_class_mean")
    return {**{k: v for k, v in row.items() if k not in own}, "score": score, "auroc": row[key]}


def spread_over_seeds(rows: list[dict], labels: list[str]) -> list[dict]:
    """Each row of a deterministic method's ``labels`` copied to every seed the other labels
    have: its one score per class stands for every seed (the task does not depend on the
    seed), so it pairs with each seed of a trained method and the interval comes from that
    method's seeds. A label with rows for two seeds is refused (it is not deterministic)."""
    seeds = sorted({r["seed"] for r in rows if r["method"] not in labels})
    out = [r for r in rows if r["method"] not in labels]
    for label in labels:
        own = [r for r in rows if r["method"] == label]
        if not own:
            raise SystemExit(f"--deterministic {label}: no rows with that label")
        if len({r["seed"] for r in own}) > 1:
            raise SystemExit(f"--deterministic {label}: rows for several seeds; it is trained")
        out += [{**r, "seed": seed} for r in own for seed in seeds]
    return out


def common_cells(rows: list[dict]) -> list[dict]:
    """The rows of the (dataset, class, seed) cells that every label has."""
    cells: dict[str, set[tuple]] = {}
    for r in rows:
        cells.setdefault(r["method"], set()).add((r["dataset"], r["normal_class"], r["seed"]))
    shared = set.intersection(*cells.values()) if cells else set()
    return [r for r in rows if (r["dataset"], r["normal_class"], r["seed"]) in shared]


def own_validation(row: dict) -> dict:
    """``row`` with ``val_auroc``: the validation AUROC of the score its test ``auroc`` is
    of (``val_auroc_feat+head+pix`` for the `cpu` preset's CSI family, ``val_auroc_rot`` for
    Rot+Trans), so that methods with different scores compare on validation in one table."""
    key = f"val_auroc_{row.get('score')}"
    if key not in row:
        raise SystemExit(
            f"{row['folder']}: a {row['method']} row (class {row['normal_class']}, seed "
            f"{row['seed']}) has no {key}"
        )
    return {**row, "val_auroc": row[key]}


def speed_table(rows: list[dict]) -> str:
    """Per label: its runs, the median fit seconds, the median test images scored a second
    and the machines its rows name. A row without the timing columns (an old row, a
    deterministic method's copy) is left out of that label's medians, never read as zero."""
    lines = [
        "| label | runs | fit s (median) | test images/s (median) | machines |",
        "|---|---|---|---|---|",
    ]
    for label in dict.fromkeys(r["method"] for r in rows):
        own = [r for r in rows if r["method"] == label]
        fit = [float(r["train_seconds"]) for r in own if r.get("train_seconds") is not None]
        rate = [
            float(r["n_test"]) / float(r["score_seconds"])
            for r in own
            if r.get("n_test") and r.get("score_seconds")
        ]
        machines = sorted({str(r["machine"]) for r in own if r.get("machine")})
        lines.append(
            f"| {label} | {len(own)} | {f'{median(fit):.1f}' if fit else '-'} | "
            f"{f'{median(rate):.0f}' if rate else '-'} | {'; '.join(machines) or '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--add", action="append", required=True, metavar="FOLDER:SPEC")
    parser.add_argument("--pairs", default="", help="comma-separated A:B (per-class tables)")
    parser.add_argument(
        "--metric",
        default="auroc",
        help="a results column: auroc (test), val_auroc_feat, ...; val_auroc: each row's own "
        "score on validation (val_auroc_SCORE, SCORE the score its auroc is of)",
    )
    parser.add_argument(
        "--common", action="store_true", help="only the cells (class, seed) every label has"
    )
    parser.add_argument(
        "--deterministic", default="", help="comma-separated labels whose one seed stands for all"
    )
    parser.add_argument(
        "--speed", action="store_true", help="add each label's median fit s and test images/s"
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    rows = collect(args.add)
    timed = rows  # every run once, before a deterministic method's rows are copied per seed
    fixed = [label for label in args.deterministic.split(",") if label]
    if fixed:
        rows = spread_over_seeds(rows, fixed)
    if args.common:
        rows = common_cells(rows)
    if args.metric == "val_auroc":
        rows = [own_validation(r) for r in rows]
    folders = sorted({r["folder"] for r in rows})
    metric = args.metric
    cells = sorted({(r["normal_class"], r["seed"]) for r in rows})
    where = f" Only the {len(cells)} cells every label has (`--common`)." if args.common else ""
    if fixed:
        where += (
            f" {', '.join(fixed)}: deterministic (the task does not depend on the seed), one "
            "run per class paired with every seed of the others."
        )
    parts = [
        "Rows from: " + ", ".join(f"`{f}`" for f in folders) + f". Metric: `{metric}`." + where,
        f"{metric} per normal class (mean ± std over seeds):\n\n" + markdown_table(rows, metric),
        "Mean over classes with its 95% interval (classes fixed, seeds as replicates: the "
        "pooled within-class spread of the seeds):\n\n" + interval_table(rows, metric),
        "Paired differences (row minus column, over the cells both have: mean over classes "
        "[95% interval], classes won):\n\n" + paired_matrix(rows, metric),
    ]
    if args.speed:
        parts.append(
            "What the runs cost (medians over every run of a label; images/s counts the test "
            "images a second of scoring, n_test / score_seconds):\n\n" + speed_table(timed)
        )
    for pair in filter(None, args.pairs.split(",")):
        a, b = pair.split(":")
        parts.append(f"{a} - {b}, per class:\n\n" + paired_class_table(rows, a, b, metric))
    text = "\n\n".join(parts) + "\n"
    write_text(Path(args.out), text)
    print(text)


if __name__ == "__main__":
    main()
