"""Pod admission through the real API server: ServiceAccount (default account, projected token
volume, missing account), DefaultTolerationSeconds, Priority."""

from __future__ import annotations

PODS = "/api/v1/namespaces/{}/pods"


def pod(name: str, **spec: object) -> dict:
    body: dict = {"containers": [{"name": "c", "image": "busybox"}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body}


async def test_service_account_token_volume(harness):
    status, created = await harness.request(
        "POST", PODS.format("default"), pod("p", initContainers=[{"name": "i", "image": "x"}])
    )
    assert status == 201, created
    spec = created["spec"]
    assert spec["serviceAccountName"] == "default" and spec["serviceAccount"] == "default"
    (volume,) = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
    sources = volume["projected"]["sources"]
    assert sources[0]["serviceAccountToken"] == {"expirationSeconds": 3607, "path": "token"}
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.namespace"
    for container in spec["containers"] + spec["initContainers"]:
        assert {
            "name": volume["name"],
            "readOnly": True,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        } in container["volumeMounts"]

    status, created = await harness.request(
        "POST", PODS.format("default"), pod("no-token", automountServiceAccountToken=False)
    )
    assert status == 201 and "volumes" not in created["spec"]


async def test_missing_service_account_is_refused(harness):
    status, _ = await harness.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"}},
    )
    assert status == 201
    status, body = await harness.request("POST", PODS.format("fresh"), pod("p"))
    assert status == 403
    assert body["message"] == (
        'pods "p" is forbidden: error looking up service account fresh/default: '
        'serviceaccount "default" not found'
    )
    status, body = await harness.request(
        "POST", PODS.format("default"), pod("q", serviceAccountName="robot")
    )
    assert status == 403 and "service account default/robot" in body["message"]
    # Once the account exists the pod is admitted.
    status, _ = await harness.request(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}},
    )
    assert status == 201
    status, created = await harness.request(
        "POST", PODS.format("default"), pod("q", serviceAccountName="robot")
    )
    assert status == 201 and created["spec"]["serviceAccountName"] == "robot"


async def test_default_tolerations(harness):
    status, created = await harness.request("POST", PODS.format("default"), pod("t"))
    assert status == 201
    assert {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    } in created["spec"]["tolerations"]
    own = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]
    status, created = await harness.request(
        "POST", PODS.format("default"), pod("u", tolerations=own)
    )
    assert status == 201
    unreachable = [
        t for t in created["spec"]["tolerations"] if t["key"] == "node.kubernetes.io/unreachable"
    ]
    assert unreachable == own


async def test_priority(harness):
    status, created = await harness.request(
        "POST", PODS.format("kube-system"), pod("crit", priorityClassName="system-node-critical")
    )
    assert status == 201, created
    assert created["spec"]["priority"] == 2000001000
    assert created["spec"]["preemptionPolicy"] == "PreemptLowerPriority"
    status, body = await harness.request(
        "POST", PODS.format("default"), pod("x", priorityClassName="nope")
    )
    assert status == 403
    assert body["message"] == 'pods "x" is forbidden: no PriorityClass with name nope was found'
    status, created = await harness.request("POST", PODS.format("default"), pod("plain"))
    assert created["spec"]["priority"] == 0
    status, _ = await harness.request(
        "POST",
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": "everyone"},
            "value": 1000,
            "globalDefault": True,
        },
    )
    assert status == 201
    status, created = await harness.request("POST", PODS.format("default"), pod("defaulted"))
    assert created["spec"]["priority"] == 1000
    assert created["spec"]["priorityClassName"] == "everyone"
    status, body = await harness.request(
        "POST", PODS.format("default"), pod("liar", priorityClassName="everyone", priority=5)
    )
    assert status == 403 and "must not be provided in pod spec" in body["message"]


async def test_priority_class_rules(harness):
    classes = "/apis/scheduling.k8s.io/v1/priorityclasses"
    status, body = await harness.request("DELETE", f"{classes}/system-node-critical")
    assert status == 403
    assert body["message"] == (
        'priorityclasses.scheduling.k8s.io "system-node-critical" is forbidden: this is a '
        "system priority class and cannot be deleted"
    )
    for name, expected in (("one", 201), ("two", 403)):
        status, body = await harness.request(
            "POST",
            classes,
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": 10,
                "globalDefault": True,
            },
        )
        assert status == expected, body
    assert "PriorityClass one is already marked as default" in body["message"]
