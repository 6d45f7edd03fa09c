"""Advisory lock keys: each layer keeps its own, and no number is taken twice across them (no I/O)."""

from __future__ import annotations

from types import ModuleType

from command import locks as command_locks
from events import locks as events_locks
from service import locks as service_locks


def _keys(module: ModuleType) -> dict[str, int]:
    return {f"{module.__name__}.{name}": value for name, value in vars(module).items()
            if name.isupper() and isinstance(value, int)}


def test_no_advisory_lock_key_is_used_twice_across_the_layers() -> None:
    keys = {**_keys(service_locks), **_keys(events_locks), **_keys(command_locks)}
    assert len(keys) == 8, keys  # a new key is added here too, so this check sees it
    taken: dict[int, str] = {}
    for name, value in keys.items():
        assert value not in taken, f"{name} and {taken[value]} share the advisory lock key {value}"
        taken[value] = name
    assert 724_002 not in taken  # retired with the write schema: never reused, so an older process cannot collide


def test_the_append_lock_in_sql_is_the_one_the_swap_and_start_up_take() -> None:
    """append_events names the append lock's number itself (command/schema.sql): the rebuild's swap and
    the start-up catch-up hold writers off only if it is the same key."""
    from pathlib import Path

    schema = (Path(command_locks.__file__).parent / "schema.sql").read_text()
    assert f"pg_advisory_xact_lock({command_locks.EVENTS_APPEND})" in schema
    assert "LOCK TABLE contacts_events" not in schema  # autovacuum's lock conflicts with the table's EXCLUSIVE
