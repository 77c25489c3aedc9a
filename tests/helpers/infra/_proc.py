"""Low-level helpers shared by the service harnesses: ports, /proc scanning, process killing.

Everything here is deliberately dependency-free (no psutil: it is not installed in the venv;
Ray only vendors a private copy) and Linux-only (/proc).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
from pathlib import Path

LOCALHOST = "127.0.0.1"

# Ports are picked at random below the kernel's ephemeral range (32768-60999 by default), so
# they cannot be stolen by an outgoing connection's source port between "is it free?" and the
# server's bind().  A process-wide set avoids handing out the same port twice.
_PORT_LO, _PORT_HI = 15000, 32000
_handed_out: set[int] = set()
_port_lock = threading.Lock()


def _bindable(port: int) -> bool:
    # Binding the wildcard address fails if *any* address already has this port (servers in
    # Ray bind 0.0.0.0 for a few ports), so this is the stricter check.
    for host in ("0.0.0.0", LOCALHOST):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct currently-free TCP ports (not necessarily contiguous)."""
    out: list[int] = []
    with _port_lock:
        for _ in range(n * 200):
            if len(out) == n:
                break
            p = random.randrange(_PORT_LO, _PORT_HI)
            if p in _handed_out or p in out or not _bindable(p):
                continue
            out.append(p)
        if len(out) != n:
            raise RuntimeError(f"could not find {n} free ports")
        _handed_out.update(out)
    return out


def free_port_range(size: int) -> tuple[int, int]:
    """Return (lo, hi) inclusive with ``size`` contiguous free ports."""
    with _port_lock:
        for _ in range(200):
            lo = random.randrange(_PORT_LO, _PORT_HI - size)
            rng = range(lo, lo + size)
            if any(p in _handed_out for p in rng):
                continue
            if all(_bindable(p) for p in rng):
                _handed_out.update(rng)
                return lo, lo + size - 1
    raise RuntimeError(f"could not find {size} contiguous free ports")


def release_ports(ports) -> None:
    with _port_lock:
        _handed_out.difference_update(ports)


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: str | os.PathLike, n_bytes: int = 6000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<could not read {path}: {e}>"


# --------------------------------------------------------------------------------------------
# /proc scanning
# --------------------------------------------------------------------------------------------


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # process vanished, or not ours
        return None


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, sid) of ``pid`` or None if gone."""
    raw = _read(f"/proc/{pid}/stat")
    if not raw:
        return None
    # comm may contain spaces/parens: split after the last ')'
    rest = raw[raw.rfind(b")") + 2 :].split()
    return rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[3])


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _ancestors_of_self() -> set[int]:
    out = set()
    pid = os.getpid()
    while pid > 1:
        out.add(pid)
        st = proc_stat(pid)
        if st is None:
            break
        pid = st[1]
    return out


def find_processes(
    *,
    cmdline_substr: str | None = None,
    env_marker: str | None = None,
    sid: int | None = None,
) -> dict[int, str]:
    """Live processes matching ANY of the given criteria -> {pid: cmdline}.

    ``cmdline_substr``: a path that appears in the command line as a whole path component
    (followed by "/", a separator or the end, so "/tmp/x" does not match "/tmp/xy");
    ``env_marker``: a
    ``KEY=VALUE`` entry in /proc/<pid>/environ; ``sid``: session id.  The current process and
    its ancestors are never returned.
    """
    me = _ancestors_of_self()
    sub = cmdline_substr.encode() if cmdline_substr else None
    marker = env_marker.encode() if env_marker else None
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in me:
            continue
        st = proc_stat(pid)
        if st is None or st[0] in ("Z", "X"):
            continue
        cmd = _read(f"/proc/{pid}/cmdline") or b""
        hit = False
        if sub is not None and (
            sub + b"/" in cmd or sub + b"\0" in cmd or sub + b" " in cmd or cmd.endswith(sub)
        ):
            hit = True
        elif sid is not None and st[3] == sid:
            hit = True
        elif marker is not None:
            env = _read(f"/proc/{pid}/environ")
            if env and marker in env.split(b"\0"):
                hit = True
        if hit:
            found[pid] = cmd.replace(b"\0", b" ").decode("utf-8", "replace").strip()
    return found


def terminate(pids, grace_s: float = 10.0) -> list[int]:
    """SIGTERM ``pids``, wait up to ``grace_s``, SIGKILL the survivors. Returns survivors."""
    pids = [p for p in pids if alive(p)]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        pids = [p for p in pids if alive(p)]
        if not pids:
            return []
        time.sleep(0.1)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pids = [p for p in pids if alive(p)]
        if not pids:
            return []
        time.sleep(0.05)
    return pids


def kill_process_group(pgid: int, grace_s: float = 10.0) -> None:
    """SIGTERM then SIGKILL the process group ``pgid`` (one we created with setsid)."""
    members = [p for p in find_processes(sid=pgid)] + ([pgid] if alive(pgid) else [])
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in members):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def rmtree_quiet(path: str | os.PathLike) -> None:
    import shutil

    p = Path(path)
    if p.exists():
        shutil.rmtree(p, ignore_errors=True)
