"""The scheduler's cache: every node's ``NodeInfo`` and the pods assigned or assumed on it.

This module owns the incremental cluster state the scheduling cycle reads. Invariants:

* Each pod (by uid) is counted on at most one node. ``assume_pod`` counts a pod on its chosen
  node the moment the scheduling cycle picks it, before the binding is written, so the next
  cycle sees its requests; ``forget_pod`` undoes that when binding fails. When the informer
  later reports the pod bound, the assumed copy is replaced (``add_pod`` confirms it).
  Assumed pods never expire here (upstream's default since 1.26: no TTL).
* A pod whose node is not known yet is kept on a placeholder ``NodeInfo`` (not listed), so
  resources stay right whatever order informer events arrive in.
* ``node_list`` is the order nodes are tried in (insertion order); the scheduler starts each
  cycle where the previous one stopped (round robin).
* ``image_nodes`` counts, per normalised image name, the nodes that report it (ImageLocality).
* ``label_nodes`` names, per (namespace, label key, value), the nodes holding counted pods with
  that label and how many, so a selector's matches are counted on those nodes alone
  (``nodes_with``) instead of on every node.
* ``key_nodes`` counts, per label key, the known nodes that have it: a topology key no node
  has makes no domain, so PodTopologySpread skips it.
* ``affinity_pods`` / ``anti_affinity_pods`` count pods with (required anti-) affinity terms
  cluster-wide so InterPodAffinity can skip its work when there are none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sampan.scheduler.framework import LabelLookups, NodeInfo, PodInfo

__all__ = ["SchedulerCache"]

log = logging.getLogger(__name__)


class SchedulerCache:
    """Nodes and the pods on them; see the module docstring."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.node_list: list[NodeInfo] = []
        self._placeholders: dict[str, NodeInfo] = {}
        self.pod_nodes: dict[str, str] = {}
        """uid -> node name for every counted pod (bound or assumed)."""
        self.assumed: set[str] = set()
        self.image_nodes: dict[str, int] = {}
        self.key_nodes: dict[str, int] = {}
        """Node label key -> known nodes that have it (a topology key no node has names no
        domain)."""
        self.label_nodes: dict[tuple[str, str, str], dict[str, int]] = {}
        """(namespace, label key, value) -> node name -> counted pods there with that label."""
        self.affinity_pods = 0
        self.anti_affinity_pods = 0
        self.tainted_nodes = 0
        """Nodes with at least one taint (TaintToleration skips its loops when zero)."""
        self.unschedulable_nodes = 0
        self.nominated: dict[str, tuple[PodInfo, str]] = {}
        """uid -> (pod, node) for pods with ``status.nominatedNodeName`` (preemptors)."""

    # -- nodes -------------------------------------------------------------------------------

    def _info(self, name: str) -> NodeInfo:
        info = self.nodes.get(name) or self._placeholders.get(name)
        if info is None:
            info = NodeInfo(name)
            self._placeholders[name] = info
        return info

    def add_node(self, node: dict) -> NodeInfo:
        name = node["metadata"]["name"]
        info = self.nodes.get(name)
        if info is None:
            info = self._placeholders.pop(name, None) or NodeInfo(name)
            self.nodes[name] = info
            self.node_list.append(info)
        else:
            self._count_images(info, -1)
            self._count_flags(info, -1)
        info.set_node(node)
        self._count_images(info, 1)
        self._count_flags(info, 1)
        return info

    def _count_flags(self, info: NodeInfo, delta: int) -> None:
        key_nodes = self.key_nodes
        for key in info.labels:
            left = key_nodes.get(key, 0) + delta
            if left > 0:
                key_nodes[key] = left
            else:
                key_nodes.pop(key, None)
        if info.taints:
            self.tainted_nodes += delta
        if info.unschedulable:
            self.unschedulable_nodes += delta

    def update_node(self, node: dict) -> NodeInfo:
        return self.add_node(node)

    def remove_node(self, name: str) -> None:
        info = self.nodes.pop(name, None)
        if info is None:
            return
        self.node_list.remove(info)
        self._count_images(info, -1)
        self._count_flags(info, -1)
        if info.pods:
            # Pods still bound to a deleted node keep counting until they are deleted.
            info.node = None
            self._placeholders[name] = info

    def _count_images(self, info: NodeInfo, delta: int) -> None:
        for image in info.image_sizes:
            count = self.image_nodes.get(image, 0) + delta
            if count > 0:
                self.image_nodes[image] = count
            else:
                self.image_nodes.pop(image, None)

    def __len__(self) -> int:
        return len(self.node_list)

    # -- pods --------------------------------------------------------------------------------

    def _count(self, pi: PodInfo, node_name: str) -> None:
        info = self._info(node_name)
        info.add_pod(pi)
        self.pod_nodes[pi.uid] = node_name
        index = self.label_nodes
        ns = pi.namespace
        for k, v in pi.labels.items():
            per_node = index.get((ns, k, v))
            if per_node is None:
                index[(ns, k, v)] = {node_name: 1}
            else:
                per_node[node_name] = per_node.get(node_name, 0) + 1
        if pi.has_affinity:
            self.affinity_pods += 1
            if pi.required_anti_affinity:
                self.anti_affinity_pods += 1

    def _uncount(self, uid: str) -> PodInfo | None:
        node_name = self.pod_nodes.pop(uid, None)
        if node_name is None:
            return None
        info = self.nodes.get(node_name) or self._placeholders.get(node_name)
        if info is None:
            return None
        pi = info.pods.get(uid)
        if pi is None:
            return None
        info.remove_pod(pi)
        index = self.label_nodes
        ns = pi.namespace
        for k, v in pi.labels.items():
            per_node = index.get((ns, k, v))
            if per_node is None:
                continue
            left = per_node.get(node_name, 0) - 1
            if left > 0:
                per_node[node_name] = left
            else:
                per_node.pop(node_name, None)
                if not per_node:
                    del index[(ns, k, v)]
        if pi.has_affinity:
            self.affinity_pods -= 1
            if pi.required_anti_affinity:
                self.anti_affinity_pods -= 1
        if not info.pods and info.node is None:
            self._placeholders.pop(node_name, None)
        return pi

    def assume_pod(self, pi: PodInfo, node_name: str) -> PodInfo:
        """Count ``pi`` on ``node_name`` now; returns the assumed (node-assigned) copy."""
        assumed = pi.with_node(node_name)
        self._uncount(pi.uid)
        self._count(assumed, node_name)
        self.assumed.add(pi.uid)
        return assumed

    def forget_pod(self, pi: PodInfo) -> None:
        """Undo ``assume_pod`` (binding failed). A pod confirmed meanwhile stays."""
        if pi.uid in self.assumed:
            self.assumed.discard(pi.uid)
            self._uncount(pi.uid)

    def is_assumed(self, uid: str) -> bool:
        return uid in self.assumed

    def add_pod(self, pi: PodInfo) -> None:
        """An assigned pod from the informer (new, or the confirmation of an assumed one)."""
        self.assumed.discard(pi.uid)
        self._uncount(pi.uid)
        self._count(pi, pi.node_name)

    def update_pod(self, pi: PodInfo) -> None:
        self.add_pod(pi)

    def remove_pod(self, uid: str) -> PodInfo | None:
        self.assumed.discard(uid)
        return self._uncount(uid)

    def pod_info(self, uid: str) -> PodInfo | None:
        """The counted (bound or assumed) pod with this uid."""
        node_name = self.pod_nodes.get(uid)
        if node_name is None:
            return None
        info = self.nodes.get(node_name) or self._placeholders.get(node_name)
        return info.pods.get(uid) if info is not None else None

    def nodes_with(self, lookups: LabelLookups | None) -> list[NodeInfo] | None:
        """The known nodes holding a counted pod under ``lookups`` (``label_lookups``): only
        they can hold a match of the selector the lookups came from. None for None (every node
        may hold one)."""
        if lookups is None:
            return None
        index = self.label_nodes
        nodes = self.nodes
        if len(lookups) == 1:
            names: Iterable[str] = index.get(lookups[0], ())
        else:
            names = {name for key in lookups for name in index.get(key, ())}
        return [info for name in names if (info := nodes.get(name)) is not None]

    # -- nominated pods (preemption) ---------------------------------------------------------

    def clear_nominated(self, uid: str) -> None:
        old = self.nominated.pop(uid, None)
        if old is not None:
            info = self.nodes.get(old[1])
            if info is not None:
                info.nominated.pop(uid, None)

    def set_nominated(self, pi: PodInfo, node_name: str | None) -> None:
        old = self.nominated.pop(pi.uid, None)
        if old is not None:
            info = self.nodes.get(old[1])
            if info is not None:
                info.nominated.pop(pi.uid, None)
        if node_name:
            self.nominated[pi.uid] = (pi, node_name)
            info = self.nodes.get(node_name)
            if info is not None:
                info.nominated[pi.uid] = pi

    def nominated_on(self, node_name: str) -> list[PodInfo]:
        info = self.nodes.get(node_name)
        return list(info.nominated.values()) if info is not None else []
