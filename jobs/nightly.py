"""``ghostnet-pipeline nightly`` / ``python -m jobs.nightly``: the scheduled incremental run.

Exit codes: 0 committed or nothing to add, 1 failed (what committed stays; running it again goes
on from there), 2 usage error, 4 committed but with ``--alert-drift BITS``, the night's label or
channel drift went over BITS.
"""

from __future__ import annotations

import argparse
import logging
import sys

from analytics import require
from analytics.views import run_drift
from jobs._command import Command
from jobs._errors import DRIFT
from jobs._run_config import add_run_arguments, config_from_args
from jobs._summaries import print_plan, print_summary
from pipeline.config import RunConfig, load_toml
from pipeline.errors import UsageError
from pipeline.nightly import nightly, nightly_plan
from pipeline.record import RunRecord

log = logging.getLogger("ghostnet_pipeline")

EXAMPLE = """example (crontab, every night at 02:00 UTC):
  ghostnet-pipeline nightly --input s3://photos/ --output s3://labels/photos \\
      --model ghostnet_100 --weights s3://models/ghostnet_100.safetensors --date "$(date -u +%F)" \\
      --alert-drift 0.05

exit codes: 0 committed or nothing to add, 1 failed (what committed stays), 2 usage error,
4 committed, but the label or channel drift against the previous run went over --alert-drift
"""


# Settings of nightly's own, which a --config file may hold beside the run's.
NIGHTLY_SETTINGS = ("date", "alert_drift")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    groups = add_run_arguments(parser, nightly=True)
    groups.control.add_argument("--date", metavar="YYYY-MM-DD", help="the night to label into (required)")
    groups.control.add_argument(
        "--alert-drift", metavar="BITS", type=float,
        help="after committing, exit 4 when the Jensen-Shannon divergence of the night's top-1 label distribution, "
        "or of any layer's channel weights, against the previous committed run of the same model and weights is "
        "over BITS (0..1)")


def settings(args: argparse.Namespace) -> tuple[RunConfig, float | None]:
    """The run's config and the drift alert threshold, from --config and flags; flags win."""
    file = load_toml(args.config, extra=NIGHTLY_SETTINGS) if args.config else {}
    own = {name: file.pop(name) for name in NIGHTLY_SETTINGS if name in file}
    alert = args.alert_drift if args.alert_drift is not None else own.get("alert_drift")
    if alert is not None and not 0 <= float(alert) <= 1:
        raise UsageError(f"--alert-drift {alert}: a Jensen-Shannon divergence in bits is between 0 and 1")
    night = args.date or own.get("date")
    if not night:
        raise UsageError("missing --date YYYY-MM-DD (the night to label; `date` in --config)")
    if file.get("run_date") and str(file["run_date"]) != str(night):
        raise UsageError("`run_date` in --config and the night disagree; nightly takes `date` (or --date) only")
    if file.get("reprocess") or file.get("resume"):
        raise UsageError("`reprocess` and `resume` in --config do not apply to nightly runs (a night goes on from "
                         "what it committed by itself); use `run --reprocess`")
    return config_from_args(args, settings=file, run_date=str(night)), None if alert is None else float(alert)


def execute(args: argparse.Namespace) -> int:
    config, alert = settings(args)
    if args.dry_run:
        print_plan(nightly_plan(config), args.format)
        return 0
    if alert is not None:
        require("duckdb")  # the comparison reads the output with DuckDB: refuse before the night, not after
    records = nightly(config)
    for record in records:
        print_summary(record, config.output)
    if alert is None:
        return 0
    alerts = [(record, message) for record in records if (message := drift_alert(config.output, record, alert))]
    for record, message in alerts:
        log.warning("%s", message, extra={"run_id": record.run_id, "stage": "drift"})
    return DRIFT if alerts else 0


def drift_alert(output: str, record: RunRecord, bits: float) -> str | None:
    """What went over ``bits`` for a run that labeled something tonight, or None."""
    if not record.committed or record.items == 0:
        return None
    drift = run_drift(output, record.run_id)
    over = [f"{name} drift {value:.4f} bits" for name, value in (("label", drift.label_js),
                                                                    ("channel", drift.channel_js))
            if value is not None and value > bits]
    if not over:
        return None
    return (f"drift alert: run {record.run_id} against {drift.previous_run_id}: {', '.join(over)}, over "
            f"--alert-drift {bits} (committed; see `ghostnet-pipeline query OUTPUT \"SELECT * FROM label_drift\"`)")


COMMAND = Command(
    name="nightly",
    help="incremental scheduled run, idempotent per date",
    description="Label what is new or changed since the committed runs; idempotent per --date.",
    example=EXAMPLE,
    add_arguments=add_arguments,
    handler=execute,
    usage="%(prog)s --input URI --output URI --model NAME [--weights URI] --date YYYY-MM-DD [options]",
)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
