"""`ghostnet-pipeline demo` end to end: fresh samples, shipped models, local Ray, Parquet, accuracy."""

from __future__ import annotations

import math
import re
import shlex
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from analytics.views import query
from demo import samples
from ghostnet import WeightsError
from ghostnet.pretrained import PRETRAINED, create_pretrained, pretrained_path
from jobs.cli import main
from tests.output import committed, rows_per_run


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


def expected_rows(samples_dir: Path) -> Counter:
    """Rows the demo's inputs must give, by file name: a picture one, a clip one per window of
    1 s every 0.5 s, the last window zero-padded (pipeline.audio._cut)."""
    expected: Counter = Counter()
    for path in sorted(samples_dir.rglob("*")):
        if path.suffix in (".png", ".jpg"):
            expected[path.name] = 1
        elif path.suffix in (".wav", ".flac"):
            seconds = sf.info(path).duration
            expected[path.name] = 1 + math.ceil(round(max(0.0, seconds - 1.0) / 0.5, 6))
    return expected


# The one ERROR line Ray itself prints on a healthy run (docs/reliability.md, "Ray's own messages").
RAY_ACTOR_ARGUMENTS = re.compile(r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the "
                                 r"object store and max_restarts > 0")


@pytest.mark.ray  # the demo starts its own Ray in this process
def test_demo_labels_both_modalities_accurately(tmp_path, capfd) -> None:
    """README, The demo: labels both modalities, prints accuracy and queries to paste; every printed
    query command runs with what the package installs (no `duckdb` CLI) and prints rows. Its stderr
    (Ray's own C++ lines included: file descriptor 2 is captured) holds no ERROR line but Ray's own."""
    assert main(["demo", "--output", str(tmp_path), "--count", "24", "--seed", "7"]) == 0
    out, err = capfd.readouterr()
    errors = [line for line in err.splitlines() if re.search(r"\bERROR\b|^\[[^]]* E \d+ \d+\]", line)]
    assert [line for line in errors if not RAY_ACTOR_ARGUMENTS.search(line)] == [], err[-3000:]
    accuracies = [float(a) for a in re.findall(r"accuracy: ([0-9.]+) \(", out)]
    assert len(accuracies) == 2 and all(a >= 0.9 for a in accuracies), out
    assert "per window" in out and "demo models trained" in out
    expected = expected_rows(tmp_path / "samples")
    assert sum(1 for name in expected if name.endswith(".png") or name.endswith(".jpg")) == 24
    assert sum(1 for name in expected if name.endswith(".wav") or name.endswith(".flac")) == 24
    rows = committed(str(tmp_path / "output"))
    got = Counter(uri.rsplit("/", 1)[-1] for uri in rows["uri"].to_pylist())
    assert got == expected  # every input, each with its rows: one per picture, one per window of a clip
    assert set(rows["status"].to_pylist()) == {"ok"}
    assert sum(rows_per_run(str(tmp_path / "output")).values()) == sum(expected.values())
    [(counted,)] = query(str(tmp_path / "output"), "SELECT count(*) FROM predictions").rows
    assert counted == sum(expected.values())

    commands = [shlex.split(line) for line in out.splitlines() if " query " in line and line.startswith("  ")]
    assert len(commands) == 3, out
    for command in commands:
        assert command[-3] == "query" and command[-2] == str(tmp_path / "output"), command
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "(0 rows)" not in done.stdout and re.search(r"\(\d+ rows?\)", done.stdout), done.stdout
