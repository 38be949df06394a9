"""Every controller class the manager can run, by upstream name.

Each controller module adds one import and one entry here. The manager instantiates the
enabled ones (``ControllerManagerOptions.enabled``) once per leadership term, in this order.
"""

from __future__ import annotations

from sampan.controllers.base import Controller
from sampan.controllers.certificates import CSRApprovingController, CSRSigningController
from sampan.controllers.cronjob import CronJobController
from sampan.controllers.daemonset import DaemonSetController
from sampan.controllers.deployment import DeploymentController
from sampan.controllers.endpoints import EndpointsController
from sampan.controllers.endpointslice import EndpointSliceController
from sampan.controllers.garbagecollector import GarbageCollector
from sampan.controllers.hpa import HPAController
from sampan.controllers.job import JobController
from sampan.controllers.localpath import LocalPathProvisioner
from sampan.controllers.namespace import NamespaceController
from sampan.controllers.nodeipam import NodeIpamController
from sampan.controllers.nodelifecycle import NodeLifecycleController
from sampan.controllers.persistentvolume import (
    PersistentVolumeBinder,
    PVCProtectionController,
    PVProtectionController,
)
from sampan.controllers.podgc import PodGCController
from sampan.controllers.replicaset import ReplicaSetController, ReplicationControllerController
from sampan.controllers.serviceaccount import RootCACertPublisher, ServiceAccountsController
from sampan.controllers.statefulset import StatefulSetController
from sampan.controllers.tokens import TokensController
from sampan.controllers.ttlafterfinished import TTLAfterFinishedController

__all__ = ["CONTROLLERS"]

CONTROLLERS: dict[str, type[Controller]] = {
    "namespace": NamespaceController,
    "serviceaccount": ServiceAccountsController,
    "root-ca-cert-publisher": RootCACertPublisher,
    "serviceaccount-token": TokensController,
    "garbagecollector": GarbageCollector,
    "endpoint": EndpointsController,
    "endpointslice": EndpointSliceController,
    "nodeipam": NodeIpamController,
    "nodelifecycle": NodeLifecycleController,
    "podgc": PodGCController,
    "deployment": DeploymentController,
    "replicaset": ReplicaSetController,
    "replicationcontroller": ReplicationControllerController,
    "job": JobController,
    "cronjob": CronJobController,
    "statefulset": StatefulSetController,
    "daemonset": DaemonSetController,
    "ttlafterfinished": TTLAfterFinishedController,
    "persistentvolume-binder": PersistentVolumeBinder,
    "pvc-protection": PVCProtectionController,
    "pv-protection": PVProtectionController,
    "local-path-provisioner": LocalPathProvisioner,
    "horizontalpodautoscaling": HPAController,
    "csrsigning": CSRSigningController,
    "csrapproving": CSRApprovingController,
}
