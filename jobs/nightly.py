"""``ghostnet-pipeline nightly`` / ``python -m jobs.nightly``: the scheduled incremental run.

Exit codes: 0 committed or nothing to add, 1 failed (nothing committed), 2 usage error,
3 another nightly run holds the output.
"""

from __future__ import annotations

import argparse
import sys

from jobs._command import Command
from jobs._errors import guarded
from jobs.label import add_run_arguments, config_from_args, print_summary
from pipeline.nightly import nightly

EXAMPLE = """example (crontab, every night at 02:00 UTC):
  ghostnet-pipeline nightly --input s3://photos/ --output s3://labels/photos \\
      --model ghostnet_100 --weights s3://models/ghostnet_100.safetensors --date "$(date -u +%F)"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--date", metavar="YYYY-MM-DD", help="the night to label into (required)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for another nightly run on the output to finish (default: exit 3)")


def execute(args: argparse.Namespace) -> int:
    if not args.date:
        raise ValueError("missing --date YYYY-MM-DD (the night to label)")
    if args.run_date and args.run_date != args.date:
        raise ValueError("--run-date and --date disagree; nightly takes --date only")
    if args.reprocess:
        raise ValueError("--reprocess does not apply to nightly runs; use `run --reprocess`")
    for result in nightly(config_from_args(args, run_date=args.date), wait_s=args.wait):
        print_summary(result)
    return 0


def command(args: argparse.Namespace) -> int:
    return guarded(lambda: execute(args))


COMMAND = Command(
    name="nightly",
    help="incremental scheduled run, idempotent per date",
    description="Label what is new or changed since the committed runs; idempotent per --date.",
    example=EXAMPLE,
    add_arguments=add_arguments,
    handler=command,
)
build_parser = COMMAND.build_parser
register = COMMAND.register
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(COMMAND.main())
