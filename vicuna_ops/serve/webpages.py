"""The chat page (``/``) and the Arena page (``/arena``): plain files shipped in the package.

    GET /             static/index.html     GET /arena      static/arena.html
    GET /static/NAME  the page's CSS and JS GET /ui/config  system prompt, whether a key is needed

No build step and nothing from outside the machine: the pages are hand-written HTML, CSS and
JS, and the Content-Security-Policy allows only this origin, so a browser would refuse a CDN
even if one crept in. The pages are open (they hold no data); the API calls they make carry
the key the user types, like any client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vicuna_ops.template import SYSTEM_PROMPT

STATIC_DIR = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'")
HEADERS = {"content-security-policy": _CSP, "x-content-type-options": "nosniff",
           "referrer-policy": "no-referrer", "cache-control": "no-cache"}


def install_pages(app: Any, *, api_key_required: bool) -> None:
    from starlette.responses import JSONResponse, Response

    from vicuna_ops.serve.protocol import ApiError

    # read once: the files are small, and a page must not depend on the working directory
    files = {path.name: (path.read_bytes(), _TYPES[path.suffix])
             for path in STATIC_DIR.iterdir() if path.suffix in _TYPES}

    def page(name: str) -> Any:
        content, media_type = files[name]
        return Response(content, media_type=media_type, headers=HEADERS)

    async def index(request: Any) -> Any:
        return page("index.html")

    async def arena(request: Any) -> Any:
        return page("arena.html")

    async def static(request: Any) -> Any:
        name = request.path_params["name"]
        if name not in files or name.endswith(".html"):
            raise ApiError(404, f"no static file {name!r}", code="not_found")
        return page(name)

    async def config(request: Any) -> Any:
        return JSONResponse({"system_prompt": SYSTEM_PROMPT,
                             "api_key_required": api_key_required},
                            headers={"cache-control": "no-cache"})

    app.router.add_route("/", index, methods=["GET"])
    app.router.add_route("/arena", arena, methods=["GET"])
    app.router.add_route("/static/{name}", static, methods=["GET"])
    app.router.add_route("/ui/config", config, methods=["GET"])
