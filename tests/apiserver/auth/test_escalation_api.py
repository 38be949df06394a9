"""RBAC escalation prevention as users meet it: real users (client certificates the cluster's
client CA signs) against a real in-process API server, over HTTPS and with kubectl, for every
way to write a Role, ClusterRole, RoleBinding or ClusterRoleBinding."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sampan.pki import ensure_client_certificate, ensure_client_kubeconfig
from tests.apiserver.test_http_clients import KUBECTL

RBAC = "rbac.authorization.k8s.io"
API = f"/apis/{RBAC}/v1"
NS = "a"
needs_kubectl = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

HELD = "is attempting to grant RBAC permissions not currently held:"
STAR = '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}'
STAR_URL = '{NonResourceURLs:["*"], Verbs:["*"]}'


def rule(verbs, groups, resources, names=None) -> dict[str, Any]:
    out: dict[str, Any] = {"verbs": verbs, "apiGroups": groups, "resources": resources}
    if names:
        out["resourceNames"] = names
    return out


def role(name: str, rules: list[dict[str, Any]], ns: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": ns},
        "rules": rules,
    }


def binding(name: str, role_kind: str, role_name: str, user: str, ns: str = "") -> dict[str, Any]:
    metadata = {"name": name, "namespace": ns} if ns else {"name": name}
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding" if ns else "ClusterRoleBinding",
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role_name},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": user}],
    }


def expected(resource: str, name: str, user: str, *lines: str) -> str:
    return (
        f'{resource}.{RBAC} "{name}" is forbidden: user "{user}" '
        f'(groups=["system:authenticated"]) {HELD}\n' + "\n".join(lines)
    )


class User:
    """One user with a client certificate: raw HTTPS requests and kubectl."""

    def __init__(self, harness: Any, name: str) -> None:
        self.harness = harness
        self.name = name
        self.kubeconfig = Path(harness.data_dir) / f"user-{name}.kubeconfig"
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> User:
        pki = self.harness.server.pki
        cert, key = await asyncio.to_thread(
            ensure_client_certificate, pki, f"user-{self.name}", self.name
        )
        await asyncio.to_thread(
            ensure_client_kubeconfig,
            pki,
            name=f"user-{self.name}",
            common_name=self.name,
            path=self.kubeconfig,
            server_url=self.harness.url,
        )
        context = ssl.create_default_context(cadata=pki.ca_pem.decode())
        context.load_cert_chain(cert, key)
        self.session = aiohttp.ClientSession(
            base_url=self.harness.url, connector=aiohttp.TCPConnector(ssl=context)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        assert self.session is not None
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self.session.request(
            method, path, data=data, params=params, headers=headers
        ) as response:
            return response.status, json.loads(await response.read())

    async def kubectl(self, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), HOME=str(self.harness.data_dir))
        process = await asyncio.create_subprocess_exec(
            KUBECTL,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin), 60)
        return process.returncode or 0, out.decode(), err.decode()

    async def wait_allowed(self, verb: str, resource: str, *, ns: str = NS, name: str = "") -> None:
        """Until the authorizer (fed by the watch cache) sees the user's new bindings."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": RBAC,
                    "resource": resource,
                    "namespace": ns,
                    "name": name,
                }
            },
        }
        path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        for _ in range(200):
            status, answer = await self.request("POST", path, review)
            assert status == 201, answer
            if answer["status"]["allowed"]:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} never got {verb} {resource} in {ns!r}")


async def admin(harness: Any, method: str, path: str, body: Any = None) -> Any:
    status, answer = await harness.request(method, path, body)
    assert status in (200, 201), answer
    return answer


async def grant(harness: Any, user: str, name: str, rules: list[dict], *, ns: str = NS) -> None:
    """A ClusterRole ``name`` with ``rules``, bound to ``user`` in ``ns`` (cluster-wide when
    ``ns`` is empty)."""
    await admin(
        harness,
        "POST",
        f"{API}/clusterroles",
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        },
    )
    path = f"{API}/namespaces/{ns}/rolebindings" if ns else f"{API}/clusterrolebindings"
    await admin(harness, "POST", path, binding(name, "ClusterRole", name, user, ns))


@pytest.fixture
async def cluster(harness):
    await admin(
        harness,
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
    )
    return harness


def assert_forbidden(status: int, answer: dict, message: str, name: str, kind: str) -> None:
    assert status == 403, answer
    assert answer["reason"] == "Forbidden"
    assert answer["message"] == message
    assert answer["details"] == {"name": name, "group": RBAC, "kind": kind}


# --- 1, 2: bindings to cluster-admin ------------------------------------------------------------


@needs_kubectl
async def test_create_rolebinding_only(cluster) -> None:
    await grant(cluster, "alice", "rb-creator", [rule(["create"], [RBAC], ["rolebindings"])])
    async with User(cluster, "alice") as alice:
        await alice.wait_allowed("create", "rolebindings")
        code, out, err = await alice.kubectl(
            "-n", NS, "create", "rolebinding", "pwn", "--clusterrole=cluster-admin", "--user=alice"
        )
        message = expected("rolebindings", "pwn", "alice", STAR, STAR_URL)
        assert code != 0 and message in err, err
        # the same over HTTPS: the Status as upstream writes it
        pwn = binding("pwn", "ClusterRole", "cluster-admin", "alice", NS)
        status, answer = await alice.request("POST", f"{API}/namespaces/{NS}/rolebindings", pwn)
        assert_forbidden(status, answer, message, "pwn", "rolebindings")
        # a role whose rules alice holds (create rolebindings in a) may be bound
        code, out, err = await alice.kubectl(
            "-n", NS, "create", "rolebinding", "ok", "--clusterrole=rb-creator", "--user=bob"
        )
        assert code == 0, err
        assert "rolebinding.rbac.authorization.k8s.io/ok created" in out
        # and not in another namespace, where she holds nothing
        await admin(
            cluster,
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}},
        )
        elsewhere = binding("ok", "ClusterRole", "rb-creator", "bob", "b")
        status, answer = await alice.request("POST", f"{API}/namespaces/b/rolebindings", elsewhere)
        assert status == 403, answer  # authorization itself: no create rolebindings in b
    status, _ = await cluster.request("GET", f"{API}/namespaces/{NS}/rolebindings/pwn")
    assert status == 404


@needs_kubectl
async def test_create_clusterrolebinding_only(cluster) -> None:
    await grant(
        cluster, "carl", "crb-creator", [rule(["create"], [RBAC], ["clusterrolebindings"])], ns=""
    )
    async with User(cluster, "carl") as carl:
        await carl.wait_allowed("create", "clusterrolebindings", ns="")
        code, _, err = await carl.kubectl(
            "create", "clusterrolebinding", "pwn", "--clusterrole=cluster-admin", "--user=carl"
        )
        message = expected("clusterrolebindings", "pwn", "carl", STAR, STAR_URL)
        assert code != 0 and message in err, err
        pwn = binding("pwn", "ClusterRole", "cluster-admin", "carl")
        status, answer = await carl.request("POST", f"{API}/clusterrolebindings", pwn)
        assert_forbidden(status, answer, message, "pwn", "clusterrolebindings")
        # a missing role cannot be resolved: 404, as upstream
        ghost = binding("ghost", "ClusterRole", "no-such-role", "carl")
        status, answer = await carl.request("POST", f"{API}/clusterrolebindings", ghost)
        assert status == 404, answer
        assert answer["message"] == f'clusterroles.{RBAC} "no-such-role" not found'
    status, _ = await cluster.request("GET", f"{API}/clusterrolebindings/pwn")
    assert status == 404


# --- 3: patching one's own Role, every write path -------------------------------------------------

OWN_RULES = [rule(["get", "patch", "update", "create"], [RBAC], ["roles"])]
STAR_RULE = rule(["*"], ["*"], ["*"])


@needs_kubectl
async def test_patch_own_role_every_path(cluster) -> None:
    await admin(cluster, "POST", f"{API}/namespaces/{NS}/roles", role("self", OWN_RULES))
    await admin(
        cluster,
        "POST",
        f"{API}/namespaces/{NS}/rolebindings",
        binding("self", "Role", "self", "dave", NS),
    )
    path = f"{API}/namespaces/{NS}/roles/self"
    message = expected("roles", "self", "dave", STAR)
    async with User(cluster, "dave") as dave:
        await dave.wait_allowed("patch", "roles", name="self")
        star = json.dumps(STAR_RULE)
        attempts = {
            "merge": ("--type", "merge", "-p", json.dumps({"rules": [*OWN_RULES, STAR_RULE]})),
            "json": ("--type", "json", "-p", f'[{{"op":"add","path":"/rules/-","value":{star}}}]'),
            "strategic": ("--type", "strategic", "-p", json.dumps({"rules": [STAR_RULE]})),
        }
        for patch_type, args in attempts.items():
            code, _, err = await dave.kubectl("-n", NS, "patch", "role", "self", *args)
            assert code != 0 and message in err, (patch_type, err)
        for content_type, body in (
            ("application/merge-patch+json", {"rules": [*OWN_RULES, STAR_RULE]}),
            (
                "application/json-patch+json",
                [{"op": "add", "path": "/rules/-", "value": STAR_RULE}],
            ),
            ("application/strategic-merge-patch+json", {"rules": [STAR_RULE]}),
        ):
            status, answer = await dave.request("PATCH", path, body, content_type=content_type)
            assert_forbidden(status, answer, message, "self", "roles")
        # PUT (kubectl replace)
        current = await admin(cluster, "GET", path)
        current["rules"] = [*OWN_RULES, STAR_RULE]
        code, _, err = await dave.kubectl("replace", "-f", "-", stdin=json.dumps(current).encode())
        assert code != 0 and message in err, err
        status, answer = await dave.request("PUT", path, current)
        assert_forbidden(status, answer, message, "self", "roles")
        # server-side apply, taking the rules over from their manager
        applied = role("self", [*OWN_RULES, STAR_RULE])
        code, _, err = await dave.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-",
            stdin=json.dumps(applied).encode(),
        )  # fmt: skip
        assert code != 0 and message in err, err
        status, answer = await dave.request(
            "PATCH",
            path,
            applied,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": "dave", "force": "true"},
        )
        assert_forbidden(status, answer, message, "self", "roles")
        # ... and creating by apply, by POST, by PUT of a missing role
        new = role("new", [STAR_RULE])
        new_message = expected("roles", "new", "dave", STAR)
        code, _, err = await dave.kubectl(
            "apply", "--server-side", "-f", "-", stdin=json.dumps(new).encode()
        )
        assert code != 0 and new_message in err, err
        status, answer = await dave.request("POST", f"{API}/namespaces/{NS}/roles", new)
        assert_forbidden(status, answer, new_message, "new", "roles")
        status, answer = await dave.request("PUT", f"{API}/namespaces/{NS}/roles/new", new)
        assert_forbidden(status, answer, new_message, "new", "roles")
        # writes that grant nothing new still work
        code, _, err = await dave.kubectl("-n", NS, "label", "role", "self", "team=a")
        assert code == 0, err
        held = rule(["get"], [RBAC], ["roles"])
        status, answer = await dave.request(
            "PATCH",
            path,
            {"rules": [*OWN_RULES, held]},
            content_type="application/merge-patch+json",
        )
        assert status == 200, answer
    final = await admin(cluster, "GET", path)
    assert STAR_RULE not in final["rules"]
    status, _ = await cluster.request("GET", f"{API}/namespaces/{NS}/roles/new")
    assert status == 404


async def test_gc_fields_and_resolution_errors(cluster) -> None:
    await admin(cluster, "POST", f"{API}/namespaces/{NS}/roles", role("big", [STAR_RULE]))
    await grant(
        cluster, "gus", "role-writer", [rule(["get", "patch", "create"], [RBAC], ["roles"])]
    )
    # a binding of gus's to a role that does not exist
    await admin(
        cluster,
        "POST",
        f"{API}/namespaces/{NS}/rolebindings",
        binding("ghost", "Role", "ghost", "gus", NS),
    )
    path = f"{API}/namespaces/{NS}/roles/big"
    async with User(cluster, "gus") as gus:
        await gus.wait_allowed("patch", "roles", name="big")
        # only the garbage collector's fields: allowed although "big" grants everything
        patch = {"metadata": {"finalizers": ["example.com/hold"]}}
        status, answer = await gus.request(
            "PATCH", path, patch, content_type="application/merge-patch+json"
        )
        assert status == 200, answer
        patch = {"metadata": {"finalizers": None}}
        status, answer = await gus.request(
            "PATCH", path, patch, content_type="application/merge-patch+json"
        )
        assert status == 200, answer
        # the garbage collector's own patch shape, dropping an owner reference
        owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "u-1"}
        owned = await admin(cluster, "GET", path)
        owned["metadata"]["ownerReferences"] = [owner]
        owned = await admin(cluster, "PUT", path, owned)
        meta = owned["metadata"]
        patch = {
            "metadata": {
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "ownerReferences": None,
            }
        }
        status, answer = await gus.request(
            "PATCH", path, patch, content_type="application/merge-patch+json"
        )
        assert status == 200, answer
        assert "ownerReferences" not in answer["metadata"]
        # anything else: the full check (and the message names the missing role)
        status, answer = await gus.request(
            "PATCH",
            path,
            {"metadata": {"labels": {"a": "b"}}},
            content_type="application/merge-patch+json",
        )
        assert_forbidden(
            status,
            answer,
            expected("roles", "big", "gus", STAR)
            + f'; resolution errors: [roles.{RBAC} "ghost" not found]',
            "big",
            "roles",
        )


# --- 4: bind restricted by resourceNames ---------------------------------------------------------


@needs_kubectl
async def test_bind_only_named_clusterrole(cluster) -> None:
    await grant(cluster, "erin", "rb-creator", [rule(["create"], [RBAC], ["rolebindings"])])
    await grant(cluster, "erin", "bind-view", [rule(["bind"], [RBAC], ["clusterroles"], ["view"])])
    async with User(cluster, "erin") as erin:
        await erin.wait_allowed("bind", "clusterroles", name="view")
        await erin.wait_allowed("create", "rolebindings")
        code, out, err = await erin.kubectl(
            "-n", NS, "create", "rolebinding", "v", "--clusterrole=view", "--user=bob"
        )
        assert code == 0, err
        assert "rolebinding.rbac.authorization.k8s.io/v created" in out
        code, _, err = await erin.kubectl(
            "-n", NS, "create", "rolebinding", "e", "--clusterrole=edit", "--user=bob"
        )
        assert code != 0, err
        assert f'rolebindings.{RBAC} "e" is forbidden: user "erin"' in err
        assert HELD in err
        edit = binding("e", "ClusterRole", "edit", "bob", NS)
        status, answer = await erin.request("POST", f"{API}/namespaces/{NS}/rolebindings", edit)
        assert status == 403 and HELD in answer["message"], answer


# --- 5: escalate ----------------------------------------------------------------------------------


@needs_kubectl
async def test_escalate_verb(cluster) -> None:
    await grant(
        cluster, "frank", "role-writer", [rule(["create", "update", "get"], [RBAC], ["roles"])]
    )
    await grant(cluster, "frank", "escalator", [rule(["escalate"], [RBAC], ["roles"])])
    await admin(
        cluster,
        "POST",
        f"{API}/namespaces/{NS}/rolebindings",
        binding("gina-writer", "ClusterRole", "role-writer", "gina", NS),
    )
    await grant(
        cluster, "gina", "escalate-named", [rule(["escalate"], [RBAC], ["roles"], ["named"])]
    )
    big = role("big", [STAR_RULE, rule(["get"], [""], ["secrets"])])
    async with User(cluster, "frank") as frank:
        await frank.wait_allowed("escalate", "roles")
        code, out, err = await frank.kubectl("create", "-f", "-", stdin=json.dumps(big).encode())
        assert code == 0, err
        assert "role.rbac.authorization.k8s.io/big created" in out
    # escalate restricted to one name: it covers a PUT of that name, not a POST create
    # (whose URL names nothing), as upstream
    named = role("named", [STAR_RULE])
    async with User(cluster, "gina") as gina:
        await gina.wait_allowed("escalate", "roles", name="named")
        await gina.wait_allowed("create", "roles")
        status, answer = await gina.request("POST", f"{API}/namespaces/{NS}/roles", named)
        assert_forbidden(status, answer, expected("roles", "named", "gina", STAR), "named", "roles")
        status, answer = await gina.request("PUT", f"{API}/namespaces/{NS}/roles/named", named)
        assert status == 201, answer


# --- 6: admins, aggregation, controllers ---------------------------------------------------------


async def test_admin_and_aggregation(cluster) -> None:
    # system:masters: no check at all
    await admin(
        cluster,
        "POST",
        f"{API}/clusterrolebindings",
        binding("root", "ClusterRole", "cluster-admin", "root"),
    )
    aggregated = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "agg"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "yes"}}]},
        "rules": [],
    }
    await grant(
        cluster, "harry", "clusterrole-writer", [rule(["create"], [RBAC], ["clusterroles"])], ns=""
    )
    async with User(cluster, "harry") as harry:
        await harry.wait_allowed("create", "clusterroles", ns="")
        status, answer = await harry.request("POST", f"{API}/clusterroles", aggregated)
        assert status == 403, answer
        assert answer["message"] == (
            f'clusterroles.{RBAC} "agg" is forbidden: '
            "must have cluster-admin privileges to use the aggregationRule"
        )
    await admin(cluster, "POST", f"{API}/clusterroles", aggregated)
    # an aggregation controller's identity (upstream's clusterrole-aggregation-controller
    # role) fills in rules it does not hold itself: allowed by its escalate permission
    await grant(
        cluster,
        "aggregator",
        "aggregation-controller",
        [rule(["escalate", "get", "list", "watch", "update", "patch"], [RBAC], ["clusterroles"])],
        ns="",
    )
    async with User(cluster, "aggregator") as aggregator:
        await aggregator.wait_allowed("escalate", "clusterroles", ns="", name="agg")
        current = await admin(cluster, "GET", f"{API}/clusterroles/agg")
        current["rules"] = [rule(["get", "list", "delete"], [""], ["secrets"])]
        status, answer = await aggregator.request("PUT", f"{API}/clusterroles/agg", current)
        assert status == 200, answer
        status, answer = await aggregator.request(
            "PATCH",
            f"{API}/clusterroles/agg",
            {"rules": [STAR_RULE]},
            content_type="application/merge-patch+json",
        )
        assert status == 200, answer


async def test_roleref_is_immutable(cluster) -> None:
    created = await admin(
        cluster,
        "POST",
        f"{API}/namespaces/{NS}/rolebindings",
        binding("rb", "ClusterRole", "view", "bob", NS),
    )
    created["roleRef"]["name"] = "edit"
    status, answer = await cluster.request("PUT", f"{API}/namespaces/{NS}/rolebindings/rb", created)
    assert status == 422, answer
    assert answer["details"]["causes"][0]["field"] == "roleRef"
    assert "cannot change roleRef" in answer["message"]
