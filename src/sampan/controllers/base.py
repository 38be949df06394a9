"""The contract between the controller manager and every controller.

This module owns three things and nothing else:

* ``ControllerManagerOptions`` — the static configuration of the controller manager (frozen;
  what the user asked for, defaults as upstream's kube-controller-manager). User extras given
  as ``kube-controller-manager-arg`` key/value pairs are validated here: an unknown key, or a
  value that does not parse, raises ``ValueError`` when the options are built.
* ``ControllerContext`` — what one leadership term of the manager hands to every controller:
  the client, the shared informer factory, the options, a clock and per-component Event
  recorders. A new context (and new informers) is built for every term.
* ``Controller`` — the Protocol each controller class satisfies. ``__init__(ctx)`` only
  registers informer handlers (which only enqueue keys); ``run(workers)`` waits for its
  informers to sync and runs ``workers`` reconcile loops until cancelled; ``healthy()`` says
  whether it is working (for ``/readyz?verbose``).

Invariants: options never change after construction; a controller never mutates an object it
got from an informer cache (deep-copy first); a context's recorders are stopped by the manager
when the term ends, never by a controller.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from sampan.client import (
    ApiError,
    Client,
    ConflictError,
    EventRecorder,
    Informer,
    SharedInformerFactory,
)
from sampan.client.metrics import WorkQueueMetrics
from sampan.client.workqueue import (
    Clock,
    MonotonicClock,
    QueueShutDown,
    WorkQueue,
    default_controller_rate_limiter,
)

__all__ = [
    "DEFAULT_CLUSTER_CIDR",
    "DEFAULT_CLUSTER_SIGNING_DURATION_S",
    "DEFAULT_CONCURRENT_WORKERS",
    "DEFAULT_NODE_CIDR_MASK_SIZE",
    "DEFAULT_NODE_EVICTION_RATE",
    "DEFAULT_NODE_MONITOR_GRACE_PERIOD_S",
    "DEFAULT_POD_EVICTION_TIMEOUT_S",
    "DEFAULT_SERVICE_CIDR",
    "DEFAULT_TERMINATED_POD_GC_THRESHOLD",
    "KNOWN_ARGS",
    "SIGNER_FILE_FIELDS",
    "Controller",
    "ControllerContext",
    "ControllerDisabled",
    "ControllerManagerOptions",
    "QueueController",
    "parse_duration_s",
]

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_CIDR = "10.42.0.0/16"
DEFAULT_SERVICE_CIDR = "10.43.0.0/16"
DEFAULT_NODE_CIDR_MASK_SIZE = 24
DEFAULT_NODE_MONITOR_GRACE_PERIOD_S = 40.0
DEFAULT_NODE_MONITOR_PERIOD_S = 5.0
DEFAULT_POD_EVICTION_TIMEOUT_S = 300.0
DEFAULT_NODE_EVICTION_RATE = 0.1  # nodes per second
DEFAULT_SECONDARY_NODE_EVICTION_RATE = 0.01
DEFAULT_LARGE_CLUSTER_SIZE_THRESHOLD = 50
DEFAULT_UNHEALTHY_ZONE_THRESHOLD = 0.55
DEFAULT_TERMINATED_POD_GC_THRESHOLD = 12500
DEFAULT_CLUSTER_SIGNING_DURATION_S = 8760 * 3600.0  # --cluster-signing-duration (1 year)

# Signer name -> the option fields holding its CA certificate and key files.
SIGNER_FILE_FIELDS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "kubernetes.io/kube-apiserver-client": (
            "signing_kube_apiserver_client_cert_file",
            "signing_kube_apiserver_client_key_file",
        ),
        "kubernetes.io/kube-apiserver-client-kubelet": (
            "signing_kubelet_client_cert_file",
            "signing_kubelet_client_key_file",
        ),
        "kubernetes.io/kubelet-serving": (
            "signing_kubelet_serving_cert_file",
            "signing_kubelet_serving_key_file",
        ),
    }
)

# Worker counts per controller, as upstream's --concurrent-*-syncs defaults.
DEFAULT_CONCURRENT_WORKERS: Mapping[str, int] = MappingProxyType(
    {
        "cronjob": 5,
        "daemonset": 2,
        "deployment": 5,
        "endpoint": 5,
        "endpointslice": 5,
        "garbagecollector": 20,
        "job": 5,
        "namespace": 10,
        "nodeipam": 1,
        "nodelifecycle": 1,
        # Upstream runs one claim loop and one volume loop; here both share one queue.
        "persistentvolume-binder": 2,
        "podgc": 1,
        "replicaset": 5,
        "replicationcontroller": 5,
        "serviceaccount": 5,
        "serviceaccount-token": 5,
        "statefulset": 5,
        "ttlafterfinished": 5,
        "ttl-after-finished": 5,
    }
)
# Fallback when a controller has no entry above.
DEFAULT_WORKERS = 1

# kube-controller-manager flag -> controller whose worker count it sets.
_CONCURRENCY_ARGS: Mapping[str, str] = MappingProxyType(
    {
        "concurrent-cron-job-syncs": "cronjob",
        "concurrent-daemonset-syncs": "daemonset",
        "concurrent-deployment-syncs": "deployment",
        "concurrent-endpoint-syncs": "endpoint",
        "concurrent-service-endpoint-syncs": "endpointslice",
        "concurrent-gc-syncs": "garbagecollector",
        "concurrent-job-syncs": "job",
        "concurrent-namespace-syncs": "namespace",
        "concurrent-replicaset-syncs": "replicaset",
        "concurrent-rc-syncs": "replicationcontroller",
        "concurrent-serviceaccount-token-syncs": "serviceaccount-token",
        "concurrent-statefulset-syncs": "statefulset",
        "concurrent-ttl-after-finished-syncs": "ttlafterfinished",
    }
)

# Every key ``args`` may hold. Keys that Sampan accepts for compatibility but does not act on
# are listed too (so a K3s-style config does not fail), and said so in the value.
KNOWN_ARGS: Mapping[str, str] = MappingProxyType(
    {
        **{key: f"worker count of {name}" for key, name in _CONCURRENCY_ARGS.items()},
        "cluster-cidr": "pod network range nodes get their podCIDR from",
        "service-cluster-ip-range": "service network range",
        "node-cidr-mask-size": "prefix length of each node's podCIDR (IPv4)",
        "node-cidr-mask-size-ipv4": "prefix length of each node's IPv4 podCIDR",
        "node-cidr-mask-size-ipv6": "prefix length of each node's IPv6 podCIDR",
        "allocate-node-cidrs": "whether nodeipam gives nodes podCIDRs (true)",
        "leader-elect": "run under leader election (true)",
        "leader-elect-lease-duration": "lease duration (15s)",
        "leader-elect-renew-deadline": "renew deadline (10s)",
        "leader-elect-retry-period": "retry period (2s)",
        "node-monitor-grace-period": "how long a node may miss its heartbeat (40s)",
        "node-monitor-period": "how often node health is checked (5s)",
        "pod-eviction-timeout": "accepted for compatibility (taint-based eviction is used)",
        "node-eviction-rate": "nodes per second whose pods are evicted (0.1)",
        "secondary-node-eviction-rate": "eviction rate in an unhealthy large zone (0.01)",
        "large-cluster-size-threshold": "zone size above which the secondary rate applies",
        "unhealthy-zone-threshold": "share of not-ready nodes that makes a zone unhealthy",
        "terminated-pod-gc-threshold": "terminated pods kept before podgc deletes them (12500)",
        "controllers": "controllers to run: '*', 'name', '-name' (comma-separated)",
        "cluster-signing-duration": "longest validity csrsigning gives a certificate (8760h)",
        "cluster-signing-cert-file": "CA certificate of every kubernetes.io signer",
        "cluster-signing-key-file": "CA key of every kubernetes.io signer",
        "cluster-signing-kube-apiserver-client-cert-file": "CA of kube-apiserver-client",
        "cluster-signing-kube-apiserver-client-key-file": "CA key of kube-apiserver-client",
        "cluster-signing-kubelet-client-cert-file": "CA of kube-apiserver-client-kubelet",
        "cluster-signing-kubelet-client-key-file": "CA key of kube-apiserver-client-kubelet",
        "cluster-signing-kubelet-serving-cert-file": "CA of kubelet-serving",
        "cluster-signing-kubelet-serving-key-file": "CA key of kubelet-serving",
        "cluster-signing-legacy-unknown-cert-file": "accepted; legacy-unknown is never signed",
        "cluster-signing-legacy-unknown-key-file": "accepted; legacy-unknown is never signed",
        "profiling": "accepted for compatibility; ignored",
        "bind-address": "accepted for compatibility; ignored",
        "secure-port": "accepted for compatibility; ignored",
        "v": "accepted for compatibility; log level comes from the server",
    }
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration_s(text: str) -> float:
    """Parse a Go duration ("40s", "5m0s", "1h30m", "250ms") into seconds.

    A bare number is taken as seconds. Raises ``ValueError`` on anything else.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty duration")
    try:
        return float(value)
    except ValueError:
        pass
    sign = 1.0
    if value[0] in "+-":
        sign = -1.0 if value[0] == "-" else 1.0
        value = value[1:]
    total_s = 0.0
    pos = 0
    while pos < len(value):
        match = _DURATION_PART.match(value, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total_s += float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]
        pos = match.end()
    return sign * total_s


def _parse_bool(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "t", "yes"):
        return True
    if lowered in ("false", "0", "f", "no"):
        return False
    raise ValueError(f"{key}: not a boolean: {text!r}")


def _parse_int(key: str, text: str, minimum: int = 0) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{key}: not an integer: {text!r}") from None
    if value < minimum:
        raise ValueError(f"{key}: must be at least {minimum}, got {value}")
    return value


def _parse_float(key: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{key}: not a number: {text!r}") from None
    if value < 0:
        raise ValueError(f"{key}: must not be negative, got {value}")
    return value


def _parse_duration(key: str, text: str) -> float:
    try:
        value = parse_duration_s(text)
    except ValueError as err:
        raise ValueError(f"{key}: {err}") from None
    if value < 0:
        raise ValueError(f"{key}: must not be negative")
    return value


@dataclass(frozen=True)
class ControllerManagerOptions:
    """Static configuration of the controller manager.

    Build it with the fields, then apply ``args`` (the user's ``kube-controller-manager-arg``
    pairs, key without leading dashes): every key in ``args`` overrides the matching field.
    ``__post_init__`` validates ``args`` and applies it, so the instance you hold is final.
    """

    cluster_cidr: str = DEFAULT_CLUSTER_CIDR
    service_cidr: str = DEFAULT_SERVICE_CIDR
    node_cidr_mask_size: int = DEFAULT_NODE_CIDR_MASK_SIZE
    node_cidr_mask_size_ipv6: int = 64
    allocate_node_cidrs: bool = True
    identity: str = ""
    """Leader-election holder identity (``<hostname>_<uuid>``); empty = manager makes one."""
    leader_elect: bool = True
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    node_monitor_grace_period_s: float = DEFAULT_NODE_MONITOR_GRACE_PERIOD_S
    node_monitor_period_s: float = DEFAULT_NODE_MONITOR_PERIOD_S
    pod_eviction_timeout_s: float = DEFAULT_POD_EVICTION_TIMEOUT_S
    node_eviction_rate: float = DEFAULT_NODE_EVICTION_RATE
    secondary_node_eviction_rate: float = DEFAULT_SECONDARY_NODE_EVICTION_RATE
    large_cluster_size_threshold: int = DEFAULT_LARGE_CLUSTER_SIZE_THRESHOLD
    unhealthy_zone_threshold: float = DEFAULT_UNHEALTHY_ZONE_THRESHOLD
    terminated_pod_gc_threshold: int = DEFAULT_TERMINATED_POD_GC_THRESHOLD
    root_ca_pem: bytes | None = field(default=None, repr=False)
    """The CA published as ``kube-root-ca.crt`` in every namespace and put into service-account
    token Secrets as ``ca.crt`` (default: the CA the controllers' own client trusts, i.e. the
    API server's CA)."""
    service_account_private_key_pem: bytes | None = field(default=None, repr=False)
    """The key legacy service-account tokens are signed with (upstream's
    ``--service-account-private-key-file``); without it ``serviceaccount-token`` does not
    run, as upstream."""
    local_storage_path: str = "/var/lib/sampan/storage"
    """Where the local-path provisioner puts volumes (``--default-local-storage-path``)."""
    cluster_signing_duration_s: float = DEFAULT_CLUSTER_SIGNING_DURATION_S
    """The longest validity csrsigning gives (``spec.expirationSeconds`` may ask less)."""
    signing_kube_apiserver_client_cert_file: str = ""
    signing_kube_apiserver_client_key_file: str = ""
    signing_kubelet_client_cert_file: str = ""
    signing_kubelet_client_key_file: str = ""
    signing_kubelet_serving_cert_file: str = ""
    signing_kubelet_serving_key_file: str = ""
    """CA files of the csrsigning controller's signers (upstream's ``--cluster-signing-*``
    flags); a signer without both files is not signed for."""
    controllers: tuple[str, ...] = ("*",)
    """Which controllers run: '*' = all, 'name' = add, '-name' = remove (upstream syntax)."""
    concurrent_workers: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_CONCURRENT_WORKERS)
    )
    args: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(key for key in self.args if key.lstrip("-") not in KNOWN_ARGS)
        if unknown:
            raise ValueError("unknown kube-controller-manager-arg key(s): " + ", ".join(unknown))
        workers = dict(DEFAULT_CONCURRENT_WORKERS)
        workers.update(self.concurrent_workers)
        updates: dict[str, Any] = {}
        for raw_key, value in self.args.items():
            key = raw_key.lstrip("-")
            if key in _CONCURRENCY_ARGS:
                workers[_CONCURRENCY_ARGS[key]] = _parse_int(key, value, minimum=1)
            else:
                updates.update(_apply_arg(key, value))
        for name, count in workers.items():
            if count < 1:
                raise ValueError(f"concurrent_workers[{name!r}] must be at least 1")
        for name, value in updates.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "concurrent_workers", MappingProxyType(workers))
        object.__setattr__(self, "args", MappingProxyType(dict(self.args)))
        object.__setattr__(self, "controllers", tuple(self.controllers))
        for name in ("node_cidr_mask_size", "node_cidr_mask_size_ipv6"):
            if not 1 <= getattr(self, name) <= 128:
                raise ValueError(f"{name} out of range")

    def workers(self, controller: str) -> int:
        """The number of reconcile loops ``controller`` runs."""
        return self.concurrent_workers.get(controller, DEFAULT_WORKERS)

    def enabled(self, controller: str) -> bool:
        """Whether ``controller`` runs, by the ``controllers`` list (upstream semantics:
        an explicit '-name' wins, then an explicit 'name', then '*')."""
        if f"-{controller}" in self.controllers:
            return False
        return controller in self.controllers or "*" in self.controllers

    def signer_files(self) -> dict[str, tuple[str, str]]:
        """Signer name -> (CA certificate file, CA key file), for the signers configured."""
        files = {}
        for signer, (cert_field, key_field) in SIGNER_FILE_FIELDS.items():
            cert_file, key_file = getattr(self, cert_field), getattr(self, key_field)
            if cert_file and key_file:
                files[signer] = (cert_file, key_file)
        return files

    def with_changes(self, **changes: Any) -> ControllerManagerOptions:
        """A copy with ``changes`` applied (``args`` is re-applied on top)."""
        return replace(self, **changes)


def _apply_arg(key: str, value: str) -> dict[str, Any]:
    """The option fields ``key=value`` sets (empty for compatibility-only keys)."""
    match key:
        case "cluster-cidr":
            return {"cluster_cidr": value.strip()}
        case "service-cluster-ip-range":
            return {"service_cidr": value.strip()}
        case "node-cidr-mask-size" | "node-cidr-mask-size-ipv4":
            return {"node_cidr_mask_size": _parse_int(key, value, minimum=1)}
        case "node-cidr-mask-size-ipv6":
            return {"node_cidr_mask_size_ipv6": _parse_int(key, value, minimum=1)}
        case "allocate-node-cidrs":
            return {"allocate_node_cidrs": _parse_bool(key, value)}
        case "leader-elect":
            return {"leader_elect": _parse_bool(key, value)}
        case "leader-elect-lease-duration":
            return {"lease_duration_s": _parse_duration(key, value)}
        case "leader-elect-renew-deadline":
            return {"renew_deadline_s": _parse_duration(key, value)}
        case "leader-elect-retry-period":
            return {"retry_period_s": _parse_duration(key, value)}
        case "node-monitor-grace-period":
            return {"node_monitor_grace_period_s": _parse_duration(key, value)}
        case "node-monitor-period":
            return {"node_monitor_period_s": _parse_duration(key, value)}
        case "pod-eviction-timeout":
            return {"pod_eviction_timeout_s": _parse_duration(key, value)}
        case "node-eviction-rate":
            return {"node_eviction_rate": _parse_float(key, value)}
        case "secondary-node-eviction-rate":
            return {"secondary_node_eviction_rate": _parse_float(key, value)}
        case "large-cluster-size-threshold":
            return {"large_cluster_size_threshold": _parse_int(key, value)}
        case "unhealthy-zone-threshold":
            return {"unhealthy_zone_threshold": _parse_float(key, value)}
        case "terminated-pod-gc-threshold":
            return {"terminated_pod_gc_threshold": _parse_int(key, value)}
        case "cluster-signing-duration":
            return {"cluster_signing_duration_s": _parse_duration(key, value)}
        case "cluster-signing-cert-file" | "cluster-signing-key-file":
            half = key.rsplit("-", 2)[-2]  # "cert" or "key"
            return {
                fields[0 if half == "cert" else 1]: value.strip()
                for fields in SIGNER_FILE_FIELDS.values()
            }
        case _ if key.startswith("cluster-signing-") and not key.startswith(
            "cluster-signing-legacy-unknown-"
        ):
            # cluster-signing-<signer>-cert-file / -key-file
            field_name = "signing_" + key.removeprefix("cluster-signing-").replace("-", "_")
            return {field_name: value.strip()}
        case "controllers":
            names = tuple(part.strip() for part in value.split(",") if part.strip())
            return {"controllers": names or ("*",)}
        case _:
            return {}


class ControllerContext:
    """What one leadership term gives every controller (see the module docstring).

    ``recorder(component)`` returns one started ``EventRecorder`` per component name (e.g.
    "deployment-controller", as upstream's event sources); the manager stops them all with
    ``aclose()`` when the term ends.
    """

    def __init__(
        self,
        client: Client,
        informers: SharedInformerFactory,
        options: ControllerManagerOptions,
        clock: Clock | None = None,
        queue_metrics: WorkQueueMetrics | None = None,
    ) -> None:
        self.client = client
        self.informers = informers
        self.options = options
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.queue_metrics = queue_metrics
        """Where the controllers' work queues record ``workqueue_*`` (None: nowhere)."""
        self._recorders: dict[str, EventRecorder] = {}

    def recorder(self, component: str) -> EventRecorder:
        recorder = self._recorders.get(component)
        if recorder is None:
            recorder = EventRecorder(self.client, component)
            self._recorders[component] = recorder
        return recorder

    async def aclose(self) -> None:
        """Stop every recorder made by ``recorder()`` (writes what they still hold)."""
        recorders = list(self._recorders.values())
        self._recorders.clear()
        for recorder in recorders:
            await recorder.stop()


class ControllerDisabled(Exception):
    """Raised by a controller's ``__init__`` when the configuration leaves it nothing to do
    (e.g. ``serviceaccount-token`` without a signing key): the manager logs the reason and
    does not run it, as upstream skips such controllers at start."""


@runtime_checkable
class Controller(Protocol):
    """One controller; see the module docstring for the contract."""

    name: str
    """Upstream's controller name: "deployment", "replicaset", "namespace"..."""

    def __init__(self, ctx: ControllerContext) -> None:
        """Register informer handlers (raise ``ControllerDisabled`` to opt out)."""
        ...

    async def run(self, workers: int) -> None:
        """Wait for this controller's informers to sync, then reconcile with ``workers``
        loops until cancelled (re-raise ``CancelledError``; shut the queue down on the way
        out)."""
        ...

    def healthy(self) -> bool:
        """True while the controller works (synced and its loops alive)."""
        ...


class QueueController(abc.ABC):
    """Optional helper base for a controller with one work queue of string keys.

    Subclasses set ``name``, call ``super().__init__(ctx)``, register informers with
    ``self.watch(informer)`` (handlers enqueue into ``self.queue``) and implement
    ``async reconcile(key)``. ``run(workers)`` waits for the watched informers, then runs the
    loops: an exception -> ``add_rate_limited`` (a conflict logged at debug level, another API
    error as a warning, anything else with its traceback), success -> ``forget``.
    ``healthy()`` is True once synced and while every loop is alive.
    """

    name: str = ""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.queue: WorkQueue[str] = WorkQueue(
            self.name or type(self).__name__,
            clock=ctx.clock,
            rate_limiter=default_controller_rate_limiter(ctx.clock),
            metrics=ctx.queue_metrics,
        )
        self._watched: list[Informer] = []
        self._synced = False
        self._loops_alive = 0
        self._loops_wanted = 0

    def watch(self, informer: Informer) -> Informer:
        """Make ``run`` wait for ``informer`` to sync before the loops start."""
        self._watched.append(informer)
        return informer

    @abc.abstractmethod
    async def reconcile(self, key: str) -> None:
        """Bring the object named ``key`` to its desired state (level-triggered)."""

    async def run(self, workers: int) -> None:
        try:
            for informer in self._watched:
                await informer.wait_synced()
            self._synced = True
            await self.on_synced()
            self._loops_wanted = max(1, workers)
            async with asyncio.TaskGroup() as group:
                for index in range(self._loops_wanted):
                    group.create_task(self._loop(), name=f"controller-{self.name}-worker-{index}")
        finally:
            self._synced = False
            self.queue.shutdown()

    async def on_synced(self) -> None:  # noqa: B027 (an optional hook, empty by default)
        """Hook run once after the informers synced, before the loops start."""

    def healthy(self) -> bool:
        return self._synced and self._loops_alive == self._loops_wanted

    async def _loop(self) -> None:
        self._loops_alive += 1
        try:
            while True:
                try:
                    key = await self.queue.get()
                except QueueShutDown:
                    return
                try:
                    await self.reconcile(key)
                except asyncio.CancelledError:
                    raise
                except ConflictError as exc:
                    # Our cache was behind a newer write: routine, retried quietly.
                    log.debug("%s: reconcile %s: %s; retrying", self.name, key, exc)
                    self.queue.add_rate_limited(key)
                except ApiError as exc:
                    log.warning("%s: reconcile %s failed: %s; retrying", self.name, key, exc)
                    self.queue.add_rate_limited(key)
                except Exception:
                    log.exception("%s: reconcile %s failed; retrying with back-off", self.name, key)
                    self.queue.add_rate_limited(key)
                else:
                    self.queue.forget(key)
                finally:
                    self.queue.done(key)
        finally:
            self._loops_alive -= 1
