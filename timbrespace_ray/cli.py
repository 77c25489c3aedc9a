"""`timbrespace-ray` command line."""
from __future__ import annotations

import argparse
import sys

from .errors import TimbrespaceError


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(args.output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timbrespace-ray",
        description="Timbrespace prosodic features, tokens and embeddings for speech corpora.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run on the bundled demo corpus and write a report")
    demo.add_argument("--output", default="demo_output", help="output folder (default: %(default)s)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TimbrespaceError as exc:
        print(f"timbrespace-ray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
