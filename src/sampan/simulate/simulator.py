"""The node simulator: N fake nodes that heartbeat and "run" the pods bound to them.

``Simulator`` owns, for the nodes named ``<prefix>0 .. <prefix>N-1``:

* **registration**: each Node is created (or adopted, its status rewritten) with capacity,
  ``type=kwok`` labels, an InternalIP from ``node_ip_cidr`` and Ready conditions;
* **heartbeats** as the kubelet's: the Lease ``kube-node-lease/<node>`` renewed every
  ``heartbeat_interval_s``, and the node's conditions re-posted every ``node_status_interval_s``
  (5 min, the kubelet's report interval when nothing changed). Both are spread evenly over
  their interval (node i at offset i/N), so 5,000 nodes make a steady 500 lease writes/s
  rather than bursts;
* **pods**: one cluster-wide pod informer (``spec.nodeName!=``, so pending pods never reach it;
  objects slimmed by a transform) feeds a work queue; ``writers`` workers PATCH
  ``pods/status`` of every pod bound to a managed node to Running/Ready with an IP from the
  node's pod CIDR, and DELETE with grace 0 every such pod whose ``deletionTimestamp`` is set
  (the kubelet's last word). Pods on other nodes, and finished pods, are left alone.

Invariants: at most ``writers`` pod writes and ``writers`` heartbeat writes are in flight;
a pod's status is written once unless someone rewrites it; failed writes are retried with the
work queue's per-key back-off. Every task is named ``simulate-...`` and stopped by ``stop()``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from sampan.api import times
from sampan.client import (
    AlreadyExistsError,
    Client,
    ClientConfig,
    ClientError,
    ConflictError,
    Informer,
    NotFoundError,
    PatchType,
    QueueShutDown,
    WorkQueue,
    object_key,
)
from sampan.client.api import LEASES, NODES, PODS
from sampan.simulate.objects import (
    LEASE_NAMESPACE,
    IpPool,
    lease_body,
    node_body,
    node_conditions,
    pod_status,
    slim_pod,
)
from sampan.tasks import log_task_end

__all__ = ["Simulator", "SimulatorOptions", "parse_duration"]

log = logging.getLogger("sampan.simulate")

TICK_S = 0.05
"""How often the heartbeat spreaders wake to send what came due."""


@dataclass(frozen=True)
class SimulatorOptions:
    nodes: int
    node_prefix: str = "kwok-node-"
    heartbeat_interval_s: float = 10.0
    node_status_interval_s: float = 300.0
    taint: bool = False
    """Give each node ``kwok.x-k8s.io/node=fake:NoSchedule`` (then only tolerating pods land)."""
    capacity: dict[str, str] = field(
        default_factory=lambda: {"cpu": "32", "memory": "256Gi", "pods": "110"}
    )
    writers: int = 32
    """Concurrent pod writes, and concurrent heartbeat writes."""
    node_ip_cidr: str = "100.64.0.0/10"
    """Node i's InternalIP is the (i+1)-th address of this range."""
    fallback_pod_cidr: str = "10.128.0.0/9"
    """Node i's pods take IPs from the i-th /24 of this range while the node has no
    ``spec.podCIDR`` (no node IPAM controller)."""


def parse_duration(text: str) -> float:
    """``10s``, ``500ms``, ``5m``, ``1h`` or plain seconds -> seconds."""
    text = text.strip()
    number, scale = text, 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], factor
            break
    try:
        value = float(number) * scale
    except ValueError:
        raise ValueError(f"invalid duration {text!r} (use e.g. 10s, 500ms, 5m)") from None
    if value <= 0:
        raise ValueError(f"invalid duration {text!r}: must be positive")
    return value


class _Node:
    __slots__ = ("cidr", "index", "ip", "lease", "name", "pool", "uid")

    def __init__(self, name: str, index: int, ip: str) -> None:
        self.name = name
        self.index = index
        self.ip = ip
        self.uid: str | None = None
        self.cidr: str | None = None
        self.pool: IpPool | None = None
        self.lease: dict[str, Any] | None = None


class Simulator:
    """See the module docstring. ``await start()`` returns once every node is registered and
    the pod informer has synced; ``await stop()`` ends everything."""

    def __init__(self, config: ClientConfig, options: SimulatorOptions) -> None:
        if options.nodes < 0:
            raise ValueError("nodes must be >= 0")
        self.options = options
        self.client = Client(config.with_user_agent("sampan-simulate"))
        node_net = ipaddress.ip_network(options.node_ip_cidr)
        pod_net = ipaddress.ip_network(options.fallback_pod_cidr)
        if options.nodes >= node_net.num_addresses - 2:
            raise ValueError(f"node IP range {node_net} is too small for {options.nodes} nodes")
        if options.nodes > pod_net.num_addresses // 256:
            raise ValueError(f"fallback pod range {pod_net} is too small for {options.nodes} /24s")
        self._fallback_base = int(pod_net.network_address)
        self.nodes: dict[str, _Node] = {}
        for i in range(options.nodes):
            name = f"{options.node_prefix}{i}"
            self.nodes[name] = _Node(name, i, str(node_net.network_address + i + 1))
        self._pod_ips: dict[str, tuple[str, str]] = {}
        """pod key -> (node name, IP) for IPs this process handed out or found."""
        self.pods = Informer(
            self.client, PODS, field_selector="spec.nodeName!=", transform=slim_pod
        )
        self.node_informer = Informer(
            self.client, NODES, label_selector="type=kwok", transform=_slim_node
        )
        self.queue: WorkQueue[str] = WorkQueue("simulate-pods")
        self._tasks: list[asyncio.Task[None]] = []
        self._heartbeat_slots = asyncio.Semaphore(options.writers)
        self.stats = {"status_writes": 0, "deletes": 0, "lease_renewals": 0, "errors": 0}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.node_informer.add_event_handler(
            on_add=self._on_node, on_update=lambda _old, new: self._on_node(new)
        )
        self.pods.add_event_handler(
            on_add=self._on_pod,
            on_update=lambda _old, new: self._on_pod(new),
            on_delete=self._on_pod_deleted,
        )
        await self._register_nodes()
        self.node_informer.start()
        self.pods.start()
        await self.node_informer.wait_synced()
        await self.pods.wait_synced()
        names = list(self.nodes)
        options = self.options
        leases = self._spread(names, options.heartbeat_interval_s, self._renew_lease, first=True)
        statuses = self._spread(
            names, options.node_status_interval_s, self._post_node_status, first=False
        )
        self._spawn("simulate-leases", leases)
        self._spawn("simulate-node-status", statuses)
        for i in range(self.options.writers):
            self._spawn(f"simulate-pod-writer-{i}", self._pod_worker())
        log.info("simulating %d nodes (%s0..)", len(names), self.options.node_prefix)

    async def stop(self) -> None:
        self.queue.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.pods.stop()
        await self.node_informer.stop()
        await self.client.close()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(log_task_end)
        self._tasks.append(task)

    # -- nodes -------------------------------------------------------------------------------

    async def _register_nodes(self) -> None:
        slots = asyncio.Semaphore(self.options.writers)

        async def one(node: _Node) -> None:
            async with slots:
                await self._register(node)

        await asyncio.gather(*(one(node) for node in self.nodes.values()))

    async def _register(self, node: _Node) -> None:
        body = node_body(node.name, node.ip, self.options.capacity, taint=self.options.taint)
        try:
            created = await self.client.create(NODES, body)
            node.uid = created["metadata"]["uid"]
            return
        except AlreadyExistsError:
            pass
        # Adopt the existing node: our labels, and a fresh status (it may have gone NotReady
        # while no simulator ran).
        patched = await self.client.patch(
            NODES, node.name, {"metadata": {"labels": body["metadata"]["labels"]}}
        )
        node.uid = patched["metadata"]["uid"]
        await self.client.patch(NODES, node.name, {"status": body["status"]}, subresource="status")

    def _on_node(self, obj: dict[str, Any]) -> None:
        node = self.nodes.get(obj["metadata"]["name"])
        if node is None:
            return
        node.uid = obj["metadata"].get("uid") or node.uid
        node.cidr = obj.get("podCIDR") or node.cidr

    async def _renew_lease(self, node: _Node) -> None:
        if node.lease is not None:
            lease = {**node.lease, "spec": {**node.lease["spec"], "renewTime": times.micro()}}
            try:
                node.lease = await self.client.update(LEASES, lease, namespace=LEASE_NAMESPACE)
                self.stats["lease_renewals"] += 1
                return
            except (ConflictError, NotFoundError):
                node.lease = None
        body = lease_body(node.name, node.uid)
        try:
            current = await self.client.get(LEASES, node.name, namespace=LEASE_NAMESPACE)
        except NotFoundError:
            node.lease = await self.client.create(LEASES, body, namespace=LEASE_NAMESPACE)
        else:
            current["spec"] = {**(current.get("spec") or {}), **body["spec"]}
            node.lease = await self.client.update(LEASES, current, namespace=LEASE_NAMESPACE)
        self.stats["lease_renewals"] += 1

    async def _post_node_status(self, node: _Node) -> None:
        now = times.now()
        # The transition times stay those of the first post: the merge patch replaces the
        # list, so the ones the server holds are kept by reading the informer's copy.
        cached = self.node_informer.cache.get(node.name) or {}
        transition = cached.get("readySince") or now
        patch = {"status": {"conditions": node_conditions(transition, now)}}
        await self.client.patch(NODES, node.name, patch, subresource="status")

    async def _spread(
        self,
        names: Sequence[str],
        interval_s: float,
        action: Callable[[_Node], Awaitable[None]],
        *,
        first: bool,
    ) -> None:
        """Run ``action`` for every node once per ``interval_s``, node i at offset i/N of the
        interval (the first round now if ``first``, else one interval from now), at most
        ``writers`` at a time (a slow server stretches the round instead of piling requests
        up)."""
        if not names:
            return
        loop = asyncio.get_running_loop()
        slot_s = interval_s / len(names)
        round_start = loop.time() if first else loop.time() + interval_s
        while True:
            for i, name in enumerate(names):
                due = round_start + i * slot_s
                delay = due - loop.time()
                if delay > TICK_S:
                    await asyncio.sleep(delay)
                await self._heartbeat_slots.acquire()
                task = loop.create_task(self._guarded(action, self.nodes[name]))
                task.add_done_callback(lambda _t: self._heartbeat_slots.release())
            round_start += interval_s
            if round_start < loop.time():  # the server could not keep up: start afresh
                round_start = loop.time()

    async def _guarded(self, action: Callable[[_Node], Awaitable[None]], node: _Node) -> None:
        try:
            await action(node)
        except ClientError as exc:
            self.stats["errors"] += 1
            log.warning("node %s: %s failed: %s", node.name, action.__name__.strip("_"), exc)

    # -- pods --------------------------------------------------------------------------------

    def _on_pod(self, pod: dict[str, Any]) -> None:
        if pod["spec"].get("nodeName") in self.nodes:
            self.queue.add(object_key(pod))

    def _on_pod_deleted(self, pod: dict[str, Any]) -> None:
        self._release(object_key(pod))

    def _release(self, key: str) -> None:
        held = self._pod_ips.pop(key, None)
        if held is not None:
            node = self.nodes.get(held[0])
            if node is not None and node.pool is not None:
                node.pool.release(held[1])

    async def _pod_worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self._sync_pod(key)
            except ClientError as exc:
                self.stats["errors"] += 1
                log.warning("pod %s: %s", key, exc)
                self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
            finally:
                self.queue.done(key)

    async def _sync_pod(self, key: str) -> None:
        pod = self.pods.cache.get(key)
        if pod is None:
            self._release(key)
            return
        meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
        node = self.nodes.get(spec.get("nodeName") or "")
        if node is None:
            return
        if meta.get("deletionTimestamp"):
            try:
                await self.client.delete(
                    PODS,
                    meta["name"],
                    namespace=meta["namespace"],
                    grace_period_s=0,
                    precondition_uid=meta.get("uid"),
                )
                self.stats["deletes"] += 1
            except (NotFoundError, ConflictError):
                pass
            self._release(key)
            return
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        if status.get("phase") == "Running" and status.get("podIP") and status.get("ready"):
            held = self._pod_ips.get(key)
            if held is None and not spec.get("hostNetwork"):
                self._pool(node).reserve(status["podIP"])  # found running (a restart)
                self._pod_ips[key] = (node.name, status["podIP"])
            return
        ip = self._ip_for(key, node, pod)
        patch = {"metadata": {"uid": meta.get("uid")}, "status": pod_status(pod, node.ip, ip)}
        try:
            await self.client.patch(
                PODS,
                meta["name"],
                patch,
                namespace=meta["namespace"],
                subresource="status",
                patch_type=PatchType.MERGE,
            )
        except NotFoundError:
            self._release(key)
            return
        self.stats["status_writes"] += 1

    def _pool(self, node: _Node) -> IpPool:
        if node.pool is None:
            cidr = node.cidr or str(
                ipaddress.ip_network((self._fallback_base + node.index * 256, 24))
            )
            node.pool = IpPool(cidr)
        return node.pool

    def _ip_for(self, key: str, node: _Node, pod: dict[str, Any]) -> str:
        if pod["spec"].get("hostNetwork"):
            return node.ip
        held = self._pod_ips.get(key)
        if held is not None:
            return held[1]
        if pod["status"].get("podIP"):
            ip = str(pod["status"]["podIP"])
            self._pool(node).reserve(ip)
        else:
            ip = self._pool(node).allocate()
        self._pod_ips[key] = (node.name, ip)
        return ip

    def running_pods(self) -> int:
        """Pods on managed nodes the informer has seen Running and Ready."""
        return sum(
            1
            for pod in self.pods.cache.list()
            if pod["spec"].get("nodeName") in self.nodes
            and pod["status"].get("phase") == "Running"
            and pod["status"].get("ready")
        )


def _slim_node(node: dict[str, Any]) -> dict[str, Any]:
    metadata = node.get("metadata") or {}
    ready_since = None
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            ready_since = condition.get("lastTransitionTime")
    return {
        "metadata": {k: metadata[k] for k in ("name", "uid", "resourceVersion") if k in metadata},
        "podCIDR": (node.get("spec") or {}).get("podCIDR"),
        "readySince": ready_since,
    }
