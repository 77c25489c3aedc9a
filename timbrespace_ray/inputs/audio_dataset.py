"""Parquet audio datasets (the layout Hugging Face `datasets` publishes). TO BE WRITTEN."""
from __future__ import annotations

import pyarrow as pa

from ..storage import Location
from .base import InputOptions


def read_schema(shard: Location) -> pa.Schema:
    import pyarrow.parquet as pq

    with shard.fs.open(shard.path, "rb") as fh:
        return pq.read_schema(fh)


def audio_column(schema: pa.Schema, override: str | None, where: str) -> str | None:
    return None


def plan_shards(shards: list[Location], root: Location, options: InputOptions
                ) -> tuple[list[dict], dict[str, str]]:
    raise NotImplementedError
