"""``ghostnet-pipeline submit`` against a real two-node Ray cluster on loopback, started with
``infra/local/start-cluster.sh`` and stopped by PID with ``stop-cluster.sh``; plus the checks
that happen before anything is sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from ray.job_submission import JobStatus, JobSubmissionClient
from ray.util.state import list_nodes

from jobs import cli, submit
from tests.jobs import cluster as local_cluster

ROOT = Path(__file__).resolve().parents[2]
MODEL_ARGS = ["--model", "ghostnet_050", "--weights", "random", "--num-classes", "4"]
MODEL_NODE = "model_node"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> Iterator[local_cluster.LocalCluster]:
    # Three nodes; only the first worker advertises the custom resource the model actors ask for.
    with local_cluster.running(tmp_path_factory.mktemp("cluster"), workers=2, num_cpus=2, object_store_mb=256,
                               worker_resources=json.dumps({MODEL_NODE: 1})) as running:
        yield running


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        Image.new("RGB", (48 + 8 * i, 40), color=(40 * i, 255 - 40 * i, 90)).save(folder / f"img_{i}.png")
    return folder


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    """``ghostnet-pipeline`` in a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "jobs.cli", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)


def job_count(address: str) -> int:
    return len(JobSubmissionClient(address).list_jobs())


# --- against the cluster ------------------------------------------------------------------------

@pytest.mark.cluster
def test_cluster_has_three_nodes_on_loopback(ray_cluster):
    assert ray_cluster.node_ips == ("127.0.0.3", "127.0.0.4", "127.0.0.5")
    nodes = sorted(list_nodes(address=ray_cluster.dashboard_url), key=lambda n: n.node_ip)
    assert [(n.node_ip, n.state, n.is_head_node) for n in nodes] == [
        ("127.0.0.3", "ALIVE", True), ("127.0.0.4", "ALIVE", False), ("127.0.0.5", "ALIVE", False)]
    for node in nodes:
        assert node.resources_total["CPU"] == 2
        assert node.resources_total["object_store_memory"] == 256 * 2**20
    assert [n.resources_total.get(MODEL_NODE) for n in nodes] == [None, 1, None]
    # pids: "PID <start time, 5 words> COMMAND ARGS..." per recorded process
    programs = [line.split()[6] for line in (ray_cluster.state_dir / "pids").read_text().splitlines()]
    assert sum(p.endswith("/gcs_server") for p in programs) == 1
    assert sum(p.endswith("/raylet") for p in programs) == 3


@pytest.mark.cluster
def test_submitted_run_decodes_on_the_cluster_and_predicts_on_the_model_node(ray_cluster, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(96):
        Image.new("RGB", (40 + i, 36), color=(2 * i, 200 - 2 * i, 90)).save(images / f"img_{i:02d}.png")
    output = tmp_path / "out"
    done = run_cli("submit", "--address", ray_cluster.dashboard_url, "--",
                   "run", "--input", str(images), "--output", str(output), *MODEL_ARGS,
                   "--actor-resources", json.dumps({MODEL_NODE: 1}), "--decode-batch-size", "8")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    job_id = lines[0]
    assert lines[-1] == f"job {job_id} SUCCEEDED"
    assert "INFO" not in done.stderr  # Ray's packaging chatter stays out without -v

    records = list((output / "_runs").glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["rows_per_status"] == {"ok": 96}
    # Ray Data's per-node task counts, as the run recorded them: decode tasks on the cluster's nodes,
    # model calls only on the node with the custom resource. How far decoding spreads is Ray's call
    # (SPREAD is best effort): one full run here put all 12 decode tasks on the head node.
    placement = record["tasks_per_node"]
    decode = next(tasks for op, tasks in placement.items() if "read_and_decode" in op)
    model = next(tasks for op, tasks in placement.items() if "ModelStage" in op)
    assert sum(decode.values()) == 12 and set(decode) <= set(ray_cluster.node_ips), placement
    assert list(model) == ["127.0.0.4"], placement
    info = JobSubmissionClient(ray_cluster.dashboard_url).get_job_info(job_id)
    assert info.entrypoint.startswith("python -m jobs.run --input ")
    assert info.runtime_env["working_dir"].startswith("gcs://")  # the project travelled with the job
    assert info.metadata["command"] == "run"


@pytest.mark.cluster
def test_failed_job_fails_submit(ray_cluster, tmp_path, capsys):
    # Our parser accepts the missing folder; the job finds out on the cluster.
    code = cli.main(["submit", "--address", ray_cluster.dashboard_url, "--",
                     "run", "--input", str(tmp_path / "nonexistent"), "--output", str(tmp_path / "out"),
                     *MODEL_ARGS])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[-1] == f"job {out[0]} FAILED"
    assert not (tmp_path / "out" / "_runs").exists()


@pytest.mark.cluster
def test_no_wait_prints_id_and_follow_ups_without_the_password(ray_cluster, tmp_path, capsys):
    address = ray_cluster.dashboard_url.replace("http://", "http://ops:hunter2@")
    code = cli.main(["submit", "--no-wait", "--address", address, "--submission-id", "gp-no-wait", "--",
                     "run", "--input", str(tmp_path / "nonexistent"), "--output", str(tmp_path / "out"),
                     *MODEL_ARGS])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out == "gp-no-wait\n"
    assert "ray job status gp-no-wait --address" in captured.err
    assert "ray job stop gp-no-wait --address" in captured.err
    assert "hunter2" not in captured.out + captured.err
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    assert client.get_job_info("gp-no-wait").entrypoint.startswith("python -m jobs.run ")
    client.stop_job("gp-no-wait")  # it would fail anyway; no need to spend the CPU on it
    assert submit._wait_until_done(client, "gp-no-wait").status in (JobStatus.STOPPED, JobStatus.FAILED)


@pytest.mark.cluster
def test_typo_is_a_usage_error_and_submits_nothing(ray_cluster, images, tmp_path, capsys):
    before = job_count(ray_cluster.dashboard_url)
    with pytest.raises(SystemExit) as exited:
        cli.main(["submit", "--address", ray_cluster.dashboard_url, "--",
                  "run", "--inptu", str(images), "--output", str(tmp_path), *MODEL_ARGS])
    assert exited.value.code == 2
    assert "unrecognized arguments: --inptu" in capsys.readouterr().err
    assert job_count(ray_cluster.dashboard_url) == before


@pytest.mark.cluster
def test_credentials_in_runtime_env_are_refused(ray_cluster, images, tmp_path, capsys):
    env_file = tmp_path / "env.yaml"
    env_file.write_text("env_vars:\n  AWS_SECRET_ACCESS_KEY: sk-not-here\n")
    before = job_count(ray_cluster.dashboard_url)
    code = cli.main(["submit", "--address", ray_cluster.dashboard_url, "--runtime-env", str(env_file), "--",
                     "run", "--input", str(images), "--output", str(tmp_path / "out"), *MODEL_ARGS])
    assert code == 2
    err = capsys.readouterr().err
    assert "AWS_SECRET_ACCESS_KEY" in err and "sk-not-here" not in err
    assert job_count(ray_cluster.dashboard_url) == before


# --- before anything is sent --------------------------------------------------------------------

@pytest.mark.parametrize("job, message", [
    ([], "no job given"),
    (["--", "walk"], "must be `run` or `nightly`"),
    (["--", "run", "--input", "/in", "--output", "/out"], "missing --model"),
    (["--", "nightly", "--input", "/in", "--output", "/out", "--model", "m"], "--date"),
    (["--", "nightly", "--input", "/in", "--output", "/out", "--model", "m", "--date", "2026-02-30"],
     "not a date"),
    (["--", "run", "--input", "/in", "--output", "/out", "--model", "m", "--address", "auto"],
     "--address belongs before"),
    (["--", "run", "--input", "s3://key:pw@bucket/in", "--output", "/out", "--model", "m"],
     "carries a password"),
])
def test_usage_errors_exit_2_before_connecting(job, message, capsys):
    # Port 9 (discard) has no job server: reaching it would be exit 1, not 2.
    assert cli.main(["submit", "--address", "http://127.0.0.1:9", *job]) == 2
    err = capsys.readouterr().err
    assert message in err and ":pw@" not in err


def test_no_address_is_a_usage_error(monkeypatch, capsys):
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["submit", "--", "run", "--input", "/in", "--output", "/out", "--model", "m"]) == 2
    assert "--address" in capsys.readouterr().err


def test_unreachable_job_server_exits_1_after_retrying_for_the_time_given(capsys):
    assert cli.main(["submit", "--address", "http://127.0.0.1:9", "--retry-for", "2", "--",
                     "run", "--input", "/in", "--output", "/out", "--model", "m"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "submitting `run` to http://127.0.0.1:9"
    assert err[1].startswith("note: the job server at http://127.0.0.1:9 is not ready (Failed to connect")
    assert err[-1].startswith("error: the job server at http://127.0.0.1:9 did not take the job")
    assert len(err) == 3  # one retry: the next would end after the 2 s


NO_AGENT = RuntimeError("Request failed with status code 500: No available agent to submit job, please try again "
                        "later..")
ID_TAKEN = RuntimeError("Request failed with status code 500: Traceback (most recent call last):\n  ...\n"
                        "RuntimeError: Request failed with status code 400: Job with submission_id x already exists. "
                        "Please use a different submission_id...")


@pytest.mark.parametrize("exc, transient", [
    (ConnectionError("Failed to connect to Ray at address: http://head:8265."), True),
    (NO_AGENT, True),
    (RuntimeError("Request failed with status code 503: Service Unavailable."), True),
    (ID_TAKEN, False),
    (RuntimeError("Request failed with status code 400: bad entrypoint."), False),
    (RuntimeError("Version check returned 404. Please ensure the cluster is running Ray 1.9 or higher."), False),
])
def test_transient_answers_are_told_from_refusals(exc, transient):
    assert submit.transient(exc) is transient


def test_retries_back_off_saying_so_until_the_call_succeeds(capsys):
    answers: list = [ConnectionError("Failed to connect to Ray at address: http://head:8265."), NO_AGENT, "job-1"]
    sleeps: list[float] = []

    def call(retried: bool):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return retried, answer

    assert submit.with_retries(call, "http://head:8265", 60, sleep=sleeps.append) == (True, "job-1")
    assert sleeps == [1.0, 2.0]
    notes = capsys.readouterr().err.splitlines()
    assert [n.split(" (")[0] for n in notes] == ["note: the job server at http://head:8265 is not ready"] * 2
    assert "No available agent" in notes[1] and "--retry-for" in notes[1]


@pytest.mark.parametrize("exc, budget_s", [(ID_TAKEN, 60), (NO_AGENT, 0)], ids=["refusal", "no-time-left"])
def test_a_refusal_or_a_spent_budget_raises_at_once(exc, budget_s, capsys):
    sleeps: list[float] = []

    def call(retried: bool):
        raise exc

    with pytest.raises(RuntimeError) as raised:
        submit.with_retries(call, "http://head:8265", budget_s, sleep=sleeps.append)
    assert raised.value is exc
    assert sleeps == [] and capsys.readouterr().err == ""


def test_runtime_env_merge_theirs_wins():
    ours = submit.project_runtime_env()
    assert ours["working_dir"] == str(ROOT)
    assert {"/.venv", "/.git", "/tests", "/bench", "*.parquet", "__pycache__"} <= set(ours["excludes"])
    theirs = {"env_vars": {"HF_HUB_OFFLINE": "1"}, "excludes": ["*.ckpt"], "py_modules": ["extra"]}
    merged = submit.merge_runtime_env({**ours, "env_vars": {"A": "1", "HF_HUB_OFFLINE": "0"}}, theirs)
    assert merged["working_dir"] == str(ROOT)
    assert merged["env_vars"] == {"A": "1", "HF_HUB_OFFLINE": "1"}
    assert merged["excludes"][-1] == "*.ckpt" and "/.venv" in merged["excludes"]
    assert merged["py_modules"] == ["extra"]
    own_dir = submit.merge_runtime_env(ours, {"working_dir": "s3://bucket/code.zip"})
    assert own_dir == {"working_dir": "s3://bucket/code.zip"}


@pytest.mark.parametrize("env_vars", [
    {"AWS_SECRET_ACCESS_KEY": "x"}, {"aws_session_token": "x"}, {"HF_TOKEN": "x"},
    {"DB_PASSWORD": "x"}, {"UPSTREAM": "https://user:pw@example.com/"},
])
def test_credential_env_vars_are_refused(env_vars):
    with pytest.raises(submit.UsageError, match="credentials"):
        submit.check_no_credentials({"env_vars": env_vars})


def test_runtime_env_file_must_be_a_mapping(tmp_path):
    (tmp_path / "env.json").write_text('{"pip": ["requests"]}')
    assert submit.load_runtime_env(tmp_path / "env.json") == {"pip": ["requests"]}
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(submit.UsageError, match="mapping"):
        submit.load_runtime_env(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [\n")
    with pytest.raises(submit.UsageError, match="does not parse"):
        submit.load_runtime_env(tmp_path / "bad.yaml")
