"""`python tests/helpers/reliability_driver.py <cli args>`: the `timbrespace-ray` CLI, unchanged, except
that with TSR_PAUSE_BEFORE_WRITE=<glob> the driver freezes itself (SIGSTOP) just before it
writes a path matching the glob, so a test can SIGKILL it at exactly that point.

Only this driver process is affected: Ray workers unpickle `Location` from the package itself.
"""
import fnmatch
import os
import signal
import sys

PATTERN = os.environ.get("TSR_PAUSE_BEFORE_WRITE")

if PATTERN:
    from timbrespace_ray.storage import Location

    _write_atomic = Location.write_atomic

    def write_atomic(self, data: bytes) -> None:
        if fnmatch.fnmatch(self.path, PATTERN):
            print(f"[reliability] pausing before writing {self.path}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        _write_atomic(self, data)

    Location.write_atomic = write_atomic

if __name__ == "__main__":
    from timbrespace_ray.cli import main

    sys.exit(main(sys.argv[1:]))
