"""An Idempotency-Key's JSON import hash, computed a thousand contacts at a time, is the one of the whole body."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from service.request_hashes import json_hash, request_hash
from service.imports import BulkContact, BulkImport


def _contacts(count: int) -> list[BulkContact]:
    return [BulkContact(phone=f"+2547{12_000_000 + i:08d}" if i % 3 else 254712000000 + i,
                        first_name="Zoë \"Z\" \\ ✓" if i % 2 else None, tags=["vip", "a,b"][:i % 3],
                        notes="n" * (i % 50), is_opted_out=bool(i % 5 == 0)) for i in range(count)]


@pytest.mark.parametrize("count", [0, 1, 999, 1000, 1001, 2500])
@pytest.mark.parametrize("list_id, region", [(None, None), (uuid.UUID(int=7), "KE")])
def test_a_json_imports_hash_is_the_hash_of_its_whole_encoding(count: int, list_id: uuid.UUID | None,
                                                                 region: str | None) -> None:
    """Keys stored before the hash was computed in pieces still replay: the digest is the same."""
    content = BulkImport(contacts=_contacts(count), list_id=list_id, region=region)
    assert json_hash(content) == request_hash(b"json", msgspec.json.encode(content))


def test_a_json_imports_hash_changes_with_any_contact() -> None:
    """Another body is another request (422 for a reused key), wherever the difference is."""
    contacts = _contacts(2500)
    changed = _contacts(2500)
    changed[1700] = msgspec.structs.replace(changed[1700], last_name="Otieno")
    assert json_hash(BulkImport(contacts=contacts)) != json_hash(BulkImport(contacts=changed))
