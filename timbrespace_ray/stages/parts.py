"""Map stages whose units are the part files of an upstream stage (tokens, embed)."""
from __future__ import annotations

import io
import posixpath

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UpstreamIncompleteError
from ..storage import Location
from .base import SUCCESS, MapStage, WorkUnit



def complete_parts(output: Location, upstream: str, consumer: str) -> list[Location]:
    """The part files of a finished upstream stage, or a clear error naming what to run."""
    source = output.child(upstream)
    if not source.child(SUCCESS).exists():
        # upstream stages (features, tokens) write folders named like their commands
        raise UpstreamIncompleteError(
            f"{consumer} needs a complete '{upstream}' stage in {output.uri}; run "
            f"`timbrespace-ray {upstream}` first (or `timbrespace-ray run`)")
    return [source.child(n) for n in source.list_names()
            if n.startswith("part-") and n.endswith(".parquet")]


class PartsStage(MapStage):
    """One unit per `<upstream>/part-NNNNNN.parquet`, writing `<name>/part-NNNNNN.parquet`."""

    upstream: str

    def plan(self) -> list[WorkUnit]:
        names = sorted(posixpath.basename(p.path) for p in
                       complete_parts(self.output, self.upstream, f"the {self.name} stage"))
        return [WorkUnit(int(n[5:-8]), ({"part": n},)) for n in names]

    def read_part(self, unit: WorkUnit, columns: list[str] | None = None) -> pa.Table:
        loc = self.output.child(self.upstream, unit.items[0]["part"])
        return pq.read_table(io.BytesIO(loc.read_bytes()), columns=columns)

    def part(self, unit: WorkUnit) -> Location:
        return self.folder.child(f"part-{unit.name}.parquet")
