"""The PodSecurity admission configuration file through a real API server: defaults for
namespaces without labels, exemptions (namespaces, users, runtime classes), labels overriding
the defaults, the audit annotations, and the file's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sampan.apiserver.admission.podsecurityconfig import (
    PodSecurityConfigError,
    load_admission_config,
)
from sampan.apiserver.audit import AuditOptions
from sampan.supervisor.profile import RESTRICTED_PSS_CONFIG
from tests.apiserver.conftest import ServerHarness

PRIVILEGED_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p"},
    "spec": {
        "containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]
    },
}
RESTRICTED_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "r"},
    "spec": {
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
    },
}


async def harness_with(tmp_path: Path, config_text: str, **extra) -> ServerHarness:
    path = tmp_path / "psa.yaml"
    path.write_text(config_text)
    harness = ServerHarness(tmp_path, admission_config_file=path, **extra)
    await harness.start()
    return harness


async def create_namespace(h: ServerHarness, name: str, labels: dict | None = None) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if labels:
        body["metadata"]["labels"] = labels
    status, _ = await h.request("POST", "/api/v1/namespaces", body)
    assert status == 201
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
    status, _ = await h.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts", account)
    assert status == 201  # no controllers here to create it


async def test_restricted_defaults_with_rke2_exemptions(tmp_path):
    h = await harness_with(tmp_path, RESTRICTED_PSS_CONFIG)
    try:
        await create_namespace(h, "apps")
        await create_namespace(h, "legacy", {"pod-security.kubernetes.io/enforce": "privileged"})
        status, body = await h.request("POST", "/api/v1/namespaces/apps/pods", PRIVILEGED_POD)
        assert status == 403
        assert body["message"].startswith(
            'pods "p" is forbidden: violates PodSecurity "restricted:latest": '
        )
        assert (
            'privileged (container "c" must not set securityContext.privileged=true)'
            in (body["message"])
        )
        status, _ = await h.request("POST", "/api/v1/namespaces/apps/pods", RESTRICTED_POD)
        assert status == 201
        # kube-system is exempt; a namespace's own label beats the default.
        status, _ = await h.request("POST", "/api/v1/namespaces/kube-system/pods", PRIVILEGED_POD)
        assert status == 201
        status, _ = await h.request("POST", "/api/v1/namespaces/legacy/pods", PRIVILEGED_POD)
        assert status == 201
        # Workloads are warned about (the default warn level), not refused.
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": PRIVILEGED_POD["spec"],
                },
            },
        }
        assert h.session is not None
        async with h.session.post(
            "/apis/apps/v1/namespaces/apps/deployments",
            data=json.dumps(deployment),
            headers={"Content-Type": "application/json"},
        ) as response:
            assert response.status == 201
            warnings = response.headers.getall("Warning", [])
        assert any("would violate PodSecurity" in w and "restricted:latest" in w for w in warnings)
    finally:
        await h.stop()


EXEMPTIONS = """
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: EventRateLimit
  path: eventconfig.yaml
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: baseline
      audit: restricted
    exemptions:
      usernames: [system:admin]
      runtimeClasses: [kata]
"""


async def test_user_and_runtime_class_exemptions_and_audit_annotations(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
    audit = AuditOptions(policy_file=policy, log_path=str(tmp_path / "audit.log"))
    h = await harness_with(tmp_path, EXEMPTIONS, audit=audit)
    try:
        # The admin is exempt by name; another user is not (unless the runtime class is).
        status, _ = await h.request("POST", "/api/v1/namespaces/default/pods", PRIVILEGED_POD)
        assert status == 201
        jane = {"Impersonate-User": "jane", "Impersonate-Group": "system:masters"}
        second = {**PRIVILEGED_POD, "metadata": {"name": "q"}}
        status, body = await h.request(
            "POST", "/api/v1/namespaces/default/pods", second, headers=jane
        )
        assert status == 403
        assert 'violates PodSecurity "baseline:latest"' in body["message"]
        kata = {**second, "metadata": {"name": "k"}}
        kata["spec"] = {**second["spec"], "runtimeClassName": "kata"}
        status, _ = await h.request("POST", "/api/v1/namespaces/default/pods", kata, headers=jane)
        assert status == 201
        plain = {**RESTRICTED_POD, "metadata": {"name": "s"}}
        del plain["spec"]["securityContext"]
        status, _ = await h.request("POST", "/api/v1/namespaces/default/pods", plain, headers=jane)
        assert status == 201  # baseline allows it; audit (restricted) records the violation
    finally:
        await h.stop()
    events = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    creates = {
        e["objectRef"].get("name"): e
        for e in events
        if e["verb"] == "create"
        and e["stage"] == "ResponseComplete"
        and e["objectRef"]["resource"] == "pods"
    }
    assert creates["p"]["annotations"]["pod-security.kubernetes.io/exempt"] == "user"
    assert creates["q"]["annotations"]["pod-security.kubernetes.io/enforce-policy"] == (
        "baseline:latest"
    )
    assert creates["s"]["annotations"]["pod-security.kubernetes.io/audit-violations"].startswith(
        'would violate PodSecurity "restricted:latest": '
    )


def test_path_reference_and_errors(tmp_path):
    (tmp_path / "pss.yaml").write_text(
        "apiVersion: pod-security.admission.config.k8s.io/v1\nkind: PodSecurityConfiguration\n"
        "defaults: {warn: restricted, warn-version: v1.31}\nexemptions: {namespaces: [ops]}\n"
    )
    main = tmp_path / "admission.yaml"
    main.write_text(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n"
        "- name: PodSecurity\n  path: pss.yaml\n"
    )
    config = load_admission_config(main)
    assert config.defaults["warn"] == ("restricted", "v1.31")
    assert config.defaults["enforce"] == ("privileged", "latest")
    assert config.exempt_namespaces == {"ops"}

    cases = {
        "defaults: {enforce-version: '1.29'}": (
            'defaults.enforce-version: Invalid value: "1.29": must be "latest" or "v1.x"'
        ),
        "exemptions: {namespaces: [Bad_Name]}": "exemptions.namespaces[0]: Invalid value",
        "exemptions: {users: [a]}": 'strict decoding error: unknown field "exemptions.users"',
    }
    for text, message in cases.items():
        (tmp_path / "pss.yaml").write_text(
            "apiVersion: pod-security.admission.config.k8s.io/v1\n"
            "kind: PodSecurityConfiguration\n" + text + "\n"
        )
        with pytest.raises(PodSecurityConfigError) as caught:
            load_admission_config(main)
        assert str(caught.value).startswith(f"{tmp_path / 'pss.yaml'}: ")
        assert message in str(caught.value)
        assert "\n" not in str(caught.value)
