"""``ghostnet-pipeline run`` / ``python -m jobs.run``: an ad-hoc labeling run.

Exit codes: 0 committed (or nothing left to label), 1 failed (shards committed before the
failure stay committed; the same command again labels only the rest), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

from jobs._command import Command
from jobs._run_config import add_run_arguments, config_from_args
from jobs._summaries import print_plan, print_summary
from pipeline.run import plan_by_modality, run_by_modality

EXAMPLE = """examples:
  ghostnet-pipeline run --input s3://photos/2026/ --output s3://labels/photos \\
      --model ghostnet_100 --weights s3://models/ghostnet_100.safetensors --topk 5
  ghostnet-pipeline run --input s3://media/ --output s3://labels/media --modality auto \\
      --model ghostnet_100 --weights s3://models/ghostnet_100.safetensors \\
      --audio-model ghostnetv2_100 --audio-weights s3://models/sounds.safetensors
  ghostnet-pipeline run --config photos.toml --dry-run --format json

exit codes: 0 committed (or nothing left to label), 1 failed (committed shards stay; the same
command again labels only the rest), 2 usage error
"""


def execute(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.dry_run:
        print_plan(plan_by_modality(config), args.format)
        return 0
    for record in run_by_modality(config):
        print_summary(record, config.output)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)


COMMAND = Command(
    name="run",
    help="label inputs once (ad hoc)",
    description="Label images or audio with GhostNet on Ray Data; write Parquet and commit the run.",
    example=EXAMPLE,
    add_arguments=add_arguments,
    handler=execute,
    usage="%(prog)s --input URI --output URI --model NAME [--weights URI] [options]",
)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
