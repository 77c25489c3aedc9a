"""Common Voice releases: a clip table (`validated.tsv`, `train.tsv`...) with its MP3s in `clips/`,
laid out as a release ships (`cv-corpus-<version>/<locale>/`), read in this process."""
import pytest
import soundfile as sf

from helpers.corpus import SHORT
from helpers.features_run import assert_features_of, run_features
from timbrespace_ray.inputs import InputError, discover
from timbrespace_ray.profiles import find_speaker_column

# the header of a release's clip tables (Common Voice 17 and later)
HEADER = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes",
          "down_votes", "age", "gender", "accents", "variant", "locale", "segment"]
# sentences with quotes that are not CSV quoting: one opening a row's cell, one left open
SENTENCES = ['He said "no" twice.', '"Quoted from the start," she wrote.', 'An open " quote.']


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A release's `en/` folder: three MP3 clips, a validated.tsv naming them and a clip that
    is not there, a train.tsv naming two of them, and reported.tsv (no clip table)."""
    locale = tmp_path_factory.mktemp("cv") / "cv-corpus-20.0-2024-12-06" / "en"
    (locale / "clips").mkdir(parents=True)
    rows = []
    for i, source in enumerate([SHORT[0], SHORT[1], SHORT[3]]):
        samples, rate = sf.read(source, dtype="float32")
        clip = f"common_voice_en_{4100 + i}.mp3"
        sf.write(locale / "clips" / clip, samples, rate, format="MP3")
        rows.append([f"c{i % 2:0128d}", clip, f"{i:064x}", SENTENCES[i], "", str(2 + i), "0",
                     "twenties" if i else "", "male_masculine" if i else "", "", "", "en", ""])
    rows.append([f"c{2:0128d}", "common_voice_en_4199.mp3", f"{9:064x}", "Gone.", "", "2", "1",
                 "", "", "", "", "en", ""])
    write_tsv(locale / "validated.tsv", HEADER, rows)
    write_tsv(locale / "train.tsv", HEADER, rows[:2])
    write_tsv(locale / "reported.tsv", ["sentence_id", "sentence", "locale", "reason"],
              [[f"{0:064x}", SENTENCES[0], "en", "grammar"]])
    return locale


def write_tsv(path, header, rows):
    # as the release writes them: tab-separated, no quoting
    path.write_text("".join("\t".join(r) + "\n" for r in [header, *rows]), encoding="utf-8")


def test_a_validated_tsv_is_read_with_every_column_and_no_row_merged(release):
    corpus = discover(str(release / "validated.tsv"))
    assert corpus.metadata == {name: "int64" if name.endswith("votes") else "string"
                               for name in HEADER if name != "path"}
    planned = {s[0]: dict(zip(item["columns"], s[3]))
               for item in corpus.items for s in item["segments"]}
    assert sorted(planned) == [f"common_voice_en_{n}.mp3" for n in (4100, 4101, 4102, 4199)]
    assert [planned[f"common_voice_en_{4100 + i}.mp3"]["sentence"] for i in range(3)] == SENTENCES
    first = planned["common_voice_en_4100.mp3"]
    assert first["gender"] is None and first["up_votes"] == 2 and first["locale"] == "en"
    assert sorted(item["source"] for item in corpus.items)[0] == (
        f"file://{release}/clips/common_voice_en_4100.mp3")
    assert len(discover(str(release / "train.tsv")).items) == 2
    assert find_speaker_column(list(corpus.metadata), None).name == "client_id"


def test_the_clips_features_equal_the_mp3_files_and_a_missing_clip_is_an_error_row(release,
                                                                                     tmp_path):
    summary, rows, errors = run_features(release / "validated.tsv", tmp_path / "out")
    assert (summary.inputs, summary.rows, summary.errors) == (4, 3, {"FileNotFoundError": 1})
    assert list(errors) == ["common_voice_en_4199.mp3"]
    for name, row in rows.items():
        assert_features_of(row, release / "clips" / name)
    assert {row["client_id"] for row in rows.values()} == {f"c{0:0128d}", f"c{1:0128d}"}


def test_a_tsv_that_is_no_clip_table_or_has_no_clips_folder_is_refused(release, tmp_path):
    with pytest.raises(InputError, match=r"reported.tsv is not a Common Voice clip table \(its "
                       r"header has no client_id or path.*validated.tsv, train.tsv"):
        discover(str(release / "reported.tsv"))
    write_tsv(tmp_path / "validated.tsv", HEADER, [])
    with pytest.raises(InputError, match="has no clips/ folder beside it"):
        discover(str(tmp_path / "validated.tsv"))
