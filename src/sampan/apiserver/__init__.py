"""The Kubernetes API server (HTTPS REST over the datastore).

Public façade: ``APIServer`` and ``APIServerOptions``. Layout of the package:

* ``server``       lifecycle, request pipeline (request info -> authn -> authz -> handler),
                   health, /version, discovery routing
* ``requestinfo``  URL + method -> verb/group/version/namespace/resource/subresource/name
* ``handlers``     one coroutine per verb over the storage layer; subresources; reviews
* ``watch``        chunked watch streaming
* ``negotiation``  body decoding (JSON/YAML, size limit) and Accept parsing (Table...)
* ``responses``    rendering objects, lists, Tables and Status errors
* ``patch``        JSON Patch and JSON Merge Patch
* ``admission/``   the admission chain and its plugins (NamespaceLifecycle, LimitRanger,
                   ServiceAccount, Priority, DefaultTolerationSeconds, PodSecurity, Service
                   IP/port allocation, ResourceQuota)
* ``subresources`` serviceaccounts/token (TokenRequest) and pods/eviction (REST handlers)
* ``binding``      pods/binding through the store
* ``endpoints_reconciler``  the ``kubernetes`` Service's Endpoints/EndpointSlice (live servers)
* ``discovery``    discovery documents and /version
* ``bootstrap``    system namespaces, bootstrap RBAC, the ``kubernetes`` Service
* ``storage/``     watch cache + registry store (another owner)
* ``auth/``        authentication and RBAC (another owner)
"""

from __future__ import annotations

from sampan.apiserver.server import APIServer, APIServerOptions

__all__ = ["APIServer", "APIServerOptions"]
