"""HTTP controllers: each handler turns a request into a command or a query."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.openapi.spec import Example
from litestar.params import Parameter

from command.context import Actor
from command.domain import Contact, ContactList
from command.errors import NotFoundError, ValidationError
from events.history import HistoryEntry, contact_as_of, history
from query import contact_lists as list_queries
from query import contacts as contact_queries
from query import keyset
from query.contacts import ContactFilter
from query.keyset import DEFAULT_SORT, SORT_KEYS, Position, Sort
from query.models import ContactListOut, ContactOut, ContactPage
from service import bulk, cursors
from service.bulk import BULK_RESPONSES
from service.bootstrap import Container
from service.cleaning import clean_email, clean_region, clean_tags, clean_text
from service.etags import ETAG_HEADER, IfMatchHeader, etag, expected_version
from service.openapi import located
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
    NO_NUL,
    UUID_TEXT,
    Purged,
    Removed,
    Restored,
)

ActorRequest = Request[Actor, str, Any]
PII_INPUT = {"first_name": "first_name", "last_name": "last_name", "email": "email", "notes": "notes"}


def _found(value: Any, what: str, ident: UUID) -> Any:
    if value is None:
        raise NotFoundError(f"{what} {ident} not found", field="id")
    return value


def _created(contact: Contact) -> ContactOut:
    """A new contact's answer from its aggregate: the row its Created event projects."""
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


# The filters of GET /contacts, declared once: the exports take the same ones, so users
# export exactly what they see. Plain parameters, not a dependency: resolving one cost
# GET /contacts 0.12 ms a request (interleaved A/B, 2,800 requests each).
SearchParam = Annotated[str | None, Parameter(max_length=200, pattern=NO_NUL, description=(
    "Case-insensitive substring of first name, last name or full name; a term that reads as a phone number"
    " (digits with spaces, +, -, ., parentheses; at least 3 digits) also matches the phone's digits"))]
ListIdParam = Annotated[str | None, Parameter(query="listId", pattern=UUID_TEXT, schema_extra={"format": "uuid"},
                                              description="Only contacts in this list")]
OptedOutParam = Annotated[bool | None, Parameter(query="isOptedOut")]
TagsParam = Annotated[str | None, Parameter(max_length=2000, pattern=NO_NUL, description=(
    "Comma-separated tags; a contact must have all of them"))]


SORTS = tuple(f"{sign}{field}" for field in SORT_KEYS for sign in ("", "-"))
SortParam = Annotated[Literal[SORTS], Parameter(description=(
    "Sort order: createdAt, updatedAt, firstName, lastName or phone, ascending; with a leading - descending."
    " Ties go by id; names sort case-insensitively, and contacts without one come last either way."
    " Default -createdAt (newest first)"), examples=[Example(summary="by last name, A to Z", value="lastName")])]
CursorParam = Annotated[str | None, Parameter(max_length=512, pattern=r"^[A-Za-z0-9_-]+$", description=(
    "The `nextCursor` of the previous page: the page after it, in the same sort and filters (another sort or"
    " other filters, or an altered cursor, are a 422 naming cursor). Stable while contacts are added or removed;"
    " a deep page costs what the first does. Not with `page`"),
    examples=[Example(summary="a nextCursor as returned (valid only for the account and page it came from)",
                      value="AZSrLWNyZWF0ZWRBdMQI3q2-7wAAAAC7MjAyNi0xMi0wNlQwMzoxMjozNC4xMjM0NTYrMDA6MDA")])]
LINK_HEADER = ResponseHeader(name="Link", documentation_only=True, description=(
    'The next page, when there is one: `</api/v1/contacts?…&cursor=…>; rel="next"` (RFC 8288)'),
    example='</api/v1/contacts?pageSize=25&cursor=AZSrLWNy…>; rel="next"')


def next_link(request: ActorRequest, cursor: str) -> str:
    """A ``Link`` header to the next page: this request's query, without ``page``, with ``cursor``."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("page", "cursor")]
    return f'<{request.url.path}?{urlencode([*query, ("cursor", cursor)])}>; rel="next"'


def contact_filter(search: str | None, list_id: str | None, is_opted_out: bool | None,
                   tags: str | None) -> ContactFilter:
    return ContactFilter(search=search, list_id=UUID(list_id) if list_id else None, is_opted_out=is_opted_out,
                         tags=clean_tags((tags or "").split(",")))


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
        list_id = container.app.create_list(request.user, _required_name(data.name), clean_text(data.description))
        return _tagged(list_queries.get_contact_list_versioned(container.pool, request.user.account_id, list_id),
                       "contact list", list_id, status_code=201)

    @get("/{list_id:uuid}", operation_id="getContactList", sync_to_thread=True,
         response_headers=[ETAG_HEADER])
    def show(self, request: ActorRequest, container: Container, list_id: UUID) -> Response[ContactListOut]:
        """One contact list of the account, with its version as the ``ETag``."""
        return _tagged(list_queries.get_contact_list_versioned(container.pool, request.user.account_id, list_id),
                       "contact list", list_id)

    @patch("/{list_id:uuid}", operation_id="updateContactList",
           sync_to_thread=True, response_headers=[ETAG_HEADER])
    def update(self, request: ActorRequest, container: Container, list_id: UUID,
               data: ContactListUpdate, if_match: IfMatchHeader = "*") -> Response[ContactListOut]:
        """Change a list's name and/or description; with ``If-Match``, only if it is still at that version."""
        changes: dict[str, Any] = {}
        if data.name is not msgspec.UNSET:
            changes["name"] = _required_name(data.name)
        if data.description is not msgspec.UNSET:
            changes["description"] = clean_text(data.description)
        container.app.update_list(request.user, list_id, changes, expected_version=expected_version(if_match))
        return _tagged(list_queries.get_contact_list_versioned(container.pool, request.user.account_id, list_id),
                       "contact list", list_id)

    @get("/{list_id:uuid}/history", operation_id="getContactListHistory",
         sync_to_thread=True)
    def history(self, request: ActorRequest, container: Container, list_id: UUID) -> list[HistoryEntry]:
        """Every event of the list (also a deleted one), oldest first, for auditors."""
        return history(container.app, request.user, ContactList, list_id)

    @delete("/{list_id:uuid}", operation_id="deleteContactList",
            sync_to_thread=True)
    def remove(self, request: ActorRequest, container: Container, list_id: UUID,
               if_match: IfMatchHeader = "*") -> None:
        """Delete a list; its contacts stay in the account (204); with ``If-Match``, only at that version."""
        container.app.delete_list(request.user, list_id, expected_version=expected_version(if_match))

    @post("/{list_id:uuid}/contacts", operation_id="addContactsToList",
          responses=BULK_RESPONSES, status_code=200, sync_to_thread=True)
    def add_contacts(self, request: ActorRequest, container: Container, list_id: UUID,
                     data: ContactIds) -> Response[Added]:
        """Add contacts to the list (``contactIds``, or every contact matching ``filter``); counts only
        contacts newly added."""
        return bulk.act(container, request.user, "add_to_list", {"list_id": str(list_id)},
                        bulk.selected(data.contact_ids, data.filter, "contactIds"), lambda n: Added(added=n),
                        by_ids=partial(container.app.add_to_list, request.user, list_id))

    @delete("/{list_id:uuid}/contacts", operation_id="removeContactsFromList",
            responses=BULK_RESPONSES, status_code=200, sync_to_thread=True)
    def remove_contacts(self, request: ActorRequest, container: Container, list_id: UUID,
                        data: ContactIds) -> Response[Removed]:
        """Remove contacts from the list (``contactIds``, or every contact matching ``filter``); the
        contacts stay in the account."""
        return bulk.act(container, request.user, "remove_from_list", {"list_id": str(list_id)},
                        bulk.selected(data.contact_ids, data.filter, "contactIds"), lambda n: Removed(removed=n),
                        by_ids=partial(container.app.remove_from_list, request.user, list_id))


def _required_name(name: str) -> str:
    """A list's name, trimmed; an empty one is a 422 naming ``name``."""
    cleaned = clean_text(name)
    if not cleaned:
        raise ValidationError("name must not be empty", field="name")
    return cleaned


class ContactController(Controller):
    """Contacts: create, read, update, search and filter."""

    path = "/api/v1/contacts"
    tags = ["contacts"]

    @get("/", operation_id="listContacts", sync_to_thread=True,
         response_headers=[LINK_HEADER])
    def index(
        self, request: ActorRequest, container: Container,
        page: Annotated[int | None, Parameter(ge=1, le=1_000_000, description=(
            "Page number, from 1 (default 1): offset paging. Not with `cursor` (422)"))] = None,
        page_size: Annotated[int, Parameter(query="pageSize", ge=1, le=100,
                                            description="Items per page (max 100; more is a 422)")] = 25,
        search: SearchParam = None, list_id: ListIdParam = None, is_opted_out: OptedOutParam = None,
        tags: TagsParam = None, sort: SortParam = DEFAULT_SORT, cursor: CursorParam = None,
    ) -> Response[ContactPage]:
        """A page of active contacts with the exact total, newest first unless ``sort`` says otherwise;
        ``nextCursor`` (and the ``Link: rel="next"`` header) lead to the next page."""
        if cursor is not None and page is not None:
            raise ValidationError("send either cursor or page, not both: a cursor already says where the page"
                                  " starts", field="cursor")
        flt, order = contact_filter(search, list_id, is_opted_out, tags), Sort.parse(sort)
        secret = container.app.hash_key
        if cursor is None and str(order) == DEFAULT_SORT:
            # Newest first by page number: page_contacts' counted fast paths (docs/benchmarks.md).
            found = contact_queries.page_contacts(container.pool, request.user.account_id, flt, page or 1, page_size)
            offset = ((page or 1) - 1) * page_size
            if found.contacts and offset + len(found.contacts) < found.total:
                last = found.contacts[-1]
                found.next_cursor = cursors.encode(secret, flt, order, Position(last.created_at, last.id))
        else:
            after = cursors.decode(secret, cursor, flt, order) if cursor is not None else None
            sorted_found = keyset.sorted_page(container.pool, request.user.account_id, flt, order, page_size,
                                              after=after, offset=((page or 1) - 1) * page_size)
            found = ContactPage(contacts=sorted_found.contacts, total=sorted_found.total,
                                page=None if cursor is not None else page or 1, page_size=page_size,
                                next_cursor=cursors.encode(secret, flt, order, sorted_found.next)
                                if sorted_found.next else None)
        headers = {"Link": next_link(request, found.next_cursor)} if found.next_cursor else {}
        return Response(found, headers=headers)

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
    def bulk_delete(self, request: ActorRequest, container: Container, data: BulkSelection) -> Response[Deleted]:
        """Move active contacts to the trash (``ids``, or every contact matching ``filter``); counts only
        those that were active."""
        return bulk.act(container, request.user, "delete", {}, bulk.selected(data.ids, data.filter),
                        lambda n: Deleted(deleted=n), by_ids=partial(container.app.trash, request.user))

    @delete("/{contact_id:uuid}", operation_id="deleteContact",
            sync_to_thread=True)
    def remove(self, request: ActorRequest, container: Container, contact_id: UUID,
               if_match: IfMatchHeader = "*") -> None:
        """Move one contact to the trash (204); 404 if it is not an active contact of the account;
        with ``If-Match``, only if it is still at that version (412 if not)."""
        if not container.app.trash_contact(request.user, contact_id, expected_version=expected_version(if_match)):
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
            if as_of is not None and as_of.tzinfo is None:
                raise ValidationError("asOf needs a time zone (RFC 3339), e.g. 2026-01-31T12:00:00Z", field="asOf")
            return contact_as_of(container.app, request.user, contact_id, at=as_of, version=version)
        return _tagged(contact_queries.get_contact_versioned(container.pool, request.user.account_id, contact_id),
                       "contact", contact_id)

    @get("/{contact_id:uuid}/history", operation_id="getContactHistory",
         sync_to_thread=True)
    def history(self, request: ActorRequest, container: Container, contact_id: UUID) -> list[HistoryEntry]:
        """Every event of the contact (also trashed or purged), oldest first, for auditors."""
        return history(container.app, request.user, Contact, contact_id)

    @post("/", operation_id="createContact", after_request=located("/api/v1/contacts/{}"), sync_to_thread=True,
          response_headers=[ETAG_HEADER])
    def create(self, request: ActorRequest, container: Container, data: ContactCreate) -> Response[ContactOut]:
        """Create a contact (201); 422 for an invalid phone, 409 if the number is taken."""
        contact = container.app.create_contact(
            request.user, phone=data.phone, region=clean_region(data.region),
            pii={"first_name": clean_text(data.first_name), "last_name": clean_text(data.last_name),
                 "email": clean_email(data.email), "notes": clean_text(data.notes)},
            tags=clean_tags(data.tags), list_ids=data.list_ids, is_opted_out=data.is_opted_out)
        # The answer is the state just stored, as the read row holds it (one transaction wrote both):
        # reading it back cost five statements and three round trips of every create.
        return Response(_created(contact), status_code=201, headers={"ETag": etag(contact.version)})

    @patch("/{contact_id:uuid}", operation_id="updateContact",
           sync_to_thread=True, response_headers=[ETAG_HEADER])
    def update(self, request: ActorRequest, container: Container, contact_id: UUID,
               data: ContactUpdate, if_match: IfMatchHeader = "*") -> Response[ContactOut]:
        """Change the fields sent; ``listIds`` replaces the memberships; with ``If-Match``, only if the
        contact is still at that version (412 if not)."""
        pii: dict[str, Any] = {}
        for field in ("first_name", "last_name", "notes"):
            value = getattr(data, field)
            if value is not msgspec.UNSET:
                pii[field] = clean_text(value)
        if data.email is not msgspec.UNSET:
            pii["email"] = clean_email(data.email)
        if data.phone is not msgspec.UNSET:
            pii["phone"] = data.phone
        changes: dict[str, Any] = {}
        if data.tags is not msgspec.UNSET:
            changes["tags"] = clean_tags(data.tags)
        container.app.update_contact(
            request.user, contact_id, pii=pii, changes=changes,
            region=None if data.region is msgspec.UNSET else clean_region(data.region),
            list_ids=None if data.list_ids is msgspec.UNSET else data.list_ids,
            is_opted_out=None if data.is_opted_out is msgspec.UNSET else data.is_opted_out,
            expected_version=expected_version(if_match))
        return _tagged(contact_queries.get_contact_versioned(container.pool, request.user.account_id, contact_id),
                       "contact", contact_id)
