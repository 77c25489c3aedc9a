"""lhotse manifests. TO BE WRITTEN."""
from __future__ import annotations

from ..storage import Location
from .base import InputOptions


def is_lhotse(first: dict) -> bool:
    return False


def plan(manifest: Location, first: dict, options: InputOptions) -> tuple[list[dict], dict[str, str]]:
    raise NotImplementedError
