"""``ghostnet-pipeline migrate OUTPUT``: adopt an output of the old layout into Delta tables.

Exit codes: 0 migrated (or nothing left to migrate), 2 usage error (no such output, nothing of
the old layout in it).
"""

from __future__ import annotations

import argparse
import sys

from jobs._command import Command
from pipeline import storage
from pipeline.migrate import migrate

EXAMPLE = """example:
  ghostnet-pipeline migrate s3://labels/photos

Data files are not rewritten: each committed run's files are added to the predictions and
channel_stats Delta tables as its record lists them. Running it again adds nothing twice.
exit codes: 0 migrated, 2 usage error
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUTPUT", help="the output root written by an earlier version")


def execute(args: argparse.Namespace) -> int:
    done = migrate(args.output)
    print(f"migrated {len(done.runs)} runs ({done.files} files, {done.rows} prediction rows) into the Delta tables "
          f"of {storage.redact_uri(args.output)}")
    if done.already:
        print(f"  {len(done.already)} runs were migrated before")
    if done.unlisted:
        print(f"  left alone: {len(done.unlisted)} data files no run record lists (never published), "
              f"e.g. {done.unlisted[0]}")
    return 0


COMMAND = Command(
    name="migrate",
    help="adopt an output of the old layout into Delta tables",
    description="Add the committed files of an old-layout output to Delta tables, without rewriting them.",
    example=EXAMPLE,
    add_arguments=add_arguments,
    handler=execute,
)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
