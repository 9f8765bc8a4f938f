"""How vops calls SkyPilot's local code (catalog, parser, optimizer): quietly, and with its
failures turned into one-line vops errors.

SkyPilot prints spinners and info lines meant for its own CLI (and, when it believes it runs
inside its API server, ``<sky-payload>`` control strings on stdout), which would break
``vops ... --json``; ``sky_logging.silent()`` turns them off. A catalog SkyPilot cannot
download (no network) surfaces as a requests error deep inside it; here it becomes a
CloudError naming the catalog.
"""

from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

from vicuna_ops import adaptors
from vicuna_ops.errors import CloudError, VopsError


@contextmanager
def catalog_calls(clouds: Sequence[str]) -> Iterator[None]:
    """Around calls into ``sky.catalog`` and the clouds' catalog methods."""
    adaptors.sky()
    from sky import sky_logging

    sky_logger = logging.getLogger("sky")
    level = sky_logger.level
    try:
        # Errors too: a failed catalog download is raised, and reported once, below.
        with sky_logging.silent():
            sky_logger.setLevel(logging.CRITICAL)
            yield
    except VopsError:
        raise
    except Exception as exc:
        raise CloudError(f"cannot read SkyPilot's catalog for {', '.join(clouds)}: "
                         f"{first_line(exc)}",
                         hint="SkyPilot downloads its catalog on first use: check the network "
                              "(or see `sky gpus list`)") from exc
    finally:
        sky_logger.setLevel(level)


def start_catalog_warmup(clouds: Sequence[str]) -> None:
    """Begin SkyPilot's first read of AWS's catalog on a background thread.

    That first read probes the AWS account (SkyPilot runs ``aws configure list``, a
    subprocess of ~0.5 s, to map zone IDs to the account's zone names). Started right after
    ``import sky``, the probe runs on another core while this thread imports pandas and
    prices GCP. Failures are left for the real call to raise: SkyPilot caches only a
    successful read, so the next catalog call repeats it and reports the error.
    """
    if "aws" not in clouds:
        return
    adaptors.sky()

    def read() -> None:
        from sky import catalog, sky_logging

        try:
            with sky_logging.silent():  # thread-local in SkyPilot: each thread needs its own
                catalog.instance_type_exists("p4d.24xlarge", clouds="aws")
        except Exception:  # noqa: BLE001 - see the docstring
            pass

    threading.Thread(target=read, name="vops-aws-catalog", daemon=True).start()


@contextmanager
def silent() -> Iterator[None]:
    adaptors.sky()
    from sky import sky_logging

    with sky_logging.silent():
        yield


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, without SkyPilot's colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
