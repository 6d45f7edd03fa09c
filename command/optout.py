"""Inbound opt-out: a STOP-like reply from a known number opts its contact out."""

from __future__ import annotations

from uuid import UUID

from command.application import ContactsApplication
from command.context import Actor
from command.domain import Contact
from command.errors import InvalidPhoneError
from command.phones import reservation_id

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})


def is_stop(body: str) -> bool:
    """STOP, STOPALL, UNSUBSCRIBE, CANCEL, END or QUIT, trimmed, in any case."""
    return body.strip().upper() in STOP_WORDS


def opt_out_by_sms(app: ContactsApplication, account_id: UUID, sender: str, body: str,
                   message_id: str = "") -> UUID | None:
    """Opt out the account's contact holding ``sender``; its id, or None when nothing changed.

    Idempotent: an already opted-out contact, an unknown number or another word
    changes nothing.
    """
    if not is_stop(body):
        return None
    try:
        phone = app.parse(sender)
    except InvalidPhoneError:
        return None
    holder = app.reservation(reservation_id(app.hash_key, account_id, phone.e164))
    if holder is None or holder[0] is None:
        return None
    actor = Actor(account_id=account_id, sub="inbound-sms", request_id=message_id[:100])
    contact = app._get(Contact, holder[0])  # noqa: SLF001 - same bounded context
    if contact is None or contact.account_id != account_id or contact.is_purged:
        return None
    version = contact.version
    contact.set_opted_out(actor, True, reason=f"inbound SMS: {body.strip()[:160]}")
    if contact.version == version:
        return None
    app.save_all(contact)
    return contact.id
