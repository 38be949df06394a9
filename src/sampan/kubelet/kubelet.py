"""The kubelet component: runtime, Node, and one worker per pod.

``Kubelet(client_config, options)`` is the agent component named ``kubelet``. The
constructor builds every collaborator (API client, event recorder, informer factory, Node
agent, cgroups, probes, ConfigMap/Secret sources, volumes, status manager); nothing is
assigned later, and nothing does I/O or needs the loop until ``start``:

* ``start(ctx)`` starts ``ContainerRuntime`` (the containerd child, or the given CRI socket),
  registers the Node, starts the informers (this node's pods by ``spec.nodeName``; the
  ConfigMaps, Secrets and Services pods read; the own Node for its pod CIDR) and the
  background loops, and returns once the Node is registered;
* loops (each a named task whose failure is logged): node status and Lease (10 s), PLEG (a
  relist of CRI state every second, since containerd 1.6 has no event API: a pod whose
  sandboxes or containers changed gets its worker woken), housekeeping (orphan sandboxes,
  pod directories and cgroups of pods that no longer exist), static pod manifests, and the
  CNI configuration written once the Node has a pod CIDR;
* pods other than hostNetwork ones wait until the runtime reports NetworkReady: the CNI
  configuration is written by the network component (``sampan.network``) into
  ``cni_conf_dir`` once the Node has a pod CIDR; the kubelet never writes it itself;
* ``stop()`` stops workers and loops only: containers keep running, as with K3s; then
  containerd stops (its shims stay).

For the kubelet HTTPS server (another module) it exposes ``runtime``/``images`` (CRI
clients), ``pod_container_id(namespace, pod, container)``, ``pod_sandbox_id(namespace,
pod)`` and ``pod_log_dir(pod)``. To its pod workers it is their ``PodWorkerHost``
(``sampan.kubelet.workerhost``), and nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from sampan.client import (
    Client,
    ClientConfig,
    ClientError,
    ConflictError,
    EventRecorder,
    NotFoundError,
    SharedInformerFactory,
)
from sampan.client.api import (
    NODES,
    PODS,
    PVCS,
    PVS,
    SERVICEACCOUNTS,
    SERVICES,
)
from sampan.kubelet import specs
from sampan.kubelet.cgroups import CgroupManager
from sampan.kubelet.logrotate import LOG_ROTATE_INTERVAL_S, LogRotator
from sampan.kubelet.metrics import KubeletMetrics
from sampan.kubelet.node import NodeAgent
from sampan.kubelet.objects import PodObjects
from sampan.kubelet.options import KubeletOptions
from sampan.kubelet.pods import PodWorker
from sampan.kubelet.podutil import (
    HASH_ANNOTATION,
    MIRROR_ANNOTATION,
    is_mirror_pod,
    pod_log_dir,
)
from sampan.kubelet.probes import ProbeManager
from sampan.kubelet.runtime import ContainerdConfig, ContainerRuntime, cri, pb
from sampan.kubelet.static import mirror_pod, read_manifests
from sampan.kubelet.statusmanager import StatusManager
from sampan.kubelet.volumes import VolumeManager
from sampan.kubelet.workerhost import SystemClock

__all__ = ["PLEG_RELIST_S", "Kubelet"]

log = logging.getLogger("sampan.kubelet")

PLEG_RELIST_S = 1.0
HOUSEKEEPING_S = 2.0
POD_CIDR_WAIT_LOG_S = 60.0
INDEX_UID = "uid"
SANDBOX_CONCURRENCY = 8
"""Sandboxes created at once. containerd and the CNI plugins serialise much of the work
anyway; a bounded number in flight lets the first pods of a burst finish early instead of all
finishing together at the end."""


class _FailureSink(Protocol):
    def fail(self, reason: str) -> None: ...


class Kubelet:
    """The node agent's kubelet component (``name``, ``start(ctx)``, ``stop()``)."""

    name = "kubelet"

    def __init__(
        self,
        client_config: ClientConfig,
        options: KubeletOptions,
        *,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        """``metrics_registry``: where ``kubelet_*`` series go (the agent's node registry,
        served on the kubelet API's ``/metrics``; None: a private one)."""
        self.client_config = client_config
        self.options = options
        self.metrics = KubeletMetrics(
            metrics_registry if metrics_registry is not None else CollectorRegistry()
        )
        self.runtime_component = ContainerRuntime(
            ContainerdConfig(data_dir=options.data_dir, registries=options.registries),
            endpoint=options.runtime_endpoint,
            image_poll_interval_s=options.image_poll_interval_s,
        )
        self.clock = SystemClock()
        self.client = Client(client_config.with_user_agent(f"sampan-kubelet/{options.node_name}"))
        self.recorder = EventRecorder(self.client, "kubelet", options.node_name)
        self.node_agent = NodeAgent(self.client, options, self._runtime_part)
        self.node_agent.on_ready_change = self._node_ready_changed
        self.cgroups = CgroupManager(options.cgroup_root or "/")
        self.probes = ProbeManager(lambda: self.runtime, self.wake, self._probe_event)
        self.factory = SharedInformerFactory(self.client)
        self.sources = PodObjects(self.client, self.factory, self._on_source)
        self.volumes = VolumeManager(
            options.kubelet_dir,
            self.sources,
            self._request_token,
            get_pvc=self._get_pvc,
            get_pv=self._get_pv,
        )
        self.status_manager = StatusManager(
            self.client, is_static=self._is_static_uid, mirror_of=self._mirror_of
        )
        self.dns_settings = specs.DNSSettings(
            cluster_dns=options.effective_cluster_dns,
            cluster_domain=options.effective_cluster_domain,
            host_servers=(),
            host_searches=(),
            host_options=(),
        )
        """Re-read from ``resolv.conf`` at start."""
        self.allocatable: dict[str, Decimal] = {}
        self.memory_capacity_bytes = 0
        self.workers: dict[str, PodWorker] = {}
        self.static_pods: dict[str, dict[str, Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.sandbox_slots = asyncio.Semaphore(SANDBOX_CONCURRENCY)
        self._synced = asyncio.Event()
        self._network_ready = False
        self._pod_cidrs: tuple[str, ...] = ()
        self._pleg_seen: dict[str, frozenset[tuple[str, int]]] = {}
        self._ctx: _FailureSink | None = None
        self._stopping = False
        pods = self._pods_informer()
        pods.add_indexers({INDEX_UID: _uid_index})
        pods.add_event_handler(
            on_add=self._on_pod, on_update=lambda _o, n: self._on_pod(n), on_delete=self._on_pod
        )
        node_informer = self.factory.informer(
            NODES, field_selector=f"metadata.name={options.node_name}"
        )
        node_informer.add_event_handler(
            on_add=self._on_node, on_update=lambda _o, n: self._on_node(n)
        )

    # -- public API for the kubelet server and tests --------------------------------------

    @property
    def node_ips(self) -> tuple[str, ...]:
        """The node's addresses (given, or detected at start)."""
        return self.node_agent.node_ips

    @property
    def runtime(self) -> cri.RuntimeClient:
        return self.runtime_component.runtime

    @property
    def images(self) -> cri.ImageClient:
        return self.runtime_component.images

    @property
    def cni_conf_dir(self) -> Path:
        """Where containerd reads CNI network configurations (for the network component)."""
        return self.runtime_component.cfg.cni_conf_dir

    def pod_log_dir(self, pod: Mapping[str, Any]) -> Path:
        return pod_log_dir(self.options.pod_logs_dir, pod)

    def find_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod this kubelet runs by namespace/name (static pods by their full name)."""
        for pod in self.static_pods.values():
            meta = pod["metadata"]
            if meta.get("namespace") == namespace and meta.get("name") == name:
                return pod
        pod = self._pods_informer().cache.get(f"{namespace}/{name}")
        if pod is None or is_mirror_pod(pod):
            return None
        return pod

    async def _pod_containers(self, namespace: str, pod: str, container: str) -> list[pb.Container]:
        found = self.find_pod(namespace, pod)
        if found is None:
            return []
        uid = found["metadata"]["uid"]
        items = await self.runtime.list_containers(
            pb.ContainerFilter(
                label_selector={specs.LABEL_POD_UID: uid, specs.LABEL_CONTAINER_NAME: container}
            )
        )
        return sorted(items, key=lambda c: (c.metadata.attempt, c.created_at))

    async def pod_container_id(
        self, namespace: str, pod: str, container: str, *, previous: bool = False
    ) -> str | None:
        """The CRI id of the container's current (or previous) run, if any."""
        runs = await self._pod_containers(namespace, pod, container)
        index = -2 if previous else -1
        return runs[index].id if len(runs) >= abs(index) else None

    async def pod_sandbox_id(self, namespace: str, pod: str) -> str | None:
        found = self.find_pod(namespace, pod)
        if found is None:
            return None
        items = await self.runtime.list_pod_sandbox(
            pb.PodSandboxFilter(
                label_selector={specs.LABEL_POD_UID: found["metadata"]["uid"]},
                state=pb.PodSandboxStateValue(state=pb.PodSandboxState.SANDBOX_READY),
            )
        )
        return items[-1].id if items else None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, ctx: _FailureSink | None = None) -> None:
        self._ctx = ctx
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        options = self.options
        await self.node_agent.discover()
        self.dns_settings = await asyncio.to_thread(self._read_dns)
        await self.runtime_component.start()
        self.recorder.start()
        self.allocatable = self.node_agent.allocatable()
        self.memory_capacity_bytes = self.node_agent.machine.memory_bytes
        await asyncio.to_thread(self.volumes.ensure_dirs)
        await self.node_agent.register()
        self.factory.start()
        self._spawn(self._node_status_loop(), "kubelet-node-status")
        self._spawn(self._lease_loop(), "kubelet-node-lease")
        self._spawn(self._sync_loop(), "kubelet-pod-sync")
        rotator = LogRotator(
            self.runtime,
            max_size_bytes=options.args.container_log_max_size_bytes,
            max_files=options.args.container_log_max_files,
        )
        self._spawn(
            self._every(LOG_ROTATE_INTERVAL_S, "log rotation", rotator.rotate_once),
            "kubelet-log-rotation",
        )
        log.info("kubelet: node %s registered (%s)", options.node_name, ", ".join(self.node_ips))

    def _runtime_part(self, which: str) -> Any:
        if self.runtime_component.connection is None:
            return None
        return self.runtime if which == "runtime" else self.images

    def _read_dns(self) -> specs.DNSSettings:
        path = self.options.args.resolv_conf or "/etc/resolv.conf"
        try:
            text = Path(path).read_text()
        except OSError:
            text = ""
        servers, searches, opts = specs.parse_resolv_conf(text)
        return specs.DNSSettings(
            cluster_dns=self.options.effective_cluster_dns,
            cluster_domain=self.options.effective_cluster_domain,
            host_servers=servers,
            host_searches=searches,
            host_options=opts,
        )

    def _pods_informer(self) -> Any:
        return self.factory.informer(PODS, field_selector=f"spec.nodeName={self.options.node_name}")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed: %r", task.get_name(), exc, exc_info=exc)
            if self._ctx is not None and not self._stopping:
                self._ctx.fail(f"kubelet: {task.get_name()} failed: {exc!r}")

    async def stop_pod_sync(self) -> None:
        """Stop the loops and pod workers (containers keep running); the runtime stays."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks.clear()
        workers = list(self.workers.values())
        await asyncio.gather(*(w.stop() for w in workers))
        self.workers.clear()
        await self.probes.stop()
        await self.sources.stop()

    async def stop(self) -> None:
        """Stop workers and loops (containers keep running), then the runtime."""
        await self.stop_pod_sync()
        await self.factory.stop()
        await self.recorder.stop()
        await self.client.close()
        await self.runtime_component.stop()

    # -- informer handlers (quick: wake workers only) -------------------------------------

    def _on_pod(self, pod: dict[str, Any]) -> None:
        if is_mirror_pod(pod):
            hash_ = ((pod.get("metadata") or {}).get("annotations") or {}).get(MIRROR_ANNOTATION)
            if hash_ in self.workers:
                self.workers[hash_].wake()
            return
        uid = (pod.get("metadata") or {}).get("uid", "")
        if self._synced.is_set():
            self._ensure_worker(uid)

    def _on_source(self, obj: dict[str, Any]) -> None:
        namespace = (obj.get("metadata") or {}).get("namespace")
        if not self._synced.is_set():
            return
        for pod in self._pods_informer().cache.by_index("namespace", namespace or ""):
            worker = self.workers.get((pod.get("metadata") or {}).get("uid", ""))
            if worker is not None:
                worker.wake()
        for uid, pod in self.static_pods.items():
            if pod["metadata"].get("namespace") == namespace and uid in self.workers:
                self.workers[uid].wake()

    def _on_node(self, node: dict[str, Any]) -> None:
        self.node_agent.observe(node)
        spec = node.get("spec") or {}
        cidrs = tuple(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
        if cidrs and cidrs != self._pod_cidrs:
            self._pod_cidrs = cidrs
            log.info("kubelet: node pod CIDR %s", ",".join(cidrs))

    def wake(self, uid: str) -> None:
        worker = self.workers.get(uid)
        if worker is not None:
            worker.wake()

    def _ensure_worker(self, uid: str) -> PodWorker | None:
        if self._stopping or not uid:
            return None
        worker = self.workers.get(uid)
        if worker is None:
            worker = PodWorker(uid, self)
            self.workers[uid] = worker
            worker.start()
        else:
            worker.wake()
        return worker

    def worker_done(self, worker: PodWorker) -> None:
        if self.workers.get(worker.uid) is worker:
            del self.workers[worker.uid]
        self._pleg_seen.pop(worker.uid, None)
        if worker.terminated:
            self.status_manager.forget(worker.uid)
            self.sources.release(worker.uid)
        if (
            not self._stopping
            and self.desired_pod(worker.uid) is not None
            and (not worker.terminated)
        ):
            # A pod object still here (e.g. a failed final delete): keep syncing it.
            self._ensure_worker(worker.uid)

    # -- what workers need -----------------------------------------------------------------

    def desired_pod(self, uid: str) -> dict[str, Any] | None:
        static = self.static_pods.get(uid)
        if static is not None:
            pod = copy.deepcopy(static)
            mirror = self._mirror_of(static)
            if mirror is not None:
                pod["status"] = copy.deepcopy(mirror.get("status") or {})
            return pod
        items = self._pods_informer().cache.by_index(INDEX_UID, uid)
        if not items or is_mirror_pod(items[0]):
            return None
        return self.status_manager.latest(items[0])

    def _is_static_uid(self, uid: str) -> bool:
        return uid in self.static_pods

    def network_ready(self) -> bool:
        return self._network_ready

    def master_services(self) -> list[dict[str, Any]]:
        svc = self.factory.informer(SERVICES).cache.get("default/kubernetes")
        return [svc] if svc else []

    def _probe_event(self, uid: str, reason: str, message: str, container: str) -> None:
        pod = self.desired_pod(uid)
        if pod is None:
            return
        meta = pod["metadata"]
        self.recorder.event(
            {
                "kind": "Pod",
                "apiVersion": "v1",
                "namespace": meta.get("namespace"),
                "name": meta.get("name"),
                "uid": meta.get("uid"),
                "fieldPath": f"spec.containers{{{container}}}",
            },
            "Warning",
            reason,
            message,
        )

    def _mirror_of(self, static: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = static["metadata"]
        mirror = self._pods_informer().cache.get(f"{meta['namespace']}/{meta['name']}")
        if mirror is None or not is_mirror_pod(mirror):
            return None
        return mirror

    async def _request_token(
        self, namespace: str, service_account: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        answer = await self.client.create_subresource(
            SERVICEACCOUNTS, service_account, "token", body, namespace=namespace
        )
        return answer or {}

    async def _get_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.get(PVCS, name, namespace=namespace)
        except NotFoundError:
            return None

    async def _get_pv(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.get(PVS, name)
        except NotFoundError:
            return None

    def _node_ready_changed(self, ready: bool, message: str) -> None:
        ref = {
            "kind": "Node",
            "apiVersion": "v1",
            "name": self.options.node_name,
            "uid": self.options.node_name,
        }
        if ready:
            self.recorder.event(
                ref,
                "Normal",
                "NodeReady",
                f"Node {self.options.node_name} status is now: NodeReady",
            )
        else:
            self.recorder.event(
                ref,
                "Warning",
                "NodeNotReady",
                f"Node {self.options.node_name} status is now: NodeNotReady ({message})",
            )

    # -- loops -----------------------------------------------------------------------------

    async def _every(self, interval_s: float, what: str, step: Callable[[], Any]) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except (ClientError, cri.CRIError) as exc:
                log.warning("kubelet %s: %s", what, exc)
            except Exception:
                log.exception("kubelet %s failed", what)
            await asyncio.sleep(interval_s)

    async def _node_status_loop(self) -> None:
        agent = self.node_agent

        async def step() -> None:
            was_ok = agent.runtime_ok and agent.network_ok
            await agent.update_status()
            now_ok = agent.runtime_ok and agent.network_ok
            if agent.network_ok and not self._network_ready:
                self._set_network_ready()
            elif now_ok and not was_ok:
                for worker in list(self.workers.values()):
                    worker.wake()

        await self._every(self.options.args.node_status_update_s, "node status", step)

    async def _lease_loop(self) -> None:
        await self._every(self._lease_interval_s(), "lease", self.node_agent.renew_lease)

    def _lease_interval_s(self) -> float:
        return min(10.0, self.options.args.node_status_update_s)

    def _set_network_ready(self) -> None:
        if not self._network_ready:
            self._network_ready = True
            log.info("kubelet: container runtime network is ready")
            for worker in list(self.workers.values()):
                worker.wake()

    async def _check_network(self) -> None:
        """Until CNI is configured (by the network component, once the Node has a pod CIDR),
        ask the runtime every relist, so pods start as soon as it is."""
        await self.node_agent.probe_runtime()
        if self.node_agent.network_ok:
            self._set_network_ready()
            await self.node_agent.update_status()

    async def _sync_loop(self) -> None:
        await self.factory.wait_synced()
        waited_since = time.monotonic()
        self._synced.set()
        await self._refresh_static_pods()
        for pod in self._pods_informer().cache.list():
            if not is_mirror_pod(pod):
                self._ensure_worker(pod["metadata"]["uid"])
        for uid in self.static_pods:
            self._ensure_worker(uid)
        last_static = time.monotonic()
        last_housekeeping = 0.0
        logged_cidr_wait = False
        relist_failing = False
        while True:
            try:
                await self._relist()
                if not self._network_ready:
                    await self._check_network()
                now = time.monotonic()
                if now - last_static >= self.options.static_pod_poll_interval_s:
                    last_static = now
                    await self._refresh_static_pods()
                if now - last_housekeeping >= HOUSEKEEPING_S:
                    last_housekeeping = now
                    await self._housekeeping()
                if not self._pod_cidrs:
                    if not logged_cidr_wait:
                        log.info("kubelet: waiting for the node's pod CIDR (spec.podCIDR)")
                        logged_cidr_wait = True
                    elif now - waited_since > POD_CIDR_WAIT_LOG_S:
                        waited_since = now
                        log.warning(
                            "kubelet: node %s still has no spec.podCIDR; pods other than "
                            "hostNetwork ones cannot start (is the node IPAM controller "
                            "running?)",
                            self.options.node_name,
                        )
            except asyncio.CancelledError:
                raise
            except cri.CRIError as exc:
                if not relist_failing:
                    log.warning("kubelet: PLEG relist failed (runtime down?): %s", exc)
                relist_failing = True
            except Exception:
                log.exception("kubelet: pod sync loop step failed")
            else:
                if relist_failing:
                    relist_failing = False
                    log.info("kubelet: PLEG relist works again")
            await asyncio.sleep(PLEG_RELIST_S)

    async def _relist(self) -> None:
        sandboxes = await self.runtime.list_pod_sandbox()
        containers = await self.runtime.list_containers()
        seen: dict[str, set[tuple[str, int]]] = {}
        for sandbox in sandboxes:
            uid = sandbox.labels.get(specs.LABEL_POD_UID) or sandbox.metadata.uid
            seen.setdefault(uid, set()).add((sandbox.id, int(sandbox.state)))
        for container in containers:
            uid = container.labels.get(specs.LABEL_POD_UID)
            if uid:
                seen.setdefault(uid, set()).add((container.id, 10 + int(container.state)))
        current = {uid: frozenset(items) for uid, items in seen.items()}
        for uid, items in current.items():
            if self._pleg_seen.get(uid) != items:
                if uid in self.workers:
                    self.workers[uid].wake()
                elif self.desired_pod(uid) is None:
                    # Something of a pod this kubelet no longer has (deleted while down).
                    log.info("kubelet: cleaning up pod %s left in the runtime", uid)
                    self._ensure_worker(uid)
                else:
                    self._ensure_worker(uid)
        self._pleg_seen = current

    async def _housekeeping(self) -> None:
        known = set(self.workers) | set(self._pleg_seen)
        for uid in self.volumes.known_pod_uids():
            if uid not in known and self.desired_pod(uid) is None:
                await self.volumes.teardown(uid)
        cgroups = await asyncio.to_thread(self.cgroups.pod_uids)
        for uid, path in cgroups.items():
            if uid not in known and self.desired_pod(uid) is None:
                await asyncio.to_thread(self.cgroups.remove, path)
        # Pods whose worker ended but that still exist (e.g. recreated), and mirror pods.
        for pod in self._pods_informer().cache.list():
            uid = pod["metadata"]["uid"]
            if is_mirror_pod(pod):
                continue
            if uid not in self.workers and not _is_finished(pod):
                self._ensure_worker(uid)
        await self._sync_mirror_pods()

    async def _refresh_static_pods(self) -> None:
        found = await asyncio.to_thread(
            read_manifests, self.options.pod_manifests_dir, self.options.node_name
        )
        removed = set(self.static_pods) - set(found)
        added = set(found) - set(self.static_pods)
        self.static_pods = found
        for uid in added:
            log.info("kubelet: static pod %s", found[uid]["metadata"]["name"])
            self._ensure_worker(uid)
        for uid in removed:
            self.wake(uid)
        if added or removed:
            await self._sync_mirror_pods()

    async def _sync_mirror_pods(self) -> None:
        node_uid = ((self.node_agent.node or {}).get("metadata") or {}).get("uid", "")
        wanted = {
            (p["metadata"]["namespace"], p["metadata"]["name"]): p
            for p in self.static_pods.values()
        }
        for pod in self._pods_informer().cache.list():
            if not is_mirror_pod(pod):
                continue
            meta = pod["metadata"]
            static = wanted.get((meta.get("namespace"), meta.get("name")))
            mirror_hash = (meta.get("annotations") or {}).get(MIRROR_ANNOTATION)
            if static is None or static["metadata"]["annotations"][HASH_ANNOTATION] != mirror_hash:
                if meta.get("deletionTimestamp") and static is not None:
                    continue
                with contextlib.suppress(NotFoundError, ConflictError):
                    await self.client.delete(
                        PODS,
                        meta["name"],
                        namespace=meta["namespace"],
                        grace_period_s=0,
                        precondition_uid=meta.get("uid"),
                    )
        for (namespace, name), static in wanted.items():
            existing = self._pods_informer().cache.get(f"{namespace}/{name}")
            if existing is not None:
                continue
            try:
                await self.client.create(
                    PODS, mirror_pod(static, node_uid, self.options.node_name), namespace=namespace
                )
                log.info("kubelet: created mirror pod %s/%s", namespace, name)
            except ClientError as exc:
                log.warning("kubelet: mirror pod %s/%s: %s", namespace, name, exc)


def _uid_index(obj: Mapping[str, Any]) -> list[str]:
    uid = (obj.get("metadata") or {}).get("uid")
    return [uid] if uid else []


def _is_finished(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and not (
        pod.get("metadata") or {}
    ).get("deletionTimestamp")
