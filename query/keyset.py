"""Pages of GET /contacts in any sort order, by keyset: a cursor page costs what the first page costs.

A page after a cursor starts from the sort key and id of the last contact of the
previous page (``Position``) and reads forward in an index on (account, sort key, id)
(projections/schema.sql), so contacts inserted meanwhile neither shift nor repeat it,
and page 40,000 reads as many index entries as page 1. Names sort case-insensitively,
and contacts without one come last in both directions: the page is read from the
named contacts first, then from those without a name (the NULL end of the same
index), ordered by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from query.contacts import COLUMNS, ContactFilter, _counted_total, counted_matches, to_contact, walk_search
from query.models import ContactOut

#: Sort field → (key expression over ``c``, key may be NULL).
SORT_KEYS: dict[str, tuple[str, bool]] = {
    "createdAt": ("c.created_at", False),
    "updatedAt": ("c.updated_at", False),
    "firstName": ("lower(c.first_name)", True),
    "lastName": ("lower(c.last_name)", True),
    "phone": ("c.phone", False),
}
DEFAULT_SORT = "-createdAt"


@dataclass(frozen=True)
class Sort:
    """A sort order of GET /contacts: a field of ``SORT_KEYS``, ascending or descending."""

    field: str
    descending: bool

    @classmethod
    def parse(cls, text: str) -> "Sort":
        """``createdAt`` or ``-createdAt`` (descending); ValueError for a field that cannot be sorted on."""
        field = text.removeprefix("-")
        if field not in SORT_KEYS:
            raise ValueError(f"cannot sort on {field!r}: use one of {', '.join(SORT_KEYS)}, with - for descending")
        return cls(field, text.startswith("-"))

    def __str__(self) -> str:
        return ("-" if self.descending else "") + self.field

    @property
    def key(self) -> sql.Composable:
        return sql.SQL(SORT_KEYS[self.field][0])

    @property
    def nullable(self) -> bool:
        return SORT_KEYS[self.field][1]

    @property
    def is_time(self) -> bool:
        return self.field in ("createdAt", "updatedAt")

    @property
    def direction(self) -> sql.Composable:
        return sql.SQL("DESC" if self.descending else "ASC")

    @property
    def after(self) -> sql.Composable:
        """The comparison that means 'comes after' in this order."""
        return sql.SQL("<" if self.descending else ">")


@dataclass(frozen=True)
class Position:
    """Where a page starts: right after the contact with this sort key and id."""

    key: datetime | str | None
    id: UUID


@dataclass(frozen=True)
class SortedPage:
    contacts: list[ContactOut]
    total: int
    next: Position | None  # the last contact's position, when more follow


def sorted_page(pool: ConnectionPool, account_id: UUID, flt: ContactFilter, sort: Sort, page_size: int, *,
                after: Position | None = None, offset: int = 0) -> SortedPage:
    """The page after ``after`` (or at ``offset``), with the exact total, in one snapshot."""
    where, params = flt.where(account_id)
    with pool.connection() as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        total, active = _total(conn, account_id, flt, where, params)
        rows: list[tuple] = []
        if total:
            rows = _rows(conn, flt, sort, where, params, after, offset, page_size + 1, total, active)
        conn.execute("COMMIT")
    more = len(rows) > page_size
    rows = rows[:page_size]
    last = rows[-1] if more else None
    return SortedPage(contacts=[to_contact(r[:-1]) for r in rows], total=total,
                      next=Position(key=last[-1], id=last[0]) if last else None)


def _total(conn: Any, account_id: UUID, flt: ContactFilter, where: sql.Composable,
           params: dict) -> tuple[int, int]:
    """(matching contacts, active contacts of the account), the first from counters when they answer."""
    total = _counted_total(conn, account_id, flt)
    return (total, 0) if total is not None else counted_matches(conn, flt, where, params)


def _rows(conn: Any, flt: ContactFilter, sort: Sort, where: sql.Composable, params: dict,
          after: Position | None, offset: int, limit: int, total: int, active: int) -> list[tuple]:
    """Up to ``limit`` rows (COLUMNS and the sort key) after ``after``, skipping ``offset``."""
    if flt.term and not walk_search(total, active, offset, limit):
        return _sorted_matches(conn, sort, where, params, after, offset, limit)
    if flt.term:
        # As page_contacts does: the count says walking the index in order finds the page
        # sooner than sorting the matches; close the other way for this transaction.
        conn.execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off")
    if flt.list_walk and sort.field == "createdAt":
        return _list_walk(conn, flt, sort, params, after, offset, limit)
    if not sort.nullable:
        return _segment(conn, sort, where, params, after, offset, limit, named=None)
    # Named contacts first, then the ones without a name (in id order), both from one index.
    rows: list[tuple] = []
    if after is None or after.key is not None:
        rows = _segment(conn, sort, where, params, after, offset, limit, named=True)
        if len(rows) == limit:
            return rows
        if offset:
            named = conn.execute(sql.SQL("SELECT count(*) FROM contacts c WHERE {} AND {} IS NOT NULL").format(
                where, sort.key), params).fetchone()[0]
            offset = max(offset - named, 0)
        after = None
    return rows + _segment(conn, sort, where, params, after, offset, limit - len(rows), named=False)


def _segment(conn: Any, sort: Sort, where: sql.Composable, params: dict, after: Position | None, offset: int,
             limit: int, *, named: bool | None) -> list[tuple]:
    """Rows in (key, id) order from the sort's index: all, only named (True) or only unnamed (False)."""
    clauses = [where]
    if named is not None:
        clauses.append(sql.SQL("{} IS {} NULL").format(sort.key, sql.SQL("NOT" if named else "")))
    if after is not None and after.key is None:
        clauses.append(sql.SQL("c.id {} %(after_id)s").format(sort.after))
    elif after is not None:
        clauses.append(sql.SQL("({}, c.id) {} (%(after_key)s, %(after_id)s)").format(sort.key, sort.after))
    return conn.execute(sql.SQL(
        "SELECT {columns}, {key} FROM contacts c WHERE {where} ORDER BY {key} {d}, c.id {d}"
        " LIMIT %(limit)s OFFSET %(offset)s").format(
            columns=COLUMNS, key=sort.key, where=sql.SQL(" AND ").join(clauses), d=sort.direction),
        {**params, **_after_params(after), "limit": limit, "offset": offset}).fetchall()


def _list_walk(conn: Any, flt: ContactFilter, sort: Sort, params: dict, after: Position | None, offset: int,
               limit: int) -> list[tuple]:
    """A list's page by creation time, from its memberships' own index (only its members are read)."""
    members = flt.member_conditions()
    if after is not None:
        members = sql.SQL("{} AND (m.contact_created_at, m.contact_id) {} (%(after_key)s, %(after_id)s)").format(
            members, sort.after)
    return conn.execute(sql.SQL(
        "SELECT {columns}, c.created_at FROM contacts c JOIN (SELECT m.contact_id AS id FROM"
        " contact_list_memberships m WHERE {members} ORDER BY m.contact_created_at {d}, m.contact_id {d}"
        " LIMIT %(limit)s OFFSET %(offset)s) p ON p.id = c.id WHERE c.account_id = %(account)s"
        " ORDER BY c.created_at {d}, c.id {d}").format(columns=COLUMNS, members=members, d=sort.direction),
        {**params, **_after_params(after), "limit": limit, "offset": offset}).fetchall()


def _sorted_matches(conn: Any, sort: Sort, where: sql.Composable, params: dict, after: Position | None,
                    offset: int, limit: int) -> list[tuple]:
    """A search's page from its matches (trigram index) sorted: cheaper than walking the sort
    index when the term is rare (see page_contacts)."""
    condition = sql.SQL("true")
    if after is not None and after.key is None:
        condition = sql.SQL("m.k IS NULL AND m.id {} %(after_id)s").format(sort.after)
    elif after is not None:
        condition = sql.SQL("(m.k IS NULL OR (m.k, m.id) {} (%(after_key)s, %(after_id)s))").format(sort.after)
    return conn.execute(sql.SQL(
        "WITH m AS MATERIALIZED (SELECT c.id, {key} AS k FROM contacts c WHERE {where}),"
        " p AS (SELECT id, k FROM m WHERE {condition} ORDER BY k IS NULL, k {d}, id {d}"
        " LIMIT %(limit)s OFFSET %(offset)s)"
        " SELECT {columns}, p.k FROM p JOIN contacts c ON c.id = p.id ORDER BY p.k IS NULL, p.k {d}, p.id {d}").format(
            key=sort.key, where=where, condition=condition, d=sort.direction, columns=COLUMNS),
        {**params, **_after_params(after), "limit": limit, "offset": offset}).fetchall()


def _after_params(after: Position | None) -> dict[str, Any]:
    return {} if after is None else {"after_key": after.key, "after_id": after.id}
