"""Every CSV file the ledger writes goes through here: the All Sales report (`ledger report all-sales`), the
finance refunds (`GET /v1/finance/refunds?format=csv`, `ledger finance refunds --format csv`) and the bulk
page's file of failed rows.

Formula injection (OWASP, "CSV Injection"): a spreadsheet runs a cell that starts with `=`, `+`, `-`, `@`, a tab
or a carriage return as a formula, and buyers choose their own names (marketplace ids, SKUs and titles come
from outside too). Such a cell is written with a single quote in front, and the cell quoted, so a spreadsheet
shows the text and runs nothing. A number stays a number: a cell that is only an optional `-` and digits with
an optional decimal part (`-5.00`, the ledger's own negative amounts) cannot be a formula, so it is left as it
is (OWASP's own exception). Other cells are quoted only when they must be (a comma, a quote or a line break),
as Python's csv module does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_MUST_QUOTE = re.compile(r'[",\r\n]')


def text_of(value: Any) -> str:
    """A value as its cell's text: nothing for None, true/false, times in ISO 8601, decimals exact."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def cell(value: Any) -> str:
    """One cell as written in the file: neutralized if a spreadsheet would read it as a formula, and quoted
    where CSV needs it."""
    text = text_of(value)
    if text.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(text):
        return '"' + ("'" + text).replace('"', '""') + '"'
    if _MUST_QUOTE.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def line(values: Iterable[Any], newline: str = "\r\n") -> str:
    """One row of cells, with its line ending (a row of one empty cell is `""`, not a blank line)."""
    cells = [cell(v) for v in values]
    return (",".join(cells) if cells != [""] else '""') + newline


def rows(header: Iterable[str], records: Iterable[Iterable[Any]], newline: str = "\r\n") -> str:
    """A whole file: the header row, then one row per record."""
    return line(header, newline) + "".join(line(r, newline) for r in records)
