"""The read model: contacts (with listIds), memberships, list totals and the tag index.

One projector owns these four tables because they must agree: a list's
``contact_count`` counts its *active* members, so trashing a contact changes the
counts of its lists and the tag index in the same transaction as the contact row.
"""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
from functools import singledispatchmethod
from importlib import resources
from typing import Any
from uuid import UUID

from collections import Counter, defaultdict
from datetime import datetime, timedelta

import msgspec
from psycopg import Connection, Cursor, pq
from psycopg.types.json import Jsonb

from command.domain import PII_FIELDS, BulkAction, Contact, ContactImport, ContactList
from command.ids import uuid_texts
from projections.copy_text import copy_array, copy_row
from projections.counters import (ONE_SECOND, account_delta, counts_delta, millisecond_counts,
                                  tag_counts, tags_delta, truncated)
from query.models import CONTACT_FIELDS

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
    if first and last:  # most rows: one format, not a generator joined (an import formats a thousand a batch)
        return f"{first} {last}".lower()
    return (first or last or "").lower()


def search_phone(e164: str) -> str:
    """The number's digits; a search term's national trunk zero is dropped at query time."""
    return e164.lstrip("+")


#: The columns a new contact's row is written with: its fields (``ContactOut``'s, less
#: ``deleted_at``: a new contact is not in the trash), then the read table's own.
NEW_CONTACT_COLUMNS = (*(f.name for f in CONTACT_FIELDS if f.name != "deleted_at"),
                       "account_id", "search_name", "search_phone")

_ROW_JSON = msgspec.json.Encoder().encode
_JSON_ENCODE = msgspec.json.encode
#: The columns an import batch's COPY writes, in the order its rows are formatted
#: (``_import_line``), ``list_ids`` last: a batch without a list leaves it to its default.
IMPORT_COLUMNS = ("id", "account_id", "first_name", "last_name", "phone", "email", "tags", "notes", "is_opted_out",
                  "status", "invalid_reason", "operator", "country", "created_at", "updated_at", "search_name",
                  "search_phone", "list_ids")
# A column added to a new contact's row must be written by imports too: fail at start, not in a batch.
assert sorted(IMPORT_COLUMNS) == sorted(NEW_CONTACT_COLUMNS), "IMPORT_COLUMNS must name NEW_CONTACT_COLUMNS"

#: The columns besides personal ones that contact.updated may change (``project_contact_updated``).
UPDATED_COLUMNS = ("tags", "status", "invalid_reason", "operator", "country")
#: Events whose projection is one server-side call that reads the contact's row itself:
#: nothing to read for them before the lock (``prefetch``).
SELF_READING = (Contact.Created, Contact.Updated, Contact.AddedToLists, Contact.RemovedFromLists, Contact.OptedOut,
                Contact.OptedIn)

# The columns of a contact's row its later events' projections need.
ROW_COLUMNS = ("first_name", "last_name", "tags", "list_ids", "deleted_at", "is_opted_out", "created_at")

#: Import batches formatted ahead of their unit of work (``prepare_import``) kept at most: an
#: import has one in flight at a time; ones whose store failed are dropped oldest first.
MAX_PREPARED_BATCHES = 8


def _import_rows(e: Any, started: datetime) -> tuple[list[datetime], list[str]]:
    """An import batch's contacts' ``created_at`` and their rows as COPY text, in ``e.contacts``' order.

    ``created_at`` is the import's start less one microsecond per data row, so newest-first
    lists and exports show an import in its file's order (row 1 first), across all its
    batches; from the events alone, so a rebuild gives the same.
    """
    created = [started - timedelta(microseconds=c["row"]) for c in e.contacts]
    account, ts = e.account_id.hex, e.timestamp.isoformat()
    ids = uuid_texts([c["id"] for c in e.contacts])
    return created, [_import_line(c, cid, account, at, ts) for c, cid, at in zip(e.contacts, ids, _times(created))]


def _times(times: list[datetime]) -> list[str]:
    """Aware times as RFC 3339 text (COPY reads it), all written by msgspec in C at once (``isoformat`` each: 3x)."""
    return _JSON_ENCODE(times)[2:-2].decode().split('","') if times else []


def _import_line(c: dict[str, Any], contact_id: str, account: str, created_at: str, updated_at: str) -> str:
    """An imported contact's row as COPY text, in ``IMPORT_COLUMNS`` order less ``list_ids``."""
    pii = c["pii"]
    first, last, phone = pii.get("first_name"), pii.get("last_name"), pii.get("phone") or ""
    return copy_row((contact_id, account, first, last, phone, pii.get("email"), copy_array(c["tags"]),
                     pii.get("notes"), "t" if c["is_opted_out"] else "f", c["status"], c["invalid_reason"],
                     c["operator"], c["country"], created_at, updated_at, search_name(first, last),
                     search_phone(phone)))


def _updated_values(e: Contact.Updated) -> str:
    """The columns contact.updated changes, as JSON named after them (``project_contact_updated``'s argument)."""
    values: dict[str, Any] = {k: v for k, v in e.pii.items() if k in PII_FIELDS}
    values.update({k: v for k, v in e.changes.items() if k in UPDATED_COLUMNS})
    if "tags" in values:
        values["tags"] = list(values["tags"])
    return _ROW_JSON(values).decode()


class ReadModelProjector:
    """One method per event type; each runs inside the caller's transaction (a write's, or a replay batch's)."""

    name = NAME

    def __init__(self) -> None:
        self._prefetched = threading.local()  # one projector serves every request thread
        # (import id, batch version) -> (its rows' created_at, their COPY text): prepare_import's
        self._prepared_batches: dict[tuple[UUID, int], tuple[list[datetime], list[str]]] = {}

    def prepare_import(self, e: ContactImport.Progressed, started: datetime) -> None:
        """Format an import batch's contacts rows before its unit of work.

        ``started`` is the import's start: its ``Started`` event's time (the aggregate's
        ``created_on``), which is what the ``imports`` row holds and what applying the batch
        reads when nothing was prepared (a rebuild), so live and rebuilt rows are the same.
        An import calls this in its stage two (command/imports/service.py), in its own thread,
        while the batch before is being stored: the batch's transaction, and its time under
        the events table's lock, then only send the text.
        """
        self._prepared_batches[e.originator_id, e.originator_version] = _import_rows(e, started)
        while len(self._prepared_batches) > MAX_PREPARED_BATCHES:  # batches whose store failed
            self._prepared_batches.pop(next(iter(self._prepared_batches)), None)

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
        # The row, the account's totals, the tag index, the time counts and the memberships in
        # one call (projections/schema.sql), the same a single create runs in its own statement.
        cur.execute("SELECT project_contact_created(%s::jsonb, %s::uuid[])", (self.created_row(e), list(e.list_ids)))

    @staticmethod
    def created_row(e: Contact.Created) -> str:
        """The new contact's row as JSON named after the columns (``project_contact_created``'s argument)."""
        pii = e.pii
        phone = pii.get("phone") or ""
        # ``list_ids`` starts empty: the memberships fill it with the lists that exist.
        return _ROW_JSON(dict(
            id=e.originator_id, first_name=pii.get("first_name"), last_name=pii.get("last_name"), phone=phone,
            email=pii.get("email"), tags=list(dict.fromkeys(e.tags)), notes=pii.get("notes"),
            is_opted_out=e.is_opted_out, status=e.status, invalid_reason=e.invalid_reason, operator=e.operator,
            country=e.country, list_ids=[], created_at=e.timestamp, updated_at=e.timestamp,
            account_id=e.account_id, search_name=search_name(pii.get("first_name"), pii.get("last_name")),
            search_phone=search_phone(phone), version=e.originator_version)).decode()

    @apply.register(Contact.Updated)
    @apply.register(Contact.AddedToLists)
    @apply.register(Contact.RemovedFromLists)
    @apply.register(Contact.OptedOut)
    @apply.register(Contact.OptedIn)
    def _(self, e: Any, cur: Cursor[Any]) -> None:
        # One call, which reads the contact's row itself (projections/schema.sql): the same
        # dispatch, with the same argument, as a write's single statement (server_call).
        kind, arg = self.server_call(e)  # type: ignore[misc]
        cur.execute("SELECT project_contact_event(%s, %s, %s, %s::jsonb, %s, %s)",
                    (kind, e.originator_id, e.account_id, arg, e.timestamp, e.originator_version))

    @staticmethod
    def server_call(e: Any) -> tuple[str, str] | None:
        """The event's projection as one server-side call, for a write's single statement
        (``commit_contact_events``, command/schema.sql): its kind and its JSON argument; None
        for an event whose projection is not one call. ``apply`` makes the same call on replay."""
        if isinstance(e, Contact.Updated):
            return "contact.updated", _updated_values(e)
        if isinstance(e, Contact.AddedToLists):
            return "contact.added-to-lists", _ROW_JSON(list(e.list_ids)).decode()
        if isinstance(e, Contact.RemovedFromLists):
            return "contact.removed-from-lists", _ROW_JSON(list(e.list_ids)).decode()
        if isinstance(e, Contact.OptedOut):
            return "contact.opted-out", "null"
        if isinstance(e, Contact.OptedIn):
            return "contact.opted-in", "null"
        return None

    @apply.register
    def _(self, e: Contact.Trashed, cur: Cursor[Any]) -> None:
        row = self._contact(cur, e.originator_id)
        if row is None or row["deleted_at"] is not None:
            return
        counts_delta(cur, row["list_ids"], -1, row["is_opted_out"])
        tags_delta(cur, e.account_id, row["tags"], -1, row["created_at"], row["is_opted_out"])
        account_delta(cur, e.account_id, -1, -int(row["is_opted_out"]), row["created_at"])
        self._memberships_active(cur, e.originator_id, False)
        self._update_contact(cur, e, {"deleted_at": e.timestamp})

    @apply.register
    def _(self, e: Contact.Restored, cur: Cursor[Any]) -> None:
        row = self._contact(cur, e.originator_id)
        if row is None or row["deleted_at"] is None:
            return
        counts_delta(cur, row["list_ids"], +1, row["is_opted_out"])
        tags_delta(cur, e.account_id, row["tags"], +1, row["created_at"], row["is_opted_out"])
        account_delta(cur, e.account_id, 1, int(row["is_opted_out"]), row["created_at"])
        self._memberships_active(cur, e.originator_id, True)
        self._update_contact(cur, e, {"deleted_at": None})

    def _purge_row(self, e: Contact.Purged, cur: Cursor[Any]) -> None:
        row = self._contact(cur, e.originator_id)
        if row is None:
            return
        if row["deleted_at"] is None:  # purging an active contact (not reachable via the API)
            counts_delta(cur, row["list_ids"], -1, row["is_opted_out"])
            tags_delta(cur, e.account_id, row["tags"], -1, row["created_at"], row["is_opted_out"])
            account_delta(cur, e.account_id, -1, -int(row["is_opted_out"]), row["created_at"])
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

    def project_ahead(self, events: list[Any], cur: Cursor[Any]) -> None:
        """Before the events table's lock: an import batch's new rows (contacts, memberships), as a create's row goes.

        No other writer can see these rows until the commit, so they need no place in the
        log's order; ``apply`` then writes only what writers share (list totals, the tag
        index, the time counts, the job's row) under the lock. The batch's lists are read
        here, before the lock, and checked again under it (``_drop_gone_lists``): a list
        deleted in between loses the batch's memberships, as a replay of the log gives.
        What was written is kept for this thread until ``forget``.
        """
        ahead: dict[tuple[UUID, int], tuple[list[datetime], set[UUID], Counter]] = {}
        for e in events:
            if isinstance(e, ContactImport.Progressed):
                existing = self._existing_lists(cur, e)
                created, members = self._new_rows(cur, e, existing)
                ahead[e.originator_id, e.originator_version] = (created, existing, members)
        self._prefetched.ahead = ahead

    @apply.register
    def _(self, e: ContactImport.Progressed, cur: Cursor[Any]) -> None:
        """A whole batch in a few set-based statements (COPY), not a statement per row."""
        ahead = getattr(self._prefetched, "ahead", {}).pop((e.originator_id, e.originator_version), None)
        if ahead is None:  # a replay, or a write that did not project ahead: the rows go now
            existing = self._existing_lists(cur, e)
            created, members = self._new_rows(cur, e, existing)
        else:
            created, existing, members = ahead
        # The report's rows, the counters and the job's row in pipeline mode: sent together and
        # answered together, one round trip for all of them instead of one each (a dozen in a
        # batch whose contacts straddle a second; a COPY took two), each a wait for this
        # thread to get the GIL back in a busy API. A live batch's unit of work has them in its
        # own pipeline already, with its append: one round trip under the lock for both.
        in_pipeline = cur.connection.pgconn.pipeline_status != pq.PipelineStatus.OFF
        with nullcontext() if in_pipeline else cur.connection.pipeline():
            if ahead is not None and existing:
                self._drop_gone_lists(cur, e, existing)
            self._report_rows(cur, e)
            # A list deleted since its members were written ahead has no row left to count in.
            for (list_id, opted_out), n in members.items():
                counts_delta(cur, [list_id], n, opted_out)
            # The time counts are kept per second: a batch's contacts may straddle one.
            by_second: defaultdict[Any, list[dict]] = defaultdict(list)
            for c, second in zip(e.contacts, truncated(created, ONE_SECOND)):
                by_second[second].append(c)
            for second, contacts in by_second.items():
                account_delta(cur, e.account_id, len(contacts), sum(1 for c in contacts if c["is_opted_out"]), second,
                              millisecond=False)
                tags = Counter(t for c in contacts for t in c["tags"])
                if tags:
                    opted = Counter(t for c in contacts if c["is_opted_out"] for t in c["tags"])
                    names = list(tags)
                    tag_counts(cur, e.account_id, names, [tags[t] for t in names], [opted[t] for t in names], second,
                               millisecond=False)
            millisecond_counts(cur, e.account_id, e.contacts, created)
            self._import_counts(cur, e, e.counts)

    def _existing_lists(self, cur: Cursor[Any], e: ContactImport.Progressed) -> set[UUID]:
        """The batch's lists that exist (a list deleted during the import gets no members)."""
        list_ids = {lid for c in e.contacts for lid in c["list_ids"]}
        if not list_ids:
            return set()
        cur.execute("SELECT id FROM contact_lists WHERE id = ANY(%s) AND account_id = %s",
                    (list(list_ids), e.account_id))
        return {r[0] for r in cur.fetchall()}

    def _new_rows(self, cur: Cursor[Any], e: ContactImport.Progressed,
                  existing: set[UUID]) -> tuple[list[datetime], Counter]:
        """The batch's contacts rows and memberships (in ``existing`` lists); their ``created_at`` and the
        new active members per (list, opted out)."""
        # Rows formatted as COPY text, one write for the batch: psycopg's per-field dumpers
        # cost several times more for a thousand rows. Formatted already by prepare_import
        # when the import is live (then the import's start is known: no statement to read it).
        # Without a list in the batch, list_ids is left to its default ('{}'): no array for
        # PostgreSQL to parse per row.
        prepared = self._prepared_batches.pop((e.originator_id, e.originator_version), None)
        created, lines = prepared if prepared is not None else _import_rows(e, self._import_started(cur, e))
        columns = IMPORT_COLUMNS
        if existing:
            lines = [line + "\t{" + ",".join(i.hex for i in c["list_ids"] if i in existing) + "}"
                     for line, c in zip(lines, e.contacts)]
        else:
            columns = IMPORT_COLUMNS[:-1]
        # ``version`` is left to its default, 1: the contact's Created is its entry in this batch.
        with cur.copy(f"COPY contacts ({', '.join(columns)}) FROM STDIN") as copy:
            if lines:
                copy.write("\n".join(lines) + "\n")
        members: Counter = Counter()  # (list, opted out) -> new active members
        if existing:  # a batch without a list sends no statement for memberships
            with cur.copy("COPY contact_list_memberships (list_id, contact_id, account_id, added_at,"
                          " contact_created_at, contact_active, contact_opted_out, contact_tags) FROM STDIN") as copy:
                for c, at in zip(e.contacts, created):
                    for list_id in c["list_ids"]:
                        if list_id in existing:
                            members[list_id, c["is_opted_out"]] += 1
                            copy.write_row((list_id, c["id"], e.account_id, e.timestamp, at, True,
                                            c["is_opted_out"], c["tags"]))
        return created, members

    @staticmethod
    def _drop_gone_lists(cur: Cursor[Any], e: ContactImport.Progressed, written: set[UUID]) -> None:
        """Take lists deleted since the batch's rows were written ahead out of its contacts and memberships.

        Under the lock, so the rows end as a replay of the log leaves them: the list's delete
        comes before the batch there, and the batch's contacts never join it. One statement
        with no answer to wait for (it goes in the batch's pipeline); when every list is
        still there, which is nearly always, it changes nothing and reads no contact.
        """
        cur.execute(
            "WITH gone AS (SELECT array_agg(l) AS ids FROM unnest(%(lists)s::uuid[]) AS l WHERE NOT EXISTS"
            " (SELECT 1 FROM contact_lists c WHERE c.id = l AND c.account_id = %(account)s)),"
            " dropped AS (DELETE FROM contact_list_memberships WHERE (SELECT ids FROM gone) IS NOT NULL"
            " AND list_id = ANY((SELECT ids FROM gone)::uuid[]) AND contact_id = ANY(%(contacts)s::uuid[]))"
            " UPDATE contacts SET list_ids = ARRAY(SELECT l FROM unnest(list_ids) AS l WHERE l <> ALL((SELECT ids"
            " FROM gone)::uuid[])) WHERE (SELECT ids FROM gone) IS NOT NULL AND id = ANY(%(contacts)s::uuid[])",
            {"lists": list(written), "account": e.account_id, "contacts": [c["id"] for c in e.contacts]})

    @staticmethod
    def _report_rows(cur: Cursor[Any], e: ContactImport.Progressed) -> None:
        """The batch's rows of the import's report: those skipped, and those stored with status invalid."""
        rows = [(s["row"], s["outcome"], s["reason"], s["detail"], s["contact_id"], s.get("line") or None)
                for s in e.skipped]
        rows += [(c["row"], "imported", c["invalid_reason"] or c["status"],
                  "stored with status invalid: no known operator has this prefix", c["id"], c.get("line") or None)
                 for c in e.contacts if c["status"] != "valid"]
        if rows:
            # "line" (the spreadsheet's row number) is absent from events stored before it was recorded.
            cur.execute("INSERT INTO import_report_rows (import_id, row, outcome, reason, detail, contact_id, line)"
                        " SELECT %s, * FROM unnest(%s::integer[], %s::text[], %s::text[], %s::text[], %s::uuid[],"
                        " %s::integer[])", (e.originator_id, *map(list, zip(*rows))))

    @staticmethod
    def _import_started(cur: Cursor[Any], e: Any) -> datetime:
        """The start of the batch's import, as its ``Started`` event was projected (else the batch's time)."""
        cur.execute("SELECT created_at FROM imports WHERE id = %s", (e.originator_id,))
        found = cur.fetchone()
        return found[0] if found else e.timestamp

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
        row as the earlier ones left it. Events whose projection reads the row itself
        (``SELF_READING``) need none.
        """
        first: dict[UUID, Any] = {}
        for e in events:
            if isinstance(e, Contact.Event):
                first.setdefault(e.originator_id, e)
        # Only where the contact's first event reads the row here: after a server-side call
        # changed it, a prefetched row would be stale, so later events read it afresh.
        ids = [cid for cid, e in first.items() if not isinstance(e, SELF_READING)]
        rows: dict[UUID, dict[str, Any]] = {}
        if ids:
            cur.execute(f"SELECT id, {', '.join(ROW_COLUMNS)} FROM contacts WHERE id = ANY(%s)", (ids,))
            rows = {r[0]: dict(zip(ROW_COLUMNS, r[1:])) for r in cur.fetchall()}
        self._prefetched.rows = rows

    def forget(self) -> None:
        """Drop what ``prefetch`` read and ``project_ahead`` wrote (the write is over)."""
        self._prefetched.rows = {}
        self._prefetched.ahead = {}

    def _contact(self, cur: Cursor[Any], contact_id: UUID) -> dict[str, Any] | None:
        prefetched = getattr(self._prefetched, "rows", None)
        if prefetched and contact_id in prefetched:
            return prefetched.pop(contact_id)
        cur.execute(f"SELECT {', '.join(ROW_COLUMNS)} FROM contacts WHERE id = %s", (contact_id,))
        row = cur.fetchone()
        return None if row is None else dict(zip(ROW_COLUMNS, row))

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
    def _memberships_active(cur: Cursor[Any], contact_id: UUID, active: bool) -> None:
        """A trashed contact keeps its memberships, out of its lists' pages until restored."""
        cur.execute("UPDATE contact_list_memberships SET contact_active = %s WHERE contact_id = %s",
                    (active, contact_id))
