"""The reader contract: a new input form is one Reader subclass, which `discover` asks about a
file or a folder's files and plans with, and `read_item` reads back, with discovery unchanged."""
import shutil

import pytest

from helpers.corpus import SHORT
from timbrespace_ray.inputs import (Corpus, InputError, ReadContext, Reader, Recording, Segment,
                                    discover, read_item)
from timbrespace_ray.inputs.base import plan_item

CTX = ReadContext(storage_options={}, max_file_bytes=1 << 30)


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry for the test, so that the made-up form is gone after it."""
    monkeypatch.setattr(Reader, "registry", dict(Reader.registry))


def _define_utterance_lists() -> type[Reader]:
    class UtteranceListReader(Reader):
        """A made-up form: a `.utts` file names one utterance a line, all of one WAV file."""

        name = "test_utterance_list"
        describes = "utterance lists (.utts)"
        extensions = (".utts",)

        @classmethod
        def plan(cls, files, root, options):
            items = []
            for f in files:
                ids = f.loc.read_bytes().decode().split()
                items.append(plan_item(cls, count=len(ids), source=f.loc.uri, ids=ids,
                                       list=f.name_in(root)))
            return Corpus(items, {"list": "string"})

        @classmethod
        def read(cls, item, ctx):
            for utt_id in item["ids"]:
                yield Recording(f"{item['source']}#{utt_id}",
                                [Segment(utt_id, metadata={"list": item["list"]})],
                                open=lambda: SHORT[0].read_bytes())

    return UtteranceListReader


def test_a_new_form_is_found_planned_and_read_without_touching_discovery(registry, tmp_path):
    utts = tmp_path / "corpus" / "sub" / "a.utts"
    utts.parent.mkdir(parents=True)
    utts.write_text("u1\nu2\n")
    with pytest.raises(InputError, match="is not an input"):
        discover(str(utts))  # before the form exists

    _define_utterance_lists()
    corpus = discover(str(utts))
    assert [i["reader"] for i in corpus.items] == ["test_utterance_list"]
    assert corpus.metadata == {"list": "string"}
    recordings = list(read_item(corpus.items[0], CTX))
    assert [r.segments[0].utt_id for r in recordings] == ["u1", "u2"]
    assert recordings[0].segments[0].metadata == {"list": "a.utts"}
    assert recordings[0].open() == SHORT[0].read_bytes()

    # in a folder, beside audio files, in listing order (a default priority)
    shutil.copy(SHORT[0], tmp_path / "corpus" / "b.wav")
    shutil.copy(SHORT[1], tmp_path / "corpus" / "z.wav")
    items = discover(str(tmp_path / "corpus")).items
    assert [(i["reader"], i.get("list") or i["utt_id"]) for i in items] == [
        ("file", "b.wav"), ("test_utterance_list", "sub/a.utts"), ("file", "z.wav")]

    # what was looked for names it too
    (tmp_path / "notes.txt").write_text("not an input")
    with pytest.raises(InputError, match=r"looked for .*utterance lists \(\.utts\)"):
        discover(str(tmp_path / "notes.txt"))
