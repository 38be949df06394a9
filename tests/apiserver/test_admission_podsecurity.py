"""PodSecurity admission: namespace labels enforce/warn the Pod Security Standards; kubectl
shows the refusals and the Warning headers as on a real cluster."""

from __future__ import annotations

import json
import os

import pytest

from sampan.apiserver.admission.podsecurity import check_pod
from tests.apiserver.test_http_clients import KUBECTL, kubectl, ok

LABEL = "pod-security.kubernetes.io/"


def pod_yaml(name: str, namespace: str, **spec: object) -> bytes:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec},
    }
    return json.dumps(body).encode()


RESTRICTED_OK = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "c",
            "image": "busybox",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }
    ],
}


def test_check_messages():
    spec = {"containers": [{"name": "c", "image": "x"}]}
    assert check_pod("restricted", {}, spec) == [
        'allowPrivilegeEscalation != false (container "c" must set '
        "securityContext.allowPrivilegeEscalation=false)",
        'unrestricted capabilities (container "c" must set '
        'securityContext.capabilities.drop=["ALL"])',
        'runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true)',
        'seccompProfile (pod or container "c" must set securityContext.seccompProfile.type '
        'to "RuntimeDefault" or "Localhost")',
    ]
    assert check_pod("baseline", {}, spec) == []
    assert check_pod("restricted", {}, RESTRICTED_OK) == []
    privileged = {
        "hostNetwork": True,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [
            {
                "name": "c",
                "image": "x",
                "securityContext": {"privileged": True},
                "ports": [{"containerPort": 80, "hostPort": 8080}],
            }
        ],
    }
    assert check_pod("baseline", {}, privileged) == [
        "host namespaces (hostNetwork=true)",
        'hostPath volumes (volume "root")',
        'hostPort (container "c" uses hostPort 8080)',
        'privileged (container "c" must not set securityContext.privileged=true)',
    ]
    assert check_pod("privileged", {}, privileged) == []
    explicit = {
        "securityContext": {
            "runAsNonRoot": False,
            "runAsUser": 0,
            "seccompProfile": {"type": "Unconfined"},
        },
        "containers": [
            {
                "name": "c",
                "image": "x",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN", "NET_ADMIN"]},
                    "runAsNonRoot": False,
                },
            }
        ],
    }
    assert check_pod("restricted", {}, explicit) == [
        'unrestricted capabilities (container "c" must not include "NET_ADMIN", "SYS_ADMIN" '
        "in securityContext.capabilities.add)",
        'runAsNonRoot != true (pod and container "c" must not set '
        "securityContext.runAsNonRoot=false)",
        "runAsUser=0 (pod must not set runAsUser=0)",
        'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")',
    ]


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
async def test_enforce_and_warn_with_kubectl(harness):
    await ok(harness, "create", "namespace", "secure")
    await ok(harness, "create", "serviceaccount", "default", "-n", "secure")
    await ok(harness, "label", "namespace", "secure", f"{LABEL}enforce=baseline")
    await ok(harness, "label", "namespace", "secure", f"{LABEL}warn=restricted")

    code, _, err = await kubectl(
        harness, "apply", "-f", "-", stdin=pod_yaml("bad", "secure", hostNetwork=True)
    )
    assert code != 0
    assert (
        'pods "bad" is forbidden: violates PodSecurity "baseline:latest": '
        "host namespaces (hostNetwork=true)" in err
    )

    code, _, err = await kubectl(harness, "apply", "-f", "-", stdin=pod_yaml("meh", "secure"))
    assert code == 0, err
    assert 'Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation' in err

    code, _, err = await kubectl(
        harness, "apply", "-f", "-", stdin=pod_yaml("good", "secure", **RESTRICTED_OK)
    )
    assert code == 0 and "Warning" not in err

    # Tightening enforce warns about the pods already there.
    code, _, err = await kubectl(
        harness, "label", "--overwrite", "namespace", "secure", f"{LABEL}enforce=restricted"
    )
    assert code == 0, err
    assert (
        'Warning: existing pods in namespace "secure" violate the new PodSecurity enforce '
        'level "restricted:latest"' in err
    )
    assert "Warning: meh: allowPrivilegeEscalation != false" in err

    code, _, err = await kubectl(
        harness, "label", "--overwrite", "namespace", "secure", f"{LABEL}enforce=strict"
    )
    assert code != 0 and f"metadata.labels[{LABEL}enforce]" in err

    # Workloads are never refused, only warned about.
    code, _, err = await kubectl(
        harness, "create", "deployment", "web", "--image=busybox", "-n", "secure"
    )
    assert code == 0, err
    assert 'Warning: would violate PodSecurity "restricted:latest"' in err


async def test_unlabelled_namespace_is_privileged(harness):
    status, created = await harness.request(
        "POST",
        "/api/v1/namespaces/default/pods",
        json.loads(pod_yaml("host", "default", hostNetwork=True, hostPID=True)),
    )
    assert status == 201, created
