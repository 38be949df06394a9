"""``kubectl debug`` against a whole ``sampan server``: an ephemeral container in the target
container's PID namespace (non-interactive, then attached with -i), the refusals of changes to
existing ephemeral containers, and a node debugger pod with the host root at /host."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_single_node import KUBECTL, Cluster, cluster  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow

IMAGE = "docker.io/library/busybox:1.36"


def _node_ready(c: Cluster) -> bool:
    out = c.kubectl("get", "nodes", "-o", "json", check=False)
    try:
        nodes = json.loads(out)["items"]
    except (ValueError, KeyError):
        return False
    return any(
        cond["type"] == "Ready" and cond["status"] == "True"
        for n in nodes
        for cond in n.get("status", {}).get("conditions", [])
    )


def _ephemeral_state(c: Cluster, name: str) -> dict:
    pod = json.loads(c.kubectl("get", "pod", "x", "-o", "json"))
    for status in pod.get("status", {}).get("ephemeralContainerStatuses") or []:
        if status["name"] == name:
            return status.get("state") or {}
    return {}


def test_kubectl_debug_pod_and_node(cluster: Cluster) -> None:  # noqa: F811
    c = cluster
    c.wait("the node to be Ready", lambda: _node_ready(c))
    c.wait("the default service account", lambda: "default" in c.kubectl("get", "sa", check=False))
    c.kubectl("run", "x", f"--image={IMAGE}", "--", "sh", "-c", "exec sleep 3601")
    c.kubectl("wait", "--for=jsonpath={.status.phase}=Running", "pod/x", "--timeout=90s")

    # Non-interactive: the debugger's ps sees the target's sleep (one PID namespace).
    c.kubectl("debug", "pod/x", f"--image={IMAGE}", "--target=x", "-c", "dbg", "--", "ps")
    state = c.wait("the debugger to finish", lambda: _ephemeral_state(c, "dbg").get("terminated"))
    assert state["exitCode"] == 0 and state["reason"] == "Completed"
    assert "sleep 3601" in c.kubectl("logs", "x", "-c", "dbg")

    # Interactive (-i): kubectl attaches to the debugger's stdin and streams its output.
    # stdin stays open until it exits: at stdin's EOF the runtime ends a non-stdinOnce attach.
    assert KUBECTL is not None
    proc = subprocess.Popen(
        [
            KUBECTL,
            "debug",
            "-i",
            "pod/x",
            f"--image={IMAGE}",
            "--target=x",
            "-c",
            "dbg2",
            "--",
            "sh",
            "-c",
            "read word; ps; echo done-$word",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=c.env(),
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write("attached\n")
        proc.stdin.flush()
        proc.wait(timeout=90)
        assert proc.stdout is not None and proc.stderr is not None
        out = proc.stdout.read()
        assert "sleep 3601" in out and "done-attached" in out, (out, proc.stderr.read())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    state = c.wait("dbg2 to finish", lambda: _ephemeral_state(c, "dbg2").get("terminated"))
    assert state["exitCode"] == 0

    # Existing ephemeral containers are fixed; a plain pod update may not add one.
    pod = json.loads(c.kubectl("get", "pod", "x", "-o", "json"))
    pod["spec"]["ephemeralContainers"][0]["image"] = "busybox:1.35"
    changed = c.root / "changed.json"
    changed.write_text(json.dumps(pod))

    def refused(*args: str) -> str:
        assert KUBECTL is not None
        out = subprocess.run(
            [KUBECTL, *args], capture_output=True, text=True, timeout=60, env=c.env()
        )
        assert out.returncode != 0, out.stdout
        return out.stderr

    err = refused(
        "replace",
        "--raw",
        "/api/v1/namespaces/default/pods/x/ephemeralcontainers",
        "-f",
        str(changed),
    )
    assert 'existing ephemeral containers "dbg" may not be changed' in err, err
    pod = json.loads(c.kubectl("get", "pod", "x", "-o", "json"))
    pod["spec"]["ephemeralContainers"].append({"name": "sneaky", "image": IMAGE})
    added = c.root / "added.json"
    added.write_text(json.dumps(pod))
    err = refused("replace", "-f", str(added))
    assert "pod updates may not change fields" in err, err

    # A copy of the pod sharing one PID namespace, with the debugger added.
    c.kubectl(
        "debug",
        "x",
        "--copy-to=y",
        "--share-processes",
        f"--image={IMAGE}",
        "-c",
        "dbg",
        "--",
        "ps",
    )
    c.wait(
        "the copy's debugger output",
        lambda: "sleep 3601" in c.kubectl("logs", "y", "-c", "dbg", check=False),
    )

    # A node debugger: host namespaces and the host's root at /host.
    # Not attached (-i): `cat` may end before an attach connects, which fails against any
    # runtime; the debugger pod's log carries the same output.
    node = c.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}")
    c.kubectl("debug", f"node/{node}", f"--image={IMAGE}", "--", "cat", "/host/etc/hostname")
    pods = json.loads(c.kubectl("get", "pods", "-o", "json"))["items"]
    [debugger] = [p for p in pods if p["metadata"]["name"].startswith(f"node-debugger-{node}")]
    hostname = Path("/etc/hostname").read_text().strip()
    name = debugger["metadata"]["name"]
    c.wait(
        "the node debugger's output",
        lambda: hostname in c.kubectl("logs", name, check=False),
    )
    spec = debugger["spec"]
    assert spec["hostPID"] and spec["hostNetwork"] and spec["hostIPC"]
    assert any(v.get("hostPath", {}).get("path") == "/" for v in spec["volumes"])
