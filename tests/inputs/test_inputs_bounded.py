"""Planning in bounded memory: manifests and listings past the rows held in memory are spilled
to disk and planned bucket by bucket, with the same items as when held; tables read in blocks
get one schema; a duplicated utt_id is found across spills. SPILL_ROWS and the block size are
made small so that a few rows take the paths that millions take."""
import json

import pytest

from timbrespace_ray.inputs import InputError, discover, listing, manifest, spill, tabular
from timbrespace_ray.inputs.listing import files_under
from timbrespace_ray.storage import Location


def _manifest_rows(recordings=7, per_recording=9):
    # rows of each recording spread over the whole manifest, as a sorted-by-speaker one is
    rows = []
    for seg in range(per_recording):
        for rec in range(recordings):
            rows.append({"path": f"audio/rec{rec}.wav", "start": seg * 2.0, "end": seg * 2.0 + 1.5,
                         "speaker": f"s{rec % 3}", "utt_id": f"r{rec}-{seg}"})
    return rows


def _write_csv(path, rows):
    names = list(rows[0])
    path.write_text("\n".join([",".join(names)] + [",".join(str(r[n]) for n in names)
                                                  for r in rows]) + "\n")


def _by_source(items):
    return {i["source"]: sorted(s[0] for s in i["segments"]) for i in items}


def test_a_spilled_manifest_plans_the_same_recordings_as_a_held_one(tmp_path, monkeypatch):
    path = tmp_path / "m.csv"
    _write_csv(path, _manifest_rows())
    held = discover(str(path))
    monkeypatch.setattr(manifest, "held", lambda blocks: spill.held(blocks, rows=10))
    monkeypatch.setattr(tabular, "BLOCK_BYTES", 200)  # many blocks
    spilled = discover(str(path))
    assert len(held.items) == len(spilled.items) == 7  # one item per recording, never split
    assert _by_source(held.items) == _by_source(spilled.items)
    assert all(len(segs) == 9 for segs in _by_source(spilled.items).values())
    assert held.metadata == spilled.metadata == {"speaker": "string"}
    # the items are the same, in another (fixed) order
    key = lambda i: i["source"]  # noqa: E731
    assert sorted(held.items, key=key) == sorted(spilled.items, key=key)
    assert [i["source"] for i in discover(str(path)).items] == [i["source"] for i in spilled.items]


def test_a_spilled_manifest_names_the_manifest_row_of_a_bad_one(tmp_path, monkeypatch):
    rows = _manifest_rows()
    rows[40]["path"] = ""
    path = tmp_path / "m.csv"
    _write_csv(path, rows)
    monkeypatch.setattr(manifest, "held", lambda blocks: spill.held(blocks, rows=10))
    refused = [i for i in discover(str(path)).items if "refused" in i]
    # the 41st row is line 42, the header being line 1
    assert [(i["utt_id"], i["refused"]) for i in refused] == [
        ("m.csv:42", f"manifest file://{path} line 42 has no 'path': write the audio file's path "
                     "there, or remove the row")]


def test_a_csv_column_typed_otherwise_after_the_first_block_is_read_again(tmp_path, monkeypatch):
    rows = _manifest_rows()
    for i, row in enumerate(rows):
        row["age"] = 30 + i % 5
        row["score"] = i
    rows[-1]["age"] = "unknown"  # not a number after many that were
    rows[-2]["score"] = 2.5  # a decimal after integers
    path = tmp_path / "m.csv"
    _write_csv(path, rows)
    monkeypatch.setattr(tabular, "BLOCK_BYTES", 300)
    corpus = discover(str(path))
    assert corpus.metadata == {"speaker": "string", "age": "string", "score": "float64"}
    values = {s[0]: dict(zip(i["columns"], s[3])) for i in corpus.items for s in i["segments"]}
    assert values["r6-8"]["age"] == "unknown" and values["r0-0"]["age"] == "30"
    assert values["r5-8"]["score"] == 2.5 and values["r0-1"]["score"] == 7.0


def test_json_lines_blocks_typed_apart_get_one_schema(tmp_path, monkeypatch):
    rows = _manifest_rows()
    for i, row in enumerate(rows):
        row["audio_filepath"] = row.pop("path")
        row["quality"] = 1.5 if i % 2 else 2  # either, as JSON writers do
        if i > 40:
            row["speaker"] = i  # a number where earlier blocks had text
        if i > 50:
            row["lang"] = "en"  # a column the first blocks do not have
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(tabular, "BLOCK_BYTES", 500)
    corpus = discover(str(path))
    assert corpus.metadata == {"speaker": "string", "quality": "float64", "lang": "string"}
    values = {s[0]: dict(zip(i["columns"], s[3])) for i in corpus.items for s in i["segments"]}
    assert values["r0-0"]["speaker"] == "s0" and values["r6-8"]["speaker"] == "62"
    assert values["r0-0"]["lang"] is None and values["r6-8"]["lang"] == "en"


def test_a_listing_is_streamed_in_path_order_and_spilled(tmp_path, monkeypatch):
    names = ["a.wav", "a-b.wav", "a/x.wav", "a/b/y.wav", "b/z.flac", "ab.wav", "a.b/c.wav"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * len(name))
    root = Location.of(str(tmp_path))
    walked = [(p, size) for p, size in files_under(root)]
    found = sorted(root.fs.find(root.path, detail=True).items())
    assert walked == [(p, info["size"]) for p, info in found]  # what find() sorted says
    monkeypatch.setattr(listing, "SPILL_ROWS", 2)
    files = listing.FileList(root.fs)
    for path, size in walked:
        files.append(path, size)
    assert len(files) == 7 and files._spilled  # noqa: SLF001 - the spill is what is tested
    assert [(f.loc.path, f.size) for f in files] == walked
    assert [(f.loc.path, f.size) for f in files] == walked  # iterable again
    monkeypatch.setattr(spill, "SPILL_ROWS", 2)
    assert [i["utt_id"] for i in discover(str(tmp_path)).items] == [
        "a-b.wav", "a.b/c.wav", "a.wav", "a/b/y.wav", "a/x.wav", "ab.wav", "b/z.flac"]


def test_an_utt_id_given_twice_is_found_across_spills(tmp_path, monkeypatch):
    rows = _manifest_rows()
    rows[60]["utt_id"] = "r0-0"
    path = tmp_path / "m.csv"
    _write_csv(path, rows)
    monkeypatch.setattr(spill, "SPILL_ROWS", 5)
    with pytest.raises(InputError, match="two inputs share utt_id 'r0-0'"):
        discover(str(path))
