"""A corpus's own metadata (speaker, language, text...) as columns of every per-utterance table.

The columns are fixed when the stage is planned, from the manifest's or dataset's schema, and
stored with the plan, so every part file of a run has the same schema whatever its rows hold.
Values are kept as one of four plain types that every Parquet reader maps the same way.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from ..errors import InputError, MetadataError

TYPES = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}


@functools.cache
def reserved_columns() -> frozenset[str]:
    """Every column a per-utterance table of ours writes (features, errors, tokens, embeddings,
    the profile's utterance measures), from where each table's schema is defined: a corpus
    column of the same name would be ambiguous in a query, or break the stage that writes it,
    so it is refused when planning."""
    # imported here: the stages import this module (through the inputs package), and the
    # embed stage imports torch, which planning has no use for
    from ..profiles import MEASURE_COLUMNS
    from ..stages.features import features_schema
    from ..stages.profile import IDENTITY
    from ..stages.tokens import TOKENS_SCHEMA
    from ..tables import ERRORS_SCHEMA, NORMALIZED_COLUMN, embeddings_schema

    return frozenset({*features_schema({}).names, *ERRORS_SCHEMA.names, *TOKENS_SCHEMA.names,
                      *embeddings_schema(1).names, NORMALIZED_COLUMN, *IDENTITY,
                      *MEASURE_COLUMNS})


def plain_type(arrow_type: pa.DataType) -> str | None:
    """The plain type a scalar Arrow column is kept as, None for lists, structs and binaries."""
    t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float64"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_temporal(t):
        return "string"
    return None


def plain_value(value: Any) -> str | None:
    """The plain type of one JSON value (WebDataset .json sidecars, lhotse's `custom`)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return None


def shown_value(value: Any) -> str:
    """A JSON value as a message shows it: its JSON text, cut to 60 characters."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


INT64 = range(-2**63, 2**63)
FLOAT_INTS = range(-2**53, 2**53 + 1)  # the ints a float64 holds exactly


def fitted_value(value: Any, type_name: str, what: str) -> Any:
    """`value` (a JSON value) as its column of plain type `type_name` keeps it, with nothing
    lost: a number or bool in a string column as its JSON text (7 -> "7"), an int in a float64
    column when it is exact there; MetadataError saying what `what` holds and what its column
    takes when it cannot be kept (a list, an object, a string in a number column...)."""
    kind = plain_value(value)
    if value is None or (kind == type_name and (kind != "int64" or value in INT64)):
        return value
    if type_name == "float64" and kind == "int64" and value in FLOAT_INTS:
        return float(value)
    if type_name == "string" and kind is not None:
        return json.dumps(value)
    held = ("an int too large" if kind == "int64" else kind
            or ("a list" if isinstance(value, list) else "an object"))
    raise MetadataError(f"{what} is {shown_value(value)} ({held}), "
                        f"where its column holds {type_name} values; give every sample's value "
                        "the same JSON type")


def shared_type(seen: set[str | None]) -> str | None:
    """The plain type of a column whose parts (values, files) have the plain types `seen`
    (None among them: some part is not a scalar): one type as it is, ints with floats float64,
    any other mixture string; nothing seen (only nulls): string."""
    if None in seen:
        return None
    if len(seen) == 1:
        return next(iter(seen))
    if seen == {"int64", "float64"}:
        return "float64"
    return "string"


def select_columns(available: Mapping[str, str | None], keep: Sequence[str] | None,
                   where: str) -> dict[str, str]:
    """The metadata columns to carry: `keep` (the config's list) or every scalar column.

    `available` maps each candidate column to its plain type (None: not a scalar); columns the
    reader consumes itself (path, audio, start...) are not in it."""
    if keep is None:
        chosen = {name: t for name, t in available.items() if t is not None}
    else:
        chosen = {}
        for name in keep:
            if name not in available:
                raise InputError(f"metadata column {name!r} (features.metadata_columns) is not in "
                                 f"{where}; its columns are: {', '.join(available) or 'none'}")
            if available[name] is None:
                raise InputError(f"metadata column {name!r} of {where} is not a scalar (a list, "
                                 "struct or binary); only scalar columns are carried")
            chosen[name] = available[name]
    clash = sorted(reserved_columns().intersection(chosen))
    if clash:
        raise InputError(
            f"{where} has column(s) {', '.join(repr(c) for c in clash)}, which timbrespace_ray "
            "writes itself; rename them, or list the columns to keep in "
            "features.metadata_columns")
    return chosen


def table_values(table: pa.Table, columns: Mapping[str, str]) -> dict[str, list]:
    """Python values of each metadata column of `table`, cast to its plain type."""
    out = {}
    for name, type_name in columns.items():
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        out[name] = column.cast(TYPES[type_name]).to_pylist()
    return out


def arrow_columns(columns: Mapping[str, str], rows: Sequence[Mapping[str, Any]]) -> dict[str, pa.Array]:
    """One Arrow array per metadata column over `rows` (each a segment's metadata mapping).

    A value that does not fit the planned type (a sidecar saying "n/a" where others say 3)
    becomes null rather than failing the whole part."""
    arrays = {}
    for name, type_name in columns.items():
        values = [r.get(name) for r in rows]
        arrays[name] = _array(values, TYPES[type_name])
    return arrays


def _array(values: Iterable[Any], arrow_type: pa.DataType) -> pa.Array:
    values = list(values)
    try:
        return pa.array(values, arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        fitted = []
        for v in values:
            try:
                fitted.append(pa.scalar(v, arrow_type).as_py())
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                fitted.append(str(v) if arrow_type == pa.string() and v is not None else None)
        return pa.array(fitted, arrow_type)
