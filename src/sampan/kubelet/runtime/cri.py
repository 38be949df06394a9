"""Async CRI (runtime.v1) client: the only place that speaks gRPC to the container runtime.

The wire types are the protobuf messages generated from kubernetes/cri-api, as shipped by the
``container-runtime-interface-api`` package (module ``cri_api.v1.api_pb2``); this module
re-exports that module as ``pb`` so callers never import ``cri_api`` themselves. The kubelet
builds requests from ``pb`` messages and gets ``pb`` messages back; small conveniences (a
sandbox id instead of a ``RunPodSandboxResponse``) are added where every caller would unwrap.

Invariants:

* every call is a ``grpc.aio`` call: nothing here blocks the event loop;
* every call has a deadline (``timeout_s``, default ``RUNTIME_REQUEST_TIMEOUT_S`` as the
  kubelet's ``--runtime-request-timeout``), except image pulls, which may take as long as the
  registry needs unless the caller sets one;
* a gRPC failure never escapes as ``grpc.aio.AioRpcError``: it is translated, with
  ``raise ... from``, into the tree below, so callers can tell "gone" from "runtime down".

Exception tree (named ``CRIError`` rather than ``RuntimeError`` so that Python's builtin
``RuntimeError`` is not shadowed)::

    CRIError                     any failed CRI call; .code is the grpc.StatusCode
    ├── NotFoundError            the sandbox, container or image does not exist
    ├── AlreadyExistsError       a name is already reserved (e.g. a sandbox name in use)
    ├── InvalidArgumentError     the runtime rejected the request as malformed
    ├── UnimplementedError       the runtime does not implement the call (or CRI is off)
    ├── DeadlineExceededError    the call did not answer within its deadline
    └── UnavailableError         the runtime socket is not answering (not started, restarting)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self, TypeVar

import grpc
import grpc.aio
from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as pb_grpc

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "RUNTIME_REQUEST_TIMEOUT_S",
    "AlreadyExistsError",
    "CRIConnection",
    "CRIError",
    "DeadlineExceededError",
    "ImageClient",
    "InvalidArgumentError",
    "NotFoundError",
    "RuntimeClient",
    "UnavailableError",
    "UnimplementedError",
    "connect",
    "normalize_endpoint",
    "pb",
]

RUNTIME_REQUEST_TIMEOUT_S = 120.0
"""Deadline of one CRI call, as the kubelet's default ``--runtime-request-timeout`` (2m)."""

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest gRPC message sent or received, as the kubelet (16 MiB): ListContainers can be big."""

RECONNECT_BACKOFF_MIN_MS = 50
RECONNECT_BACKOFF_MAX_MS = 1000
"""gRPC's own reconnect backoff (default 1 s up to 120 s) is far too slow for a runtime on a
local socket that restarts in about a second; retry the socket quickly instead."""


class CRIError(Exception):
    """A CRI call failed. ``code`` is the gRPC status code, ``method`` the CRI method name."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, method: str = ""):
        super().__init__(message)
        self.code = code
        self.method = method


class NotFoundError(CRIError):
    """The sandbox, container or image named in the request does not exist."""


class AlreadyExistsError(CRIError):
    """The name in the request is already in use."""


class InvalidArgumentError(CRIError):
    """The runtime rejected the request as malformed."""


class UnimplementedError(CRIError):
    """The runtime does not implement this call (or its CRI service is not loaded)."""


class DeadlineExceededError(CRIError):
    """The call did not answer within its deadline."""


class UnavailableError(CRIError):
    """The runtime is not answering on its socket (not started yet, or restarting)."""


_ERRORS_BY_CODE: dict[grpc.StatusCode, type[CRIError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}

_Response = TypeVar("_Response")


def _translate(method: str, exc: grpc.aio.AioRpcError) -> CRIError:
    code = exc.code()
    cls = _ERRORS_BY_CODE.get(code, CRIError)
    return cls(f"CRI {method}: {code.name}: {exc.details()}", code=code, method=method)


async def _call(
    method: str,
    stub_method: Callable[..., Awaitable[_Response]],
    request: Any,
    timeout_s: float | None,
) -> _Response:
    try:
        return await stub_method(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        raise _translate(method, exc) from exc


def normalize_endpoint(endpoint: str) -> str:
    """Turn ``/path/sock``, ``unix:/path`` or ``unix:///path`` into a gRPC target."""
    if endpoint.startswith("unix://"):
        return endpoint
    if endpoint.startswith("unix:"):
        return "unix://" + endpoint.removeprefix("unix:")
    if endpoint.startswith("/"):
        return "unix://" + endpoint
    return endpoint


class RuntimeClient:
    """The CRI RuntimeService calls the kubelet needs, one method per RPC."""

    def __init__(
        self, channel: grpc.aio.Channel, *, timeout_s: float = RUNTIME_REQUEST_TIMEOUT_S
    ) -> None:
        self._stub = pb_grpc.RuntimeServiceStub(channel)
        self.timeout_s = timeout_s

    async def version(self, *, timeout_s: float | None = None) -> pb.VersionResponse:
        return await _call(
            "Version",
            self._stub.Version,
            pb.VersionRequest(version="v1"),
            timeout_s or self.timeout_s,
        )

    async def status(self, *, verbose: bool = False) -> pb.StatusResponse:
        return await _call(
            "Status", self._stub.Status, pb.StatusRequest(verbose=verbose), self.timeout_s
        )

    # -- sandboxes -------------------------------------------------------------------------

    async def run_pod_sandbox(
        self, config: pb.PodSandboxConfig, *, runtime_handler: str = ""
    ) -> str:
        """Create and start a sandbox; returns its id."""
        request = pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        response = await _call("RunPodSandbox", self._stub.RunPodSandbox, request, self.timeout_s)
        return response.pod_sandbox_id

    async def stop_pod_sandbox(self, pod_sandbox_id: str) -> None:
        """Stop every container of the sandbox and tear its network down (idempotent)."""
        request = pb.StopPodSandboxRequest(pod_sandbox_id=pod_sandbox_id)
        await _call("StopPodSandbox", self._stub.StopPodSandbox, request, self.timeout_s)

    async def remove_pod_sandbox(self, pod_sandbox_id: str) -> None:
        request = pb.RemovePodSandboxRequest(pod_sandbox_id=pod_sandbox_id)
        await _call("RemovePodSandbox", self._stub.RemovePodSandbox, request, self.timeout_s)

    async def pod_sandbox_status(
        self, pod_sandbox_id: str, *, verbose: bool = False
    ) -> pb.PodSandboxStatusResponse:
        request = pb.PodSandboxStatusRequest(pod_sandbox_id=pod_sandbox_id, verbose=verbose)
        return await _call("PodSandboxStatus", self._stub.PodSandboxStatus, request, self.timeout_s)

    async def list_pod_sandbox(
        self, filter: pb.PodSandboxFilter | None = None
    ) -> list[pb.PodSandbox]:
        request = pb.ListPodSandboxRequest(filter=filter)
        response = await _call("ListPodSandbox", self._stub.ListPodSandbox, request, self.timeout_s)
        return list(response.items)

    # -- containers ------------------------------------------------------------------------

    async def create_container(
        self,
        pod_sandbox_id: str,
        config: pb.ContainerConfig,
        sandbox_config: pb.PodSandboxConfig,
    ) -> str:
        """Create a container in a sandbox; returns its id. ``sandbox_config`` is the one the
        sandbox was run with (the runtime reads the log directory and linux options from it)."""
        request = pb.CreateContainerRequest(
            pod_sandbox_id=pod_sandbox_id, config=config, sandbox_config=sandbox_config
        )
        response = await _call(
            "CreateContainer", self._stub.CreateContainer, request, self.timeout_s
        )
        return response.container_id

    async def start_container(self, container_id: str) -> None:
        request = pb.StartContainerRequest(container_id=container_id)
        await _call("StartContainer", self._stub.StartContainer, request, self.timeout_s)

    async def stop_container(self, container_id: str, *, grace_period_s: int) -> None:
        """SIGTERM (or the image's stop signal), then SIGKILL after ``grace_period_s``."""
        request = pb.StopContainerRequest(container_id=container_id, timeout=grace_period_s)
        # The runtime may legitimately take the whole grace period before answering.
        await _call(
            "StopContainer", self._stub.StopContainer, request, self.timeout_s + grace_period_s
        )

    async def remove_container(self, container_id: str) -> None:
        request = pb.RemoveContainerRequest(container_id=container_id)
        await _call("RemoveContainer", self._stub.RemoveContainer, request, self.timeout_s)

    async def list_containers(self, filter: pb.ContainerFilter | None = None) -> list[pb.Container]:
        request = pb.ListContainersRequest(filter=filter)
        response = await _call("ListContainers", self._stub.ListContainers, request, self.timeout_s)
        return list(response.containers)

    async def container_status(
        self, container_id: str, *, verbose: bool = False
    ) -> pb.ContainerStatusResponse:
        request = pb.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return await _call("ContainerStatus", self._stub.ContainerStatus, request, self.timeout_s)

    async def reopen_container_log(self, container_id: str) -> None:
        """Ask the runtime to reopen the container's log file (after the kubelet rotated it)."""
        request = pb.ReopenContainerLogRequest(container_id=container_id)
        await _call("ReopenContainerLog", self._stub.ReopenContainerLog, request, self.timeout_s)

    # -- exec, attach, port-forward ----------------------------------------------------------

    async def exec_sync(
        self, container_id: str, cmd: Sequence[str], *, timeout_s: int = 0
    ) -> pb.ExecSyncResponse:
        """Run ``cmd`` in the container and return its exit code, stdout and stderr.

        ``timeout_s`` is the command's own limit (0: none); the gRPC deadline is that plus the
        request timeout, as the kubelet does, so a slow command is not cut by gRPC first.
        """
        request = pb.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout_s)
        deadline_s = self.timeout_s + timeout_s if timeout_s > 0 else None
        return await _call("ExecSync", self._stub.ExecSync, request, deadline_s)

    async def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> str:
        """Prepare a streaming exec; returns the runtime's streaming URL."""
        request = pb.ExecRequest(
            container_id=container_id,
            cmd=list(cmd),
            tty=tty,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr and not tty,
        )
        response = await _call("Exec", self._stub.Exec, request, self.timeout_s)
        return response.url

    async def attach(
        self,
        container_id: str,
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> str:
        """Prepare a streaming attach; returns the runtime's streaming URL."""
        request = pb.AttachRequest(
            container_id=container_id,
            tty=tty,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr and not tty,
        )
        response = await _call("Attach", self._stub.Attach, request, self.timeout_s)
        return response.url

    async def port_forward(self, pod_sandbox_id: str, ports: Sequence[int] = ()) -> str:
        """Prepare a port-forward into the sandbox; returns the runtime's streaming URL."""
        request = pb.PortForwardRequest(pod_sandbox_id=pod_sandbox_id, port=list(ports))
        response = await _call("PortForward", self._stub.PortForward, request, self.timeout_s)
        return response.url

    # -- stats ---------------------------------------------------------------------------------

    async def list_container_stats(
        self, filter: pb.ContainerStatsFilter | None = None
    ) -> list[pb.ContainerStats]:
        request = pb.ListContainerStatsRequest(filter=filter)
        response = await _call(
            "ListContainerStats", self._stub.ListContainerStats, request, self.timeout_s
        )
        return list(response.stats)


class ImageClient:
    """The CRI ImageService calls the kubelet needs."""

    def __init__(
        self, channel: grpc.aio.Channel, *, timeout_s: float = RUNTIME_REQUEST_TIMEOUT_S
    ) -> None:
        self._stub = pb_grpc.ImageServiceStub(channel)
        self.timeout_s = timeout_s

    async def pull_image(
        self,
        image: str,
        *,
        auth: pb.AuthConfig | None = None,
        sandbox_config: pb.PodSandboxConfig | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Pull ``image``; returns the image reference (id) the runtime stored.

        No deadline unless ``timeout_s`` is given: a big image on a slow link takes its time,
        and the kubelet reports progress by other means.
        """
        request = pb.PullImageRequest(
            image=pb.ImageSpec(image=image), auth=auth, sandbox_config=sandbox_config
        )
        response = await _call("PullImage", self._stub.PullImage, request, timeout_s)
        return response.image_ref

    async def list_images(self, image: str = "") -> list[pb.Image]:
        """All images, or only those matching ``image`` when given."""
        request = pb.ListImagesRequest(
            filter=pb.ImageFilter(image=pb.ImageSpec(image=image)) if image else None
        )
        response = await _call("ListImages", self._stub.ListImages, request, self.timeout_s)
        return list(response.images)

    async def image_status(self, image: str) -> pb.Image | None:
        """The image, or None when the runtime does not have it (CRI answers with no image)."""
        request = pb.ImageStatusRequest(image=pb.ImageSpec(image=image))
        response = await _call("ImageStatus", self._stub.ImageStatus, request, self.timeout_s)
        return response.image if response.HasField("image") else None

    async def image_fs_info(self) -> list[pb.FilesystemUsage]:
        response = await _call(
            "ImageFsInfo", self._stub.ImageFsInfo, pb.ImageFsInfoRequest(), self.timeout_s
        )
        return list(response.image_filesystems)


class CRIConnection:
    """One gRPC channel to a CRI socket with both service clients. Close it when done
    (``async with`` does)."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float = RUNTIME_REQUEST_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.endpoint = endpoint
        self._channel = grpc.aio.insecure_channel(
            normalize_endpoint(endpoint),
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MIN_MS),
                ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MIN_MS),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
            ],
        )
        self.runtime = RuntimeClient(self._channel, timeout_s=timeout_s)
        self.images = ImageClient(self._channel, timeout_s=timeout_s)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def connect(endpoint: str, *, timeout_s: float = RUNTIME_REQUEST_TIMEOUT_S) -> CRIConnection:
    """Open a channel to ``endpoint`` (a socket path or ``unix://`` URL). Connecting is lazy:
    the first call reports ``UnavailableError`` if nothing listens there."""
    return CRIConnection(endpoint, timeout_s=timeout_s)
