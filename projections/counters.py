"""The read model's counters: list totals, the account's totals, the tag index and the time counts.

Each adds a delta in one statement (``INSERT … ON CONFLICT DO UPDATE`` or ``UPDATE``),
inside the projector's transaction, so concurrent writers' counts add up exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from itertools import chain, groupby
from operator import itemgetter
from typing import Any
from uuid import UUID

from psycopg import Cursor

#: Whether the second of ``{ts}`` has millisecond counts: an import counted it (``millisecond_counts``).
#: Such a second then has them complete, so every later change to a contact of that second
#: changes its millisecond's count too, in the same statement as its hour's and second's.
#: (Both are SQL functions in projections/schema.sql: contact.created's projection uses them too.)
SPLIT_SECOND = "split_second({account}, {ts})"
#: The units whose counts a change to a contact created at ``{ts}`` changes.
TIME_UNITS = "time_units({account}, {ts})"

#: Add to the time counts of some tags ('' is every contact) for one contact's time (or a second's).
TIME_COUNTS = """
INSERT INTO contact_time_counts (account_id, tag, unit, bucket, active, opted_out)
SELECT %(account)s, t, u, date_trunc(u, %(ts)s::timestamptz, 'UTC'), n, o
FROM unnest(%(tags)s::text[], %(active)s::int[], %(opted)s::int[]) AS x(t, n, o), unnest({units}) AS u
ON CONFLICT (account_id, tag, unit, bucket) DO UPDATE SET active = contact_time_counts.active + EXCLUDED.active,
    opted_out = contact_time_counts.opted_out + EXCLUDED.opted_out"""
#: An import batch's millisecond counts, in one statement. A second the batch is the first
#: import to reach is counted whole from the contacts table (the batch's rows are in it
#: already, and any contact created there one by one before), so its milliseconds add up to
#: it from then on; a second counted before gets the batch's own counts (``batch``).
MILLISECOND_COUNTS = """
WITH batch AS (
    SELECT * FROM unnest(%(tags)s::text[], %(buckets)s::timestamptz[], %(active)s::int[], %(opted)s::int[])
        AS b(tag, bucket, n, o)
), fresh AS (
    -- Asked once per second, not per row: split_second is a function (projections/schema.sql).
    SELECT second FROM (SELECT DISTINCT date_trunc('second', bucket, 'UTC') AS second FROM batch) s
    WHERE NOT """ + SPLIT_SECOND.format(account="%(account)s", ts="s.second") + """
)
INSERT INTO contact_time_counts (account_id, tag, unit, bucket, active, opted_out)
SELECT %(account)s, tag, 'millisecond', bucket, sum(n), sum(o) FROM (
    SELECT tag, bucket, n, o FROM batch WHERE date_trunc('second', bucket, 'UTC') NOT IN (SELECT second FROM fresh)
    UNION ALL
    SELECT t.tag, date_trunc('millisecond', c.created_at, 'UTC'), 1, c.is_opted_out::int
    FROM fresh CROSS JOIN LATERAL (
        -- Per fresh second, its contacts read from the (account, created_at) index, and nothing
        -- when no second is fresh. Joined flat, a planner without statistics (a new contacts
        -- table: the first import) walked the account's every contact for every batch, 30 ms
        -- at 50,000; OFFSET 0 keeps the subquery whole, the ORDER BY picks the index.
        SELECT c.created_at, c.is_opted_out, c.tags FROM contacts c
        WHERE c.account_id = %(account)s AND c.deleted_at IS NULL
            AND c.created_at >= fresh.second AND c.created_at < fresh.second + interval '1 second'
        ORDER BY c.created_at DESC OFFSET 0
    ) c CROSS JOIN LATERAL unnest(array_append(c.tags, '')) AS t(tag)
) counted GROUP BY tag, bucket
ON CONFLICT (account_id, tag, unit, bucket) DO UPDATE SET active = contact_time_counts.active + EXCLUDED.active,
    opted_out = contact_time_counts.opted_out + EXCLUDED.opted_out"""


def counts_delta(cur: Cursor[Any], list_ids: list[UUID], delta: int, opted_out: bool) -> None:
    """``delta`` active members for ``list_ids``, opted out or not."""
    if list_ids:
        cur.execute("UPDATE contact_lists SET contact_count = contact_count + %s,"
                    " opted_out_count = opted_out_count + %s WHERE id = ANY(%s)",
                    (delta, delta if opted_out else 0, list(list_ids)))


def account_delta(cur: Cursor[Any], account_id: UUID, active: int, opted_out: int, created_at: Any,
                  millisecond: bool = True) -> None:
    """Keep the account's active / opted-out totals (GET /contacts reads them as totals), and
    those of the hour and the second of ``created_at`` (where deep pages start), and of its
    millisecond where its second has those (``millisecond`` false: ``created_at`` is a second's start)."""
    if active or opted_out:
        cur.execute("INSERT INTO account_contact_counts (account_id, active, opted_out) VALUES (%s, %s, %s)"
                    " ON CONFLICT (account_id) DO UPDATE SET active = account_contact_counts.active"
                    " + EXCLUDED.active, opted_out = account_contact_counts.opted_out + EXCLUDED.opted_out",
                    (account_id, active, opted_out))
        time_counts(cur, account_id, [""], [active], [opted_out], created_at, millisecond)


def tag_counts(cur: Cursor[Any], account_id: UUID, tags: list[str], active: list[int], opted_out: list[int],
               created_at: Any, millisecond: bool = True) -> None:
    """Add to the tag index's counts of ``tags`` and to their time counts."""
    if not tags:
        return
    time_counts(cur, account_id, tags, active, opted_out, created_at, millisecond)
    cur.execute(
        "INSERT INTO contact_tags (account_id, tag, contact_count, opted_out_count)"
        " SELECT %s, t, n, o FROM unnest(%s::text[], %s::int[], %s::int[]) AS x(t, n, o)"
        " ON CONFLICT (account_id, tag) DO UPDATE SET contact_count = contact_tags.contact_count"
        " + EXCLUDED.contact_count, opted_out_count = contact_tags.opted_out_count + EXCLUDED.opted_out_count",
        (account_id, tags, active, opted_out))
    if any(n < 0 for n in active):
        cur.execute("DELETE FROM contact_tags WHERE account_id = %s AND tag = ANY(%s) AND contact_count <= 0",
                    (account_id, tags))


def tags_delta(cur: Cursor[Any], account_id: UUID, tags: list[str], delta: int, created_at: Any,
               opted_out: bool) -> None:
    """One contact (opted out or not) gained (+1) or lost (-1) ``tags``. (A change of tags is
    projected by ``project_contact_updated``, projections/schema.sql.)"""
    tags = list(tags)
    tag_counts(cur, account_id, tags, [delta] * len(tags), [delta if opted_out else 0] * len(tags), created_at)


def time_counts(cur: Cursor[Any], account_id: UUID, tags: list[str], active: list[int], opted_out: list[int],
                created_at: Any, millisecond: bool = True) -> None:
    """Add ``active`` and ``opted_out`` to the counts of ``tags`` ('' is every contact) for
    the hour and the second of ``created_at``, and for its millisecond if its second has
    millisecond counts and ``millisecond`` (false: ``created_at`` is a second an import batch counts)."""
    units = TIME_UNITS if millisecond else "ARRAY['hour', 'second']"
    params = {"account": account_id, "ts": created_at, "tags": tags, "active": active, "opted": opted_out}
    cur.execute(TIME_COUNTS.replace("{units}", units.format(account="%(account)s", ts="%(ts)s::timestamptz")),
                params)
    if any(n < 0 for n in active):
        # Rows that fell to zero go, as in contact_tags: a tag only a trashed or purged
        # contact had must not stay readable here (tags are personal data, docs/privacy.md).
        # (A millisecond's row gone with its last contact: its second keeps its others'.)
        cur.execute("DELETE FROM contact_time_counts WHERE account_id = %(account)s AND tag = ANY(%(tags)s)"
                    " AND bucket IN (date_trunc('hour', %(ts)s::timestamptz, 'UTC'),"
                    " date_trunc('second', %(ts)s::timestamptz, 'UTC'),"
                    " date_trunc('millisecond', %(ts)s::timestamptz, 'UTC')) AND active <= 0 AND opted_out <= 0",
                    params)


def millisecond_counts(cur: Cursor[Any], account_id: UUID, contacts: list[dict], created: list[Any]) -> None:
    """Count an import batch per millisecond of ``created_at`` too (``MILLISECOND_COUNTS``).

    An import's rows are a microsecond apart, so one import of a million rows fills one
    second: per-second counts left a deep page to skip up to a million index entries
    within it; per millisecond, at most a thousand. Only imports start them (later single
    writes in such a second keep them, ``TIME_UNITS``): contacts created one by one fill a
    second far more thinly, and a row per tag more for every single create would cost the
    write path what its pages do not need. ``created`` is each contact's ``created_at``.
    """
    tags: list[str] = []
    buckets: list[Any] = []
    active: list[int] = []
    opted: list[int] = []
    # An import's contacts come in row order, a microsecond apart: a millisecond's are
    # neighbours, counted together by Counter over their tags (in C), where a Counter of
    # (tag, millisecond) keys took two look-ups a tag a contact. A millisecond met twice
    # (contacts out of order) gives two entries, which the statement sums.
    for bucket, group in groupby(zip(truncated(created, ONE_MILLISECOND), contacts), key=itemgetter(0)):
        members = [c for _, c in group]
        out = [c for c in members if c["is_opted_out"]]
        counted = Counter(chain.from_iterable([c["tags"] for c in members]))
        opted_out = Counter(chain.from_iterable([c["tags"] for c in out])) if out else {}
        tags.append("")
        active.append(len(members))
        opted.append(len(out))
        tags.extend(counted)
        active.extend(counted.values())
        opted.extend([opted_out.get(t, 0) for t in counted])
        buckets.extend([bucket] * (len(counted) + 1))
    if tags:
        cur.execute(MILLISECOND_COUNTS, {"account": account_id, "tags": tags, "buckets": buckets, "active": active,
                                         "opted": opted})


ONE_SECOND = timedelta(seconds=1)
ONE_MILLISECOND = timedelta(milliseconds=1)


def truncated(times: Iterable[datetime], unit: timedelta) -> Iterator[datetime]:
    """Each time truncated to its second or millisecond (``unit``), as date_trunc does in UTC.

    An import's times are a microsecond apart, so most share the bucket of the one before:
    it is reused while they fall in it (a comparison, not a new datetime a row).
    """
    start = end = None
    for at in times:
        if start is None or not start <= at < end:
            micro = at.microsecond - at.microsecond % (unit.microseconds or 1_000_000)
            start = at.replace(microsecond=micro)
            end = start + unit
        yield start
