"""Where vops keeps its state, and the user's config file.

``VOPS_HOME`` (default ``~/.vops``) holds::

    config.yaml          user settings (see ``UserConfig``)
    ledger.db            SQLite ledger of runs, segments and events (WAL mode)
    runs/<run-id>/       generated task YAMLs, the resolved recipe, logs
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from vicuna_ops.errors import ConfigError, UserError

RUN_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class S3Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint_url: str | None = None
    region: str | None = None


class GCSSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str | None = None


class UserConfig(BaseModel):
    """``$VOPS_HOME/config.yaml``. Unknown keys are an error naming the key."""

    model_config = ConfigDict(extra="forbid")
    s3: S3Settings = S3Settings()
    gcs: GCSSettings = GCSSettings()
    default_bucket: str | None = None


def vops_home() -> Path:
    """The state folder; created on first use."""
    home = Path(os.environ.get("VOPS_HOME") or Path.home() / ".vops").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def runs_dir() -> Path:
    path = vops_home() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir(run_id: str) -> Path:
    """``runs/<run-id>/``, created. The id is checked so it cannot escape the folder."""
    check_run_id(run_id)
    path = runs_dir() / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id):
        raise UserError(
            f"invalid run name {run_id!r}",
            hint="use 1-63 lowercase letters, digits and dashes, starting with a letter or digit",
        )
    return run_id


def load_config() -> UserConfig:
    return _load_config_at(str(vops_home() / "config.yaml"))


@lru_cache(maxsize=8)
def _load_config_at(path: str) -> UserConfig:
    file = Path(path)
    if not file.exists():
        return UserConfig()
    try:
        raw = yaml.safe_load(file.read_text()) or {}
        return UserConfig.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        where = ".".join(str(p) for p in first["loc"]) + ": " + first["msg"] if first else str(exc)
        raise ConfigError(f"{path} is invalid: {where}", hint="fix or delete the file") from exc
