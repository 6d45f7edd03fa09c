"""The import's fast paths give exactly what the plain code gives (ids, reservation ids, stored JSON)."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import time
import uuid

from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex

from command.crypto import SEALED, SEALED_FIELDS, seal, seal_batch, unseal
from command.ids import uuid4_many, uuid7_many, uuid_texts, uuids_v4
from command.phones import reservation_id, reservation_ids
from command.transcoder import MsgspecJSONTranscoder
from projections.copy_text import copy_array, copy_row, copy_text
from projections.counters import ONE_MILLISECOND, ONE_SECOND, truncated


def _transcoders() -> tuple[JSONTranscoder, MsgspecJSONTranscoder]:
    stock, fast = JSONTranscoder(), MsgspecJSONTranscoder()
    for transcoder in (stock, fast):
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
            transcoder.register(transcoding)
    return stock, fast


def test_uuids_v4_equal_uuid_with_version_4_of_the_same_bytes() -> None:
    blob = os.urandom(16 * 300)
    assert uuids_v4(blob) == [uuid.UUID(bytes=blob[i:i + 16], version=4) for i in range(0, len(blob), 16)]


def test_uuid7_many_makes_distinct_version_7_uuids_that_sort_after_earlier_ones() -> None:
    earlier = uuid7_many(3)
    time.sleep(0.002)
    ids = uuid7_many(500)
    assert len(set(ids)) == 500
    assert {(u.version, u.variant) for u in ids} == {(7, uuid.RFC_4122)}
    assert min(ids) > max(earlier)  # a later batch's ids come after an earlier one's in every b-tree
    assert abs((ids[0].int >> 80) - time.time() * 1000) < 60_000  # the first 48 bits are the Unix time in ms
    assert uuid7_many(0) == []


def test_uuid4_many_makes_distinct_version_4_uuids() -> None:
    ids = uuid4_many(500)
    assert len(set(ids)) == 500
    assert {(u.version, u.variant) for u in ids} == {(4, uuid.RFC_4122)}
    assert uuid4_many(0) == []


def test_batch_reservation_ids_equal_single_ones() -> None:
    key, account = os.urandom(32), uuid.uuid4()
    numbers = ["+254712345678", "+2348031234567", "+27821234567", "+254712345678"]
    assert reservation_ids(key, account, numbers) == [reservation_id(key, account, n) for n in numbers]
    for key in (b"", os.urandom(64), os.urandom(100)):  # HMAC's key rules: padded, or hashed when longer
        assert reservation_ids(key, account, numbers) == [reservation_id(key, account, n) for n in numbers]
    assert reservation_ids(key, account, []) == []


def test_seal_batch_seals_each_contact_as_seal_does() -> None:
    ids = uuid4_many(3)
    keys = [os.urandom(32) for _ in ids]
    secrets = [{"phone": "+254712345678", "first_name": "Amina", "tags": ["vip"]},
               {"phone": "+254712345679", "first_name": None, "tags": []},
               {"phone": "+254712345670", "email": "a@example.com"}]  # other fields: named as they are
    sealed = seal_batch(keys, ids, secrets)
    for key, cid, secret, one in zip(keys, ids, secrets, sealed):
        assert unseal(key, cid, one) == secret
        assert one[SEALED_FIELDS] == seal(key, cid, secret)[SEALED_FIELDS] == sorted(secret)
    assert len({one[SEALED][:16] for one in sealed}) == 3  # each with a nonce of its own
    assert unseal(keys[0], ids[0], sealed[0]) != unseal(keys[1], ids[1], sealed[1])


def test_truncated_times_equal_each_time_truncated() -> None:
    start = dt.datetime(2026, 12, 31, 23, 59, 59, 1_500, tzinfo=dt.timezone.utc)
    times = [start - dt.timedelta(microseconds=row) for row in range(3_000)]  # an import's, across a year
    times += [start + dt.timedelta(seconds=1), start, start - dt.timedelta(hours=1)]  # and out of order
    assert list(truncated(times, ONE_SECOND)) == [t.replace(microsecond=0) for t in times]
    assert list(truncated(times, ONE_MILLISECOND)) == [t.replace(microsecond=t.microsecond // 1000 * 1000)
                                                       for t in times]


def test_copy_rows_and_arrays_equal_the_value_by_value_escapes() -> None:
    """The one-look fast paths give what escaping each value and tag gives, whatever the text holds."""
    import random

    def each_tag(items: list[str]) -> str:
        return "{" + ",".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "}"

    alphabet, rnd = ["a", '"', "\\", ",", "\t", "\n", "\r", "N", "{", " "], random.Random(7)
    for _ in range(5_000):
        tags = ["".join(rnd.choices(alphabet, k=rnd.randint(0, 4))) for _ in range(rnd.randint(0, 4))]
        assert copy_array(tags) == each_tag(tags)
        values = [None if rnd.random() < 0.2 else "".join(rnd.choices(alphabet, k=rnd.randint(0, 5)))
                  for _ in range(rnd.randint(1, 6))]
        assert copy_row(values) == "\t".join(copy_text(v) for v in values)
    assert copy_array([]) == "{}" and copy_array(["vip", "b2b"]) == '{"vip","b2b"}'
    assert copy_row(["a", None, ""]) == "a\t\\N\t"


def test_tags_cells_split_as_each_tag_unneutralised() -> None:
    """A cell without a quote skips unneutralising; every cell gives what unneutralising each tag gives."""
    import random

    from command.imports.cells import TAG_SEPARATORS, unneutralise
    from command.imports.rows import _tags

    def each_tag(cell: str) -> list[str]:
        return list(dict.fromkeys(t for t in (unneutralise(t.strip()) for t in TAG_SEPARATORS.split(cell.lower())) if t))

    rnd = random.Random(3)
    for _ in range(5_000):
        cell = "".join(rnd.choices(["a", "B", " ", ";", ",", "'", "=", "-", "x"], k=rnd.randint(0, 10)))
        assert _tags([cell], 0) == each_tag(cell), cell
    assert _tags(["VIP; promo,vip ;'=sum"], 0) == ["vip", "promo", "=sum"]


def test_uuid_texts_are_the_canonical_text() -> None:
    ids = uuid4_many(300) + uuid7_many(300)
    assert uuid_texts(ids) == [str(u) for u in ids] and uuid_texts([]) == []


def test_msgspec_transcoder_writes_the_stock_bytes_and_reads_both() -> None:
    stock, fast = _transcoders()
    state = {"id": uuid.uuid4(), "at": dt.datetime.now(dt.timezone.utc), "amount": decimal.Decimal("1.50"),
             "items": [1, 2.5, None, True, 'quote " and é', {"nested": uuid.uuid4()}], "pair": (1, 2),
             "looks_tagged": {"_type_": "not a transcoding"}, "contacts": '[{"id":"x"}]' * 100}
    assert fast.encode(state) == stock.encode(state)
    assert fast.decode(stock.encode(state)) == stock.decode(stock.encode(state))
    assert fast.decode(fast.encode(state))["pair"] == [1, 2]


def test_msgspec_transcoder_refuses_unregistered_types_like_the_stock_one() -> None:
    import pytest
    from eventsourcing.persistence import TranscodingNotRegisteredError

    _, fast = _transcoders()
    with pytest.raises(TranscodingNotRegisteredError):
        fast.encode({"value": object()})


def test_inlined_validity_checks_agree_with_libphonenumber_for_every_single_region_code() -> None:
    import random

    import phonenumbers

    from command.phones import _validity_checks

    rng, compared, valid = random.Random(5), 0, 0
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        checks = _validity_checks(code)
        if checks is None:
            continue  # shared or non-geographic calling code: the library's own path
        is_valid, region = checks
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        examples = [d.example_number for d in (metadata.general_desc, metadata.mobile, metadata.fixed_line,
                                               metadata.toll_free, metadata.premium_rate, metadata.voip)
                    if d is not None and d.example_number] or ["12345678"]
        for _ in range(150):
            example = rng.choice(examples)
            length = max(1, len(example) + rng.choice([-1, 0, 0, 1]))
            keep = rng.randint(0, min(len(example), length))
            digits = example[:keep] + "".join(rng.choice("0123456789") for _ in range(length - keep))
            digits = "1" + digits[1:] if digits[0] == "0" else digits
            number = phonenumbers.PhoneNumber(country_code=code, national_number=int(digits))
            expected = phonenumbers.is_valid_number(number) and phonenumbers.region_code_for_number(number) == region
            assert is_valid(digits) == expected, (code, digits)
            compared += 1
            valid += expected
    assert compared > 20000 and valid > 2000


def test_an_import_batch_fans_out_into_exactly_the_single_create_messages() -> None:
    from command.context import Actor

    for actor in (Actor(account_id=uuid.uuid4(), sub="importer", request_id="req-1"),
                  Actor(account_id=uuid.uuid4(), sub='o"dd\\ \u00e9 </script>\n', request_id='r"q\\')):
        _the_batch_fans_out_into_the_single_create_messages(actor)


def _the_batch_fans_out_into_the_single_create_messages(actor) -> None:  # noqa: ANN001
    from command.domain import ContactImport
    from events.contract import _message, event_id, to_messages

    job = ContactImport.start(actor, source="csv", filename="f.csv", list_id=None, idempotency_key=None)
    entries = [{"id": uuid.uuid4(), "row": i, "line": i + 2, "pii": pii, "tags": ["vip"][:i % 2], "list_ids": [uuid.uuid4()][:i % 2],
                "is_opted_out": i == 2, "reservation_id": uuid.uuid4(), "status": "valid" if i else "invalid",
                "invalid_reason": None if i else "unknown_network", "operator": "Safaricom" if i else None,
                "country": "KE"}
               for i, pii in enumerate([{"first_name": "Amina", "last_name": None, "phone": "+254712000001",
                                         "email": "a@example.com", "notes": "n"},
                                        {"first_name": 'Q"uote', "last_name": "é", "phone": "+254712000002",
                                         "email": None, "notes": None},
                                        {"erased": True}])]
    job.record_rows(actor, entries, [], 3, {"read": 3, "imported": 3, "valid": 2, "invalid": 1, "skipped": 0})
    batch = job.collect_events()[-1]
    fast = to_messages(batch, 42, "pfx")
    slow = [_message(created, 42, "pfx") for created in batch.created_events()] + [_message(batch, 42, "pfx")]
    assert fast == slow
    assert fast[0].msg_id == event_id(entries[0]["id"], 1)
