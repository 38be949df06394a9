"""The metrics store of the metrics server: kubelet ``/metrics/resource`` scrapes in, the
``metrics.k8s.io/v1beta1`` objects out (pure functions and data; no I/O).

Each scrape of a node yields one ``NodeScrape`` (cumulative CPU seconds and working-set bytes
of the node, its pods' containers, each with the timestamp the kubelet stamped). The store keeps
the last two scrapes of every node; a CPU usage is the rate between the two samples of the same
object (as metrics-server computes it), and its ``window`` the time between them. An object seen
in only one scrape, or whose counter went backwards (a restarted container), has no usage yet
and is left out, as metrics-server leaves it out.

Quantities are rendered as upstream's ``resource.Quantity`` would: CPU from nanocores in the
decimal SI form (``123456n``, ``15m``, ``2``), memory in the binary SI form (``1234Ki``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sampan.api import times
from sampan.api.quantity import BINARY_SI, DECIMAL_SI, format_canonical

__all__ = [
    "GROUP_VERSION",
    "ContainerSample",
    "MetricsStore",
    "NodeScrape",
    "format_cpu",
    "format_go_duration",
    "format_memory",
    "parse_resource_metrics",
]

GROUP_VERSION = "metrics.k8s.io/v1beta1"


@dataclass(frozen=True)
class ContainerSample:
    cpu_seconds: float
    cpu_at: float  # unix seconds
    memory: int
    memory_at: float


@dataclass
class NodeScrape:
    node: str
    at: float
    node_sample: ContainerSample | None = None
    # (namespace, pod) -> container -> sample
    pods: dict[tuple[str, str], dict[str, ContainerSample]] = field(default_factory=dict)


def parse_resource_metrics(node: str, text: str, *, at: float) -> NodeScrape:
    """Parse a kubelet's ``/metrics/resource`` answer (``ValueError`` if it is not the text
    format). Samples without a timestamp take ``at``."""
    cpu: dict[tuple[str, ...], tuple[float, float]] = {}
    mem: dict[tuple[str, ...], tuple[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            ts = float(s.timestamp) if s.timestamp is not None else at
            labels = s.labels
            if s.name == "node_cpu_usage_seconds_total":
                cpu[()] = (s.value, ts)
            elif s.name == "node_memory_working_set_bytes":
                mem[()] = (s.value, ts)
            elif s.name == "container_cpu_usage_seconds_total":
                cpu[(labels["namespace"], labels["pod"], labels["container"])] = (s.value, ts)
            elif s.name == "container_memory_working_set_bytes":
                mem[(labels["namespace"], labels["pod"], labels["container"])] = (s.value, ts)
    scrape = NodeScrape(node=node, at=at)
    for key, (seconds, cpu_at) in cpu.items():
        if key not in mem:
            continue
        memory, memory_at = mem[key]
        sample = ContainerSample(seconds, cpu_at, int(memory), memory_at)
        if key == ():
            scrape.node_sample = sample
        else:
            ns, pod, container = key
            scrape.pods.setdefault((ns, pod), {})[container] = sample
    return scrape


def _rate(old: ContainerSample, new: ContainerSample) -> tuple[int, float] | None:
    """(nanocores, window seconds) between two samples, or None."""
    window = new.cpu_at - old.cpu_at
    if window <= 0 or new.cpu_seconds < old.cpu_seconds:
        return None
    return int((new.cpu_seconds - old.cpu_seconds) * 1e9 / window), window


def _rfc3339(at: float) -> str:
    return times.rfc3339(times.from_unix(at))


def format_go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String`` prints it (milliseconds precision)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    if hours == 0 and minutes == 0 and secs == 0:
        return f"{sign}{millis}ms"
    text = f"{secs}.{millis:03d}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def format_cpu(nanocores: int) -> str:
    """Nanocores as a canonical decimal-SI quantity (``resource.NewScaledQuantity(n, -9)``)."""
    return format_canonical(Decimal(nanocores).scaleb(-9), DECIMAL_SI)


def format_memory(value: int) -> str:
    """Bytes as a canonical binary-SI quantity (``resource.NewQuantity(b, BinarySI)``)."""
    return format_canonical(value, BINARY_SI)


class MetricsStore:
    """The last two scrapes per node, and the metrics objects computed from them."""

    def __init__(self) -> None:
        self._scrapes: dict[str, tuple[NodeScrape | None, NodeScrape]] = {}

    def add(self, scrape: NodeScrape) -> None:
        previous = self._scrapes.get(scrape.node)
        self._scrapes[scrape.node] = (previous[1] if previous else None, scrape)

    def forget_except(self, nodes: Iterable[str]) -> None:
        keep = set(nodes)
        for node in set(self._scrapes) - keep:
            del self._scrapes[node]

    def node_metrics(self, node: Mapping[str, Any]) -> dict[str, Any] | None:
        name = node["metadata"]["name"]
        pair = self._scrapes.get(name)
        if pair is None or pair[0] is None:
            return None
        old, new = pair[0].node_sample, pair[1].node_sample
        if old is None or new is None:
            return None
        rate = _rate(old, new)
        if rate is None:
            return None
        nanocores, window = rate
        return {
            "kind": "NodeMetrics",
            "apiVersion": GROUP_VERSION,
            "metadata": _metadata(node, new.cpu_at),
            "timestamp": _rfc3339(new.cpu_at),
            "window": format_go_duration(window),
            "usage": {"cpu": format_cpu(nanocores), "memory": format_memory(new.memory)},
        }

    def pod_metrics(self, pod: Mapping[str, Any]) -> dict[str, Any] | None:
        """PodMetrics of a pod whose every running container has a rate; else None."""
        meta = pod["metadata"]
        node = (pod.get("spec") or {}).get("nodeName")
        pair = self._scrapes.get(node or "")
        if pair is None or pair[0] is None:
            return None
        key = (meta.get("namespace", ""), meta["name"])
        old, new = pair[0].pods.get(key), pair[1].pods.get(key)
        if not old or not new:
            return None
        containers = []
        timestamp = 0.0
        window = 0.0
        for name in sorted(new):
            if name not in old:
                return None
            rate = _rate(old[name], new[name])
            if rate is None:
                return None
            nanocores, window = rate
            timestamp = max(timestamp, new[name].cpu_at)
            containers.append(
                {
                    "name": name,
                    "usage": {
                        "cpu": format_cpu(nanocores),
                        "memory": format_memory(new[name].memory),
                    },
                }
            )
        if not containers:
            return None
        return {
            "kind": "PodMetrics",
            "apiVersion": GROUP_VERSION,
            "metadata": _metadata(pod, timestamp),
            "timestamp": _rfc3339(timestamp),
            "window": format_go_duration(window),
            "containers": containers,
        }


def _metadata(obj: Mapping[str, Any], at: float) -> dict[str, Any]:
    meta = obj["metadata"]
    result: dict[str, Any] = {"name": meta["name"]}
    if meta.get("namespace"):
        result["namespace"] = meta["namespace"]
    result["creationTimestamp"] = _rfc3339(at)
    if meta.get("labels"):
        result["labels"] = dict(meta["labels"])
    return result
