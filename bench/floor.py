"""The plain CRUD floor: what a team would write instead of this service, to create a contact.

One Litestar process on uvicorn (uvloop, httptools), an async psycopg pool of 8, a
msgspec body, phonenumbers parse + validate, and one ``INSERT … RETURNING`` into a
contacts table with a unique (account, phone) index, a GIN index on tags and a trigram
index on the name. No events, no read model, no relay, no authentication: the floor
the service's write path is measured against (``python -m bench writes --compare``).

    python -m bench floor-serve --database-url URL --port 8100
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec
import phonenumbers

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE IF NOT EXISTS floor_contacts (
    id          uuid PRIMARY KEY,
    account_id  uuid NOT NULL,
    first_name  text,
    last_name   text,
    phone       text NOT NULL,
    email       text,
    notes       text,
    tags        text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS floor_contacts_account_phone ON floor_contacts (account_id, phone);
CREATE INDEX IF NOT EXISTS floor_contacts_tags ON floor_contacts USING gin (tags);
CREATE INDEX IF NOT EXISTS floor_contacts_name ON floor_contacts
    USING gin ((coalesce(first_name, '') || ' ' || coalesce(last_name, '')) gin_trgm_ops);
"""
ACCOUNT = uuid.UUID("00000000-0000-0000-0000-0000000000f1")


class ContactIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    phone: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    notes: str | None = None
    tags: list[str] = []


class ContactOut(msgspec.Struct, rename="camel"):
    id: uuid.UUID
    phone: str
    first_name: str | None
    last_name: str | None
    email: str | None
    notes: str | None
    tags: list[str]
    created_at: datetime


def create_floor_app(database_url: str):  # noqa: ANN201 - a Litestar app
    from litestar import Litestar, post
    from litestar.exceptions import HTTPException
    from psycopg.errors import UniqueViolation
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(database_url, min_size=8, max_size=8, open=False)

    @post("/api/v1/contacts", status_code=201)
    async def create_contact(data: ContactIn) -> ContactOut:
        try:
            number = phonenumbers.parse(data.phone, "KE")
        except phonenumbers.NumberParseException as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        if not phonenumbers.is_valid_number(number):
            raise HTTPException(status_code=422, detail="invalid phone")
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        contact_id = uuid.uuid4()
        async with pool.connection() as conn:
            try:
                cur = await conn.execute(
                    "INSERT INTO floor_contacts (id, account_id, first_name, last_name, phone, email, notes, tags)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING created_at",
                    (contact_id, ACCOUNT, data.first_name, data.last_name, e164, data.email, data.notes, data.tags))
            except UniqueViolation:
                raise HTTPException(status_code=409, detail="phone taken") from None
            row = await cur.fetchone()
        return ContactOut(id=contact_id, phone=e164, first_name=data.first_name, last_name=data.last_name,
                          email=data.email, notes=data.notes, tags=data.tags, created_at=row[0])

    async def open_pool() -> None:
        await pool.open()

    async def close_pool() -> None:
        await pool.close()

    return Litestar([create_contact], on_startup=[open_pool], on_shutdown=[close_pool], debug=False)


def prepare(database_url: str) -> None:
    """Create the floor's table (in its own database) and empty it."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("TRUNCATE floor_contacts")


def serve(database_url: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_floor_app(database_url), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
