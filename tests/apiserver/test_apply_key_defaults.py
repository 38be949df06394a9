"""Server-side apply identifies list-map items whose key field is defaulted (issue #13 part 4):
a Service port or container port without ``protocol`` is the item keyed with
``protocol: TCP``, as structured-merge-diff does, so applying the same manifest twice, or
moving from client-side to server-side apply, never duplicates a port. Real kubectl 1.32
against the in-process server."""

from __future__ import annotations

from tests.apiserver.test_apply_kubectl import deployment, get_json, kubectl, ok

SERVICE = b"""\
apiVersion: v1
kind: Service
metadata:
  name: dns
spec:
  selector: {app: dns}
  ports:
  - name: dns-udp
    port: 53
    protocol: UDP
  - name: dns-tcp
    port: 53
  - name: metrics
    port: 9153
"""


async def test_server_side_apply_twice_without_protocol(harness):
    assert "service/dns serverside-applied" in await ok(
        harness, "apply", "--server-side", "-f", "-", stdin=SERVICE
    )
    code, out, err = await kubectl(harness, "apply", "--server-side", "-f", "-", stdin=SERVICE)
    assert code == 0, err
    assert "service/dns serverside-applied" in out
    svc = await get_json(harness, "svc", "dns")
    ports = [(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]]
    assert ports == [("dns-udp", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]
    (entry,) = [e for e in svc["metadata"]["managedFields"] if e["manager"] == "kubectl"]
    owned = entry["fieldsV1"]["f:spec"]["f:ports"]
    assert set(owned) == {
        ".",
        'k:{"port":53,"protocol":"UDP"}',
        'k:{"port":53,"protocol":"TCP"}',
        'k:{"port":9153,"protocol":"TCP"}',
    } - {"."}

    # Dropping a port from the applied configuration removes it (the manager owned it).
    fewer = SERVICE.replace(b"  - name: metrics\n    port: 9153\n", b"")
    await ok(harness, "apply", "--server-side", "-f", "-", stdin=fewer)
    svc = await get_json(harness, "svc", "dns")
    assert [p["name"] for p in svc["spec"]["ports"]] == ["dns-udp", "dns-tcp"]


async def test_client_side_then_server_side_apply_of_container_ports(harness):
    manifest = deployment(2, "nginx:1.27", (80, 443))
    assert "deployment.apps/web created" in await ok(harness, "apply", "-f", "-", stdin=manifest)
    code, out, err = await kubectl(harness, "apply", "--server-side", "-f", "-", stdin=manifest)
    assert code == 0, err
    assert "deployment.apps/web serverside-applied" in out
    obj = await get_json(harness, "deploy", "web")
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert [(p["containerPort"], p["protocol"]) for p in container["ports"]] == [
        (80, "TCP"),
        (443, "TCP"),
    ]
    code, out, err = await kubectl(harness, "apply", "--server-side", "-f", "-", stdin=manifest)
    assert code == 0, err
    fewer = deployment(2, "nginx:1.27", (80,))
    await ok(harness, "apply", "--server-side", "-f", "-", stdin=fewer)
    obj = await get_json(harness, "deploy", "web")
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert [p["containerPort"] for p in container["ports"]] == [80]


def test_a_schema_default_of_a_key_field_identifies_items():
    from sampan.apiserver.apply import server_side_apply
    from sampan.apiserver.apply.fieldpath import item_key, key_defaults
    from sampan.apiserver.openapi_data import SchemaView

    ports = {
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["number", "proto"],
        "items": {
            "type": "object",
            "required": ["number"],
            "properties": {
                "number": {"type": "integer"},
                "proto": {"type": "string", "default": "UDP"},
                "name": {"type": "string"},
            },
        },
    }
    root = SchemaView({"type": "object", "properties": {"ports": ports}}, lambda _: None)
    view = root.field("ports")
    defaults = key_defaults(view, ("number", "proto"))
    assert defaults == {"proto": "UDP"}
    assert item_key({"number": 1}, ("number", "proto"), defaults) == 'k:{"number":1,"proto":"UDP"}'
    live = {"metadata": {"name": "x"}, "ports": [{"number": 1, "proto": "UDP", "name": "a"}]}
    applied = {"metadata": {"name": "x"}, "ports": [{"number": 1, "name": "b"}]}
    result = server_side_apply(live, applied, manager="m", api_version="v1", schema=root)
    assert result["ports"] == [{"number": 1, "proto": "UDP", "name": "b"}]
