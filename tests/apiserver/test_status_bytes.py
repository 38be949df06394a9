"""Status bodies byte for byte as kube-apiserver 1.32 writes them.

The golden strings are the bodies kube-apiserver sends for the same requests (meta/v1 Status
field order, Go's JSON encoder, a trailing newline); clients and tests compare their text.
"""

from __future__ import annotations

import json

CM_PATH = "/api/v1/namespaces/default/configmaps"


async def raw(harness, method: str, path: str, body=None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    async with harness.session.request(method, path, data=data, headers=headers) as response:
        return response.status, await response.read()


def configmap(name: str, rv: str = "") -> dict:
    meta = {"name": name, **({"resourceVersion": rv} if rv else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "1"}}


async def test_already_exists_not_found_and_conflict_are_upstreams_bytes(harness):
    status, _ = await raw(harness, "POST", CM_PATH, configmap("cm1"))
    assert status == 201

    status, body = await raw(harness, "POST", CM_PATH, configmap("cm1"))
    assert status == 409
    assert body == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"configmaps \\"cm1\\" already exists","reason":"AlreadyExists",'
        b'"details":{"name":"cm1","kind":"configmaps"},"code":409}\n'
    )

    status, body = await raw(harness, "GET", f"{CM_PATH}/nope")
    assert status == 404
    assert body == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"configmaps \\"nope\\" not found","reason":"NotFound",'
        b'"details":{"name":"nope","kind":"configmaps"},"code":404}\n'
    )

    status, body = await raw(harness, "PUT", f"{CM_PATH}/cm1", configmap("cm1", rv="1"))
    assert status == 409
    assert body == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"Operation cannot be fulfilled on configmaps \\"cm1\\": the object has '
        b"been modified; please apply your changes to the latest version and try again"
        b'","reason":"Conflict","details":{"name":"cm1","kind":"configmaps"},"code":409}\n'
    )


async def test_invalid_keeps_cause_order_and_go_escaping(harness):
    bad = configmap("x")
    bad["metadata"]["labels"] = {"a<b": "v"}
    status, body = await raw(harness, "POST", CM_PATH, bad)
    assert status == 422
    text = body.decode()
    assert text.endswith("}\n") and "<" not in text and "\\u003c" in text
    status_obj = json.loads(body)
    assert list(status_obj) == [
        "kind",
        "apiVersion",
        "metadata",
        "status",
        "message",
        "reason",
        "details",
        "code",
    ]
    assert list(status_obj["details"]) == ["name", "kind", "causes"]
    assert list(status_obj["details"]["causes"][0]) == ["reason", "message", "field"]
