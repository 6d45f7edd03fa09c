"""The read model: contacts (with listIds), memberships, list totals and the tag index.

One projector owns these four tables because they must agree: a list's
``contact_count`` counts its *active* members, so trashing a contact changes the
counts of its lists and the tag index in the same transaction as the contact row.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import singledispatchmethod
from importlib import resources
from typing import Any
from uuid import UUID

from collections import Counter, defaultdict
from datetime import timedelta
from psycopg import Connection, Cursor
from psycopg.types.json import Jsonb

from command.domain import PII_FIELDS, BulkAction, Contact, ContactImport, ContactList

log = logging.getLogger(__name__)
NAME = "read_model"
READ_TABLES = ("contact_lists", "contacts", "contact_list_memberships", "contact_tags", "imports",
               "import_report_rows", "account_contact_counts", "contact_time_counts", "bulk_actions")


def create_tables(conn: Connection[Any]) -> None:
    """Create the read tables if missing (idempotent)."""
    conn.execute(resources.files("projections").joinpath("schema.sql").read_text())
    _warn_if_leaky(conn)


def _warn_if_leaky(conn: Connection[Any]) -> None:
    """Say so at start when searches and tag filters cannot use their indexes under row-level security."""
    leaky = [r[0] for r in conn.execute("SELECT proname FROM pg_proc WHERE proname IN ('textlike', 'arraycontains')"
                                        " AND pronamespace = 'pg_catalog'::regnamespace AND NOT proleakproof")]
    if leaky:
        log.warning("PostgreSQL does not mark %s LEAKPROOF: under row-level security, searches and tag filters"
                    " cannot use their indexes and are slow on large accounts. As a superuser, run once:"
                    " ALTER FUNCTION pg_catalog.textlike(text, text) LEAKPROOF;"
                    " ALTER FUNCTION pg_catalog.arraycontains(anyarray, anyarray) LEAKPROOF;", " and ".join(leaky))


def search_name(first: str | None, last: str | None) -> str:
    return " ".join(p for p in (first, last) if p).lower()


def search_phone(e164: str) -> str:
    """The number's digits; a search term's national trunk zero is dropped at query time."""
    return e164.lstrip("+")


def _array(items: Any) -> str:
    """A PostgreSQL array literal (COPY parses it; much cheaper than psycopg's list dumper)."""
    return "{" + ",".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "}"


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _copy_text(value: str | None) -> str:
    """A value as COPY's text format writes it: NULL is \\N; backslash, tab, newline and CR escaped."""
    if value is None:
        return "\\N"
    if _COPY_SPECIAL.search(value) is None:
        return value
    return _COPY_SPECIAL.sub(lambda m: _COPY_ESCAPES[m.group()], value)


ADD_MEMBERSHIPS = """
WITH added AS (
    INSERT INTO contact_list_memberships (list_id, contact_id, account_id, added_at, contact_created_at,
                                          contact_active, contact_opted_out, contact_tags)
    SELECT l.id, %(contact)s, %(account)s, %(ts)s, %(created)s, %(active)s, %(opted)s, %(tags)s
    FROM contact_lists l WHERE l.id = ANY(%(lists)s) AND l.account_id = %(account)s
    ON CONFLICT DO NOTHING RETURNING list_id
), counted AS (
    UPDATE contact_lists SET contact_count = contact_count + 1, opted_out_count = opted_out_count + %(opted)s::int
    WHERE %(active)s AND id IN (SELECT list_id FROM added)
)
UPDATE contacts SET list_ids = list_ids || ARRAY(SELECT list_id FROM added)
WHERE id = %(contact)s AND EXISTS (SELECT 1 FROM added)
"""

#: Whether the second of ``{ts}`` has millisecond counts: an import counted it (``_millisecond_counts``).
#: Such a second then has them complete, so every later change to a contact of that second
#: changes its millisecond's count too, in the same statement as its hour's and second's.
SPLIT_SECOND = ("EXISTS (SELECT FROM contact_time_counts m WHERE m.account_id = {account} AND m.tag = ''"
                " AND m.unit = 'millisecond' AND m.bucket >= date_trunc('second', {ts}, 'UTC')"
                " AND m.bucket < date_trunc('second', {ts}, 'UTC') + interval '1 second')")
#: The units whose counts a change to a contact created at ``{ts}`` changes.
TIME_UNITS = ("CASE WHEN " + SPLIT_SECOND + " THEN ARRAY['hour', 'second', 'millisecond']"
              " ELSE ARRAY['hour', 'second'] END")

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
    SELECT DISTINCT date_trunc('second', bucket, 'UTC') AS second FROM batch
    WHERE NOT """ + SPLIT_SECOND.format(account="%(account)s", ts="batch.bucket") + """
)
INSERT INTO contact_time_counts (account_id, tag, unit, bucket, active, opted_out)
SELECT %(account)s, tag, 'millisecond', bucket, sum(n), sum(o) FROM (
    SELECT tag, bucket, n, o FROM batch WHERE date_trunc('second', bucket, 'UTC') NOT IN (SELECT second FROM fresh)
    UNION ALL
    SELECT t.tag, date_trunc('millisecond', c.created_at, 'UTC'), 1, c.is_opted_out::int
    FROM fresh JOIN contacts c ON c.account_id = %(account)s AND c.deleted_at IS NULL
        AND c.created_at >= fresh.second AND c.created_at < fresh.second + interval '1 second'
        CROSS JOIN LATERAL unnest(array_append(c.tags, '')) AS t(tag)
) counted GROUP BY tag, bucket
ON CONFLICT (account_id, tag, unit, bucket) DO UPDATE SET active = contact_time_counts.active + EXCLUDED.active,
    opted_out = contact_time_counts.opted_out + EXCLUDED.opted_out"""

# The columns of a contact's row its later events' projections need.
ROW_COLUMNS = ("first_name", "last_name", "tags", "list_ids", "deleted_at", "is_opted_out", "created_at")

CONTACT_CREATED = """
WITH c AS (
    INSERT INTO contacts (id, account_id, first_name, last_name, phone, email, notes, tags, is_opted_out, status,
                          invalid_reason, operator, country, created_at, updated_at, search_name, search_phone,
                          version)
    VALUES (%(id)s, %(account)s, %(first)s, %(last)s, %(phone)s, %(email)s, %(notes)s, %(tags)s, %(opted)s,
            %(status)s, %(reason)s, %(operator)s, %(country)s, %(ts)s, %(ts)s, %(sname)s, %(sphone)s, %(version)s)
    ON CONFLICT (id) DO NOTHING
), a AS (
    INSERT INTO account_contact_counts (account_id, active, opted_out) VALUES (%(account)s, 1, %(opted)s::int)
    ON CONFLICT (account_id) DO UPDATE SET active = account_contact_counts.active + 1,
        opted_out = account_contact_counts.opted_out + EXCLUDED.opted_out
), t AS (
    INSERT INTO contact_tags (account_id, tag, contact_count, opted_out_count)
    SELECT %(account)s, tag, 1, %(opted)s::int FROM unnest(%(tags)s::text[]) AS tag
    ON CONFLICT (account_id, tag) DO UPDATE SET contact_count = contact_tags.contact_count + 1,
        opted_out_count = contact_tags.opted_out_count + EXCLUDED.opted_out_count
)
INSERT INTO contact_time_counts (account_id, tag, unit, bucket, active, opted_out)
SELECT %(account)s, tag, unit, date_trunc(unit, %(ts)s::timestamptz, 'UTC'), 1, %(opted)s::int
FROM unnest(array_append(%(tags)s::text[], '')) AS tag, unnest({units}) AS unit
ON CONFLICT (account_id, tag, unit, bucket) DO UPDATE SET active = contact_time_counts.active + 1,
    opted_out = contact_time_counts.opted_out + EXCLUDED.opted_out
""".replace("{units}", TIME_UNITS.format(account="%(account)s", ts="%(ts)s::timestamptz"))


class ReadModelProjector:
    """One method per event type; each runs inside the caller's transaction (a write's, or a replay batch's)."""

    name = NAME

    def __init__(self) -> None:
        self._prefetched = threading.local()  # one projector serves every request thread

    @singledispatchmethod
    def apply(self, event: Any, cur: Cursor[Any]) -> None:
        """Events with no effect on the read tables."""

    # -- contact lists ------------------------------------------------------------------

    @apply.register
    def _(self, e: ContactList.Created, cur: Cursor[Any]) -> None:
        cur.execute(
            "INSERT INTO contact_lists (id, account_id, name, description, contact_count, created_at, updated_at,"
            " version) VALUES (%s, %s, %s, %s, 0, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (e.originator_id, e.account_id, e.name, e.description, e.timestamp, e.timestamp, e.originator_version))

    @apply.register
    def _(self, e: ContactList.Updated, cur: Cursor[Any]) -> None:
        cur.execute(
            "UPDATE contact_lists SET name = CASE WHEN %(has_name)s THEN %(name)s ELSE name END,"
            " description = CASE WHEN %(has_desc)s THEN %(desc)s ELSE description END, updated_at = %(ts)s,"
            " version = %(version)s WHERE id = %(id)s",
            {"has_name": "name" in e.changes, "name": e.changes.get("name"),
             "has_desc": "description" in e.changes, "desc": e.changes.get("description"),
             "ts": e.timestamp, "id": e.originator_id, "version": e.originator_version})

    @apply.register
    def _(self, e: ContactList.Deleted, cur: Cursor[Any]) -> None:
        cur.execute(
            "UPDATE contacts c SET list_ids = array_remove(c.list_ids, %(id)s)"
            " FROM contact_list_memberships m WHERE m.list_id = %(id)s AND m.contact_id = c.id",
            {"id": e.originator_id})
        cur.execute("DELETE FROM contact_list_memberships WHERE list_id = %s", (e.originator_id,))
        cur.execute("DELETE FROM contact_lists WHERE id = %s", (e.originator_id,))

    # -- contacts -------------------------------------------------------------------------

    @apply.register
    def _(self, e: Contact.Created, cur: Cursor[Any]) -> None:
        pii = e.pii
        phone = pii.get("phone") or ""
        tags = list(dict.fromkeys(e.tags))
        # The row, the account's totals, the tag index and the time counts in one statement:
        # this is every single create's projection, run under the events table's lock.
        cur.execute(CONTACT_CREATED, {
            "id": e.originator_id, "account": e.account_id, "first": pii.get("first_name"),
            "last": pii.get("last_name"), "phone": phone, "email": pii.get("email"), "notes": pii.get("notes"),
            "tags": tags, "opted": e.is_opted_out, "status": e.status, "reason": e.invalid_reason,
            "operator": e.operator, "country": e.country, "ts": e.timestamp,
            "sname": search_name(pii.get("first_name"), pii.get("last_name")), "sphone": search_phone(phone),
            "version": e.originator_version})
        self._add_memberships(cur, e.account_id, e.originator_id, e.list_ids, e.timestamp, e.timestamp, active=True,
                              opted_out=e.is_opted_out, tags=tags)

    @apply.register
    def _(self, e: Contact.Updated, cur: Cursor[Any]) -> None:
        row = self._contact(cur, e.originator_id)
        if row is None:
            return
        values: dict[str, Any] = {k: v for k, v in e.pii.items() if k in PII_FIELDS}
        values.update({k: v for k, v in e.changes.items()
                       if k in ("tags", "status", "invalid_reason", "operator", "country")})
        if "tags" in values:
            cur.execute("UPDATE contact_list_memberships SET contact_tags = %s WHERE contact_id = %s",
                        (list(values["tags"]), e.originator_id))
            if row["deleted_at"] is None:
                old, new = set(row["tags"]), set(values["tags"])
                self._tags_delta(cur, e.account_id, sorted(old - new), -1, row["created_at"], row["is_opted_out"])
                self._tags_delta(cur, e.account_id, sorted(new - old), +1, row["created_at"], row["is_opted_out"])
        first = values.get("first_name", row["first_name"])
        last = values.get("last_name", row["last_name"])
        values["search_name"] = search_name(first, last)
        if "phone" in values:
            values["search_phone"] = search_phone(values["phone"])
        self._update_contact(cur, e, values)

    @apply.register
    def _(self, e: Contact.AddedToLists, cur: Cursor[Any]) -> None:
        row = self._contact(cur, e.originator_id)
        if row is not None:
            self._add_memberships(cur, e.account_id, e.originator_id, e.list_ids, e.timestamp, row["created_at"],
                                  active=row["deleted_at"] is None, opted_out=row["is_opted_out"],
                                  tags=list(row["tags"]))
            self._update_contact(cur, e, {})

    @apply.register
    def _(self, e: Contact.RemovedFromLists, cur: Cursor[Any]) -> None:
        row = self._contact(cur, e.originator_id)
        if row is None:
            return
        cur.execute("DELETE FROM contact_list_memberships WHERE contact_id = %s AND list_id = ANY(%s)"
                    " RETURNING list_id", (e.originator_id, list(e.list_ids)))
        removed = [r[0] for r in cur.fetchall()]
        if removed and row["deleted_at"] is None:
            self._counts_delta(cur, removed, -1, row["is_opted_out"])
        cur.execute("UPDATE contacts SET list_ids = ARRAY(SELECT unnest(list_ids) EXCEPT SELECT unnest(%s::uuid[])),"
                    " updated_at = %s, version = %s WHERE id = %s",
                    (removed, e.timestamp, e.originator_version, e.originator_id))

    @apply.register
    def _(self, e: Contact.OptedOut, cur: Cursor[Any]) -> None:
        row = self._contact(cur, e.originator_id)
        if row is not None and not row["is_opted_out"]:
            self._opted_out_changed(cur, e.account_id, e.originator_id, row, True)
        self._update_contact(cur, e, {"is_opted_out": True})

    @apply.register
    def _(self, e: Contact.OptedIn, cur: Cursor[Any]) -> None:
        row = self._contact(cur, e.originator_id)
        if row is not None and row["is_opted_out"]:
            self._opted_out_changed(cur, e.account_id, e.originator_id, row, False)
        self._update_contact(cur, e, {"is_opted_out": False})

    @apply.register
    def _(self, e: Contact.Trashed, cur: Cursor[Any]) -> None:
        row = self._contact(cur, e.originator_id)
        if row is None or row["deleted_at"] is not None:
            return
        self._counts_delta(cur, row["list_ids"], -1, row["is_opted_out"])
        self._tags_delta(cur, e.account_id, row["tags"], -1, row["created_at"], row["is_opted_out"])
        self._account_delta(cur, e.account_id, -1, -int(row["is_opted_out"]), row["created_at"])
        self._memberships_active(cur, e.originator_id, False)
        self._update_contact(cur, e, {"deleted_at": e.timestamp})

    @apply.register
    def _(self, e: Contact.Restored, cur: Cursor[Any]) -> None:
        row = self._contact(cur, e.originator_id)
        if row is None or row["deleted_at"] is None:
            return
        self._counts_delta(cur, row["list_ids"], +1, row["is_opted_out"])
        self._tags_delta(cur, e.account_id, row["tags"], +1, row["created_at"], row["is_opted_out"])
        self._account_delta(cur, e.account_id, 1, int(row["is_opted_out"]), row["created_at"])
        self._memberships_active(cur, e.originator_id, True)
        self._update_contact(cur, e, {"deleted_at": None})

    def _purge_row(self, e: Contact.Purged, cur: Cursor[Any]) -> None:
        row = self._contact(cur, e.originator_id)
        if row is None:
            return
        if row["deleted_at"] is None:  # purging an active contact (not reachable via the API)
            self._counts_delta(cur, row["list_ids"], -1, row["is_opted_out"])
            self._tags_delta(cur, e.account_id, row["tags"], -1, row["created_at"], row["is_opted_out"])
            self._account_delta(cur, e.account_id, -1, -int(row["is_opted_out"]), row["created_at"])
        cur.execute("DELETE FROM contact_list_memberships WHERE contact_id = %s", (e.originator_id,))
        cur.execute("DELETE FROM contacts WHERE id = %s", (e.originator_id,))

    @apply.register
    def _(self, e: Contact.Purged, cur: Cursor[Any]) -> None:
        # The contact's key goes in the same transaction, by the unit of work (the write
        # side owns contact_keys): a rebuild replaying this event has no key to delete.
        self._purge_row(e, cur)

    # -- imports ---------------------------------------------------------------------------

    @apply.register
    def _(self, e: ContactImport.Started, cur: Cursor[Any]) -> None:
        cur.execute("INSERT INTO imports (id, account_id, status, source, filename, list_id, created_at, updated_at)"
                    " VALUES (%s, %s, 'running', %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    (e.originator_id, e.account_id, e.source, e.filename, e.list_id, e.timestamp, e.timestamp))

    @apply.register
    def _(self, e: ContactImport.RowsImported, cur: Cursor[Any]) -> None:
        """A whole batch in a few set-based statements (COPY), not a statement per row."""
        list_ids = {lid for c in e.contacts for lid in c["list_ids"]}
        existing: set = set()
        if list_ids:
            cur.execute("SELECT id FROM contact_lists WHERE id = ANY(%s) AND account_id = %s",
                        (list(list_ids), e.account_id))
            existing = {r[0] for r in cur.fetchall()}
        columns = ("id, account_id, first_name, last_name, phone, email, notes, tags, is_opted_out, status,"
                   " invalid_reason, operator, country, list_ids, created_at, updated_at, search_name, search_phone")
        created = self._import_created_at(cur, e)
        # Rows formatted here as COPY text, one write for the batch: psycopg's per-field
        # dumpers cost several times more for a thousand rows.
        account, ts, text = e.account_id.hex, e.timestamp.isoformat(), _copy_text
        lines = []
        for c in e.contacts:
            pii = c["pii"]
            first, last, phone = pii.get("first_name"), pii.get("last_name"), pii.get("phone") or ""
            list_ids = ",".join(i.hex for i in c["list_ids"] if i in existing)
            lines.append("\t".join((
                c["id"].hex, account, text(first), text(last), text(phone), text(pii.get("email")),
                text(pii.get("notes")), text(_array(c["tags"])), "t" if c["is_opted_out"] else "f",
                text(c["status"]), text(c["invalid_reason"]), text(c["operator"]), text(c["country"]),
                "{" + list_ids + "}", created[c["id"]].isoformat(), ts, text(search_name(first, last)),
                text(search_phone(phone)))))
        # ``version`` is left to its default, 1: the contact's Created is its entry in this batch.
        with cur.copy(f"COPY contacts ({columns}) FROM STDIN") as copy:
            if lines:
                copy.write("\n".join(lines) + "\n")
        members: Counter = Counter()  # (list, opted out) -> new active members
        with cur.copy("COPY contact_list_memberships (list_id, contact_id, account_id, added_at, contact_created_at,"
                      " contact_active, contact_opted_out, contact_tags) FROM STDIN") as copy:
            for c in e.contacts:
                for list_id in c["list_ids"]:
                    if list_id in existing:
                        members[list_id, c["is_opted_out"]] += 1
                        copy.write_row((list_id, c["id"], e.account_id, e.timestamp, created[c["id"]], True,
                                        c["is_opted_out"], c["tags"]))
        for (list_id, opted_out), n in members.items():
            self._counts_delta(cur, [list_id], n, opted_out)
        # The time counts are kept per second: a batch's contacts may straddle one.
        by_second: defaultdict[Any, list[dict]] = defaultdict(list)
        for c in e.contacts:
            by_second[created[c["id"]].replace(microsecond=0)].append(c)
        for second, contacts in by_second.items():
            self._account_delta(cur, e.account_id, len(contacts), sum(1 for c in contacts if c["is_opted_out"]),
                                second, millisecond=False)
            tags = Counter(t for c in contacts for t in c["tags"])
            if tags:
                opted = Counter(t for c in contacts if c["is_opted_out"] for t in c["tags"])
                names = list(tags)
                self._tag_counts(cur, e.account_id, names, [tags[t] for t in names], [opted[t] for t in names],
                                 second, millisecond=False)
        self._millisecond_counts(cur, e.account_id, e.contacts, created)
        # "line" (the spreadsheet's row number) is absent from events stored before it was recorded.
        with cur.copy("COPY import_report_rows (import_id, row, outcome, reason, detail, contact_id, line)"
                      " FROM STDIN") as copy:
            for s in e.skipped:
                copy.write_row((e.originator_id, s["row"], s["outcome"], s["reason"], s["detail"], s["contact_id"],
                                s.get("line") or None))
            for c in e.contacts:
                if c["status"] != "valid":
                    copy.write_row((e.originator_id, c["row"], "imported", c["invalid_reason"] or c["status"],
                                    "stored with status invalid: no known operator has this prefix", c["id"],
                                    c.get("line") or None))
        self._import_counts(cur, e, e.counts)

    @staticmethod
    def _millisecond_counts(cur: Cursor[Any], account_id: UUID, contacts: list[dict], created: dict[UUID, Any]) -> None:
        """Count an import batch per millisecond of ``created_at`` too (``MILLISECOND_COUNTS``).

        An import's rows are a microsecond apart, so one import of a million rows fills one
        second: per-second counts left a deep page to skip up to a million index entries
        within it; per millisecond, at most a thousand. Only imports start them (later single
        writes in such a second keep them, ``TIME_UNITS``): contacts created one by one fill a
        second far more thinly, and a row per tag more for every single create would cost the
        write path what its pages do not need.
        """
        counts: Counter = Counter()  # (tag, millisecond) -> contacts
        opted: Counter = Counter()  # (tag, millisecond) -> opted-out contacts
        for c in contacts:
            at = created[c["id"]]
            bucket = at.replace(microsecond=at.microsecond // 1000 * 1000)
            for tag in ("", *c["tags"]):
                counts[tag, bucket] += 1
                opted[tag, bucket] += c["is_opted_out"]
        if counts:
            keys = list(counts)
            cur.execute(MILLISECOND_COUNTS, {"account": account_id, "tags": [k[0] for k in keys],
                                             "buckets": [k[1] for k in keys], "active": [counts[k] for k in keys],
                                             "opted": [opted[k] for k in keys]})

    @staticmethod
    def _import_created_at(cur: Cursor[Any], e: Any) -> dict[UUID, Any]:
        """Each imported contact's ``created_at``: the import's start, less one microsecond per
        data row, so newest-first lists and exports show an import in its file's order (row 1
        first), across all its batches. From the events alone, so a rebuild gives the same."""
        cur.execute("SELECT created_at FROM imports WHERE id = %s", (e.originator_id,))
        found = cur.fetchone()
        started = found[0] if found else e.timestamp
        return {c["id"]: started - timedelta(microseconds=c["row"]) for c in e.contacts}

    @apply.register
    def _(self, e: ContactImport.Completed, cur: Cursor[Any]) -> None:
        self._import_counts(cur, e, e.counts, status="completed")

    @apply.register
    def _(self, e: ContactImport.Failed, cur: Cursor[Any]) -> None:
        self._import_counts(cur, e, e.counts, status="failed", error=e.reason)

    # -- bulk actions ------------------------------------------------------------------------

    @apply.register
    def _(self, e: BulkAction.Started, cur: Cursor[Any]) -> None:
        cur.execute("INSERT INTO bulk_actions (id, account_id, action, params, status, matched, created_at,"
                    " updated_at) VALUES (%s, %s, %s, %s, 'queued', %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    (e.originator_id, e.account_id, e.action, Jsonb(e.params), e.matched, e.timestamp, e.timestamp))

    @apply.register
    def _(self, e: BulkAction.Progressed, cur: Cursor[Any]) -> None:
        self._bulk_progress(cur, e, "running")

    @apply.register
    def _(self, e: BulkAction.Completed, cur: Cursor[Any]) -> None:
        self._bulk_progress(cur, e, "completed")

    @apply.register
    def _(self, e: BulkAction.Failed, cur: Cursor[Any]) -> None:
        self._bulk_progress(cur, e, "failed", e.reason)

    @staticmethod
    def _bulk_progress(cur: Cursor[Any], e: Any, status: str, error: str | None = None) -> None:
        cur.execute("UPDATE bulk_actions SET status = %s, processed = %s, changed = %s, error = %s, updated_at = %s,"
                    " finished_at = CASE WHEN %s IN ('completed', 'failed') THEN %s END WHERE id = %s",
                    (status, e.processed, e.changed, error, e.timestamp, status, e.timestamp, e.originator_id))

    @staticmethod
    def _import_counts(cur: Cursor[Any], e: Any, counts: dict[str, int], status: str | None = None,
                       error: str | None = None) -> None:
        cur.execute(
            "UPDATE imports SET rows_read = %s, imported = %s, valid = %s, invalid = %s, skipped = %s,"
            " updated_at = %s, status = coalesce(%s, status), error = coalesce(%s, error),"
            " finished_at = CASE WHEN %s::text IS NULL THEN finished_at ELSE %s END WHERE id = %s",
            (counts["read"], counts["imported"], counts["valid"], counts["invalid"], counts["skipped"],
             e.timestamp, status, error, status, e.timestamp, e.originator_id))

    # -- helpers ---------------------------------------------------------------------------

    def prefetch(self, events: list[Any], cur: Cursor[Any]) -> None:
        """Read, before the events table's lock, the rows of the contacts these events change (one query).

        A write's projection then sends its statements under the lock without waiting for a
        read's answer (a round trip, and the API's wait for the GIL, while every writer
        queues). Safe to read early: a contact's row changes only by its own events, which a
        concurrent write could not store too (same version), except ``list_ids`` when a list
        is deleted, and a deleted list's counts are gone with its row anyway. Each prefetched
        row serves the first event of its contact; later events of the same write read the
        row as the earlier ones left it.
        """
        ids = list(dict.fromkeys(e.originator_id for e in events
                                 if isinstance(e, Contact.Event) and not isinstance(e, Contact.Created)))
        rows: dict[UUID, dict[str, Any]] = {}
        if ids:
            cur.execute(f"SELECT id, {', '.join(ROW_COLUMNS)} FROM contacts WHERE id = ANY(%s)", (ids,))
            rows = {r[0]: dict(zip(ROW_COLUMNS, r[1:])) for r in cur.fetchall()}
        self._prefetched.rows = rows

    def forget(self) -> None:
        """Drop what ``prefetch`` read (the write is over)."""
        self._prefetched.rows = {}

    def _contact(self, cur: Cursor[Any], contact_id: UUID) -> dict[str, Any] | None:
        prefetched = getattr(self._prefetched, "rows", None)
        if prefetched and contact_id in prefetched:
            return prefetched.pop(contact_id)
        cur.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM contacts WHERE id = %s", (contact_id,))
        row = cur.fetchone()
        return None if row is None else dict(zip(ROW_COLUMNS, row))

    @staticmethod
    def _account_delta(cur: Cursor[Any], account_id: UUID, active: int, opted_out: int, created_at: Any,
                       millisecond: bool = True) -> None:
        """Keep the account's active / opted-out totals (GET /contacts reads them as totals), and
        those of the hour and the second of ``created_at`` (where deep pages start), and of its
        millisecond where its second has those (``millisecond`` false: ``created_at`` is a second's start)."""
        if active or opted_out:
            cur.execute("INSERT INTO account_contact_counts (account_id, active, opted_out) VALUES (%s, %s, %s)"
                        " ON CONFLICT (account_id) DO UPDATE SET active = account_contact_counts.active"
                        " + EXCLUDED.active, opted_out = account_contact_counts.opted_out + EXCLUDED.opted_out",
                        (account_id, active, opted_out))
            ReadModelProjector._time_counts(cur, account_id, [""], [active], [opted_out], created_at, millisecond)

    @staticmethod
    def _update_contact(cur: Cursor[Any], e: Any, values: dict[str, Any]) -> None:
        """Set ``values`` on the event's contact, with its time and the aggregate's version."""
        from psycopg import sql

        contact_id = e.originator_id
        values = {**values, "updated_at": e.timestamp, "version": e.originator_version}
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values)
        cur.execute(sql.SQL("UPDATE contacts SET {} WHERE id = {}").format(
            assignments, sql.Placeholder("__id")), {**values, "__id": contact_id})

    @staticmethod
    def _opted_out_changed(cur: Cursor[Any], account_id: UUID, contact_id: UUID, row: dict[str, Any],
                           opted_out: bool) -> None:
        """The counts and memberships of a contact that opted out (or back in)."""
        cur.execute("UPDATE contact_list_memberships SET contact_opted_out = %s WHERE contact_id = %s",
                    (opted_out, contact_id))
        if row["deleted_at"] is None:
            delta = 1 if opted_out else -1
            ReadModelProjector._account_delta(cur, account_id, 0, delta, row["created_at"])
            tags = list(row["tags"])
            ReadModelProjector._tag_counts(cur, account_id, tags, [0] * len(tags), [delta] * len(tags),
                                           row["created_at"])
            if row["list_ids"]:
                cur.execute("UPDATE contact_lists SET opted_out_count = opted_out_count + %s WHERE id = ANY(%s)",
                            (delta, list(row["list_ids"])))

    @staticmethod
    def _add_memberships(cur: Cursor[Any], account_id: UUID, contact_id: UUID, list_ids: list[UUID],
                         ts: Any, created_at: Any, *, active: bool, opted_out: bool, tags: list[str]) -> None:
        if not list_ids:
            return
        # Only lists that still exist in this account: a list deleted before the
        # event was applied simply gains nothing, on every replay alike. One statement
        # (the memberships, the lists' counts, the contact's listIds): no answer to wait
        # for under the events table's lock.
        cur.execute(ADD_MEMBERSHIPS, {"contact": contact_id, "account": account_id, "ts": ts, "created": created_at,
                                      "active": active, "opted": opted_out, "tags": tags, "lists": list(list_ids)})

    @staticmethod
    def _memberships_active(cur: Cursor[Any], contact_id: UUID, active: bool) -> None:
        """A trashed contact keeps its memberships, out of its lists' pages until restored."""
        cur.execute("UPDATE contact_list_memberships SET contact_active = %s WHERE contact_id = %s",
                    (active, contact_id))

    @staticmethod
    def _counts_delta(cur: Cursor[Any], list_ids: list[UUID], delta: int, opted_out: bool) -> None:
        """``delta`` active members for ``list_ids``, opted out or not."""
        if list_ids:
            cur.execute("UPDATE contact_lists SET contact_count = contact_count + %s,"
                        " opted_out_count = opted_out_count + %s WHERE id = ANY(%s)",
                        (delta, delta if opted_out else 0, list(list_ids)))

    @staticmethod
    def _time_counts(cur: Cursor[Any], account_id: UUID, tags: list[str], active: list[int], opted_out: list[int],
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

    @staticmethod
    def _tag_counts(cur: Cursor[Any], account_id: UUID, tags: list[str], active: list[int], opted_out: list[int],
                    created_at: Any, millisecond: bool = True) -> None:
        """Add to the tag index's counts of ``tags`` and to their time counts."""
        if not tags:
            return
        ReadModelProjector._time_counts(cur, account_id, tags, active, opted_out, created_at, millisecond)
        cur.execute(
            "INSERT INTO contact_tags (account_id, tag, contact_count, opted_out_count)"
            " SELECT %s, t, n, o FROM unnest(%s::text[], %s::int[], %s::int[]) AS x(t, n, o)"
            " ON CONFLICT (account_id, tag) DO UPDATE SET contact_count = contact_tags.contact_count"
            " + EXCLUDED.contact_count, opted_out_count = contact_tags.opted_out_count + EXCLUDED.opted_out_count",
            (account_id, tags, active, opted_out))
        if any(n < 0 for n in active):
            cur.execute("DELETE FROM contact_tags WHERE account_id = %s AND tag = ANY(%s) AND contact_count <= 0",
                        (account_id, tags))

    @staticmethod
    def _tags_delta(cur: Cursor[Any], account_id: UUID, tags: list[str], delta: int, created_at: Any,
                    opted_out: bool) -> None:
        """One contact (opted out or not) gained (+1) or lost (-1) ``tags``."""
        tags = list(tags)
        ReadModelProjector._tag_counts(cur, account_id, tags, [delta] * len(tags),
                                       [delta if opted_out else 0] * len(tags), created_at)
