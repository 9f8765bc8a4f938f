"""Find the YAML files vops ships: ``sky/*.yaml`` (task templates) and ``recipes/*.yaml``.

From a checkout they live at the repository root (the design card keeps them there); in a
wheel, setup.py copies them into ``vicuna_ops/assets/``. Callers never care which.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def bundled_dir(kind: str) -> Path:
    """The folder of ``kind`` ('sky' or 'recipes'), preferring a checkout's copy."""
    if kind not in ("sky", "recipes"):
        raise ValueError(kind)
    for folder in (_CHECKOUT / kind, _PACKAGE / "assets" / kind):
        if folder.is_dir() and any(folder.glob("*.yaml")):
            return folder
    raise FileNotFoundError(f"vicuna-ops is installed without its {kind}/ files")


def bundled_file(kind: str, name: str) -> Path:
    """``bundled_file('sky', 'train.yaml')`` -> the path of sky/train.yaml."""
    return bundled_dir(kind) / name


def running_from_checkout() -> bool:
    """True when vops runs from a source tree (editable install), not a released wheel."""
    return (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "vicuna_ops").is_dir()
