"""The files under ``infra/`` against the schemas a cluster would hold them to (tests/infra/validation.py
says which), and proof that each check fails on a broken manifest with a path a person can follow.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.validation import (
    INFRA,
    KUBERAY_MISSING,
    KUBERAY_VERSION,
    KUBERNETES_VERSION,
    check_file,
    check_kubernetes_object,
    checker_for,
    config_files,
    kuberay_schema_dir,
    load_documents,
    schema_problems,
    strict_crd_schema,
    validator_for,
)

pytestmark = pytest.mark.unit
needs_kuberay = pytest.mark.skipif(kuberay_schema_dir() is None, reason=KUBERAY_MISSING)

def document(name: str, kind: str) -> dict[str, Any]:
    """A fresh copy of the one document of this kind in infra/k8s/NAME, to break at will."""
    (doc,) = [d for d in load_documents(INFRA / "k8s" / name) if d["kind"] == kind]
    return doc


# --- the files as they are --------------------------------------------------------------------

def test_every_config_file_under_infra_has_a_check():
    """tests/infra/validation.py: every configuration file under infra/ is checked; a new one with no
    entry in CHECKS fails here."""
    assert [str(p.relative_to(INFRA)) for p in config_files() if checker_for(p) is None] == []


@pytest.mark.parametrize("path", config_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_config_file_matches_its_schemas(path):
    """docs/operations.md §3: the manifests in infra/k8s are valid for KubeRay 1.7.0 and Kubernetes
    1.33 (the KubeRay half only where its CRD schemas are at hand: see the next test)."""
    assert check_file(path) == []


@needs_kuberay
def test_kuberay_schemas_are_those_of_the_targeted_release():
    """docs/operations.md §3: the manifests are checked against KubeRay 1.7.0's own CRDs. Skips,
    saying so, where the schemas are not at hand."""
    for kind in ("RayCluster", "RayJob", "RayCronJob"):
        comment = json.loads((kuberay_schema_dir() / f"{kind.lower()}.json").read_text())["$comment"]
        assert f"ray.io/v1 {kind}:" in comment and f"kuberay v{KUBERAY_VERSION} (commit " in comment


# --- Kubernetes' own kinds: each check fails on a broken manifest -------------------------------

def test_misspelt_field_in_a_kubernetes_kind_is_reported():
    """docs/operations.md §3, the manifests are valid for Kubernetes 1.33: a field Kubernetes does
    not know fails the check."""
    cron = document("cronjob-fallback.yaml", "CronJob")
    cron["spec"]["concurrencyPolicyy"] = cron["spec"].pop("concurrencyPolicy")
    assert check_kubernetes_object(cron) == ["spec.concurrencyPolicyy: unknown field"]


def test_wrong_type_in_a_kubernetes_kind_is_reported():
    """docs/operations.md §3, the manifests are valid for Kubernetes 1.33: a value of the wrong type
    fails the check."""
    cron = document("cronjob-fallback.yaml", "CronJob")
    cron["spec"]["startingDeadlineSeconds"] = "3600"
    cron["spec"]["successfulJobsHistoryLimit"] = 2**31
    assert check_kubernetes_object(cron) == [
        "spec.startingDeadlineSeconds: '3600' is not of type 'integer', 'null'",
        "spec.successfulJobsHistoryLimit: 2147483648 is not a 'int32'",
    ]


def test_missing_required_field_in_a_kubernetes_kind_is_reported():
    """docs/operations.md §3, the manifests are valid for Kubernetes 1.33: a missing required field
    fails the check."""
    binding = document("cronjob-fallback.yaml", "RoleBinding")
    del binding["roleRef"]["name"]
    assert check_kubernetes_object(binding) == ["roleRef: 'name' is a required property"]


def test_api_version_the_cluster_does_not_serve_is_reported():
    """docs/operations.md §3, the manifests are valid for Kubernetes 1.33: batch/v1beta1 CronJobs
    were removed in Kubernetes 1.25."""
    cron = document("cronjob-fallback.yaml", "CronJob")
    cron["apiVersion"] = "batch/v1beta1"
    assert check_kubernetes_object(cron) == [
        f"(top): no Kubernetes {KUBERNETES_VERSION} schema for apiVersion 'batch/v1beta1' kind 'CronJob'"]


def test_duplicate_container_name_is_reported():
    """docs/operations.md §3, the manifests are valid for Kubernetes 1.33: lists Kubernetes keys by
    name (containers, volumes) hold each name once."""
    cron = document("cronjob-fallback.yaml", "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["containers"].append(dict(pod["containers"][0]))
    assert check_kubernetes_object(cron) == [
        'spec.jobTemplate.spec.template.spec.containers: duplicate item {"name": "create-rayjob"} '
        "in a list of type map"]


def test_pod_template_of_a_ray_object_is_checked_against_kubernetes():
    """docs/operations.md §3, the manifests are valid for Kubernetes 1.33: the pod templates inside
    Ray objects meet Kubernetes' PodTemplateSpec."""
    cluster = document("raycluster.yaml", "RayCluster")
    container = cluster["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    assert check_kubernetes_object(cluster) == [
        "spec.workerGroupSpecs[1].template.spec.containers[0].resource: unknown field"]


def test_ray_object_metadata_is_checked_as_object_meta():
    """docs/operations.md §3, the manifests are valid for Kubernetes 1.33: a Ray object's metadata
    meets ObjectMeta (a misspelt generateName would make `kubectl create` fail for want of a
    name)."""
    job = document("rayjob-label.yaml", "RayJob")
    job["metadata"]["generatename"] = job["metadata"].pop("generateName")
    assert check_kubernetes_object(job) == ["metadata.generatename: unknown field"]


def test_rayjob_kept_in_the_fallback_configmap_is_checked():
    """docs/operations.md §3, the manifests are valid for Kubernetes 1.33: including the RayJob the
    fallback CronJob creates from its ConfigMap."""
    config_map = document("cronjob-fallback.yaml", "ConfigMap")
    config_map["data"]["rayjob.yaml"] = config_map["data"]["rayjob.yaml"].replace(
        "serviceAccountName", "serviceAcountName", 1)
    assert check_kubernetes_object(config_map) == [
        "data['rayjob.yaml'] > spec.rayClusterSpec.headGroupSpec.template.spec.serviceAcountName: unknown field"]

    config_map["data"]["rayjob.yaml"] = "kind: RayJob\nspec: [unclosed\n"
    (problem,) = check_kubernetes_object(config_map)
    assert problem.startswith("data['rayjob.yaml']: not YAML:")


# --- KubeRay's kinds: each check fails on a broken manifest -------------------------------------

@needs_kuberay
def test_misspelt_field_in_a_ray_object_is_reported():
    """docs/operations.md §3, the manifests are valid for KubeRay 1.7.0: a field KubeRay's CRD does
    not name, which the API server would drop without a word, fails the check."""
    cluster = document("raycluster.yaml", "RayCluster")
    cluster["spec"]["enableInTreeAutoScaling"] = cluster["spec"].pop("enableInTreeAutoscaling")
    cluster["spec"]["workerGroupSpecs"][0]["rayStartParam"] = cluster["spec"]["workerGroupSpecs"][0].pop(
        "rayStartParams")
    assert check_kubernetes_object(cluster) == [
        "spec.enableInTreeAutoScaling: unknown field",
        "spec.workerGroupSpecs[0].rayStartParam: unknown field",
    ]


@needs_kuberay
def test_field_kuberay_prunes_from_an_embedded_pod_template_is_reported():
    """docs/operations.md §3, the manifests are valid for KubeRay 1.7.0: KubeRay's CRDs keep only
    name, namespace, labels, annotations and finalizers of a pod template's metadata; anything
    else would be dropped."""
    cluster = document("raycluster.yaml", "RayCluster")
    cluster["spec"]["headGroupSpec"]["template"]["metadata"] = {"generateName": "head-", "labels": {"a": "b"}}
    assert check_kubernetes_object(cluster) == ["spec.headGroupSpec.template.metadata.generateName: unknown field"]


@needs_kuberay
def test_wrong_type_in_a_ray_object_is_reported():
    """docs/operations.md §3, the manifests are valid for KubeRay 1.7.0: a value of the wrong type
    fails the check."""
    job = document("rayjob-label.yaml", "RayJob")
    job["spec"]["ttlSecondsAfterFinished"] = "600"
    job["spec"]["shutdownAfterJobFinishes"] = "true"
    assert check_kubernetes_object(job) == [
        "spec.shutdownAfterJobFinishes: 'true' is not of type 'boolean'",
        "spec.ttlSecondsAfterFinished: '600' is not of type 'integer'",
    ]


@needs_kuberay
def test_missing_required_field_in_a_ray_object_is_reported():
    """docs/operations.md §3, the manifests are valid for KubeRay 1.7.0: a missing required field
    fails the check."""
    cron = document("raycronjob-nightly.yaml", "RayCronJob")
    del cron["spec"]["schedule"]
    del cron["spec"]["jobTemplate"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    assert check_kubernetes_object(cron) == [
        "spec.jobTemplate.rayClusterSpec.workerGroupSpecs[0]: 'groupName' is a required property",
        "spec: 'schedule' is a required property",
    ]


@needs_kuberay
def test_quantities_in_a_ray_object_are_int_or_string():
    """docs/operations.md §3, the manifests are valid for KubeRay 1.7.0: resource quantities are an
    integer or a quantity string, nothing else."""
    cluster = document("raycluster.yaml", "RayCluster")
    limits = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["cpu"] = 4
    assert check_kubernetes_object(cluster) == []
    limits["cpu"], limits["memory"] = "4 cores", ["16Gi"]
    problems = check_kubernetes_object(cluster)
    where = "spec.headGroupSpec.template.spec.containers[0].resources.limits"
    assert f"{where}.cpu: '4 cores' does not match" in "\n".join(problems)
    assert f"{where}.memory: ['16Gi'] is not valid under any of the given schemas" in problems


@needs_kuberay
def test_rayjob_kept_in_the_fallback_configmap_is_checked_against_kuberay():
    """docs/operations.md §3, the manifests are valid for KubeRay 1.7.0: including the RayJob the
    fallback CronJob creates from its ConfigMap."""
    config_map = document("cronjob-fallback.yaml", "ConfigMap")
    config_map["data"]["rayjob.yaml"] = config_map["data"]["rayjob.yaml"].replace(
        "shutdownAfterJobFinishes", "shutdownAfterJobFinish")
    assert check_kubernetes_object(config_map) == ["data['rayjob.yaml'] > spec.shutdownAfterJobFinish: unknown field"]


# --- the OpenAPI v3 to JSON Schema translation ---------------------------------------------------

CRD_LIKE = {"type": "object", "properties": {
    "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
    "bare": {"x-kubernetes-int-or-string": True},
    "note": {"type": "string", "nullable": True},
    "mode": {"type": "string", "enum": ["a", "b"], "nullable": True},
    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
             "properties": {"n": {"type": "integer"}}},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "maybe_port": {"x-kubernetes-int-or-string": True, "nullable": True},
    "empty": {"type": "object"},
}}


@pytest.mark.parametrize(("instance", "problems"), [
    ({"port": 8265, "bare": "http", "note": None, "mode": None, "labels": {"a": "b"}, "empty": {}}, []),
    ({"maybe_port": None}, []),
    ({"port": "dashboard", "bare": 1, "note": "x", "mode": "a"}, []),
    ({"free": {"anything": [1], "n": 3}}, []),
    ({"free": {"n": "three"}}, ["free.n: 'three' is not of type 'integer'"]),
    ({"port": 1.5}, ["port: 1.5 is not valid under any of the given schemas"]),
    ({"bare": True}, ["bare: True is not valid under any of the given schemas"]),
    ({"mode": "c"}, ["mode: 'c' is not one of ['a', 'b', None]"]),
    ({"note": 1}, ["note: 1 is not of type 'string', 'null'"]),
    ({"labels": {"a": 1}}, ["labels.a: 1 is not of type 'string'"]),
    ({"empty": {"pruned": 1}, "typo": 1}, ["empty.pruned: unknown field", "typo: unknown field"]),
])
def test_openapi_extensions_are_read_as_the_api_server_reads_them(instance, problems):
    """tests/infra/validation.py: nullable, x-kubernetes-int-or-string and
    x-kubernetes-preserve-unknown-fields mean what they mean to the API server, and a field it
    would prune is an error."""
    assert schema_problems(validator_for(strict_crd_schema(CRD_LIKE)), instance) == problems

