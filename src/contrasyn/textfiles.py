"""Text files people read or open: written atomically, and CSV a spreadsheet reads safely
(no cell runs as a formula, no row is split by a control character in a file name)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from pathlib import Path

from contrasyn.checkpoint import atomic_write


def write_text(path: Path, text: str, replace: bool = True) -> None:
    """Replace ``path`` atomically: a reader (or a crash) never sees half a file;
    ``replace=False``: write it only if it does not exist (``atomic_write``)."""
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text), replace=replace)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """A text cell a spreadsheet will not run as a formula: one starting with = + - @ (or a
    tab or carriage return) gets a leading apostrophe (OWASP's advice). Numbers are not
    text cells: they are written as they are."""
    return "'" + text if text.startswith(_FORMULA_START) else text


# Control characters, the line breaks among them (\r, \v, \f, the C1 codes and U+2028/9,
# which str.splitlines() and some readers end a line at).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def csv_text(columns: list[str], rows: Iterable[dict]) -> str:
    """Rows as CSV text, one "\\n" a row, for files people open in spreadsheets (``score
    --out``, ``evaluate``'s ``scores.csv``): every text cell goes through ``csv_cell`` (no
    formulas), and a row with a control character in a text cell (a carriage return in a
    file name) has its text cells quoted, so that no reader splits the row and no line starts
    with an unescaped cell. (The csv module quotes only the characters of its line
    terminator, "\\n" here, and leaves a carriage return bare.) None is an empty cell."""
    buffer = io.StringIO()
    plain = csv.DictWriter(buffer, columns, lineterminator="\n")
    quoted = csv.DictWriter(buffer, columns, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    plain.writeheader()
    for row in rows:
        cells = {k: csv_cell(v) if isinstance(v, str) else v for k, v in row.items()}
        risky = any(isinstance(v, str) and _CONTROL.search(v) for v in cells.values())
        (quoted if risky else plain).writerow(cells)
    return buffer.getvalue()
