"""Reading a unit's plan items ahead of the analysis, so that the CPU does not wait on storage.

Read one after another, every recording costs the analysis a full round trip to the store (on
object storage tens of milliseconds per request, for a few hundred milliseconds of analysis of
a short file). `prefetched` gives the same recordings, in the same order, while `threads`
threads already read the next items (at most `threads` items in flight) and fetch each
recording's audio: `Recording.open()` is called ahead, and what it gives (the bytes of a small
file, or the file object of a large one, whose size lookup then happened ahead) or what it
raised is what the consumer's `open()` gets. Errors therefore come where sequential reading
gives them: an opener's error when the consumer opens that recording (a missing file is still
that input's error row), a reader's error when the consumer reaches that point of that item.

Items are started in bursts: once the consumer has taken half of the items started ahead of
it, the next ones up to `threads` ahead are started together. A store's client spends about
half the CPU per request on requests that come together (its code and data stay in the caches)
as on the same requests one at a time between stretches of analysis: on S3, short WAV files
read in bursts of 4 to 8 cost the client 1.0-1.3 ms of CPU each, one at a time 1.4-1.9 ms
(2-core Xeon, beside 9 ms of analysis per file). The threads are a pool that serves the items
in turn: starting a thread per item cost a short file about 0.4 ms more.

Memory stays bounded: a thread fetches the next recording only while the bytes fetched ahead
(and not yet taken by the consumer) are under `max_bytes`, so at most `max_bytes` plus one
recording per thread are held; the thread of the item the consumer waits on may always fetch
the one recording it waits for (a recording larger than the whole budget passes alone, and
later items holding the budget never stall an earlier one). A streaming item (a tar shard,
read as its members are yielded) is thus read ahead of the analysis within the budget. A large
recording is handed over as an open file object, which is streamed by the decoder; its thread
opens nothing further until the consumer took it, so few file objects are open at once.

Plain threads: the reads are I/O, which releases the GIL, and a unit's items are few.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from .base import Recording


class _Fetched:
    """A recording's opener, called ahead: the first call gives what the opener gave (or raises
    what it raised); a later call opens again, as a plain opener would."""

    def __init__(self, opener: Callable):
        self._opener = opener
        self._error: Exception | None = None
        self._value = None
        self._claimed = False
        try:
            self._value = opener()
        except Exception as exc:  # kept for the consumer: raised when it opens the recording
            self._error = exc
        held = isinstance(self._value, (bytes, bytearray))
        self.nbytes = len(self._value) if held else 0
        self.is_stream = self._value is not None and not held  # a file object

    def __call__(self):
        if self._claimed:
            return self._opener()
        self._claimed = True
        value, error = self._value, self._error
        self._value = self._error = None  # the consumer owns them now
        if error is not None:
            raise error
        return value

    def discard(self) -> None:
        """Close a file object that the consumer never took."""
        if not self._claimed and self.is_stream:
            self._claimed = True
            self._value.close()
            self._value = None


def _fetch(rec: Recording) -> tuple[Recording, _Fetched | None]:
    if rec.open is None or rec.error is not None:
        return rec, None
    fetched = _Fetched(rec.open)
    return dataclasses.replace(rec, open=fetched), fetched


class _Slot:
    """One item: the recordings its thread fetched and the consumer has not taken yet."""

    def __init__(self, index: int):
        self.index = index
        self.entries: deque[tuple[Recording, _Fetched | None]] = deque()
        self.finished = False
        self.error: BaseException | None = None


class _Ahead:
    def __init__(self, items: Sequence, read: Callable[[object], Iterable[Recording]],
                 threads: int, max_bytes: int):
        self.items, self.read, self.threads, self.max_bytes = items, read, threads, max_bytes
        self.cond = threading.Condition()
        self.slots: list[_Slot] = []
        self.current = 0  # the item the consumer is on
        self.held = 0  # bytes fetched ahead and not yet taken by the consumer
        self.stopped = False
        self.handed: list[_Fetched] = []  # file objects given to the consumer
        # `threads` threads serve the items in turn: a thread started per item cost a short
        # file more CPU than reading it from a store (a unit of short files is one item each)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="prefetch")

    # consumer side ---------------------------------------------------------------------------
    def enter(self, index: int) -> None:
        """The consumer moves to item `index`: once no more than half of `threads` items
        from it on have been started, start those up to `threads` items ahead, together; an
        earlier item's reading stops (the consumer left it)."""
        with self.cond:
            self.current = index
            for slot in self.slots[:index]:
                self._drop(slot)
            self.cond.notify_all()
        if len(self.slots) - index > self.threads // 2:
            return
        while len(self.slots) < min(index + self.threads, len(self.items)):
            slot = _Slot(len(self.slots))
            self.slots.append(slot)
            self.pool.submit(self._run, slot)

    def recordings(self, slot: _Slot) -> Iterator[Recording]:
        while True:
            with self.cond:
                while not slot.entries and not slot.finished:
                    self.cond.wait()
                if slot.entries:
                    rec, fetched = slot.entries.popleft()
                    if fetched is not None:
                        self.held -= fetched.nbytes
                        if fetched.is_stream:
                            self.handed.append(fetched)
                    self.cond.notify_all()
                elif slot.error is not None:
                    raise slot.error
                else:
                    return
            yield rec

    def stop(self) -> None:
        """Stop every thread, wait for it, and close what nobody will use."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.pool.shutdown(cancel_futures=True)  # an item not started has nothing to stop
        with self.cond:
            for slot in self.slots:
                self._drop(slot)
        for fetched in self.handed:
            fetched.discard()

    def _drop(self, slot: _Slot) -> None:
        while slot.entries:
            _, fetched = slot.entries.popleft()
            if fetched is not None:
                self.held -= fetched.nbytes
                fetched.discard()

    # threads ------------------------------------------------------------------------------------
    def _left(self, slot: _Slot) -> bool:
        return self.stopped or slot.index < self.current

    def _may_fetch(self, slot: _Slot) -> bool:
        return self.held < self.max_bytes or (slot.index == self.current and not slot.entries)

    def _run(self, slot: _Slot) -> None:
        recordings = None
        try:
            recordings = iter(self.read(self.items[slot.index]))
            while True:
                with self.cond:
                    while not self._left(slot) and not self._may_fetch(slot):
                        self.cond.wait()
                    if self._left(slot):
                        return
                try:
                    rec = next(recordings)
                except StopIteration:
                    recordings = None  # finished: nothing to close
                    return
                rec, fetched = _fetch(rec)
                with self.cond:
                    if self._left(slot):
                        if fetched is not None:
                            fetched.discard()
                        return
                    slot.entries.append((rec, fetched))
                    if fetched is not None:
                        self.held += fetched.nbytes
                    self.cond.notify_all()
                    if fetched is not None and fetched.is_stream:
                        # a large recording, streamed by the decoder: nothing is gained by
                        # opening the next one before the consumer gets to this one
                        while slot.entries and not self._left(slot):
                            self.cond.wait()
        except BaseException as exc:  # raised in the consumer where sequential reading would
            slot.error = exc
        finally:
            if recordings is not None:
                # the consumer stopped early: the reader's own cleanup (closing a shard) runs
                # here, in the thread that ran it; its errors no longer matter to anyone
                with contextlib.suppress(Exception):
                    close = getattr(recordings, "close", None)
                    if close is not None:
                        close()
            with self.cond:
                slot.finished = True
                self.cond.notify_all()


def prefetched(items: Sequence, read: Callable[[object], Iterable[Recording]], *, threads: int,
               max_bytes: int) -> Iterator[Iterator[Recording]]:
    """For each item in order, an iterator over `read(item)`'s recordings, read ahead by up to
    `threads` items at a time within `max_bytes` (threads <= 1: read sequentially, nothing
    ahead). Close the generator when stopping early: its threads stop and release what they
    hold."""
    if threads <= 1:
        for item in items:
            yield iter(read(item))
        return
    ahead = _Ahead(items, read, threads, max_bytes)
    try:
        for index in range(len(items)):
            ahead.enter(index)
            yield ahead.recordings(ahead.slots[index])
    finally:
        ahead.stop()
