"""The ``helm.cattle.io/v1`` kinds: ``HelmChart`` and ``HelmChartConfig``, as K3s serves them.

Field names and meanings are K3s's helm-controller's (``spec.chart``, ``repo``, ``version``,
``targetNamespace``, ``createNamespace``, ``set``, ``values``, ``valuesContent``,
``chartContent``, ``repoCA``, ``repoCAConfigMap``, ``authSecret``, ``timeout``,
``failurePolicy``, ...; ``status.jobName`` and ``status.conditions``), so manifests written for
K3s apply unchanged. Fields K3s uses only to shape its Helm Job (``jobImage``,
``backOffLimit``, ``podSecurityContext``, ``securityContext``, ``dockerRegistrySecret``) are
accepted and have no effect here: Sampan runs Helm itself, not in a Job.

Sampan adds to the status what a user otherwise reads from ``helm status``:
``releaseRevision``, ``releaseStatus``, ``chartVersion``, ``observedGeneration`` and
``configHash`` (the inputs last applied; unchanged inputs are not applied again).
"""

from __future__ import annotations

from typing import Any

from sampan.client import Resource

__all__ = [
    "FINALIZER",
    "GROUP",
    "HELMCHARTCONFIGS",
    "HELMCHARTS",
    "VERSION",
    "helm_crds",
]

GROUP = "helm.cattle.io"
VERSION = "v1"
HELMCHARTS = Resource(GROUP, VERSION, "helmcharts", "HelmChart", True)
HELMCHARTCONFIGS = Resource(GROUP, VERSION, "helmchartconfigs", "HelmChartConfig", True)
FINALIZER = "wrangler.cattle.io/on-helm-chart-remove"
"""K3s's finalizer name (wrangler's on-remove handler "on-helm-chart-remove")."""

_STRING: dict[str, Any] = {"type": "string"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_FREE: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}
_LOCAL_REF: dict[str, Any] = {
    "type": "object",
    "properties": {"name": _STRING},
    "x-kubernetes-map-type": "atomic",
}
_SECRET_SPECS: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": _STRING,
            "keys": {"type": "array", "items": _STRING},
            "ignoreUpdates": _BOOL,
        },
    },
}
_FAILURE_POLICY: dict[str, Any] = {"type": "string", "enum": ["abort", "reinstall", "retry"]}
_SERVER_SIDE: dict[str, Any] = {"type": "string", "enum": ["true", "false", "auto"]}


def _chart_spec() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "targetNamespace": _STRING,
            "createNamespace": _BOOL,
            "chart": _STRING,
            "version": _STRING,
            "repo": _STRING,
            "repoCA": _STRING,
            "repoCAConfigMap": _LOCAL_REF,
            "set": {
                "type": "object",
                "additionalProperties": {"x-kubernetes-int-or-string": True},
            },
            "values": {"type": "object", **_FREE},
            "valuesContent": _STRING,
            "valuesSecrets": _SECRET_SPECS,
            "helmVersion": _STRING,
            "bootstrap": _BOOL,
            "takeOwnership": _BOOL,
            "serverSide": _SERVER_SIDE,
            "forceConflicts": _BOOL,
            "chartContent": _STRING,
            "jobImage": _STRING,
            "backOffLimit": {"type": "integer", "format": "int32"},
            "timeout": _STRING,
            "failurePolicy": _FAILURE_POLICY,
            "authSecret": _LOCAL_REF,
            "authPassCredentials": _BOOL,
            "insecureSkipTLSVerify": _BOOL,
            "plainHTTP": _BOOL,
            "dockerRegistrySecret": _LOCAL_REF,
            "podSecurityContext": {"type": "object", **_FREE},
            "securityContext": {"type": "object", **_FREE},
            "driver": {"type": "string", "enum": ["secret", "configmap"]},
        },
    }


def _chart_status() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "jobName": _STRING,
            "conditions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "status"],
                    "properties": {
                        "type": _STRING,
                        "status": _STRING,
                        "reason": _STRING,
                        "message": _STRING,
                        "lastTransitionTime": {"type": "string", "format": "date-time"},
                    },
                },
            },
            "releaseName": _STRING,
            "releaseNamespace": _STRING,
            "releaseRevision": {"type": "integer", "format": "int64"},
            "releaseStatus": _STRING,
            "chartVersion": _STRING,
            "observedGeneration": {"type": "integer", "format": "int64"},
            "configHash": _STRING,
        },
    }


def _crd(
    resource: Resource,
    singular: str,
    short_names: list[str],
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
    status: bool,
) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "additionalPrinterColumns": columns,
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": resource.plural,
                "singular": singular,
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "shortNames": short_names,
            },
            "versions": [version],
        },
    }


def helm_crds() -> list[dict[str, Any]]:
    """The two CustomResourceDefinitions (created by the helm controller at start)."""
    chart_schema = {
        "type": "object",
        "properties": {
            "apiVersion": _STRING,
            "kind": _STRING,
            "metadata": {"type": "object"},
            "spec": _chart_spec(),
            "status": _chart_status(),
        },
    }
    config_schema = {
        "type": "object",
        "properties": {
            "apiVersion": _STRING,
            "kind": _STRING,
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "properties": {
                    "values": {"type": "object", **_FREE},
                    "valuesContent": _STRING,
                    "valuesSecrets": _SECRET_SPECS,
                    "failurePolicy": _FAILURE_POLICY,
                    "serverSide": _SERVER_SIDE,
                    "forceConflicts": _BOOL,
                },
            },
        },
    }
    chart_columns = [
        {"name": "Repo", "type": "string", "jsonPath": ".spec.repo"},
        {"name": "Chart", "type": "string", "jsonPath": ".spec.chart"},
        {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
        {"name": "TargetNamespace", "type": "string", "jsonPath": ".spec.targetNamespace"},
        {"name": "Bootstrap", "type": "boolean", "jsonPath": ".spec.bootstrap"},
        {
            "name": "Failed",
            "type": "string",
            "jsonPath": ".status.conditions[?(@.type=='Failed')].status",
        },
        {"name": "Revision", "type": "integer", "jsonPath": ".status.releaseRevision"},
        {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 10},
    ]
    return [
        _crd(HELMCHARTS, "helmchart", ["hc"], chart_schema, chart_columns, status=True),
        _crd(HELMCHARTCONFIGS, "helmchartconfig", ["hcc"], config_schema, [], status=False),
    ]
