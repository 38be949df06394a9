"""``sampan server --cluster-init``: the embedded etcd as a user meets it (a real server
process, a real etcd child, kubectl and etcdctl), and the command line it gets."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from sampan.config import ConfigError, load_config
from sampan.pki.etcd import EtcdPKI
from sampan.supervisor.etcd import etcd_args
from tests.supervisor.test_server_process import free_port, start_server, wait_for_log

pytestmark = pytest.mark.etcd


def _etcd_ports() -> list[str]:
    """Free client and peer ports, the peer's next port (etcd's metrics) free too."""
    while True:
        peer = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", peer + 1))
            except OSError:
                continue
        return ["--etcd-client-port", str(free_port()), "--etcd-peer-port", str(peer)]


def _etcdctl(pki: EtcdPKI, port: int, *args: str, cert: bool = True) -> subprocess.CompletedProcess:
    tls = ["--cacert", str(pki.server_ca)]
    if cert:
        tls += ["--cert", str(pki.client_cert), "--key", str(pki.client_key)]
    return subprocess.run(
        ["etcdctl", f"--endpoints=https://127.0.0.1:{port}", "--dial-timeout=3s", *tls, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "ETCDCTL_API": "3"},
    )


def _kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, timeout=60
    )


def _poll(check: Any, timeout_s: float = 120.0) -> None:
    """Until ``check()`` is true (fails the test after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the condition did not become true"
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_cluster_init_runs_a_tls_etcd_child_that_keeps_the_data(tmp_path: Path) -> None:
    ports = _etcd_ports()
    client_port = int(ports[1])
    proc, log_path = start_server(
        tmp_path, "--disable-agent", "--cluster-init", *ports, "--etcd-arg=snapshot-count=5000"
    )
    kubeconfig = tmp_path / "kubeconfig.yaml"
    pki = EtcdPKI(tmp_path / "data" / "server" / "tls" / "etcd")
    try:
        text = wait_for_log(proc, log_path, "all components ready")
        assert f"datastore ready: etcd https://127.0.0.1:{client_port}" in text
        etcd_pid = int(re.search(r"started etcd \(pid (\d+)\)", text).group(1))
        created = _kubectl(kubeconfig, "create", "configmap", "kept", "--from-literal=a=b")
        assert created.returncode == 0, created.stderr
        # etcdctl with the etcd CA's client certificate sees the object and one member...
        got = _etcdctl(pki, client_port, "get", "/registry/configmaps/default/kept", "--keys-only")
        assert got.stdout.split() == ["/registry/configmaps/default/kept"], got.stderr
        members = json.loads(_etcdctl(pki, client_port, "member", "list", "-w", "json").stdout)
        assert len(members["members"]) == 1
        assert not members["members"][0].get("isLearner")
        # ...and without a client certificate etcd does not answer.
        refused = _etcdctl(pki, client_port, "get", "/registry", "--prefix", cert=False)
        assert refused.returncode != 0
        etcd_log = (tmp_path / "data" / "server" / "logs" / "etcd.log").read_text()
        assert '"snapshot-count":5000' in etcd_log  # --etcd-arg wins over Sampan's own flag
        assert (tmp_path / "data" / "server" / "db" / "etcd" / "member").is_dir()
        assert pki.client_key.stat().st_mode & 0o777 == 0o600
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (
        not Path(f"/proc/{etcd_pid}").exists()
        or "zombie" in Path(f"/proc/{etcd_pid}/status").read_text()
    )
    assert "Traceback" not in log_path.read_text()

    # A restart without --cluster-init keeps using the embedded etcd and its data.
    proc, log_path = start_server(tmp_path, "--disable-agent", *ports)
    try:
        text = wait_for_log(proc, log_path, "all components ready")
        assert "etcd: ready" in text
        kept = _kubectl(kubeconfig, "get", "configmap", "kept", "-o", "jsonpath={.data.a}")
        assert kept.stdout == "b", kept.stderr
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cluster_init_and_an_external_datastore_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="cannot be used with --datastore-endpoint"):
        load_config(
            "server",
            {"cluster_init": "true", "datastore_endpoint": "https://10.0.0.1:2379"},
            env={},
            default_config_file=Path(os.devnull),
        )


def test_etcd_listens_on_loopback_and_the_node_ip_and_etcd_arg_overrides(tmp_path: Path) -> None:
    config = load_config(
        "server",
        {"etcd_expose_metrics": "true", "etcd_arg": ["heartbeat-interval=250"]},
        env={},
        default_config_file=Path(os.devnull),
    )
    pki = EtcdPKI(tmp_path)
    args = etcd_args(config, name="n1", node_ip="192.0.2.7", pki=pki, data_dir=tmp_path / "db")
    flags = dict(a[2:].split("=", 1) for a in args[1:])
    assert flags["listen-client-urls"] == "https://127.0.0.1:2379,https://192.0.2.7:2379"
    assert flags["listen-peer-urls"] == "https://127.0.0.1:2380,https://192.0.2.7:2380"
    assert flags["initial-cluster"] == "n1=https://192.0.2.7:2380"
    assert flags["listen-metrics-urls"] == "http://127.0.0.1:2381,http://192.0.2.7:2381"
    assert flags["client-cert-auth"] == flags["peer-client-cert-auth"] == "true"
    assert flags["heartbeat-interval"] == "250"
    assert args.count("--heartbeat-interval=250") == 1
    plain = load_config("server", {}, env={}, default_config_file=Path(os.devnull))
    args = etcd_args(plain, name="n1", node_ip="192.0.2.7", pki=pki, data_dir=tmp_path)
    assert "--listen-metrics-urls=http://127.0.0.1:2381" in args


def test_a_second_server_joins_as_a_learner_and_is_promoted(tmp_path: Path) -> None:
    first_dir, second_dir, third_dir = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    for d in (first_dir, second_dir, third_dir):
        d.mkdir()
    first_ports = _etcd_ports()
    first, first_log = start_server(first_dir, "--disable-agent", "--cluster-init", *first_ports)
    procs = [first]
    try:
        wait_for_log(first, first_log, "all components ready")
        api_port = re.search(r"API server ready at https://127.0.0.1:(\d+)", first_log.read_text())
        server_url = f"https://127.0.0.1:{api_port.group(1)}"
        token = (first_dir / "data" / "server" / "token").read_text().strip()
        pki = EtcdPKI(first_dir / "data" / "server" / "tls" / "etcd")
        client_port = int(first_ports[1])

        # A wrong secret: one line, and no member is added.
        bad_token = token.rsplit(":", 1)[0] + ":not-the-secret"
        third_ports = _etcd_ports()
        third, third_log = start_server(
            third_dir, "--disable-agent", "--server", server_url, "--token", bad_token, *third_ports
        )
        procs.append(third)
        assert third.wait(timeout=60) == 1
        assert "refused to add this server to its etcd cluster: the server refused the token" in (
            third_log.read_text()
        )
        assert "not-the-secret" not in third_log.read_text()

        second_ports = _etcd_ports()
        second, second_log = start_server(
            second_dir,
            "--disable-agent",
            "--server",
            server_url,
            "--token",
            token,
            "--node-name",
            "second",
            *second_ports,
        )
        procs.append(second)
        text = wait_for_log(second, second_log, "all components ready")
        assert "promoted from learner to voting member" in text
        assert token.rsplit(":", 1)[1] not in text
        members = json.loads(_etcdctl(pki, client_port, "member", "list", "-w", "json").stdout)
        assert len(members["members"]) == 2
        assert all(m.get("name") and not m.get("isLearner") for m in members["members"])
        # One datastore: what one server writes, the other serves.
        made = _kubectl(first_dir / "kubeconfig.yaml", "create", "configmap", "shared")
        assert made.returncode == 0, made.stderr
        seen = _kubectl(second_dir / "kubeconfig.yaml", "get", "configmap", "shared", "-o", "name")
        assert seen.stdout.strip() == "configmap/shared", seen.stderr
        # One cluster: the bootstrap data in etcd gave the second server the first's CAs, so
        # the first server's admin kubeconfig works against the second as it is.
        second_url = yaml.safe_load((second_dir / "kubeconfig.yaml").read_text())["clusters"][0][
            "cluster"
        ]["server"]
        shared = yaml.safe_load((first_dir / "kubeconfig.yaml").read_text())
        shared["clusters"][0]["cluster"]["server"] = second_url
        (tmp_path / "shared.kubeconfig").write_text(yaml.safe_dump(shared))
        (tmp_path / "shared.kubeconfig").chmod(0o600)
        via_second = _kubectl(tmp_path / "shared.kubeconfig", "get", "configmap", "shared")
        assert via_second.returncode == 0, via_second.stderr

        # `kubectl delete node` of the second server removes its etcd member. (No agent runs
        # here, so the Node is made by hand; the second server marks it with its member.)
        kubeconfig = first_dir / "kubeconfig.yaml"
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "second"}}
        made = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", "create", "-f", "-"],
            input=json.dumps(node),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        member_name = (second_dir / "data" / "server" / "db" / "etcd" / "name").read_text().strip()
        jsonpath = "jsonpath={.metadata.annotations.etcd\\.sampan\\.io/member-name}"
        _poll(lambda: _kubectl(kubeconfig, "get", "node", "second", "-o", jsonpath).stdout
              == member_name)  # fmt: skip
        gone = _kubectl(kubeconfig, "delete", "node", "second")
        assert gone.returncode == 0, gone.stderr

        def names() -> list[str]:
            out = _etcdctl(pki, client_port, "member", "list", "-w", "json")
            return [m.get("name", "") for m in json.loads(out.stdout)["members"]]

        _poll(lambda: len(names()) == 1)
        assert member_name not in names()
        # Deleting a Node that is no member (or the last member's) changes nothing.
        first_name = (first_dir / "data" / "server" / "db" / "etcd" / "name").read_text().strip()
        assert names() == [first_name]
        second.kill()
        second.wait(timeout=30)
        _stop(first)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def _sampan(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMPAN_")}
    return subprocess.run(
        [sys.executable, "-m", "sampan.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_snapshot_save_reset_restore_brings_a_namespace_back(tmp_path: Path) -> None:
    ports = _etcd_ports()
    data = tmp_path / "data"
    kubeconfig = tmp_path / "kubeconfig.yaml"
    common = ("--config", os.devnull, "--data-dir", str(data), *ports)
    proc, log_path = start_server(tmp_path, "--disable-agent", "--cluster-init", *ports)
    try:
        wait_for_log(proc, log_path, "all components ready")
        made = _kubectl(kubeconfig, "create", "namespace", "keep-me")
        assert made.returncode == 0, made.stderr
        saved = _sampan(
            "etcd-snapshot", "save", *common, "--node-name", "n1", "--kubeconfig", str(kubeconfig)
        )
        assert saved.returncode == 0, saved.stderr
        snaps = sorted((data / "server" / "db" / "snapshots").iterdir())
        assert [p.name.rsplit("-", 1)[0] for p in snaps] == ["on-demand-n1"]
        snapshot = snaps[0]
        assert snapshot.stat().st_mode & 0o777 == 0o600
        # etcdctl agrees it is an etcd snapshot (the hash trailer included).
        status = subprocess.run(
            ["etcdctl", "snapshot", "status", str(snapshot), "-w", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        assert status.returncode == 0 and json.loads(status.stdout)["totalKey"] > 0, status.stderr
        assert snapshot.name in _sampan("etcd-snapshot", "ls", *common).stdout
        record = _kubectl(
            kubeconfig, "-n", "kube-system", "get", "configmap", "sampan-etcd-snapshots",
            "-o", "json",
        )  # fmt: skip
        assert record.returncode == 0, record.stderr
        assert snapshot.name in json.loads(record.stdout)["data"]

        gone = _kubectl(
            kubeconfig, "delete", "namespace", "keep-me", "--wait=true", "--timeout=90s"
        )
        assert gone.returncode == 0, gone.stderr
        seen = _kubectl(kubeconfig, "get", "--raw", "/api/v1/namespaces")
        assert seen.returncode == 0, seen.stderr
        seen_rv = int(json.loads(seen.stdout)["metadata"]["resourceVersion"])
        _stop(proc)

        # A truncated file or one that is not a snapshot: one line, the member untouched.
        member = data / "server" / "db" / "etcd" / "member"
        before = sorted(p.name for p in member.rglob("*"))
        truncated = tmp_path / "truncated"
        truncated.write_bytes(snapshot.read_bytes()[:-4096])
        for bad in (truncated, log_path):
            out = _sampan(
                "server", *common, "--cluster-reset", f"--cluster-reset-restore-path={bad}"
            )
            assert out.returncode == 1, out.stderr
            errors = [line for line in out.stderr.splitlines() if "cluster reset failed" in line]
            assert len(errors) == 1, out.stderr
            assert "Traceback" not in out.stderr
            assert sorted(p.name for p in member.rglob("*")) == before

        out = _sampan(
            "server", *common, "--cluster-reset", f"--cluster-reset-restore-path={snapshot}"
        )
        assert out.returncode == 0, out.stderr
        assert "restart without --cluster-reset" in out.stderr
        assert list((data / "server" / "db").glob("etcd-old-*"))

        proc, log_path = start_server(tmp_path, "--disable-agent", *ports)
        wait_for_log(proc, log_path, "all components ready")
        back = _kubectl(kubeconfig, "get", "namespace", "keep-me", "-o", "jsonpath={.status.phase}")
        assert back.returncode == 0, back.stderr
        assert back.stdout == "Active"
        after = _kubectl(
            kubeconfig, "create", "namespace", "after-restore", "-o",
            "jsonpath={.metadata.resourceVersion}",
        )  # fmt: skip
        assert after.returncode == 0, after.stderr
        # Revisions never go backwards across the restore (the snapshot is older than them),
        # and a client resuming from a resourceVersion it saw before is told to relist (410).
        assert int(after.stdout) > seen_rv, (seen_rv, after.stdout)
        stale = _kubectl(
            kubeconfig, "get", "--raw",
            f"/api/v1/namespaces?watch=1&resourceVersion={seen_rv}&timeoutSeconds=2",
        )  # fmt: skip
        assert '"code":410' in stale.stdout.replace(" ", ""), stale.stdout + stale.stderr
        # delete and prune work on the etcd server too.
        dropped = _sampan("etcd-snapshot", "delete", *common, snapshot.name)
        assert dropped.returncode == 0 and not snapshot.exists(), dropped.stderr
        _stop(proc)

        # --cluster-reset without a file: the member restarts once as a new one-member cluster.
        out = _sampan("server", *common, "--cluster-reset")
        assert out.returncode == 0, out.stderr
        assert "this member is now the only one" in out.stderr
        proc, log_path = start_server(tmp_path, "--disable-agent", *ports)
        wait_for_log(proc, log_path, "all components ready")
        kept = _kubectl(kubeconfig, "get", "namespace", "after-restore", "-o", "name")
        assert kept.stdout.strip() == "namespace/after-restore", kept.stderr
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_deleted_node_names_the_member_to_remove_never_its_own_or_the_last() -> None:
    from sampan.datastore.etcd import EtcdMember
    from sampan.supervisor.etcd_members import MEMBER_ANNOTATION, member_to_remove

    one = EtcdMember(1, "vm-aaaa", ("https://10.0.0.1:2380",), (), False)
    two = EtcdMember(2, "vm-bbbb", ("https://10.0.0.2:2380",), (), False)
    marked = {"metadata": {"name": "node-b", "annotations": {MEMBER_ANNOTATION: "vm-bbbb"}}}
    assert member_to_remove(marked, [one, two], own_id=1) == two
    assert member_to_remove({"metadata": {"name": "vm-bbbb"}}, [one, two], own_id=1) == two
    assert member_to_remove(marked, [one, two], own_id=2) is None  # never our own member
    assert member_to_remove(marked, [two], own_id=1) is None  # never the last one
    assert member_to_remove({"metadata": {"name": "agent"}}, [one, two], own_id=1) is None


def test_the_member_name_is_the_node_name_and_a_suffix_chosen_once(tmp_path: Path) -> None:
    from sampan.supervisor.etcd import _member_name

    first = _member_name(tmp_path, "edge-node-1")
    assert re.fullmatch(r"edge-node-1-[0-9a-f]{8}", first)
    assert _member_name(tmp_path, "renamed") == first  # etcd knows its members by this name
    assert (tmp_path / "name").read_text() == first + "\n"
