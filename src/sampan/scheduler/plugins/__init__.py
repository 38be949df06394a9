"""The in-tree plugin registry and kube-scheduler 1.32's default plugin set.

``REGISTRY`` maps plugin names to classes; ``DEFAULT_PLUGINS`` is the default profile's
``multiPoint`` list, in upstream's order, with the default Score weights.
"""

from __future__ import annotations

from sampan.scheduler.framework import Plugin
from sampan.scheduler.plugins.basic import (
    DefaultBinder,
    NodeName,
    NodePorts,
    NodeUnschedulable,
    NodeVolumeLimits,
    PrioritySort,
    SchedulingGates,
    VolumeRestrictions,
    VolumeZone,
)
from sampan.scheduler.plugins.imagelocality import ImageLocality
from sampan.scheduler.plugins.interpodaffinity import InterPodAffinity
from sampan.scheduler.plugins.nodeaffinity import NodeAffinity, TaintToleration
from sampan.scheduler.plugins.noderesources import BalancedAllocation, Fit
from sampan.scheduler.plugins.preemption import DefaultPreemption
from sampan.scheduler.plugins.topologyspread import PodTopologySpread
from sampan.scheduler.plugins.volumebinding import VolumeBinding

__all__ = ["DEFAULT_PLUGINS", "REGISTRY"]

REGISTRY: dict[str, type[Plugin]] = {
    cls.name: cls
    for cls in (
        SchedulingGates,
        PrioritySort,
        NodeUnschedulable,
        NodeName,
        TaintToleration,
        NodeAffinity,
        NodePorts,
        Fit,
        VolumeRestrictions,
        NodeVolumeLimits,
        VolumeBinding,
        VolumeZone,
        PodTopologySpread,
        InterPodAffinity,
        DefaultPreemption,
        BalancedAllocation,
        ImageLocality,
        DefaultBinder,
    )
}

DEFAULT_PLUGINS: tuple[tuple[str, int], ...] = (
    ("SchedulingGates", 0),
    ("PrioritySort", 0),
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("VolumeRestrictions", 0),
    ("NodeVolumeLimits", 0),
    ("VolumeBinding", 0),
    ("VolumeZone", 0),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("DefaultPreemption", 0),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", 0),
)
