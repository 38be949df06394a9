"""Helm charts as objects: K3s's ``helm.cattle.io`` HelmChart controller.

* ``crd``: the ``HelmChart`` / ``HelmChartConfig`` CustomResourceDefinitions.
* ``source``: where a chart archive comes from (repository index, URL, OCI, inline, static).
* ``engine``: Helm itself (``helm-python-sdk``), run in a child process per operation.
* ``controller``: HelmChart -> release (install, upgrade, uninstall, status, events).
* ``component``: the supervisor component "helm-controller" (CRDs, then the controller).

This package sits above the controller framework (it runs its controller with
``sampan.controllers``' manager) and below the supervisor; nothing else imports it.
"""

from typing import Any

__all__ = [
    "FINALIZER",
    "HELMCHARTCONFIGS",
    "HELMCHARTS",
    "HelmChartController",
    "HelmControllerComponent",
    "HelmOptions",
]

# Exports are imported lazily: the engine child (``python -m sampan.helm.engine``) imports this
# package first, and must not pay for the client and controller stack it never uses.
_EXPORTS = {
    "FINALIZER": "sampan.helm.crd",
    "HELMCHARTCONFIGS": "sampan.helm.crd",
    "HELMCHARTS": "sampan.helm.crd",
    "HelmChartController": "sampan.helm.controller",
    "HelmOptions": "sampan.helm.controller",
    "HelmControllerComponent": "sampan.helm.component",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sampan.helm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
