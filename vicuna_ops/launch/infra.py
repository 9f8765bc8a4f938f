"""Where a task can run: the one seam that request building, task building, candidates, the
estimate and serving deployment ask, instead of each testing for Slurm on its own.

Two kinds, decided once from ``--clouds`` (``parse_infra``):

* cloud zones (``aws``, ``gcp``): spot and on-demand, priced per zone from SkyPilot's
  catalog; a node cannot read the launching machine's files, so buckets are s3:// or gs://;
* one Slurm cluster (``slurm`` or ``slurm/NAME``, see ``slurm.py``): no spot market, the
  cluster's partitions are its zones, its nodes share a filesystem with the launching
  machine (a folder is a bucket), and tasks take their Slurm form (``slurm.adapt_task``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from vicuna_ops.errors import UserError
from vicuna_ops.launch import slurm
from vicuna_ops.launch.candidates import Candidate, parse_clouds

CLOUD_SCHEMES = ("s3://", "gs://")
SHARED_FS_SCHEMES = (*CLOUD_SCHEMES, "file://")


@dataclass(frozen=True)
class Infra:
    clouds: tuple[str, ...]  # ("aws", "gcp"), or one Slurm cluster: ("slurm/NAME",)

    @property
    def is_slurm(self) -> bool:
        return slurm.targets(self.clouds)

    @property
    def has_spot(self) -> bool:
        return not self.is_slurm

    @property
    def reaches_local_paths(self) -> bool:
        """Whether a node reads the launching machine's folders (a shared filesystem)."""
        return self.is_slurm

    @property
    def bucket_schemes(self) -> tuple[str, ...]:
        return SHARED_FS_SCHEMES if self.is_slurm else CLOUD_SCHEMES

    @property
    def prices_zones(self) -> bool:
        """Whether vops plans the zones from the catalog (else SkyPilot's optimizer places
        the task on the cluster, priced by its ``slurm.pricing``)."""
        return not self.is_slurm

    def check(self, *, regions: Sequence[str] | None, zones: Sequence[str] | None,
              gpus_auto: bool) -> None:
        """Flags that mean nothing here are one-line errors."""
        if not self.is_slurm:
            return
        if gpus_auto:
            raise UserError("--gpus auto picks from the clouds' catalogs, not a Slurm cluster",
                            hint="pass --gpus NAME:COUNT")
        if regions:
            raise UserError("--regions do not apply to Slurm",
                            hint="name the cluster with --clouds slurm/CLUSTER")
        if zones:
            slurm.check_partitions(self.clouds, zones)

    def train_task(self, task: dict[str, Any], request: Any) -> dict[str, Any]:
        """``vops train``'s task as this infra runs it (a launch.request.TrainRequest)."""
        return slurm.train_task(task, request) if self.is_slurm else task

    def serve_task(self, task: dict[str, Any], *, port: int) -> dict[str, Any]:
        """A ``vops serve`` controller or worker task as this infra runs it."""
        return slurm.serve_task(task, self.clouds, port=port) if self.is_slurm else task

    def worker_port(self, api_port: int, index: int, default: int) -> int:
        """Worker ``index``'s port: Slurm packs tasks onto shared nodes, a cloud does not."""
        return slurm.worker_port(api_port, index) if self.is_slurm else default

    def placed_candidates(self, placement: Any, planned: list[Candidate],
                          zones: Sequence[str] | None) -> list[Candidate]:
        """The candidates after SkyPilot placed the task: the planned zones on a cloud, the
        cluster's partitions (or the one it picked) on Slurm."""
        return slurm.candidates(placement, zones) if self.is_slurm else planned


def parse_infra(text: str | None) -> Infra:
    """``--clouds`` -> an Infra (``None``: every supported cloud)."""
    return Infra(slurm.parse(text) or parse_clouds(text))
