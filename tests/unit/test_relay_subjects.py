"""The relay publishes without nats-py's per-message subject check, so it checks its subject prefix once."""

from __future__ import annotations

import pytest

from events.relay import Relay


def _relay(prefix: str) -> Relay:
    return Relay(None, None, None, nats_url="", database_url="", stream="CONTACTS",  # type: ignore[arg-type]
                 subject_prefix=prefix, duplicate_window_s=60)


@pytest.mark.parametrize("prefix", ["contacts", "acme.contacts", "c1a2b3c4", "tenant-1.contacts_v2"])
def test_a_subject_prefix_is_taken(prefix: str) -> None:
    assert _relay(prefix).prefix == prefix


@pytest.mark.parametrize("prefix", ["", "a b", "contacts.", ".contacts", "a..b", "a.*", "a.>", "con\r\nPUB x 1"])
def test_a_prefix_that_is_no_plain_subject_is_refused_when_the_relay_is_made(prefix: str) -> None:
    with pytest.raises(ValueError, match="is not a subject"):
        _relay(prefix)
