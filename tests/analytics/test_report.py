"""The run report on synthetic committed runs: sections, a self-contained page, escaping, exit codes.

Backs docs/analytics.md, "The run report".
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from scipy.spatial.distance import jensenshannon

from analytics import report
from jobs import report as report_cli
from pipeline.record import STAGES
from tests.analytics import synthetic

STAGE_SECONDS = {"listing": 0.5, "plan": 0.25, "fetch": 3.0, "decode": 6.125, "model": 2.0, "write": 1.0,
                 "commit": 0.375}
LAYERS = {f"blocks.{i}.0.se": 8 * i for i in range(1, 12)}
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("report") / "out")
    synthetic.commit_run(root, "r1", synthetic.predictions("r1", {"ok": 20, "decode_error": 2}, seed=1),
                         synthetic.channel_stats("r1", synthetic.gates(LAYERS, 0)))
    hostile = synthetic.predictions("r2", {"ok": 30, "empty": 1}, prefix=f"/in/{HOSTILE}")
    synthetic.commit_run(root, "r2", hostile, synthetic.channel_stats("r2", synthetic.gates(LAYERS, 5)),
                         minutes=5, stages=STAGE_SECONDS, model_actors=2, model_busy=0.25)
    synthetic.commit_run(root, "all-failed", synthetic.predictions("all-failed", {"decode_error": 3}),
                         synthetic.channel_stats("all-failed", {}), minutes=10)
    return root


def test_latest_run_by_default_with_every_section(output):
    """docs/analytics.md, "The run report": every section, in order, with a figure when the
    run has something to show."""
    built = report.build(output, run_id="r2")

    assert built.run.run_id == "r2" and built.previous_run_id == "r1"
    assert [s.slug for s in built.sections] == [
        "status", "labels", "scores", "throughput", "stages", "channel_weights", "drift", "label_drift"]
    assert all(s.png and s.png.startswith(b"\x89PNG") for s in built.sections)
    drift = built.sections[-2]
    assert len(drift.rows) == len(LAYERS) and [r[0] for r in drift.rows][:3] == [
        "blocks.1.0.se", "blocks.2.0.se", "blocks.3.0.se"], "layers in network order"
    assert report.build(output).run.run_id == "all-failed"


def test_a_run_without_ok_rows_gets_notes_instead_of_empty_plots(output):
    """docs/analytics.md, "The run report": a run with nothing to plot says so instead."""
    built = report.build(output, run_id="all-failed")

    by_slug = {s.slug: s for s in built.sections}
    assert by_slug["status"].png and by_slug["status"].rows[0][:2] == ("decode_error", 3)
    for slug in ("labels", "scores", "stages", "channel_weights", "drift", "label_drift"):
        assert by_slug[slug].png is None and by_slug[slug].note


def test_page_is_self_contained_and_escaped(output, tmp_path):
    """docs/analytics.md, "The run report": one self-contained page, every value escaped;
    --png-dir writes NN-name.png."""
    page_path = tmp_path / "report.html"
    report.write(output, str(page_path), run_id="r2", png_dir=str(tmp_path / "png"))
    page = page_path.read_text()

    assert page.count('src="data:image/png;base64,') == 8
    links = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page)
    assert len(links) == 8 and all(link.startswith("data:image/png;base64,") for link in links)
    assert "url(" not in page and "@import" not in page, "nothing to fetch"
    assert "<script" not in page and "&lt;script&gt;" in page
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "01-status.png", "02-labels.png", "03-scores.png", "04-throughput.png", "05-stages.png",
        "06-channel_weights.png", "07-drift.png", "08-label_drift.png"]


def test_cli_exit_codes(output, tmp_path, capsys):
    """docs/analytics.md, "The run report": the CLI writes the latest run's page; an unknown run or output exits 2."""
    page = tmp_path / "page.html"
    assert report_cli.COMMAND.main([output, "--out", str(page)]) == 0
    assert f"wrote {page}: run all-failed" in capsys.readouterr().out
    assert report_cli.COMMAND.main([output, "--run-id", "nope", "--out", str(page)]) == 2
    assert "no committed run 'nope'" in capsys.readouterr().err
    assert report_cli.COMMAND.main([str(tmp_path), "--out", str(page)]) == 2
    assert "has no committed run" in capsys.readouterr().err


def ok_labels(rows) -> dict[str, int]:
    labels = [r["label"] for r in rows.to_pylist() if r["status"] == "ok"]
    return {label: labels.count(label) for label in set(labels)}


def test_stage_breakdown_and_label_drift_sections_hold_the_records_numbers(output):
    """docs/analytics.md, "The run report": where the time went (seconds per stage, model actors' busy
    share, what bound the run) and the label drift against the previous run (ok rows per label, JS
    divergences in bits)."""
    by_slug = {s.slug: s for s in report.build(output, run_id="r2").sections}

    stages = by_slug["stages"]
    assert stages.rows == [(stage, f"{STAGE_SECONDS[stage]:.3f}") for stage in STAGES]
    assert stages.note == "2 model actors, busy 25.0% of the inference time; bound by: decode."

    drift = by_slug["label_drift"]
    this = ok_labels(synthetic.predictions("r2", {"ok": 30, "empty": 1}))
    before = ok_labels(synthetic.predictions("r1", {"ok": 20, "decode_error": 2}, seed=1))
    labels = sorted(set(this) | set(before))
    assert {row[0]: row[1:] for row in drift.rows} == {
        label: (this.get(label, 0), before.get(label, 0)) for label in labels}
    assert [row[1] for row in drift.rows] == sorted((row[1] for row in drift.rows), reverse=True)
    label_js = jensenshannon([this.get(k, 0) for k in labels], [before.get(k, 0) for k in labels], base=2) ** 2
    assert label_js > 0.001 and f"Jensen-Shannon divergence {label_js:.4f} bits between the top-1 label" in drift.note
    assert drift.note.startswith("Against run r1: ") and drift.png.startswith(b"\x89PNG")

    first = {s.slug: s for s in report.build(output, run_id="r1").sections}
    assert first["stages"].note == "The run record has no stage breakdown." and first["stages"].png is None
    assert "nothing to compare with" in first["label_drift"].note and first["label_drift"].png is None


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def screenshot(page: Path, png: Path, profile: Path) -> None:
    """Render ``page`` in headless Chromium, offline, into ``png``."""
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): cannot screenshot the report")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         f"--screenshot={png}", "--window-size=1200,3000", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )


# Colours the report's figures draw with (analytics/report.py): ok rows' bar, label bars and histograms.
FIGURE_COLOURS = {"the ok bar of the status figure": (0x3A, 0x8D, 0x5D),
                  "the label bars and score histogram": (0x4F, 0x81, 0xBD)}


def assert_screenshot_shows_the_report(png: Path) -> None:
    """The browser drew the page: full size, text on it, and the figures' own colours in it (a page
    whose images failed to load shows alt text and broken-image icons, none of these colours)."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as shot:
        assert shot.size == (1200, 3000)
        rgb = np.asarray(shot.convert("RGB")).astype(int)
    dark = (rgb.max(axis=2) < 100).mean()
    assert dark > 0.002, f"only {dark:.4%} of the screenshot is dark: no text or axes drawn"
    assert (rgb.min(axis=2) > 245).mean() < 0.95, "the screenshot is (almost) blank"
    for what, colour in FIGURE_COLOURS.items():
        pixels = int((np.abs(rgb - colour).max(axis=2) <= 6).sum())
        assert pixels > 2000, f"{what} is not in the screenshot ({pixels} pixels of {colour})"


def test_report_renders_in_a_browser(output, tmp_path):
    """docs/analytics.md, "The run report": the page renders offline in a browser, figures drawn."""
    page, png = tmp_path / "report.html", tmp_path / "report.png"
    report.write(output, str(page), run_id="r2")

    screenshot(page, png, tmp_path / "profile")

    assert_screenshot_shows_the_report(png)


def test_models_side_by_side_only_when_the_output_holds_another_model(output, tmp_path):
    """docs/analytics.md, "The run report": with a second (model, weights) in the output, a last section
    compares the run's model with it (agreement, confusion matrix, score histograms); with one, none."""
    assert "models" not in [s.slug for s in report.build(output, run_id="r2").sections]

    root = str(tmp_path / "two")
    candidate = "c0ffee" * 10 + "abcd"
    runs = {"prod": (synthetic.WEIGHTS, 1), "cand": (candidate, 2)}
    for minutes, (run_id, (weights, seed)) in enumerate(runs.items()):
        rows = synthetic.predictions(run_id, {"ok": 12, "decode_error": seed - 1}, weights=weights, seed=seed)
        synthetic.commit_run(root, run_id, rows, synthetic.channel_stats(run_id, synthetic.gates(LAYERS, seed),
                                                                         weights=weights),
                             minutes=minutes, weights=weights)
    prod, cand = (ok_labels_in_order(run_id, seed, weights) for run_id, (weights, seed) in runs.items())
    agreed = sum(x == y for x, y in zip(cand, prod, strict=True))

    built = report.build(root, run_id="cand")

    assert [s.slug for s in built.sections][-2:] == ["label_drift", "models"]
    models = built.sections[-1]
    assert models.png.startswith(b"\x89PNG")
    assert models.rows == [(f"{synthetic.MODEL}@{synthetic.WEIGHTS}", 12, f"{agreed / 12:.1%}", "1.000 (k = 4)",
                            1, 0, 0, 0, 0)], "decode_error-000: only the candidate labeled it"
    assert models.note.startswith(f"A is this run's model {synthetic.MODEL}@{candidate[:12]}, B the other model")
    assert f"12 rows compared, top-1 agreement {agreed / 12:.1%}" in models.note
    page = report.render_html(built)
    assert page.count('src="data:image/png;base64,') == len(built.figures) and built.figures[-1] is models
    assert '<section id="models"><h2>Models side by side</h2>' in page


def ok_labels_in_order(run_id: str, seed: int, weights: str) -> list[str]:
    rows = synthetic.predictions(run_id, {"ok": 12}, weights=weights, seed=seed).to_pylist()
    return [r["label"] for r in rows]
