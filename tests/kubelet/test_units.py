"""Pure pieces of the kubelet: options, $(VAR) expansion, env, DNS, QoS, sandbox and
container configs (strictly typed security fields), pod phase, the atomic writer, volume
directory modes and fsGroup ownership, the CNI conflist."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import stat
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sampan.kubelet.env import ConfigError, build_env, expand
from sampan.kubelet.options import KubeletOptions, KubeletOptionsError, parse_taint
from sampan.kubelet.podutil import pod_resource_totals, qos_class
from sampan.kubelet.runtime import pb
from sampan.kubelet.specs import (
    DNSSettings,
    FieldTypeError,
    SpecError,
    SubPathError,
    check_pod,
    container_config,
    dns_config,
    parse_resolv_conf,
    sandbox_config,
    volume_mounts,
)
from sampan.kubelet.static import mirror_pod, read_manifests
from sampan.kubelet.status import pod_phase
from sampan.kubelet.volumes import MountedVolume, VolumeError, VolumeManager, write_atomic
from sampan.network.cni import CNIConfig, render_conflist, write_conflist

DNS = DNSSettings(
    cluster_dns="10.43.0.10",
    cluster_domain="cluster.local",
    host_servers=("192.0.2.53",),
    host_searches=("example.com",),
    host_options=("edns0",),
)


def _pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec},
    }


class _Sources:
    def __init__(self) -> None:
        self.cms = {("ns", "cm"): {"data": {"k": "v", "other": "o"}}}
        self.secrets = {("ns", "s"): {"data": {"pw": base64.b64encode(b"hunter2").decode()}}}

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cms.get((namespace, name))

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get((namespace, name))

    def services(self, namespace: str) -> list[dict[str, Any]]:
        return [
            {
                "metadata": {"name": "my-svc"},
                "spec": {"clusterIP": "10.43.0.5", "ports": [{"port": 80, "protocol": "TCP"}]},
            }
        ]


def test_unknown_kubelet_arg_is_rejected() -> None:
    with pytest.raises(KubeletOptionsError, match="no-such-flag"):
        KubeletOptions(node_name="n", data_dir=Path("/tmp/x"), kubelet_args={"no-such-flag": "1"})
    options = KubeletOptions(
        node_name="n",
        data_dir=Path("/tmp/x"),
        kubelet_args={"max-pods": "20", "cgroup-root": "/custom", "kube-reserved": "cpu=500m"},
        system_reserved="memory=1Gi",
    )
    assert options.args.max_pods == 20
    assert options.cgroup_root == "/custom"
    assert options.kube_reserved_q == {"cpu": Decimal("0.500")}
    assert options.system_reserved_q == {"memory": Decimal(2**30)}
    assert parse_taint("k=v:NoSchedule") == {"key": "k", "value": "v", "effect": "NoSchedule"}
    with pytest.raises(KubeletOptionsError):
        parse_taint("k=v:Sometimes")


def test_expansion_follows_upstream_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("$A $(A", env) == "$A $(A"


def test_env_sources_and_precedence() -> None:
    pod = _pod()
    container = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
        "env": [
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "CM_k", "value": "overridden $(NS)"},
        ],
    }
    env = dict(build_env(pod, container, _Sources(), {"memory": Decimal(2 * 2**20)}))
    assert env["PW"] == "hunter2"
    assert env["NS"] == "ns"
    assert env["MEM"] == "2"  # no limit: the node's allocatable
    assert env["CM_k"] == "overridden ns"
    assert env["CM_other"] == "o"
    assert env["MY_SVC_SERVICE_HOST"] == "10.43.0.5"
    missing = {
        "name": "c",
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope"}}}],
    }
    with pytest.raises(ConfigError, match="couldn't find key nope"):
        build_env(pod, missing, _Sources(), {})
    missing["env"][0]["valueFrom"]["configMapKeyRef"]["optional"] = True
    assert "X" not in dict(build_env(pod, missing, _Sources(), {}))


def test_dns_by_policy() -> None:
    cluster = dns_config(_pod(), DNS)
    assert list(cluster.servers) == ["10.43.0.10"]
    assert list(cluster.searches) == [
        "ns.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
        "example.com",
    ]
    assert list(cluster.options) == ["ndots:5"]
    host_net = dns_config(_pod(hostNetwork=True), DNS)
    assert list(host_net.servers) == ["192.0.2.53"]
    with_host = dns_config(_pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), DNS)
    assert list(with_host.servers) == ["10.43.0.10"]
    none = dns_config(
        _pod(
            dnsPolicy="None",
            dnsConfig={
                "nameservers": ["1.1.1.1"],
                "searches": ["a.b"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}],
            },
        ),
        DNS,
    )
    assert (list(none.servers), list(none.searches), list(none.options)) == (
        ["1.1.1.1"],
        ["a.b"],
        ["ndots:2", "rotate"],
    )
    assert parse_resolv_conf("nameserver 9.9.9.9\nsearch x y\noptions ndots:1\n") == (
        ("9.9.9.9",),
        ("x", "y"),
        ("ndots:1",),
    )


def test_qos_and_pod_totals() -> None:
    assert qos_class(_pod()) == "BestEffort"
    guaranteed = _pod()
    guaranteed["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1", "memory": "1Gi"}}
    assert qos_class(guaranteed) == "Guaranteed"
    burstable = _pod()
    burstable["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    assert qos_class(burstable) == "Burstable"
    assert pod_resource_totals(guaranteed) == (1000, 1000, 2**30)
    assert pod_resource_totals(burstable) == (100, None, None)


def test_sandbox_and_container_configs() -> None:
    pod = _pod(
        hostNetwork=False,
        shareProcessNamespace=True,
        containers=[
            {
                "name": "c",
                "image": "busybox",
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
                "securityContext": {
                    "runAsUser": 1000,
                    "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                },
            }
        ],
    )
    config = sandbox_config(
        pod,
        attempt=1,
        log_directory=Path("/logs"),
        cgroup_parent="/kubepods/podu1",
        dns=DNS,
        grace_period_s=30,
    )
    assert config.hostname == "p"
    assert config.metadata.attempt == 1
    assert config.labels["io.kubernetes.pod.uid"] == "u1"
    assert config.linux.security_context.namespace_options.pid == pb.NamespaceMode.POD
    assert [(p.container_port, p.host_port) for p in config.port_mappings] == [(80, 8080)]
    assert (
        sandbox_config(
            _pod(hostNetwork=True),
            attempt=0,
            log_directory=Path("/l"),
            cgroup_parent="/x",
            dns=DNS,
            grace_period_s=1,
        ).hostname
        == ""
    )
    container = container_config(
        pod,
        pod["spec"]["containers"][0],
        attempt=3,
        env=[("A", "1")],
        command=["sh"],
        args=[],
        mounts=[],
        qos="Guaranteed",
        memory_capacity_bytes=2**33,
        termination_file="/t",
        image="sha256:abc",
        grace_period_s=30,
    )
    resources = container.linux.resources
    assert (resources.cpu_quota, resources.cpu_period, resources.cpu_shares) == (25000, 100000, 256)
    assert resources.memory_limit_in_bytes == 64 * 2**20
    sc = container.linux.security_context
    assert sc.run_as_user.value == 1000 and sc.readonly_rootfs and sc.no_new_privs
    assert list(sc.capabilities.add_capabilities) == ["NET_ADMIN"]
    assert container.annotations["io.kubernetes.container.restartCount"] == "3"
    assert container.log_path == "c/3.log"


def _status(state: str, exit_code: int = 0, last: bool = False) -> dict[str, Any]:
    if state == "terminated":
        return {"state": {"terminated": {"exitCode": exit_code}}}
    if state == "waiting":
        return {
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1}} if last else {},
        }
    return {"state": {"running": {}}}


def test_pod_phase() -> None:
    assert pod_phase("Always", True, False, [_status("running")]) == "Running"
    assert pod_phase("Always", True, False, [_status("waiting")]) == "Pending"
    assert pod_phase("Always", True, False, [_status("waiting", last=True)]) == "Running"
    assert pod_phase("Never", True, False, [_status("terminated", 0)]) == "Succeeded"
    assert pod_phase("Never", True, False, [_status("terminated", 2)]) == "Failed"
    assert pod_phase("OnFailure", True, False, [_status("terminated", 0)]) == "Succeeded"
    assert pod_phase("Never", False, True, [_status("waiting")]) == "Failed"
    assert pod_phase("Always", False, False, [_status("waiting")]) == "Pending"


def test_atomic_writer_swaps_whole_sets(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert write_atomic(target, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    assert (target / "a").read_text() == "1"
    assert (target / "dir" / "b").read_text() == "2"
    assert os.readlink(target / "a") == "..data/a"
    assert not write_atomic(target, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    old_data = os.readlink(target / "..data")
    assert write_atomic(target, {"a": (b"changed", 0o644)})
    assert (target / "a").read_text() == "changed"
    assert not (target / "dir").exists()
    assert not (target / old_data).exists()


def test_cni_conflist(tmp_path: Path) -> None:
    cfg = CNIConfig(pod_cidrs=("10.42.3.0/24",), ipam_data_dir=tmp_path / "ipam")
    rendered = render_conflist(cfg)
    types = [p["type"] for p in rendered["plugins"]]
    assert types == ["bridge", "portmap", "loopback"]
    bridge = rendered["plugins"][0]
    assert bridge["bridge"] == "cni0" and bridge["isGateway"] and bridge["ipMasq"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.42.3.0/24"}]]
    assert write_conflist(tmp_path / "net.d", cfg)
    assert not write_conflist(tmp_path / "net.d", cfg)
    written = json.loads((tmp_path / "net.d" / "10-sampan.conflist").read_text())
    assert written == rendered
    assert [p.name for p in (tmp_path / "net.d").iterdir()] == ["10-sampan.conflist"]
    with pytest.raises(ValueError):
        CNIConfig(pod_cidrs=("10.42.3.1/24",))


def test_static_manifests_and_mirror(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n"
        "  - name: c\n    image: busybox\n"
    )
    (tmp_path / "junk.yaml").write_text(": : :")
    pods = read_manifests(tmp_path, "node1")
    [(uid, pod)] = pods.items()
    assert pod["metadata"]["name"] == "web-node1"
    assert pod["metadata"]["namespace"] == "default"
    assert pod["spec"]["nodeName"] == "node1"
    assert pod["spec"]["restartPolicy"] == "Always"  # API defaults applied
    assert read_manifests(tmp_path, "node1").keys() == {uid}
    mirror = mirror_pod(pod, "node-uid", "node1")
    assert mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"] == uid
    assert "uid" not in mirror["metadata"]
    assert mirror["metadata"]["ownerReferences"][0]["uid"] == "node-uid"


def test_pull_credentials_match_the_registry() -> None:
    from sampan.kubelet.credentials import image_registry, pull_credentials

    assert image_registry("busybox") == "docker.io"
    assert image_registry("library/busybox:1") == "docker.io"
    assert image_registry("ghcr.io/a/b:1") == "ghcr.io"
    assert image_registry("localhost:5000/x") == "localhost:5000"
    config = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"me:pw").decode()},
            "ghcr.io": {"username": "u", "password": "p"},
        }
    }
    secret = {
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }
    [hub] = pull_credentials("busybox:1.36", [secret])
    assert (hub.username, hub.password) == ("me", "pw")
    [gh] = pull_credentials("ghcr.io/x/y", [secret])
    assert (gh.username, gh.password) == ("u", "p")
    assert pull_credentials("quay.io/x/y", [secret]) == []


def _sandbox(pod: dict[str, Any]) -> pb.PodSandboxConfig:
    return sandbox_config(
        pod, attempt=0, log_directory=Path("/l"), cgroup_parent="/x", dns=DNS, grace_period_s=1
    )


def _container(pod: dict[str, Any], index: int = 0) -> pb.ContainerConfig:
    return container_config(
        pod,
        pod["spec"]["containers"][index],
        attempt=0,
        env=[],
        command=[],
        args=[],
        mounts=[],
        qos="BestEffort",
        memory_capacity_bytes=2**30,
        termination_file="/t",
        image="sha256:abc",
        grace_period_s=1,
    )


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"hostNetwork": "true"}, "spec.hostNetwork"),
        ({"hostPID": 1}, "spec.hostPID"),
        ({"activeDeadlineSeconds": "60"}, "spec.activeDeadlineSeconds"),
        ({"hostIPC": "false"}, "spec.hostIPC"),
        ({"shareProcessNamespace": "yes"}, "spec.shareProcessNamespace"),
        ({"securityContext": {"runAsUser": "0"}}, "spec.securityContext.runAsUser"),
        ({"securityContext": {"fsGroup": True}}, "spec.securityContext.fsGroup"),
        (
            {"securityContext": {"supplementalGroups": ["1"]}},
            "spec.securityContext.supplementalGroups[0]",
        ),
        (
            {"containers": [{"name": "c", "securityContext": {"privileged": "true"}}]},
            "spec.containers[0].securityContext.privileged",
        ),
        (
            {"initContainers": [{"name": "i", "securityContext": {"privileged": 1}}]},
            "spec.initContainers[0].securityContext.privileged",
        ),
        (
            {"containers": [{"name": "c", "securityContext": "privileged"}]},
            "spec.containers[0].securityContext",
        ),
        (
            {"containers": [{"name": "c", "securityContext": {"capabilities": {"add": "ALL"}}}]},
            "spec.containers[0].securityContext.capabilities.add",
        ),
        (
            {"containers": [{"name": "c", "securityContext": {"readOnlyRootFilesystem": "true"}}]},
            "spec.containers[0].securityContext.readOnlyRootFilesystem",
        ),
        (
            {"containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": 0}}]},
            "spec.containers[0].securityContext.allowPrivilegeEscalation",
        ),
        (
            {"containers": [{"name": "c", "securityContext": {"runAsNonRoot": "true"}}]},
            "spec.containers[0].securityContext.runAsNonRoot",
        ),
        (
            {"containers": [{"name": "c", "volumeMounts": [{"name": "v", "readOnly": "true"}]}]},
            "spec.containers[0].volumeMounts[0].readOnly",
        ),
    ],
)
def test_security_fields_of_the_wrong_type_are_refused(spec: dict[str, Any], path: str) -> None:
    pod = _pod(**spec)
    with pytest.raises(FieldTypeError) as info:
        check_pod(pod)
    assert info.value.path == path
    # The builders refuse too: nothing is granted (nor denied) by truthiness.
    if not path.endswith(("readOnly", "activeDeadlineSeconds")):
        with pytest.raises(FieldTypeError):
            _sandbox(pod)
            _container(pod)


def test_security_context_types_and_fs_group() -> None:
    pod = _pod(
        securityContext={"runAsUser": 1000, "fsGroup": 2000, "supplementalGroups": [3000]},
        containers=[
            {"name": "c", "securityContext": {"runAsUser": None, "privileged": False}},
            {"name": "d", "securityContext": {"runAsUser": 0, "capabilities": {"drop": ["ALL"]}}},
        ],
    )
    check_pod(pod)
    sandbox = _sandbox(pod).linux.security_context
    assert list(sandbox.supplemental_groups) == [2000, 3000]
    assert not sandbox.privileged
    assert sandbox.namespace_options.network == pb.NamespaceMode.POD
    first = _container(pod, 0).linux.security_context
    assert first.run_as_user.value == 1000  # null falls back to the pod's
    assert list(first.supplemental_groups) == [2000, 3000]
    assert not first.privileged and list(first.masked_paths)
    second = _container(pod, 1).linux.security_context
    assert second.HasField("run_as_user") and second.run_as_user.value == 0
    assert list(second.capabilities.drop_capabilities) == ["ALL"]


def test_sub_path_cannot_leave_its_volume(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    (volume / "sub").mkdir(parents=True)
    (volume / "escape").symlink_to("/etc")
    volumes = {"v": MountedVolume(str(volume))}

    def mount(sub_path: str) -> list[pb.Mount]:
        container = {"volumeMounts": [{"name": "v", "mountPath": "/m", "subPath": sub_path}]}
        return volume_mounts(container, volumes)[0]

    assert mount("sub")[0].host_path == str(volume / "sub")
    for bad in ("../..", "/etc", "sub/../../x", "escape", "escape/passwd"):
        with pytest.raises(SubPathError):
            mount(bad)


class _VolumeSources(_Sources):
    def __init__(self) -> None:
        super().__init__()
        self.cms[("ns", "kube-root-ca.crt")] = {"data": {"ca.crt": "CA"}}


def test_volume_dirs_modes_and_fs_group_ownership(tmp_path: Path) -> None:
    async def token(_ns: str, _sa: str, _body: dict[str, Any]) -> dict[str, Any]:
        return {"status": {"token": "a.b.c"}}

    kubelet_dir = tmp_path / "kubelet"
    kubelet_dir.mkdir(mode=0o755)
    manager = VolumeManager(kubelet_dir, _VolumeSources(), token)  # type: ignore[arg-type]
    pods_dir = kubelet_dir / "pods"
    old_pod_dir = pods_dir / "u1" / "volumes" / "kubernetes.io~configmap"
    old_pod_dir.mkdir(parents=True, mode=0o755)  # as an older kubelet left it
    os.chmod(pods_dir, 0o755)
    pod = _pod(
        securityContext={"fsGroup": 2000, "runAsUser": 1000},
        volumes=[
            {"name": "conf", "configMap": {"name": "cm", "defaultMode": 0o400}},
            {
                "name": "info",
                "downwardAPI": {
                    "items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                },
            },
            {"name": "scratch", "emptyDir": {}},
        ],
    )

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    volumes = asyncio.run(manager.setup(pod, {}))
    for directory in (
        kubelet_dir,
        pods_dir,
        pods_dir / "u1",
        pods_dir / "u1" / "volumes",
        old_pod_dir,
    ):
        assert mode(directory) == 0o750, directory
        assert (directory.stat().st_uid, directory.stat().st_gid) == (0, 0)
    conf = Path(volumes["conf"].host_path)
    assert (conf / "k").read_text() == "v"
    info = (conf / "k").stat()
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o440, 2000)  # 0400 + g+r
    assert mode(conf) == 0o2755 and conf.stat().st_gid == 2000
    assert mode((conf / "k").resolve().parent) == 0o2755
    ns_file = (Path(volumes["info"].host_path) / "ns").stat()
    assert (stat.S_IMODE(ns_file.st_mode), ns_file.st_gid) == (0o644, 2000)
    scratch = Path(volumes["scratch"].host_path)
    assert (mode(scratch), scratch.stat().st_gid) == (0o2777, 2000)
    data_dir = os.readlink(conf / "..data")
    asyncio.run(manager.setup(pod, {}))
    assert os.readlink(conf / "..data") == data_dir  # nothing rewritten when nothing changed

    bad = _pod(volumes=[{"name": "conf", "configMap": {"name": "cm", "defaultMode": "0400"}}])
    bad["metadata"]["uid"] = "u2"
    with pytest.raises(VolumeError, match='defaultMode: Invalid value: "0400": must be an integer'):
        asyncio.run(manager.setup(bad, {}))
    bad["spec"]["volumes"][0]["configMap"]["defaultMode"] = 0o4755
    with pytest.raises(VolumeError, match="between 0 and 0777"):
        asyncio.run(manager.setup(bad, {}))


def test_token_is_private_to_the_pods_user(tmp_path: Path) -> None:
    payload = {"token": (b"a.b.c", 0o600), "ca.crt": (b"CA", 0o644)}
    target = tmp_path / "t"
    assert write_atomic(target, payload, fs_group=2000, owners={"token": 1000})
    token = (target / "token").stat()
    assert (stat.S_IMODE(token.st_mode), token.st_uid, token.st_gid) == (0o640, 1000, 2000)
    assert not write_atomic(target, payload, fs_group=2000, owners={"token": 1000})


def test_seccomp_profiles() -> None:
    kinds = pb.SecurityProfile.ProfileType
    assert _container(_pod()).linux.security_context.seccomp.profile_type == kinds.Unconfined
    pod = _pod(
        securityContext={"seccompProfile": {"type": "RuntimeDefault"}},
        containers=[
            {"name": "c"},
            {
                "name": "d",
                "securityContext": {
                    "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}
                },
            },
        ],
    )
    assert _container(pod, 0).linux.security_context.seccomp.profile_type == kinds.RuntimeDefault
    with pytest.raises(SpecError):  # no profile directory given
        _container(pod, 1)
    local = container_config(
        pod,
        pod["spec"]["containers"][1],
        attempt=0,
        env=[],
        command=[],
        args=[],
        mounts=[],
        qos="BestEffort",
        memory_capacity_bytes=2**30,
        termination_file="/t",
        image="sha256:abc",
        grace_period_s=1,
        seccomp_root=Path("/k/seccomp"),
    ).linux.security_context.seccomp
    assert (local.profile_type, local.localhost_ref) == (kinds.Localhost, "/k/seccomp/p.json")
    with pytest.raises(SpecError):
        _container(_pod(securityContext={"seccompProfile": {"type": "Sometimes"}}))
    with pytest.raises(FieldTypeError):
        check_pod(_pod(securityContext={"seccompProfile": {"type": 2}}))


def test_kubelet_port_address_and_listeners_that_stay_off(tmp_path: Path) -> None:
    default = KubeletOptions(node_name="n", data_dir=tmp_path)
    assert (default.args.port, default.args.address) == (10250, "0.0.0.0")
    args = {"port": "11250", "address": "127.0.0.1", "read-only-port": "0", "healthz-port": "0"}
    options = KubeletOptions(node_name="n", data_dir=tmp_path, kubelet_args=args)
    assert (options.args.port, options.args.address) == (11250, "127.0.0.1")
    for bad, message in (
        ({"port": "0"}, "port=0: not a port number"),
        ({"port": "70000"}, "not a port number"),
        ({"read-only-port": "10255"}, "has no such listener; only 0 (off) is accepted"),
        ({"healthz-port": "10248"}, "has no such listener"),
        ({"address": "nowhere"}, "address=nowhere: not an IP address"),
    ):
        with pytest.raises(KubeletOptionsError, match=re.escape(message)):
            KubeletOptions(node_name="n", data_dir=tmp_path, kubelet_args=bad)
