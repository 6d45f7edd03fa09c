"""The event contract: every published message matches its documented schema."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import msgspec
import pytest

from events.asyncapi import Envelope, InboundSms, data_schema, document, example
from events.contract import EVENT_TYPES
from tests.support import Service, read_cloudevent, read_stream


def test_asyncapi_document_covers_every_event_type_with_a_valid_example(service: Service) -> None:
    doc = service.anonymous().get("/asyncapi.json").json()
    assert doc["asyncapi"].startswith("3.")
    types = {m["name"] for m in doc["components"]["messages"].values()}
    assert types == {spec.type for spec in EVENT_TYPES.values()} | {"inbound_sms"}
    for spec in EVENT_TYPES.values():
        sample = example(spec)
        msgspec.convert(sample, Envelope)
        msgspec.convert(sample["data"], data_schema(spec.type))
    assert "ContactCreated" in doc["components"]["schemas"]
    settings = service.settings
    assert doc == json.loads(json.dumps(document(settings.nats_subject_prefix, settings.nats_stream,
                                                 settings.inbound_subject), default=str))


def test_asyncapi_says_what_the_service_sends_and_receives() -> None:
    doc = document()
    actions = {name: op["action"] for name, op in doc["operations"].items()}
    assert actions.pop("receive_inboundSms") == "receive" and set(actions.values()) == {"send"}
    assert doc["channels"]["smsInbound"]["address"] == "sms.inbound.{accountId}"
    assert doc["servers"]["nats"]["protocol"] == "nats" and "`CONTACTS`" in doc["servers"]["nats"]["description"]
    assert doc["components"]["schemas"]["NatsHeaders"]["required"] == ["Nats-Msg-Id"]
    summaries = [m["summary"] for m in doc["components"]["messages"].values()]
    assert len(set(summaries)) == len(summaries) and not any(s.startswith("contacts.") for s in summaries)
    for message in doc["components"]["messages"].values():
        assert message["description"] and len(message["examples"]) == 1
        recorded = message["examples"][0]
        if "headers" in recorded:
            assert recorded["headers"]["Nats-Msg-Id"] == recorded["payload"]["id"]
    inbound = doc["components"]["messages"]["inboundSms"]["examples"][0]["payload"]
    assert msgspec.convert(inbound, InboundSms).body == "STOP"


def test_the_shipped_asyncapi_file_is_the_generated_document() -> None:
    """docs/asyncapi.json is for readers without a running service; regenerate: python -m events.asyncapi."""
    shipped = json.loads((Path(__file__).parents[2] / "docs" / "asyncapi.json").read_text())
    assert shipped == json.loads(json.dumps(document()))


def test_a_real_asyncapi_parser_finds_no_error() -> None:
    """@asyncapi/parser 3 (node) validates docs/asyncapi.json: `make asyncapi-check` installs it into .tools."""
    root = Path(__file__).parents[2]
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the AsyncAPI parser check needs Node.js 18+ (apt-get install nodejs)")
    if not (root / ".tools" / "node_modules" / "@asyncapi" / "parser").is_dir():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: it installs @asyncapi/parser into .tools (make asyncapi-tools)")
        installed = subprocess.run(["make", "asyncapi-tools"], cwd=root, capture_output=True, text=True, timeout=600)
        assert installed.returncode == 0, installed.stdout + installed.stderr
    checked = subprocess.run(["node", "scripts/asyncapi_check.mjs", "docs/asyncapi.json"], cwd=root,
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_published_message_matches_its_schema(service: Service) -> None:
    api = service.client()
    lst = api.create_list("contract", description="d")
    api.patch(f"/api/v1/contact-lists/{lst['id']}", json={"name": "contract 2"})
    c = api.create_contact("0712345678", firstName="Ann", tags=["x"], listIds=[lst["id"]])
    api.patch(f"/api/v1/contacts/{c['id']}", json={"lastName": "B", "isOptedOut": True, "listIds": []})
    api.patch(f"/api/v1/contacts/{c['id']}", json={"isOptedOut": False})
    api.post("/api/v1/contacts/import", files={"file": ("c.csv", b"phone\n0712000001\n12\n")})
    api.delete(f"/api/v1/contacts/{c['id']}")
    api.post("/api/v1/contacts/trash/restore", json={"ids": [c["id"]]})
    api.delete(f"/api/v1/contacts/{c['id']}")
    api.delete_json("/api/v1/contacts/trash", {"ids": [c["id"]]})
    api.delete(f"/api/v1/contact-lists/{lst['id']}")
    service.wait_for_relay()
    subject = f"{service.settings.nats_subject_prefix}.{api.account_id}.>"
    messages = asyncio.run(read_stream(service.nats_url, service.settings.nats_stream, subject))
    seen = set()
    for msg in messages:
        envelope = msgspec.json.decode(msg.data, type=Envelope)
        msgspec.convert(envelope.data, data_schema(envelope.type))
        assert msg.subject.endswith(envelope.type.split(".")[2]) and envelope.id == msg.headers["Nats-Msg-Id"]
        seen.add(envelope.type)
        # As a consumer's CloudEvents SDK reads it: a valid CloudEvent 1.0, the same id, type and data.
        event = read_cloudevent(msg.data)
        assert (event.get_specversion(), event.get_id(), event.get_type()) == ("1.0", envelope.id, envelope.type)
        assert event.get_data() == json.loads(msg.data)["data"] and event.get_time() is not None
    assert len(seen) >= 13, seen


def test_a_contact_purged_before_its_messages_went_out_is_published_marked_erased(service: Service) -> None:
    """A lagging relay unseals nothing once the key is gone: the messages say so instead of looking complete."""
    from events.contract import to_messages

    api = service.client()
    c = api.create_contact("0712345600", firstName="Eve", lastName="Early")
    api.patch(f"/api/v1/contacts/{c['id']}", json={"lastName": "Later", "notes": "secret", "tags": ["t"]})
    api.delete(f"/api/v1/contacts/{c['id']}")
    api.delete_json("/api/v1/contacts/trash", {"ids": [c["id"]]})
    created, updated = service.container.app.aggregate_events(uuid.UUID(c["id"]))[:2]  # as the relay reads them now
    [first] = to_messages(created, 1, "contacts")
    data = msgspec.json.decode(first.payload)["data"]
    assert data["erased"] is True and not {"phone", "firstName", "lastName"} & data.keys()
    [second] = to_messages(updated, 2, "contacts")
    data = msgspec.json.decode(second.payload)["data"]
    # The names of what changed stay (sealed fields too); no value does, the tags included.
    assert data["erased"] is True and data["changedFields"] == ["lastName", "notes", "tags"] and data["changes"] == {}
    for message in (first, second):
        envelope = msgspec.json.decode(message.payload, type=Envelope)
        msgspec.convert(envelope.data, data_schema(envelope.type))


def test_the_relays_import_path_gives_the_messages_of_the_fully_decoded_batch(service: Service) -> None:
    """The relay opens an import batch only for its messages (``PiiMapper.open_import_batch``): same bytes as decoding it whole."""
    from events.contract import import_messages, to_messages
    from events.relay import Stored

    api = service.client()
    lst = api.create_list("Imported")
    rows = ["first_name,last_name,phone,email,tags,notes",
            'Zoë,"O""Neil",0712000101,z@example.com,"vip; Nairobi",secret',
            ",,0712000102,,,",                              # no names, no tags
            'Amina,"Back\\slash\t",+254712000103,not-an-email,b2b,',
            "Kofi,Mensah,+233244000104,,promo,n"]
    r = api.post("/api/v1/contacts/import", files={"file": ("a.csv", "\n".join(rows).encode())},
                 data={"listId": lst["id"], "region": "KE"})
    assert r.status_code == 201, r.text
    assert r.json()["imported"] == 4
    purged = api.get("/api/v1/contacts", params={"search": "0712000102"}).json()["contacts"][0]["id"]
    api.delete(f"/api/v1/contacts/{purged}")
    api.delete_json("/api/v1/contacts/trash", {"ids": [purged]})  # its key is gone: its message says erased
    app = service.container.app
    with service.container.pool.connection() as conn:
        row = conn.execute("SELECT notification_id, originator_id, originator_version, topic, state FROM contacts_events"
                           " WHERE originator_id = %s AND topic LIKE %s", (r.json()["importId"], "%Progressed"),
                           binary=True).fetchone()
    stored = Stored(row[0], row[1], row[2], row[3], bytes(row[4]), None)
    fast = import_messages(*app.mapper.open_import_batch(stored), stored.id, "pfx")
    whole = to_messages(app.decode([stored])[0], stored.id, "pfx")
    assert fast == whole
    datas = [msgspec.json.decode(m.payload)["data"] for m in fast]
    assert [d.get("firstName") for d in datas[:4]] == ["Zoë", None, "Amina", "Kofi"]
    assert datas[1]["erased"] is True and "phone" not in datas[1]
    assert datas[0]["tags"] == ["vip", "nairobi"] and datas[0]["listIds"] == [lst["id"]]
    assert len(datas[4]["contactIds"]) == 4  # the import.progress message last
