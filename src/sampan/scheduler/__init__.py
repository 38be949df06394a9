"""The scheduler: binds pending pods to nodes, as kube-scheduler 1.32 does.

Modules:

* ``scheduler``: the ``Scheduler`` component (informers, scheduling and binding cycles,
  leader election, events, PodScheduled conditions).
* ``config``: ``SchedulerOptions``, ``SchedulerConfigError``, KubeSchedulerConfiguration
  files and profiles.
* ``framework``: statuses, ``PodInfo``/``NodeInfo``, the plugin contract, ``Framework``.
* ``cache``: incremental node info and assumed pods. ``queue``: activeQ/backoffQ/unschedulable.
* ``plugins``: the default plugins and their registry.

Construct it as ``Scheduler(client_config, SchedulerOptions(identity=..., args=...,
leader_elect=...))``.
"""

from sampan.scheduler.config import SchedulerConfigError, SchedulerOptions
from sampan.scheduler.scheduler import Scheduler

__all__ = ["Scheduler", "SchedulerConfigError", "SchedulerOptions"]
