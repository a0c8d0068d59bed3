"""The deployment files under ``infra/``: every YAML parses and has the expected kinds, every job
entrypoint is accepted by our own parsers (so a renamed flag breaks this test, not a night in
production), and no credential is written into any of them.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from jobs import cli, submit

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
FIXED_DATE = "2026-11-28"
DATE_EXPR = "$(date -u +%F)"

# file -> the (apiVersion, kind) of each document, in order
EXPECTED = {
    "k8s/common.yaml": [("v1", "Namespace"), ("v1", "ServiceAccount")],
    "k8s/raycluster.yaml": [("ray.io/v1", "RayCluster")],
    "k8s/rayjob-label.yaml": [("ray.io/v1", "RayJob")],
    "k8s/raycronjob-nightly.yaml": [("ray.io/v1", "RayCronJob")],
    "k8s/cronjob-fallback.yaml": [
        ("v1", "ServiceAccount"), ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("v1", "ConfigMap"), ("batch/v1", "CronJob"),
    ],
}
MODULE_COMMAND = {"jobs.run": "run", "jobs.nightly": "nightly"}


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((INFRA / name).read_text()) if doc is not None]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def fallback_rayjob() -> dict[str, Any]:
    """The RayJob that the fallback CronJob creates, as kept in its ConfigMap."""
    config_map = by_kind(load("k8s/cronjob-fallback.yaml"), "ConfigMap")
    return yaml.safe_load(config_map["data"]["rayjob.yaml"])


def rayjob_specs() -> dict[str, dict[str, Any]]:
    """Every RayJob spec the manifests can start, by where it comes from."""
    return {
        "rayjob-label": load("k8s/rayjob-label.yaml")[0]["spec"],
        "raycronjob-nightly": load("k8s/raycronjob-nightly.yaml")[0]["spec"]["jobTemplate"],
        "cronjob-fallback": fallback_rayjob()["spec"],
    }


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def containers(node: Any) -> list[dict[str, Any]]:
    return [c for d in walk(node) for c in d.get("containers", [])]


def job_command(entrypoint: str) -> tuple[str, list[str]]:
    """``python -m jobs.X ARGS`` inside an entrypoint (bare, or in ``bash -c '...'``) with the
    date expression replaced by a fixed date -> (module, ARGS)."""
    words = shlex.split(entrypoint.replace(DATE_EXPR, FIXED_DATE))
    if words[:2] in (["bash", "-c"], ["sh", "-c"]):
        words = shlex.split(words[2])
    if words[0] == "exec":
        words = words[1:]
    assert words[:2] == ["python", "-m"], entrypoint
    return words[2], words[3:]


# --- structure ----------------------------------------------------------------------------------

def test_every_yaml_under_infra_is_known():
    found = {str(p.relative_to(INFRA)) for p in INFRA.glob("k8s/**/*.y*ml")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_yaml_parses_with_expected_kinds(name):
    docs = load(name)
    assert [(d["apiVersion"], d["kind"]) for d in docs] == EXPECTED[name]
    for doc in docs:
        assert doc["metadata"].get("name") or doc["metadata"].get("generateName")


def test_raycluster_groups():
    spec = load("k8s/raycluster.yaml")[0]["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token"
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    assert all(int(g["rayStartParams"]["object-store-memory"]) > 0 for g in groups)
    gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for c in containers(spec["workerGroupSpecs"])]
    assert "1" in gpus and None in gpus  # a GPU group and a CPU group


@pytest.mark.parametrize("source", ["rayjob-label", "raycronjob-nightly", "cronjob-fallback"])
def test_rayjobs_clean_up_their_cluster(source):
    spec = rayjob_specs()[source]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__


def test_raycronjob_schedule_and_feature_gate_note():
    text = (INFRA / "k8s/raycronjob-nightly.yaml").read_text()
    spec = load("k8s/raycronjob-nightly.yaml")[0]["spec"]
    assert spec["schedule"] == "0 2 * * *" and spec["timeZone"]
    assert re.search(r"\bALPHA\b", text, re.I) and "`RayCronJob` feature gate" in text and "KubeRay 1.6" in text


def test_cronjob_fallback_creates_a_rayjob_with_rights_for_nothing_else():
    docs = load("k8s/cronjob-fallback.yaml")
    cron, role, binding = by_kind(docs, "CronJob"), by_kind(docs, "Role"), by_kind(docs, "RoleBinding")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] > 0
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"],
                              "verbs": ["create", "get", "list", "watch"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    scheduler = by_kind(docs, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"] == scheduler

    (container,) = pod["containers"]
    assert container["command"][:3] == ["kubectl", "create", "-f"]
    mount = container["volumeMounts"][0]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == by_kind(docs, "ConfigMap")["metadata"]["name"]
    assert container["command"][3] == f"{mount['mountPath']}/rayjob.yaml"

    rayjob = fallback_rayjob()
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    assert rayjob["metadata"]["generateName"] and "name" not in rayjob["metadata"]


# --- entrypoints --------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["rayjob-label", "raycronjob-nightly", "cronjob-fallback"])
def test_entrypoint_is_accepted_by_our_parsers(source):
    module, args = job_command(rayjob_specs()[source]["entrypoint"])
    name = MODULE_COMMAND[module]
    parsed = cli.build_parser().parse_args([name, *args])  # argparse exits 2 on an unknown flag
    assert parsed.command == name
    submit.check_job_arguments(name, args)  # and the checks `submit` makes before sending a job
    if name == "nightly":
        assert parsed.date == FIXED_DATE


@pytest.mark.parametrize("source", ["raycronjob-nightly", "cronjob-fallback"])
def test_nightly_date_is_computed_when_the_job_runs(source, tmp_path):
    """Follow the entrypoint as KubeRay and Ray handle it: the submitter's bash passes it to
    `ray job submit -- ...`, which joins the words with list2cmdline; the job server runs the
    result with /bin/sh. Only then may the date be taken."""
    entrypoint = rayjob_specs()[source]["entrypoint"]
    assert DATE_EXPR in entrypoint
    submitter = subprocess.run(["bash", "-c", f"printf '%s\\0' {entrypoint}"],
                               capture_output=True, text=True, check=True)
    words = submitter.stdout.split("\0")[:-1]
    assert DATE_EXPR in " ".join(words)  # not expanded by the submitter

    # A `python` that prints its arguments stands in for the interpreter on the head node.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    (bin_dir / "python").chmod(0o755)
    driver = subprocess.run(["/bin/sh", "-c", subprocess.list2cmdline(words)], capture_output=True, text=True,
                            check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    argv = driver.stdout.splitlines()
    assert argv[:2] == ["-m", "jobs.nightly"]
    assert argv[argv.index("--date") + 1] == datetime.now(timezone.utc).date().isoformat()
    cli.build_parser().parse_args(["nightly", *argv[2:]])


# --- credentials --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_inline_credentials(name):
    docs = load(name)
    if name == "k8s/cronjob-fallback.yaml":
        docs.append(fallback_rayjob())
    assert not [d for d in docs if d["kind"] == "Secret"]
    for container in containers(docs):
        for env in container.get("env", []):
            if submit._CREDENTIAL_NAME.search(env["name"]):
                assert "valueFrom" in env and "value" not in env, env["name"]
    for doc in walk(docs):
        if "runtimeEnvYAML" in doc:
            submit.check_no_credentials(yaml.safe_load(doc["runtimeEnvYAML"]))


@pytest.mark.parametrize("source", ["rayjob-label", "raycronjob-nightly", "cronjob-fallback"])
def test_ray_pods_get_storage_credentials_from_a_secret_or_their_service_account(source):
    pods = [d for d in walk(rayjob_specs()[source]["rayClusterSpec"]) if "containers" in d]
    assert pods
    for pod in pods:
        assert pod["serviceAccountName"] == "ghostnet-pipeline"
        for container in pod["containers"]:
            assert {"secretRef": {"name": "ghostnet-s3", "optional": True}} in container["envFrom"]


# --- the image ----------------------------------------------------------------------------------

def test_dockerfile_builds_on_the_matching_ray_image():
    text = (INFRA / "Dockerfile").read_text()
    base = re.search(r"^ARG RAY_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(rf"rayproject/ray:{re.escape(ray.__version__)}-py311-(gpu|cu\d+)", base)
    assert re.search(r"^FROM \$\{RAY_IMAGE\}$", text, re.M)
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    # An allowlist: everything is ignored but the sources, so .venv and tests never reach the build.
    rules = [r for r in (INFRA / "Dockerfile.dockerignore").read_text().splitlines() if r and r[0] != "#"]
    assert rules[0] == "*" and all(r.startswith(("!", "**/")) for r in rules[1:])
