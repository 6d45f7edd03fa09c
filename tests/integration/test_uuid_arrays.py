"""The ``uuid[]`` parameters every batch sends (command/ids.py ``uuid_array``) reach PostgreSQL intact."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from command.ids import uuid4_many, uuid7_many, uuid_array


@pytest.mark.parametrize("count", [0, 1, 15, 16, 1_000, 70_000])  # each MessagePack array header's size
def test_uuid_array_reads_back_as_the_same_uuids_in_order(postgres_server: str, count: int) -> None:
    ids = uuid7_many(count // 2) + uuid4_many(count - count // 2)
    with psycopg.connect(postgres_server) as conn:
        got = conn.execute("SELECT %s::uuid[]", (uuid_array(ids),)).fetchone()[0]
        assert got == ids
        # Any iterable, and the forms the unit of work uses: unnest, = ANY.
        assert conn.execute("SELECT array_agg(i ORDER BY n) FROM unnest(%s::uuid[]) WITH ORDINALITY AS t(i, n)",
                            (uuid_array(iter(ids)),)).fetchone()[0] == (ids or None)
        if ids:
            assert conn.execute("SELECT %s = ANY(%s::uuid[])", (ids[-1], uuid_array(ids))).fetchone()[0]


def test_uuid_array_refuses_what_is_not_a_uuid() -> None:
    with pytest.raises(TypeError):
        uuid_array([uuid.uuid4(), str(uuid.uuid4())])
