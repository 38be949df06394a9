"""The manager's state: custom resources of ``management.sampan.io/v1`` and their CRDs.

Rancher keeps its management state as ``management.cattle.io`` objects in its own cluster; the
manager does the same under its own group. Every kind here is cluster-scoped (Rancher puts
registration tokens and cluster role template bindings in a per-cluster namespace; one scope
keeps the manager's RBAC in one place: only the manager and cluster admins of the local
cluster read or write these objects).

* ``Cluster``: one managed cluster; ``local`` is the manager's own. ``spec.displayName``,
  ``spec.description``; ``status``: conditions ``Connected``/``Ready``, ``version``,
  ``nodeCount``, ``capacity``, ``allocatable``, ``agentVersion``, ``lastHeartbeat``.
* ``ClusterRegistrationToken``: the secret in an import URL
  (``/v3/import/<token>_<cluster>.yaml``); ``spec.expiresAt`` optional.
* ``User``: a local user; ``spec.passwordHash`` is an argon2id hash (never the password);
  ``status`` counts failed logins and holds the lockout end.
* ``Token``: a login token ``<name>:<secret>``; only ``spec.hash`` (SHA-256 of the secret) is
  stored, never the secret.
* ``GlobalRoleBinding``: ``spec.userId`` holds ``spec.globalRoleName`` (``admin`` or
  ``user``); ``admin`` manages clusters, users and bindings.
* ``ClusterRoleTemplateBinding``: ``spec.userId`` holds ``spec.roleTemplateName`` on
  ``spec.clusterName``; a user sees exactly the clusters they are bound to.
* ``RoleTemplate``: named sets of RBAC rules; the built-ins ``cluster-owner``,
  ``cluster-member`` and ``read-only`` are written at every start (``spec.builtin: true``).

Labels the manager sets so it can select without scanning: ``LABEL_USER_ID`` on Tokens,
``LABEL_USERNAME`` on Users, ``LABEL_CLUSTER`` on registration tokens and bindings.
"""

from __future__ import annotations

from typing import Any

from sampan.client import Resource
from sampan.client.crds import CRDS

__all__ = [
    "ADMIN_ROLE",
    "ALL",
    "BUILTIN_ROLE_TEMPLATES",
    "CLUSTERS",
    "CLUSTER_ROLE_TEMPLATE_BINDINGS",
    "CRDS",
    "GLOBAL_ROLE_BINDINGS",
    "GROUP",
    "LABEL_CLUSTER",
    "LABEL_USERNAME",
    "LABEL_USER_ID",
    "LOCAL_CLUSTER",
    "REGISTRATION_TOKENS",
    "ROLE_TEMPLATES",
    "TOKENS",
    "USERS",
    "USER_ROLE",
    "VERSION",
    "builtin_role_templates",
    "manager_crds",
]

GROUP = "management.sampan.io"
VERSION = "v1"

CLUSTERS = Resource(GROUP, VERSION, "clusters", "Cluster", False)
REGISTRATION_TOKENS = Resource(
    GROUP, VERSION, "clusterregistrationtokens", "ClusterRegistrationToken", False
)
USERS = Resource(GROUP, VERSION, "users", "User", False)
TOKENS = Resource(GROUP, VERSION, "tokens", "Token", False)
GLOBAL_ROLE_BINDINGS = Resource(GROUP, VERSION, "globalrolebindings", "GlobalRoleBinding", False)
CLUSTER_ROLE_TEMPLATE_BINDINGS = Resource(
    GROUP, VERSION, "clusterroletemplatebindings", "ClusterRoleTemplateBinding", False
)
ROLE_TEMPLATES = Resource(GROUP, VERSION, "roletemplates", "RoleTemplate", False)
ALL = (
    CLUSTERS,
    REGISTRATION_TOKENS,
    USERS,
    TOKENS,
    GLOBAL_ROLE_BINDINGS,
    CLUSTER_ROLE_TEMPLATE_BINDINGS,
    ROLE_TEMPLATES,
)

LOCAL_CLUSTER = "local"
ADMIN_ROLE = "admin"
USER_ROLE = "user"
LABEL_USER_ID = f"{GROUP}/user-id"
LABEL_USERNAME = f"{GROUP}/username"
LABEL_CLUSTER = f"{GROUP}/cluster"

_STRING: dict[str, Any] = {"type": "string"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
_INT: dict[str, Any] = {"type": "integer", "format": "int64"}
_QUANTITIES: dict[str, Any] = {"type": "object", "additionalProperties": _STRING}
_NAME: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 253}
_CONDITIONS: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": _STRING,
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": _STRING,
            "message": _STRING,
            "lastTransitionTime": _TIME,
            "lastUpdateTime": _TIME,
        },
    },
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}
_RULES: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["verbs"],
        "properties": {
            "apiGroups": {"type": "array", "items": _STRING},
            "resources": {"type": "array", "items": _STRING},
            "resourceNames": {"type": "array", "items": _STRING},
            "nonResourceURLs": {"type": "array", "items": _STRING},
            "verbs": {"type": "array", "items": _STRING},
        },
    },
}


def _object(
    spec: dict[str, Any], status: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": _STRING,
        "kind": _STRING,
        "metadata": {"type": "object"},
        "spec": {"type": "object", **spec},
    }
    if status is not None:
        properties["status"] = {"type": "object", "properties": status}
    return {"type": "object", "required": ["spec"], "properties": properties, **extra}


def _crd(
    resource: Resource,
    singular: str,
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
    *,
    status: bool,
) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "additionalPrinterColumns": [
            *columns,
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "plural": resource.plural,
                "singular": singular,
                "kind": resource.kind,
                "listKind": resource.list_kind,
                "categories": ["sampan-management"],
            },
            "versions": [version],
        },
    }


def _column(name: str, path: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path}


def manager_crds() -> list[dict[str, Any]]:
    """The seven CustomResourceDefinitions, with structural schemas."""
    cluster = _object(
        {
            "properties": {
                "displayName": _STRING,
                "description": _STRING,
                "internal": _BOOL,
            }
        },
        {
            "conditions": _CONDITIONS,
            "version": _STRING,
            "nodeCount": _INT,
            "capacity": _QUANTITIES,
            "allocatable": _QUANTITIES,
            "agentVersion": _STRING,
            "lastHeartbeat": _TIME,
        },
    )
    registration = _object(
        {
            "required": ["clusterName", "token"],
            "properties": {"clusterName": _NAME, "token": _STRING, "expiresAt": _TIME},
        }
    )
    user = _object(
        {
            "required": ["username"],
            "properties": {
                "username": {"type": "string", "minLength": 1, "maxLength": 63},
                "displayName": _STRING,
                "description": _STRING,
                "passwordHash": _STRING,
                "mustChangePassword": _BOOL,
                "enabled": _BOOL,
            },
        },
        {"failedLogins": _INT, "lockedUntil": _TIME, "lastLogin": _TIME},
    )
    token = _object(
        {
            "required": ["userId", "hash"],
            "properties": {
                "userId": _NAME,
                "hash": _STRING,
                "authProvider": _STRING,
                "description": _STRING,
                "ttlMillis": _INT,
                "expiresAt": _TIME,
            },
        }
    )
    global_binding = _object(
        {
            "required": ["userId", "globalRoleName"],
            "properties": {
                "userId": _NAME,
                "globalRoleName": {"type": "string", "enum": [ADMIN_ROLE, USER_ROLE]},
            },
        }
    )
    cluster_binding = _object(
        {
            "required": ["userId", "clusterName", "roleTemplateName"],
            "properties": {
                "userId": _NAME,
                "clusterName": _NAME,
                "roleTemplateName": _NAME,
            },
        }
    )
    role_template = _object(
        {
            "properties": {
                "displayName": _STRING,
                "description": _STRING,
                "context": {"type": "string", "enum": ["cluster"]},
                "builtin": _BOOL,
                "rules": _RULES,
            }
        }
    )
    return [
        _crd(
            CLUSTERS,
            "cluster",
            cluster,
            [
                _column("Display Name", ".spec.displayName"),
                _column("Connected", '.status.conditions[?(@.type=="Connected")].status'),
                _column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
                _column("Version", ".status.version"),
                _column("Nodes", ".status.nodeCount", "integer"),
            ],
            status=True,
        ),
        _crd(
            REGISTRATION_TOKENS,
            "clusterregistrationtoken",
            registration,
            [_column("Cluster", ".spec.clusterName"), _column("Expires", ".spec.expiresAt")],
            status=False,
        ),
        _crd(
            USERS,
            "user",
            user,
            [
                _column("Username", ".spec.username"),
                _column("Must Change Password", ".spec.mustChangePassword", "boolean"),
            ],
            status=True,
        ),
        _crd(
            TOKENS,
            "token",
            token,
            [_column("User", ".spec.userId"), _column("Expires", ".spec.expiresAt")],
            status=False,
        ),
        _crd(
            GLOBAL_ROLE_BINDINGS,
            "globalrolebinding",
            global_binding,
            [_column("User", ".spec.userId"), _column("Role", ".spec.globalRoleName")],
            status=False,
        ),
        _crd(
            CLUSTER_ROLE_TEMPLATE_BINDINGS,
            "clusterroletemplatebinding",
            cluster_binding,
            [
                _column("User", ".spec.userId"),
                _column("Cluster", ".spec.clusterName"),
                _column("Role Template", ".spec.roleTemplateName"),
            ],
            status=False,
        ),
        _crd(
            ROLE_TEMPLATES,
            "roletemplate",
            role_template,
            [_column("Display Name", ".spec.displayName"), _column("Context", ".spec.context")],
            status=False,
        ),
    ]


_READ = ["get", "list", "watch"]
_WORKLOADS: list[dict[str, Any]] = [
    {
        "apiGroups": ["", "apps", "batch", "autoscaling", "networking.k8s.io", "policy"],
        "resources": ["*"],
        "verbs": ["*"],
    }
]


def builtin_role_templates() -> list[dict[str, Any]]:
    """``cluster-owner`` (everything), ``cluster-member`` (read everything, manage workloads
    and their Services, config and networking), ``read-only`` (get/list/watch everything).

    A binding decides which clusters a user sees in the manager's API, and
    ``sampan.manager.downstream_rbac`` turns it into RBAC on that cluster (``cluster-owner``
    as ``cluster-admin``, the others as a ClusterRole with these rules).
    """
    everything = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    read_all = [{"apiGroups": ["*"], "resources": ["*"], "verbs": list(_READ)}]
    templates = [
        ("cluster-owner", "Cluster Owner", "Full control of the cluster", everything),
        (
            "cluster-member",
            "Cluster Member",
            "Read everything; manage workloads, Services and configuration",
            read_all + _WORKLOADS,
        ),
        ("read-only", "Read-only", "Read everything in the cluster", read_all),
    ]
    return [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RoleTemplate",
            "metadata": {"name": name},
            "spec": {
                "displayName": display,
                "description": description,
                "context": "cluster",
                "builtin": True,
                "rules": rules,
            },
        }
        for name, display, description, rules in templates
    ]


BUILTIN_ROLE_TEMPLATES = ("cluster-owner", "cluster-member", "read-only")
