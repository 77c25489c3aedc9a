"""A flaky TCP proxy on 127.0.0.1 for fault-injection tests (storage that drops connections).

Usage::

    with FlakyProxy(("127.0.0.1", s3_port), reset_rate=0.2, latency_s=(0.02, 0.1)) as proxy:
        opts = {**s3.storage_options, "endpoint_url": proxy.url}
        ...
        proxy.mode = "refuse"   # storage gone: every new connection is reset at once
        proxy.close_listener()  # storage gone: connections are refused

Behaviour, per accepted connection:

* ``latency_s=(lo, hi)``: a random delay before forwarding each *request*, i.e. the first
  client->server chunk after the server has spoken (or at connection start), so a keep-alive
  connection pays it once per request, not once per 64 KiB of an upload;
* ``reset_rate``: the share of requests whose connection is cut abruptly (``SO_LINGER 0`` -> the
  client gets a TCP RST) after a random number of further bytes (``0 .. reset_after_max``, either
  direction), so some die while the request is sent and some in the middle of a response body;
  when the exchange ends before that many bytes, the connection is cut as the next request on
  it starts (decided per request, not per connection: clients keep connections alive);
* ``mode = "refuse"``: every new connection is reset before any byte; ``mode = "silent"``: new
  connections are accepted and read but never answered (a black hole); ``mode = "ok"``: no faults.

Bounded: the proxy thread stops by itself after ``max_lifetime_s``; idle connections are closed
after ``idle_timeout_s``; ``stop()`` closes everything and joins the thread. It only ever binds
and connects to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from ._proc import LOCALHOST


@dataclass
class ProxyStats:
    connections: int = 0
    resets: int = 0  # connections cut by the fault injector (not those refused)
    refused: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    requests: int = 0  # first chunks of client requests (one per request on keep-alive)


@dataclass(eq=False)
class FlakyProxy:
    upstream: tuple[str, int]
    reset_rate: float = 0.0
    latency_s: tuple[float, float] = (0.0, 0.0)
    reset_after_max: int = 64 * 1024
    seed: int = 0
    max_lifetime_s: float = 600.0
    idle_timeout_s: float = 60.0
    mode: str = "flaky"  # "flaky" | "ok" | "refuse" | "silent"
    port: int = 0
    stats: ProxyStats = field(default_factory=ProxyStats)

    def __post_init__(self) -> None:
        if self.upstream[0] != LOCALHOST:
            raise ValueError("the proxy only forwards to 127.0.0.1")
        self._rng = random.Random(self.seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._error: BaseException | None = None
        self._started_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def start(self) -> "FlakyProxy":
        self._thread = threading.Thread(target=self._run, name="flaky-proxy", daemon=True)
        self._started_at = time.monotonic()
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start within 10 s")
        if self._error:
            raise RuntimeError(f"the proxy failed to start: {self._error!r}")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._shutdown)
            except RuntimeError:  # loop already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError("the proxy thread did not stop")

    def close_listener(self) -> None:
        """Stop accepting: new connections are refused (open ones are cut too)."""
        done = threading.Event()

        def _close():
            if self._server is not None:
                self._server.close()
            self._cut_all()
            done.set()

        self._loop.call_soon_threadsafe(_close)
        done.wait(5)

    def __enter__(self) -> "FlakyProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ event loop
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, LOCALHOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=self.max_lifetime_s)
        except asyncio.TimeoutError:
            pass  # lived long enough: stop by itself
        self._server.close()
        self._cut_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _shutdown(self) -> None:
        self._stopping.set()

    def _cut_all(self) -> None:
        for w in list(self._writers):
            _reset(w)
        self._writers.clear()

    # ------------------------------------------------------------------ connections
    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        if self.mode == "refuse":
            self.stats.refused += 1
            _reset(c_writer)
            return
        if self.mode == "silent":
            self._writers.add(c_writer)
            try:
                while await c_reader.read(65536):
                    pass
            except OSError:
                pass
            return
        try:
            u_reader, u_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), timeout=5)
        except (OSError, asyncio.TimeoutError):
            _reset(c_writer)
            return
        self._writers.update((c_writer, u_writer))
        state = {"budget": None, "last": "down", "cut": False}

        async def pump(reader, writer, up: bool) -> None:
            while not state["cut"]:
                data = await asyncio.wait_for(reader.read(65536), timeout=self.idle_timeout_s)
                if not data:
                    break
                if up and state["last"] == "down":  # a new request on this connection
                    self.stats.requests += 1
                    if self.mode == "flaky":
                        if state["budget"] is not None:
                            state["budget"] = 0  # the last exchange ended first: cut this one
                        elif self._rng.random() < self.reset_rate:
                            state["budget"] = self._rng.randint(0, self.reset_after_max)
                        if self.latency_s[1] > 0:
                            await asyncio.sleep(self._rng.uniform(*self.latency_s))
                state["last"] = "up" if up else "down"
                if state["budget"] is not None:
                    if len(data) >= state["budget"]:
                        data = data[: state["budget"]]
                        if data:
                            writer.write(data)
                            await writer.drain()
                        state["cut"] = True
                        self.stats.resets += 1
                        break
                    state["budget"] -= len(data)
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(pump(c_reader, u_writer, True)),
                 asyncio.ensure_future(pump(u_reader, c_writer, False))]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if state["cut"]:
                _reset(c_writer)
                _reset(u_writer)
            else:
                # one side finished cleanly: let the other drain briefly, then close both
                if pending:
                    await asyncio.wait(pending, timeout=5)
        except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
            pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)
            for t in tasks:  # retrieve every outcome: nothing is logged as "never retrieved"
                if not t.cancelled():
                    t.exception()
            for w in (c_writer, u_writer):
                self._writers.discard(w)
                if not w.is_closing():
                    w.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST, not a clean FIN."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        writer.transport.abort()
    except Exception:  # noqa: BLE001
        pass
