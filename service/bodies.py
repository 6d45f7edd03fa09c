"""JSON request bodies decoded strictly into their types: each value must have its schema's type.

Litestar decodes a JSON body into plain values, then converts them into the handler's
``data`` type in msgspec's lax mode, which it needs for query strings and forms. So a body's
``"isOptedOut": 0`` or ``"isOptedOut": "false"`` was taken as a boolean, though the OpenAPI
document says boolean (`make fuzz` found it: schemathesis' schema-breaking bodies were
accepted). ``StrictJSONRequest`` decodes a body straight into the handler's ``data`` type
instead, strictly. A refused body raises what Litestar raised for it, so
``service.error_handlers`` answers it as before: 422 naming the field, 400 for malformed JSON.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException, SerializationException, ValidationException
from litestar.serialization import decode_json
from litestar.types import Empty

AT_PATH = re.compile(r"`\$\.(.+)`$")  # where a msgspec validation message says the fault is: Litestar's own pattern


def parse(body: bytes | bytearray, target_type: Any = Empty) -> Any:
    """``body`` decoded (into ``target_type``, strictly, when given); 400 if it is not JSON."""
    try:
        return decode_json(body, target_type=target_type, strict=True)
    except SerializationException as exc:
        if isinstance(exc.__cause__, msgspec.ValidationError):
            raise exc.__cause__ from None
        raise ClientException(str(exc)) from None  # Litestar's answer to a body that is not JSON
    except UnicodeDecodeError:
        # msgspec's error for a string that is not UTF-8, which Litestar let through (a 500).
        raise ClientException("JSON is malformed: a string is not valid UTF-8") from None


def decode(body: bytes | bytearray, target_type: Any) -> Any:
    """``body`` as a ``target_type``, or what Litestar raised when it refused such a body.

    Litestar parsed the JSON whole before it checked the type: a body that is both invalid
    and malformed further on was a 400, so a refused body is parsed once more (only a refused
    one pays for it). A body nested too deeply raises RecursionError, which the error
    handlers know.
    """
    if not body:
        # Litestar's KeyError for a ``data`` that never arrived, which the handlers answer "empty".
        raise ValidationException(extra=[{"message": "'data'", "key": "data", "source": "body"}])
    try:
        return parse(body, target_type)
    except msgspec.ValidationError as exc:
        parse(body)
        message = str(exc)
        at = AT_PATH.search(message)
        raise ValidationException(extra=[{"message": message.split(" - ", 1)[0],
                                          "key": at.group(1) if at else "data", "source": "body"}]) from None


class StrictJSONRequest(Request):
    """A request whose JSON body, for a handler taking ``data`` of a Struct type, is decoded strictly into it."""

    async def json(self) -> Any:
        if self._json is Empty:
            field = self.route_handler.parsed_data_field
            target = field.annotation if field is not None else None
            if isinstance(target, type) and issubclass(target, msgspec.Struct):
                # Litestar's signature model then converts the Struct into itself: the same object.
                self._json = self._connection_state.json = decode(await self.body(), target)
        return await super().json()
