"""The CSV reader: records of a UTF-8 or Windows-1252 text file, its delimiter sniffed, each record bounded."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

from command.imports.formats import ACCEPTED, FileFormatError
from command.imports.limits import DEFAULT_LIMITS, HEADER_SEARCH_ROWS, MAX_RECORD_CHARS, FileLimits, check_width

# Sample handed to csv.Sniffer: its quote-guessing regex is quadratic in the sample
# (16 KiB of ",'\"" took 3.6 s of CPU), so the sample stays small (about 0.2 s at worst).
SNIFF_CHARS = 4 * 1024
DELIMITERS = ",;\t|"
# Latin letters and combining marks (2 bytes in UTF-8) and every character of 3 bytes or
# more, surrogates left out (undecodable bytes arrive as U+DC80-U+DCFF).
_UTF8_PROOF = re.compile("[\u00c0-\u02af\u0300-\u036f\u0800-\ud7ff\ue000-\U0010ffff]")
_EXCEL_SEP = re.compile(r"sep=([,;\t|])\r?\n", re.IGNORECASE)
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # a byte that was not UTF-8, under surrogateescape
_NOT_IN_CP1252 = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")  # the five bytes Windows-1252 leaves undefined


def csv_records(path: Path, limits: FileLimits = DEFAULT_LIMITS) -> Iterator[list[str]]:
    """Each CSV record as a list of strings, with its size and width bounded."""
    encoding = _csv_encoding(path)
    # Process-wide, and the line reader below bounds records first: this only has to be large enough.
    csv.field_size_limit(max(limits.max_record_chars, csv.field_size_limit()))
    with path.open("rb") as raw:
        sample = raw.read(SNIFF_CHARS)
        raw.seek(len(codecs.BOM_UTF8) if sample.startswith(codecs.BOM_UTF8) else 0)
        head = sample.decode(encoding, errors="ignore").lstrip("\ufeff")
        # Excel writes (and reads) a first line "sep=;" naming the delimiter: honour it, skip it.
        excel_sep = _EXCEL_SEP.match(head)
        delimiter = excel_sep.group(1) if excel_sep else _delimiter(head)
        with io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
            lines = _BoundedLines(text, limits.max_record_chars)
            reader = csv.reader(lines, delimiter=delimiter)
            if excel_sep:
                next(reader, None)
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise FileFormatError(f"line {reader.line_num} is not valid CSV: {exc}", field="file") from exc
                except UnicodeDecodeError as exc:
                    byte = exc.object[exc.start:exc.start + 1].hex()
                    raise FileFormatError(f"the file is neither UTF-8 nor Windows-1252 text (byte 0x{byte} after "
                                          f"line {lines.number})", field="file") from exc
                lines.record_chars = 0
                if len(cells) > limits.max_columns:  # the message is made only for a row that may be refused
                    check_width(cells, f"line {reader.line_num}", limits.max_columns)
                yield cells


def _csv_encoding(path: Path) -> str:
    """UTF-8 when the whole file is UTF-8; Windows-1252 when it has no UTF-8 beyond ASCII; else a 422.

    One pass in chunks, before any row is imported. A file that holds both UTF-8 text
    and bytes that are not UTF-8 (two files pasted together) is refused: read as
    Windows-1252, every UTF-8 name in it would be stored garbled ("ZoÃ«"). Windows-1252
    text can hold a valid UTF-8 pair by chance: an accented capital before a curly quote
    ("Ñ”" is D1 94, Cyrillic "є" in UTF-8). So a UTF-8 letter of the Latin scripts
    (accented, Yoruba "ọ", Twi "ɔ") or any character of three bytes or more (curly
    quotes, "€") is proof of UTF-8 text; other pairs count only if they outnumber the
    bad bytes, and so does the UTF-8 BOM. A NUL byte means the file is not text.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    line = 1  # of the chunk's first byte
    not_utf8 = not_cp1252 = None  # (line, byte) of the first such byte
    bad_bytes = multibyte_weight = 0  # bytes not UTF-8; bytes minus characters of the UTF-8 ones
    utf8_letter = False  # a character no Windows-1252 text spells by chance (see above)
    with path.open("rb") as raw:
        bom = raw.read(3) == codecs.BOM_UTF8
        raw.seek(0)
        while True:
            chunk = raw.read(256 * 1024)
            if (nul := chunk.find(b"\x00")) >= 0:
                where = line + chunk.count(b"\n", 0, nul)
                raise FileFormatError(f"line {where} holds a NUL byte: this is not a text file; {ACCEPTED}",
                                      field="file")
            if chunk and chunk.isascii() and not decoder.getstate()[0]:
                # Most files are ASCII throughout: none of the searches below can find anything in
                # such a chunk (none split a character either), and this pass runs before any row.
                line += chunk.count(b"\n")
                continue
            text = decoder.decode(chunk, final=not chunk)
            multibyte_weight += len(chunk) - len(text)  # pending bytes of a split character even out
            if bad := _ESCAPED_BYTE.search(text):
                not_utf8 = not_utf8 or (line + text.count("\n", 0, bad.start()), ord(bad.group()) - 0xDC00)
                bad_bytes += len(_ESCAPED_BYTE.findall(text))
            utf8_letter = utf8_letter or _UTF8_PROOF.search(text) is not None
            if not_cp1252 is None and (bad := _NOT_IN_CP1252.search(chunk)):
                not_cp1252 = (line + chunk.count(b"\n", 0, bad.start()), bad.group()[0])
            if not chunk:
                break
            line += chunk.count(b"\n")
    if not_utf8 is None:
        return "utf-8"
    if bom or utf8_letter or multibyte_weight > bad_bytes:
        raise FileFormatError(f"the file mixes UTF-8 text with bytes that are not UTF-8 (byte 0x{not_utf8[1]:02x} "
                              f"on line {not_utf8[0]}); save the whole file as \"CSV UTF-8\"", field="file")
    if not_cp1252 is not None:
        raise FileFormatError(f"the file is neither UTF-8 nor Windows-1252 text (byte 0x{not_cp1252[1]:02x} on "
                              f"line {not_cp1252[0]}); save it as \"CSV UTF-8\"", field="file")
    return "cp1252"


def _delimiter(sample: str) -> str:
    """The sniffed delimiter when the header line has it, else the candidate most in the header line."""
    if "\n" in sample:
        sample = sample[:sample.rindex("\n")]  # drop a line cut by the sample size
    # The first line holding a delimiter: a title line above the header ("Customers, March"
    # aside) holds none, and must not decide the delimiter.
    lines = [line for line in sample.splitlines() if line.strip()][:HEADER_SEARCH_ROWS]
    header = next((line for line in lines if any(d in line for d in DELIMITERS)), lines[0] if lines else "")
    counts = {candidate: header.count(candidate) for candidate in DELIMITERS}
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = None
    if sniffed and counts[sniffed]:
        return sniffed
    best = max(DELIMITERS, key=counts.__getitem__)
    return best if counts[best] else ","


class _BoundedLines:
    """Lines of a text file for csv.reader, failing once a record grows past MAX_RECORD_CHARS."""

    def __init__(self, text: io.TextIOWrapper, limit: int = MAX_RECORD_CHARS):
        self.text = text
        self.limit = limit
        self.number = 0
        self.record_chars = 0  # reset by the reader loop after each record
        self.record_start = 1

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(self.limit + 1)  # never holds more than the limit
        if not line:
            raise StopIteration
        self.number += 1
        if not self.record_chars:
            self.record_start = self.number
        self.record_chars += len(line)
        if self.record_chars > self.limit:
            if self.record_start == self.number:
                raise FileFormatError(f"line {self.number} is too long: a record may hold at most "
                                      f"{self.limit:,} characters", field="file")
            raise FileFormatError(f"the record from line {self.record_start} to line {self.number} is too long "
                                  f"(a quote left open?): a record may hold at most {self.limit:,} characters",
                                  field="file")
        return line
