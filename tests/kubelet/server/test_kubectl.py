"""The real kubectl against the API server, through the kubelet API, into containerd.

Pods run straight through CRI (see conftest); kubectl talks to the in-process API server,
which reaches ``KubeletServer`` on 127.0.0.1, which proxies to containerd's stream server.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.kubelet.server.conftest import NodeEnv, restart_container, unique

pytestmark = pytest.mark.asyncio(loop_scope="session")

KUBECTL_TIMEOUT_S = 60.0


SPDY_ONLY = {
    "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false",
    "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false",
}
"""kubectl's switches back to the SPDY-only behaviour of older releases."""


def kubectl(
    env: NodeEnv, *args: str, input: bytes | None = None, spdy_only: bool = False
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(env.kubeconfig), *args],
        input=input,
        capture_output=True,
        timeout=KUBECTL_TIMEOUT_S,
        check=False,
        env={**os.environ, **SPDY_ONLY} if spdy_only else None,
    )


def kubectl_popen(node: NodeEnv, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["kubectl", "--kubeconfig", str(node.kubeconfig), *args],
        **kwargs,  # type: ignore[call-overload]
    )


def read_until(stream: object, needle: bytes, deadline_s: float = KUBECTL_TIMEOUT_S) -> bytes:
    """Read a pipe (blocking, in a thread) until ``needle`` appears or it ends."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    seen = b""
    end = time.monotonic() + deadline_s
    while needle not in seen and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
    return seen


async def run(
    env: NodeEnv, *args: str, input: bytes | None = None, spdy_only: bool = False
) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(kubectl, env, *args, input=input, spdy_only=spdy_only)


async def wait_for_output(env: NodeEnv, pod: str, text: bytes) -> None:
    for _ in range(200):
        result = await run(env, "logs", pod)
        if text in result.stdout:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{pod} never logged {text!r}")


async def wait_listening(env: NodeEnv, pod: str, port: int) -> None:
    """Wait until a server in ``pod`` accepts on ``port``: kubectl port-forward gives up on
    the whole forward when the pod refuses its first connection, which on a loaded machine
    can come before httpd is listening."""
    probe = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 {port}"
    for _ in range(200):
        result = await run(env, "exec", pod, "--", "sh", "-c", probe)
        if result.returncode == 0 and result.stdout.startswith(b"HTTP/"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} in {pod}")


@pytest.fixture(scope="module")
def busy_name() -> str:
    return unique("b")


async def _busy(env: NodeEnv, name: str) -> None:
    if not any(p.name == name for p in env.pods):
        await env.run_pod(name, {"b": ["sh", "-c", "echo hello; echo world; exec sleep 3600"]})
        await wait_for_output(env, name, b"world")


async def test_logs_tail_and_timestamps(node_env: NodeEnv, busy_name: str) -> None:
    await _busy(node_env, busy_name)
    result = await run(node_env, "logs", busy_name)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\nworld\n"
    tail = await run(node_env, "logs", "--tail=1", busy_name)
    assert tail.stdout == b"world\n"
    stamped = await run(node_env, "logs", "--timestamps", "-c", "b", busy_name)
    first = stamped.stdout.splitlines()[0].split(b" ", 1)
    assert (
        re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", first[0]) and first[1] == b"hello"
    )


async def test_logs_errors(node_env: NodeEnv, busy_name: str) -> None:
    await _busy(node_env, busy_name)
    missing = await run(node_env, "logs", busy_name, "-c", "nope")
    assert missing.returncode != 0 and b"container nope is not valid" in missing.stderr
    previous = await run(node_env, "logs", "--previous", busy_name)
    assert previous.returncode != 0 and b"previous terminated container" in previous.stderr


async def test_exec_output_and_exit_code(node_env: NodeEnv, busy_name: str) -> None:
    await _busy(node_env, busy_name)
    listing = await run(node_env, "exec", busy_name, "--", "ls", "/")
    assert listing.returncode == 0, listing.stderr
    assert {b"bin", b"etc", b"tmp"} <= set(listing.stdout.split())
    failing = await run(node_env, "exec", busy_name, "--", "sh", "-c", "echo oops >&2; exit 3")
    assert failing.returncode == 3
    assert b"oops" in failing.stderr


@pytest.mark.parametrize("spdy_only", [False, True], ids=["websocket-v5", "spdy"])
async def test_exec_with_stdin(node_env: NodeEnv, busy_name: str, spdy_only: bool) -> None:
    await _busy(node_env, busy_name)
    data = b"line one\nline two\n" * 20000  # 360 kB: several frames and flow-control rounds
    result = await run(
        node_env,
        "exec",
        "-v=6",
        "-i",
        busy_name,
        "--",
        "sh",
        "-c",
        "wc -c; exit 4",
        input=data,
        spdy_only=spdy_only,
    )
    assert result.returncode == 4, result.stderr
    assert int(result.stdout.strip()) == len(data)
    # WebSocket v5 is served without kubectl falling back to SPDY.
    assert (b"fallback" in result.stderr) is False, result.stderr


def _exec_tty(env: NodeEnv, pod: str) -> bytes:
    pid, fd = pty.fork()
    if pid == 0:  # the child: kubectl on the pty
        os.execvp(
            "kubectl",
            ["kubectl", "--kubeconfig", str(env.kubeconfig), "exec", "-it", pod, "--", "sh"],
        )
    out = b""
    try:
        out += _pty_read_until(fd, b"# ")
        os.write(fd, b"echo $((6 * 7)) $TERM\r")
        out += _pty_read_until(fd, b"42")
        os.write(fd, b"exit\r")
        out += _pty_read_until(fd, b"\x00never")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out


def _pty_read_until(fd: int, needle: bytes) -> bytes:
    seen = b""
    end = time.monotonic() + KUBECTL_TIMEOUT_S
    while needle not in seen and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the pty
                break
            if not chunk:
                break
            seen += chunk
    return seen


async def test_exec_tty_through_a_pty(node_env: NodeEnv, busy_name: str) -> None:
    await _busy(node_env, busy_name)
    out = await asyncio.to_thread(_exec_tty, node_env, busy_name)
    assert b"42" in out


async def test_cp_from_the_pod(node_env: NodeEnv, busy_name: str, tmp_path: Path) -> None:
    await _busy(node_env, busy_name)
    dest = tmp_path / "h"
    result = await run(node_env, "cp", f"{busy_name}:/etc/hostname", str(dest))
    assert result.returncode == 0, result.stderr
    assert dest.read_text().strip() == busy_name


async def test_logs_follow_streams_until_the_container_exits(node_env: NodeEnv) -> None:
    name = unique("f")
    await node_env.run_pod(
        name,
        {"f": ["sh", "-c", "echo first; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo second"]},
    )
    await wait_for_output(node_env, name, b"first")
    proc = kubectl_popen(
        node_env, "logs", "-f", name, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        head = await asyncio.to_thread(read_until, proc.stdout, b"first\n")
        assert head == b"first\n"
        touched = await run(node_env, "exec", name, "--", "touch", "/tmp/go")
        assert touched.returncode == 0, touched.stderr
        rest, err = await asyncio.to_thread(proc.communicate, None, KUBECTL_TIMEOUT_S)
        assert rest == b"second\n", err
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_attach_streams_output(node_env: NodeEnv) -> None:
    name = unique("a")
    await node_env.run_pod(
        name, {"a": ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"]}
    )
    proc = kubectl_popen(node_env, "attach", name, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = await asyncio.to_thread(read_until, proc.stdout, b"\n", KUBECTL_TIMEOUT_S)
        seen += await asyncio.to_thread(read_until, proc.stdout, b"\n", KUBECTL_TIMEOUT_S)
        assert re.search(rb"tick \d+\n", seen), seen
    finally:
        proc.terminate()
        proc.wait()


@pytest.mark.parametrize("spdy_only", [False, True], ids=["websocket-tunnel", "spdy"])
async def test_port_forward_to_httpd(node_env: NodeEnv, spdy_only: bool) -> None:
    name = unique("w")
    await node_env.run_pod(
        name,
        {
            "w": [
                "sh",
                "-c",
                "echo hello-pf > /var/www/index.html; exec httpd -f -p 8080 -h /var/www",
            ]
        },
    )
    await wait_listening(node_env, name, 8080)
    proc = kubectl_popen(
        node_env,
        "port-forward",
        "-v=6",
        f"pod/{name}",
        ":8080",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **SPDY_ONLY} if spdy_only else None,
    )
    try:
        banner = await asyncio.to_thread(read_until, proc.stdout, b"-> 8080")
        match = re.search(rb"127\.0\.0\.1:(\d+) -> 8080", banner)
        assert match, banner
        url = f"http://127.0.0.1:{int(match.group(1))}/index.html"

        def get() -> bytes:
            last: Exception | None = None
            for _ in range(50):  # httpd may still be starting
                try:
                    with urllib.request.urlopen(url, timeout=10) as response:
                        return response.read()
                except OSError as exc:
                    last = exc
                    time.sleep(0.1)
            raise AssertionError(f"GET {url}: {last}")

        assert await asyncio.to_thread(get) == b"hello-pf\n"
        assert await asyncio.to_thread(get) == b"hello-pf\n"  # a second connection
    finally:
        proc.terminate()
        _, err = proc.communicate()
    assert b"fallback" not in err, err


async def test_logs_previous_after_a_restart(node_env: NodeEnv) -> None:
    name = unique("r")
    pod = await node_env.run_pod(name, {"r": ["sh", "-c", "echo first run"]})
    await wait_for_output(node_env, name, b"first run")
    await restart_container(node_env, pod, "r", ["sh", "-c", "echo second run; exec sleep 3600"])
    await wait_for_output(node_env, name, b"second run")
    current = await run(node_env, "logs", name)
    assert current.stdout == b"second run\n", current.stderr
    previous = await run(node_env, "logs", "--previous", name)
    assert previous.returncode == 0, previous.stderr
    assert previous.stdout == b"first run\n"


@pytest.mark.parametrize("spdy_only", [False, True], ids=["websocket-v5", "spdy"])
async def test_attach_with_stdin(node_env: NodeEnv, spdy_only: bool) -> None:
    name = unique("ai")
    await node_env.run_pod(
        name, {"ai": ["sh", "-c", "while read line; do echo got:$line; done"]}, stdin=True
    )
    proc = kubectl_popen(
        node_env,
        "attach",
        "-i",
        name,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **SPDY_ONLY} if spdy_only else None,
    )
    try:
        assert proc.stdin is not None
        # kubectl attaches, then forwards what it reads; the first line may be sent before
        # the stream is up, so keep sending until the container answers.
        seen = b""
        for _ in range(50):
            proc.stdin.write(b"hello\n")
            proc.stdin.flush()
            seen += await asyncio.to_thread(read_until, proc.stdout, b"got:hello", 0.2)
            if b"got:hello" in seen:
                break
        assert b"got:hello" in seen, seen
    finally:
        proc.terminate()
        proc.wait()
