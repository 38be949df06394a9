"""pods/ephemeralcontainers and certificatesigningrequests/approval through the real API
server: only the subresource's own part changes, existing ephemeral containers are fixed, and
a plain pod update may not touch spec.ephemeralContainers."""

from __future__ import annotations

import copy

PODS = "/api/v1/namespaces/default/pods"
SMP = "application/strategic-merge-patch+json"


async def make_pod(harness, name: str = "x") -> dict:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    status, created = await harness.request("POST", PODS, body)
    assert status == 201, created
    return created


DEBUGGER = {
    "name": "debugger-1",
    "image": "busybox:1.36",
    "targetContainerName": "c",
    "command": ["ps"],
}


async def test_patch_adds_an_ephemeral_container_and_nothing_else(harness):
    await make_pod(harness)
    status, body = await harness.request("GET", f"{PODS}/x/ephemeralcontainers")
    assert status == 200 and body["kind"] == "Pod"
    # What kubectl debug sends: a strategic merge patch of the whole pod.
    patch = {
        "metadata": {"labels": {"app": "changed"}},
        "spec": {"ephemeralContainers": [DEBUGGER], "activeDeadlineSeconds": 5},
    }
    status, pod = await harness.request(
        "PATCH", f"{PODS}/x/ephemeralcontainers", patch, content_type=SMP
    )
    assert status == 200, pod
    (added,) = pod["spec"]["ephemeralContainers"]
    assert added["name"] == "debugger-1" and added["targetContainerName"] == "c"
    assert added["terminationMessagePolicy"] == "File"  # defaulted
    assert added["imagePullPolicy"] == "IfNotPresent"
    assert pod["metadata"]["labels"] == {"app": "x"}
    assert "activeDeadlineSeconds" not in pod["spec"]
    status, stored = await harness.request("GET", f"{PODS}/x")
    assert stored["spec"]["ephemeralContainers"] == pod["spec"]["ephemeralContainers"]


async def test_existing_ephemeral_containers_may_not_change(harness):
    await make_pod(harness)
    status, pod = await harness.request(
        "PATCH",
        f"{PODS}/x/ephemeralcontainers",
        {"spec": {"ephemeralContainers": [DEBUGGER]}},
        content_type=SMP,
    )
    assert status == 200, pod
    changed = copy.deepcopy(pod)
    changed["spec"]["ephemeralContainers"][0]["image"] = "busybox:1.35"
    status, body = await harness.request("PUT", f"{PODS}/x/ephemeralcontainers", changed)
    assert status == 422, body
    assert body["reason"] == "Invalid"
    causes = body["details"]["causes"]
    assert {
        "reason": "FieldValueForbidden",
        "message": 'Forbidden: existing ephemeral containers "debugger-1" may not be changed',
        "field": "spec.ephemeralContainers",
    } in causes
    removed = copy.deepcopy(pod)
    removed["spec"]["ephemeralContainers"] = []
    status, body = await harness.request("PUT", f"{PODS}/x/ephemeralcontainers", removed)
    assert status == 422, body
    assert body["details"]["causes"][0]["field"] == "spec.ephemeralContainers"


async def test_new_ephemeral_containers_are_validated(harness):
    await make_pod(harness)
    bad = [
        {"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]},
        {"name": "d", "image": "busybox", "readinessProbe": {"exec": {"command": ["true"]}}},
        {"name": "e", "image": "busybox", "targetContainerName": "missing"},
    ]
    status, body = await harness.request(
        "PATCH",
        f"{PODS}/x/ephemeralcontainers",
        {"spec": {"ephemeralContainers": bad}},
        content_type=SMP,
    )
    assert status == 422, body
    fields = {(c["reason"], c["field"]) for c in body["details"]["causes"]}
    assert ("FieldValueDuplicate", "spec.ephemeralContainers[0].name") in fields
    assert ("FieldValueForbidden", "spec.ephemeralContainers[0].ports") in fields
    assert ("FieldValueForbidden", "spec.ephemeralContainers[1].readinessProbe") in fields
    assert ("FieldValueNotFound", "spec.ephemeralContainers[2].targetContainerName") in fields


async def test_plain_pod_update_may_not_change_ephemeral_containers(harness):
    pod = await make_pod(harness)
    pod["spec"]["ephemeralContainers"] = [DEBUGGER]
    status, body = await harness.request("PUT", f"{PODS}/x", pod)
    assert status == 422, body
    assert body["details"]["causes"][0]["field"] == "spec"
    status, stored = await harness.request("GET", f"{PODS}/x")
    assert "ephemeralContainers" not in stored["spec"]


def _csr_pem() -> str:
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone")]))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()


async def test_csr_approval_changes_only_the_conditions(harness):
    csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
    body = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "req"},
        "spec": {
            "request": _csr_pem(),
            "signerName": "example.com/signer",
            "usages": ["client auth"],
        },
    }
    status, created = await harness.request("POST", csrs, body)
    assert status == 201, created
    # What `kubectl certificate approve` sends: the whole object with an Approved condition.
    created["status"] = {
        "conditions": [
            {"type": "Approved", "status": "True", "reason": "KubectlApprove", "message": "ok"}
        ]
    }
    created["metadata"]["labels"] = {"sneaky": "yes"}
    status, approved = await harness.request("PUT", f"{csrs}/req/approval", created)
    assert status == 200, approved
    (condition,) = approved["status"]["conditions"]
    assert condition["type"] == "Approved" and condition["lastUpdateTime"]
    assert "labels" not in approved["metadata"]
    status, stored = await harness.request("GET", f"{csrs}/req")
    assert stored["status"]["conditions"][0]["reason"] == "KubectlApprove"
    stored["status"]["conditions"].append({"type": "Denied", "status": "True"})
    status, body = await harness.request("PUT", f"{csrs}/req/approval", stored)
    assert status == 422, body
    assert body["details"]["causes"][0]["field"] == "status.conditions"


async def test_pod_security_checks_an_added_debugger(harness):
    """`kubectl debug --profile=sysadmin` in a baseline namespace: the privileged debugger
    is refused, as upstream's PodSecurity checks pods/ephemeralcontainers."""
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "secure",
            "labels": {"pod-security.kubernetes.io/enforce": "baseline"},
        },
    }
    status, created = await harness.request("POST", "/api/v1/namespaces", body)
    assert status == 201, created
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
    status, created = await harness.request(
        "POST", "/api/v1/namespaces/secure/serviceaccounts", account
    )
    assert status == 201, created
    pods = "/api/v1/namespaces/secure/pods"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    status, created = await harness.request("POST", pods, pod)
    assert status == 201, created["message"]
    privileged = {**DEBUGGER, "securityContext": {"privileged": True}}
    status, body = await harness.request(
        "PATCH",
        f"{pods}/x/ephemeralcontainers",
        {"spec": {"ephemeralContainers": [privileged]}},
        content_type=SMP,
    )
    assert status == 403, body
    assert 'violates PodSecurity "baseline:latest": privileged' in body["message"]
    status, body = await harness.request(
        "PATCH",
        f"{pods}/x/ephemeralcontainers",
        {"spec": {"ephemeralContainers": [DEBUGGER]}},
        content_type=SMP,
    )
    assert status == 200, body
