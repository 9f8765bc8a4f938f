"""The one place that imports heavy or optional libraries, lazily, with an install hint.

``vops --help`` must not pay for SkyPilot (~1.5 s), torch or transformers, and a training node
must not need SkyPilot at all; so callers ask for a module here at the moment they need it.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

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
    "markdownify": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "prometheus_client": "serve",
    "aiohttp": "serve",
    "matplotlib": "plot",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a UserError that says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS.get(module, module)
        raise UserError(
            f"{module} is not installed",
            hint=f"pip install 'vicuna-ops[{extra}]'",
        ) from exc


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
