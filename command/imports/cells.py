"""Cell rules shared by import and export: the spreadsheet-formula escape and the tag separators.

A spreadsheet runs a cell starting with ``=``, ``+``, ``-``, ``@``, tab or CR as a
formula (OWASP "CSV injection"): exports prefix such a cell, and one already so escaped,
with ``'`` (in SQL: query/exports.py; tests/import_samples.py ``neutralise`` is the same
rule in Python, which the tests hold the SQL to) and imports take exactly one ``'`` away
again. Tags share one cell, joined with ``TAG_SEPARATOR`` on
export; an import splits a cell at any of ``TAG_SEPARATORS``. The readers, the JSON
import, the export queries and the API's tag cleaning all use these rules from here.
"""

from __future__ import annotations

import re

# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = "=+-@\t\r"
_QUOTED = re.compile(r"'+[" + re.escape(FORMULA_STARTS) + "]")
TAG_SEPARATOR_CHARS = ",;"  # a tag never holds one (the API refuses it), so tags split and join safely
TAG_SEPARATORS = re.compile(f"[{re.escape(TAG_SEPARATOR_CHARS)}]")  # what splits a tags cell or item into tags
TAG_SEPARATOR = ";"  # what joins an exported contact's tags in one cell (read back by TAG_SEPARATORS)


def unneutralise(value: str) -> str:
    """Undo the export's escape: drop one leading ``'`` from quotes followed by a formula start."""
    return value[1:] if value[:1] == "'" and _QUOTED.match(value) else value
