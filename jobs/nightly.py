"""``ghostnet-pipeline nightly`` / ``python -m jobs.nightly``: the scheduled incremental run.

Exit codes: 0 committed or nothing to add, 1 failed (what committed stays; running it again goes
on from there), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

from jobs._command import Command
from jobs._errors import guarded
from jobs.label import add_run_arguments, config_from_args, print_plan, print_summary
from pipeline.config import RunConfig, load_toml
from pipeline.errors import UsageError
from pipeline.nightly import nightly, nightly_plan

EXAMPLE = """example (crontab, every night at 02:00 UTC):
  ghostnet-pipeline nightly --input s3://photos/ --output s3://labels/photos \\
      --model ghostnet_100 --weights s3://models/ghostnet_100.safetensors --date "$(date -u +%F)"
"""


# Settings of nightly's own, which a --config file may hold beside the run's.
NIGHTLY_SETTINGS = ("date",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--date", metavar="YYYY-MM-DD", help="the night to label into (required)")


def settings(args: argparse.Namespace) -> RunConfig:
    """The run's config from --config and flags; flags win."""
    file = load_toml(args.config, extra=NIGHTLY_SETTINGS) if args.config else {}
    own = {name: file.pop(name) for name in NIGHTLY_SETTINGS if name in file}
    night = args.date or own.get("date")
    if not night:
        raise UsageError("missing --date YYYY-MM-DD (the night to label; `date` in --config)")
    run_date = args.run_date or file.get("run_date")
    if run_date and str(run_date) != str(night):
        raise UsageError("--run-date and --date disagree; nightly takes --date only")
    if args.reprocess or file.get("reprocess"):
        raise UsageError("--reprocess does not apply to nightly runs; use `run --reprocess`")
    return config_from_args(args, settings=file, run_date=str(night))


def execute(args: argparse.Namespace) -> int:
    config = settings(args)
    if args.dry_run:
        print_plan(nightly_plan(config), args.format)
        return 0
    for record in nightly(config):
        print_summary(record, config.output)
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
