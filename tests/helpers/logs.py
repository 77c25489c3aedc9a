"""The package's log lines, as the command line would print them."""
from __future__ import annotations

import contextlib
import logging


@contextlib.contextmanager
def lines_said():
    """`with lines_said() as lines:`: every message of the package's loggers meanwhile."""
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("timbrespace_ray")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
