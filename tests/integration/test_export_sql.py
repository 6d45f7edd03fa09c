"""The CSV that PostgreSQL writes for the export equals the csv module's, byte for byte.

``query.exports.csv_export`` formats each line in SQL (formula neutralising, tag join,
RFC 4180 quoting); ``csv_row`` below + ``csv.writer`` (what the export was before) is
the reference it must equal for any text a contact can hold. Rows go straight into the read table of a fresh database.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from command.imports.cells import FORMULA_STARTS, TAG_SEPARATOR, unneutralise
from projections.read_model import create_tables
from query.contacts import ContactFilter
from query.exports import CSV_COLUMNS, csv_export, json_export
from query.models import CONTACT_FIELDS, ContactOut
from tests.import_samples import neutralise

ACCOUNT = uuid.UUID("00000000-0000-4000-8000-0000000000e1")
# Text that exercises every rule: formula starts, quotes (both kinds), the delimiters,
# CR and LF, the tag separator, non-ASCII, and ordinary letters.
ALPHABET = st.sampled_from(list(FORMULA_STARTS) + list("'\",;\r\n x=Aé€😀\\%_{}"))
TEXT = st.text(ALPHABET, max_size=12)
OPTIONAL = st.none() | TEXT
TAG = st.text(ALPHABET.filter(lambda ch: ch not in ";,"), min_size=1, max_size=8)


@pytest.fixture(scope="module")
def pool(postgres_server: str) -> Iterator[ConnectionPool]:
    from tests.support import new_database

    url = new_database(postgres_server)
    with psycopg.connect(url, autocommit=True) as conn:
        create_tables(conn)
    with ConnectionPool(url, min_size=1, max_size=2, open=True) as p:
        yield p


def csv_row(contact: ContactOut) -> tuple[str, ...]:
    """The reference: each cell neutralised (each tag before the join), the phone as it is."""
    def cell(value: str | None) -> str:
        return neutralise(value) if value else ""

    return (cell(contact.first_name), cell(contact.last_name), contact.phone, cell(contact.email),
            TAG_SEPARATOR.join(neutralise(tag) for tag in contact.tags), cell(contact.notes))


def _contact(i: int, first: str | None, last: str | None, email: str | None, tags: list[str],
             notes: str | None) -> ContactOut:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
    return ContactOut(id=uuid.uuid4(), first_name=first, last_name=last, phone=f"+2547110{i:05d}", email=email,
                      tags=tags, notes=notes, is_opted_out=False, status="valid", invalid_reason=None,
                      operator="Safaricom", country="KE", list_ids=[], created_at=at, updated_at=at)


def _store(pool: ConnectionPool, contacts: list[ContactOut]) -> None:
    with pool.connection() as conn:
        conn.execute("DELETE FROM contacts WHERE account_id = %s", (ACCOUNT,))
        for c in contacts:
            conn.execute("INSERT INTO contacts (id, account_id, first_name, last_name, phone, email, notes, tags,"
                         " is_opted_out, status, invalid_reason, operator, country, list_ids, created_at, updated_at)"
                         " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                         (c.id, ACCOUNT, c.first_name, c.last_name, c.phone, c.email, c.notes, c.tags,
                          c.is_opted_out, c.status, c.invalid_reason, c.operator, c.country, c.list_ids,
                          c.created_at, c.updated_at))


def _reference(contacts: list[ContactOut]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for c in sorted(contacts, key=lambda c: c.created_at, reverse=True):
        writer.writerow(csv_row(c))
    return buffer.getvalue().encode("utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(OPTIONAL, OPTIONAL, OPTIONAL, st.lists(TAG, max_size=4), OPTIONAL), max_size=6))
def test_sql_csv_equals_the_csv_module_for_any_text(pool: ConnectionPool, rows: list) -> None:
    contacts = [_contact(i, *row) for i, row in enumerate(rows)]
    _store(pool, contacts)
    exported = b"".join(csv_export(pool, ACCOUNT, ContactFilter()))
    assert exported == _reference(contacts)
    # And the importer's reading of it gives every value back.
    parsed = list(csv.reader(io.StringIO(exported.decode("utf-8"), newline="")))[1:]
    for row, c in zip(parsed, sorted(contacts, key=lambda c: c.created_at, reverse=True), strict=True):
        assert [unneutralise(row[0]), unneutralise(row[1]), unneutralise(row[5])] == \
            [c.first_name or "", c.last_name or "", c.notes or ""]
        assert [unneutralise(t) for t in row[4].split(TAG_SEPARATOR)] == (c.tags or [""])


def test_sql_csv_comes_in_batches_and_ends_after_the_last_row(pool: ConnectionPool) -> None:
    contacts = [_contact(i, f"F{i}", None, None, ["t"], None) for i in range(25)]
    _store(pool, contacts)
    for batch, expected_chunks in ((10, 3), (5, 5), (25, 1), (100, 1)):
        chunks = list(csv_export(pool, ACCOUNT, ContactFilter(), batch=batch))
        assert len(chunks) == expected_chunks, batch
        assert b"".join(chunks) == _reference(contacts)


def test_every_field_of_a_contact_is_a_column_of_the_read_table(pool: ConnectionPool) -> None:
    """The list queries, the exports and the projector read and write each field by its column's name."""
    with pool.connection() as conn:
        columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns"
                                              " WHERE table_schema = current_schema() AND table_name = 'contacts'")}
    assert [f.name for f in CONTACT_FIELDS if f.name not in columns] == []


def test_sql_csv_of_no_contacts_is_the_header(pool: ConnectionPool) -> None:
    _store(pool, [])
    assert list(csv_export(pool, ACCOUNT, ContactFilter())) == [b"first_name,last_name,phone,email,tags,notes\r\n"]


# --- JSON -----------------------------------------------------------------------------------

MOMENT = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                      timezones=st.just(UTC)) | st.just(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


JSON_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10)
CONTACTS = st.lists(st.builds(
    ContactOut, id=st.uuids(), first_name=st.none() | JSON_TEXT, last_name=st.none() | JSON_TEXT,
    phone=st.from_regex(r"\+2547\d{8}", fullmatch=True), email=st.none() | JSON_TEXT,
    tags=st.lists(JSON_TEXT, max_size=3), notes=st.none() | JSON_TEXT, is_opted_out=st.booleans(),
    status=st.sampled_from(["valid", "invalid"]), invalid_reason=st.none() | st.just("unknown_network"),
    operator=st.none() | JSON_TEXT, country=st.none() | st.just("KE"), list_ids=st.lists(st.uuids(), max_size=3),
    created_at=MOMENT, updated_at=MOMENT), max_size=5, unique_by=lambda c: c.created_at)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(CONTACTS)
def test_sql_json_equals_msgspec_byte_for_byte(pool: ConnectionPool, contacts: list[ContactOut]) -> None:
    _store(pool, contacts)
    exported = b"".join(json_export(pool, ACCOUNT, ContactFilter()))
    ordered = sorted(contacts, key=lambda c: (c.created_at, c.id), reverse=True)
    assert exported == msgspec.json.encode(ordered)


def test_sql_json_comes_in_batches_and_is_one_array(pool: ConnectionPool) -> None:
    contacts = [_contact(i, f"F{i}", None, None, ["t"], None) for i in range(20)]
    _store(pool, contacts)
    ordered = sorted(contacts, key=lambda c: c.created_at, reverse=True)
    for batch, expected_chunks in ((10, 3), (7, 3), (20, 2), (100, 1)):
        chunks = list(json_export(pool, ACCOUNT, ContactFilter(), batch=batch))
        assert len(chunks) == expected_chunks, batch
        assert b"".join(chunks) == msgspec.json.encode(ordered)
    _store(pool, [])
    assert b"".join(json_export(pool, ACCOUNT, ContactFilter(), batch=10)) == b"[]"
