"""Helm charts as objects: K3s's ``helm.cattle.io`` HelmChart controller.

* ``crd``: the ``HelmChart`` / ``HelmChartConfig`` CustomResourceDefinitions.
* ``source``: where a chart archive comes from (repository index, URL, OCI, inline, static).
* ``engine``: Helm itself (``helm-python-sdk``), run in a child process per operation.
* ``controller``: HelmChart -> release (install, upgrade, uninstall, status, events).
* ``component``: the supervisor component "helm-controller" (CRDs, then the controller).

This package sits above the controller framework (it runs its controller with
``sampan.controllers``' manager) and below the supervisor; nothing else imports it.
"""

from sampan.helm.component import HelmControllerComponent
from sampan.helm.controller import HelmChartController, HelmOptions
from sampan.helm.crd import FINALIZER, HELMCHARTCONFIGS, HELMCHARTS

__all__ = [
    "FINALIZER",
    "HELMCHARTCONFIGS",
    "HELMCHARTS",
    "HelmChartController",
    "HelmControllerComponent",
    "HelmOptions",
]
