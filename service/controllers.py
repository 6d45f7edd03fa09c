"""HTTP controllers: each handler turns a request into a command or a query."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from functools import partial
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.params import Parameter

from command.context import Actor
from command.domain import Contact, ContactList
from command.errors import NotFoundError, ValidationError
from events.history import HistoryEntry, contact_as_of, history
from query import contact_lists as list_queries
from query import contacts as contact_queries
from query.contacts import ContactFilter
from query.keyset import DEFAULT_SORT, Sort
from query.models import ContactListOut, ContactOut, ContactPage
from service import bulk
from service.bulk import BULK_RESPONSES
from service.bootstrap import Container
from service.cleaning import clean_tags
from service.etags import ETAG_HEADER, IfMatchHeader, etag, expected_version
from service.openapi import located
from service.paging import contact_page
from service.parameters import (
    CursorParam, ListIdParam, OptedOutParam, PageParam, PageSizeParam, SearchParam, SortParam, TagsParam,
)
from service.schemas import (
    Added,
    BulkSelection,
    ContactCreate,
    ContactIds,
    ContactListCreate,
    ContactListUpdate,
    ContactUpdate,
    Deleted,
    IdList,
    Purged,
    Removed,
    Restored,
)

ActorRequest = Request[Actor, str, Any]


def _found(value: Any, what: str, ident: UUID) -> Any:
    if value is None:
        raise NotFoundError(f"{what} {ident} not found", field="id")
    return value


def _contact_out(contact: Contact) -> ContactOut:
    """A contact's answer from its aggregate just stored: the row its events project (a create's, a PATCH's)."""
    pii = contact.pii
    return ContactOut(id=contact.id, first_name=pii.get("first_name"), last_name=pii.get("last_name"),
                      phone=pii["phone"], email=pii.get("email"), tags=list(contact.tags), notes=pii.get("notes"),
                      is_opted_out=contact.is_opted_out, status=contact.status, invalid_reason=contact.invalid_reason,
                      operator=contact.operator, country=contact.country, list_ids=list(contact.list_ids),
                      created_at=contact.created_on, updated_at=contact.modified_on)


def _tagged(found: tuple[Any, int] | None, what: str, ident: UUID, status_code: int = 200) -> Response[Any]:
    """The resource with its version as the ``ETag`` header; 404 if it is gone."""
    body, version = _found(found, what, ident)
    return Response(body, status_code=status_code, headers={"ETag": etag(version)})


def _list_answer(container: Container, actor: Actor, list_id: UUID, status_code: int = 200) -> Response[Any]:
    """The list as the read tables hold it now, tagged with its version."""
    return _tagged(list_queries.get_contact_list_versioned(container.pool, actor.account_id, list_id),
                   "contact list", list_id, status_code)


def _contact_answer(container: Container, actor: Actor, contact_id: UUID) -> Response[Any]:
    """The active contact as the read tables hold it now, tagged with its version."""
    return _tagged(contact_queries.get_contact_versioned(container.pool, actor.account_id, contact_id),
                   "contact", contact_id)


LINK_HEADER = ResponseHeader(name="Link", documentation_only=True, description=(
    'The next page, when there is one: `</api/v1/contacts?…&cursor=…>; rel="next"` (RFC 8288)'),
    example='</api/v1/contacts?pageSize=25&cursor=AZSrLWNy…>; rel="next"', value="")  # the value types its schema


def next_link(request: ActorRequest, cursor: str) -> str:
    """A ``Link`` header to the next page: this request's query, without ``page``, with ``cursor``."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("page", "cursor")]
    return f'<{request.url.path}?{urlencode([*query, ("cursor", cursor)])}>; rel="next"'


def contact_filter(search: str | None, list_id: str | None, is_opted_out: bool | None,
                   tags: str | None) -> ContactFilter:
    return ContactFilter(search=search, list_id=UUID(list_id) if list_id else None, is_opted_out=is_opted_out,
                         tags=clean_tags((tags or "").split(",")))


#: How an RFC 3339 time starts. Litestar reads query values leniently, and took a bare number
#: for a Unix time (``asOf=25860154152`` was the year 2789): found by `make fuzz`.
RFC3339_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _past_state(container: Container, actor: Actor, contact_id: UUID, as_of: datetime | None,
                version: int | None, as_of_text: str | None) -> Any:
    """The contact as it was at ``as_of`` or after event ``version``, rebuilt from its events."""
    if as_of is not None and not RFC3339_DATE.match(as_of_text or ""):
        raise ValidationError("asOf must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z", field="asOf")
    if as_of is not None and as_of.tzinfo is None:
        raise ValidationError("asOf needs a time zone (RFC 3339), e.g. 2026-01-31T12:00:00Z", field="asOf")
    return contact_as_of(container.app, actor, contact_id, at=as_of, version=version)


class ContactListController(Controller):
    """Named groups of contacts, with exact active-member counts."""

    path = "/api/v1/contact-lists"
    tags = ["contact lists"]

    @get("/", operation_id="listContactLists", sync_to_thread=True)
    def index(self, request: ActorRequest, container: Container) -> list[ContactListOut]:
        """All contact lists of the account, oldest first."""
        return list_queries.list_contact_lists(container.pool, request.user.account_id)

    @post("/", operation_id="createContactList", after_request=located("/api/v1/contact-lists/{}"),
          sync_to_thread=True,
          response_headers=[ETAG_HEADER])
    def create(self, request: ActorRequest, container: Container, data: ContactListCreate) -> Response[ContactListOut]:
        """Create a contact list (201)."""
        list_id = container.app.create_list(request.user, data.name, data.description)
        return _list_answer(container, request.user, list_id, status_code=201)

    @get("/{list_id:uuid}", operation_id="getContactList", sync_to_thread=True,
         response_headers=[ETAG_HEADER])
    def show(self, request: ActorRequest, container: Container, list_id: UUID) -> Response[ContactListOut]:
        """One contact list of the account, with its version as the ``ETag``."""
        return _list_answer(container, request.user, list_id)

    @patch("/{list_id:uuid}", operation_id="updateContactList",
           sync_to_thread=True, response_headers=[ETAG_HEADER])
    def update(self, request: ActorRequest, container: Container, list_id: UUID,
               data: ContactListUpdate, if_match: IfMatchHeader = "*") -> Response[ContactListOut]:
        """Change a list's name and/or description; with ``If-Match``, only if it is still at that version."""
        container.app.update_list(request.user, list_id, data.changes(), expected_version=expected_version(if_match))
        return _list_answer(container, request.user, list_id)

    @get("/{list_id:uuid}/history", operation_id="getContactListHistory",
         sync_to_thread=True)
    def history(self, request: ActorRequest, container: Container, list_id: UUID) -> list[HistoryEntry]:
        """Every event of the list (also a deleted one), oldest first, for auditors."""
        return history(container.app, request.user, ContactList, list_id)

    @delete("/{list_id:uuid}", operation_id="deleteContactList",
            sync_to_thread=True)
    def delete_list(self, request: ActorRequest, container: Container, list_id: UUID,
                    if_match: IfMatchHeader = "*") -> None:
        """Delete a list; its contacts stay in the account (204); with ``If-Match``, only at that version."""
        container.app.delete_list(request.user, list_id, expected_version=expected_version(if_match))

    @post("/{list_id:uuid}/contacts", operation_id="addContactsToList",
          responses=BULK_RESPONSES, status_code=200)
    async def add_contacts(self, request: ActorRequest, container: Container, list_id: UUID,
                           data: ContactIds) -> Response[Added]:
        """Add contacts to the list (``contactIds``, or every contact matching ``filter``); counts only
        contacts newly added."""
        selected = bulk.selected(data.contact_ids, data.filter, "contactIds")
        if isinstance(selected, list):  # on the event loop, as a PATCH
            return Response(Added(added=await container.app.add_to_list(request.user, list_id, selected)))
        return await asyncio.to_thread(bulk.act, container, request.user, "add_to_list", {"list_id": str(list_id)},
                                       selected, lambda n: Added(added=n))

    @delete("/{list_id:uuid}/contacts", operation_id="removeContactsFromList",
            responses=BULK_RESPONSES, status_code=200)
    async def remove_contacts(self, request: ActorRequest, container: Container, list_id: UUID,
                              data: ContactIds) -> Response[Removed]:
        """Remove contacts from the list (``contactIds``, or every contact matching ``filter``); the
        contacts stay in the account."""
        selected = bulk.selected(data.contact_ids, data.filter, "contactIds")
        if isinstance(selected, list):
            return Response(Removed(removed=await container.app.remove_from_list(request.user, list_id, selected)))
        return await asyncio.to_thread(bulk.act, container, request.user, "remove_from_list",
                                       {"list_id": str(list_id)}, selected, lambda n: Removed(removed=n))


class ContactController(Controller):
    """Contacts: create, read, update, search and filter."""

    path = "/api/v1/contacts"
    tags = ["contacts"]

    @get("/", operation_id="listContacts", sync_to_thread=True,
         response_headers=[LINK_HEADER])
    def index(
        self, request: ActorRequest, container: Container,
        page: PageParam = None, page_size: PageSizeParam = 25,
        search: SearchParam = None, list_id: ListIdParam = None, is_opted_out: OptedOutParam = None,
        tags: TagsParam = None, sort: SortParam = DEFAULT_SORT, cursor: CursorParam = None,
    ) -> Response[ContactPage]:
        """A page of active contacts with the exact total, newest first unless ``sort`` says otherwise;
        ``nextCursor`` (and the ``Link: rel="next"`` header) lead to the next page."""
        found = contact_page(container, request.user.account_id, contact_filter(search, list_id, is_opted_out, tags),
                             Sort.parse(sort), page=page, page_size=page_size, cursor=cursor)
        return Response(found, headers={"Link": next_link(request, found.next_cursor)} if found.next_cursor else {})

    @get("/tags", operation_id="listContactTags", sync_to_thread=True)
    def tags_index(self, request: ActorRequest, container: Container) -> list[str]:
        """Distinct tags of the account's active contacts, sorted."""
        return contact_queries.list_tags(container.pool, request.user.account_id)

    @get("/trash", operation_id="listTrash", sync_to_thread=True)
    def trash_index(self, request: ActorRequest, container: Container) -> list[ContactOut]:
        """Every trashed contact of the account, most recently trashed first, with ``deletedAt``."""
        return contact_queries.list_trash(container.pool, request.user.account_id)

    @post("/trash/restore", operation_id="restoreContacts",
          status_code=200, sync_to_thread=True)
    def restore(self, request: ActorRequest, container: Container, data: IdList) -> Restored:
        """Bring trashed contacts back with their lists and tags."""
        return Restored(restored=container.app.restore(request.user, data.ids))

    @delete("/trash", operation_id="purgeContacts",
            status_code=200, sync_to_thread=True)
    def purge(self, request: ActorRequest, container: Container, data: IdList) -> Purged:
        """Erase trashed contacts for good; active contacts are untouched and not counted."""
        return Purged(purged=container.app.purge(request.user, data.ids))

    @post("/bulk-delete", operation_id="bulkDeleteContacts",
          responses=bulk.BULK_RESPONSES, status_code=200, sync_to_thread=True)
    def bulk_trash(self, request: ActorRequest, container: Container, data: BulkSelection) -> Response[Deleted]:
        """Move active contacts to the trash (``ids``, or every contact matching ``filter``); counts only
        those that were active."""
        return bulk.act(container, request.user, "delete", {}, bulk.selected(data.ids, data.filter),
                        lambda n: Deleted(deleted=n), by_ids=partial(container.app.trash, request.user))

    @delete("/{contact_id:uuid}", operation_id="deleteContact")
    async def trash(self, request: ActorRequest, container: Container, contact_id: UUID,
                    if_match: IfMatchHeader = "*") -> None:
        """Move one contact to the trash (204); 404 if it is not an active contact of the account;
        with ``If-Match``, only if it is still at that version (412 if not)."""
        # On the event loop, as a PATCH (ContactsApplication.trash_contact).
        if not await container.app.trash_contact(request.user, contact_id,
                                                 expected_version=expected_version(if_match)):
            raise NotFoundError(f"contact {contact_id} not found", field="id")

    @get("/{contact_id:uuid}", operation_id="getContact", sync_to_thread=True,
         response_headers=[ETAG_HEADER])
    def show(
        self, request: ActorRequest, container: Container, contact_id: UUID,
        as_of: Annotated[datetime | None, Parameter(query="asOf", description=(
            "RFC 3339 time: the contact as it was then, rebuilt from its events (audit)"))] = None,
        version: Annotated[int | None, Parameter(ge=1, description="the contact after this event version")] = None,
    ) -> Any:
        """One active contact of the account, with its version as the ``ETag``; with ``asOf`` or ``version``,
        its state back then (no ETag: it is not the current version)."""
        if as_of is not None or version is not None:
            return _past_state(container, request.user, contact_id, as_of, version,
                               request.query_params.get("asOf"))
        return _contact_answer(container, request.user, contact_id)

    @get("/{contact_id:uuid}/history", operation_id="getContactHistory",
         sync_to_thread=True)
    def history(self, request: ActorRequest, container: Container, contact_id: UUID) -> list[HistoryEntry]:
        """Every event of the contact (also trashed or purged), oldest first, for auditors."""
        return history(container.app, request.user, Contact, contact_id)

    @post("/", operation_id="createContact", after_request=located("/api/v1/contacts/{}"),
          response_headers=[ETAG_HEADER])
    async def create(self, request: ActorRequest, container: Container, data: ContactCreate) -> Response[ContactOut]:
        """Create a contact (201); 422 for an invalid phone, 409 if the number is taken."""
        # On the event loop: the use case's own work is short, and its store joins a group
        # commit that takes one thread for many creates (command/unit_of_work.py).
        contact = await container.app.create_contact(request.user, phone=data.phone, region=data.region, pii=data.pii(),
                                               tags=data.tags, list_ids=data.list_ids, is_opted_out=data.is_opted_out)
        # The answer is the state just stored, as the read row holds it (one transaction wrote both):
        # reading it back cost five statements and three round trips of every create.
        return Response(_contact_out(contact), status_code=201, headers={"ETag": etag(contact.version)})

    @patch("/{contact_id:uuid}", operation_id="updateContact", response_headers=[ETAG_HEADER])
    async def update(self, request: ActorRequest, container: Container, contact_id: UUID,
                     data: ContactUpdate, if_match: IfMatchHeader = "*") -> Response[ContactOut]:
        """Change the fields sent; ``listIds`` replaces the memberships; with ``If-Match``, only if the
        contact is still at that version (412 if not)."""
        # On the event loop, as a create (ContactsApplication.update_contact). The answer is the
        # state just stored, as the read row holds it (one transaction wrote both), as a create's
        # is: reading it back cost a statement and a cursor a PATCH. An imported contact's
        # createdAt is its import's (the read row's), not its batch event's: that one is read.
        contact = await container.app.update_contact(request.user, contact_id, pii=data.pii(), changes=data.changes(),
                                                     region=data.sent("region"), list_ids=data.sent("list_ids"),
                                                     is_opted_out=data.sent("is_opted_out"),
                                                     expected_version=expected_version(if_match))
        if contact.imported:
            return await asyncio.to_thread(_contact_answer, container, request.user, contact_id)
        return Response(_contact_out(contact), headers={"ETag": etag(contact.version)})
