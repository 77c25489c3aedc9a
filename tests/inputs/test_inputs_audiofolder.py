"""Hugging Face AudioFolder layouts: a folder of audio files with `metadata.csv` (or `.jsonl`)
files whose `file_name` column names them, also in sub-folders. The folder's files are read as
files with the metadata's columns; `datasets`' own AudioFolder builder checks the layout."""
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from helpers.corpus import SHORT
from helpers.features_run import assert_features_of, run_features
from timbrespace_ray.inputs import InputError, discover

ROWS = {"a.wav": (11, "first"), "sub/b.flac": (12, "second"), "gone.wav": (13, "no file")}
MORE_ROWS = {"c.wav": (14, "third")}
# what the metadata files say, by the named file's path relative to the folder
NAMED = {**ROWS, **{f"more/{f}": v for f, v in MORE_ROWS.items()}}


def write_metadata(path, rows: dict) -> None:
    lines = ["file_name,speaker_id,text", *(f"{f},{s},{t}" for f, (s, t) in rows.items())]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def audiofolder(tmp_path_factory):
    """The layout the `datasets` docs describe: metadata.csv beside the audio, naming files in
    its folder and below; a sub-folder with a metadata.csv of its own; a file no row names
    (more/d.wav); a row whose file is not there (gone.wav)."""
    root = tmp_path_factory.mktemp("audiofolder") / "data"
    (root / "sub").mkdir(parents=True)
    (root / "more").mkdir()
    shutil.copy(SHORT[0], root / "a.wav")
    samples, rate = sf.read(SHORT[1], dtype="float32")
    sf.write(root / "sub" / "b.flac", samples, rate)
    shutil.copy(SHORT[3], root / "more" / "c.wav")
    shutil.copy(SHORT[6], root / "more" / "d.wav")
    write_metadata(root / "metadata.csv", ROWS)
    write_metadata(root / "more" / "metadata.csv", MORE_ROWS)
    return root


def test_the_layout_is_one_datasets_reads_with_the_same_columns_and_rows(audiofolder, tmp_path):
    datasets = pytest.importorskip("datasets")
    # load_dataset("audiofolder") itself ends by encoding the audio column, which needs
    # torchcodec; the builder's own split and example generation before that is the layout's
    # reading: which metadata files, which columns, which file each row names
    builder = datasets.load_dataset_builder("audiofolder", data_dir=str(audiofolder),
                                            cache_dir=str(tmp_path / "hf"))
    manager = datasets.DownloadManager(
        download_config=datasets.DownloadConfig(cache_dir=str(tmp_path / "hf")))
    examples = [example for split in builder._split_generators(manager)
                for _, example in builder._generate_examples(**split.gen_kwargs)]
    theirs = {str(e["audio"])[len(str(audiofolder)) + 1:]: (e["speaker_id"], e["text"])
              for e in examples}
    assert theirs == NAMED

    corpus = discover(str(audiofolder))
    assert set(corpus.metadata) == set(builder.info.features) - {"audio"}
    assert corpus.metadata == {"speaker_id": "int64", "text": "string"}
    ours = {i["utt_id"]: i.get("metadata") for i in corpus.items}
    assert ours == {**{f: {"speaker_id": s, "text": t} for f, (s, t) in theirs.items()},
                    "more/d.wav": None}  # every file listed, with its row when it has one


def test_features_of_the_files_with_their_metadata_and_a_row_without_file(audiofolder, tmp_path,
                                                                          said):
    summary, rows, errors = run_features(audiofolder, tmp_path / "out")
    assert (summary.inputs, summary.rows, summary.errors) == (5, 4, {"FileNotFoundError": 1})
    assert list(errors) == ["gone.wav"]
    assert {u: (r["speaker_id"], r["text"]) for u, r in rows.items()} == {
        **{u: v for u, v in NAMED.items() if u != "gone.wav"},
        "more/d.wav": (None, None)}
    for utt_id, row in rows.items():
        assert_features_of(row, audiofolder / utt_id)
    assert ("audio folder: metadata for 3 of 4 audio files from metadata.csv, more/metadata.csv"
            "; 1 of its rows name no audio file of the folder (error rows)") in said


@pytest.mark.parametrize("name", ["metadata.jsonl", "metadata.parquet"])
def test_metadata_jsonl_or_parquet_and_files_no_row_names(tmp_path, name):
    shutil.copy(SHORT[0], tmp_path / "x.wav")
    shutil.copy(SHORT[1], tmp_path / "y.wav")
    row = {"file_name": "x.wav", "speaker_id": "s1", "duration": 3.1}
    if name.endswith(".jsonl"):
        (tmp_path / name).write_text(json.dumps(row) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist([row]), tmp_path / name)
    corpus = discover(str(tmp_path))
    assert corpus.metadata == {"speaker_id": "string", "duration": "float64"}
    assert [(i["utt_id"], i.get("metadata")) for i in corpus.items] == [
        ("x.wav", {"speaker_id": "s1", "duration": 3.1}), ("y.wav", None)]


def test_a_metadata_csv_of_another_layout_is_left_alone(tmp_path):
    # LJSpeech's: no header, fields separated by |
    (tmp_path / "wavs").mkdir()
    shutil.copy(SHORT[0], tmp_path / "wavs" / "LJ001-0001.wav")
    (tmp_path / "metadata.csv").write_text("LJ001-0001|Printing, in the only sense|Printing, in "
                                           "the only sense\n")
    corpus = discover(str(tmp_path))
    assert [(i["utt_id"], i.get("metadata")) for i in corpus.items] == [("wavs/LJ001-0001.wav",
                                                                          None)]
    assert corpus.metadata == {}


@pytest.mark.parametrize("lines,message", [
    (["file_name,speaker", "x.wav,s1", "./x.wav,s2"], "'./x.wav' is named twice"),
    (["file_name,speaker", "../x.wav,s1"], "file_name '../x.wav' must be a path relative to "
                                           "the metadata file's folder, inside it"),
    (["file_name,speaker", "x.wav,s1", ",s2"], "metadata.csv line 3 has no file_name"),
    (["file_name,speaker,speaker", "x.wav,s1,s2"], "'speaker' more than once in its header"),
    (["file_name,pitch_hz", "x.wav,1"], "'pitch_hz', which timbrespace_ray writes itself"),
])
def test_metadata_that_cannot_be_joined_is_refused(tmp_path, lines, message):
    (tmp_path / "d").mkdir()
    shutil.copy(SHORT[0], tmp_path / "d" / "x.wav")
    (tmp_path / "d" / "metadata.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message):
        discover(str(tmp_path / "d"))
