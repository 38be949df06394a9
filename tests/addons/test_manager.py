"""The AddOn manager against a real API server in-process."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sampan.addons import ADDON_NAMESPACE, ADDONS, AddonManager, AddonOptions
from sampan.client import Client, ClientConfig, NotFoundError
from sampan.client.api import (
    CLUSTERROLEBINDINGS,
    CLUSTERROLES,
    CONFIGMAPS,
    EVENTS,
    ROLEBINDINGS,
    ROLES,
)
from sampan.pki import ensure_client_kubeconfig
from tests.client.conftest import ApiServerHarness
from tests.support.poll import eventually

Start = Callable[..., Awaitable[AddonManager]]

APP = """\
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: demo}
data: {level: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: defaults}
data: {a: b}
"""


async def test_applies_every_manifest_and_records_addons(
    tmp_path: Path, client: Client, start_manager: Start
) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "app.yaml").write_text(APP)
    await start_manager(manifests)
    settings = await client.get(CONFIGMAPS, "settings", namespace="demo")
    assert settings["data"] == {"level": "1"}
    managers = [m["manager"] for m in settings["metadata"]["managedFields"]]
    assert managers == ["sampan-addons"]
    # A namespaced object without a namespace lands in kube-system, as with K3s.
    await client.get(CONFIGMAPS, "defaults", namespace="kube-system")
    addon = await client.get(ADDONS, "app", namespace=ADDON_NAMESPACE)
    assert addon["spec"]["source"] == str(manifests / "app.yaml")
    assert addon["spec"]["checksum"] == hashlib.sha256(APP.encode()).hexdigest()


async def test_a_changed_file_is_applied_again(
    tmp_path: Path, client: Client, start_manager: Start
) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "app.yaml").write_text(APP)
    manager = await start_manager(manifests, poll_interval_s=0.1)
    changed = APP.replace('level: "1"', 'level: "2"')
    (manifests / "app.yaml").write_text(changed)

    async def level_two() -> bool:
        cm = await client.get(CONFIGMAPS, "settings", namespace="demo")
        return cm["data"]["level"] == "2"

    await eventually(level_two)

    # The checksum is recorded only after every object of the file was applied (so a crash in
    # between applies the file again): it follows the ConfigMap, it does not come with it.
    async def checksum_recorded() -> bool:
        addon = await client.get(ADDONS, "app", namespace=ADDON_NAMESPACE)
        return addon["spec"].get("checksum") == hashlib.sha256(changed.encode()).hexdigest()

    await eventually(checksum_recorded)
    # Deleting the file deletes nothing in the cluster.
    (manifests / "app.yaml").unlink()
    await manager.sync()
    await client.get(CONFIGMAPS, "settings", namespace="demo")


async def test_a_bad_file_is_reported_and_the_others_applied(
    tmp_path: Path, client: Client, start_manager: Start
) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "a-broken.yaml").write_text("apiVersion: v1\nkind: [\n")
    (manifests / "b-unknown.yaml").write_text(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
    )
    (manifests / "c-good.yaml").write_text(APP)
    manager = await start_manager(manifests)
    await client.get(CONFIGMAPS, "settings", namespace="demo")
    assert "cannot parse" in manager.errors["a-broken"]
    assert 'no kind "Widget"' in manager.errors["b-unknown"]
    broken = await client.get(ADDONS, "a-broken", namespace=ADDON_NAMESPACE)
    assert "checksum" not in broken["spec"]

    async def warning_event() -> list[dict[str, Any]]:
        events = await client.list(EVENTS, namespace=ADDON_NAMESPACE)
        return [
            e
            for e in events["items"]
            if e["reason"] == "ApplyManifestFailed" and e["involvedObject"]["name"] == "a-broken"
        ]

    [event] = await eventually(warning_event)
    assert str(manifests / "a-broken.yaml") in event["message"]
    assert event["type"] == "Warning"


async def test_crd_and_its_objects_in_one_file(
    tmp_path: Path, client: Client, start_manager: Start
) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "widgets.yaml").write_text(
        """\
apiVersion: example.com/v1
kind: Widget
metadata: {name: first, namespace: default}
spec: {size: 3}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"""
    )
    manager = await start_manager(manifests)
    assert manager.errors == {}
    widget = await client.request("GET", "/apis/example.com/v1/namespaces/default/widgets/first")
    assert widget["spec"] == {"size": 3}


async def test_skip_file_and_packaged_manifests(
    tmp_path: Path, client: Client, start_manager: Start
) -> None:
    """Packaged manifests are written with the cluster's values at every start (a ``.skip``
    does not stop the rewrite, as K3s's stage step; it stops the apply)."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "app.yaml").write_text(APP)
    (manifests / "app.yaml.skip").write_text("")
    packaged = {
        "extra": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n"
        "data: {dns: '%{CLUSTER_DNS}%', domain: '%{CLUSTER_DOMAIN}%'}\n",
        "held": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held}\n",
    }
    (manifests / "extra.yaml").write_text("edited by hand\n")
    (manifests / "held.yaml.skip").write_text("")
    variables = {"%{CLUSTER_DNS}%": "10.99.0.10", "%{CLUSTER_DOMAIN}%": "example.lan"}
    await start_manager(manifests, packaged=packaged, variables=variables)
    assert "10.99.0.10" in (manifests / "extra.yaml").read_text()
    extra = await client.get(CONFIGMAPS, "extra", namespace="kube-system")
    assert extra["data"] == {"dns": "10.99.0.10", "domain": "example.lan"}
    assert (manifests / "held.yaml").exists()
    for name, namespace in (("held", "kube-system"), ("settings", "demo")):
        try:
            await client.get(CONFIGMAPS, name, namespace=namespace)
        except NotFoundError:
            pass
        else:
            raise AssertionError(f"configmap {name} should not exist")


async def test_disable_removes_the_objects_file_and_addon(
    tmp_path: Path, client: Client, start_manager: Start
) -> None:
    """K3s's ``--disable``: the objects a disabled manifest lists are deleted from the
    cluster, its file removed (and not written again) and its AddOn deleted; a ``.skip`` does
    not protect a disabled file."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    packaged = {
        "gone": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: gone-a}\n---\n"
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
        "metadata: {name: gone-role}\nrules: []\n",
        "kept": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept}\n",
    }
    (manifests / "user.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: user, namespace: default}\n"
    )
    first = await start_manager(manifests, packaged=packaged)
    await first.stop()
    await client.get(CONFIGMAPS, "gone-a", namespace="kube-system")
    await client.get(CLUSTERROLES, "gone-role")
    await client.get(ADDONS, "gone", namespace=ADDON_NAMESPACE)
    (manifests / "gone.yaml.skip").write_text("")
    manager = await start_manager(manifests, packaged=packaged, disabled={"gone", "user"})
    assert manager.errors == {}
    assert not (manifests / "gone.yaml").exists()
    assert not (manifests / "user.yaml").exists()
    assert (manifests / "kept.yaml").exists()
    for resource, name, namespace in (
        (CONFIGMAPS, "gone-a", "kube-system"),
        (CLUSTERROLES, "gone-role", None),
        (ADDONS, "gone", ADDON_NAMESPACE),
        (CONFIGMAPS, "user", "default"),
        (ADDONS, "user", ADDON_NAMESPACE),
    ):
        try:
            await client.get(resource, name, namespace=namespace)
        except NotFoundError:
            continue
        raise AssertionError(f"{resource.kind} {name} should have been deleted")
    await client.get(CONFIGMAPS, "kept", namespace="kube-system")
    await client.get(ADDONS, "kept", namespace=ADDON_NAMESPACE)


async def test_objects_dropped_from_a_file_are_pruned(
    tmp_path: Path, client: Client, start_manager: Start
) -> None:
    """K3s's apply with the AddOn as owner: what a changed file no longer lists is deleted,
    across kinds it held before; objects that did not come from it stay."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "app.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: two}\n---\n"
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
        "metadata: {name: app-role}\nrules: []\n"
    )
    await client.create(
        CONFIGMAPS,
        {"metadata": {"name": "mine", "namespace": "kube-system"}},
        namespace="kube-system",
    )
    manager = await start_manager(manifests, packaged={}, poll_interval_s=0.1)
    one = await client.get(CONFIGMAPS, "one", namespace="kube-system")
    assert one["metadata"]["labels"] == {"addons.sampan.io/owner": "app"}
    addon = await client.get(ADDONS, "app", namespace=ADDON_NAMESPACE)
    assert addon["metadata"]["annotations"]["addons.sampan.io/gvks"] == (
        "rbac.authorization.k8s.io/v1, Kind=ClusterRole;v1, Kind=ConfigMap"
    )
    (manifests / "app.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one}\ndata: {a: b}\n"
    )

    async def pruned() -> bool:
        for resource, name, namespace in (
            (CONFIGMAPS, "two", "kube-system"),
            (CLUSTERROLES, "app-role", None),
        ):
            try:
                await client.get(resource, name, namespace=namespace)
                return False
            except NotFoundError:
                continue
        return True

    await eventually(pruned)
    assert manager.errors == {}
    assert (await client.get(CONFIGMAPS, "one", namespace="kube-system"))["data"] == {"a": "b"}
    await client.get(CONFIGMAPS, "mine", namespace="kube-system")


def test_packaged_manifests_are_package_data_with_placeholders() -> None:
    from sampan.addons import PACKAGED_NAMES, packaged_manifests, render, template_vars

    packaged = packaged_manifests()
    assert set(packaged) == set(PACKAGED_NAMES) == {"coredns", "local-storage", "ingress"}
    variables = template_vars(
        cluster_dns="10.43.0.10", cluster_domain="cluster.local", default_local_storage_path="/s"
    )
    coredns = render(packaged["coredns"], variables)
    assert "%{" not in coredns
    assert "clusterIP: 10.43.0.10" in coredns


async def test_a_restart_applies_only_what_changed(
    tmp_path: Path, client: Client, start_manager: Start
) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "app.yaml").write_text(APP)
    first = await start_manager(manifests)
    await first.stop()
    before = await client.get(CONFIGMAPS, "settings", namespace="demo")
    # Someone edits the object by hand: an unchanged manifest does not overwrite it at restart.
    before["data"] = {"level": "manual"}
    await client.update(CONFIGMAPS, before)
    await start_manager(manifests)
    after = await client.get(CONFIGMAPS, "settings", namespace="demo")
    assert after["data"] == {"level": "manual"}


RBAC_ADDON = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: addon-aggregated}
aggregationRule:
  clusterRoleSelectors:
  - matchLabels: {addon-aggregate: "yes"}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: addon-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {kind: ServiceAccount, name: addon, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: addon-everything, namespace: kube-system}
rules:
- {apiGroups: ["*"], resources: ["*"], verbs: ["*"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: addon-everything, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: addon-everything}
subjects:
- {kind: ServiceAccount, name: addon, namespace: kube-system}
"""


async def test_rbac_manifests_granting_everything(
    tmp_path: Path, api_server: ApiServerHarness, client: Client
) -> None:
    """Add-ons' RBAC (cluster-admin bindings, aggregated roles, roles granting ``*``) is
    applied: the manager runs as the supervisor runs it, in ``system:masters``, which RBAC
    escalation prevention lets through (as K3s deploys its manifests as cluster-admin)."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "rbac.yaml").write_text(RBAC_ADDON)
    assert api_server.server is not None
    kubeconfig = tmp_path / "addons.kubeconfig"
    await asyncio.to_thread(
        ensure_client_kubeconfig,
        api_server.server.pki,
        name="test-addons",
        common_name="system:sampan-addons",
        organizations=("system:masters",),
        path=kubeconfig,
        server_url=api_server.url,
    )
    manager = AddonManager(
        ClientConfig.from_kubeconfig(kubeconfig), AddonOptions(manifests_dir=manifests)
    )
    await manager.start()
    try:
        await manager.wait_synced()
    finally:
        await manager.stop()
    aggregated = await client.get(CLUSTERROLES, "addon-aggregated")
    assert aggregated["aggregationRule"]["clusterRoleSelectors"]
    binding = await client.get(CLUSTERROLEBINDINGS, "addon-admin")
    assert binding["roleRef"]["name"] == "cluster-admin"
    role = await client.get(ROLES, "addon-everything", namespace="kube-system")
    assert role["rules"] == [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    await client.get(ROLEBINDINGS, "addon-everything", namespace="kube-system")
    addon = await client.get(ADDONS, "rbac", namespace=ADDON_NAMESPACE)
    assert addon["spec"]["checksum"] == hashlib.sha256(RBAC_ADDON.encode()).hexdigest()
