"""``ghostnet-pipeline nightly`` / ``python -m jobs.nightly``: the scheduled incremental run.

Exit codes: 0 committed or nothing to add, 1 failed (what committed stays; running it again goes
on from there), 2 usage error, 4 committed but with ``--alert-drift BITS``, the night's label or
channel drift went over BITS, 5 committed but with ``--alert-agreement MIN``, a candidate model's
top-1 agreement with the production model over the night's items fell below MIN (5 wins over 4).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

from analytics import agreement, require
from analytics.views import run_drift
from jobs._command import Command
from jobs._errors import AGREEMENT, DRIFT
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

  with a candidate beside the production model, paged when they agree on under 90% of the night:
  ghostnet-pipeline nightly --input s3://photos/ --output s3://labels/photos --date "$(date -u +%F)" \
      --model ghostnet_100 --weights s3://models/v7.safetensors --role production \
      --model ghostnet_100 --weights s3://models/v8.safetensors --role candidate --alert-agreement 0.9

exit codes: 0 committed or nothing to add, 1 failed (what committed stays), 2 usage error,
4 committed, but the label or channel drift against the previous run went over --alert-drift,
5 committed, but a candidate's top-1 agreement with production went under --alert-agreement
"""


# Settings of nightly's own, which a --config file may hold beside the run's.
NIGHTLY_SETTINGS = ("date", "alert_drift", "alert_agreement")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    groups = add_run_arguments(parser, nightly=True)
    groups.control.add_argument("--date", metavar="YYYY-MM-DD", help="the night to label into (required)")
    groups.control.add_argument(
        "--alert-drift", metavar="BITS", type=float,
        help="after committing, exit 4 when the Jensen-Shannon divergence of the night's top-1 label distribution, "
        "or of any layer's channel weights, against the previous committed run of the same model and weights is "
        "over BITS (0..1)")
    groups.control.add_argument(
        "--alert-agreement", metavar="MIN", type=float,
        help="after committing, exit 5 when a candidate model's top-1 agreement with the production model (--role) "
        "over the night's items is below MIN (0..1)")


@dataclass(frozen=True)
class Alerts:
    """The thresholds of nightly's alerts, None where not asked for."""

    drift: float | None = None
    agreement: float | None = None


def settings(args: argparse.Namespace) -> tuple[RunConfig, Alerts]:
    """The run's config and the alert thresholds, from --config and flags; flags win."""
    file = load_toml(args.config, extra=NIGHTLY_SETTINGS) if args.config else {}
    own = {name: file.pop(name) for name in NIGHTLY_SETTINGS if name in file}
    alert = args.alert_drift if args.alert_drift is not None else own.get("alert_drift")
    if alert is not None and not 0 <= float(alert) <= 1:
        raise UsageError(f"--alert-drift {alert}: a Jensen-Shannon divergence in bits is between 0 and 1")
    minimum = args.alert_agreement if args.alert_agreement is not None else own.get("alert_agreement")
    if minimum is not None and not 0 <= float(minimum) <= 1:
        raise UsageError(f"--alert-agreement {minimum}: a share of items, between 0 and 1")
    night = args.date or own.get("date")
    if not night:
        raise UsageError("missing --date YYYY-MM-DD (the night to label; `date` in --config)")
    if file.get("run_date") and str(file["run_date"]) != str(night):
        raise UsageError("`run_date` in --config and the night disagree; nightly takes `date` (or --date) only")
    if file.get("reprocess") or file.get("resume"):
        raise UsageError("`reprocess` and `resume` in --config do not apply to nightly runs (a night goes on from "
                         "what it committed by itself); use `run --reprocess`")
    config = config_from_args(args, settings=file, run_date=str(night))
    if minimum is not None:
        _check_roles(config)
    return config, Alerts(None if alert is None else float(alert), None if minimum is None else float(minimum))


def _check_roles(config: RunConfig) -> None:
    for what, entries in (("--model", config.models), ("--audio-model", config.audio_models)):
        roles = [e.role for e in entries]
        if entries and (roles.count("production") != 1 or "candidate" not in roles):
            raise UsageError(f"--alert-agreement compares candidates with the production model: give one {what} "
                             "--role production and at least one --role candidate (or `role` in [[models]])")


def execute(args: argparse.Namespace) -> int:
    config, alerts = settings(args)
    if args.dry_run:
        print_plan(nightly_plan(config), args.format)
        return 0
    if alerts.drift is not None or alerts.agreement is not None:
        require("duckdb")  # the comparisons read the output with DuckDB: refuse before the night, not after
    records = nightly(config)
    for record in records:
        print_summary(record, config.output)
    code = 0
    if alerts.drift is not None:
        drifted = [(record, message) for record in records
                   if (message := drift_alert(config.output, record, alerts.drift))]
        for record, message in drifted:
            log.warning("%s", message, extra={"run_id": record.run_id, "stage": "drift"})
        code = DRIFT if drifted else code
    if alerts.agreement is not None:
        disagreeing = agreement_alerts(config.output, config.run_date, alerts.agreement)
        for run_id, message in disagreeing:
            log.warning("%s", message, extra={"run_id": run_id, "stage": "agreement"})
        code = AGREEMENT if disagreeing else code
    return code


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


def agreement_alerts(output: str, night: str, minimum: float) -> list[tuple[str, str]]:
    """For each candidate model whose top-1 agreement with the production model over the items of
    night ``night`` (those its committed nightly runs labeled, whichever model, per modality) is
    under ``minimum``: (a run of the night, what to say). Roles are those the runs' records hold."""
    from analytics import Output

    runs: dict[str, list[RunRecord]] = {}
    for record in Output(output).runs():
        if record.kind == "nightly" and record.run_date == night and record.committed and record.items:
            runs.setdefault(record.modality, []).append(record)
    found = []
    for night_runs in runs.values():
        roles = {agreement.ModelIdentity(m.model, m.weights_sha256): m.role for r in night_runs for m in r.models}
        production = [i for i, role in roles.items() if role == "production"]
        if len(production) != 1:
            continue
        for candidate in (i for i, role in roles.items() if role == "candidate"):
            result = night_agreement(output, [r.run_id for r in night_runs], production[0], candidate)
            if result.top1_agreement is not None and result.top1_agreement < minimum:
                found.append((night_runs[-1].run_id, (
                    f"agreement alert: night {night}: candidate {candidate} agrees with production {production[0]} on "
                    f"{result.top1_agreement:.1%} of {result.rows} items (top-1), under --alert-agreement {minimum} "
                    f"(committed; see `ghostnet-pipeline query OUTPUT \"SELECT * FROM model_agreement\"`)")))
    return found


def night_agreement(output: str, run_ids: list[str], a: agreement.ModelIdentity,
                    b: agreement.ModelIdentity) -> agreement.Agreement:
    """How ``a`` and ``b`` labeled the items the runs ``run_ids`` labeled."""
    import duckdb

    from pipeline import storage
    from pipeline.delta import open_table
    from pipeline.tables import OutputLayout

    uri = OutputLayout.of(output).table("predictions")
    table = open_table(uri, "predictions", create=True)
    con = duckdb.connect()
    try:
        con.register("all_predictions", table.to_pyarrow_dataset(filesystem=storage.arrow_filesystem(uri)))
        ids = ", ".join("'" + run_id.replace("'", "''") + "'" for run_id in run_ids)
        con.execute("CREATE VIEW night_predictions AS SELECT * FROM all_predictions WHERE uri IN "
                    f"(SELECT uri FROM all_predictions WHERE run_id IN ({ids}))")
        return agreement.compare(con, a, b, source="night_predictions")
    finally:
        con.close()


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
