"""`ghostnet-pipeline demo` end to end: fresh samples, shipped models, local Ray, Parquet, accuracy."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from ghostnet import WeightsError
from ghostnet.pretrained import PRETRAINED, create_pretrained, pretrained_path
from jobs import samples
from jobs.cli import main
from pipeline.analytics import query


def test_shipped_weights_match_their_pins_and_labels() -> None:
    for name, entry in PRETRAINED.items():
        path = pretrained_path(name)
        assert path.stat().st_size <= 5 * 2**20
        model = create_pretrained(name)
        assert model.weights_sha256 == entry.sha256
        assert model.meta.labels == entry.labels
        assert model.meta.modality == entry.modality
    assert PRETRAINED["demo-image"].labels == samples.IMAGE_CLASSES
    assert PRETRAINED["demo-audio"].labels == samples.AUDIO_CLASSES


def test_a_changed_file_fails_its_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from ghostnet import pretrained

    wrong = dataclasses.replace(PRETRAINED["demo-image"], sha256="0" * 64)
    monkeypatch.setitem(pretrained.PRETRAINED, "demo-image", wrong)
    with pytest.raises(WeightsError, match="expected 0000"):
        pretrained_path("demo-image")


def test_demo_labels_both_modalities_accurately(tmp_path, capsys) -> None:
    """README, The demo: labels both modalities, prints accuracy and queries to paste; every printed
    query command runs with what the package installs (no `duckdb` CLI) and prints rows."""
    assert main(["demo", "--output", str(tmp_path), "--count", "24", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    accuracies = [float(a) for a in re.findall(r"accuracy: ([0-9.]+) \(", out)]
    assert len(accuracies) == 2 and all(a >= 0.9 for a in accuracies), out
    assert "per window" in out and "demo models trained" in out
    [(rows,)] = query(str(tmp_path / "output"), "SELECT count(*) FROM predictions").rows
    assert rows >= 48

    commands = [shlex.split(line) for line in out.splitlines() if " query " in line and line.startswith("  ")]
    assert len(commands) == 3, out
    for command in commands:
        assert command[-3] == "query" and command[-2] == str(tmp_path / "output"), command
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "(0 rows)" not in done.stdout and re.search(r"\(\d+ rows?\)", done.stdout), done.stdout
