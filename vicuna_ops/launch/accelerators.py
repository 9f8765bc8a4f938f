"""``--gpus NAME:COUNT``: parse the spec, then check it against SkyPilot's catalog.

Parsing is pure (no SkyPilot), so flag mistakes such as ``A100:0`` or ``A100:x`` are caught
before the ~1 s SkyPilot import. The catalog check canonicalises the name (``a100`` ->
``A100``) and rejects names and counts no requested cloud offers, listing what is offered.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import NamedTuple, Sequence

from vicuna_ops.errors import UserError

_SPEC = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_.-]*)(?::(?P<count>[^:]*))?$")


class Gpus(NamedTuple):
    """An accelerator request: ``Gpus("A100", 8)`` is ``A100:8``."""

    name: str
    count: int

    def __str__(self) -> str:
        return f"{self.name}:{self.count}"

    @property
    def sky(self) -> dict[str, int]:
        """The form SkyPilot's Resources take: ``{"A100": 8}``."""
        return {self.name: self.count}


def parse_gpus(spec: str) -> Gpus:
    """``"A100:8"`` -> ``Gpus("A100", 8)``; ``"L4"`` means one. Syntax only, no catalog."""
    text = (spec or "").strip()
    match = _SPEC.match(text)
    if not match:
        raise UserError(f"--gpus {spec!r} is not NAME:COUNT",
                        hint="write it like A100:8, H100:8 or L4:1")
    name, raw_count = match.group("name"), match.group("count")
    if raw_count is None:
        return Gpus(name, 1)
    if not raw_count.isdigit():
        raise UserError(f"--gpus {spec}: the count {raw_count!r} is not a whole number",
                        hint=f"write it like {name}:8")
    count = int(raw_count)
    if count < 1:
        raise UserError(f"--gpus {spec}: the count must be at least 1",
                        hint=f"write it like {name}:8")
    return Gpus(name, count)


def canonical_gpus(gpus: Gpus, clouds: Sequence[str]) -> Gpus:
    """``a100:8`` -> ``A100:8``: SkyPilot's spelling, from its small common catalog. Names it
    does not know come back unchanged (``check_gpus`` says what is wrong with them). Asked
    once per name and clouds in a process: the planner, the candidates and the checks all
    call it, and the catalog does not change under a running command."""
    return Gpus(_canonical_name(gpus.name, tuple(clouds)), gpus.count)


@functools.lru_cache(maxsize=64)
def _canonical_name(name: str, clouds: tuple[str, ...]) -> str:
    from vicuna_ops.launch.sky_calls import catalog_calls, first_line

    with catalog_calls(clouds):
        from sky.utils import accelerator_registry, registry

        try:
            return accelerator_registry.canonicalize_accelerator_name(
                name, registry.CLOUD_REGISTRY.from_str(clouds[0]))
        except ValueError as exc:  # ambiguous, e.g. a prefix of several names
            raise UserError(f"GPU name {name!r} is ambiguous",
                            hint=first_line(exc)) from exc


def check_gpus(gpus: Gpus, clouds: Sequence[str]) -> Gpus:
    """The request with SkyPilot's canonical name, or a UserError naming what is offered.

    The happy path asks the catalog only for instance types carrying exactly ``gpus``
    (cheap); listing every accelerator (slow on AWS's catalog) happens only to explain a
    rejection. Zone-level availability and spot pricing are the candidates' job.
    """
    from vicuna_ops.launch.sky_calls import catalog_calls

    where = ", ".join(clouds)
    name = canonical_gpus(gpus, clouds).name
    with catalog_calls(clouds):
        from sky import catalog

        found = catalog.get_instance_type_for_accelerator(name, gpus.count, clouds=list(clouds))
    if any(instance_types is not None for instance_types, _ in found):
        return Gpus(name, gpus.count)
    offered = offered_counts(clouds)
    canonical = {n.lower(): n for n in offered}.get(name.lower())
    if canonical is None:
        close = difflib.get_close_matches(gpus.name.upper(), list(offered), n=3, cutoff=0.5)
        hint = (f"did you mean {' or '.join(close)}? " if close else "") + \
            f"{where} offer {', '.join(sorted(offered))}"
        raise UserError(f"unknown GPU {gpus.name!r} on {where}", hint=hint)
    counts = offered[canonical]
    raise UserError(f"{canonical}:{gpus.count} is not offered on {where}",
                    hint=f"{canonical} comes in counts {', '.join(map(str, counts))}")


def offered_counts(clouds: Sequence[str]) -> dict[str, list[int]]:
    """``{"A100": [1, 2, 4, 8], ...}`` for the GPUs ``clouds`` offer, from SkyPilot's catalog."""
    from vicuna_ops.launch.sky_calls import catalog_calls

    with catalog_calls(clouds):
        from sky import catalog

        raw = catalog.list_accelerator_counts(gpus_only=True, clouds=list(clouds))
    return {name: sorted({int(c) for c in counts if float(c).is_integer() and c >= 1})
            for name, counts in raw.items()}
