"""Pure helpers for scheduler unit tests: a cache of nodes and a profile's plugins, no server."""

from __future__ import annotations

from typing import Any

from sampan.scheduler.cache import SchedulerCache
from sampan.scheduler.config import build_framework, parse_configuration
from sampan.scheduler.framework import CycleState, Framework, Handle, NodeInfo, PodInfo, Status


def pod(
    name: str = "p",
    *,
    containers: list[dict[str, Any]] | None = None,
    requests: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    namespace: str = "default",
    node_name: str = "",
    priority: int = 0,
    **spec: Any,
) -> PodInfo:
    if containers is None:
        containers = [{"name": "c", "image": "img", "resources": {"requests": requests or {}}}]
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "labels": labels or {},
        },
        "spec": {"containers": containers, "priority": priority, **spec},
    }
    if node_name:
        body["spec"]["nodeName"] = node_name
    return PodInfo(body)


def node(
    name: str,
    cpu: str | int = "4",
    memory: str | int = "32Gi",
    pods: str = "110",
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    res = {"cpu": str(cpu), "memory": str(memory), "pods": pods}
    images = spec.pop("images", None)
    body = {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {"allocatable": res, "capacity": res},
    }
    if images:
        body["status"]["images"] = images
    return body


class Env:
    """A cache plus the default profile (optionally configured by a profile dict)."""

    def __init__(
        self, profile: dict[str, Any] | None = None, **objects: list[dict[str, Any]]
    ) -> None:
        self.cache = SchedulerCache()
        self.objects = objects
        raw = {"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration"}
        if profile is not None:
            raw["profiles"] = [profile]
        configuration = parse_configuration(raw, "test")
        listers = {k: (lambda v=v: list(v)) for k, v in objects.items()}
        getters = {k: (lambda key, v=v: _by_key(v, key)) for k, v in objects.items()}
        self.handle = Handle(self.cache, listers, getters)
        self.framework: Framework = build_framework(configuration.profiles[0], self.handle)
        self.handle.framework = self.framework
        self.evicted: list[str] = []
        self.handle.evict = lambda victim, _p, _n: self.evicted.append(victim.name)
        self.handle.nominate = lambda _p, _n: None

    def add_nodes(self, *nodes: dict[str, Any]) -> list[NodeInfo]:
        return [self.cache.add_node(n) for n in nodes]

    def add_pod(self, pi: PodInfo) -> None:
        self.cache.add_pod(pi)

    def plugin(self, name: str) -> Any:
        return self.framework.plugins[name]

    def filter(self, name: str, pi: PodInfo) -> tuple[list[str], dict[str, Status]]:
        """Run one plugin's PreFilter and Filter over every node."""
        plugin = self.plugin(name)
        state = CycleState()
        failed: dict[str, Status] = {}
        if hasattr(plugin, "pre_filter"):
            st = plugin.pre_filter(state, pi)
            if st is not None and st.code == 5:
                return [n.name for n in self.cache.node_list], failed
            assert st is None, st
        passed = plugin.filter(state, pi, list(self.cache.node_list), failed)
        return [n.name for n in passed], failed

    def score(self, name: str, pi: PodInfo) -> list[int]:
        """One plugin's PreScore, Score and NormalizeScore over every node."""
        plugin = self.plugin(name)
        state = CycleState()
        nodes = list(self.cache.node_list)
        if hasattr(plugin, "pre_score"):
            st = plugin.pre_score(state, pi, nodes)
            if st is not None and st.code == 5:
                return []
        scores = plugin.score(state, pi, nodes)
        plugin.normalize_score(state, pi, nodes, scores)
        return scores


def _by_key(objects: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    for o in objects:
        meta = o.get("metadata") or {}
        k = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta.get("name")
        if k == key:
            return o
    return None
