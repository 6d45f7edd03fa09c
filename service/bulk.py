"""Select-all bulk actions: ``ids`` or a ``filter``, done at once or, past BULK_SYNC_MAX matches, as a job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import msgspec
from msgspec import Meta
from litestar import Controller, Request, Response, get, post
from litestar.openapi import ResponseSpec

from command.context import Actor
from command.errors import NotFoundError, ValidationError
from query import selection
from query.contacts import ContactFilter
from query.tenancy import tenant_transaction
from service import bulk_jobs
from service.bootstrap import Container
from service.cleaning import clean_tags
from service.schemas import BulkFilter, BulkSelection, BulkTagging, OptedInCount, OptedOutCount, Tagged, Untagged

ActorRequest = Request[Actor, str, Any]
#: Up to this many matches, a filter's action is done inside the request; more run as a job (202).
BULK_SYNC_MAX = 1_000


def _doc(description: str, example: Any) -> Meta:
    return Meta(description=description, examples=[example])


class BulkActionJob(msgspec.Struct, rename="camel"):
    """A bulk action running as a job: poll it until ``status`` is completed or failed."""

    id: Annotated[UUID, _doc("The job's id (its Location)", "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")]
    action: Annotated[str, _doc("delete, add_to_list, remove_from_list, tag, untag, opt_out or opt_in", "tag")]
    status: Annotated[str, _doc("queued (no worker has taken it yet), running, completed or failed", "running")]
    matched: Annotated[int, _doc("Contacts the filter matched when the request arrived", 42000)]
    processed: Annotated[int, _doc("Of those, how many the job has gone through", 4000)]
    changed: Annotated[int, _doc("Of those, how many it changed (the count a request would answer)", 3990)]
    error: Annotated[str | None, _doc("Why a failed job stopped; null otherwise", None)]
    created_at: datetime
    updated_at: datetime
    finished_at: Annotated[datetime | None, _doc("When it completed or failed", None)]


QUEUED = ResponseSpec(BulkActionJob, description=(
    f"More than {BULK_SYNC_MAX:,} contacts matched the filter: the action runs as a job, named by `Location`"
    " (poll it for progress; a `contacts.bulk_action.completed.v1` event is published when it ends)"))
BULK_RESPONSES = {202: QUEUED}  # the error answers are written from one table (service/api_docs.py)


def contact_filter_of(body: BulkFilter) -> ContactFilter:
    """The GET /contacts filter a body's ``filter`` means; an empty one is a 422, never 'everything'."""
    flt = ContactFilter(search=(body.search or "").strip() or None, list_id=body.list_id,
                        is_opted_out=body.is_opted_out, tags=clean_tags(body.tags or []))
    if flt.search is None and flt.list_id is None and flt.is_opted_out is None and not flt.tags and not body.all:
        raise ValidationError("filter names no contacts: give listId, tags, isOptedOut or search, or"
                              " {\"all\": true} to act on every contact of the account", field="filter")
    return flt


def selected(ids: list[UUID] | None, flt: BulkFilter | None, ids_field: str = "ids") -> list[UUID] | ContactFilter:
    """The request's selection: its ids, or its filter; exactly one of them."""
    if ids is not None and flt is not None:
        raise ValidationError(f"send either {ids_field} or filter, not both", field="filter")
    if ids is None and flt is None:
        raise ValidationError(f"send {ids_field} (the contacts' ids) or filter (every contact matching it)",
                              field=ids_field)
    return ids if ids is not None else contact_filter_of(flt)  # type: ignore[arg-type]


def act(container: Container, actor: Actor, action: str, params: dict[str, Any],
        selection_: list[UUID] | ContactFilter, answer: type, by_ids: Any = None) -> Response[Any]:
    """Do ``action`` now and answer the count of contacts changed, or queue it as a job (202)."""
    ids = selection_ if isinstance(selection_, list) else \
        selection.matching_ids(container.pool, actor.account_id, selection_, BULK_SYNC_MAX)
    if ids is not None:
        if by_ids is not None and isinstance(selection_, list):
            changed = by_ids(ids)  # the endpoint's own use case, as before filters
        else:
            changed = container.app.bulk(actor, action, params, ids)
        return Response(answer(changed), status_code=200)
    job = queue(container, actor, action, params, selection_)  # type: ignore[arg-type]
    return Response(job, status_code=202, headers={"Location": f"/api/v1/contacts/bulk-actions/{job.id}"})


def queue(container: Container, actor: Actor, action: str, params: dict[str, Any],
          flt: ContactFilter) -> BulkActionJob:
    """Snapshot the matches, store the job's start, and wake a worker."""
    if "list_id" in params:
        container.app.get_list(actor, UUID(params["list_id"]))  # 404 before anything is stored
    job_id = uuid4()
    matched = bulk_jobs.enqueue(container, actor, job_id, flt)
    try:
        container.app.start_bulk(actor, job_id, action, params, matched)
    except BaseException:
        bulk_jobs.discard(container, job_id)
        raise
    bulk_jobs.wake_workers(container)
    return get_job(container, actor, job_id)


def get_job(container: Container, actor: Actor, job_id: UUID) -> BulkActionJob:
    """The job resource from the ``bulk_actions`` read table (404 for another account's)."""
    with tenant_transaction(container.pool, actor.account_id) as conn:
        row = conn.execute("SELECT id, action, status, matched, processed, changed, error, created_at, updated_at,"
                           " finished_at FROM bulk_actions WHERE id = %s AND account_id = %s",
                           (job_id, actor.account_id)).fetchone()
    if row is None:
        raise NotFoundError(f"bulk action {job_id} not found", field="id")
    return BulkActionJob(*row)


class BulkController(Controller):
    """Tag, untag, opt out or opt in many contacts at once: by id, or all matching a filter."""

    path = "/api/v1/contacts"
    tags = ["bulk actions"]

    @post("/bulk-tag", operation_id="bulkTagContacts", responses=BULK_RESPONSES, status_code=200,
          sync_to_thread=True)
    def tag(self, request: ActorRequest, container: Container, data: BulkTagging) -> Response[Tagged]:
        """Add tags to the contacts; counts those that gained at least one."""
        return act(container, request.user, "tag", {"tags": clean_tags(data.tags)},
                   selected(data.ids, data.filter), lambda n: Tagged(tagged=n))

    @post("/bulk-untag", operation_id="bulkUntagContacts", responses=BULK_RESPONSES, status_code=200,
          sync_to_thread=True)
    def untag(self, request: ActorRequest, container: Container, data: BulkTagging) -> Response[Untagged]:
        """Remove tags from the contacts; counts those that lost at least one."""
        return act(container, request.user, "untag", {"tags": clean_tags(data.tags)},
                   selected(data.ids, data.filter), lambda n: Untagged(untagged=n))

    @post("/bulk-opt-out", operation_id="bulkOptOutContacts", responses=BULK_RESPONSES, status_code=200,
          sync_to_thread=True)
    def opt_out(self, request: ActorRequest, container: Container, data: BulkSelection) -> Response[OptedOutCount]:
        """Opt the contacts out of messages; counts those that were not opted out already."""
        return act(container, request.user, "opt_out", {}, selected(data.ids, data.filter),
                   lambda n: OptedOutCount(opted_out=n))

    @post("/bulk-opt-in", operation_id="bulkOptInContacts", responses=BULK_RESPONSES, status_code=200,
          sync_to_thread=True)
    def opt_in(self, request: ActorRequest, container: Container, data: BulkSelection) -> Response[OptedInCount]:
        """Opt the contacts back in; counts those that were opted out."""
        return act(container, request.user, "opt_in", {}, selected(data.ids, data.filter),
                   lambda n: OptedInCount(opted_in=n))

    @get("/bulk-actions/{job_id:uuid}", operation_id="getBulkAction", sync_to_thread=True)
    def show(self, request: ActorRequest, container: Container, job_id: UUID) -> BulkActionJob:
        """A bulk action's job: status, how many contacts matched, were processed and were changed."""
        return get_job(container, request.user, job_id)
