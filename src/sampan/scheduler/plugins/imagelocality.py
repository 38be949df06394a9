"""ImageLocality: prefer nodes that already have the pod's images, as upstream.

Score = 100 * (clamp(sum, 23 MiB, 1000 MiB * containers) - 23 MiB) / (1000 MiB * containers -
23 MiB), where ``sum`` adds, for every (init) container image present on the node, its size
scaled by the fraction of all nodes that have it (spreading avoids piling onto one node).
"""

from __future__ import annotations

from sampan.scheduler.framework import (
    MAX_NODE_SCORE,
    SKIP,
    CycleState,
    NodeInfo,
    Plugin,
    PodInfo,
    Status,
    normalized_image_name,
)

__all__ = ["MAX_CONTAINER_THRESHOLD", "MIN_THRESHOLD", "ImageLocality", "calculate_priority"]

MB = 1024 * 1024
MIN_THRESHOLD = 23 * MB
MAX_CONTAINER_THRESHOLD = 1000 * MB


def calculate_priority(sum_scores: int, num_containers: int) -> int:
    max_threshold = MAX_CONTAINER_THRESHOLD * num_containers
    if sum_scores < MIN_THRESHOLD:
        sum_scores = MIN_THRESHOLD
    elif sum_scores > max_threshold:
        sum_scores = max_threshold
    return MAX_NODE_SCORE * (sum_scores - MIN_THRESHOLD) // (max_threshold - MIN_THRESHOLD)


class ImageLocality(Plugin):
    name = "ImageLocality"

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        # No node has any of the pod's images: every node scores 0, which cannot change the
        # choice, so the work is skipped.
        image_nodes = self.handle.cache.image_nodes
        if not any(normalized_image_name(i) in image_nodes for i in pod.images if i):
            return Status(SKIP)
        return None

    def score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        cache = self.handle.cache
        total_nodes = len(cache.node_list) or 1
        images = [normalized_image_name(i) for i in pod.images if i]
        wanted = [(i, cache.image_nodes.get(i, 0)) for i in images]
        wanted = [(i, c) for i, c in wanted if c]
        if not wanted:
            return [0] * len(nodes)
        count = len(pod.images)
        out = []
        for n in nodes:
            sizes = n.image_sizes
            total = 0
            for image, num_nodes in wanted:
                size = sizes.get(image)
                if size is not None:
                    total += int(size * num_nodes / total_nodes)
            out.append(calculate_priority(total, count))
        return out
