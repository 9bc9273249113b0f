"""The HTML report: built from a real (tiny) benchmark folder, every image it shows exists and
is a picture, the tables hold the results, and it renders in headless Chromium when present."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contrasyn.cli import main
from contrasyn.htmlpage import markdown_to_html
from test_cli import _bench_args  # tests/ is on sys.path (rootdir-relative imports)

METHODS = "knn,deepsvdd,full"


class _Page(HTMLParser):
    """Collects image sources, headings and table cells; fails on unbalanced tags."""

    VOID = {"img", "meta", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self.cells: list[str] = []
        self.stack: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag in self.VOID:
            return
        self.stack.append(tag)
        if tag in ("h1", "h2", "h3", "td", "th"):
            self._text = []

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if self._text is not None and tag in ("h1", "h2", "h3", "td", "th"):
            text = "".join(self._text).strip()
            (self.headings if tag.startswith("h") else self.cells).append(text)
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    # a 300-image test subsample: the report must find those images in the dataset
    assert main([*_bench_args(out, classes="0,1", methods=METHODS), "--max-test", "300"]) == 0
    return out


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    page.close()
    assert page.stack == [], f"unclosed tags {page.stack}"
    return page


def test_markdown_tables_become_html() -> None:
    text = "intro *x*\n\n| class | a | b |\n|---|---|---|\n| 0 c0 | **0.900** | 0.8 < 1 |\n"
    assert markdown_to_html(text) == (
        "<p>intro *x*</p>\n<table><tr><th>class</th><th>a</th><th>b</th></tr>\n"
        "<tr><td>0 c0</td><td><b>0.900</b></td><td>0.8 &lt; 1</td></tr>\n</table>"
    )


def test_report_parses_and_every_image_exists(bench: Path) -> None:
    page = _parse(bench / "report.html")
    assert len(page.images) >= 1 + 2 * 3 + 2 + 2  # chart, per class ROC/hist/extremes, ...
    for src in page.images:
        path = bench / src
        assert path.is_file(), src
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=float)
        assert pixels.std() > 5, f"{src} is blank"
    names = {Path(s).name for s in page.images}
    assert {"auroc.png", "roc_class0.png", "hist_class1.png", "extremes_class0.png"} <= names
    assert {"loss_full.png", "loss_deepsvdd.png", "samples.png", "reconstructions.png"} <= names
    assert "loss_knn.png" not in names  # nothing to plot for a method without training


def test_report_tables_hold_the_results(bench: Path) -> None:
    page = _parse(bench / "report.html")
    rows = [json.loads(line) for line in (bench / "results.jsonl").read_text().splitlines()]
    for r in rows:
        assert f"{r['auroc']:.3f}" in " ".join(page.cells)
    assert "AUROC per normal class" in page.headings
    for section in ("Training losses", "Configuration", "Versions and machine"):
        assert section in page.headings
    assert any(h.startswith("Wall time") for h in page.headings)
    text = (bench / "report.html").read_text()
    assert '"torch":' in text and "contrasyn benchmark --dataset synthetic" in text
    # a table of contents linking every section, and a caption under every generator grid
    anchors = re.findall(r'<section id="([a-z]+)">', text)
    assert len(anchors) >= 6 and all(f'href="#{a}"' in text for a in anchors)
    assert "Intervals and paired differences" in page.headings
    grids = text.count('class=grid src="')
    assert grids >= 2 and text.count("<figcaption>") >= grids


def test_test_subsample_is_recorded(bench: Path) -> None:
    rows = [json.loads(line) for line in (bench / "results.jsonl").read_text().splitlines()]
    assert {(r["n_test"], r["max_test"]) for r in rows} == {(300, 300)}
    full, knn = (
        dict(np.load(bench / f"runs/synthetic/{m}/class1/seed0/test_scores.npz"))
        for m in ("full", "knn")
    )
    assert len(full["test_index"]) == len(full["labels"]) == 300
    # every cell scored the same images: its scores line up with the other methods'
    assert np.array_equal(full["test_index"], knn["test_index"])
    # a rerun with the whole test split is another configuration: refused, not mixed
    assert main(_bench_args(bench, classes="0,1", methods=METHODS)) == 2


def test_baseline_losses_and_environment_are_recorded(bench: Path) -> None:
    lines = (bench / "runs/synthetic/deepsvdd/class0/seed0/metrics.jsonl").read_text()
    records = [json.loads(x) for x in lines.splitlines()]
    # the tiny preset: 1 pre-training epoch, 3 Deep SVDD epochs
    assert [(r["phase"], r["epoch"]) for r in records] == [
        ("pretrain", 1),
        ("train", 1),
        ("train", 2),
        ("train", 3),
    ]
    env = json.loads((bench / "environment.json").read_text())
    assert len(env) == 1 and env[0]["device"] == "cpu" and env[0]["versions"]["numpy"]


def test_report_command_rebuilds_and_survives_a_missing_dataset(
    bench: Path, tmp_path: Path, capsys
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(bench, copy)
    (copy / "report.html").unlink()
    shutil.rmtree(copy / "report")
    assert main(["report", str(copy)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = _parse(copy / "report.html")
    assert all((copy / src).is_file() for src in page.images)
    # without its score files a class keeps the figures an earlier build drew, said so; a
    # figure the page no longer shows is removed
    for npz in copy.glob("runs/synthetic/*/class1/seed0/test_scores.npz"):
        npz.unlink()
    (copy / "report" / "stale.png").write_bytes((copy / "report" / "auroc.png").read_bytes())
    before = (copy / "report" / "roc_class1.png").read_bytes()
    assert main(["report", str(copy)]) == 0
    text = (copy / "report.html").read_text()
    assert "drawn by an earlier build of this report" in text and "no score files" not in text
    shown = {Path(src).name for src in _parse(copy / "report.html").images}
    assert {"roc_class1.png", "hist_class1.png", "extremes_class1.png"} <= shown
    assert (copy / "report" / "roc_class1.png").read_bytes() == before
    assert not (copy / "report" / "stale.png").exists()
    # with neither scores nor earlier figures the page says what is missing
    shutil.rmtree(copy / "report")
    assert main(["report", str(copy)]) == 0
    assert "no score files" in (copy / "report.html").read_text()
    assert main(["report", str(tmp_path / "nothing")]) == 2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_report_renders_in_headless_chromium(bench: Path, broken_images, screenshot) -> None:
    # every picture on the page is one the browser can show
    assert broken_images(bench / "report.html") == (len(_parse(bench / "report.html").images), [])
    pixels = screenshot(bench / "report.html", "1400,1800")
    # the AUROC chart's bars are drawn in matplotlib's tab10 colours; the tables are grey/black
    for rgb in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):
        near = (np.abs(pixels - rgb).sum(axis=-1) < 30).sum()
        assert near > 200, f"no chart colour {rgb} in the screenshot"
    # the table's header cells (#eee) are on screen
    assert (np.abs(pixels - 238).sum(axis=-1) == 0).sum() > 500
