"""A private, throw-away etcd for tests (Debian's ``etcd-server``, never a mock).

``etcd_server`` is a session-scoped pytest fixture: it runs ``etcd`` on 127.0.0.1 with free
client and peer ports and its data dir in a temporary directory, waits until it answers, and
stops it (SIGTERM, then SIGKILL) and removes the directory at the end. ``start_etcd(tls=True)``
starts one with client TLS and client-certificate authentication instead, with a CA and
certificates made for it (``EtcdServer.tls`` holds their paths).

Each test that needs an empty store uses its own key namespace on the shared server
(``EtcdServer.namespace()``): revisions are global to an etcd, so tests compare revisions
relative to the one they start at.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from sampan.datastore.etcd import EtcdTLS

__all__ = ["EtcdServer", "etcd_server", "start_etcd"]

ETCD_BIN = "etcd"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
MAX_REQUEST_BYTES = 1536 * 1024 + 64 * 1024
"""A value of the datastore's limit (1.5 MiB) plus its key and the request's framing."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_tls(root: pathlib.Path) -> EtcdTLS:
    from sampan.pki.certs import cert_to_pem, create_ca, issue_leaf, key_to_pem, split_names

    ca, ca_key = create_ca("etcd-test-ca")
    server, server_key = issue_leaf(
        ca,
        ca_key,
        common_name="etcd",
        names=split_names(["localhost", str(ipaddress.ip_address("127.0.0.1"))]),
        server_auth=True,
        client_auth=True,
    )
    client, client_key = issue_leaf(ca, ca_key, common_name="sampan", client_auth=True)
    tls = root / "tls"
    tls.mkdir(mode=0o700)
    files = {
        "ca.crt": cert_to_pem(ca),
        "server.crt": cert_to_pem(server),
        "server.key": key_to_pem(server_key),
        "client.crt": cert_to_pem(client),
        "client.key": key_to_pem(client_key),
    }
    for name, data in files.items():
        (tls / name).write_bytes(data)
        (tls / name).chmod(0o600)
    return EtcdTLS(cafile=tls / "ca.crt", certfile=tls / "client.crt", keyfile=tls / "client.key")


class EtcdServer:
    """A running private etcd; ``endpoint`` is its client URL."""

    def __init__(self, root: pathlib.Path, *, tls: bool = False) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "etcd.log"
        self.client_port = 0
        self.peer_port = 0
        self.tls: EtcdTLS | None = _write_tls(root) if tls else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._counter = itertools.count(1)

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    def start(self, *, same_ports: bool = False) -> None:
        """Start etcd (again, on the same data dir and ports with ``same_ports``)."""
        if shutil.which(ETCD_BIN) is None:
            pytest.fail(
                "etcd not found: `make test` installs the Debian `etcd-server` package (or run "
                "`apt-get install etcd-server etcd-client`)",
                pytrace=False,
            )
        if not same_ports:
            self.client_port = _free_port()
            self.peer_port = _free_port()
        scheme = "https" if self.tls else "http"
        client_url = f"{scheme}://127.0.0.1:{self.client_port}"
        peer_url = f"http://127.0.0.1:{self.peer_port}"
        args = [
            ETCD_BIN,
            "--name=test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--initial-cluster-state=new",
            f"--max-request-bytes={MAX_REQUEST_BYTES}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        if self.tls:
            tls_dir = self.root / "tls"
            args += [
                "--client-cert-auth",
                f"--trusted-ca-file={tls_dir / 'ca.crt'}",
                f"--cert-file={tls_dir / 'server.crt'}",
                f"--key-file={tls_dir / 'server.key'}",
            ]
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"etcd exited ({self._proc.returncode}): {self._log_tail()}")
            # etcd 3.4 logs "serving client traffic" (securely or not) once it serves clients.
            if b"serving client traffic" in self.log_path.read_bytes()[self._log_offset :]:
                return
            time.sleep(0.05)
        raise RuntimeError(f"etcd did not become ready: {self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def namespace(self) -> str:
        """A key namespace no other user of this server has (keys are stored under it)."""
        return f"/sampan-test-{os.getpid()}-{next(self._counter)}"


@contextlib.contextmanager
def start_etcd(*, tls: bool = False) -> Iterator[EtcdServer]:
    root = pathlib.Path(tempfile.mkdtemp(prefix="sampan-etcd-"))
    root.chmod(0o700)
    server = EtcdServer(root, tls=tls)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    with start_etcd() as server:
        yield server
