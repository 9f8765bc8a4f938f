"""Where a worker listens and which address it gives the controller.

A worker started by hand on another machine (``vops serve worker --controller-url URL``)
must give the controller an address the controller can reach. The defaults:

* ``--host``: ``127.0.0.1`` when the controller is on loopback (nothing else needs to reach
  the worker), else ``0.0.0.0``.
* the advertised address (unless ``--advertise-url``): the ``--host`` itself when it names one
  address; for a wildcard host, ``$VOPS_PUBLIC_HOST`` if set, else the address of the
  interface that routes to the controller (what the controller sees as the worker's source
  address), else, with no controller URL (the bucket publishes it), the cloud's public
  address.

Standard library only: this runs at every worker start.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit

from vicuna_ops.errors import UserError

WILDCARDS = ("0.0.0.0", "::", "")


def check_url(flag: str, url: str) -> str:
    """``url`` without a trailing slash, or a ``UserError`` naming ``flag``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{flag} must be an http(s) URL such as http://10.0.0.5:8000, "
                        f"not {url!r}")
    return url.rstrip("/")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_host(controller_url: str | None) -> str:
    """The listening address when ``--host`` is not given."""
    if controller_url and is_loopback(urlsplit(controller_url).hostname):
        return "127.0.0.1"
    return "0.0.0.0"


def route_address(controller_url: str) -> str | None:
    """This machine's address on the interface that routes to the controller (None when
    there is no route or the name does not resolve). A UDP ``connect`` sends nothing."""
    parts = urlsplit(controller_url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if is_loopback(host):
        return "::1" if host and ":" in host else "127.0.0.1"
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            return sock.getsockname()[0]
    except (OSError, UnicodeError, IndexError):
        return None


def advertised_url(host: str, port: int, controller_url: str | None) -> str:
    """The URL the controller should call this worker at (see the module docstring)."""
    if host not in WILDCARDS:
        address = host
    elif os.environ.get("VOPS_PUBLIC_HOST"):
        address = os.environ["VOPS_PUBLIC_HOST"]
    else:
        address = route_address(controller_url) if controller_url else None
        if address is None:
            from vicuna_ops.serve import discovery

            address = discovery.public_host()
    if ":" in address and not address.startswith("["):  # an IPv6 literal
        address = f"[{address}]"
    return f"http://{address}:{port}"
