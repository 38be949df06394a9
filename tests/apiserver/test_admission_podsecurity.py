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


def test_values_of_the_wrong_type_are_violations_never_false():
    def container(**sc: object) -> dict[str, object]:
        return {"name": "c", "image": "x", "securityContext": sc}

    assert check_pod("baseline", {}, {"containers": [container(privileged="true")]}) == [
        'privileged (container "c" must not set securityContext.privileged=true)'
    ]
    assert check_pod("baseline", {}, {"containers": [container(privileged="false")]}) == [
        'privileged (container "c" must not set securityContext.privileged=true)'
    ]
    host = {"hostNetwork": "true", "hostPID": 1, "hostIPC": False, "containers": [container()]}
    assert check_pod("baseline", {}, host) == ["host namespaces (hostNetwork=true, hostPID=true)"]
    odd = {
        "containers": [
            {"name": "c", "image": "x", "securityContext": "privileged"},
            container(capabilities={"add": "SYS_ADMIN"}),
        ]
    }
    found = check_pod("baseline", {}, odd)
    assert any(f.startswith("non-default capabilities") and "SYS_ADMIN" in f for f in found)
    assert any(f.startswith('privileged (container "c"') for f in found)
    # Restricted: runAsNonRoot must be the boolean true; runAsUser a non-zero integer.
    restricted = json.loads(json.dumps(RESTRICTED_OK))
    restricted["securityContext"]["runAsNonRoot"] = "true"
    restricted["containers"][0]["securityContext"]["runAsUser"] = "0"
    assert check_pod("restricted", {}, restricted) == [
        "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)",
        'runAsUser=0 (container "c" must not set runAsUser=0)',
    ]
    restricted["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = "false"
    assert "allowPrivilegeEscalation != false" in check_pod("restricted", {}, restricted)[0]
    # Malformed values never crash a check (unhashable where a name is expected).
    weird = {
        "securityContext": {"sysctls": [{"name": ["kernel.x"]}], "seLinuxOptions": {"type": []}},
        "containers": [container()],
    }
    found = check_pod("baseline", {}, weird)
    assert [f.split(" (")[0] for f in found] == ["seLinuxOptions", "forbidden sysctls"]


async def test_type_confusion_is_refused_in_a_baseline_namespace(harness):
    status, _ = await harness.request(
        "POST",
        "/api/v1/namespaces",
        {"metadata": {"name": "base", "labels": {f"{LABEL}enforce": "baseline"}}},
    )
    assert status == 201
    await harness.request(
        "POST", "/api/v1/namespaces/base/serviceaccounts", {"metadata": {"name": "default"}}
    )
    tricks = {
        "priv": {
            "containers": [
                {"name": "c", "image": "busybox", "securityContext": {"privileged": "true"}}
            ]
        },
        "hostnet": {"hostNetwork": "true"},
        "hostpid": {"hostPID": 1},
    }
    for name, spec in tricks.items():
        status, answer = await harness.request(
            "POST", "/api/v1/namespaces/base/pods", json.loads(pod_yaml(name, "base", **spec))
        )
        # Refused: by PodSecurity (403) here; by the API's typed decoding (400) where that
        # comes first. Never created.
        assert status in (400, 403), (name, status, answer)
        if status == 403:
            assert answer["reason"] == "Forbidden"
            assert 'violates PodSecurity "baseline:latest"' in answer["message"], answer
    status, answer = await harness.request(
        "POST",
        "/api/v1/namespaces/base/pods",
        json.loads(pod_yaml("mount", "base", automountServiceAccountToken="false")),
    )
    assert status in (400, 422), answer
    if status == 422:
        assert answer["details"]["causes"][0]["field"] == "spec.automountServiceAccountToken"
    status, answer = await harness.request(
        "POST", "/api/v1/namespaces/base/pods", json.loads(pod_yaml("fine", "base"))
    )
    assert status == 201, answer
