"""``ghostnet-pipeline``: the table of contents. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from jobs import demo, label

EPILOG = """commands:
  run     label images or audio once (ad hoc)
  demo    generate samples and label them with a shipped model on a local Ray

exit codes: 0 success, 1 the run failed (nothing committed), 2 usage error
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ghostnet-pipeline",
        description="Distributed batch inference with GhostNet: object storage in, Parquet out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run_parser = commands.add_parser(
        "run", help="label inputs once", description=label.build_parser().description,
        epilog=label.EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    label.add_run_arguments(run_parser)
    run_parser.set_defaults(handler=label.command)
    demo.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
