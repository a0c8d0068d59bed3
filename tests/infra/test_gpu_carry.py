"""The carry for the GPU machine (tools/pack_ray_for_gpu_machine.sh), proven on this one.

Built for this machine's Python, unpacked with tools/unpack_carry.py into a venv that holds only
what the GPU machine holds (tools/gpu_machine_venv.py: no Ray, deltalake, DuckDB, soundfile...),
it must run the demo's image run end to end, and its deltalake and S3 client must work. That
proves the trimming (Ray without rllib, serve, tune, train, its jars and dashboard build) and the
list of what is carried. Skips when pip can neither download the wheels nor find them cached.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "tools" / "pack_ray_for_gpu_machine.sh"
NO_WHEELS = 75  # the pack script's exit code when it can neither download nor find the wheels
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
TRIMMED = ("ray/rllib/", "ray/serve/", "ray/tune/", "ray/train/", "ray/llm/", "ray/jars/", "ray/dashboard/client/")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def carry(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("carry") / f"ray-carry-py{PYTHON.replace('.', '')}.tar.xz"
    env = {**os.environ, "PIP_PYTHON": sys.executable, "TMPDIR": str(out.parent)}
    built = subprocess.run([PACK, "--python", PYTHON, "--quick", "--out", out], env=env,
                           capture_output=True, text=True, timeout=1800)
    if built.returncode == NO_WHEELS:
        pytest.skip(f"pip can neither download the wheels nor find them in .whl/: {built.stderr[-500:]}")
    assert built.returncode == 0, built.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def gpu_like_python(tmp_path_factory) -> Path:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gpu_machine_venv
    finally:
        sys.path.remove(str(ROOT / "tools"))
    venv = tmp_path_factory.mktemp("gpu-like") / "venv"
    linked = gpu_machine_venv.make_venv(venv)
    assert {"torch", "torchvision", "timm", "pyarrow", "pandas"} <= set(linked)
    return venv / "bin" / "python"


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def unpacked(carry, gpu_like_python, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("unpacked")
    done = subprocess.run([gpu_like_python, ROOT / "tools" / "unpack_carry.py", carry, dest], env=clean_environ(),
                          capture_output=True, text=True, timeout=600, check=True)
    assert "warning" not in done.stderr, done.stderr  # every requirement of what is carried is met
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", done.stdout, re.M))
    assert exports["PYTHONPATH"].strip("'") == f"{ROOT}{os.pathsep}{dest / 'site'}"
    return dest / "site"


@pytest.fixture(scope="module")
def carry_env(unpacked) -> dict[str, str]:
    return {**clean_environ(), "PYTHONPATH": f"{ROOT}{os.pathsep}{unpacked}", "HF_HUB_OFFLINE": "1",
            "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def python(interpreter: Path, code: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([interpreter, "-c", code], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_the_gpu_like_venv_has_the_machines_packages_and_not_the_carried_ones(gpu_like_python):
    probe = python(gpu_like_python, "import importlib.util as u; "
                   "print([m for m in ('ray', 'deltalake', 'soundfile', 's3fs', 'jsonschema') if u.find_spec(m)]); "
                   "import torch, torchvision, timm, pyarrow, pandas", env=clean_environ())
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_the_archive_is_trimmed_and_python_can_read_it(carry):
    with tarfile.open(carry) as tar:
        names = tar.getnames()
        members = {m.name: m for m in tar.getmembers()}
    assert not [n for n in names if n.startswith(tuple(f"site/{t}" for t in TRIMMED))]
    assert not [n for n in names if "/tests/" in n or "__pycache__" in n]
    for binary in ("site/ray/core/src/ray/raylet/raylet", "site/ray/core/src/ray/gcs/gcs_server"):
        assert members[binary].mode & 0o100, f"{binary} lost its executable bit"


def test_the_demo_image_run_works_through_the_carry(carry_env, unpacked, gpu_like_python, tmp_path):
    # `ghostnet-pipeline demo` itself: DuckDB (the analytics extra, which the carry leaves out) is
    # imported only by what reads an output back, so the CLI runs without it.
    demo = subprocess.run([gpu_like_python, "-m", "jobs.cli", "demo", "--modality", "image", "--count", "16",
                           "--output", str(tmp_path / "demo")], env=carry_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-4000:]
    assert "rows:   16 (ok 16)" in demo.stdout, demo.stdout
    assert "  accuracy: " in demo.stdout and "(16 items)" in demo.stdout
    where = python(gpu_like_python, "import ray, deltalake; print(ray.__file__, deltalake.__file__)", env=carry_env)
    assert all(path.startswith(str(unpacked)) for path in where.stdout.split()), where.stdout


def test_carried_deltalake_and_s3_client_work(carry_env, gpu_like_python, tmp_path):
    code = f"""
import pyarrow as pa, pyarrow.fs as pafs, botocore.session, s3fs
from deltalake import DeltaTable, write_deltalake
write_deltalake({str(tmp_path / 't')!r}, pa.table({{"uri": ["a", "b"], "score": [0.5, 0.25]}}))
write_deltalake({str(tmp_path / 't')!r}, pa.table({{"uri": ["c"], "score": [1.0]}}), mode="append")
table = DeltaTable({str(tmp_path / 't')!r})
# read as pipeline.storage.arrow_filesystem does: deltalake's default Python handler can abort the exit
files = pafs.SubTreeFileSystem({str(tmp_path / 't')!r}, pafs.LocalFileSystem())
print(table.version(), sorted(table.to_pyarrow_table(filesystem=files)["uri"].to_pylist()))
client = botocore.session.get_session().create_client(
    "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
print(client.meta.service_model.service_name)
"""
    probe = python(gpu_like_python, code, env=carry_env)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.split("\n")[:2] == ["1 ['a', 'b', 'c']", "s3"]
