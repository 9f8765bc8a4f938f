"""The one place that imports heavy or optional libraries, lazily, with an install hint.

``vops --help`` must not pay for SkyPilot (~1.5 s), torch or transformers, and a training node
must not need SkyPilot at all; so callers ask for a module here at the moment they need it.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator

from vicuna_ops.errors import UserError

# module -> the extra that installs it
_EXTRAS = {
    "sky": "sky",
    "boto3": "s3",
    "botocore": "s3",
    "google.cloud.storage": "gcs",
    "google.api_core": "gcs",
    "torch": "train",
    "transformers": "train",
    "tokenizers": "train",
    "safetensors": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "prometheus_client": "serve",
    "aiohttp": "serve",
    "matplotlib": "plot",
    "openai": "eval",
    "numpy": "eval",
    "llmcompressor": "quantize",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a UserError that says which extra installs it."""
    if module in sys.modules:
        return sys.modules[module]
    try:
        with _collector_paused():
            return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS.get(module, module)
        raise UserError(
            f"{module} is not installed",
            hint=f"pip install 'vicuna-ops[{extra}]'",
        ) from exc


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Run a large import with Python's cyclic garbage collector off.

    Importing SkyPilot or torch + transformers allocates millions of long-lived objects,
    and the collector keeps rescanning them while they load: 20-30% of the import time
    (``import sky`` 1.7 -> 1.35 s CPU here, torch + transformers 3.8 -> 2.6 s). Afterwards
    ``gc.freeze()`` moves them to the permanent generation, so later collections skip them
    too; the modules live as long as the process anyway.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def sky() -> ModuleType:
    """SkyPilot, with usage collection off (it would try to reach the network)."""
    os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
    return require("sky")


def boto3() -> ModuleType:
    return require("boto3")


def gcs() -> ModuleType:
    """``google.cloud.storage``."""
    return require("google.cloud.storage")


def torch() -> ModuleType:
    return require("torch")


def transformers() -> ModuleType:
    return require("transformers")
