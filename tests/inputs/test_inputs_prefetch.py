"""Reading plan items ahead: the same recordings in the same order as reading them one after
another, errors where sequential reading gives them, a bounded byte budget, and nothing left
running or open when the consumer stops early."""
import io
import threading
import time

import pytest

from timbrespace_ray.inputs import Recording, Segment
from timbrespace_ray.inputs.prefetch import prefetched


class Corpus:
    """Plan items as lists of recordings: ("bytes", n) gives n bytes, ("file", n) a file object
    of n bytes, ("raise", exc) an opener raising exc, ("error", exc) a recording marked bad,
    ("fail", exc) makes the item's reader raise exc at that point. It records what was fetched
    ahead and not yet taken, and every file object it opened."""

    def __init__(self, items, delay=0.0):
        self.items = items
        self.delay = delay
        self.lock = threading.Lock()
        self.fetched = {}  # source -> bytes, opened and not yet taken by the consumer
        self.peak = 0
        self.files = []

    def _open(self, source, kind, value):
        time.sleep(self.delay)
        if kind == "raise":
            raise value
        if kind == "file":
            fh = io.BytesIO(bytes(value))
            self.files.append(fh)
            return fh
        with self.lock:
            self.fetched[source] = value
            self.peak = max(self.peak, sum(self.fetched.values()))
        return bytes(value)

    def taken(self, rec):
        with self.lock:
            self.fetched.pop(rec.source, None)

    def read(self, item):
        index, recordings = item
        for n, (kind, value) in enumerate(recordings):
            source = f"{index}/{n}"
            if kind == "fail":
                raise value
            if kind == "error":
                yield Recording(source, [Segment(source)], error=value)
                continue
            yield Recording(source, [Segment(source)],
                            open=lambda s=source, k=kind, v=value: self._open(s, k, v))


def consume(corpus, **options):
    """What the consumer sees: (source, opened value or the exception's repr) per recording,
    then the reader's exception at the end, if any."""
    out = []
    try:
        for recordings in prefetched(corpus.items, corpus.read, **options):
            for rec in recordings:
                corpus.taken(rec)
                if rec.error is not None:
                    out.append((rec.source, "error", repr(rec.error)))
                    continue
                try:
                    value = rec.open()
                except Exception as exc:
                    out.append((rec.source, "raised", repr(exc)))
                    continue
                if not isinstance(value, bytes):
                    with value:
                        value = value.read()
                out.append((rec.source, len(value)))
    except Exception as exc:
        out.append(("reader", repr(exc)))
    return out


MIXED = [(0, [("bytes", 3), ("bytes", 5)]),
         (1, [("file", 7), ("raise", FileNotFoundError("gone")), ("error", ValueError("bad"))]),
         (2, []),
         (3, [("bytes", 11)] * 5),
         (4, [("bytes", 2), ("fail", RuntimeError("shard broke")), ("bytes", 99)]),
         (5, [("bytes", 1)])]


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_same_recordings_in_the_same_order_as_sequential_reading(threads):
    sequential = consume(Corpus(MIXED), threads=1, max_bytes=1 << 20)
    assert sequential == consume(Corpus(MIXED), threads=threads, max_bytes=1 << 20)
    assert sequential == consume(Corpus(MIXED, delay=0.002), threads=threads, max_bytes=16)


def test_a_reader_error_comes_at_its_point_after_the_earlier_recordings():
    items = [(0, [("bytes", 1)]), (1, [("bytes", 2), ("bytes", 3), ("fail", OSError("cut"))]),
             (2, [("bytes", 4)])]
    got = consume(Corpus(items, delay=0.001), threads=3, max_bytes=1 << 20)
    assert got == [("0/0", 1), ("1/0", 2), ("1/1", 3), ("reader", "OSError('cut')")]


def test_an_opener_error_is_raised_only_when_the_consumer_opens_the_recording():
    corpus = Corpus([(0, [("raise", FileNotFoundError("gone")), ("bytes", 4)]),
                     (1, [("raise", PermissionError("no"))])])
    streams = prefetched(corpus.items, corpus.read, threads=4, max_bytes=1 << 20)
    recs = [rec for recordings in streams for rec in recordings]  # nothing raised here
    with pytest.raises(FileNotFoundError, match="gone"):
        recs[0].open()
    assert recs[1].open() == b"\0" * 4
    with pytest.raises(PermissionError, match="no"):
        recs[2].open()


def test_bytes_held_ahead_stay_within_the_budget():
    # 40 recordings of 10 bytes over 8 items; the consumer is slow, so the threads run ahead
    items = [(i, [("bytes", 10)] * 5) for i in range(8)]
    corpus = Corpus(items)
    threads, budget = 4, 35
    seen = 0
    for recordings in prefetched(corpus.items, corpus.read, threads=threads, max_bytes=budget):
        for rec in recordings:
            corpus.taken(rec)
            time.sleep(0.002)
            assert rec.open() == b"\0" * 10
            seen += 1
    assert seen == 40
    # the budget, plus at most one recording being fetched by each thread
    assert budget < corpus.peak <= budget + threads * 10


def test_a_recording_larger_than_the_budget_passes_alone():
    corpus = Corpus([(0, [("bytes", 5), ("bytes", 1000), ("bytes", 5)]), (1, [("bytes", 2000)])])
    assert consume(corpus, threads=2, max_bytes=100) == [
        ("0/0", 5), ("0/1", 1000), ("0/2", 5), ("1/0", 2000)]


def test_stopping_early_stops_the_threads_and_closes_unused_files():
    before = threading.active_count()
    items = [(i, [("file", 3), ("bytes", 3)] * 3) for i in range(6)]
    corpus = Corpus(items, delay=0.001)
    streams = prefetched(corpus.items, corpus.read, threads=4, max_bytes=1 << 20)
    first = next(iter(next(streams)))  # a file object, taken but never opened
    time.sleep(0.05)  # let the threads open the next items' files
    assert threading.active_count() > before
    streams.close()
    assert threading.active_count() == before
    assert first.source == "0/0" and len(corpus.files) > 1
    assert all(fh.closed for fh in corpus.files)


def test_an_exception_in_the_consumer_stops_the_threads():
    before = threading.active_count()
    corpus = Corpus([(i, [("bytes", 3)] * 4) for i in range(6)], delay=0.001)

    def analyse():
        for recordings in prefetched(corpus.items, corpus.read, threads=3, max_bytes=1 << 20):
            for rec in recordings:
                if rec.source == "1/2":
                    raise KeyError(rec.source)

    with pytest.raises(KeyError):
        analyse()
    assert threading.active_count() == before


def test_one_thread_reads_sequentially_with_nothing_ahead():
    before = threading.active_count()
    corpus = Corpus([(0, [("bytes", 3)]), (1, [("bytes", 4)])])
    calls = []
    for recordings in prefetched(corpus.items, corpus.read, threads=1, max_bytes=1 << 20):
        assert threading.active_count() == before
        for rec in recordings:
            assert corpus.fetched == {}  # not opened before the consumer opens it
            calls.append(len(rec.open()))
            corpus.taken(rec)
    assert calls == [3, 4]


def test_at_most_threads_items_are_read_at_once_by_as_many_threads():
    # the first four items' openers meet at a barrier: they can only pass if all four are
    # being fetched at once; no more than four are, by four threads whatever the item count
    threads = 4
    barrier = threading.Barrier(threads, timeout=10)
    lock = threading.Lock()
    seen = {"open": 0, "peak": 0, "threads": set()}

    class Meeting(Corpus):
        def _open(self, source, kind, value):
            with lock:
                seen["open"] += 1
                seen["peak"] = max(seen["peak"], seen["open"])
                seen["threads"].add(threading.current_thread().name)
            if int(source.split("/")[0]) < threads:
                barrier.wait()
            time.sleep(0.001)
            with lock:
                seen["open"] -= 1
            return super()._open(source, kind, value)

    corpus = Meeting([(i, [("bytes", 1)]) for i in range(40)])
    assert consume(corpus, threads=threads, max_bytes=1 << 20) == [
        (f"{i}/0", 1) for i in range(40)]
    assert seen["peak"] == threads
    assert len(seen["threads"]) == threads
