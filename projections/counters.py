"""The read model's counters: list totals, the account's totals, the tag index and the time counts.

Each adds a delta in one statement (``INSERT … ON CONFLICT DO UPDATE`` or ``UPDATE``),
inside the projector's transaction, so concurrent writers' counts add up exactly.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import Cursor


def counts_delta(cur: Cursor[Any], list_ids: list[UUID], delta: int, opted_out: bool) -> None:
    """``delta`` active members for ``list_ids``, opted out or not."""
    if list_ids:
        cur.execute("UPDATE contact_lists SET contact_count = contact_count + %s,"
                    " opted_out_count = opted_out_count + %s WHERE id = ANY(%s)",
                    (delta, delta if opted_out else 0, list(list_ids)))


def account_delta(cur: Cursor[Any], account_id: UUID, active: int, opted_out: int, created_at: Any) -> None:
    """Keep the account's active / opted-out totals (GET /contacts reads them as totals), and
    those of the hour and the second of ``created_at`` (where deep pages start)."""
    if active or opted_out:
        cur.execute("INSERT INTO account_contact_counts (account_id, active, opted_out) VALUES (%s, %s, %s)"
                    " ON CONFLICT (account_id) DO UPDATE SET active = account_contact_counts.active"
                    " + EXCLUDED.active, opted_out = account_contact_counts.opted_out + EXCLUDED.opted_out",
                    (account_id, active, opted_out))
        time_counts(cur, account_id, [""], [active], [opted_out], created_at)


def tag_counts(cur: Cursor[Any], account_id: UUID, tags: list[str], active: list[int], opted_out: list[int],
               created_at: Any) -> None:
    """Add to the tag index's counts of ``tags`` and to their time counts."""
    if not tags:
        return
    time_counts(cur, account_id, tags, active, opted_out, created_at)
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
    """One contact (opted out or not) gained (+1) or lost (-1) ``tags``."""
    tags = list(tags)
    tag_counts(cur, account_id, tags, [delta] * len(tags), [delta if opted_out else 0] * len(tags), created_at)


def time_counts(cur: Cursor[Any], account_id: UUID, tags: list[str], active: list[int], opted_out: list[int],
                created_at: Any) -> None:
    """Add ``active`` and ``opted_out`` to the counts of ``tags`` ('' is every contact) for
    the hour and the second of ``created_at``."""
    cur.execute("INSERT INTO contact_time_counts (account_id, tag, unit, bucket, active, opted_out)"
                " SELECT %s, t, u, date_trunc(u, %s::timestamptz, 'UTC'), n, o"
                " FROM unnest(%s::text[], %s::int[], %s::int[]) AS x(t, n, o),"
                " unnest(ARRAY['hour', 'second']) AS u"
                " ON CONFLICT (account_id, tag, unit, bucket) DO UPDATE"
                " SET active = contact_time_counts.active + EXCLUDED.active,"
                " opted_out = contact_time_counts.opted_out + EXCLUDED.opted_out",
                (account_id, created_at, tags, active, opted_out))
    if any(n < 0 for n in active):
        # Rows that fell to zero go, as in contact_tags: a tag only a trashed or purged
        # contact had must not stay readable here (tags are personal data, docs/privacy.md).
        cur.execute("DELETE FROM contact_time_counts WHERE account_id = %s AND tag = ANY(%s)"
                    " AND bucket IN (date_trunc('hour', %s::timestamptz, 'UTC'),"
                    " date_trunc('second', %s::timestamptz, 'UTC')) AND active <= 0 AND opted_out <= 0",
                    (account_id, tags, created_at, created_at))
