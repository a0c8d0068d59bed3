"""``ghostnet-pipeline``: the table of contents. Each subcommand lives in its own module and
registers itself with ``register(commands)``; results go to stdout, everything else to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from jobs import demo, migrate, models, nightly, query, report, run, submit, train
from jobs._command import Command, SubcommandParser, add_logging_arguments
from pipeline import logs

# One line per subcommand, in the order `--help` lists them.
COMMANDS = (run, nightly, submit, demo, train, query, report, models, migrate)

EPILOG = (
    "exit codes: 0 success, 1 the run failed (shards committed before stay committed), 2 usage error, "
    "4 nightly --alert-drift: committed, but the drift went over the threshold"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ghostnet-pipeline",
        description="Distributed batch inference with GhostNet: object storage in, Parquet out.",
        epilog=EPILOG,
    )
    add_logging_arguments(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=SubcommandParser)
    for module in COMMANDS:
        module.COMMAND.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_format, verbose=args.verbose)
    command: Command = args.handler
    return command(args)


def entry() -> None:
    """The ``ghostnet-pipeline`` command: :func:`main`, then leave without the interpreter's teardown.

    By then every run has committed, shut its Ray down and removed its temp folders; what is left is
    unloading torch, Ray's core worker and the rest module by module, which took seconds of a small
    run's wall time here (bench/startup.py, ``exit_after_main``). Output and logs are flushed first.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entry()
