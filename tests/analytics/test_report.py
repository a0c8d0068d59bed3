"""The run report on synthetic committed runs: sections, a self-contained page, escaping, exit codes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from jobs import report as report_cli
from pipeline import report
from tests.analytics import synthetic

LAYERS = {f"blocks.{i}.0.se": 8 * i for i in range(1, 12)}
HOSTILE = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("report") / "out")
    synthetic.commit_run(root, "r1", synthetic.predictions("r1", {"ok": 20, "decode_error": 2}),
                         synthetic.channel_stats("r1", synthetic.gates(LAYERS, 0)))
    hostile = synthetic.predictions("r2", {"ok": 30, "empty": 1}, prefix=f"/in/{HOSTILE}")
    synthetic.commit_run(root, "r2", hostile,
                         synthetic.channel_stats("r2", synthetic.gates(LAYERS, 5)), minutes=5)
    synthetic.commit_run(root, "all-failed", synthetic.predictions("all-failed", {"decode_error": 3}),
                         synthetic.channel_stats("all-failed", {}), minutes=10)
    return root


def test_latest_run_by_default_with_every_section(output):
    built = report.build(output, run_id="r2")

    assert built.record["run_id"] == "r2" and built.previous_run_id == "r1"
    assert [s.slug for s in built.sections] == [
        "status", "labels", "scores", "throughput", "channel_weights", "drift"]
    assert all(s.png and s.png.startswith(b"\x89PNG") for s in built.sections)
    drift = built.sections[-1]
    assert len(drift.rows) == len(LAYERS) and [r[0] for r in drift.rows][:3] == [
        "blocks.1.0.se", "blocks.2.0.se", "blocks.3.0.se"], "layers in network order"
    assert report.build(output).record["run_id"] == "all-failed"


def test_a_run_without_ok_rows_gets_notes_instead_of_empty_plots(output):
    built = report.build(output, run_id="all-failed")

    by_slug = {s.slug: s for s in built.sections}
    assert by_slug["status"].png and by_slug["status"].rows[0][:2] == ("decode_error", 3)
    for slug in ("labels", "scores", "channel_weights", "drift"):
        assert by_slug[slug].png is None and by_slug[slug].note


def test_page_is_self_contained_and_escaped(output, tmp_path):
    page_path = tmp_path / "report.html"
    report.write(output, str(page_path), run_id="r2", png_dir=str(tmp_path / "png"))
    page = page_path.read_text()

    assert page.count('src="data:image/png;base64,') == 6
    links = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page)
    assert len(links) == 6 and all(link.startswith("data:image/png;base64,") for link in links)
    assert "url(" not in page and "@import" not in page, "nothing to fetch"
    assert "<script" not in page and "&lt;script&gt;" in page
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "01-status.png", "02-labels.png", "03-scores.png", "04-throughput.png", "05-channel_weights.png",
        "06-drift.png"]


def test_cli_exit_codes(output, tmp_path, capsys):
    page = tmp_path / "page.html"
    assert report_cli.main([output, "--out", str(page)]) == 0
    assert f"wrote {page}: run all-failed" in capsys.readouterr().out
    assert report_cli.main([output, "--run-id", "nope", "--out", str(page)]) == 2
    assert "no committed run 'nope'" in capsys.readouterr().err
    assert report_cli.main([str(tmp_path), "--out", str(page)]) == 2
    assert "has no committed run" in capsys.readouterr().err


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


# Colours the report's figures draw with (pipeline/report.py): ok rows' bar, label bars and histograms.
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
    page, png = tmp_path / "report.html", tmp_path / "report.png"
    report.write(output, str(page), run_id="r2")

    screenshot(page, png, tmp_path / "profile")

    assert_screenshot_shows_the_report(png)
