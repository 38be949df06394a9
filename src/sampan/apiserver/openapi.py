"""OpenAPI documents (v2 and v3) and the schema lookup the patch paths use.

Owns ``/openapi/v2`` (swagger 2.0, in JSON or as gnostic protobuf: ``openapi_pb``),
``/openapi/v3`` (the index of group-versions) and ``/openapi/v3/<api|apis/g>/<v>`` (one
document per group-version), and ``OpenAPI``, the object behind them:

* component schemas are the Kubernetes 1.32 definitions (``openapi_data``) plus the schemas
  CustomResourceDefinitions register with ``add_crd``/``remove_crd`` (the CRD handler calls
  them when a version becomes served or goes away);
* ``schema_for(group, version, kind)`` returns a ``SchemaView`` of a kind's schema (built-in
  or CRD) for strategic merge patch, server-side apply and field validation; ``None`` for a
  kind without one;
* each group-version document lists the resources' paths with their operations, the
  ``x-kubernetes-group-version-kind``/``x-kubernetes-action`` extensions, the path
  parameters (``namespace``, ``name``) and each operation's query parameters as upstream
  lists them (the list options, the write options with ``fieldValidation``, which kubectl
  1.32 reads to leave validation to the server, the delete options), the patch media
  types each resource accepts (kubectl computes a client-side strategic merge patch from
  these schemas only when the patch operation lists
  ``application/strategic-merge-patch+json``, which custom kinds never do), and the component
  schemas reachable from the group-version's kinds, which is what ``kubectl explain`` and
  kubectl's patch computation look up;
* ``v3_response`` and ``v2_response`` answer with kube-apiserver's caching headers: an ETag
  (SHA-512 of the JSON) on every document, ``Cache-Control: public, immutable`` on a hashed
  v3 URL, a 301 from a stale hash to the current one, and a 304 to an ``If-None-Match``
  naming the current ETag (kubectl's HTTP cache revalidates that way).

Invariants: documents are built from the ResourceRegistry, so they always match discovery;
a document is rebuilt (and re-encoded) only when its group-version's resources or its own
CRD schemas change, and the hash in each ``serverRelativeURL`` changes exactly when the
document does. All of it runs on the event loop (no locking needed beyond ``_lock`` for the
CRD tables); the first build of every document costs ~0.1 s of CPU, later requests are
cached bytes.
"""

from __future__ import annotations

import copy
import hashlib
import html
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sampan.apiserver.negotiation import dump_json
from sampan.apiserver.openapi_data import (
    REF_PREFIX_V3,
    V3_PUBLISHED,
    SchemaView,
    load_definitions,
    to_v2,
)
from sampan.apiserver.openapi_pb import encode_document
from sampan.version import KUBERNETES_VERSION

__all__ = [
    "OBJECT_META",
    "DocumentResponse",
    "OpenAPI",
    "crd_definition_name",
]

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"


def _query(name: str, type_: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": type_, "uniqueItems": True}}


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "uniqueItems": True},
    }


# The query parameters of each operation, as kube-apiserver's v3 documents list them; the
# path parameters and ``pretty`` are declared once per path.
_WRITE_PARAMETERS = [_query("dryRun"), _query("fieldManager"), _query("fieldValidation")]
_OPERATION_PARAMETERS: dict[str, list[dict[str, Any]]] = {
    "get": [],
    "put": _WRITE_PARAMETERS,
    "post": _WRITE_PARAMETERS,
    "patch": [*_WRITE_PARAMETERS, _query("force", "boolean")],
    "delete": [
        _query("dryRun"),
        _query("gracePeriodSeconds", "integer"),
        _query("orphanDependents", "boolean"),
        _query("propagationPolicy"),
    ],
    "list": [
        _query("allowWatchBookmarks", "boolean"),
        _query("continue"),
        _query("fieldSelector"),
        _query("labelSelector"),
        _query("limit", "integer"),
        _query("resourceVersion"),
        _query("resourceVersionMatch"),
        _query("sendInitialEvents", "boolean"),
        _query("timeoutSeconds", "integer"),
        _query("watch", "boolean"),
    ],
}
_NAMESPACE_PARAMETER = _path_parameter(
    "namespace", "object name and auth scope, such as for teams and projects"
)
_PRETTY_PARAMETER = _query("pretty")
_ITEM_OPERATIONS = (
    ("get", "get", "read"),
    ("put", "update", "replace"),
    ("patch", "patch", "patch"),
    ("delete", "delete", "delete"),
)
_API_VERSION_DESCRIPTION = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values."
)
_KIND_DESCRIPTION = (
    "Kind is a string value representing the REST resource this object represents. Servers "
    "may infer this from the endpoint the client submits requests to. In CamelCase."
)


NO_CACHE = "no-cache, private"
"""Cache-Control kube-apiserver adds to every response that sets none."""


@dataclass(frozen=True)
class DocumentResponse:
    """One answer for an OpenAPI URL: body, headers beyond Content-Type, status."""

    body: bytes
    headers: dict[str, str]
    status: int = 200


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, ``*`` matches
    anything), as Go's ``http.ServeContent`` decides a 304."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == f'"{etag}"':
            return True
    return False


def _conditional(response: DocumentResponse, if_none_match: str | None) -> DocumentResponse:
    etag = response.headers["ETag"].strip('"')
    if _matches(if_none_match, etag):
        return DocumentResponse(b"", response.headers, 304)
    return response


def _a_year_ahead() -> str:
    """``Expires`` of a hashed (content-addressed) document: a year from now, in the
    RFC 1123 form kube-apiserver writes."""
    moment = datetime.now(UTC)
    try:
        moment = moment.replace(year=moment.year + 1)
    except ValueError:  # 29 February
        moment = moment.replace(year=moment.year + 1, day=28)
    return moment.strftime("%a, %d %b %Y %H:%M:%S UTC")


def crd_definition_name(group: str, version: str, kind: str) -> str:
    """Definition name of a custom kind: the group reversed, as kube-apiserver names them."""
    reversed_group = ".".join(reversed(group.split(".")))
    return f"{reversed_group}.{version}.{kind}"


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX_V3):
            found.add(ref[len(REF_PREFIX_V3) :])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


class OpenAPI:
    """The served definitions and documents; one per API server.

    Build it with ``OpenAPI(registry, definitions)`` where ``definitions`` comes from
    ``openapi_data.load_definitions()`` (blocking; the server loads it in a thread)."""

    def __init__(self, registry: Any, definitions: dict[str, dict[str, Any]] | None = None) -> None:
        self._registry = registry
        self._builtin = definitions if definitions is not None else load_definitions()
        self._crds: dict[str, dict[str, Any]] = {}
        self._gvk: dict[tuple[str, str, str], str] = {}
        for name, schema in self._builtin.items():
            for gvk in schema.get("x-kubernetes-group-version-kind") or ():
                key = (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))
                self._gvk.setdefault(key, name)
        self._crd_gvk: dict[tuple[str, str, str], str] = {}
        self._crd_revision: dict[str, int] = {}  # definition name -> revision of its schema
        self._views: dict[str, SchemaView] = {}  # definition name -> its memoizing view
        self._generation = 0
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[Any, dict[str, Any], str, bytes]] = {}
        self._v2_cache: tuple[Any, bytes] | None = None
        self._v2_etag_cache: tuple[bytes, str] | None = None
        self._v2_protobuf_cache: tuple[Any, bytes] | None = None

    # --- schemas --------------------------------------------------------------------------

    def definition(self, name: str) -> dict[str, Any] | None:
        return self._crds.get(name) or self._builtin.get(name)

    def definition_name(self, group: str, version: str, kind: str) -> str | None:
        key = (group, version, kind)
        return self._crd_gvk.get(key) or self._gvk.get(key)

    def is_custom(self, group: str, version: str, kind: str) -> bool:
        """Whether the kind's schema came from a CRD (add_crd)."""
        return (group, version, kind) in self._crd_gvk

    def schema_for(self, group: str, version: str, kind: str) -> SchemaView | None:
        """The schema of a kind (built-in or CRD), or None when none is known."""
        name = self.definition_name(group, version, kind)
        if name is None:
            return None
        view = self._views.get(name)
        if view is not None:
            return view
        schema = self.definition(name)
        if schema is None:
            return None
        view = SchemaView(schema, self.definition)
        self._views[name] = view
        return view

    def add_crd(self, group: str, version: str, kind: str, schema: dict[str, Any] | None) -> None:
        """Register (or replace) a CRD version's ``openAPIV3Schema``; None = no schema
        (the kind is then served with a schema that preserves unknown fields)."""
        name = crd_definition_name(group, version, kind)
        body = copy.deepcopy(schema) if isinstance(schema, dict) else {}
        if not body:
            body = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        body.setdefault("type", "object")
        properties = body.setdefault("properties", {})
        properties["apiVersion"] = {"description": _API_VERSION_DESCRIPTION, "type": "string"}
        properties["kind"] = {"description": _KIND_DESCRIPTION, "type": "string"}
        properties["metadata"] = {
            "allOf": [{"$ref": REF_PREFIX_V3 + OBJECT_META}],
            "description": "Standard object's metadata.",
        }
        body["x-kubernetes-group-version-kind"] = [
            {"group": group, "version": version, "kind": kind}
        ]
        list_name = name + "List"
        list_body = {
            "description": f"{kind}List is a list of {kind}",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"description": _API_VERSION_DESCRIPTION, "type": "string"},
                "items": {
                    "description": f"List of {kind.lower()}s.",
                    "type": "array",
                    "items": {"$ref": REF_PREFIX_V3 + name},
                },
                "kind": {"description": _KIND_DESCRIPTION, "type": "string"},
                "metadata": {
                    "allOf": [{"$ref": REF_PREFIX_V3 + LIST_META}],
                    "description": "Standard list metadata.",
                },
            },
            "x-kubernetes-group-version-kind": [
                {"group": group, "version": version, "kind": kind + "List"}
            ],
        }
        with self._lock:
            self._generation += 1
            self._crds[name] = body
            self._crds[list_name] = list_body
            self._crd_gvk[(group, version, kind)] = name
            self._crd_gvk[(group, version, kind + "List")] = list_name
            self._crd_revision[name] = self._generation
            self._views.clear()  # views of other kinds may have resolved the old schema

    def remove_crd(self, group: str, version: str, kind: str) -> None:
        name = crd_definition_name(group, version, kind)
        with self._lock:
            self._crds.pop(name, None)
            self._crds.pop(name + "List", None)
            self._crd_gvk.pop((group, version, kind), None)
            self._crd_gvk.pop((group, version, kind + "List"), None)
            self._crd_revision.pop(name, None)
            self._views.clear()
            self._generation += 1

    def _closure(self, roots: Iterable[str]) -> dict[str, dict[str, Any]]:
        todo = [r for r in roots]
        found: dict[str, dict[str, Any]] = {}
        while todo:
            name = todo.pop()
            if name in found:
                continue
            schema = self.definition(name)
            if schema is None:
                continue
            found[name] = schema
            refs: set[str] = set()
            _refs(schema, refs)
            todo.extend(refs - found.keys())
        return dict(sorted(found.items()))

    # --- documents ------------------------------------------------------------------------

    def _cache_key(self, infos: list[Any]) -> Any:
        # Built-in documents never reference CRD schemas: only a custom kind's own schema
        # revision invalidates a document, so a CRD change rebuilds its group-version alone.
        return tuple(
            (
                i.plural,
                i.kind,
                i.namespaced,
                tuple(i.verbs),
                self._crd_revision.get(crd_definition_name(i.group, i.version, i.kind), 0),
            )
            for i in infos
        )

    def _cached_document(
        self, group: str, version: str
    ) -> tuple[Any, dict[str, Any], str, bytes] | None:
        """(cache key, document, hash, JSON bytes), rebuilt only when the key changes."""
        infos = sorted(self._registry.resources_for(group, version), key=lambda i: i.plural)
        if not infos:
            return None
        key = self._cache_key(infos)
        cached = self._cache.get((group, version))
        if cached is not None and cached[0] == key:
            return cached
        document = self._build_document(group, version, infos)
        body = dump_json(document)
        digest = hashlib.sha512(body).hexdigest().upper()
        cached = (key, document, digest, body)
        self._cache[(group, version)] = cached
        return cached

    def _build_document(self, group: str, version: str, infos: list[Any]) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        roots: list[str] = []
        for info in infos:
            gvk = {"group": info.group, "version": info.version, "kind": info.kind}
            definition = self.definition_name(info.group, info.version, info.kind)
            list_definition = self.definition_name(info.group, info.version, info.kind + "List")
            for name in (definition, list_definition):
                if name is not None:
                    roots.append(name)
            roots.append(PATCH_DEFINITION)
            content = _content(definition)
            prefix = "/" + _gv_path(group, version)
            if info.namespaced:
                prefix += "/namespaces/{namespace}"
            operations: dict[str, Any] = {}
            custom = self.is_custom(info.group, info.version, info.kind)
            for method, verb, action in _ITEM_OPERATIONS:
                if verb in info.verbs:
                    operations[method] = {
                        "operationId": f"{action}{info.kind}",
                        "parameters": _OPERATION_PARAMETERS[method],
                        "responses": {"200": {"description": "OK", **content}},
                        "x-kubernetes-action": "put" if verb == "update" else verb,
                        "x-kubernetes-group-version-kind": gvk,
                    }
                    if method == "patch":
                        # kubectl computes a strategic merge patch client-side only when the
                        # operation lists that media type (never for custom resources).
                        operations[method]["requestBody"] = _patch_body(custom=custom)
                    elif method == "put" and content:
                        operations[method]["requestBody"] = content
            scope = [_NAMESPACE_PARAMETER] if info.namespaced else []
            if operations:
                name_parameter = _path_parameter("name", f"name of the {info.kind}")
                operations["parameters"] = [name_parameter, *scope, _PRETTY_PARAMETER]
                paths[f"{prefix}/{info.plural}/{{name}}"] = operations
            collection: dict[str, Any] = {}
            if "list" in info.verbs:
                collection["get"] = {
                    "operationId": f"list{info.kind}",
                    "parameters": _OPERATION_PARAMETERS["list"],
                    "responses": {"200": {"description": "OK", **_content(list_definition)}},
                    "x-kubernetes-action": "list",
                    "x-kubernetes-group-version-kind": gvk,
                }
            if "create" in info.verbs:
                collection["post"] = {
                    "operationId": f"create{info.kind}",
                    "parameters": _OPERATION_PARAMETERS["post"],
                    "responses": {"201": {"description": "Created", **content}},
                    "x-kubernetes-action": "post",
                    "x-kubernetes-group-version-kind": gvk,
                }
                if content:
                    collection["post"]["requestBody"] = content
            if collection:
                collection["parameters"] = [*scope, _PRETTY_PARAMETER]
                paths[f"{prefix}/{info.plural}"] = collection
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
            "paths": paths,
            "components": {
                "schemas": {n: V3_PUBLISHED.get(n, s) for n, s in self._closure(roots).items()}
            },
        }

    def v3_index(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        versions: list[tuple[str, str]] = [("", "v1")]
        for group in self._registry.groups():
            if group.name:
                versions.extend((group.name, v) for v in group.versions)
        for group_name, version in versions:
            cached = self._cached_document(group_name, version)
            if cached is None:
                continue
            gv_path = _gv_path(group_name, version)
            paths[gv_path] = {"serverRelativeURL": f"/openapi/v3/{gv_path}?hash={cached[2]}"}
        return {"paths": paths}

    def v3_response(
        self, path: str, requested_hash: str | None, if_none_match: str | None = None
    ) -> DocumentResponse | None:
        """What to answer for a v3 URL, as kube-apiserver does: the document with its ETag
        (the SHA-512 of its JSON) and ``Vary: Accept``; when the URL carries the current hash,
        also ``Cache-Control: public, immutable`` and an ``Expires`` a year ahead (kubectl's
        HTTP cache then skips the download next time); a 301 to the current hash's URL for a
        stale hash; a 304 without a body when ``If-None-Match`` names the ETag; or None
        (404)."""
        parts = path.strip("/").split("/")[2:]
        if not parts:
            body = dump_json(self.v3_index())
            etag = hashlib.sha512(body).hexdigest().upper()
            headers = {"Cache-Control": NO_CACHE, "ETag": f'"{etag}"'}
            return _conditional(DocumentResponse(body, headers), if_none_match)
        cached = None
        if len(parts) == 2 and parts[0] == "api":
            cached = self._cached_document("", parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            cached = self._cached_document(parts[1], parts[2])
        if cached is None:
            return None
        digest = cached[2]
        headers = {"Vary": "Accept", "ETag": f'"{digest}"'}
        if requested_hash is None:
            headers["Cache-Control"] = NO_CACHE
            return _conditional(DocumentResponse(cached[3], headers), if_none_match)
        if requested_hash != digest:
            gv_path = "/".join(parts)
            location = f"/openapi/v3/{gv_path}?hash={digest}"
            headers["Location"] = location
            headers["Cache-Control"] = NO_CACHE
            body = f'<a href="{html.escape(location)}">Moved Permanently</a>.\n\n'.encode()
            return DocumentResponse(body, headers, 301)
        headers["Cache-Control"] = "public, immutable"
        headers["Expires"] = _a_year_ahead()
        return _conditional(DocumentResponse(cached[3], headers), if_none_match)

    def v2_response(self, *, protobuf: bool, if_none_match: str | None = None) -> DocumentResponse:
        """``/openapi/v2`` in JSON or protobuf with kube-apiserver's headers: the ETag is the
        SHA-512 of the JSON form for both encodings, ``Vary: Accept``, and a 304 without a
        body when ``If-None-Match`` names the ETag."""
        etag = self._v2_etag()
        headers = {"Vary": "Accept", "ETag": f'"{etag}"', "Cache-Control": NO_CACHE}
        if _matches(if_none_match, etag):
            return DocumentResponse(b"", headers, 304)
        body = self.v2_protobuf() if protobuf else self.v2_bytes()
        return DocumentResponse(body, headers)

    def _v2_etag(self) -> str:
        body = self.v2_bytes()
        if self._v2_etag_cache is None or self._v2_etag_cache[0] is not body:
            self._v2_etag_cache = (body, hashlib.sha512(body).hexdigest().upper())
        return self._v2_etag_cache[1]

    def v2_bytes(self) -> bytes:
        """The swagger 2.0 document: every served kind's definitions, JSON-encoded."""
        key, infos = self._v2_key()
        if self._v2_cache is not None and self._v2_cache[0] == key:
            return self._v2_cache[1]
        body = dump_json(self._v2_document(infos))
        self._v2_cache = (key, body)
        return body

    def v2_protobuf(self) -> bytes:
        """The same document as ``openapi.v2.Document`` protobuf (what client-go asks for)."""
        key, infos = self._v2_key()
        if self._v2_protobuf_cache is not None and self._v2_protobuf_cache[0] == key:
            return self._v2_protobuf_cache[1]
        body = encode_document(self._v2_document(infos))
        self._v2_protobuf_cache = (key, body)
        return body

    def _v2_key(self) -> tuple[Any, list[Any]]:
        infos = sorted(self._registry.all(), key=lambda i: (i.group, i.version, i.plural))
        return (self._cache_key(infos), tuple((i.group, i.version) for i in infos)), infos

    def _v2_document(self, infos: list[Any]) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        roots: list[str] = []
        for info in infos:
            name = self.definition_name(info.group, info.version, info.kind)
            list_name = self.definition_name(info.group, info.version, info.kind + "List")
            roots.extend(n for n in (name, list_name) if n)
            gvk = {"group": info.group, "version": info.version, "kind": info.kind}
            prefix = "/" + _gv_path(info.group, info.version)
            if info.namespaced:
                prefix += "/namespaces/{namespace}"
            ops: dict[str, Any] = {}
            custom = self.is_custom(info.group, info.version, info.kind)
            for method, verb, action in _ITEM_OPERATIONS:
                if verb in info.verbs:
                    ops[method] = {
                        "operationId": f"{action}{info.kind}",
                        "responses": {"200": _v2_response(name)},
                        "x-kubernetes-action": "put" if verb == "update" else verb,
                        "x-kubernetes-group-version-kind": gvk,
                    }
                    if method == "patch":
                        ops[method]["consumes"] = list(_patch_media_types(custom=custom))
            if ops:
                paths[f"{prefix}/{info.plural}/{{name}}"] = ops
        definitions = {n: to_v2(s) for n, s in self._closure(roots).items()}
        return {
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
            "paths": paths,
            "definitions": definitions,
        }


PATCH_DEFINITION = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"


def _patch_media_types(*, custom: bool) -> tuple[str, ...]:
    if custom:
        return (
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        )
    return (
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    )


def _patch_body(*, custom: bool) -> dict[str, Any]:
    schema = {"$ref": REF_PREFIX_V3 + PATCH_DEFINITION}
    return {
        "content": {t: {"schema": schema} for t in _patch_media_types(custom=custom)},
        "required": True,
    }


def _content(definition: str | None) -> dict[str, Any]:
    if definition is None:
        return {}
    schema = {"$ref": REF_PREFIX_V3 + definition}
    return {
        "content": {
            "application/json": {"schema": schema},
            "application/yaml": {"schema": schema},
        }
    }


def _v2_response(definition: str | None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": "OK"}
    if definition is not None:
        response["schema"] = {"$ref": "#/definitions/" + definition}
    return response
