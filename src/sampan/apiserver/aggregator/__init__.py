"""API aggregation (``apiregistration.k8s.io/v1`` APIService), as kube-aggregator does it.

* ``controller``: ``Aggregator`` — automatic local APIServices, availability conditions,
  the backends' discovery cache, the ``extension-apiserver-authentication`` ConfigMap, and
  the entry point the request pipeline calls for ``/apis/<group>/<version>/...`` of an
  APIService with a ``spec.service``;
* ``resolve``: Service -> a ready endpoint address (aggregator routing);
* ``proxy``: the TLS transport (front-proxy client certificate, ``caBundle`` verification)
  and the streaming / upgrade-aware relay;
* ``discovery``: merging backends' groups into ``/apis`` and aggregated discovery.

Authorization happens before the aggregator is reached (the normal RBAC check of the request's
attributes), so a backend is never called for a request Sampan would refuse.
"""

from sampan.apiserver.aggregator.controller import (
    AUTH_CONFIGMAP,
    AUTOMANAGED_LABEL,
    PROBE_INTERVAL_S,
    Aggregator,
)

__all__ = ["AUTH_CONFIGMAP", "AUTOMANAGED_LABEL", "PROBE_INTERVAL_S", "Aggregator"]
