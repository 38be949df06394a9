"""Unit tests of the HTTP layer's pure modules: request info, patches, negotiation, admission."""

from __future__ import annotations

import json

import pytest

from sampan.api.errors import (
    BadRequest,
    Forbidden,
    Invalid,
    NotFound,
    UnsupportedMediaType,
)
from sampan.apiserver.admission import AdmissionAttributes, NamespaceLifecycle
from sampan.apiserver.negotiation import decode_object, parse_accept
from sampan.apiserver.patch import apply_json_patch, apply_merge_patch, apply_patch
from sampan.apiserver.requestinfo import parse_request_info


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/ns/pods", {}, ("list", "", "v1", "ns", "pods", "", "")),
        ("GET", "/api/v1/pods", {"watch": "true"}, ("watch", "", "v1", "", "pods", "", "")),
        ("GET", "/api/v1/watch/namespaces/ns/pods", {}, ("watch", "", "v1", "ns", "pods", "", "")),
        ("GET", "/api/v1/namespaces/ns/pods/p", {}, ("get", "", "v1", "ns", "pods", "p", "")),
        (
            "PUT",
            "/api/v1/namespaces/ns/pods/p/status",
            {},
            ("update", "", "v1", "ns", "pods", "p", "status"),
        ),
        (
            "POST",
            "/apis/apps/v1/namespaces/ns/deployments",
            {},
            ("create", "apps", "v1", "ns", "deployments", "", ""),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/ns/deployments/d/scale",
            {},
            ("patch", "apps", "v1", "ns", "deployments", "d", "scale"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/ns/configmaps",
            {},
            ("deletecollection", "", "v1", "ns", "configmaps", "", ""),
        ),
        ("DELETE", "/api/v1/namespaces/ns", {}, ("delete", "", "v1", "ns", "namespaces", "ns", "")),
        (
            "PUT",
            "/api/v1/namespaces/ns/finalize",
            {},
            ("update", "", "v1", "ns", "namespaces", "ns", "finalize"),
        ),
        ("GET", "/api/v1/nodes/n1", {}, ("get", "", "v1", "", "nodes", "n1", "")),
        (
            "GET",
            "/api/v1/namespaces",
            {"watch": "1"},
            ("watch", "", "v1", "", "namespaces", "", ""),
        ),
    ],
)
def test_resource_request_info(method, path, query, expected):
    ri = parse_request_info(method, path, query)
    assert ri.is_resource_request
    got = (
        ri.verb,
        ri.api_group,
        ri.api_version,
        ri.namespace,
        ri.resource,
        ri.name,
        ri.subresource,
    )
    assert got == expected


@pytest.mark.parametrize(
    "path",
    ["/healthz", "/version", "/apis", "/api", "/api/v1", "/apis/apps/v1", "/openapi/v2", "/"],
)
def test_non_resource_request_info(path):
    ri = parse_request_info("GET", path, {})
    assert not ri.is_resource_request
    assert ri.verb == "get"


def test_merge_patch_rfc7386_examples():
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    patch = {"a": "z", "c": {"f": None}}
    assert apply_merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}}  # not mutated
    assert apply_merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert apply_merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}


def test_json_patch_operations():
    doc = {"metadata": {"labels": {"a": "1"}}, "list": [1, 2, 3]}
    ops = [
        {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
        {"op": "replace", "path": "/metadata/labels/a", "value": "x"},
        {"op": "remove", "path": "/list/0"},
        {"op": "add", "path": "/list/-", "value": 4},
        {"op": "copy", "from": "/list/0", "path": "/first"},
        {"op": "move", "from": "/first", "path": "/moved"},
        {"op": "test", "path": "/moved", "value": 2},
    ]
    out = apply_json_patch(doc, ops)
    assert out == {
        "metadata": {"labels": {"a": "x", "b/c": "2"}},
        "list": [2, 3, 4],
        "moved": 2,
    }
    assert doc["list"] == [1, 2, 3]


def test_json_patch_failures_are_422_and_atomic():
    doc = {"a": {"b": 1}}
    with pytest.raises(Invalid):
        apply_json_patch(
            doc,
            [{"op": "add", "path": "/a/c", "value": 2}, {"op": "test", "path": "/a/b", "value": 5}],
        )
    with pytest.raises(Invalid):
        apply_json_patch(doc, [{"op": "replace", "path": "/missing/x", "value": 1}])
    with pytest.raises(Invalid):
        apply_json_patch(doc, [{"op": "remove", "path": "/nope"}])
    assert doc == {"a": {"b": 1}}
    with pytest.raises(BadRequest):
        apply_json_patch(doc, {"op": "add"})
    with pytest.raises(BadRequest):
        apply_json_patch(doc, [{"op": ["add"]}])
    with pytest.raises(Invalid):  # Ignore: only the library's decode, which takes any op
        apply_json_patch(doc, [{"op": ["add"]}], strict=False)


def test_patch_types():
    assert apply_patch({"a": 1}, b'{"b":2}', "application/merge-patch+json") == {"a": 1, "b": 2}
    smp = "application/strategic-merge-patch+json"  # served since part 2 (test_smp*.py)
    assert apply_patch({"a": 1}, b'{"b":2}', smp) == {"a": 1, "b": 2}
    with pytest.raises(UnsupportedMediaType):
        apply_patch({}, b"{}", "application/apply-patch+yaml")
    with pytest.raises(BadRequest):
        apply_patch({}, b"{nope", "application/merge-patch+json")


def test_accept_parsing():
    kubectl_get = (
        "application/json;as=Table;v=v1;g=meta.k8s.io,"
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    )
    fmt = parse_accept(kubectl_get)
    assert fmt.table and fmt.group_version == "meta.k8s.io/v1"
    assert parse_accept("application/vnd.kubernetes.protobuf,application/json").as_kind == ""
    aggregated = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
        "application/json"
    )
    assert parse_accept(aggregated).as_kind == ""
    assert parse_accept("").as_kind == ""
    fmt = parse_accept("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
    assert fmt.partial_metadata
    # Reproducer (fuzz): "as=Table;v=v9;g=meta.k8s.io" answered a meta.k8s.io/v9 Table.
    # Only v1 and v1beta1 exist; another version's range is skipped for the next one.
    fmt = parse_accept(
        "application/json;as=Table;v=v9;g=meta.k8s.io,"
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io"
    )
    assert fmt.table and fmt.group_version == "meta.k8s.io/v1beta1"
    assert parse_accept("application/json;as=PartialObjectMetadata;g=meta.k8s.io").as_kind == ""


def test_decode_object_json_yaml_and_errors():
    assert decode_object(b'{"kind":"ConfigMap"}', "application/json", "ConfigMap") == {
        "kind": "ConfigMap"
    }
    assert decode_object(b"kind: ConfigMap\ndata: {a: b}\n", "application/yaml", "ConfigMap") == {
        "kind": "ConfigMap",
        "data": {"a": "b"},
    }
    with pytest.raises(BadRequest) as err:
        decode_object(b"{not json", "application/json", "ConfigMap")
    assert "couldn't get version/kind; json parse error" in err.value.message
    assert "must be of type ConfigMap" in err.value.message
    with pytest.raises(BadRequest):
        decode_object(b"[1,2]", "application/json", "ConfigMap")
    with pytest.raises(BadRequest):
        decode_object(b"a: [", "application/yaml", "ConfigMap")
    with pytest.raises(UnsupportedMediaType):
        decode_object(b"x", "text/plain", "ConfigMap")


def _attrs(operation: str, resource: str, namespace: str, name: str) -> AdmissionAttributes:
    return AdmissionAttributes(
        operation=operation,
        group="",
        version="v1",
        resource=resource,
        subresource="",
        namespace=namespace,
        name=name,
        namespaced=resource != "namespaces",
    )


async def test_namespace_lifecycle():
    namespaces = {
        "live": {"metadata": {"name": "live"}, "status": {"phase": "Active"}},
        "dying": {
            "metadata": {"name": "dying", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Terminating"},
        },
    }

    async def get(name: str):
        return namespaces.get(name)

    plugin = NamespaceLifecycle(get)
    await plugin.admit(_attrs("CREATE", "configmaps", "live", "c"))
    with pytest.raises(NotFound) as missing:
        await plugin.admit(_attrs("CREATE", "configmaps", "nope", "c"))
    assert missing.value.message == 'namespaces "nope" not found'
    with pytest.raises(Forbidden) as dying:
        await plugin.admit(_attrs("CREATE", "configmaps", "dying", "c"))
    assert dying.value.message == (
        'configmaps "c" is forbidden: unable to create new content in namespace dying '
        "because it is being terminated"
    )
    await plugin.admit(_attrs("UPDATE", "configmaps", "dying", "c"))
    with pytest.raises(Forbidden) as immortal:
        await plugin.admit(_attrs("DELETE", "namespaces", "kube-system", "kube-system"))
    assert immortal.value.message == (
        'namespaces "kube-system" is forbidden: this namespace may not be deleted'
    )
    await plugin.admit(_attrs("DELETE", "namespaces", "live", "live"))


def test_status_json_shape():
    status = json.loads(NotFound.for_object("pods", "", "x").to_json())
    assert status["kind"] == "Status" and status["code"] == 404


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_protobuf_configmap_body_decodes_like_json():
    from sampan.apiserver.protobuf import ENVELOPE_MAGIC, ProtobufError, decode_object

    labels_entry = _len_field(1, b"tier") + _len_field(2, b"web")
    meta = _len_field(1, b"cfg") + _len_field(3, b"demo") + _len_field(11, labels_entry)
    data_entry = _len_field(1, b"a") + _len_field(2, b"1")
    raw = _len_field(1, meta) + _len_field(2, data_entry)
    type_meta = _len_field(1, b"v1") + _len_field(2, b"ConfigMap")
    body = ENVELOPE_MAGIC + _len_field(1, type_meta) + _len_field(2, raw)
    assert decode_object(body) == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "demo", "labels": {"tier": "web"}},
        "data": {"a": "1"},
    }
    unknown = ENVELOPE_MAGIC + _len_field(
        1, _len_field(1, b"v1") + _len_field(2, b"PersistentVolume")
    )
    with pytest.raises(ProtobufError):
        decode_object(unknown)
    with pytest.raises(ProtobufError):
        decode_object(b"not protobuf")
    with pytest.raises(ProtobufError):
        decode_object(ENVELOPE_MAGIC + b"\x0a\xff")


def test_protobuf_node_debugger_pod_decodes_like_json():
    """The pod `kubectl debug node/NAME` creates: host namespaces, the host root at /host,
    tolerate everything; the volume source is inlined into the volume as in JSON."""
    from sampan.apiserver.protobuf import ENVELOPE_MAGIC, decode_object

    mount = _len_field(1, b"host-root") + _len_field(3, b"/host")
    container = (
        _len_field(1, b"debugger")
        + _len_field(2, b"busybox:1.36")
        + _len_field(9, mount)
        + _len_field(15, _varint(2 << 3) + _varint(1))  # securityContext.privileged
        + _varint(16 << 3)
        + _varint(1)  # stdin
    )
    volume = _len_field(1, b"host-root") + _len_field(2, _len_field(1, _len_field(1, b"/")))
    config_volume = _len_field(1, b"cfg") + _len_field(
        2, _len_field(19, _len_field(1, _len_field(1, b"my-config")))
    )
    empty_volume = _len_field(1, b"scratch") + _len_field(2, _len_field(2, b""))
    spec = (
        _len_field(1, volume)
        + _len_field(1, config_volume)
        + _len_field(1, empty_volume)
        + _len_field(2, container)
        + _len_field(3, b"Never")
        + _len_field(10, b"node-1")
        + _varint(11 << 3)
        + _varint(1)
        + _varint(12 << 3)
        + _varint(1)
        + _varint(13 << 3)
        + _varint(1)
        + _len_field(22, _len_field(2, b"Exists"))
    )
    raw = _len_field(1, _len_field(1, b"node-debugger-node-1-abcde")) + _len_field(2, spec)
    type_meta = _len_field(1, b"v1") + _len_field(2, b"Pod")
    decoded = decode_object(ENVELOPE_MAGIC + _len_field(1, type_meta) + _len_field(2, raw))
    assert decoded == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "node-debugger-node-1-abcde"},
        "spec": {
            "volumes": [
                {"name": "host-root", "hostPath": {"path": "/"}},
                {"name": "cfg", "configMap": {"name": "my-config"}},
                {"name": "scratch", "emptyDir": {}},
            ],
            "containers": [
                {
                    "name": "debugger",
                    "image": "busybox:1.36",
                    "volumeMounts": [{"name": "host-root", "mountPath": "/host"}],
                    "securityContext": {"privileged": True},
                    "stdin": True,
                }
            ],
            "restartPolicy": "Never",
            "nodeName": "node-1",
            "hostNetwork": True,
            "hostPID": True,
            "hostIPC": True,
            "tolerations": [{"operator": "Exists"}],
        },
    }


def test_protobuf_stored_pod_copy_decodes_like_json():
    """What `kubectl debug --copy-to` sends: a copy of a stored pod, with the service account
    token's projected volume, env from fields and the admission-set scheduling fields."""
    from sampan.apiserver.protobuf import ENVELOPE_MAGIC, decode_object

    token = _len_field(4, _varint(2 << 3) + _varint(3607) + _len_field(3, b"token"))
    root_ca = _len_field(
        3,
        _len_field(1, _len_field(1, b"kube-root-ca.crt"))
        + _len_field(2, _len_field(1, b"ca.crt") + _len_field(2, b"ca.crt")),
    )
    namespace_file = _len_field(
        2,
        _len_field(
            1,
            _len_field(1, b"namespace")
            + _len_field(2, _len_field(1, b"v1") + _len_field(2, b"metadata.namespace")),
        ),
    )
    projected = (
        _len_field(1, token)
        + _len_field(1, root_ca)
        + _len_field(1, namespace_file)
        + _varint(2 << 3)
        + _varint(420)
    )
    volume = _len_field(1, b"kube-api-access") + _len_field(2, _len_field(26, projected))
    env = _len_field(1, b"NODE") + _len_field(
        3, _len_field(1, _len_field(1, b"v1") + _len_field(2, b"spec.nodeName"))
    )
    container = _len_field(1, b"c") + _len_field(2, b"busybox") + _len_field(7, env)
    spec = (
        _len_field(1, volume)
        + _len_field(2, container)
        + _len_field(9, b"default")
        + _len_field(14, b"")
        + _varint(25 << 3)
        + _varint(0)
        + _len_field(31, b"PreemptLowerPriority")
    )
    raw = _len_field(1, _len_field(1, b"y")) + _len_field(2, spec)
    type_meta = _len_field(1, b"v1") + _len_field(2, b"Pod")
    decoded = decode_object(ENVELOPE_MAGIC + _len_field(1, type_meta) + _len_field(2, raw))
    assert decoded["spec"] == {
        "volumes": [
            {
                "name": "kube-api-access",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {
                                            "apiVersion": "v1",
                                            "fieldPath": "metadata.namespace",
                                        },
                                    }
                                ]
                            }
                        },
                    ],
                    "defaultMode": 420,
                },
            }
        ],
        "containers": [
            {
                "name": "c",
                "image": "busybox",
                "env": [
                    {
                        "name": "NODE",
                        "valueFrom": {
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}
                        },
                    }
                ],
            }
        ],
        "serviceAccount": "default",
        "securityContext": {},
        "priority": 0,
        "preemptionPolicy": "PreemptLowerPriority",
    }


def test_protobuf_delete_options_and_zero_values():
    from sampan.apiserver.protobuf import ENVELOPE_MAGIC, ProtobufError, decode_object

    preconditions = _len_field(1, b"uid-1")
    raw = (
        _varint(1 << 3)
        + _varint(0)  # gracePeriodSeconds: 0 (a pointer: kept)
        + _len_field(2, preconditions)
        + _len_field(4, b"Foreground")
        + _len_field(5, b"All")
    )
    type_meta = _len_field(1, b"apps/v1") + _len_field(2, b"DeleteOptions")
    body = ENVELOPE_MAGIC + _len_field(1, type_meta) + _len_field(2, raw)
    decoded = decode_object(body)
    assert decoded["gracePeriodSeconds"] == 0
    assert decoded["preconditions"] == {"uid": "uid-1"}
    assert decoded["propagationPolicy"] == "Foreground" and decoded["dryRun"] == ["All"]

    # Unknown fields holding only zero values (Go writes every non-pointer field) are
    # skipped; unknown fields with data refuse the body.
    meta = _len_field(1, b"n")
    zero_status = _len_field(3, _len_field(1, b""))
    type_meta = _len_field(1, b"v1") + _len_field(2, b"ConfigMap")
    with_zero = (
        ENVELOPE_MAGIC
        + _len_field(1, type_meta)
        + _len_field(2, _len_field(1, meta) + _varint(9 << 3) + _varint(0))
    )
    assert decode_object(with_zero)["metadata"] == {"name": "n"}
    namespace_meta = _len_field(1, b"v1") + _len_field(2, b"Namespace")
    ns = (
        ENVELOPE_MAGIC
        + _len_field(1, namespace_meta)
        + _len_field(2, _len_field(1, meta) + zero_status)
    )
    assert decode_object(ns) == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}
    with_data = (
        ENVELOPE_MAGIC
        + _len_field(1, type_meta)
        + _len_field(2, _len_field(1, meta) + _varint(9 << 3) + _varint(7))
    )
    with pytest.raises(ProtobufError, match="not supported"):
        decode_object(with_data)


def test_list_pinned_to_a_name_carries_it_for_authorization():
    ri = parse_request_info(
        "GET", "/api/v1/nodes", {"watch": "1", "fieldSelector": "metadata.name=node-1"}
    )
    assert (ri.verb, ri.name, ri.path_name) == ("watch", "node-1", "")
    ri = parse_request_info(
        "GET", "/api/v1/pods", {"fieldSelector": "status.phase=Running,metadata.name==p"}
    )
    assert (ri.verb, ri.name) == ("list", "p")
    assert (
        parse_request_info("GET", "/api/v1/pods", {"fieldSelector": "metadata.name!=p"}).name == ""
    )
    assert (
        parse_request_info("GET", "/api/v1/pods", {"fieldSelector": "metadata.name=a/b"}).name == ""
    )
    ri = parse_request_info(
        "DELETE", "/api/v1/namespaces/x/pods", {"fieldSelector": "metadata.name=p"}
    )
    assert ri.verb == "deletecollection"
