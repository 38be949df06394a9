"""The async client against a real in-process API server (real TLS, real SQLite)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
import yaml

from sampan.apiserver.auth.serviceaccount import TokenIssuer
from sampan.client.api import (
    CONFIGMAPS,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    SECRETS,
    SERVICEACCOUNTS,
    AlreadyExistsError,
    ApiError,
    Client,
    ClientConfig,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PatchType,
    Resource,
    ResourceExpired,
    TransportError,
    UnauthorizedError,
)

from .conftest import ApiServerHarness


def configmap(name: str, namespace: str = "default", **labels: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"k": "v"},
    }


# -- pure units -------------------------------------------------------------------------------


def test_resource_paths() -> None:
    assert PODS.path(namespace="ns", name="p", subresource="status") == (
        "/api/v1/namespaces/ns/pods/p/status"
    )
    assert PODS.path() == "/api/v1/pods"
    assert NODES.path(namespace="ignored", name="n1") == "/api/v1/nodes/n1"
    assert LEASES.path(namespace="kube-system") == (
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
    )
    assert LEASES.api_version == "coordination.k8s.io/v1" and PODS.api_version == "v1"
    with pytest.raises(ValueError):
        PODS.path(namespace="ns", name="")
    with pytest.raises(ValueError):
        PODS.path(namespace="ns", subresource="status")


def test_api_error_picks_the_subclass() -> None:
    def status(code: int, reason: str) -> dict:
        return {"kind": "Status", "code": code, "reason": reason, "message": "m"}

    assert type(ApiError.from_status(status(404, "NotFound"))) is NotFoundError
    assert type(ApiError.from_status(status(409, "AlreadyExists"))) is AlreadyExistsError
    assert type(ApiError.from_status(status(409, "Conflict"))) is ConflictError
    assert type(ApiError.from_status(status(410, "Expired"))) is ResourceExpired
    assert type(ApiError.from_status(status(410, "Gone"))) is ResourceExpired
    err = ApiError.from_status(status(418, "Teapot"))
    assert type(err) is ApiError and err.code == 418 and err.message == "m"


def test_kubeconfig_embedded_and_file_paths(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_bytes(b"CA-PEM")
    (tmp_path / "certs" / "me.crt").write_bytes(b"CERT-PEM")
    (tmp_path / "token").write_text("tok\n")
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "embedded",
        "clusters": [
            {
                "name": "c1",
                "cluster": {
                    "server": "https://10.0.0.1:6443/",
                    "certificate-authority-data": base64.b64encode(b"CA1").decode(),
                },
            },
            {
                "name": "c2",
                "cluster": {
                    "server": "https://10.0.0.2:6443",
                    "certificate-authority": "certs/ca.crt",
                    "tls-server-name": "api.local",
                },
            },
        ],
        "users": [
            {
                "name": "u1",
                "user": {
                    "client-certificate-data": base64.b64encode(b"CERT1").decode(),
                    "client-key-data": base64.b64encode(b"KEY1").decode(),
                },
            },
            {"name": "u2", "user": {"client-certificate": "certs/me.crt", "tokenFile": "token"}},
        ],
        "contexts": [
            {"name": "embedded", "context": {"cluster": "c1", "user": "u1"}},
            {"name": "files", "context": {"cluster": "c2", "user": "u2"}},
        ],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    first = ClientConfig.from_kubeconfig(path)
    assert first.server == "https://10.0.0.1:6443"
    assert (first.ca_pem, first.client_cert_pem, first.client_key_pem) == (
        b"CA1",
        b"CERT1",
        b"KEY1",
    )
    assert "KEY1" not in repr(first)
    second = ClientConfig.from_kubeconfig(path, context="files")
    assert second.ca_pem == b"CA-PEM" and second.client_cert_pem == b"CERT-PEM"
    assert second.token_file == tmp_path / "token" and second.tls_server_name == "api.local"
    with pytest.raises(ValueError, match="no context named"):
        ClientConfig.from_kubeconfig(path, context="nope")


# -- against the server -----------------------------------------------------------------------


async def test_crud_conflict_and_errors(client: Client) -> None:
    created = await client.create(CONFIGMAPS, configmap("one", app="a"))
    assert created["kind"] == "ConfigMap" and created["metadata"]["uid"]
    with pytest.raises(AlreadyExistsError) as exc_info:
        await client.create(CONFIGMAPS, configmap("one"))
    assert exc_info.value.code == 409

    got = await client.get(CONFIGMAPS, "one", namespace="default")
    assert got["data"] == {"k": "v"}

    got["data"]["k"] = "v2"
    updated = await client.update(CONFIGMAPS, got)
    assert updated["data"]["k"] == "v2"
    assert updated["metadata"]["resourceVersion"] != got["metadata"]["resourceVersion"]
    with pytest.raises(ConflictError):
        await client.update(CONFIGMAPS, got)  # stale resourceVersion

    merged = await client.patch(CONFIGMAPS, "one", {"data": {"extra": "x"}}, namespace="default")
    assert merged["data"] == {"k": "v2", "extra": "x"}
    patched = await client.patch(
        CONFIGMAPS,
        "one",
        [{"op": "replace", "path": "/data/k", "value": "v3"}],
        namespace="default",
        patch_type=PatchType.JSON,
    )
    assert patched["data"]["k"] == "v3"

    with pytest.raises(ConflictError):
        await client.delete(CONFIGMAPS, "one", namespace="default", precondition_uid="not-the-uid")
    await client.delete(CONFIGMAPS, "one", namespace="default")
    with pytest.raises(NotFoundError) as nf:
        await client.get(CONFIGMAPS, "one", namespace="default")
    assert nf.value.reason == "NotFound" and "one" in nf.value.message

    with pytest.raises(ValueError):
        await client.get(CONFIGMAPS, "one")  # namespaced resource needs a namespace


async def test_dry_run_writes_nothing(client: Client) -> None:
    await client.create(CONFIGMAPS, configmap("dry"), dry_run=True)
    with pytest.raises(NotFoundError):
        await client.get(CONFIGMAPS, "dry", namespace="default")


async def test_list_selectors_and_list_all_pagination(client: Client) -> None:
    await client.create(NAMESPACES, {"metadata": {"name": "paged"}})
    for i in range(7):
        await client.create(CONFIGMAPS, configmap(f"cm{i}", "paged", parity=str(i % 2)))
    page = await client.list(CONFIGMAPS, namespace="paged", limit=3)
    assert len(page["items"]) == 3 and page["metadata"].get("continue")

    everything = await client.list_all(CONFIGMAPS, namespace="paged", page_size=3)
    names = sorted(item["metadata"]["name"] for item in everything["items"])
    assert names == [f"cm{i}" for i in range(7)]
    assert everything["metadata"]["resourceVersion"]
    assert "continue" not in everything["metadata"]

    odd = await client.list_all(CONFIGMAPS, namespace="paged", label_selector="parity=1")
    assert sorted(i["metadata"]["name"] for i in odd["items"]) == ["cm1", "cm3", "cm5"]
    by_name = await client.list(CONFIGMAPS, namespace="paged", field_selector="metadata.name=cm4")
    assert [i["metadata"]["name"] for i in by_name["items"]] == ["cm4"]

    across = await client.list_all(CONFIGMAPS, label_selector="parity")
    assert len(across["items"]) == 7


async def test_watch_streams_changes_in_order(client: Client) -> None:
    listing = await client.list(CONFIGMAPS, namespace="default")
    start_rv = listing["metadata"]["resourceVersion"]
    created = await client.create(CONFIGMAPS, configmap("w"))
    await client.patch(CONFIGMAPS, "w", {"data": {"k": "2"}}, namespace="default")
    await client.delete(CONFIGMAPS, "w", namespace="default")

    seen: list[tuple[str, str]] = []
    async with client.watch(
        CONFIGMAPS, namespace="default", resource_version=start_rv, timeout_s=30
    ) as stream:
        async for event_type, obj in stream:
            if event_type == "BOOKMARK":
                continue
            seen.append((event_type, obj["metadata"]["name"]))
            if event_type == "DELETED":
                break
        assert int(stream.resource_version) > int(created["metadata"]["resourceVersion"])
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    assert client.active_watches == 0


async def test_watch_live_events_with_selector(client: Client) -> None:
    listing = await client.list(CONFIGMAPS, namespace="default")
    stream = client.watch(
        CONFIGMAPS,
        namespace="default",
        label_selector="watched=yes",
        resource_version=listing["metadata"]["resourceVersion"],
        timeout_s=30,
    )

    async def first_event() -> tuple[str, dict]:
        async for event in stream:
            if event[0] != "BOOKMARK":
                return event
        raise AssertionError("watch ended")

    waiter = asyncio.ensure_future(first_event())
    await asyncio.sleep(0.1)
    await client.create(CONFIGMAPS, configmap("ignored"))
    await client.create(CONFIGMAPS, configmap("picked", watched="yes"))
    event_type, obj = await asyncio.wait_for(waiter, timeout=10)
    assert (event_type, obj["metadata"]["name"]) == ("ADDED", "picked")
    stream.close()


async def test_watch_from_too_old_revision_raises_expired(
    api_server: ApiServerHarness, client: Client
) -> None:
    first = await client.create(CONFIGMAPS, configmap("old"))
    old_rv = first["metadata"]["resourceVersion"]
    for i in range(3):
        await client.patch(CONFIGMAPS, "old", {"data": {"i": str(i)}}, namespace="default")
    # A new server's watch cache starts at the current revision: older ones are gone.
    await api_server.restart_server()
    with pytest.raises(ResourceExpired) as exc_info:
        async with client.watch(
            CONFIGMAPS, namespace="default", resource_version=old_rv, timeout_s=30
        ) as stream:
            async for _ in stream:
                pass
    assert exc_info.value.code == 410
    assert client.active_watches == 0


async def test_status_and_binding_subresources(client: Client) -> None:
    pod = await client.create(
        PODS,
        {
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    )
    pod["status"] = {"phase": "Running"}
    pod["spec"]["containers"][0]["image"] = "ignored-by-status-update"
    after = await client.update_status(PODS, pod)
    assert after["status"]["phase"] == "Running"
    assert after["spec"]["containers"][0]["image"] == "busybox"

    await client.create_subresource(
        PODS,
        "p",
        "binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "p", "namespace": "default"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"},
        },
        namespace="default",
    )
    bound = await client.get(PODS, "p", namespace="default")
    assert bound["spec"]["nodeName"] == "node-1"


async def test_request_escape_hatch(client: Client) -> None:
    version = await client.request("GET", "/version")
    assert version["gitVersion"].startswith("v1.")


async def test_bad_credentials_and_unreachable_server(api_server: ApiServerHarness) -> None:
    config = api_server.client_config()
    from dataclasses import replace

    async with Client(replace(config, client_cert_pem=None, client_key_pem=None)) as anonymous:
        with pytest.raises(UnauthorizedError):
            await anonymous.list(NAMESPACES)
    async with Client(replace(config, ca_pem=None)) as untrusting:
        with pytest.raises(TransportError):
            await untrusting.list(NAMESPACES)
    async with Client(replace(config, server="https://127.0.0.1:1")) as nowhere:
        with pytest.raises(TransportError):
            await nowhere.list(NAMESPACES)


async def test_unknown_resource_is_not_found(client: Client) -> None:
    bogus = Resource("example.com", "v1", "widgets", "Widget", True)
    with pytest.raises(NotFoundError):
        await client.list(bogus, namespace="default")


async def test_bearer_token_from_file_authenticates_as_the_account(
    api_server: ApiServerHarness, client: Client, tmp_path: Path
) -> None:
    sa = await client.create(
        SERVICEACCOUNTS, {"metadata": {"name": "robot", "namespace": "default"}}
    )
    assert api_server.server is not None
    issuer = TokenIssuer(api_server.server.pki.sa_private_key_pem())
    token, _ = issuer.issue("default", "robot", sa["metadata"]["uid"])
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    config = api_server.client_config()
    robot_config = ClientConfig(server=config.server, ca_pem=config.ca_pem, token_file=token_file)
    async with Client(robot_config) as robot:
        with pytest.raises(ForbiddenError) as exc_info:
            await robot.list(SECRETS, namespace="default")
        review = await robot.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    assert "system:serviceaccount:default:robot" in exc_info.value.message
    assert review["status"]["userInfo"]["username"] == "system:serviceaccount:default:robot"


async def test_watch_carries_large_objects_split_over_many_chunks(client: Client) -> None:
    listing = await client.list(CONFIGMAPS, namespace="default")
    big_value = "x" * (1024 * 1024)  # far beyond one read of the socket
    async with client.watch(
        CONFIGMAPS,
        namespace="default",
        resource_version=listing["metadata"]["resourceVersion"],
        timeout_s=30,
    ) as stream:
        await client.create(
            CONFIGMAPS,
            {"metadata": {"name": "big", "namespace": "default"}, "data": {"v": big_value}},
        )
        await client.create(CONFIGMAPS, configmap("small-after"))
        names = []
        async for event_type, obj in stream:
            if event_type == "BOOKMARK":
                continue
            names.append(obj["metadata"]["name"])
            if obj["metadata"]["name"] == "big":
                assert obj["data"]["v"] == big_value
            if len(names) == 2:
                break
    assert names == ["big", "small-after"]
