"""Queries over the ``contacts`` read table, composed with psycopg.sql."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg_pool import ConnectionPool

from query.models import CONTACT_FIELDS, ContactOut, ContactPage
from query.tenancy import SNAPSHOT, tenant_transaction

_NAMES = tuple(f.name for f in CONTACT_FIELDS)
#: A contact's columns (each field of ``ContactOut`` is the column of its name), read by ``to_contact``.
COLUMNS = sql.SQL(", ").join(sql.Identifier("c", name) for name in _NAMES)


def to_contact(row: tuple) -> ContactOut:
    """The contact of a row that starts with ``COLUMNS``."""
    return ContactOut(**dict(zip(_NAMES, row)))


@dataclass(frozen=True)
class ContactFilter:
    """The filters of GET /contacts, shared by the exports."""

    search: str | None = None
    list_id: UUID | None = None
    is_opted_out: bool | None = None
    tags: list[str] = field(default_factory=list)

    @property
    def term(self) -> str:
        """The search term, stripped ('' when there is none)."""
        return (self.search or "").strip()

    @property
    def list_walk(self) -> bool:
        """``listId``, alone or with ``isOptedOut`` and tags: the page can be read from the list's
        memberships in list order (they carry what those filters test), and so can the total."""
        return self.list_id is not None and not self.term

    def member_conditions(self) -> sql.Composable:
        """What a list's membership (``m``) must carry to match the filters besides the list."""
        conditions = [sql.SQL("m.list_id = %(list_id)s AND m.contact_active")]
        if self.is_opted_out is not None:
            conditions.append(sql.SQL("m.contact_opted_out = %(opted_out)s"))
        if self.tags:
            conditions.append(sql.SQL("m.contact_tags @> %(tags)s::text[]"))
        return sql.SQL(" AND ").join(conditions)

    @property
    def time_counted(self) -> bool:
        """The projector's per-hour and per-second counts answer this filter: none, ``isOptedOut``,
        one tag, or one tag and ``isOptedOut``."""
        return not self.term and self.list_id is None and len(self.tags) <= 1

    def where(self, account_id: UUID) -> tuple[sql.Composable, dict]:
        clauses = [sql.SQL("c.account_id = %(account)s"), sql.SQL("c.deleted_at IS NULL")]
        params: dict = {"account": account_id}
        if self.list_id is not None:
            clauses.append(sql.SQL("EXISTS (SELECT 1 FROM contact_list_memberships m"
                                   " WHERE m.list_id = %(list_id)s AND m.contact_id = c.id)"))
            params["list_id"] = self.list_id
        if self.is_opted_out is not None:
            clauses.append(sql.SQL("c.is_opted_out = %(opted_out)s"))
            params["opted_out"] = self.is_opted_out
        if self.tags:
            clauses.append(sql.SQL("c.tags @> %(tags)s::text[]"))
            params["tags"] = self.tags
        term = self.term
        if term:
            like = "%" + re.sub(r"([%_\\])", r"\\\1", " ".join(term.lower().split())) + "%"
            params["name_like"] = like
            # A leading 0 is the national trunk prefix ("0712…" is "+254 712…"): drop it.
            digits = phone_digits(term).lstrip("0")
            if digits:
                params["phone_like"] = f"%{digits}%"
                clauses.append(sql.SQL("(c.search_name LIKE %(name_like)s OR c.search_phone LIKE %(phone_like)s)"))
            else:
                clauses.append(sql.SQL("c.search_name LIKE %(name_like)s"))
        return sql.SQL(" AND ").join(clauses), params


#: A term read as (part of) a phone number: digits written with spaces, ``+``, ``-``, ``.`` or
#: parentheses, at least three digits. Any other term searches names only: "Ryw1" or "Room 101b"
#: is a name, and searching phones for its digits matched every number holding a 1.
PHONE_TERM = re.compile(r"[0-9\s+\-.()]+")


def phone_digits(term: str) -> str:
    """The digits of a term that reads as a phone number, else '' (the term is searched in names only)."""
    digits = re.sub(r"[^0-9]", "", term) if PHONE_TERM.fullmatch(term) else ""
    return digits if len(digits) >= 3 else ""


#: From this many index entries to skip, a page starts from the time counts (if they answer its filter).
ANCHOR_MIN_SKIP = 10_000
#: A filtered page (a tag, ``isOptedOut``) starts from the counts from a tenth of that many
#: matches skipped: its walk reads each contact's row to test the filter, not the index
#: alone, and a rare filter walks many contacts per match. At 200,000 contacts (in-process,
#: p50, busy machine): ``tags=vip`` page 301 took 93 ms walking, 18 ms from the counts;
#: ``isOptedOut=true`` 110 → 17 ms; unfiltered pages there walk the index faster (6 vs 9 ms).
FILTERED_SKIP_FACTOR = 10
#: From this offset, a search's page is sorted from its matches. Below it, walking the
#: contacts in order stops after the page (a common term's first pages: 5 ms); above it,
#: that walk grows with the offset and the rarity of the term (a term matching 0.15 % of
#: a million walks 660,000 contacts for page 41), while sorting the matches costs about
#: what counting them does.
SEARCH_MIN_SKIP = 1_000


def page_contacts(pool: ConnectionPool, account_id: UUID, flt: ContactFilter, page: int, page_size: int,
                  anchor_min_skip: int = ANCHOR_MIN_SKIP, search_min_skip: int = SEARCH_MIN_SKIP) -> ContactPage:
    """One page, newest first (then id), with the exact total.

    The total comes first: from the counters the projector keeps when the filter is
    one they answer, else from ``count(*)``. A page in the older half is read from the
    other end (ascending, with the mirrored offset) so the last pages cost what the
    first ones do. Either way the offset is skipped on index entries only before the
    rows are fetched (a "deferred join"). A page deep in the middle of the list
    (unfiltered, or filtered by ``isOptedOut``, one tag, or both) starts at the second its first
    contact was created, found from the projector's per-hour and per-second counts
    (``_time_anchor``), so only the contacts of that one second are skipped; in a second an
    import filled, at its millisecond, from the per-millisecond counts imports keep. A page of
    one list (``listId``, with or without ``isOptedOut`` and tags) walks that list's memberships,
    which carry each contact's ``created_at``, trashed and opted-out state and tags, not
    every contact of the account; they also give its total when no counter does. A
    deep page of a search sorts the search's matches, which it counts in the same pass.
    """
    where, params = flt.where(account_id)
    offset = (page - 1) * page_size
    # One snapshot for the total and the page, so they agree (one round trip to open it).
    with tenant_transaction(pool, account_id, SNAPSHOT) as conn:
        total = _counted_total(conn, account_id, flt)
        rows: list[tuple] | None = None
        if total is None and offset >= search_min_skip and flt.term:
            total, rows = _sorted_matches(conn, where, params, offset, page_size)
        elif total is None:
            total, active = counted_matches(conn, flt, where, params)
            if flt.term and offset < total:
                # The planner guesses a term's matches from sampled statistics: guessing a
                # common term rare (98 for 40,096 after one ANALYZE), it fetched and sorted
                # every match (170 ms) instead of walking the contacts in order until the
                # page was full (under 1 ms); guessing a rare one common (1,001 for 295), it
                # walked 85,000 contacts (80 ms) instead of sorting the 295 (3 ms). The
                # count says which; the other way is closed for this transaction.
                if walk_search(total, active or 0, offset, page_size):
                    conn.execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off")
                else:
                    rows = _sorted_matches(conn, where, params, offset, page_size)[1]
        if rows is None:
            rows = _page(conn, account_id, flt, where, params, offset, page_size, total,
                         anchor_min_skip) if offset < total else []
    return ContactPage(contacts=[to_contact(r) for r in rows], total=total, page=page, page_size=page_size)


def counted_matches(conn: Any, flt: ContactFilter, where: sql.Composable, params: dict) -> tuple[int, int]:
    """(matching contacts, active contacts of the account) by counting, for filters no counter answers.

    A list's total counts its matching memberships (if the list is the account's); any other
    filter counts the contacts, and reads the account's active total beside it (a search
    decides from both how to read its page). The second is 0 for a list.
    """
    if flt.list_walk:
        return conn.execute(sql.SQL(
            "SELECT count(*) FROM contact_list_memberships m WHERE {} AND EXISTS (SELECT 1 FROM"
            " contact_lists l WHERE l.id = %(list_id)s AND l.account_id = %(account)s)").format(
                flt.member_conditions()), params).fetchone()[0], 0
    total, active = conn.execute(sql.SQL(
        "SELECT count(*), (SELECT active FROM account_contact_counts WHERE account_id = %(account)s)"
        " FROM contacts c WHERE {}").format(where), params).fetchone()
    return total, active or 0


def walk_search(total: int, active: int, offset: int, page_size: int) -> bool:
    """Whether a search's page is cheaper found by walking the account's contacts in order
    (about ``(offset + page_size) * active / total`` of them, until the page is full) than
    by fetching and sorting its ``total`` matches."""
    return (offset + page_size) * active < total * total


def _sorted_matches(conn: Any, where: sql.Composable, params: dict, offset: int,
                    page_size: int) -> tuple[int, list[tuple]]:
    """A deep page of a search, and its total: its matches once, from the trigram index,
    counted and sorted (counting them, then walking the contacts in order testing the
    pattern, took twice as long)."""
    found = conn.execute(sql.SQL(
        "WITH m AS MATERIALIZED (SELECT c.id, c.created_at FROM contacts c WHERE {where}),"
        " p AS (SELECT id FROM m ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s)"
        " SELECT (SELECT count(*) FROM m), {columns} FROM (SELECT 1) AS one"
        " LEFT JOIN (p JOIN contacts c ON c.id = p.id) ON true"
        " ORDER BY c.created_at DESC, c.id DESC").format(where=where, columns=COLUMNS),
        {**params, "limit": page_size, "offset": offset}).fetchall()
    return found[0][0], [r[1:] for r in found if r[1] is not None]


def _page(conn: Any, account_id: UUID, flt: ContactFilter, where: sql.Composable, params: dict, offset: int,
          page_size: int, total: int, anchor_min_skip: int) -> list[tuple]:
    """The rows of the page at ``offset`` (< ``total``), by the cheapest walk the filter allows."""
    from_end = offset + page_size / 2 > total / 2
    skip = max(total - offset - page_size, 0) if from_end else offset
    if flt.tags or flt.is_opted_out is not None:
        anchor_min_skip //= FILTERED_SKIP_FACTOR
    anchor = _time_anchor(conn, account_id, flt, offset, total) \
        if skip >= anchor_min_skip and flt.time_counted else None
    if anchor is not None:
        from_end = False
        where = sql.SQL("{} AND c.created_at < %(before)s").format(where)
        params = {**params, "limit": page_size, "before": anchor[0], "offset": offset - anchor[1]}
    elif from_end:
        params = {**params, "limit": min(page_size, total - offset), "offset": skip}
    else:
        params = {**params, "limit": page_size, "offset": offset}
    order = sql.SQL("ASC" if from_end else "DESC")
    if flt.list_walk:
        # The list's own index, in list order: only its members are walked, and only in
        # the index (the list is the account's: its total said so).
        ids = sql.SQL(
            "SELECT m.contact_id AS id FROM contact_list_memberships m WHERE {members}"
            " ORDER BY m.contact_created_at {order}, m.contact_id {order}"
            " LIMIT %(limit)s OFFSET %(offset)s").format(members=flt.member_conditions(), order=order)
    else:
        ids = sql.SQL("SELECT c.id FROM contacts c WHERE {where} ORDER BY c.created_at {order}, c.id {order}"
                      " LIMIT %(limit)s OFFSET %(offset)s").format(where=where, order=order)
    return conn.execute(sql.SQL(
        "SELECT {columns} FROM contacts c JOIN ({ids}) p ON p.id = c.id WHERE c.account_id = %(account)s"
        " ORDER BY c.created_at DESC, c.id DESC").format(columns=COLUMNS, ids=ids), params).fetchall()


#: Where the page at ``offset`` (newest first) starts, from the projector's counts: the hour
#: holding its first contact, from the per-hour counts, then the second within it, then the
#: millisecond within that second where the second has millisecond counts (an import
#: counted it). Returns the sums the answer rests on too, to check them, and both bounds:
#: (sum of the hours, the hour's seconds' sum, the hour's count, the second's end, matching
#: contacts newer than the second, the second's count, its milliseconds' sum, the
#: millisecond's end, matching contacts newer than the millisecond).
#: ``{n}`` (``{s_n}``, ``{m_n}``) is the count matching the filter: all active,
#: the opted-out ones, or the others; ``tag`` is '' (every contact) or the one tag.
#: Each level's end (``until``) is a column, not ``bucket + interval`` in the next level's
#: join: under row-level security a condition calling a function that is not LEAKPROOF
#: (``timestamptz + interval``) is not an index bound, and the scan read every later
#: bucket of the account's tag (all the later imports' milliseconds) to filter them.
_ANCHOR = """
WITH hours AS (
    SELECT bucket, {n} AS n, sum({n}) OVER (ORDER BY bucket DESC) AS upto
    FROM contact_time_counts WHERE account_id = %(account)s AND tag = %(tag)s AND unit = 'hour' AND {n} <> 0
), hour AS (
    SELECT bucket, bucket + interval '1 hour' AS until, n, upto - n AS newer FROM hours WHERE upto > %(offset)s
    ORDER BY bucket DESC LIMIT 1
), seconds AS (
    SELECT s.bucket, {s_n} AS n, hour.newer + sum({s_n}) OVER (ORDER BY s.bucket DESC) AS upto,
           sum({s_n}) OVER () AS hour_sum, hour.n AS hour_n
    FROM hour JOIN contact_time_counts s ON s.account_id = %(account)s AND s.tag = %(tag)s AND s.unit = 'second'
        AND {s_n} <> 0
        AND s.bucket >= hour.bucket AND s.bucket < hour.until
), second AS (
    SELECT bucket, bucket + interval '1 second' AS until, n, upto - n AS newer, hour_sum, hour_n FROM seconds
    WHERE upto > %(offset)s ORDER BY bucket DESC LIMIT 1
), millis AS (
    SELECT m.bucket, {m_n} AS n, second.newer + sum({m_n}) OVER (ORDER BY m.bucket DESC) AS upto,
           sum({m_n}) OVER () AS second_sum
    FROM second JOIN contact_time_counts m ON m.account_id = %(account)s AND m.tag = %(tag)s
        AND m.unit = 'millisecond' AND {m_n} <> 0
        AND m.bucket >= second.bucket AND m.bucket < second.until
), milli AS (
    SELECT bucket, upto - n AS newer, second_sum FROM millis WHERE upto > %(offset)s ORDER BY bucket DESC LIMIT 1
)
SELECT (SELECT coalesce(sum(n), 0) FROM hours), hour_sum, hour_n, second.until, second.newer, second.n,
       milli.second_sum, milli.bucket + interval '1 millisecond', milli.newer
FROM second LEFT JOIN milli ON true"""
_ANCHORS = {opted_out: sql.SQL(_ANCHOR.format(n=n.format(""), s_n=n.format("s."), m_n=n.format("m.")))
            for opted_out, n in ((None, "{0}active"), (True, "{0}opted_out"), (False, "({0}active - {0}opted_out)"))}


def _time_anchor(conn: Any, account_id: UUID, flt: "ContactFilter", offset: int,
                 total: int) -> tuple[Any, int] | None:
    """(created_at bound, matching contacts newer than it) for the page at ``offset``, or None.

    The millisecond's bound where its second's milliseconds add up to the second, else the
    second's. None when the counts do not add up to the account's total, or the hour's
    seconds to the hour (a database that predates the counts and has not been rebuilt): the
    page is then found by skipping, as before, never from wrong counts.
    """
    tag = flt.tags[0] if flt.tags else ""
    row = conn.execute(_ANCHORS[flt.is_opted_out], {"account": account_id, "tag": tag, "offset": offset}).fetchone()
    if row is None or row[0] != total or row[1] != row[2]:
        return None
    if row[7] is not None and row[6] == row[5]:
        return row[7], row[8]
    return row[3], row[4]


def _counted_total(conn: Any, account_id: UUID, flt: ContactFilter) -> int | None:
    """The exact total from the projector's counters, for the filters they cover."""
    if flt.term or len(flt.tags) > 1 or (flt.tags and flt.list_id):
        return None
    if flt.list_id is not None:
        row = conn.execute("SELECT contact_count, opted_out_count FROM contact_lists WHERE id = %s"
                           " AND account_id = %s", (flt.list_id, account_id)).fetchone()
    elif flt.tags:
        row = conn.execute("SELECT contact_count, opted_out_count FROM contact_tags WHERE account_id = %s"
                           " AND tag = %s", (account_id, flt.tags[0])).fetchone()
    else:
        row = conn.execute("SELECT active, opted_out FROM account_contact_counts WHERE account_id = %s",
                           (account_id,)).fetchone()
    active, opted_out = row if row else (0, 0)
    if flt.is_opted_out is None:
        return active
    return opted_out if flt.is_opted_out else active - opted_out


#: One contact by its primary key, then its account (and active). Written plainly, a planner
#: without statistics (a new table: a deployment's first minute, a benchmark) took the
#: (account, phone, id) index for both conditions and walked the account's entries: 0.33 ms
#: at 8,000 contacts against 0.01 by the key (EXPLAIN, generic plan, under RLS too).
#: OFFSET 0 keeps the lookup by key whole.
_BY_ID = ("FROM (SELECT * FROM contacts WHERE id = %(id)s OFFSET 0) c"
          " WHERE c.account_id = %(account)s AND c.deleted_at IS NULL")
VERSIONED = sql.SQL("SELECT {}, c.version " + _BY_ID).format(COLUMNS)


def get_contact(pool: ConnectionPool, account_id: UUID, contact_id: UUID) -> ContactOut | None:
    with tenant_transaction(pool, account_id) as conn:
        row = conn.execute(sql.SQL("SELECT {} " + _BY_ID).format(COLUMNS),
                           {"account": account_id, "id": contact_id}).fetchone()
    return to_contact(row) if row else None


def get_contact_versioned(pool: ConnectionPool, account_id: UUID, contact_id: UUID) -> tuple[ContactOut, int] | None:
    """An active contact and its aggregate version (its ETag), read together."""
    with tenant_transaction(pool, account_id) as conn:
        return versioned(conn.execute(VERSIONED, {"account": account_id, "id": contact_id}).fetchone())


def versioned(row: tuple | None) -> tuple[ContactOut, int] | None:
    """The contact and its version from a ``VERSIONED`` row."""
    return (to_contact(row[:-1]), row[-1]) if row else None


def list_tags(pool: ConnectionPool, account_id: UUID) -> list[str]:
    """Distinct tags of the account's active contacts, from the tag index."""
    with tenant_transaction(pool, account_id) as conn:
        rows = conn.execute("SELECT tag FROM contact_tags WHERE account_id = %s AND contact_count > 0"
                            " ORDER BY tag", (account_id,)).fetchall()
    return [r[0] for r in rows]


def list_trash(pool: ConnectionPool, account_id: UUID) -> list[ContactOut]:
    with tenant_transaction(pool, account_id) as conn:
        rows = conn.execute(sql.SQL("SELECT {} FROM contacts c WHERE c.account_id = %s AND c.deleted_at IS NOT NULL"
                                    " ORDER BY c.deleted_at DESC, c.id DESC").format(COLUMNS),
                            (account_id,)).fetchall()
    return [to_contact(r) for r in rows]
