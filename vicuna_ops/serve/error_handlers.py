"""Every error the controller and the workers answer has OpenAI's shape, never a bare 500."""

from __future__ import annotations

import logging
from typing import Any

from vicuna_ops.serve.protocol import ApiError


def install_error_handlers(app: Any, log: logging.Logger) -> None:
    """``ApiError`` as its body; Starlette's HTTP errors (404, 405, ...) as an ApiError of the
    same status; anything else (a bug) logged with its traceback and answered as a 500."""
    # Starlette's own API: the worker is a bare Starlette app (FastAPI would cost its start)
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse

    async def _api_error(request: Any, exc: ApiError) -> Any:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def _http_error(request: Any, exc: Any) -> Any:
        return JSONResponse(ApiError(exc.status_code, str(exc.detail)).body(),
                            status_code=exc.status_code)

    async def _bug(request: Any, exc: Exception) -> Any:
        log.exception("unhandled error on %s", request.url.path)
        error = ApiError(500, f"internal error: {type(exc).__name__}", type="server_error")
        return JSONResponse(error.body(), status_code=500)

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _bug)
