"""The pages of GET /contacts: by page number (offset) or by cursor (keyset), each with the next page's cursor."""

from __future__ import annotations

from uuid import UUID

from command.errors import ValidationError
from query import contacts as contact_queries
from query import keyset
from query.contacts import ContactFilter
from query.keyset import DEFAULT_SORT, Position, Sort
from query.models import ContactPage
from service import cursors
from service.bootstrap import Container


def contact_page(container: Container, account_id: UUID, flt: ContactFilter, order: Sort, *,
                 page: int | None, page_size: int, cursor: str | None) -> ContactPage:
    """The page ``page`` (default 1) or the one after ``cursor``, in ``order``; never both."""
    if cursor is not None and page is not None:
        raise ValidationError("send either cursor or page, not both: a cursor already says where the page"
                              " starts", field="cursor")
    secret = container.app.hash_key
    if cursor is None and str(order) == DEFAULT_SORT:
        # Newest first by page number: page_contacts' counted fast paths (docs/benchmarks.md).
        found = contact_queries.page_contacts(container.pool, account_id, flt, page or 1, page_size)
        offset = ((page or 1) - 1) * page_size
        if found.contacts and offset + len(found.contacts) < found.total:
            last = found.contacts[-1]
            found.next_cursor = cursors.encode(secret, flt, order, Position(last.created_at, last.id))
        return found
    after = cursors.decode(secret, cursor, flt, order) if cursor is not None else None
    sorted_found = keyset.sorted_page(container.pool, account_id, flt, order, page_size,
                                      after=after, offset=((page or 1) - 1) * page_size)
    return ContactPage(contacts=sorted_found.contacts, total=sorted_found.total,
                       page=None if cursor is not None else page or 1, page_size=page_size,
                       next_cursor=cursors.encode(secret, flt, order, sorted_found.next)
                       if sorted_found.next else None)
