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
from pipeline.config import RunConfig, load_toml
from pipeline.nightly import nightly

EXAMPLE = """example (crontab, every night at 02:00 UTC):
  ghostnet-pipeline nightly --input s3://photos/ --output s3://labels/photos \\
      --model ghostnet_100 --weights s3://models/ghostnet_100.safetensors --date "$(date -u +%F)"
"""


# Settings of nightly's own, which a --config file may hold beside the run's.
NIGHTLY_SETTINGS = ("date", "wait")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--date", metavar="YYYY-MM-DD", help="the night to label into (required)")
    parser.add_argument("--wait", type=float, metavar="SECONDS",
                        help="wait this long for another nightly run on the output to finish (default 0: exit 3)")


def settings(args: argparse.Namespace) -> tuple[RunConfig, float]:
    """The run's config and the seconds to wait for the output, from --config and flags; flags win."""
    file = load_toml(args.config, extra=NIGHTLY_SETTINGS) if args.config else {}
    own = {name: file.pop(name) for name in NIGHTLY_SETTINGS if name in file}
    night = args.date or own.get("date")
    wait = args.wait if args.wait is not None else own.get("wait", 0.0)
    if not night:
        raise ValueError("missing --date YYYY-MM-DD (the night to label; `date` in --config)")
    if not isinstance(wait, int | float) or isinstance(wait, bool) or wait < 0:
        raise ValueError(f"--wait (`wait` in --config) must be a number of seconds, 0 or more; got {wait!r}")
    run_date = args.run_date or file.get("run_date")
    if run_date and run_date != night:
        raise ValueError("--run-date and --date disagree; nightly takes --date only")
    if args.reprocess or file.get("reprocess"):
        raise ValueError("--reprocess does not apply to nightly runs; use `run --reprocess`")
    return config_from_args(args, settings=file, run_date=night), wait


def execute(args: argparse.Namespace) -> int:
    config, wait = settings(args)
    for result in nightly(config, wait_s=wait):
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
