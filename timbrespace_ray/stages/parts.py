"""Map stages whose units are the part files of an upstream step (profile, tokens, embed)."""
from __future__ import annotations

import posixpath

import pyarrow as pa

from ..errors import StageFailedError, UpstreamIncompleteError
from ..executors.base import WorkUnit
from ..layout import RunLayout
from ..storage import Location
from ..tables import read_part
from .base import MapStage


def complete_parts(layout: RunLayout, step: str, folder: Location, consumer: str) -> list[Location]:
    """The part files of a finished upstream step, or a clear error naming what to run."""
    if layout.completed(step) is None:
        stage = step.split("/")[0]
        failed = layout.failed(step)
        if failed is not None:
            raise StageFailedError(
                f"{consumer} needs a complete '{stage}' stage in {layout.output.uri}, and it "
                f"failed: {failed['failure']}")
        raise UpstreamIncompleteError(
            f"{consumer} needs a complete '{stage}' stage in {layout.output.uri}; run "
            f"`timbrespace-ray {stage}` first (or `timbrespace-ray run`)")
    return [folder.child(n) for n in sorted(folder.list_names())
            if n.startswith("part-") and n.endswith(".parquet")]


class PartsStage(MapStage):
    """One unit per upstream `part-NNNNNN.parquet`, writing its own `part-NNNNNN.parquet`."""

    upstream: str  # the step whose parts are the units

    def upstream_steps(self) -> tuple[str, ...]:
        return (*super().upstream_steps(), self.upstream)

    def upstream_folder(self) -> Location:
        return self.output.child(self.upstream)

    def upstream_parts(self, consumer: str) -> list[Location]:
        return complete_parts(self.layout, self.upstream, self.upstream_folder(), consumer)

    def plan(self) -> list[WorkUnit]:
        names = [posixpath.basename(p.path) for p in self.upstream_parts(f"the {self.name} stage")]
        return [WorkUnit(int(n[5:-8]), ({"part": n},)) for n in names]

    def read_part(self, unit: WorkUnit, columns: list[str] | None = None) -> pa.Table:
        return read_part(self.upstream_folder().child(unit.items[0]["part"]), columns)

    def part(self, unit: WorkUnit) -> Location:
        return self.folder.child(f"part-{unit.name}.parquet")
