"""Map stages whose units are the part files of an upstream stage (tokens, embed)."""
from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import TimbrespaceError
from ..storage import Location
from .base import SUCCESS, MapStage, WorkUnit


class UpstreamIncompleteError(TimbrespaceError):
    """A stage's input stage has not finished."""


class PartsStage(MapStage):
    """One unit per `<upstream>/part-NNNNNN.parquet`, writing `<name>/part-NNNNNN.parquet`."""

    upstream: str

    def plan(self) -> list[WorkUnit]:
        source = self.output.child(self.upstream)
        if not source.child(SUCCESS).exists():
            raise UpstreamIncompleteError(
                f"{self.name} needs a complete '{self.upstream}' stage in {self.output.uri}; "
                f"run `timbrespace-ray {self.upstream}` first (or `timbrespace-ray run`)")
        parts = [n for n in source.list_names() if n.startswith("part-") and n.endswith(".parquet")]
        return [WorkUnit(int(n[5:-8]), ({"part": n},)) for n in sorted(parts)]

    def read_part(self, unit: WorkUnit, columns: list[str]) -> pa.Table:
        loc = self.output.child(self.upstream, unit.items[0]["part"])
        return pq.read_table(io.BytesIO(loc.read_bytes()), columns=columns)

    def part(self, unit: WorkUnit) -> Location:
        return self.folder.child(f"part-{unit.name}.parquet")
