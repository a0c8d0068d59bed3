"""``ghostnet-pipeline report`` / ``python -m jobs.report``: one run's summary as an HTML page.

Exit codes: 0 the page was written, 2 usage error (missing output, no committed run, unknown
--run-id).
"""

from __future__ import annotations

import argparse
import sys

from analytics import require
from jobs._command import Command

EXAMPLE = """examples:
  ghostnet-pipeline report s3://labels/photos --out report.html
  ghostnet-pipeline report ./out --run-id 20261127T020000Z-1a2b3c4d --out run.html --png-dir figures/

The page is self-contained (figures embedded), so it can be mailed or attached as it is.
exit codes: 0 written, 2 usage error (missing output, no committed run, unknown --run-id)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUTPUT", help="the output root the runs wrote to (path or s3://...)")
    parser.add_argument("--run-id", metavar="ID", help="the committed run to report on (default: the latest)")
    parser.add_argument("--out", metavar="FILE.html", required=True, help="where to write the page")
    parser.add_argument("--png-dir", metavar="DIR", help="also write each figure as a PNG file here")


def execute(args: argparse.Namespace) -> int:
    report = require("analytics.report").write(args.output, args.out, run_id=args.run_id, png_dir=args.png_dir)
    run = report.run
    print(f"wrote {args.out}: run {run.run_id} ({run.model}, {run.rows} rows)")
    if args.png_dir:
        print(f"  figures: {len(report.figures)} PNG files in {args.png_dir}")
    return 0


COMMAND = Command(
    name="report",
    help="HTML summary of a run, with plots",
    description="Write one committed run's summary (statuses, labels, scores, timings, "
    "channel weights, drift) as a self-contained HTML page.",
    example=EXAMPLE,
    add_arguments=add_arguments,
    handler=execute,
)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
