"""OpenAPI v3 documents — part 1: the operations index, without schemas.

Owns ``/openapi/v3`` (the index of group-versions) and ``/openapi/v3/<api|apis/g>/<v>``.
Part 1 publishes, per resource, the item path with its operations and the
``x-kubernetes-group-version-kind`` extension plus the ``fieldValidation`` and ``dryRun``
query parameters. That is what kubectl 1.32 reads to learn that the server validates fields
itself (so ``kubectl create -f`` / ``replace -f`` skip client-side schema validation instead of
failing with "failed to download openapi"). Component schemas (for ``kubectl explain`` and
strategic-merge metadata) come in part 2 from the ``kubernetes-validate`` definitions.

Invariant: documents are built from the ResourceRegistry, so they always match discovery;
the hash in each ``serverRelativeURL`` changes whenever that group-version's document does.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sampan.apiserver.negotiation import dump_json
from sampan.version import KUBERNETES_VERSION

__all__ = ["group_version_document", "openapi_v3_index"]

_QUERY_PARAMETERS = ("dryRun", "fieldManager", "fieldValidation", "pretty")
_VERB_OPERATIONS = {"get": "get", "update": "put", "patch": "patch", "delete": "delete"}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def group_version_document(registry: Any, group: str, version: str) -> dict[str, Any] | None:
    infos = registry.resources_for(group, version)
    if not infos:
        return None
    parameters = [
        {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for name in _QUERY_PARAMETERS
    ]
    paths: dict[str, Any] = {}
    for info in sorted(infos, key=lambda i: i.plural):
        gvk = {"group": info.group, "version": info.version, "kind": info.kind}
        prefix = "/" + _gv_path(group, version)
        if info.namespaced:
            prefix += "/namespaces/{namespace}"
        operations: dict[str, Any] = {}
        for verb, method in _VERB_OPERATIONS.items():
            if verb in info.verbs:
                operations[method] = {
                    "operationId": f"{method}{info.kind}",
                    "parameters": parameters,
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": verb if verb != "get" else "get",
                    "x-kubernetes-group-version-kind": gvk,
                }
        if operations:
            paths[f"{prefix}/{info.plural}/{{name}}"] = operations
        if "create" in info.verbs:
            paths[f"{prefix}/{info.plural}"] = {
                "post": {
                    "operationId": f"create{info.kind}",
                    "parameters": parameters,
                    "responses": {"201": {"description": "Created"}},
                    "x-kubernetes-action": "post",
                    "x-kubernetes-group-version-kind": gvk,
                }
            }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {},
    }


def openapi_v3_index(registry: Any) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    versions: list[tuple[str, str]] = [("", "v1")]
    for group in registry.groups():
        if group.name:
            versions.extend((group.name, v) for v in group.versions)
    for group_name, version in versions:
        document = group_version_document(registry, group_name, version)
        if document is None:
            continue
        digest = hashlib.sha512(dump_json(document)).hexdigest()[:128].upper()
        gv_path = _gv_path(group_name, version)
        paths[gv_path] = {"serverRelativeURL": f"/openapi/v3/{gv_path}?hash={digest}"}
    return {"paths": paths}
