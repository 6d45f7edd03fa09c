"""COPY's text format, written by hand: an import batch's rows in one write (psycopg's per-field
dumpers cost several times more for a thousand rows)."""

from __future__ import annotations

import re
from typing import Any


def copy_array(items: Any) -> str:
    """A PostgreSQL array literal (COPY parses it; much cheaper than psycopg's list dumper)."""
    return "{" + ",".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "}"


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def copy_text(value: str | None) -> str:
    """A value as COPY's text format writes it: NULL is \\N; backslash, tab, newline and CR escaped."""
    if value is None:
        return "\\N"
    if _COPY_SPECIAL.search(value) is None:
        return value
    return _COPY_SPECIAL.sub(lambda m: _COPY_ESCAPES[m.group()], value)
