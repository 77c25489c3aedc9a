"""Manifests as users' tools write them: a whole-file CSV with a `duration` column, NeMo's JSON
lines (any extension, gzipped or not, `offset` + `duration` as a segment), the audio path under
each tool's column name. Each is planned with `discover` and run through the features stage in
this process; its rows must equal the features of the same audio read as a plain file."""
import gzip
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from helpers.corpus import SHORT
from helpers.features_run import assert_features_of, run_features
from timbrespace_ray.inputs import InputError, InputOptions, discover, read_item
from timbrespace_ray.inputs.base import ReadContext
from timbrespace_ray.inputs.manifest import PATH_COLUMNS

CTX = ReadContext(storage_options={}, max_file_bytes=1 << 30)
WHOLE = [SHORT[0], SHORT[1], SHORT[3]]  # 3.1 s, 2.79 s, 2.99 s at 16 kHz
LONG = SHORT[2]  # 7.1 s at 16 kHz, 16-bit


def write_nemo_manifest(path, entries):
    """As NeMo's `write_manifest`: one `json.dumps` of each entry a line (gzipped for .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as fh:
        for entry in entries:
            fh.write(json.dumps(entry) + "\n")


def segments(corpus) -> list[list]:
    """[utt_id, start_s, end_s, metadata values] of every planned segment, by utt_id."""
    return sorted((s for item in corpus.items for s in item["segments"]), key=lambda s: s[0])


def test_a_csv_of_path_duration_speaker_id_is_whole_files_with_their_duration(tmp_path):
    (tmp_path / "wavs").mkdir()
    lines = ["path,duration,speaker_id"]
    for i, source in enumerate(WHOLE):
        shutil.copy(source, tmp_path / "wavs" / f"f{i}.wav")
        lines.append(f"wavs/f{i}.wav,{sf.info(source).duration:.2f},{100 + i}")
    lines.append("wavs/gone.wav,1.50,999")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")

    corpus = discover(str(tmp_path / "m.csv"))
    assert corpus.metadata == {"duration": "float64", "speaker_id": "int64"}
    assert [s[:3] for s in segments(corpus)] == [
        ["wavs/f0.wav", None, None], ["wavs/f1.wav", None, None], ["wavs/f2.wav", None, None],
        ["wavs/gone.wav", None, None]]  # whole files: the duration is no segment bound

    summary, rows, errors = run_features(tmp_path / "m.csv", tmp_path / "out")
    assert (summary.inputs, summary.rows, summary.errors) == (4, 3, {"FileNotFoundError": 1})
    assert list(errors) == ["wavs/gone.wav"]
    for i, source in enumerate(WHOLE):
        row = rows[f"wavs/f{i}.wav"]
        assert row["start_s"] is None and row["end_s"] is None and row["speaker_id"] == 100 + i
        assert row["duration"] == round(sf.info(source).duration, 2)
        assert row["duration_s"] == pytest.approx(sf.info(source).frames / 16000)
        assert_features_of(row, source)


@pytest.mark.parametrize("column", PATH_COLUMNS)
def test_the_audio_path_under_each_tools_column_name(tmp_path, column):
    shutil.copy(SHORT[0], tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text(f"{column},text\na.wav,hello\n")
    (item,) = discover(str(tmp_path / "m.csv")).items
    assert item["source"] == f"file://{tmp_path}/a.wav" and item["columns"] == ["text"]
    assert item["segments"] == [["a.wav", None, None, ["hello"]]]


def test_several_path_columns_the_first_wins_and_path_column_overrides(tmp_path, said):
    shutil.copy(SHORT[0], tmp_path / "a.wav")
    shutil.copy(SHORT[1], tmp_path / "b.wav")
    (tmp_path / "m.csv").write_text("file,path,speaker\nb.wav,a.wav,s1\n")
    corpus = discover(str(tmp_path / "m.csv"))
    assert [i["source"] for i in corpus.items] == [f"file://{tmp_path}/a.wav"]
    assert corpus.metadata == {"file": "string", "speaker": "string"}  # the other one is carried
    assert any("audio paths from column 'path' ('file' carried as metadata; --path-column "
               "chooses)" in line for line in said)

    corpus = discover(str(tmp_path / "m.csv"), options=InputOptions(path_column="file"))
    assert [i["source"] for i in corpus.items] == [f"file://{tmp_path}/b.wav"]
    assert corpus.metadata == {"path": "string", "speaker": "string"}
    with pytest.raises(InputError, match=r"no column 'wav' \(--path-column, features.path_column\)"
                       r"; its columns: file, path, speaker"):
        discover(str(tmp_path / "m.csv"), options=InputOptions(path_column="wav"))


@pytest.fixture(scope="module")
def long_slices(tmp_path_factory):
    """The NeMo segments below as plain files: the recording's own 16 kHz samples in each range
    (the analysis reads samples int(start * 16000) up to int(end * 16000))."""
    root = tmp_path_factory.mktemp("slices")
    samples, rate = sf.read(LONG, dtype="int16")
    assert rate == 16000
    out = {}
    for start, end in ((0.5, 2.5), (3.0, 5.5)):
        path = root / f"{start}-{end}.wav"
        sf.write(path, samples[int(start * rate):int(end * rate)], rate, subtype="PCM_16")
        out[start] = path
    return out


def test_a_nemo_manifest_offset_and_duration_are_segments(tmp_path, long_slices):
    shutil.copy(LONG, tmp_path / "long.wav")
    recording = str(tmp_path / "long.wav")
    write_nemo_manifest(tmp_path / "train_manifest.json", [
        {"audio_filepath": recording, "duration": 2.0, "offset": 0.5, "text": "one"},
        {"audio_filepath": recording, "duration": 2.5, "offset": 3, "text": "two"},  # an int
        {"audio_filepath": recording, "duration": 1.0, "offset": 9.0, "text": "past the end"},
        {"audio_filepath": str(tmp_path / "gone.wav"), "duration": 1.0, "offset": 0.0,
         "text": "no file"}])
    corpus = discover(str(tmp_path / "train_manifest.json"))
    assert corpus.metadata == {"text": "string"}  # offset and duration are the bounds
    assert [s[1:] for s in segments(corpus)] == [
        [0.0, 1.0, ["no file"]], [0.5, 2.5, ["one"]], [3.0, 5.5, ["two"]],
        [9.0, 10.0, ["past the end"]]]

    summary, rows, errors = run_features(tmp_path / "train_manifest.json", tmp_path / "out")
    assert (summary.inputs, summary.rows) == (4, 2)
    assert summary.errors == {"SegmentRangeError": 1, "FileNotFoundError": 1}
    assert sorted(e["message"].split(":")[0] for e in errors.values()) == [
        "file not found", f"{recording.lstrip('/')}@9.000-10.000"]
    by_start = {row["start_s"]: row for row in rows.values()}
    assert sorted(by_start) == [0.5, 3.0]
    for start, row in by_start.items():
        assert row["end_s"] - row["start_s"] == row["duration_s"]
        assert_features_of(row, long_slices[start])


@pytest.mark.parametrize("name", ["m.json", "m.jsonl", "m.json.gz", "m.jsonl.gz"])
def test_nemo_manifests_whatever_the_extension_a_duration_alone_is_metadata(tmp_path, name):
    entries = [{"audio_filepath": str(SHORT[i]), "duration": sf.info(SHORT[i]).duration,
                "text": f"utterance {i}"} for i in (0, 1)]
    write_nemo_manifest(tmp_path / name, entries)
    corpus = discover(str(tmp_path / name))
    assert corpus.metadata == {"duration": "float64", "text": "string"}
    assert [s[1:] for s in segments(corpus)] == [
        [None, None, [e["duration"], e["text"]]] for e in entries]
    (recording,) = read_item(corpus.items[0], CTX)
    assert recording.open() == SHORT[0].read_bytes()


def test_lhotse_and_nemo_manifests_are_told_apart_by_content(tmp_path):
    lhotse = pytest.importorskip("lhotse")
    recording = lhotse.Recording.from_file(SHORT[0], recording_id="r0")
    lhotse.RecordingSet.from_recordings([recording]).to_file(tmp_path / "recordings.jsonl.gz")
    write_nemo_manifest(tmp_path / "nemo.jsonl.gz", [{"audio_filepath": str(SHORT[0])}])
    readers = {name: [i["reader"] for i in discover(str(tmp_path / name)).items]
               for name in ("recordings.jsonl.gz", "nemo.jsonl.gz")}
    assert readers == {"recordings.jsonl.gz": ["lhotse"], "nemo.jsonl.gz": ["manifest"]}


def test_a_json_file_that_is_no_manifest_is_refused_saying_what_was_looked_for(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"audio_filepath": "a.wav"}, indent=2))
    with pytest.raises(InputError, match=r"config.json is not an input: its first line is not a "
                       r"JSON object\. A JSON lines manifest \(NeMo's\) is one JSON object per "
                       r"line with an audio path column \(path, audio_filepath.*a lhotse"):
        discover(str(tmp_path / "config.json"))
    write_nemo_manifest(tmp_path / "texts.json", [{"id": "u1", "transcript": "hello"}])
    with pytest.raises(InputError, match="its first record has keys id, transcript"):
        discover(str(tmp_path / "texts.json"))
    with pytest.raises(InputError, match="with 'wav'; a lhotse"):
        discover(str(tmp_path / "texts.json"), options=InputOptions(path_column="wav"))
    # a folder holding only a NeMo manifest: how to read it
    (tmp_path / "config.json").unlink()
    (tmp_path / "texts.json").unlink()
    write_nemo_manifest(tmp_path / "train.json", [{"audio_filepath": str(SHORT[0])}])
    with pytest.raises(InputError, match="train.json: to read a manifest, pass the manifest file"):
        discover(str(tmp_path))


def test_segment_columns_that_cannot_be_read_together_are_refused(tmp_path):
    for header, message in (("path,start,offset,end", "both 'start' and 'offset'"),
                            ("path,end", "an 'end' column but no 'start'"),
                            ("path,offset,end,duration", "both 'end' and 'duration'")):
        (tmp_path / "m.csv").write_text(f"{header}\n{SHORT[0]}" + ",1" * header.count(",") + "\n")
        with pytest.raises(InputError, match=message):
            discover(str(tmp_path / "m.csv"))


def test_a_parquet_file_with_neither_a_path_nor_an_audio_column_says_both(tmp_path):
    pq.write_table(pa.table({"text": ["a"], "speaker": ["s"]}), tmp_path / "t.parquet")
    with pytest.raises(InputError, match=r"t.parquet is neither a manifest \(no audio path "
                       r"column: looked for path, audio_filepath, audio_path, file_name, file; "
                       r"--path-column names another\) nor a Parquet audio dataset"):
        discover(str(tmp_path / "t.parquet"))


# --- malformed manifests: a bad row is that row's error row; a bad file is one line -----------

@pytest.fixture(scope="module")
def tiny_wav(tmp_path_factory):
    """0.3 s of a speech file: enough for a row, cheap to analyse."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.wav"
    samples, rate = sf.read(SHORT[0], dtype="int16", frames=4800)
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize("name, text, message", [
    ("ours.csv", "path,pitch_hz\na.wav,3\n", r"'pitch_hz', which timbrespace_ray writes itself.*"
     "features.metadata_columns"),
    ("measure.csv", "path,voiced_s\na.wav,3\n", r"'voiced_s', which timbrespace_ray writes"),
    ("twice.csv", "path,speaker,speaker\na.wav,x,y\n", r"'speaker' more than once in its header"),
    ("latin1.csv", b"path,speaker\na.wav,caf\xe9\n", r"'speaker' hold bytes that are not UTF-8"),
    ("header.csv", "path,speaker\n", r"has columns \(path, speaker\) but no rows"),
    ("nemo.jsonl.gz", "".join(f'{{"audio_filepath": "a{i}.wav", "duration": 1.5}}\n'
                              for i in range(400)),
     r"nemo.jsonl.gz cannot be read to its end after line \d+: it is cut short"),
])
def test_a_manifest_that_cannot_be_used_as_a_whole_is_refused_in_one_line(tmp_path, name, text,
                                                                          message):
    (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    if name.endswith(".gz"):  # a NeMo manifest gzipped, then cut short in its records
        data = gzip.compress(text.encode())
        (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match=message) as refused:
        list(discover(str(tmp_path / name)).items)
    assert "\n" not in str(refused.value)


def test_bad_csv_rows_are_one_error_row_each_and_the_others_come_out(tmp_path, tiny_wav):
    shutil.copy(tiny_wav, tmp_path / "a.wav")
    shutil.copy(tiny_wav, tmp_path / "123")  # a file named as a number, written as one
    (tmp_path / "m.csv").write_text(
        "path,start,end,speaker\n"
        "a.wav,0,0.2,007\n"
        ",0,0.2,s2\n"                # line 3: no path
        "a.wav,abc,0.2,s3\n"         # line 4: a start that is no number
        "a.wav,0,0.2,s4,extra\n"     # line 5: a cell too many
        "123,0.05,0.25,s5\n")
    summary, rows, errors = run_features(tmp_path / "m.csv", tmp_path / "out",
                                         max_error_share=1)
    assert (summary.inputs, summary.rows, summary.errors) == (5, 2, {"InputError": 3})
    assert sorted(rows) == ["123@0.050-0.250", "a.wav@0.000-0.200"]
    assert rows["a.wav@0.000-0.200"]["speaker"] == "007"
    assert {u: e["error_type"] for u, e in errors.items()} == {
        "m.csv:3": "InputError", "m.csv:4": "InputError", "m.csv:5": "InputError"}
    assert "line 3 has no 'path'" in errors["m.csv:3"]["message"]
    assert "line 4 has start 'abc', which is not a number" in errors["m.csv:4"]["message"]
    assert "line 5 has 5 cells where the header has 4" in errors["m.csv:5"]["message"]
    assert all(e["source"] == f"file://{tmp_path}/m.csv" for e in errors.values())


def test_bad_json_lines_are_one_error_row_each_and_a_long_line_is_read(tmp_path, tiny_wav):
    shutil.copy(tiny_wav, tmp_path / "a.wav")
    lines = [json.dumps({"audio_filepath": "a.wav", "offset": 0.0, "duration": 0.2,
                         "speaker": "s1", "text": "x" * (3 << 20)}),  # a line over 2 MiB
             "{not json",
             json.dumps({"audio_filepath": "a.wav", "offset": 0.1, "duration": 0.2,
                         "speaker": ["s", 2]}),  # a list where the others hold text
             "",
             json.dumps({"audio_filepath": "a.wav", "offset": "soon", "duration": 0.2}),
             json.dumps({"audio_filepath": "a.wav", "offset": 0.05, "duration": 0.2,
                         "speaker": 7})]  # a number among text: kept, as text
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    summary, rows, errors = run_features(tmp_path / "m.jsonl", tmp_path / "out",
                                         max_error_share=1)
    assert (summary.inputs, summary.rows, summary.errors) == (5, 2, {"InputError": 3})
    assert {u: r["speaker"] for u, r in rows.items()} == {"a.wav@0.000-0.200": "s1",
                                                         "a.wav@0.050-0.250": "7"}
    assert len(rows["a.wav@0.000-0.200"]["text"]) == 3 << 20
    assert sorted(errors) == ["m.jsonl:2", "m.jsonl:3", "m.jsonl:5"]  # line 4 is blank
    assert "line 2 is not JSON" in errors["m.jsonl:2"]["message"]
    assert ("line 3 has [\"s\", 2] in column 'speaker', whose other rows hold text"
            in errors["m.jsonl:3"]["message"])
    assert "line 5 has offset \"soon\", which is not a number" in errors["m.jsonl:5"]["message"]
