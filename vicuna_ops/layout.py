"""Where things live inside a run's bucket prefix: the contract between the launcher, the
training node, the serving tier and the cost reports.

    <bucket>/<run-id>/
        step_00000040/            one checkpoint (files, then MANIFEST.json last)
        LATEST                    name of the newest checkpoint whose manifest was written
        final/                    the trained model (HF format)
        segments/<segment-id>.json  one record per training attempt or serving process
        serve/controller.json     the serving controller's current address
"""

from __future__ import annotations

import re

LATEST = "LATEST"
MANIFEST = "MANIFEST.json"
FINAL = "final"
SEGMENTS = "segments"
CONTROLLER_ADDRESS = "serve/controller.json"

_STEP_DIR = re.compile(r"^step_(\d{8})$")


def checkpoint_dir(step: int) -> str:
    return f"step_{step:08d}"


def step_of(dirname: str) -> int | None:
    """The step of a ``step_NNNNNNNN`` folder name, or None for anything else."""
    match = _STEP_DIR.match(dirname.strip().rstrip("/"))
    return int(match.group(1)) if match else None


def segment_key(segment_id: str) -> str:
    return f"{SEGMENTS}/{segment_id}.json"
