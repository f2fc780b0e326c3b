"""Rows of a CSV file, read so that every failure names the file and line.

Shared by the regression task (training data) and `evo-rules predict` (data to score): UTF-8
(a BOM allowed), a cell of over MAX_FIELD characters, NUL bytes or an unclosed quote are one
error line naming the file and line. `error` is the exception class the caller reports with.
`number` reads a cell as both callers do (no `1_000`, no non-ASCII digits).
"""

from __future__ import annotations

import csv
import io

MAX_FIELD = 1_000  # characters in one cell: a number never needs more


def read_rows(path: str, error: type[Exception] = ValueError) -> list[list[str]]:
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte {exc.start}: "
                    f"{raw[exc.start:exc.start + 1]!r})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    try:
        for row in reader:
            if any(len(c) > MAX_FIELD for c in row):
                raise error(f"{path}:{reader.line_num}: a cell of over {MAX_FIELD} characters")
            rows.append(row)
    except csv.Error as exc:  # NUL bytes, an unclosed quote
        raise error(f"{path}:{reader.line_num}: not CSV: {exc}") from None
    return rows


def number(cell: str) -> float | None:
    """A cell as a float (None: not a number). Python's float() also takes digit-group
    underscores ('1_0' is 10) and non-ASCII digits; no CSV writer means those as numbers."""
    c = cell.strip()
    if "_" in c or not c.isascii():
        return None
    try:
        return float(c)
    except ValueError:
        return None
