"""The HTML report toolkit both reports use: the benchmark's (``report``) and a labelled
evaluation's (``evaluate``).

A report is a page of sections, each an anchor, a heading and an HTML body, with a table of
contents after the introduction, one style sheet, and figures as PNG files in ``report/``
beside the page, drawn with matplotlib's object API (no global pyplot state) and written
atomically. Figures an earlier build left that the new page does not show are removed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from contrasyn.checkpoint import atomic_write

FIGURES = "report"  # the figures' folder, beside report.html

STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eee; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0; }
img.grid { width: 640px; image-rendering: pixelated; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; }
.tile { margin: 0; width: 270px; }
.tile img { image-rendering: pixelated; }
pre { background: #f6f6f6; padding: 0.6em; font-size: 0.85em; overflow-x: auto; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
.note { color: #666; }
nav { background: #f6f6f6; padding: 0.4em 1em; display: inline-block; }
nav ul { margin: 0.3em 0; padding-left: 1.2em; }
figure { margin: 0.6em 0 1.2em; }
figcaption { color: #444; font-size: 0.9em; max-width: 640px; }
"""


class Section(NamedTuple):
    """One part of a page: ``anchor`` (the table of contents links to it), its heading and
    its body (HTML)."""

    anchor: str
    heading: str
    body: str


def figure(width: float, height: float):
    """A matplotlib figure (object API, constrained layout) of ``width`` x ``height`` inches."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def panels(n: int, width: float, height: float):
    """A figure of ``n`` panels, four to a row, and its axes (spare ones hidden)."""
    ncols = min(4, n)
    fig = figure(width * ncols, height * -(-n // ncols))
    axes = fig.subplots(-(-n // ncols), ncols, squeeze=False).ravel()
    for a in axes[n:]:
        a.set_visible(False)
    return fig, axes


def save_figure(fig, folder: Path, name: str) -> str:
    """Write ``fig`` as ``folder/name`` (PNG, atomically); returns its source in the page."""
    atomic_write(folder / name, lambda tmp: fig.savefig(tmp, dpi=90, format="png"), suffix=".png")
    return f"{FIGURES}/{name}"


def table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> str:
    """An HTML table; floats with four decimals, everything escaped."""

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows]
    return "\n".join(out) + "</table>"


def markdown_to_html(text: str) -> str:
    """The subset of Markdown the harness writes: pipe tables, **bold**, paragraphs."""
    out, rows = [], []

    def inline(s: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(s.strip()))

    def flush() -> None:
        if rows:
            head, *body = rows
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append("</table>")
            rows.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = line.strip().strip("|").split("|")
            if not all(set(c.strip()) <= set("-:") for c in cells):
                rows.append(cells)
            continue
        flush()
        if line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    return "\n".join(out)


def write_page(path: Path, title: str, intro: str, sections: Sequence[Section]) -> Path:
    """``path`` (report.html): the title, ``intro`` (HTML), a table of contents and the
    sections; the PNGs in ``report/`` beside it that the page does not show are removed."""
    path = Path(path)
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.heading)}</a></li>' for s in sections)
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        intro,
        f"<nav><b>Contents</b><ul>{toc}</ul></nav>",
        *(
            f'<section id="{s.anchor}"><h2>{html.escape(s.heading)}</h2>\n{s.body}</section>'
            for s in sections
        ),
        "</body></html>\n",
    ]
    page = "\n".join(parts)
    shown = set(re.findall(rf"src=[\"']{FIGURES}/([^\"']+)[\"']", page))
    folder = path.parent / FIGURES
    for stale in folder.glob("*.png"):  # figures of an earlier build this page no longer shows
        if stale.name not in shown:
            stale.unlink(missing_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(page))
    return path
