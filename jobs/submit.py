"""``ghostnet-pipeline submit``: send a ``run`` or ``nightly`` to a Ray cluster as a Ray job.

The arguments after ``--`` are checked with the command's own parser before anything is sent,
so a typo is a usage error here, not a failed job there. The project folder travels as the
job's ``working_dir``. Credentials never travel with the job: the cluster's nodes get them
from their own environment (a Kubernetes Secret, IRSA, an instance role).

A head that is starting or loaded answers for a while with no connection or an HTTP 5xx (Ray's
"No available agent to submit job, please try again later" until the head's dashboard agent has
registered); those answers are retried with backoff for ``--retry-for`` seconds, each retry said
on stderr. Any other refusal fails at once.

Exit codes: 0 the job succeeded (with --no-wait: it was accepted), 1 it failed or was
stopped, or the job server could not be reached or refused it, 2 usage error, including
credentials the cluster refused (Ray's token authentication).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import requests
import yaml
from ray.exceptions import AuthenticationError
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

from jobs import nightly, run
from jobs._command import Command
from jobs._run_config import config_from_args
from pipeline import storage
from pipeline.errors import RunFailed, UsageError
from pipeline.record import validate_run_date

EXAMPLE = """examples:
  ghostnet-pipeline submit --address http://head:8265 -- \\
      run --input s3://photos/2026/ --output s3://labels/photos --model ghostnet_100 \\
      --weights s3://models/ghostnet_100.safetensors
  ghostnet-pipeline submit --no-wait --runtime-env env.yaml --entrypoint-num-cpus 1 -- \\
      nightly --input s3://photos/ --output s3://labels/photos --model ghostnet_100 --date 2026-11-28

The job runs `python -m jobs.run ...` (run) or `python -m jobs.nightly ...` (nightly) on the
cluster; paths in its arguments are resolved there. Logs stream here until the job ends.
"""

# command after `--` -> (module the job runs, its argument parser)
JOB_COMMANDS = {
    "run": ("jobs.run", run.COMMAND.build_parser),
    "nightly": ("jobs.nightly", nightly.COMMAND.build_parser),
}

# gitignore-style patterns, relative to the project root (Ray also honours .gitignore there).
PROJECT_EXCLUDES = [
    "/.venv", "/.git", "/tests", "/bench", "/build", "/dist", "/demo-output",
    "*.parquet", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "*.egg-info",
]

_CREDENTIAL_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|API_KEY|PRIVATE_KEY", re.I)
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^/@\s]*@")
_POLL_S = 1.0
_RETRY_FOR_S = 120.0
_FIRST_DELAY_S, _MAX_DELAY_S = 1.0, 15.0
# Ray's job client reports an HTTP answer it did not expect as "Request failed with status code N: ...";
# the head wraps its agent's answer the same way, so the last code in the text is the innermost one.
_STATUS_CODE = re.compile(r"status code (\d{3})")
_AUTH_VARIABLES = ("set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token "
                   "(or RAY_AUTH_TOKEN_PATH to a file holding it)")

T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--address", metavar="URL",
        help="the cluster's job server, e.g. http://head:8265 "
             "(default: RAY_API_SERVER_ADDRESS, then RAY_ADDRESS)")
    add("--no-wait", action="store_true",
        help="print the submission id and the follow-up commands, then return")
    add("--runtime-env", metavar="FILE", type=Path,
        help="YAML or JSON runtime_env merged over ours (yours wins; working_dir, py_modules, pip...)")
    add("--submission-id", metavar="ID", help="id for the job (default: one chosen by Ray)")
    add("--entrypoint-num-cpus", type=float, metavar="F", help="CPUs reserved for the job's driver")
    add("--entrypoint-num-gpus", type=float, metavar="F", help="GPUs reserved for the job's driver")
    add("--retry-for", type=float, metavar="S", default=_RETRY_FOR_S,
        help="seconds to keep retrying while the job server is unreachable or answers that it is not "
             f"ready (HTTP 5xx), with backoff (default {_RETRY_FOR_S:.0f}; 0: no retries)")
    add("job", nargs=argparse.REMAINDER, metavar="-- run|nightly ARGS",
        help="the command the job runs, with its arguments")


def submit(args: argparse.Namespace) -> int:
    quiet_ray_logs(verbose=getattr(args, "verbose", False))
    address = resolve_address(args.address)
    name, job_args = split_job(args.job)
    check_job_arguments(name, job_args)
    for flag in ("entrypoint_num_cpus", "entrypoint_num_gpus", "retry_for"):
        if (getattr(args, flag) or 0) < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must not be negative")
    runtime_env = merge_runtime_env(project_runtime_env(), load_runtime_env(args.runtime_env))
    check_no_credentials(runtime_env)
    module = JOB_COMMANDS[name][0]
    # Chosen here, so that a retry after an answer lost on the way cannot start the job twice.
    submission_id = args.submission_id or new_submission_id()

    shown = storage.redact_uri(address)
    print(f"submitting `{name}` to {shown}", file=sys.stderr)

    def submit_once(retried: bool) -> tuple[JobSubmissionClient, str]:
        client = JobSubmissionClient(address)
        try:
            job_id = client.submit_job(
                entrypoint=shlex.join(["python", "-m", module, *job_args]),
                submission_id=submission_id,
                runtime_env=runtime_env,
                metadata={"app": "ghostnet-pipeline", "command": name},
                entrypoint_num_cpus=args.entrypoint_num_cpus,
                entrypoint_num_gpus=args.entrypoint_num_gpus,
            )
        except RuntimeError as exc:
            if retried and "already exists" in str(exc):
                return client, submission_id  # the attempt whose answer we did not get took it
            raise
        return client, job_id

    try:
        client, job_id = with_retries(submit_once, shown, args.retry_for)
    except AuthenticationError as exc:
        raise UsageError(f"the cluster at {shown} refused the credentials ({refusal(exc)}): "
                         f"{_AUTH_VARIABLES}") from None
    except ValueError as exc:  # Ray's checks of the runtime_env and the submission
        raise UsageError(str(exc)) from exc
    except (OSError, RuntimeError, aiohttp.ClientError) as exc:  # unreachable, or refused the job
        raise RunFailed(f"the job server at {shown} did not take the job: {exc}") from exc
    print(job_id, flush=True)
    if args.no_wait:
        print_follow_up(job_id, shown)
        return 0
    return follow(client, job_id, shown)


def new_submission_id() -> str:
    """An id of the form Ray gives a job it names itself."""
    return f"raysubmit_{secrets.token_hex(8)}"


def transient(exc: BaseException) -> bool:
    """An answer a starting or loaded head gives: no connection yet, or HTTP 5xx all the way down.
    A 4xx anywhere (a bad request, an id taken) and missing credentials are refusals."""
    if isinstance(exc, AuthenticationError):
        return False
    if isinstance(exc, (ConnectionError, requests.ConnectionError)):
        return True
    response = getattr(exc, "response", None)  # requests' HTTPError, from Ray's version check
    codes = [str(response.status_code)] if response is not None else _STATUS_CODE.findall(str(exc))
    return bool(codes) and codes[-1].startswith("5")


def with_retries(call: Callable[[bool], T], address: str, retry_for_s: float,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``call(retried)``, again with backoff while it fails with a transient answer, for at most
    ``retry_for_s`` seconds; each retry is said on stderr."""
    deadline = time.monotonic() + retry_for_s
    delay, retried = _FIRST_DELAY_S, False
    while True:
        try:
            return call(retried)
        except (OSError, RuntimeError) as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            print(f"note: the job server at {address} is not ready ({first_line(exc)}); retrying in "
                  f"{delay:.0f} s (gives up {deadline - time.monotonic():.0f} s from now, --retry-for)",
                  file=sys.stderr)
        sleep(delay)
        delay, retried = min(2 * delay, _MAX_DELAY_S), True


def first_line(exc: BaseException) -> str:
    return storage.redact(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__


def refusal(exc: AuthenticationError) -> str:
    """Ray's 401 says no token came, its 403 that the token is wrong."""
    return "the token it was sent is wrong" if exc.message.startswith("Authentication failed") else "no token was sent"


class _DropDefaultExcludeNotice(logging.Filter):
    """Ray 2.60 announces that it now skips .git and .venv in a working_dir; we exclude them
    ourselves, so the notice says nothing to our users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is now ignored by default" not in str(record.msg)


# Ray's job client sets these to INFO itself and logs every packaging step there.
_CHATTY_RAY_LOGGERS = (
    "ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
    "ray._private.runtime_env.packaging",
)
# Warns when token mode is on but no token is set; a cluster that needs one refuses the job, and
# our error line says which variables to set.
_TOKEN_LOGGER = "ray._private.authentication.http_token_authentication"


def quiet_ray_logs(verbose: bool) -> None:
    """Keep Ray's client to warnings unless -v was given."""
    if not verbose:
        for name in _CHATTY_RAY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger(_TOKEN_LOGGER).setLevel(logging.ERROR)
    working_dir_log = logging.getLogger("ray._private.runtime_env.working_dir")
    if not any(isinstance(f, _DropDefaultExcludeNotice) for f in working_dir_log.filters):
        working_dir_log.addFilter(_DropDefaultExcludeNotice())


def resolve_address(flag: str | None) -> str:
    address = flag or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise UsageError("no cluster to submit to: pass --address http://HEAD:8265 "
                         "or set RAY_API_SERVER_ADDRESS")
    return address


def split_job(job: list[str]) -> tuple[str, list[str]]:
    """``[--] run|nightly ARGS`` -> the command and its arguments."""
    if job and job[0] == "--":
        job = job[1:]
    if not job:
        raise UsageError("no job given: end with `-- run ARGS` or `-- nightly ARGS`")
    if job[0] not in JOB_COMMANDS:
        raise UsageError(f"the job must be `run` or `nightly`, got {job[0]!r}")
    return job[0], job[1:]


def check_job_arguments(name: str, job_args: list[str]) -> None:
    """Parse ``job_args`` as the job will; argparse exits with status 2 on a bad flag."""
    parser = JOB_COMMANDS[name][1]()
    parser.prog = f"ghostnet-pipeline submit -- {name}"
    parsed = parser.parse_args(job_args)
    if parsed.address:
        raise UsageError("--address belongs before `--`: the job runs on the cluster it is submitted to")
    for value in job_args:
        if _URL_PASSWORD.match(value):
            raise UsageError(f"{storage.redact_uri(value)} carries a password, which the job's entrypoint "
                             "would store on the cluster; give the cluster its own credentials")
    # A --config file is read on the cluster, so only flags-only jobs can be checked in full here.
    if parsed.config is None:
        overrides: dict[str, object] = {}
        if name == "nightly":
            if not parsed.date:
                raise UsageError("nightly needs --date YYYY-MM-DD")
            overrides["run_date"] = validate_run_date(parsed.date)
        config_from_args(parsed, settings=None, **overrides)
    warn_relative_paths(parsed)


def warn_relative_paths(parsed: argparse.Namespace) -> None:
    weights = [e.get("weights") for e in (*(parsed.model_entries or []), *(parsed.audio_entries or []))]
    values = [*(parsed.input or []), parsed.output, *weights, parsed.config]
    for value in values:
        if value and value != "random" and ":" not in value and not value.startswith("/"):
            print(f"note: {value} is a relative path; the job resolves it on the cluster, in its "
                  "working directory (a copy of this project)", file=sys.stderr)


def project_root() -> Path | None:
    """The source checkout holding this module, if it is one (has pyproject.toml)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def project_runtime_env() -> dict[str, Any]:
    root = project_root()
    if root is None:
        print("note: not a source checkout; the job uses the ghostnet-pipeline installed on the cluster",
              file=sys.stderr)
        return {}
    return {"working_dir": str(root), "excludes": list(PROJECT_EXCLUDES)}


def load_runtime_env(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"--runtime-env {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"--runtime-env {path} does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--runtime-env {path} must hold a mapping (working_dir, pip, env_vars, ...)")
    return data


def merge_runtime_env(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """``theirs`` over ``ours``: mappings merge key by key, ``excludes`` lists add up, the rest
    is replaced. A ``working_dir`` of theirs replaces the project and our excludes with it."""
    if "working_dir" in theirs:
        ours = {k: v for k, v in ours.items() if k not in ("working_dir", "excludes")}
    merged = dict(ours)
    for key, value in theirs.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        elif key == "excludes" and isinstance(value, list):
            merged[key] = [*merged.get(key, []), *value]
        else:
            merged[key] = value
    return merged


def check_no_credentials(runtime_env: dict[str, Any]) -> None:
    """Refuse env_vars that look like credentials: a job's runtime_env is stored in the
    cluster's job table and shown by the dashboard to anyone who can reach it."""
    env_vars = runtime_env.get("env_vars") or {}
    found = sorted(name for name, value in env_vars.items()
                   if _CREDENTIAL_NAME.search(name) or _URL_PASSWORD.match(str(value)))
    if found:
        raise UsageError(
            f"runtime_env env_vars {', '.join(found)} look like credentials; the cluster's nodes must get "
            "them from their own environment (Kubernetes Secret, IRSA, instance role), not from the job"
        )


def print_follow_up(job_id: str, address: str) -> None:
    quoted = shlex.quote(address)
    print("the job runs on; follow it with:", file=sys.stderr)
    for action in ("status", "logs --follow", "stop"):
        print(f"  ray job {action} {job_id} --address {quoted}", file=sys.stderr)


def follow(client: JobSubmissionClient, job_id: str, address: str) -> int:
    """Stream the job's logs to stdout until it ends; its outcome is the exit code."""
    try:
        try:
            asyncio.run(_stream_logs(client, job_id))
        except (RuntimeError, aiohttp.ClientError, OSError) as exc:
            print(f"note: the log stream ended early ({exc}); waiting for the job to end", file=sys.stderr)
        info = _wait_until_done(client, job_id)
    except (OSError, RuntimeError, aiohttp.ClientError) as exc:  # Ray's client: RuntimeError for HTTP errors
        raise RunFailed(f"lost the job server while job {job_id} ran ({exc}); it may still be running: "
                        f"ray job status {job_id} --address {shlex.quote(address)}") from exc
    except KeyboardInterrupt:
        print(f"\nstopped following; the job keeps running. Stop it with:\n"
              f"  ray job stop {job_id} --address {shlex.quote(address)}", file=sys.stderr)
        return 130
    print(f"job {job_id} {info.status.value}", flush=True)
    if info.status == JobStatus.SUCCEEDED:
        return 0
    if info.message:
        # The first line names the cause and exit code; the rest repeats the logs shown above.
        print(f"error: {storage.redact(info.message.splitlines()[0])}", file=sys.stderr)
    return 1


async def _stream_logs(client: JobSubmissionClient, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()


def _wait_until_done(client: JobSubmissionClient, job_id: str) -> JobDetails:
    while True:
        info = client.get_job_info(job_id)
        if info.status.is_terminal():
            return info
        time.sleep(_POLL_S)


COMMAND = Command(
    name="submit",
    help="send a run or nightly to a Ray cluster as a Ray job",
    description="Submit `run` or `nightly` to a Ray cluster through the Ray Jobs API, stream its logs and exit "
                "with its outcome.",
    example=EXAMPLE,
    add_arguments=add_arguments,
    handler=submit,
)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
