"""Reading a request body with a size limit, parsing it strictly, and checking a Bearer
secret: shared by the controller and the worker, so both answer bad input the same way
(400 not JSON, 413 too large, 422 naming the field, 401 wrong secret) and never with a 500.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from pydantic import ValidationError

from vicuna_ops.serve import protocol
from vicuna_ops.serve.protocol import ApiError


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, or a 413 as soon as it is longer than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(limit)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes, model: type) -> Any:
    """JSON -> the pydantic ``model``: 400 for what is not JSON, 422 naming a bad field."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {str(exc)[:200]}",
                       code="invalid_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise protocol.validation_error(exc) from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply", code="invalid_json") from None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes",
                    code="request_too_large")


def bearer_in(request: Any, secrets: Any) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return False
    given = value.strip().encode()
    # compare with every secret, constant-time, so timing says nothing about which matched
    return any([hmac.compare_digest(given, secret.encode()) for secret in secrets])
