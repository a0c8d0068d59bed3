"""``--dry-run`` and manifests that cannot be read: the plan is printed, nothing is started or written.

Backs README, "Labeling a bucket": `--dry-run` prints the plan and starts nothing; and the exit
codes: a malformed manifest row is a usage error (2) naming the row and column, nothing written.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from jobs import cli
from pipeline import delta, discover
from pipeline import plan as plans
from pipeline.config import RunConfig
from pipeline.fencing import Host
from pipeline.nightly import nightly_plan
from pipeline.record import RunRecord
from pipeline.run import PlanSummary, label, model_spec
from pipeline.tables import OutputLayout
from tests import corpus
from tests.analytics import synthetic
from tests.protocol.world import DirectEngine


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        corpus.gradient(32, 24, seed=i).save(folder / f"p{i}.png")
    (folder / "readme.txt").write_text("not an item")


def test_dry_run_prints_the_plan_as_json_and_writes_nothing(tmp_path, capsys):
    images(tmp_path / "in", 7)
    output = tmp_path / "out"
    identity = "random-seed-0:image:3x3"
    labeled = synthetic.predictions("earlier", {"ok": 2}, weights=identity, model="ghostnet_050",
                                    prefix=str(tmp_path / "in"))
    uris = [str(tmp_path / "in" / f"p{i}.png") for i in range(2)]
    stats = [(tmp_path / "in" / f"p{i}.png").stat() for i in range(2)]
    etags = [f"mtime-{int(s.st_mtime * 1e9)}" for s in stats]  # the local etag discovery gives
    labeled = labeled.set_column(0, "uri", [uris]).set_column(1, "etag", [etags])
    labeled = labeled.set_column(2, "size_bytes", [[s.st_size for s in stats]])
    synthetic.commit_run(str(output), "earlier", labeled, synthetic.channel_stats("earlier", {}),
                         weights=identity)
    before = tree(output)

    code = cli.main(["run", "--input", str(tmp_path / "in"), "--output", str(output), "--model", "ghostnet_050",
                     "--weights", "random", "--num-classes", "3", "--shard-size", "2", "--dry-run",
                     "--format", "json"])

    plan = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (plan["items_listed"], plan["already_labeled"], plan["to_label"]) == (7, 2, 5)
    assert plan["not_items"] == {".txt": 1} and plan["objects_listed"] == 8
    assert 3 <= plan["shards"] <= 4 and plan["estimated_files"] == plan["shards"]
    assert plan["estimated_bytes"] > 0
    assert tree(output) == before, "nothing written to the output"


def test_a_malformed_manifest_row_is_a_usage_error_naming_it(tmp_path, capsys):
    manifest = tmp_path / "inventory.csv"
    manifest.write_text("uri,etag,size_bytes\ns3://b/a.jpg,e1,10\ns3://b/c.jpg,e2,ten\n")

    code = cli.main(["run", "--input", str(manifest), "--output", str(tmp_path / "out"), "--model", "ghostnet_050",
                     "--weights", "random"])

    err = capsys.readouterr().err
    assert code == 2 and "malformed row at line 3, column 3" in err and "'ten'" in err, err
    assert not (tmp_path / "out").exists()


def test_a_nightly_dry_run_says_exactly_what_the_nightly_then_does(tmp_path):
    """#26: `nightly --dry-run` on a night already committed said there were items to label, while
    the nightly itself labels nothing. Each dry run here is followed by the nightly's own attempt
    (the commit path without Ray: the schedule checker's direct engine) on the same inputs."""
    folder, output = tmp_path / "in", tmp_path / "out"
    config = RunConfig(inputs=(str(folder),), output=str(output), model="ghostnet_050", weights="random",
                       num_classes=3, shard_size=2, run_date="2026-12-01")

    def dry_then_real(night: str) -> tuple[PlanSummary, RunRecord]:
        night_config = config.replace(run_date=night)
        [plan] = nightly_plan(night_config)
        layout = OutputLayout.of(str(output))
        work = tmp_path / f"work-{night}-{secrets.token_hex(2)}"
        listing = plans.spill_listing(discover.list_inputs(night_config.inputs), work / "listing", ["image"])
        record = label(night_config, model_spec(night_config), kind="nightly", layout=layout,
                       tables_=delta.open_tables(layout), listing=listing, work=work / "image", host=Host(), labels=3,
                       engine=lambda run_id, listing_s, plan_s: DirectEngine(layout, 1))
        return plan, record

    images(folder, 5)
    plan, night = dry_then_real("2026-12-01")
    assert plan.to_label == night.items == 5 and plan.shards == night.shards_committed == 3

    for i in (5, 6):  # two new pictures, after the night committed
        corpus.gradient(32, 24, seed=i).save(folder / f"p{i}.png")
    plan, again = dry_then_real("2026-12-01")
    assert plan.to_label == again.items == 0 and plan.shards == 0
    assert plan.nothing_because == again.error and "already committed" in plan.nothing_because

    plan, next_night = dry_then_real("2026-12-02")
    assert plan.to_label == next_night.items == 2 and plan.already_labeled == 5 and plan.nothing_because is None
