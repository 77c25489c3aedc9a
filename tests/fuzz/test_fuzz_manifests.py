"""Fuzzed manifests of every format: CSV, JSON lines (NeMo's fields), Parquet, Common Voice's
TSV and AudioFolder's metadata.csv, each built valid over tiny WAVs and then mutated in one row
(odd values, type changes, a 2 MiB cell), in its columns (duplicated, dropped, renamed like our
output columns) or in its bytes (flips, cuts).

A bad row is that row's error row, never a refusal of the manifest: every other row comes out.
A broken header or column may instead be refused as a whole, with one line. After byte
mutations the number of rows is unknowable: then only no-duplicate, documented types and one
line messages are held to."""
from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from helpers.fuzz import Case, run_and_check
from helpers.fuzz_inputs import (ODD_VALUES, OUR_COLUMNS, byte_mutations, mutate_bytes,
                                 tiny_wav, write_rows)

# form -> (file written, its format, path column, segment columns, has an utt_id column)
FORMS = {
    "csv": ("manifest.csv", "csv", "path", ("start", "end"), True),
    "nemo": ("manifest.jsonl", "jsonl", "audio_filepath", ("offset", "duration"), True),
    "parquet": ("manifest.parquet", "parquet", "path", ("start", "end"), True),
    "common_voice": ("train.tsv", "tsv", "path", (), False),
    "audiofolder": ("metadata.csv", "csv", "file_name", (), False),
}
ODD = st.one_of(st.sampled_from(ODD_VALUES), st.none(), st.integers(-2**63, 2**63 - 1),
                st.floats(allow_nan=True), st.booleans(), st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.text(max_size=20))


def _build(tmp: Path, form: str, n: int) -> tuple[Path, list[dict], list[str], dict]:
    """A valid manifest of `form` over n tiny WAVs: (file, rows, columns, id of each row)."""
    name, _, path_col, bounds, has_id = FORMS[form]
    folder = tmp / "in"
    audio = folder / ("clips" if form == "common_voice" else "audio" if form != "audiofolder" else "")
    audio.mkdir(parents=True, exist_ok=True)
    rows, ids = [], {}
    for i in range(n):
        rel = f"a{i}.wav"
        (audio / rel).write_bytes(tiny_wav())
        row = {path_col: rel if form in ("common_voice", "audiofolder") else f"audio/{rel}",
               "speaker": f"spk{i}"}
        if form == "common_voice":
            row.update(client_id=f"c{i}", sentence="a sentence", up_votes=2, down_votes=0)
        if has_id:
            row["utt_id"] = f"u{i}"
        if bounds:
            row[bounds[0]], row[bounds[1]] = 0.0, 0.2
        rows.append(row)
        ids[i] = row.get("utt_id", rel)
    columns = list(rows[0])
    return folder / name, rows, columns, ids


def _case(manifest: Path, form: str, **kw) -> Case:
    # AudioFolder's metadata describes a folder: the folder is the input
    return Case(manifest.parent if form == "audiofolder" else manifest, **kw)


@given(form=st.sampled_from(sorted(FORMS)), n=st.integers(1, 3), at=st.integers(0, 2),
       column=st.sampled_from(["path", "start", "end", "utt_id", "speaker", "extra"]),
       value=ODD)
@example(form="csv", n=2, at=0, column="path", value="")
@example(form="csv", n=2, at=1, column="start", value="abc")
@example(form="nemo", n=2, at=0, column="start", value="abc")
@example(form="nemo", n=1, at=0, column="start", value="")  # every line of a block bad
@example(form="common_voice", n=1, at=0, column="path", value="0\r")
@example(form="parquet", n=1, at=0, column="path", value={})
@example(form="audiofolder", n=1, at=0, column="start", value="x" * (2 << 20))  # one long row
@example(form="csv", n=2, at=1, column="speaker", value="x" * (2 << 20))
def test_one_bad_row_is_one_error_row(form, n, at, column, value):
    with tempfile.TemporaryDirectory() as d:
        manifest, rows, columns, ids = _build(Path(d), form, n)
        at %= n
        name, fmt, path_col, bounds, _ = FORMS[form]
        key = {"path": path_col, "start": bounds[0] if bounds else "speaker",
               "end": bounds[1] if bounds else "speaker"}.get(column, column)
        if key == "utt_id" and "utt_id" not in columns:
            key = "speaker"
        if key == "extra":
            columns.append("extra")
            for r in rows:
                r["extra"] = "x"
        rows[at][key] = value
        write_rows(manifest, rows, fmt, columns)
        good = {ids[i] for i in range(n) if i != at}
        if form == "audiofolder" and column == "path":
            # the metadata only adds columns to the folder's files, which stay inputs; a row
            # naming no file is refused as `datasets` refuses it, one naming another file is an
            # input of its own (that file's error row)
            case = _case(manifest, form, inputs=n + 1, optional=1, good=good, may_refuse=True)
        else:
            case = _case(manifest, form, inputs=n, good=good)
        if fmt == "tsv" and isinstance(value, str) and any(c in value for c in "\t\r\n"):
            case.inputs = None  # a TSV without quoting cannot hold a separator: other rows
        run_and_check(case, Path(d) / "out")


@given(form=st.sampled_from(sorted(FORMS)), n=st.integers(1, 3),
       change=st.sampled_from(["duplicate", "drop_path", "numeric_path", "rename", "empty_name",
                               "all_null", "nested"]),
       ours=st.sampled_from(OUR_COLUMNS))
@example(form="csv", n=2, change="duplicate", ours="pitch_hz")
@example(form="csv", n=2, change="numeric_path", ours="pitch_hz")
@example(form="csv", n=2, change="rename", ours="pitch_hz")
@example(form="nemo", n=2, change="rename", ours="f0")
def test_column_changes_are_refused_in_one_line_or_read(form, n, change, ours):
    with tempfile.TemporaryDirectory() as d:
        manifest, rows, columns, ids = _build(Path(d), form, n)
        fmt, path_col = FORMS[form][1], FORMS[form][2]
        if change == "duplicate":
            columns.append("speaker")
        elif change == "drop_path":
            columns.remove(path_col)
        elif change == "numeric_path":
            for i, r in enumerate(rows):
                r[path_col] = i
        elif change in ("rename", "empty_name", "all_null", "nested"):
            new = {"rename": ours, "empty_name": ""}.get(change, "speaker")
            columns[columns.index("speaker")] = new
            for r in rows:
                value = {"all_null": None, "nested": {"a": [1]}}.get(change, r["speaker"])
                r.pop("speaker")
                r[new] = value
        write_rows(manifest, rows, fmt, columns)
        # refused in one line, or read: then every row is one row or one error row
        run_and_check(_case(manifest, form, inputs=n, may_refuse=True), Path(d) / "out")


@given(form=st.sampled_from(sorted(FORMS)), n=st.integers(1, 3), mutation=byte_mutations())
@example(form="common_voice", n=1, mutation=([(0.0, 128)], None))  # a header not UTF-8
@example(form="csv", n=1, mutation=([(0.0, 128)], None))
@example(form="parquet", n=1, mutation=([(0.15625, 0)], None))  # a page header damaged
@example(form="audiofolder", n=2, mutation=([(0.25, 128)], None))  # metadata.csv not UTF-8
@example(form="nemo", n=2, mutation=([(0.6875, 128)], None))  # a JSON line not UTF-8
@example(form="nemo", n=2, mutation=([(0.625, 128)], None))
def test_manifest_bytes_flipped_and_cut(form, n, mutation):
    with tempfile.TemporaryDirectory() as d:
        manifest, rows, columns, ids = _build(Path(d), form, n)
        write_rows(manifest, rows, FORMS[form][1], columns)
        manifest.write_bytes(mutate_bytes(manifest.read_bytes(), mutation))
        run_and_check(_case(manifest, form, inputs=None, may_refuse=True), Path(d) / "out")


@given(form=st.sampled_from(["nemo"]), n=st.integers(2, 3), at=st.integers(0, 2),
       line=st.sampled_from([b"{", b"[]", b"1", b'"x"', b"null", b"{}", b"\xff\xfe", b"{\"a\":1}"]))
@example(form="nemo", n=2, at=1, line=b"{")
def test_one_bad_json_line_is_one_error_row(form, n, at, line):
    with tempfile.TemporaryDirectory() as d:
        manifest, rows, columns, ids = _build(Path(d), form, n)
        write_rows(manifest, rows, "jsonl", columns)
        lines = manifest.read_bytes().splitlines()
        at %= n
        lines[at] = line
        manifest.write_bytes(b"\n".join(lines) + b"\n")
        good = {ids[i] for i in range(n) if i != at}
        # the first line tells the file's form: a bad one may refuse the file as a whole
        run_and_check(_case(manifest, form, inputs=n, good=good, may_refuse=at == 0),
                      Path(d) / "out")
