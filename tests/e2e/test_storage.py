"""Storage on a whole node (``sampan server`` with containerd, the system kubectl): the
default ``local-path`` StorageClass, a StatefulSet whose claims are provisioned on the node
and keep their data, and a manual hostPath volume with reclaim policy Retain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_single_node import Cluster, cluster  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow

STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: x
spec:
  replicas: 3
  serviceName: x
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: docker.io/library/busybox:1.36
        command: [sh, -c, "trap 'exit 0' TERM; sleep 3600 & wait"]
        volumeMounts:
        - {name: data, mountPath: /data}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
"""


def _json(c: Cluster, *args: str) -> dict:
    return json.loads(c.kubectl(*args, "-o", "json"))


def _node_ready(c: Cluster) -> bool:
    out = c.kubectl("get", "nodes", "-o", "json", check=False)
    try:
        nodes = json.loads(out)["items"]
    except (ValueError, KeyError):
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for n in nodes
        for c in n.get("status", {}).get("conditions", [])
    )


def _apply(c: Cluster, text: str, name: str) -> None:
    path = c.root / f"{name}.yaml"
    path.write_text(text)
    c.kubectl("apply", "-f", str(path))


def _running(c: Cluster, names: set[str]) -> bool:
    pods = _json(c, "get", "pods")["items"]
    running = {
        p["metadata"]["name"]
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }
    return names <= running


def test_default_class_and_statefulset_data(cluster: Cluster) -> None:  # noqa: F811
    cluster.wait("node Ready", lambda: _node_ready(cluster))
    cluster.wait(
        "the local-path class",
        lambda: "local-path (default)" in cluster.kubectl("get", "storageclass", check=False),
    )
    out = cluster.kubectl("get", "storageclass")
    assert "rancher.io/local-path" in out and "WaitForFirstConsumer" in out

    _apply(cluster, STATEFULSET, "sts")
    claims = {"data-x-0", "data-x-1", "data-x-2"}

    def bound() -> bool:
        items = _json(cluster, "get", "pvc")["items"]
        return {
            c["metadata"]["name"] for c in items if c["status"].get("phase") == "Bound"
        } >= claims

    cluster.wait("three claims Bound", bound, timeout_s=180)
    cluster.wait("three pods Running", lambda: _running(cluster, {"x-0", "x-1", "x-2"}), 180)
    storage = cluster.data / "storage"
    dirs = {}
    for claim in claims:
        pvc = _json(cluster, "get", "pvc", claim)
        pv = _json(cluster, "get", "pv", pvc["spec"]["volumeName"])
        path = Path(pv["spec"]["hostPath"]["path"])
        assert path.parent == storage
        assert path.name == f"pvc-{pvc['metadata']['uid']}_default_{claim}"
        assert path.is_dir()
        dirs[claim] = path

    cluster.kubectl("exec", "x-1", "--", "sh", "-c", "echo kept > /data/file")
    assert (dirs["data-x-1"] / "file").read_text() == "kept\n"
    old_uid = _json(cluster, "get", "pod", "x-1")["metadata"]["uid"]
    cluster.kubectl("delete", "pod", "x-1", "--wait=true")

    def recreated() -> bool:
        out = cluster.kubectl("get", "pod", "x-1", "-o", "json", check=False)
        try:
            pod = json.loads(out)
        except ValueError:
            return False
        return pod["metadata"]["uid"] != old_uid and pod["status"].get("phase") == "Running"

    cluster.wait("x-1 back", recreated, timeout_s=120)
    assert cluster.kubectl("exec", "x-1", "--", "cat", "/data/file") == "kept\n"

    cluster.kubectl("scale", "statefulset", "x", "--replicas=1")
    cluster.wait(
        "scaled down",
        lambda: {p["metadata"]["name"] for p in _json(cluster, "get", "pods")["items"]} == {"x-0"},
        timeout_s=120,
    )
    items = _json(cluster, "get", "pvc")["items"]
    assert {c["metadata"]["name"] for c in items if c["status"]["phase"] == "Bound"} >= claims

    cluster.kubectl("delete", "statefulset", "x", "--wait=true")
    cluster.wait("pods gone", lambda: not _json(cluster, "get", "pods")["items"], timeout_s=120)
    cluster.kubectl("delete", "pvc", *sorted(claims), "--wait=true")
    cluster.wait(
        "directories removed",
        lambda: not any(p.exists() for p in dirs.values()),
        timeout_s=120,
    )
    cluster.wait("volumes deleted", lambda: not _json(cluster, "get", "pv")["items"], 60)


MANUAL = """
apiVersion: v1
kind: PersistentVolume
metadata:
  name: manual
spec:
  storageClassName: ""
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: PATH}
"""

CLAIM = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: NAME
spec:
  storageClassName: ""
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Gi}
"""


def test_manual_host_path_volume_retain(cluster: Cluster) -> None:  # noqa: F811
    cluster.wait("node Ready", lambda: _node_ready(cluster))
    _apply(cluster, MANUAL.replace("PATH", str(cluster.root / "manual")), "pv")
    _apply(cluster, CLAIM.replace("NAME", "first"), "first")

    def phase(kind: str, name: str) -> str:
        return _json(cluster, "get", kind, name)["status"].get("phase", "")

    cluster.wait("first Bound", lambda: phase("pvc", "first") == "Bound")
    assert _json(cluster, "get", "pvc", "first")["spec"]["volumeName"] == "manual"
    assert phase("pv", "manual") == "Bound"
    cluster.kubectl("delete", "pvc", "first", "--wait=true")
    cluster.wait("manual Released", lambda: phase("pv", "manual") == "Released")
    _apply(cluster, CLAIM.replace("NAME", "second"), "second")
    cluster.wait(
        "FailedBinding on second",
        lambda: (
            "FailedBinding"
            in cluster.kubectl("get", "events", "--field-selector", "involvedObject.name=second")
        ),
    )
    assert phase("pvc", "second") == "Pending"
    assert phase("pv", "manual") == "Released"
    cluster.kubectl(
        "patch", "pv", "manual", "--type=json", "-p", '[{"op":"remove","path":"/spec/claimRef"}]'
    )
    cluster.wait("second Bound", lambda: phase("pvc", "second") == "Bound")
    assert _json(cluster, "get", "pvc", "second")["spec"]["volumeName"] == "manual"


# A database-style workload: at every start the container appends a line to its data file,
# prints the whole file and serves it; the Deployment replaces its pod (Recreate) on
# `kubectl rollout restart`, and the new pod finds the old pod's line beside its own.
DATABASE = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: db-data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Gi}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: db
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: docker.io/library/busybox:1.36
        command:
        - sh
        - -c
        - echo "started $HOSTNAME" >> /data/log && cat /data/log && exec httpd -f -p 8080 -h /data
        readinessProbe:
          exec: {command: [grep, -q, "started", /data/log]}
          periodSeconds: 1
        volumeMounts:
        - {name: data, mountPath: /data}
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: db-data}
"""


def _db_pod(c: Cluster) -> dict | None:
    pods = [
        p
        for p in _json(c, "get", "pods", "-l", "app=db")["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]
    if len(pods) != 1:
        return None
    ready = any(
        cond["type"] == "Ready" and cond["status"] == "True"
        for cond in pods[0]["status"].get("conditions", [])
    )
    return pods[0] if ready else None


def test_database_keeps_data_across_rollout_restart(cluster: Cluster) -> None:  # noqa: F811
    cluster.wait("node Ready", lambda: _node_ready(cluster))
    cluster.wait(
        "the local-path class",
        lambda: "local-path (default)" in cluster.kubectl("get", "storageclass", check=False),
    )
    _apply(cluster, DATABASE, "db")
    first = cluster.wait("the db pod Ready", lambda: _db_pod(cluster), timeout_s=180)
    first_name = first["metadata"]["name"]
    assert _json(cluster, "get", "pvc", "db-data")["status"]["phase"] == "Bound"
    assert cluster.kubectl("exec", first_name, "--", "cat", "/data/log") == (
        f"started {first_name}\n"
    )

    cluster.kubectl("rollout", "restart", "deployment/db")
    cluster.kubectl("rollout", "status", "deployment/db", "--timeout=180s")
    second = cluster.wait(
        "a new db pod Ready",
        lambda: (p := _db_pod(cluster)) and p["metadata"]["name"] != first_name and p,
        timeout_s=180,
    )
    second_name = second["metadata"]["name"]
    expected = f"started {first_name}\nstarted {second_name}\n"
    # The file holds both starts, as the new pod's log (printed at start) and a read show.
    assert cluster.kubectl("exec", second_name, "--", "cat", "/data/log") == expected
    assert cluster.wait(
        "the new pod's log",
        lambda: cluster.kubectl("logs", second_name, check=False) == expected,
    )
