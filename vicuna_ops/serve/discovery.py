"""How workers find the controller: its address, published in the run's bucket.

    <bucket>/<name>/serve/controller.json   {"url": "http://203.0.113.7:8000", "started_at": ...}

A controller relaunched on another node (new IP) publishes again on start, and keeps
re-publishing every minute in case the object was removed; a worker whose heartbeats keep
failing reads the object again and follows the new address. Only the address is published,
never the worker token (that travels as a SkyPilot secret / environment variable).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request

from vicuna_ops import layout
from vicuna_ops.errors import ObjectNotFound, VopsError

log = logging.getLogger("vops.serve.discovery")

REPUBLISH_EVERY = 60.0
_METADATA_TIMEOUT = 1.0
_AWS_TOKEN_URL = "http://169.254.169.254/latest/api/token"
_AWS_PUBLIC_IP_URL = "http://169.254.169.254/latest/meta-data/public-ipv4"
_GCP_EXTERNAL_IP_URL = ("http://metadata.google.internal/computeMetadata/v1/instance/"
                        "network-interfaces/0/access-configs/0/external-ip")


def _store(bucket: str, name: str):
    from vicuna_ops.storage import open_store

    return open_store(bucket).child(name)


def publish(bucket: str, name: str, url: str) -> None:
    record = {"url": url, "started_at": time.time(), "host": socket.gethostname()}
    _store(bucket, name).put_bytes(layout.CONTROLLER_ADDRESS, json.dumps(record).encode())


def lookup(bucket: str, name: str) -> str | None:
    """The published controller URL, or None if nothing is published (yet)."""
    try:
        raw = _store(bucket, name).get_bytes(layout.CONTROLLER_ADDRESS)
    except ObjectNotFound:
        return None
    try:
        url = json.loads(raw)["url"]
    except (ValueError, KeyError, TypeError):
        log.warning("%s/%s/%s is not a controller address", bucket, name,
                    layout.CONTROLLER_ADDRESS)
        return None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


async def keep_published(bucket: str, name: str, url: str,
                         every: float = REPUBLISH_EVERY) -> None:
    """Publish now and every ``every`` seconds; a failure is logged and retried sooner."""
    while True:
        try:
            await asyncio.to_thread(publish, bucket, name, url)
            await asyncio.sleep(every)
        except VopsError as exc:
            log.warning("cannot publish the controller address: %s", exc.one_line())
            await asyncio.sleep(min(every, 5.0))


def public_host() -> str:
    """The address other clouds reach this node at.

    ``VOPS_PUBLIC_HOST`` wins; then the cloud's metadata (AWS public-ipv4, GCP external-ip);
    then this host's own address.
    """
    if os.environ.get("VOPS_PUBLIC_HOST"):
        return os.environ["VOPS_PUBLIC_HOST"]
    for probe in (_aws_public_ip, _gcp_external_ip):
        try:
            address = probe()
        except (urllib.error.URLError, OSError, ValueError):
            continue
        if address:
            return address
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _aws_public_ip() -> str:
    token_request = urllib.request.Request(
        _AWS_TOKEN_URL, method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    with urllib.request.urlopen(token_request, timeout=_METADATA_TIMEOUT) as response:
        token = response.read().decode().strip()
    request = urllib.request.Request(_AWS_PUBLIC_IP_URL,
                                     headers={"X-aws-ec2-metadata-token": token})
    with urllib.request.urlopen(request, timeout=_METADATA_TIMEOUT) as response:
        return response.read().decode().strip()


def _gcp_external_ip() -> str:
    request = urllib.request.Request(_GCP_EXTERNAL_IP_URL, headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(request, timeout=_METADATA_TIMEOUT) as response:
        return response.read().decode().strip()
