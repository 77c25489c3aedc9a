"""Reading what a command shows a person: run it in a pseudo-terminal, take the lines left on
the screen, and recognise Ray's own log lines among ours."""
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# what Ray writes when it speaks for itself: a forwarded worker line "(Name pid=123)", its
# Python log format "2026-11-30 08:47:31,813\tINFO file.py:12 -- ...", its C++ log format
# "[2026-11-30 08:47:31,873 E 18271 18271] core_worker.cc:2465: ..."
RAY_LINE = re.compile(r"\(\w*\s*pid=\d+|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+[A-Z]+ |"
                      r"^\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\]|SplitCoordinator|"
                      r"PlacementGroupCleaner|streaming_executor|RayDeprecationWarning")
def run_in_terminal(args: list[str], timeout_s: float) -> tuple[int, str]:
    """Run `args` with a pseudo-terminal as its stdout and stderr; (exit code, all it wrote)."""
    leader, follower = pty.openpty()
    # a terminal of 40 x 120 characters (a new pseudo-terminal has 0 x 0, and a bar fits none)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            cwd=REPO, env=env, start_new_session=True)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal closed: every process holding it has exited
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            raise TimeoutError(f"{args} ran over {timeout_s} s")
        return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(leader)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def screen_lines(raw: str) -> list[str]:
    """The lines left on the screen: a line redrawn with carriage returns shows its last
    drawing; a bar erased at its end (blanks) leaves nothing."""
    lines = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line).split("\r")
        shown = next((part for part in reversed(line) if part.strip()), "")
        lines.append(shown.rstrip())
    while lines and not lines[-1]:
        lines.pop()
    return lines
