"""Offline schema checks for the configuration files under ``infra/``.

No cluster runs here, so each manifest is checked against the schemas the API server would use:

- Kubernetes' own kinds (Namespace, ServiceAccount, ConfigMap, Role, RoleBinding, CronJob, ...):
  Kubernetes 1.33's OpenAPI definitions as JSON Schema, in their strict form (a field the schema
  does not name is an error), as shipped by the pinned ``kubernetes-validate`` package. They come
  from Kubernetes' Swagger 2.0 document, which lists no enum values: a misspelt ``Forbid`` passes.
- KubeRay's kinds (RayCluster, RayJob, RayCronJob): the ``openAPIV3Schema`` of their ``ray.io/v1``
  CRDs in KubeRay 1.7.0, kept as data in ``shared/schemas/kuberay-v1.7.0/`` (found in the checkout
  or in any folder above it), one ``<kind>.json`` per kind whose ``$comment`` names the release,
  commit and path it was taken from. To refresh them, take ``spec.versions[name=v1].schema
  .openAPIV3Schema`` of ``ray-operator/config/crd/bases/ray.io_{rayclusters,rayjobs,raycronjobs}.yaml``
  at the new release tag of ray-project/kuberay and write it the same way. v1alpha1, still served,
  is left out, so a v1alpha1 object is reported as having no schema. The API server prunes a CRD's
  unknown fields without a word; here they are errors, since a pruned field is a setting that never
  took effect. CEL rules (``x-kubernetes-validations``) are not evaluated.
- Every pod template inside a Ray object is also checked against Kubernetes' PodTemplateSpec, and
  the object's metadata against ObjectMeta: KubeRay's CRDs embed the pod schema of the Kubernetes
  release KubeRay was built with, which can name fields the cluster's Kubernetes does not know.
- A ConfigMap entry named ``*.yaml`` holding a Kubernetes object (the RayJob that the fallback
  CronJob creates) is checked as that object.

- Prometheus files (the scrape configuration and the alerting rules): ``promtool`` where it is
  installed (Debian's ``prometheus`` package has it), and the metric names in every rule against
  those ``pipeline/metrics.py`` exports. The Grafana dashboard: its panels' structure, and every
  query's metric names likewise.

Other configuration files plug in through ``CHECKS``: a glob under ``infra/`` and a function from
one parsed document to its problems, each a readable ``path: message`` string.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

from pipeline import metrics

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

KUBERNETES_VERSION = "1.33.0"
KUBERAY_VERSION = "1.7.0"
KUBERAY_SCHEMAS = Path("shared", "schemas", f"kuberay-v{KUBERAY_VERSION}")
KUBERAY_KINDS = {("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob"), ("ray.io/v1", "RayCronJob")}
KUBERAY_MISSING = (f"KubeRay {KUBERAY_VERSION} CRD schemas not found: no {KUBERAY_SCHEMAS} in the checkout "
                   "or a folder above it, so Ray objects were checked only against Kubernetes' own schemas")

_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
OBJECT_META = f"{_DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
POD_TEMPLATE_SPEC = f"{_DEFINITIONS}#/$defs/io.k8s.api.core.v1.PodTemplateSpec"

Problems = list[str]


# --- files --------------------------------------------------------------------------------------

def check_kubernetes_object(doc: Any) -> Problems:
    """A Kubernetes object of any kind this module has a schema for."""
    if not isinstance(doc, dict):
        return [f"(top): expected a Kubernetes object, got {type(doc).__name__}"]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if (api_version, kind) in KUBERAY_KINDS:
        problems = ray_object_problems(doc)
    else:
        schema = kubernetes_schema(api_version, kind)
        if schema is None:
            return [f"(top): no Kubernetes {KUBERNETES_VERSION} schema for apiVersion {api_version!r} kind {kind!r}"]
        problems = schema_problems(validator_for(schema), doc)
    # A Ray object's pod templates and metadata meet two schemas; a mistake is reported once.
    return list(dict.fromkeys(problems + embedded_object_problems(doc)))


# --- Prometheus and Grafana -----------------------------------------------------------------------

METRIC_NAME = re.compile(r"\bray_ghostnet_pipeline_\w+")
PROMTOOL_MISSING = "promtool not installed: Prometheus files checked for structure and metric names only"


def unknown_metrics(text: str) -> Problems:
    """Names of ours in a PromQL expression that no metric of pipeline/metrics.py exports."""
    known = metrics.exported_names()
    return [f"unknown metric {name!r} (pipeline/metrics.py exports {len(known)} names)"
            for name in sorted(set(METRIC_NAME.findall(text)) - known)]


def promtool(*args: str, documents: dict[str, Any]) -> Problems:
    """``promtool ARGS`` on the documents written to a temporary folder; [] where promtool is absent."""
    if shutil.which("promtool") is None:
        return []
    with tempfile.TemporaryDirectory() as folder:
        for name, doc in documents.items():
            Path(folder, name).write_text(yaml.safe_dump(doc))
        done = subprocess.run(["promtool", *args], cwd=folder, capture_output=True, text=True, timeout=60)
    if done.returncode == 0:
        return []
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines()]
    return [line for line in lines if line and not line.startswith("Checking")] or ["promtool failed"]


def check_prometheus_config(doc: Any) -> Problems:
    """A Prometheus configuration: scrape jobs of Ray's metrics ports, through ``promtool check config``.
    Debian's Prometheus is built without Kubernetes discovery, so promtool sees a static target in its
    place; the relabeling rules, intervals and everything else are checked as written."""
    if not isinstance(doc, dict) or not doc.get("scrape_configs"):
        return ["(top): expected a Prometheus configuration with scrape_configs"]
    checked = copy.deepcopy(doc)
    checked.pop("rule_files", None)  # checked on their own, as prometheus/*alerts*.yaml
    for job in checked["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["127.0.0.1:8080"]}]
    return promtool("check", "config", "prometheus.yaml", documents={"prometheus.yaml": checked})


def check_prometheus_rules(doc: Any) -> Problems:
    """Alerting rules: ``promtool check rules``, and every metric named is one the pipeline exports."""
    if not isinstance(doc, dict) or not doc.get("groups"):
        return ["(top): expected Prometheus rule groups"]
    exprs = [rule.get("expr", "") for group in doc["groups"] for rule in group.get("rules", [])]
    return unknown_metrics("\n".join(exprs)) + promtool("check", "rules", "rules.yaml",
                                                        documents={"rules.yaml": doc})


def check_grafana_dashboard(doc: Any) -> Problems:
    """A Grafana dashboard: panels with a title, a type, a position and Prometheus queries, every query
    naming only metrics the pipeline exports."""
    if not isinstance(doc, dict) or not isinstance(doc.get("panels"), list) or not doc.get("title"):
        return ["(top): expected a Grafana dashboard with a title and panels"]
    problems = []
    for index, panel in enumerate(doc["panels"]):
        where = f"panels[{index}] ({panel.get('title', '?')})"
        missing = [key for key in ("title", "type", "gridPos") if key not in panel]
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}")
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets or any(not t.get("expr") for t in targets):
            problems.append(f"{where}: every panel needs Prometheus targets with an expr")
        problems += [f"{where}: {p}" for p in unknown_metrics("\n".join(t.get("expr", "") for t in targets))]
    return problems


# Each configuration file under infra/ is matched, by a glob relative to infra/, to the function
# that checks one of its documents.
CHECKS: dict[str, Callable[[Any], Problems]] = {
    "k8s/*.yaml": check_kubernetes_object,
    "prometheus/prometheus.yaml": check_prometheus_config,
    "prometheus/alerts.yaml": check_prometheus_rules,
    "grafana/*.json": check_grafana_dashboard,
}
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def config_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in CONFIG_SUFFIXES)


def checker_for(path: Path) -> Callable[[Any], Problems] | None:
    relative = path.relative_to(INFRA).as_posix()
    return next((check for glob, check in CHECKS.items() if fnmatch.fnmatch(relative, glob)), None)


def load_documents(path: Path) -> list[Any]:
    if path.suffix == ".json":
        return [json.loads(path.read_text())]
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def check_file(path: Path) -> Problems:
    """Every problem of every document in one configuration file, each naming the document."""
    check = checker_for(path)
    if check is None:
        return [f"{path.relative_to(INFRA)}: no check for this file in CHECKS"]
    return [f"{document_name(doc, index)}: {problem}"
            for index, doc in enumerate(load_documents(path)) for problem in check(doc)]


def document_name(doc: Any, index: int) -> str:
    if not isinstance(doc, dict) or "kind" not in doc:
        return f"document {index}"
    metadata = doc.get("metadata") or {}
    name = metadata.get("name") or f"{metadata.get('generateName', '')}*"
    return f"document {index} ({doc['kind']} {name})"


# --- Ray objects ----------------------------------------------------------------------------------

def ray_object_problems(doc: dict[str, Any]) -> Problems:
    """Metadata and pod templates against Kubernetes' schemas, the whole object against KubeRay's CRD
    where it is at hand."""
    problems = schema_problems(definition_validator(OBJECT_META), doc.get("metadata", {}), ["metadata"])
    for path, template in pod_templates(doc):
        problems += schema_problems(definition_validator(POD_TEMPLATE_SPEC), template, path)
    schemas = kuberay_schema_dir()
    if schemas is not None:
        problems += schema_problems(kuberay_validator(schemas, doc["kind"]), doc)
    return problems


def pod_templates(doc: dict[str, Any]) -> Iterator[tuple[list[str | int], Any]]:
    spec = doc.get("spec") or {}
    if doc["kind"] == "RayCluster":
        yield from cluster_pod_templates(spec, ["spec"])
    elif doc["kind"] == "RayJob":
        yield from job_pod_templates(spec, ["spec"])
    elif doc["kind"] == "RayCronJob":
        yield from job_pod_templates(spec.get("jobTemplate") or {}, ["spec", "jobTemplate"])


def job_pod_templates(spec: dict[str, Any], path: list[str | int]) -> Iterator[tuple[list[str | int], Any]]:
    yield from cluster_pod_templates(spec.get("rayClusterSpec") or {}, [*path, "rayClusterSpec"])
    if "submitterPodTemplate" in spec:
        yield [*path, "submitterPodTemplate"], spec["submitterPodTemplate"]


def cluster_pod_templates(spec: dict[str, Any], path: list[str | int]) -> Iterator[tuple[list[str | int], Any]]:
    if "template" in (spec.get("headGroupSpec") or {}):
        yield [*path, "headGroupSpec", "template"], spec["headGroupSpec"]["template"]
    for index, group in enumerate(spec.get("workerGroupSpecs") or []):
        if "template" in group:
            yield [*path, "workerGroupSpecs", index, "template"], group["template"]


def kuberay_schema_dir() -> Path | None:
    return next((folder / KUBERAY_SCHEMAS for folder in (ROOT, *ROOT.parents)
                 if (folder / KUBERAY_SCHEMAS).is_dir()), None)


@cache
def kuberay_validator(schemas: Path, kind: str) -> jsonschema.protocols.Validator:
    crd = json.loads((schemas / f"{kind.lower()}.json").read_text())
    schema = strict_crd_schema(crd)
    # The API server checks a custom object's metadata as ObjectMeta, whatever the CRD says.
    schema["properties"]["metadata"] = {"$ref": OBJECT_META}
    return validator_for(schema)


def strict_crd_schema(node: dict[str, Any]) -> dict[str, Any]:
    """A CRD's structural OpenAPI v3 schema as JSON Schema, where every field the API server would
    prune is an error."""
    schema = dict(node)
    if "properties" in schema:
        schema["properties"] = {name: strict_crd_schema(sub) for name, sub in schema["properties"].items()}
    for key in ("additionalProperties", "items", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict_crd_schema(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [strict_crd_schema(sub) for sub in schema[key]]
    if schema.get("x-kubernetes-embedded-resource"):
        schema["properties"] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                "metadata": {"$ref": OBJECT_META}, **schema.get("properties", {})}
    if schema.pop("x-kubernetes-int-or-string", False):
        schema.pop("type", None)
        schema.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (schema.get("type") == "object" and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    if schema.pop("nullable", False):
        if "type" in schema:
            schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        if "anyOf" in schema:
            schema["anyOf"] = [*schema["anyOf"], {"type": "null"}]
    return schema


# --- Kubernetes' own kinds ------------------------------------------------------------------------

def kubernetes_schema_dir() -> Path:
    return Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"


@cache
def kubernetes_schema(api_version: Any, kind: Any) -> dict[str, Any] | None:
    """The schema of one kind, named as kubernetes-validate names its files: Namespace v1 is
    namespace-v1.json, Role rbac.authorization.k8s.io/v1 is role-rbac-v1.json."""
    if not (isinstance(api_version, str) and isinstance(kind, str)):
        return None
    group, _, version = api_version.rpartition("/")
    name = "-".join(part for part in (kind.lower(), group.split(".")[0], version) if part)
    path = kubernetes_schema_dir() / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


@cache
def definitions() -> Registry:
    contents = json.loads((kubernetes_schema_dir() / "_definitions.json").read_text())
    return Registry().with_resource(_DEFINITIONS, Resource.from_contents(contents))


@cache
def definition_validator(ref: str) -> jsonschema.protocols.Validator:
    return validator_for({"$ref": ref})


# --- validation -----------------------------------------------------------------------------------

FORMATS = jsonschema.FormatChecker(formats=())


def _integer_format(bits: int) -> Callable[[Any], bool]:
    def in_range(value: Any) -> bool:
        if not isinstance(value, int) or isinstance(value, bool):
            return True  # the type check reports it
        return -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)
    return in_range


FORMATS.checks("int32")(_integer_format(32))
FORMATS.checks("int64")(_integer_format(64))
FORMATS.checks("int-or-string")(lambda value: isinstance(value, (int, str)) and not isinstance(value, bool))


def list_type(validator: Any, list_kind: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """``x-kubernetes-list-type``: a set holds no value twice, a map no two items with the same keys."""
    if not isinstance(instance, list) or list_kind not in ("set", "map"):
        return
    if list_kind == "set":
        keys = [json.dumps(item, sort_keys=True) for item in instance]
    else:
        names = schema.get("x-kubernetes-list-map-keys", [])
        keys = [json.dumps({n: item.get(n) for n in names}, sort_keys=True)
                for item in instance if isinstance(item, dict)]
    for key in sorted({k for k in keys if keys.count(k) > 1}):
        yield jsonschema.ValidationError(f"duplicate item {key} in a list of type {list_kind}")


Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"x-kubernetes-list-type": list_type})


def validator_for(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    return Validator(schema, registry=definitions(), format_checker=FORMATS)


def schema_problems(validator: jsonschema.protocols.Validator, instance: Any,
                    prefix: Sequence[str | int] = ()) -> Problems:
    return sorted(p for error in validator.iter_errors(instance) for p in describe(error, prefix))


def describe(error: jsonschema.ValidationError, prefix: Sequence[str | int]) -> Problems:
    path = [*prefix, *error.absolute_path]
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = error.schema.get("properties", {})
        return [f"{dotted([*path, name])}: unknown field" for name in error.instance if name not in known]
    message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
    return [f"{dotted(path)}: {message}"]


def dotted(path: Sequence[str | int]) -> str:
    """``spec.workerGroupSpecs[1].template``; keys that are not plain names are quoted."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.replace("_", "").replace("-", "").isalnum():
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or "(top)"


# --- objects inside objects -----------------------------------------------------------------------

def embedded_object_problems(doc: dict[str, Any]) -> Problems:
    """The Kubernetes objects a ConfigMap keeps as ``*.yaml`` entries, checked as what they are."""
    if doc.get("kind") != "ConfigMap":
        return []
    problems = []
    for key, text in (doc.get("data") or {}).items():
        if not key.endswith((".yaml", ".yml")):
            continue
        where = dotted(["data", key])
        try:
            embedded = [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and "kind" in d]
        except yaml.YAMLError as error:
            problems.append(f"{where}: not YAML: {error}")
            continue
        problems += [f"{where} > {problem}" for d in embedded for problem in check_kubernetes_object(d)]
    return problems
