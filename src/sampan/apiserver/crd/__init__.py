"""CustomResourceDefinitions: serving custom resources inside the API server.

Modules:

* ``model``: a CRD -> its served versions (``ResourceInfo`` + schema, columns, subresources);
* ``controller``: ``CRDController``, the loop that registers CRDs, sets their conditions and
  deletes their objects when they go (finalizer ``customresourcecleanup.apiextensions.k8s.io``);
* ``support``: ``CustomResources``, what the request handlers ask (body preparation with
  fieldValidation, pruning, defaulting and schema validation; printer columns; scale paths),
  and ``add_warning`` for ``Warning`` response headers;
* ``schema``: structural schemas (prune, default, validate, structural checks);
* ``fieldvalidation``: unknown fields of built-in kinds and the Strict/Warn/Ignore directive;
* ``scale``: the scale subresource of custom resources.

Wiring (server.py): ``custom = CustomResources(BuiltinSchemas(openapi.definition_name,
openapi.definition))`` goes into the HandlerContext; ``CRDController(storage, registry, custom,
openapi)`` is started after the storage is ready and stopped before it.
"""

from __future__ import annotations

from sampan.apiserver.crd.controller import CRDController
from sampan.apiserver.crd.fieldvalidation import BuiltinSchemas
from sampan.apiserver.crd.model import CRD_FINALIZER, ScalePaths, ServedVersion, served_versions
from sampan.apiserver.crd.support import (
    WARNINGS_KEY,
    CustomResources,
    add_warning,
    request_warnings,
    warning_header,
)

__all__ = [
    "CRD_FINALIZER",
    "WARNINGS_KEY",
    "BuiltinSchemas",
    "CRDController",
    "CustomResources",
    "ScalePaths",
    "ServedVersion",
    "add_warning",
    "request_warnings",
    "served_versions",
    "warning_header",
]
