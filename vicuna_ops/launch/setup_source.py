"""How a node gets the same vicuna-ops as the machine that launches it.

* From a release (vops installed from a wheel): the node installs
  ``vicuna-ops[<extras>]==<version>`` from the package index.
* From a checkout (``vicuna_ops/`` sits next to a ``pyproject.toml`` naming vicuna-ops, e.g.
  an editable install): the checkout becomes the task's ``workdir`` (SkyPilot syncs it,
  honouring .skyignore/.gitignore) and the node installs that copy.
* ``VOPS_NODE_INSTALL=index|checkout`` forces one or the other.

Recovery must not be dominated by setup, so the script keeps one venv per node, records
what it installed (``install_id``: the version, or a hash of the checkout's source) and
skips the install when the node already holds it; it uses the ``uv`` SkyPilot puts on every
node, falling back to pip. Nodes never install SkyPilot.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from vicuna_ops import __version__
from vicuna_ops.errors import UserError

TRAIN_EXTRAS = ("train", "s3", "gcs")
NODE_VENV = "$HOME/vops-venv"
REMOTE_WORKDIR = "~/sky_workdir"  # where SkyPilot puts the task's workdir
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../vicuna_ops


@dataclass(frozen=True)
class NodeInstall:
    mode: Literal["index", "checkout"]
    version: str
    requirement: str  # what the node passes to `pip install`
    install_id: str  # equal ids: nothing to reinstall
    workdir: str | None  # local checkout to sync as the task's workdir

    def envs(self) -> dict[str, str]:
        """The task envs the setup script reads."""
        return {"VOPS_INSTALL": self.requirement, "VOPS_INSTALL_ID": self.install_id}


def node_install(extras: Sequence[str] = TRAIN_EXTRAS) -> NodeInstall:
    """What the node installs, for the vicuna-ops this process runs."""
    extra = f"[{','.join(extras)}]" if extras else ""
    forced = os.environ.get("VOPS_NODE_INSTALL", "").strip().lower()
    if forced not in ("", "index", "checkout"):
        raise UserError(f"VOPS_NODE_INSTALL={forced!r} is not 'index' or 'checkout'",
                        hint="unset it to choose automatically")
    root = checkout_root()
    if forced == "checkout" and root is None:
        raise UserError("VOPS_NODE_INSTALL=checkout but vicuna-ops is not running from a "
                        "source checkout", hint="unset VOPS_NODE_INSTALL")
    if root is not None and forced != "index":
        return NodeInstall(mode="checkout", version=__version__,
                           requirement=f"{REMOTE_WORKDIR}{extra}",
                           install_id=f"{__version__}+src.{source_fingerprint(root)}{extra}",
                           workdir=str(root))
    return NodeInstall(mode="index", version=__version__,
                       requirement=f"vicuna-ops{extra}=={__version__}",
                       install_id=f"{__version__}{extra}", workdir=None)


def checkout_root() -> Path | None:
    """The source checkout this vicuna_ops was imported from, or None for an installed one."""
    root = _PACKAGE_DIR.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    if not re.search(r'^name\s*=\s*"vicuna-ops"', pyproject.read_text(), re.MULTILINE):
        return None
    return root


def source_fingerprint(root: Path) -> str:
    """A short hash of what the node would build: pyproject.toml and the package's files."""
    digest = hashlib.sha256()
    files = [root / "pyproject.toml", *sorted(
        p for p in (root / "vicuna_ops").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")]
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def setup_script() -> str:
    """The task's ``setup:``; reads VOPS_INSTALL and VOPS_INSTALL_ID (see ``NodeInstall.envs``)."""
    return _SETUP.replace("@VENV@", NODE_VENV)


_SETUP = r"""set -euo pipefail
# vicuna-ops setup: one venv per node, reused when it already holds this install.
# VOPS_NODE_VENV: a venv kept outside $HOME (Slurm deletes a cluster's $HOME; launch/slurm.py)
VENV="${VOPS_NODE_VENV:-@VENV@}"
MARKER="$VENV/.vops-install-id"
if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$VOPS_INSTALL_ID" ]; then
  echo "vops: $VOPS_INSTALL_ID already installed in $VENV, skipping setup"
  exit 0
fi
# A leading ~ (the synced checkout) is expanded here: env values are not.
REQ="${VOPS_INSTALL/#\~/$HOME}"
UV="$HOME/.local/bin/uv"
if [ -x "$UV" ] || command -v uv >/dev/null 2>&1; then
  [ -x "$UV" ] || UV="$(command -v uv)"
  [ -x "$VENV/bin/python" ] || "$UV" venv --seed --python 3.11 "$VENV" \
    || "$UV" venv --seed "$VENV"
  UV_LINK_MODE=copy "$UV" pip install --python "$VENV/bin/python" "$REQ"
else
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --upgrade pip
  "$VENV/bin/pip" install "$REQ"
fi
echo "$VOPS_INSTALL_ID" > "$MARKER"
echo "vops: installed $VOPS_INSTALL_ID in $VENV"
"""
