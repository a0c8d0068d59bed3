"""A run seen from outside: its metrics scraped from the node's Prometheus endpoint while it runs, over
HTTP on loopback, from a private Ray whose metrics export port is set; once with a real Prometheus
server scraping it.

Backs docs/operations.md, "Metrics": the run exports its counts through Ray's metrics API under the
names listed there, they rise while it runs, and their final values are what it committed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from pipeline.config import RunConfig
from pipeline.record import STAGES
from pipeline.run import run
from tests import corpus
from tests.conftest import free_port
from tests.output import committed

ROOT = Path(__file__).resolve().parents[2]
SERIES = re.compile(r'^(?P<name>[a-z_]+)\{(?P<labels>.*)\} (?P<value>\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def metrics_port(ray_local) -> int:
    """The shared local Ray's metrics port; its node reports every half second, not Ray's default 10 s."""
    return ray_local.metrics_port


def scrape(port: int, run_id: str) -> dict[tuple[str, tuple], float]:
    """The run's series on the node's endpoint, summed over Ray's per-process labels:
    {(name, ((label, value), ...)): value}."""
    text = urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5).read().decode()
    found: dict[tuple[str, tuple], float] = defaultdict(float)
    for line in text.splitlines():
        match = SERIES.match(line)
        if not match or not match["name"].startswith("ray_ghostnet_pipeline_"):
            continue
        labels = dict(LABEL.findall(match["labels"]))
        if labels.get("run_id") != run_id:
            continue
        kept = tuple(sorted((k, v) for k, v in labels.items() if k in ("status", "stage", "le")))
        found[(match["name"], kept)] += float(match["value"])
    return dict(found)


def settled(port: int, run_id: str, rows: int, stage_seconds: dict[str, float], timeout: float = 60) -> dict:
    """The run's series once the agent holds the last increments of every process (the commits',
    the workers' stage seconds) and the driver's gauges: each reaches it on its next report interval."""
    deadline = time.monotonic() + timeout
    while True:
        series = scrape(port, run_id)
        stages = by(series, "ray_ghostnet_pipeline_stage_seconds_total", "stage")
        done = (total(series, "ray_ghostnet_pipeline_rows_committed_total") == rows
                and total(series, "ray_ghostnet_pipeline_shards_planned") is not None
                and all(abs(stages.get(stage, 0.0) - seconds) <= 0.01 for stage, seconds in stage_seconds.items()))
        if done or time.monotonic() > deadline:
            return series
        time.sleep(0.5)


def by(series: dict, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (n, labels), v in series.items() if n == name}


def total(series: dict, name: str) -> float | None:
    values = [v for (n, _), v in series.items() if n == name]
    return sum(values) if values else None


def label_in_background(folder: Path, output: Path, run_id: str) -> tuple[threading.Thread, list]:
    """Shards of 2 items through batches of 1: eight commits spread over the run (with whole shards of
    4 in batches of 32, a loaded machine committed them all within one metrics report interval)."""
    result: list = []
    config = RunConfig(inputs=(str(folder),), output=str(output), model="ghostnet_050", weights="random",
                       num_classes=3, shard_size=2, batch_size=1, decode_batch_size=1, max_error_rate=1.0,
                       run_id=run_id, run_date="2026-11-30")
    thread = threading.Thread(target=lambda: result.append(run(config)), daemon=True)
    thread.start()
    return thread, result


def images(folder: Path, good: int = 14) -> None:
    folder.mkdir()
    for i in range(good):
        corpus.gradient(48, 40, seed=i).save(folder / f"p{i:02d}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all" * 10)
    (folder / "zero.png").write_bytes(b"")


def test_counters_rise_while_the_run_goes_and_end_at_what_it_committed(metrics_port, tmp_path):
    """docs/operations.md, "Metrics": rows committed per status, items per status, shards and
    per-stage seconds are scraped from the node's endpoint during the run; they rise, and their
    final values equal the committed rows; the driver's gauges are there all through the run (Ray drops
    a gauge set once within seconds: the planned ones, set before the first commit, went missing).
    Seen failing when the driver counted only ok rows committed."""
    images(tmp_path / "in")
    thread, result = label_in_background(tmp_path / "in", tmp_path / "out", "metrics-run")
    seen = []
    while thread.is_alive():
        seen.append(scrape(metrics_port, "metrics-run"))
        time.sleep(0.3)
    thread.join()
    [record] = result
    final = settled(metrics_port, "metrics-run", record.rows, record.stage_seconds)

    rows = committed(str(tmp_path / "out")).to_pylist()
    per_status = {s: sum(1 for r in rows if r["status"] == s) for s in {r["status"] for r in rows}}
    assert per_status == record.rows_per_status and set(per_status) >= {"ok", "decode_error", "empty"}
    assert by(final, "ray_ghostnet_pipeline_rows_committed_total", "status") == per_status
    assert by(final, "ray_ghostnet_pipeline_items_total", "status") == per_status  # images: one row per item
    assert total(final, "ray_ghostnet_pipeline_items_committed_total") == record.items == 16
    assert total(final, "ray_ghostnet_pipeline_shards_committed_total") == record.shards_committed == 8
    assert total(final, "ray_ghostnet_pipeline_batch_seconds_count") >= 1
    stages = by(final, "ray_ghostnet_pipeline_stage_seconds_total", "stage")
    assert set(stages) == set(STAGES) == set(record.stage_seconds)
    for stage, seconds in record.stage_seconds.items():
        assert stages[stage] == pytest.approx(seconds, abs=0.01), stage
    # It rose while the run went: scrapes between the first commit and the last saw part of the rows.
    totals = [total(s, "ray_ghostnet_pipeline_rows_committed_total") or 0 for s in seen]
    assert totals == sorted(totals), "a counter never goes down"
    part_way = [s for s, t in zip(seen, totals, strict=True) if 0 < t < record.rows]
    assert part_way, f"no scrape saw the run part way: {totals}"
    for series in part_way:
        assert total(series, "ray_ghostnet_pipeline_shards_planned") == 8
        assert total(series, "ray_ghostnet_pipeline_items_planned") == 16
        assert total(series, "ray_ghostnet_pipeline_model_actors") == record.model_actors >= 1
        assert total(series, "ray_ghostnet_pipeline_eta_seconds") >= 0
        assert total(series, "ray_ghostnet_pipeline_items_per_second") > 0
        assert total(series, "ray_ghostnet_pipeline_last_commit_timestamp_seconds") <= time.time()


@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="no Prometheus server here (Debian: apt-get install prometheus)")
def test_a_real_prometheus_scrapes_the_run(metrics_port, tmp_path):
    """docs/operations.md, "Metrics": infra/prometheus/prometheus.yaml's scrape job, with a static
    target in place of the Kubernetes discovery, lets Prometheus store the run's series under the
    documented names, and PromQL over them gives the committed rows per status."""
    images(tmp_path / "in", good=6)
    config = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yaml").read_text())
    job = config["scrape_configs"][0]
    job.pop("kubernetes_sd_configs")
    job["relabel_configs"] = []
    job["static_configs"] = [{"targets": [f"127.0.0.2:{metrics_port}"]}]
    job["scrape_interval"] = "1s"
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [job]}
    (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yaml'}",
                               f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        thread, result = label_in_background(tmp_path / "in", tmp_path / "out", "prometheus-run")
        thread.join()
        [record] = result
        query = 'sum by (status) (ray_ghostnet_pipeline_rows_committed_total{run_id="prometheus-run"})'
        deadline, found = time.monotonic() + 30, {}
        while time.monotonic() < deadline and found != record.rows_per_status:
            time.sleep(1)
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
            try:
                answer = json.loads(urllib.request.urlopen(url, timeout=5).read())
            except OSError:
                continue  # not listening yet
            found = {r["metric"]["status"]: int(float(r["value"][1])) for r in answer["data"]["result"]}
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert found == record.rows_per_status == {"ok": 6, "decode_error": 1, "empty": 1}
