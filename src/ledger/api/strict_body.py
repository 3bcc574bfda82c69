"""Guard: a JSON body is `application/json` (415 otherwise) and is read strictly (API.md, *Input, stated exactly*).

Litestar decodes a body leniently (msgspec's `strict=False`): `"quantity": "5"` becomes 5 and `"true"` a bool.
Before the handler runs, this guard decodes the body once more into the route's own body type with
`strict=True`, so a string where a number belongs, or a number where a string belongs, is a 422 naming the field.
Amounts and times are strings in the body types (bodies/schemas.py), read exactly by their own parsers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import BodyKwarg

from ledger.api.auth import raw_header
from ledger.api.errors import UnsupportedMediaTypeError

JSON_MEDIA_TYPE = "application/json"
STRICT_BODY = "ledger.strict_body"
"""Where in the request's `state` the guard leaves the body it decoded (api/lean.py takes it from there)."""
_decoders: dict[Callable[..., Any], msgspec.json.Decoder[Any] | None] = {}


def strict_decoder(handler: BaseRouteHandler) -> msgspec.json.Decoder[Any] | None:
    """The strict decoder of the handler's JSON body type; None when it takes no JSON body."""
    fn = handler.fn
    if fn not in _decoders:
        data = handler.parsed_fn_signature.parameters.get("data")
        kwarg = data.kwarg_definition if data is not None else None
        is_json = data is not None and (
            not isinstance(kwarg, BodyKwarg) or kwarg.media_type == RequestEncodingType.JSON
        )
        _decoders[fn] = msgspec.json.Decoder(data.annotation, strict=True) if data and is_json else None
    return _decoders[fn]


def is_json_media_type(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == JSON_MEDIA_TYPE


async def strict_json_body(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Guard of every `/v1` route (after `authorize`): refuse a JSON body sent as another media type, and
    decode it strictly. An empty body is left to Litestar (a missing body is its 400)."""
    decoder = strict_decoder(handler)
    if decoder is None:
        return
    body: bytes = await connection.body()  # type: ignore[attr-defined] # an HTTP route: a Request
    if not body:
        return
    connection.scope["state"][STRICT_BODY] = decode_strictly(decoder, body, connection.scope)


def decode_strictly(decoder: msgspec.json.Decoder[Any], body: bytes, scope: Any) -> Any:
    """A non-empty body sent as JSON, decoded strictly: 415 if sent as another media type, 400 if it is not
    JSON, 422 (msgspec's ValidationError) if it is not the route's body type."""
    if not is_json_media_type(raw_header(scope, b"content-type")):
        raise UnsupportedMediaTypeError(f"send the body as Content-Type: {JSON_MEDIA_TYPE}")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError:
        raise
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as e:
        raise ClientException(f"the body is not JSON: {e}") from None  # 400 malformed-request
