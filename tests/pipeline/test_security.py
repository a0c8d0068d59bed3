"""No secrets out, no untrusted code in, nothing written outside --output."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import ghostnet
from pipeline import record as records
from tests import corpus
from tests.conftest import SECRET_KEY


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def test_secret_never_reaches_output_logs_or_records_and_nothing_is_written_elsewhere(
    tmp_path, ray_tmp, s3fs_client, bucket
):
    """docs/reliability.md, Security: the S3 secret key never appears in the output, the Ray logs
    (kept with GHOSTNET_KEEP_RAY_LOGS and checked to exist and hold something) or the console."""
    inputs, cwd = tmp_path / "in", tmp_path / "cwd"
    for folder in (inputs, cwd):
        folder.mkdir()
    for i in range(4):
        corpus.gradient(40, 30, seed=i).save(inputs / f"p{i}.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG broken")
    before = tree(inputs)

    done = cli("run", "--input", str(inputs), "--output", f"s3://{bucket}/out", "--model", "ghostnet_050",
               "--weights", "random", "--num-classes", "3", "--max-error-rate", "0.5",
               cwd=cwd, env={"TMPDIR": ray_tmp, "GHOSTNET_KEEP_RAY_LOGS": "1"})

    assert done.returncode == 0, done.stderr[-3000:]
    assert tree(inputs) == before, "inputs untouched"
    assert tree(cwd) == {}, "nothing written in the working directory"
    written = b"".join(s3fs_client.cat_file(p) for p in s3fs_client.find(f"{bucket}/out"))
    files = [p for p in Path(ray_tmp).rglob("*") if p.is_file() and not p.is_symlink()]
    names = [p.name for p in files if p.stat().st_size > 0]
    assert any(n.startswith("python-core-driver-") for n in names), "the driver's log was kept and read"
    assert any(n.startswith("python-core-worker-") for n in names), "the workers' logs were kept and read"
    assert any(n.startswith("worker-") and n.endswith(".err") for n in names), "workers' stderr was kept"
    logs = b"".join(p.read_bytes() for p in files)
    for place, blob in {"output": written, "ray logs": logs,
                        "console": (done.stdout + done.stderr).encode()}.items():
        assert SECRET_KEY.encode() not in blob, f"secret leaked into {place}"


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Evil.marker}",))


@pytest.mark.subprocess
def test_pickle_that_would_run_code_is_refused_and_pins_are_honoured(tmp_path):
    (tmp_path / "in").mkdir()
    corpus.gradient(40, 30).save(tmp_path / "in" / "a.png")
    Evil.marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": Evil()}))
    good = tmp_path / "good.safetensors"
    ghostnet.save_weights(ghostnet.create_model("ghostnet_050", num_classes=3), good)
    base = ["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", "ghostnet_050"]

    refused = cli(*base, "--weights", str(evil), cwd=tmp_path)
    mismatch = cli(*base, "--weights", str(good), "--weights-sha256", "0" * 64, cwd=tmp_path)

    # README exit codes: a weights file that cannot be used is the user's to fix, like a wrong input (2).
    assert refused.returncode == 2 and not Evil.marker.exists()
    assert "evil.pth" in refused.stderr and "weights_only" in refused.stderr.replace("-", "_")
    assert mismatch.returncode == 2 and "sha256 mismatch" in mismatch.stderr
    assert not (tmp_path / "out" / "predictions").exists()


@pytest.mark.parametrize("value", ["2026-13-01", "../../etc", "2026-11-28/../x", ""])
def test_partition_values_are_validated(value):
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        records.validate_run_date(value)


@pytest.mark.parametrize("value", ["../escape", "a/b", "", ".hidden", "x" * 200, "run id"])
def test_run_ids_are_validated(value):
    with pytest.raises(ValueError, match="run id"):
        records.validate_run_id(value)
