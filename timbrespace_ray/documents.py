"""Reading the small JSON and YAML documents users hand us (configs, model files), with every
failure one typed error that names the file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from .errors import TimbrespaceError


def read_document(path: str | Path, fmt: Literal["JSON", "YAML"], error: type[TimbrespaceError],
                  missing: str) -> Any:
    """The parsed document; `error(missing)` when there is no such file, `error` saying why
    when it does not parse."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError as exc:
        raise error(missing) from exc
    if fmt == "JSON":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise error(f"{path} is not valid JSON: {exc}") from exc
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML: {exc}") from exc
