"""The import manifest a downstream cluster applies, and the registration commands.

``import_manifest`` renders what ``/v3/import/<token>_<cluster>.yaml`` serves (Rancher's import
URL shape), in order: namespace ``sampan-system``; ServiceAccount ``sampan-cluster-agent``
bound to ``cluster-admin`` by the ClusterRoleBinding ``sampan-cluster-agent``; the Secret
``sampan-cluster-agent-token`` of type ``kubernetes.io/service-account-token`` (a long-lived
token the downstream's token controller fills in, as Rancher's agent uses: the manager keeps
using it between the agent's reconnects, unlike a projected token that expires); the Secret
``sampan-cluster-agent-credentials`` whose keys are the agent's environment
(``SAMPAN_MANAGER_URL``, ``SAMPAN_CA_CHECKSUM`` — SHA-256 hex of the manager's CA PEM, as
served at ``/cacerts`` —, ``SAMPAN_CLUSTER_NAME`` and ``SAMPAN_TOKEN``, the registration
token); and the Deployment ``sampan-cluster-agent``: one replica of the cluster agent image
(``docker.io/sampan/cluster-agent:<version>``, built locally by every Sampan agent) running
``python3 -m sampan.manager.tunnel`` with ``envFrom`` that Secret,
``SAMPAN_ALLOWED_TARGETS`` = the downstream API server (``$(KUBERNETES_SERVICE_HOST):
$(KUBERNETES_SERVICE_PORT)``), no automounted token, and the token Secret's ``token`` and
``ca.crt`` mounted at ``SAMPAN_SERVICEACCOUNT_DIR`` (listed as items, so the pod waits until
the token controller has filled them in).
``kubeconfig`` renders what ``generateKubeconfig`` answers.

Pure functions: no I/O. The registration token is a secret; the manifest carries it only
inside the credentials Secret.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import yaml

__all__ = [
    "AGENT_IMAGE_REPOSITORY",
    "AGENT_NAME",
    "AGENT_NAMESPACE",
    "AGENT_SECRET",
    "AGENT_TOKEN_SECRET",
    "ca_checksum",
    "import_manifest",
    "import_path",
    "kubeconfig",
    "registration_commands",
]

AGENT_NAMESPACE = "sampan-system"
AGENT_NAME = "sampan-cluster-agent"
AGENT_SECRET = "sampan-cluster-agent-credentials"
AGENT_TOKEN_SECRET = "sampan-cluster-agent-token"
AGENT_SERVICEACCOUNT_DIR = "/var/run/secrets/sampan.io/serviceaccount"
AGENT_COMMAND = ["/usr/bin/python3", "-m", "sampan.manager.tunnel"]
AGENT_IMAGE_REPOSITORY = "docker.io/sampan/cluster-agent"
_LABELS = {"app.kubernetes.io/name": AGENT_NAME, "app.kubernetes.io/part-of": "sampan"}


def ca_checksum(ca_pem: bytes) -> str:
    """What ``SAMPAN_CA_CHECKSUM`` holds: the SHA-256 hex of the CA PEM (Rancher's
    ``CATTLE_CA_CHECKSUM`` of ``/cacerts``)."""
    return hashlib.sha256(ca_pem).hexdigest()


def _tag(version: str) -> str:
    """The image tag of a Sampan version (``+`` is not allowed in a tag)."""
    return version.replace("+", "-")


def import_path(token: str, cluster: str) -> str:
    return f"/v3/import/{token}_{cluster}.yaml"


def registration_commands(
    manager_url: str, token: str, cluster: str, ca_pem: bytes
) -> dict[str, str]:
    """Rancher's ``command`` / ``insecureCommand`` pair, with the URL and the CA checksum."""
    url = manager_url.rstrip("/") + import_path(token, cluster)
    checksum = ca_checksum(ca_pem)
    return {
        "manifestUrl": url,
        "command": f"kubectl apply -f {url}",
        "insecureCommand": f"curl --insecure -sfL {url} | kubectl apply -f -",
        "caChecksum": checksum,
        "caChecksumCommand": (
            f"curl --insecure -sfL {manager_url.rstrip('/')}/cacerts | sha256sum"
            f"  # expect {checksum}"
        ),
    }


def import_manifest(
    *, manager_url: str, token: str, cluster: str, ca_pem: bytes, agent_version: str
) -> str:
    """The YAML stream (six documents) a downstream cluster applies to import itself."""
    labels = dict(_LABELS)
    meta = {"name": AGENT_NAME, "namespace": AGENT_NAMESPACE, "labels": labels}
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": AGENT_NAMESPACE, "labels": labels},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": AGENT_NAME, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": AGENT_NAMESPACE}
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                **meta,
                "name": AGENT_TOKEN_SECRET,
                "annotations": {"kubernetes.io/service-account.name": AGENT_NAME},
            },
            "type": "kubernetes.io/service-account-token",
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {**meta, "name": AGENT_SECRET},
            "type": "Opaque",
            "data": {
                key: base64.b64encode(value.encode()).decode()
                for key, value in (
                    ("SAMPAN_MANAGER_URL", manager_url),
                    ("SAMPAN_CA_CHECKSUM", ca_checksum(ca_pem)),
                    ("SAMPAN_CLUSTER_NAME", cluster),
                    ("SAMPAN_TOKEN", token),
                )
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app.kubernetes.io/name": AGENT_NAME}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": AGENT_NAME,
                        "automountServiceAccountToken": False,
                        "containers": [
                            {
                                "name": "cluster-agent",
                                "image": f"{AGENT_IMAGE_REPOSITORY}:{_tag(agent_version)}",
                                "imagePullPolicy": "IfNotPresent",
                                "command": list(AGENT_COMMAND),
                                "envFrom": [{"secretRef": {"name": AGENT_SECRET}}],
                                "env": [
                                    {
                                        "name": "SAMPAN_ALLOWED_TARGETS",
                                        "value": "$(KUBERNETES_SERVICE_HOST):"
                                        "$(KUBERNETES_SERVICE_PORT)",
                                    },
                                    {
                                        "name": "SAMPAN_SERVICEACCOUNT_DIR",
                                        "value": AGENT_SERVICEACCOUNT_DIR,
                                    },
                                ],
                                "volumeMounts": [
                                    {
                                        "name": "serviceaccount",
                                        "mountPath": AGENT_SERVICEACCOUNT_DIR,
                                        "readOnly": True,
                                    }
                                ],
                            }
                        ],
                        "volumes": [
                            {
                                "name": "serviceaccount",
                                "secret": {
                                    "secretName": AGENT_TOKEN_SECRET,
                                    "items": [
                                        {"key": "token", "path": "token"},
                                        {"key": "ca.crt", "path": "ca.crt"},
                                    ],
                                },
                            }
                        ],
                    },
                },
            },
        },
    ]
    text: str = yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)
    return text


def kubeconfig(*, server: str, cluster: str, user: str, token: str, ca_pem: bytes) -> str:
    """A kubeconfig for one cluster through the manager's proxy (``generateKubeconfig``):
    context and cluster named after the cluster id, the manager's CA, the user's token."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": f"{user}@{cluster}", "user": {"token": token}}],
        "contexts": [
            {"name": cluster, "context": {"cluster": cluster, "user": f"{user}@{cluster}"}}
        ],
        "current-context": cluster,
        "preferences": {},
    }
    return str(yaml.safe_dump(doc, sort_keys=False))
