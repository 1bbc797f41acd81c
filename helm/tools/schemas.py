"""Generate the values.schema.json of the recsys umbrella chart and of every service subchart.

    python helm/tools/schemas.py          # write helm/recsys/values.schema.json and charts/*/values.schema.json
    python helm/tools/schemas.py --check  # exit 1 when a checked-in schema differs from the generated one

The service subcharts share one values layout (helm/recsys-lib renders it), so their schemas share one base;
a new service is one more entry in SERVICES. Helm validates values with draft-07 JSON Schema and reports the
path and the rule broken (e.g. "replicas: Must be greater than or equal to 0").
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

HELM = Path(__file__).resolve().parents[1]
UMBRELLA = HELM / "recsys"
DRAFT = "http://json-schema.org/draft-07/schema#"

COMPONENTS = ["gateway", "features", "candidates", "ranking", "monitoring"]
INFRA = ["milvus", "redis", "kafka"]
RANKERS = ["dcn", "lightgbm"]
TOPICS = ["events", "impressions", "predictions", "deadLetter", "items"]

Schema = dict[str, Any]


def obj(properties: Schema, required: list[str] | None = None, extra: bool = False, **more: Any) -> Schema:
    """A closed (unless extra) object schema."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": extra, **more}
    if required:
        schema["required"] = required
    return schema


def string(**more: Any) -> Schema:
    return {"type": "string", **more}


def integer(minimum: int | None = 0, maximum: int | None = None, **more: Any) -> Schema:
    schema: Schema = {"type": "integer", **more}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def array(items: Schema, **more: Any) -> Schema:
    return {"type": "array", "items": items, **more}


BOOL: Schema = {"type": "boolean"}
STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_OBJECT: Schema = {"type": "object"}
OBJECT_LIST: Schema = array({"type": "object"})
ENV_NAME = string(pattern="^[A-Za-z_][A-Za-z0-9_]*$")
DNS_LABEL = string(pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=63)
QUANTITY = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        string(pattern=r"^(\+)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+)?[0-9]+))?$"),
    ]
}
DURATION = string(pattern="^(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$")
PORT = integer(1, 65535)
PERCENT = integer(1, 100)
INT_OR_PERCENT = {"anyOf": [integer(0), string(pattern="^[0-9]+%$"), {"type": "null"}]}
CONFIG = {"type": "object", "propertyNames": ENV_NAME, "additionalProperties": string()}
ENV_LIST = array(ENV_NAME, uniqueItems=True)
RESOURCES = obj(
    {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
        "claims": OBJECT_LIST,
    }
)
IMAGE = obj(
    {
        "registry": string(),
        "repository": string(),
        "tag": string(),
        "pullPolicy": {"enum": ["", "Always", "IfNotPresent", "Never"]},
    }
)
PROBE = {
    "oneOf": [
        {"type": "null"},
        obj(
            {
                "initialDelaySeconds": integer(0),
                "periodSeconds": integer(1),
                "timeoutSeconds": integer(1),
                "failureThreshold": integer(1),
                "successThreshold": integer(1),
                "terminationGracePeriodSeconds": integer(1),
            }
        ),
    ]
}
STEP = obj(
    {
        "name": DNS_LABEL,
        "args": array(string(), minItems=1),
        "resources": RESOURCES,
        "skipWhenMilvusEmbedded": BOOL,
    },
    required=["name", "args"],
)


def service_schema(name: str, extra_properties: Schema | None = None) -> Schema:
    """Schema of a service subchart (the values layout helm/recsys-lib renders)."""
    properties: Schema = {
        "enabled": BOOL,
        "global": ANY_OBJECT,
        "recsys-lib": ANY_OBJECT,
        "component": string(),
        "replicas": integer(0, description="Pods when autoscaling is off"),
        "image": IMAGE,
        "command": array(string()),
        "args": array(string()),
        "config": CONFIG,
        "configJson": {"type": "object", "propertyNames": ENV_NAME},
        "envLeftAtDefault": ENV_LIST,
        "env": array(obj({"name": ENV_NAME}, required=["name"], extra=True)),
        "uses": array({"enum": INFRA}, uniqueItems=True),
        "resources": RESOURCES,
        "probes": obj(
            {"kind": {"enum": ["grpc", "ray-serve"]}, "startup": PROBE, "liveness": PROBE, "readiness": PROBE},
            required=["kind"],
        ),
        "service": obj(
            {"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}, "annotations": STRING_MAP},
        ),
        "autoscaling": obj(
            {
                "enabled": BOOL,
                "minReplicas": integer(1),
                "maxReplicas": integer(1),
                "targetCPUUtilizationPercentage": PERCENT,
                "targetMemoryUtilizationPercentage": {"anyOf": [PERCENT, {"type": "null"}]},
                "scaleDownStabilizationSeconds": integer(0),
            },
            required=["enabled", "minReplicas", "maxReplicas", "targetCPUUtilizationPercentage"],
        ),
        "pdb": obj({"enabled": BOOL, "maxUnavailable": INT_OR_PERCENT, "minAvailable": INT_OR_PERCENT}),
        "networkPolicy": obj(
            {
                "allowedCallers": array({"enum": [*COMPONENTS, "jobs"]}, uniqueItems=True),
                "extraFrom": OBJECT_LIST,
                "public": BOOL,
            },
        ),
        "serviceMonitor": obj({"enabled": {"type": ["boolean", "null"]}, "interval": DURATION, "labels": STRING_MAP}),
        "serviceAccount": obj({"create": BOOL, "name": string(), "annotations": STRING_MAP}),
        "persistence": obj(
            {"enabled": BOOL, "existingClaim": string(), "size": QUANTITY, "storageClassName": string()}
        ),
        "podAnnotations": STRING_MAP,
        "podLabels": STRING_MAP,
        "podSecurityContext": ANY_OBJECT,
        "securityContext": ANY_OBJECT,
        "priorityClassName": string(),
        "terminationGracePeriodSeconds": integer(0),
        "preStopSleepSeconds": integer(0),
        "shmSize": {"anyOf": [QUANTITY, string(maxLength=0)]},
        "initContainers": OBJECT_LIST,
        "extraVolumes": OBJECT_LIST,
        "extraVolumeMounts": OBJECT_LIST,
        "nodeSelector": STRING_MAP,
        "tolerations": OBJECT_LIST,
        "affinity": ANY_OBJECT,
        "topologySpreadConstraints": OBJECT_LIST,
        "spreadAcrossNodes": BOOL,
        "artifactsReadOnly": BOOL,
    }
    properties.update(copy.deepcopy(extra_properties or {}))
    return {
        "$schema": DRAFT,
        "title": f"recsys {name} chart values",
        **obj(
            properties,
            required=["replicas", "image", "resources", "probes", "service", "autoscaling", "pdb", "networkPolicy"],
        ),
    }


EXPERIMENTS = obj(
    {
        "salt": string(),
        "variants": array(
            obj(
                {
                    "name": string(minLength=1),
                    "share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "ranker": {"enum": RANKERS, "description": "Ranker of the variant"},
                    "model_version": string(),
                    "retrieval_k": integer(1),
                    "exploration": string(description="Exploration policy, e.g. epsilon=0.1,pool=20, or none"),
                    "fresh_share": {"type": "number", "minimum": 0, "maximum": 1,
                                    "description": "Share of the k slots reserved for new items (FRESH)"},
                },
                required=["name", "share", "ranker"],
            ),
            minItems=1,
        ),
    },
    required=["variants"],
)

RAY_GROUP = {
    "rayStartParams": STRING_MAP,
    "resources": RESOURCES,
}

SERVICES: dict[str, Schema] = {
    "features": {},
    "candidates": {
        "embeddedIndex": obj({"enabled": BOOL, "args": array(string(), minItems=1), "resources": RESOURCES}),
    },
    "gateway": {
        "configJson": obj({"RECSYS_EXPERIMENTS": EXPERIMENTS}, extra=True, propertyNames=ENV_NAME),
    },
    "monitoring": {
        "dashboard": obj({"enabled": BOOL, "port": PORT}, required=["enabled", "port"]),
        "retrainOnDrift": obj(
            {
                "enabled": BOOL,
                "minIntervalSeconds": integer(0, description="Least seconds between two retrains drift starts"),
            },
            required=["enabled", "minIntervalSeconds"],
        ),
    },
    "ranking": {
        "mode": {"enum": ["rayservice", "deployment"], "description": "How ranking runs"},
        "ray": obj(
            {
                "rayVersion": string(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$"),
                "serve": obj(
                    {
                        "importPath": string(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"),
                        "args": ANY_OBJECT,
                        "deployments": array(obj({"name": string(minLength=1)}, required=["name"], extra=True)),
                        "httpPort": PORT,
                    },
                    required=["importPath", "httpPort"],
                ),
                "head": obj({**RAY_GROUP, "schedulesReplicas": BOOL}, required=["resources"]),
                "workers": obj(
                    {**RAY_GROUP, "replicas": integer(0), "minReplicas": integer(0), "maxReplicas": integer(1)},
                    required=["replicas", "minReplicas", "maxReplicas", "resources"],
                ),
                "autoscaler": obj(
                    {
                        "enabled": BOOL,
                        "idleTimeoutSeconds": integer(0),
                        "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
                    }
                ),
                "shmSize": QUANTITY,
                "rayClusterDeletionDelaySeconds": integer(0),
                "operatorFrom": OBJECT_LIST,
            },
            required=["rayVersion", "serve", "head", "workers", "autoscaler"],
        ),
    },
}


AUTO_BOOL: Schema = {"enum": ["auto", True, False], "description": "auto: when the cluster serves PrometheusRule"}
LABEL_KEY = string(
    pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", maxLength=316
)
PROM_DURATION = string(pattern="^(0|(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?)$", minLength=1)
SEVERITY = string(minLength=1)
# Each alert's values: (threshold schema or None, more properties).
ALERTS: dict[str, tuple[Schema | None, Schema]] = {
    "highP99Latency": ({"type": "number", "exclusiveMinimum": 0, "description": "seconds"}, {}),
    "degradedShareHigh": ({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, {}),
    "errorRateHigh": (
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        {"codes": string(pattern="^[A-Z_]+(\\|[A-Z_]+)*$", description="gRPC codes, |-separated")},
    ),
    "consumerLagHigh": ({"type": "number", "minimum": 0, "description": "records"}, {}),
    "dataDrift": (None, {}),
    "ctrDrop": ({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, {}),
    "targetDown": (None, {"jobs": array(string(minLength=1), uniqueItems=True)}),
}


def observability_schema() -> Schema:
    """observability: the Grafana dashboards' ConfigMaps and the PrometheusRule (templates/observability.yaml)."""
    alerts = {}
    for name, (threshold, more) in ALERTS.items():
        properties: Schema = {"enabled": BOOL, "for": PROM_DURATION, "severity": SEVERITY, **more}
        required = ["enabled", "for", "severity"]
        if threshold is not None:
            properties["threshold"] = threshold
            required.append("threshold")
        alerts[name] = obj(properties, required=[*required, *more])
    dashboards = obj(
        {
            "enabled": AUTO_BOOL,
            "label": LABEL_KEY,
            "labelValue": string(pattern="^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", maxLength=63),
            "labels": STRING_MAP,
            "annotations": STRING_MAP,
        },
        required=["enabled", "label", "labelValue"],
    )
    rule = obj(
        {
            "enabled": AUTO_BOOL,
            "labels": STRING_MAP,
            "ruleLabels": STRING_MAP,
            "matchers": string(description='PromQL label matchers (namespace="recsys"); empty = the release namespace'),
            "rateWindow": string(pattern="^([0-9]+(d|h|m|s))+$"),
            "alerts": obj(alerts, required=list(ALERTS)),
        },
        required=["enabled", "rateWindow", "alerts"],
    )
    return obj(
        {"grafanaDashboards": dashboards, "prometheusRule": rule}, required=["grafanaDashboards", "prometheusRule"]
    )


def umbrella_schema() -> Schema:
    credentials = {
        name: obj(
            {
                "existingSecret": string(),
                "env": {"type": "object", "propertyNames": ENV_NAME, "additionalProperties": string(minLength=1)},
                **({"username": string()} if name == "kafka" else {}),
            },
            required=["env"],
        )
        for name in INFRA
    }
    global_schema = obj(
        {
            "image": obj(
                {
                    "registry": string(),
                    "repository": string(minLength=1),
                    "tag": string(),
                    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                },
                required=["repository"],
            ),
            "imagePullSecrets": array(string()),
            "ports": obj({name: PORT for name in COMPONENTS}),
            "metricsPort": PORT,
            "addresses": obj({name: string(pattern="^[^:]+:[0-9]+$") for name in COMPONENTS}),
            "config": CONFIG,
            "envLeftAtDefault": ENV_LIST,
            "paths": obj({"state": string(pattern="^/"), "artifacts": string(pattern="^/")}),
            "artifacts": obj({"enabled": BOOL, "existingClaim": string()}),
            "kafka": obj(
                {
                    "mode": {"enum": ["strimzi", "external"]},
                    "bootstrap": string(),
                    "clusterName": {"anyOf": [DNS_LABEL, string(maxLength=0)]},
                    "securityProtocol": {"enum": ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]},
                    "saslMechanism": {"enum": ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]},
                    "caSecret": string(),
                    "caKey": string(minLength=1),
                    "topics": obj({k: string(minLength=1) for k in TOPICS}),
                },
                required=["mode"],
            ),
            "redis": obj(
                {"mode": {"enum": ["chart", "external"]}, "address": string(), "db": integer(0), "tls": BOOL},
                required=["mode"],
            ),
            "milvus": obj(
                {"mode": {"enum": ["embedded", "chart", "external"]}, "uri": string()},
                required=["mode"],
            ),
            "ranking": obj({"app": string(minLength=1)}),
            "tls": obj(
                {
                    "enabled": BOOL,
                    "clientAuth": {"enum": ["none", "require"]},
                    "publicClientAuth": {"enum": ["none", "require"]},
                    "mountPath": string(pattern="^/"),
                    "secretName": string(),
                    "certManager": obj(
                        {
                            "enabled": BOOL,
                            "issuerRef": obj({"name": string(), "kind": string(minLength=1), "group": string()}),
                            "duration": string(pattern="^([0-9]+(h|m|s))+$"),
                            "renewBefore": string(pattern="^([0-9]+(h|m|s))+$"),
                            "clusterDomain": string(minLength=1),
                        }
                    ),
                }
            ),
            "auth": obj(
                {
                    "mode": {"enum": ["off", "api_key", "jwt", "any"]},
                    "existingSecret": string(),
                    "mountPath": string(pattern="^/"),
                    "jwtIssuer": string(),
                    "jwtAudience": string(),
                }
            ),
            "credentials": obj(credentials),
            "networkPolicy": obj({"enabled": BOOL, "metricsFrom": OBJECT_LIST}),
            "serviceMonitor": obj({"enabled": BOOL, "interval": DURATION, "labels": STRING_MAP}),
        },
        required=["image", "kafka", "redis", "milvus", "credentials"],
    )
    jobs = obj(
        {
            "image": IMAGE,
            "config": CONFIG,
            "envLeftAtDefault": ENV_LIST,
            "podSecurityContext": ANY_OBJECT,
            "securityContext": ANY_OBJECT,
            "nodeSelector": STRING_MAP,
            "tolerations": OBJECT_LIST,
            "resources": RESOURCES,
            "backoffLimit": integer(0),
            "activeDeadlineSeconds": integer(1),
            "ttlSecondsAfterFinished": integer(0),
            "definitions": {
                "type": "object",
                "propertyNames": DNS_LABEL,
                "additionalProperties": obj(
                    {
                        "enabled": BOOL,
                        "hook": BOOL,
                        "hookWeight": integer(None),
                        "backoffLimit": integer(0),
                        "activeDeadlineSeconds": integer(1),
                        "steps": array(STEP, minItems=1),
                    },
                    required=["enabled", "steps"],
                ),
            },
            "rayJobs": obj(
                {
                    "rayVersion": string(minLength=1),
                    "backoffLimit": integer(0),
                    "ttlSecondsAfterFinished": integer(0),
                    "submitterFrom": OBJECT_LIST,
                    "head": obj({"resources": RESOURCES}),
                    "worker": obj({"resources": RESOURCES}),
                    "definitions": {
                        "type": "object",
                        "propertyNames": string(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=40),
                        "additionalProperties": obj(
                            {
                                "enabled": BOOL,
                                "workers": integer(1),
                                "hookWeight": integer(None),
                                "args": array(string(), minItems=1),
                                "backoffLimit": integer(0),
                                "activeDeadlineSeconds": integer(1),
                            },
                            required=["enabled", "workers", "args"],
                        ),
                    },
                },
                required=["rayVersion", "backoffLimit", "ttlSecondsAfterFinished", "submitterFrom", "head", "worker",
                          "definitions"],
            ),
        },
        required=["resources", "definitions"],
    )
    cron_jobs = {
        "type": "object",
        "propertyNames": DNS_LABEL,
        "additionalProperties": obj(
            {
                "enabled": BOOL,
                "schedule": string(
                    pattern=r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$",
                    description="cron schedule (5 fields)",
                ),
                "timeZone": string(),
                "suspend": BOOL,
                "backoffLimit": integer(0),
                "activeDeadlineSeconds": integer(1),
                "steps": array(STEP, minItems=1),
            },
            required=["enabled", "schedule", "steps"],
        ),
    }
    eventlog = obj(
        {
            "enabled": BOOL,
            "uri": string(
                minLength=1,
                pattern=r"^(/|[A-Za-z][A-Za-z0-9+.-]*://)",
                description="an absolute path in the pods or an object-store URI (s3://bucket/prefix)",
            ),
            "replicas": integer(0),
            "command": array(string(), minItems=1),
            "config": CONFIG,
            "envLeftAtDefault": ENV_LIST,
            "storageEnv": array(obj({"name": ENV_NAME}, required=["name"], extra=True)),
            "resources": RESOURCES,
            "terminationGracePeriodSeconds": integer(0),
            "podSecurityContext": ANY_OBJECT,
            "securityContext": ANY_OBJECT,
            "nodeSelector": STRING_MAP,
            "tolerations": OBJECT_LIST,
            "affinity": ANY_OBJECT,
        },
        required=["enabled", "uri", "replicas", "command", "resources"],
    )
    toggle = obj({"enabled": BOOL}, required=["enabled"], extra=True)
    properties_observability = observability_schema()
    properties: Schema = {
        "global": global_schema,
        "recsys-lib": ANY_OBJECT,
        **{name: toggle for name in COMPONENTS},
        "secrets": obj(
            {
                "milvus": obj({"token": string()}),
                "redis": obj({"password": string()}),
                "kafka": obj({"password": string()}),
            }
        ),
        "artifacts": obj(
            {
                "size": QUANTITY,
                "accessModes": array({"enum": ["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]}, minItems=1),
                "storageClassName": string(),
                "annotations": STRING_MAP,
            },
            required=["size", "accessModes"],
        ),
        "redis": obj(
            {
                "image": obj(
                    {
                        "repository": string(minLength=1),
                        "tag": string(minLength=1),
                        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                    },
                    required=["repository", "tag"],
                ),
                "persistence": obj({"enabled": BOOL, "size": QUANTITY, "storageClassName": string()}),
                "maxmemory": string(pattern="^[0-9]+(b|kb|mb|gb)?$"),
                "resources": RESOURCES,
            },
            required=["image", "persistence", "resources"],
        ),
        "kafka": obj(
            {
                "version": string(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$"),
                "metadataVersion": string(),
                "replicas": integer(1),
                "storage": obj(
                    {"size": QUANTITY, "storageClassName": string(), "deleteClaim": BOOL}, required=["size"]
                ),
                "resources": RESOURCES,
                "config": {"type": "object"},
                "topics": obj(
                    {"partitions": integer(1), "replicas": integer(1, 32767), "retentionMs": integer(-1)},
                    required=["partitions", "replicas"],
                ),
                "authorization": BOOL,
                "aclGroupPrefix": string(minLength=1),
            },
            required=["version", "replicas", "storage", "topics"],
        ),
        "milvus": obj({"enabled": BOOL}, required=["enabled"], extra=True),
        "jobs": jobs,
        "cronJobs": cron_jobs,
        "eventlog": eventlog,
        "observability": properties_observability,
    }
    return {
        "$schema": DRAFT,
        "title": "recsys umbrella chart values",
        **obj(properties, required=["global", *COMPONENTS, "jobs", "cronJobs", "eventlog", "observability"]),
    }


def schemas() -> dict[Path, Schema]:
    """Every chart's schema by the path it is written to."""
    out = {UMBRELLA / "values.schema.json": umbrella_schema()}
    for name, extra in SERVICES.items():
        out[UMBRELLA / "charts" / name / "values.schema.json"] = service_schema(name, extra)
    return out


def render(schema: Schema) -> str:
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for path, schema in schemas().items():
        text = render(schema)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(HELM.parent)))
        else:
            path.write_text(text)
    if stale:
        print("stale (run python helm/tools/schemas.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
