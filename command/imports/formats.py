"""Import file formats: tell an .xlsx workbook from CSV text by the first bytes, and the errors that refuse a file."""

from __future__ import annotations

import codecs
import re
from typing import Literal

from command.errors import DomainError

HEAD_BYTES = 64 * 1024  # what a caller should read for ``detect_format``
ACCEPTED = "accepted: a CSV file (UTF-8 or Windows-1252 text) or an Excel workbook (.xlsx)"
_CONTROL_CHARS = re.compile(r"[\x01-\x08\x0e-\x19\x1b-\x1f\x7f]")
_UTF16 = "UTF-16 text (save it as \"CSV UTF-8\")"
_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 workbook (.xls) or a password-protected Office file"),
    (b"\xff\xfe\x00\x00", "UTF-32 text (save it as \"CSV UTF-8\")"),
    (b"\x00\x00\xfe\xff", "UTF-32 text (save it as \"CSV UTF-8\")"),
    (b"\xff\xfe", _UTF16),
    (b"\xfe\xff", _UTF16),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"{\\rtf", "an RTF document"),
)


class UnsupportedFileError(DomainError):
    """The upload is not a CSV or XLSX file at all."""

    code = "unsupported_file"


class FileFormatError(DomainError):
    """The file is a CSV or XLSX file that cannot be imported as it is."""

    code = "invalid_file"


def detect_format(head: bytes, filename: str | None) -> Literal["csv", "xlsx"]:
    """Tell an .xlsx workbook from CSV text by the first bytes; the filename is only a hint."""
    if not head:
        raise FileFormatError("the file is empty", field="file")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        kind = _zip_kind(head, filename)
        if kind == "xlsx":
            return "xlsx"
        raise unsupported(kind, filename)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            raise unsupported(kind, filename)
    if _looks_like_utf16(head):
        raise unsupported(_UTF16.replace("text", "text without a byte-order mark", 1), filename)
    text = _as_text(head)
    if text is None:
        raise unsupported("binary data, not text", filename)
    if text.lstrip("\ufeff \t\r\n")[:20].lower().startswith(("<?xml", "<html", "<!doctype", "<table")):
        raise unsupported("an HTML or XML document", filename)
    return "csv"


def _zip_kind(head: bytes, filename: str | None) -> str:
    """What a ZIP archive holds, judged by the member names of the local headers in ``head``."""
    names = []
    for match in re.finditer(rb"PK\x03\x04", head):
        start = match.start()
        size = int.from_bytes(head[start + 26:start + 28], "little")
        names.append(head[start + 30:start + 30 + size])
    if b"xl/workbook.bin" in names:
        return "an Excel binary workbook (.xlsb)"
    if any(name.startswith(b"xl/") for name in names):
        return "xlsx"
    if any(name.startswith(b"word/") for name in names):
        return "a Word document"
    if any(name.startswith(b"ppt/") for name in names):
        return "a PowerPoint presentation"
    if b"opendocument" in head:
        return "an OpenDocument file (.ods/.odt)"
    if filename and filename.lower().endswith((".xlsx", ".xlsm")):
        return "xlsx"  # names not in head; open_rows checks for xl/workbook.xml
    return "a ZIP archive that is not an Excel workbook"


def _looks_like_utf16(head: bytes) -> bool:
    """Mostly-ASCII UTF-16 without a BOM: every other byte is NUL, and the bytes between are not."""
    sample = head[:4096]
    even, odd = sample[0::2], sample[1::2]
    if len(odd) < 8:
        return False
    return (odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even)) or \
        (even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd))


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)  # may end inside a character
    except UnicodeDecodeError:
        # A byte Windows-1252 leaves undefined does not make a text file binary: the
        # encoding check names it and its line (422) instead of calling the file binary.
        text = head.decode("cp1252", errors="replace")
    return None if len(_CONTROL_CHARS.findall(text)) * 100 > len(text) else text


def unsupported(kind: str, filename: str | None) -> UnsupportedFileError:
    """The error refusing a file of this kind, naming the file and what is accepted."""
    subject = f'the file "{filename}"' if filename else "the file"
    return UnsupportedFileError(f"{subject} is {kind}; {ACCEPTED}", field="file")
