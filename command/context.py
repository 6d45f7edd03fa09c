"""Who is acting: the account, the actor (token ``sub``) and the request id."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class Actor:
    """The identity every command records on its events."""

    account_id: UUID
    sub: str
    request_id: str = ""

    @classmethod
    def system(cls, account_id: UUID, request_id: str = "") -> "Actor":
        return cls(account_id=account_id, sub="system", request_id=request_id)
