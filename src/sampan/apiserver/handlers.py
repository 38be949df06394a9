"""Resource handlers: one coroutine per verb over the storage layer's ResourceStore.

Owns the REST semantics kube-apiserver's generic handlers give a resource URL: reading and
checking the body (kind/apiVersion/namespace/name against the URL), dryRun, delete options,
patch application, conversion between the served version and the storage version (for a CRD
whose conversion strategy is ``Webhook``, through its webhook, awaited before the synchronous
renderers see the objects: ``_in_version``; ``_converted_already`` guards the rest), admission,
response codes (201 on create, 200/202 on delete...), and the subresources served in part 1:
status, scale, pods/binding, namespaces/finalize, plus the review kinds that are computed
instead of stored (selfsubjectreviews, selfsubjectaccessreviews, subjectaccessreviews,
localsubjectaccessreviews).

Invariants: every write goes through admission before the store is called; a failed request
writes nothing (patches are applied inside the store's get-mutate-CAS loop); objects reach the
store in the storage version and leave in the requested one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sampan.api import fielderrors, jsonwire
from sampan.api.errors import (
    BadRequest,
    Conflict,
    Invalid,
    MethodNotSupported,
    NotFound,
)
from sampan.api.jsonwire import copy_json
from sampan.api.typecheck import go_format_value
from sampan.apiserver import watch as watch_stream
from sampan.apiserver.admission import (
    AdmissionAttributes,
    AdmissionChain,
    admitted_update,
    warning_header,
    warning_text_ok,
)
from sampan.apiserver.apply import FieldManager, decode_apply_patch
from sampan.apiserver.audit import record_request_object, record_request_patch
from sampan.apiserver.auth.user import AuthenticationError
from sampan.apiserver.binding import bind_pod
from sampan.apiserver.crd import scale as crd_scale
from sampan.apiserver.crd.conversion import ConversionFailed
from sampan.apiserver.negotiation import (
    PROTOBUF_CONTENT_TYPE,
    check_acceptable,
    decode_object,
    dump_json,
    media_type_of,
    parse_accept,
    read_body,
)
from sampan.apiserver.openapi_data import builtin_type_error
from sampan.apiserver.patch import (
    APPLY_PATCH,
    STRATEGIC_MERGE_PATCH,
    apply_patch,
    check_patch_type,
)
from sampan.apiserver.requestinfo import RequestInfo, query_flag, query_int
from sampan.apiserver.responses import Renderer, json_response, status_success, stream_json

__all__ = [
    "RESOURCE_NOT_FOUND",
    "ResourceHandler",
    "not_found",
]

if TYPE_CHECKING:
    from sampan.api.fields import FieldSelector
    from sampan.api.labels import Selector
    from sampan.api.resources import ResourceInfo, ResourceRegistry, SubresourceInfo
    from sampan.apiserver.auth import Attributes, Decision, UserInfo
    from sampan.apiserver.crd import CustomResources
    from sampan.apiserver.openapi import OpenAPI
    from sampan.apiserver.storage import DeleteOptions, ResourceStore, Storage

log = logging.getLogger(__name__)

RESOURCE_NOT_FOUND = "the server could not find the requested resource"
COMPONENT_STATUS_WARNING = '299 - "v1 ComponentStatus is deprecated in v1.19+"'
"""The deprecation warning kube-apiserver sends with componentstatuses (kubectl prints it)."""
METHOD_NOT_ALLOWED = "the server does not allow this method on the requested resource"

# Kinds whose registry returns the deleted object rather than a Status on immediate deletion
# (kube-apiserver's ReturnDeletedObject).
_RETURNS_DELETED_OBJECT = frozenset({("", "pods"), ("", "services"), ("", "namespaces")})

_REVIEW_RESOURCES = frozenset(
    {
        ("authentication.k8s.io", "selfsubjectreviews"),
        ("authorization.k8s.io", "selfsubjectaccessreviews"),
        ("authorization.k8s.io", "subjectaccessreviews"),
        ("authorization.k8s.io", "localsubjectaccessreviews"),
        ("authorization.k8s.io", "selfsubjectrulesreviews"),
        ("authentication.k8s.io", "tokenreviews"),
    }
)
_CREATE_ON_UPDATE = frozenset(
    {
        ("", "endpoints"),
        ("", "events"),
        ("events.k8s.io", "events"),
        ("", "limitranges"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
    }
)
"""Kinds whose upstream strategy allows create-on-update (PUT of a missing object -> 201)."""
_STRATEGY_SUBRESOURCES = frozenset(
    {
        ("", "pods", "ephemeralcontainers"),
        ("certificates.k8s.io", "certificatesigningrequests", "approval"),
    }
)
"""Subresources that read and write the whole object through their own update strategy."""
_SCALABLE = frozenset(
    {
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("", "replicationcontrollers"),
    }
)


def not_found() -> NotFound:
    return NotFound(RESOURCE_NOT_FOUND)


def method_not_allowed() -> MethodNotSupported:
    return MethodNotSupported(METHOD_NOT_ALLOWED)


@dataclass
class HandlerContext:
    """What handlers need from the server; built once by the APIServer."""

    registry: ResourceRegistry
    storage: Storage
    admission: AdmissionChain
    max_body_bytes: int
    watches: watch_stream.WatchTracker  # the server's open watches (stop() ends them)
    authorize: Callable[[Attributes], Decision]  # for access reviews
    make_attributes: Callable[..., Attributes]
    delete_options_type: type[DeleteOptions]
    label_selector: Callable[[str], Selector]
    field_selector: Callable[[ResourceInfo, str], FieldSelector]
    convert: Callable[[ResourceInfo, dict[str, Any], ResourceInfo], dict[str, Any]] | None
    rules_for: Callable[[UserInfo, str], tuple[list[dict[str, Any]], list[dict[str, Any]], bool]]
    authenticate_token: Callable[[str], Awaitable[UserInfo | None]]
    api_audiences: tuple[str, ...]
    datastore_health: Callable[[], Awaitable[tuple[bool, str]]]
    openapi: OpenAPI | None = None  # schemas for strategic merge patch and apply
    custom: CustomResources | None = None  # CRDs: body preparation, printer columns, scale
    # Computed subresources (serviceaccounts/token, pods/eviction; pod proxy paths):
    # (group, plural, subresource) -> handler(request, ri, info, namespace, user).
    subresources: dict[tuple[str, str, str], Callable[..., Any]] = field(default_factory=dict)


class ResourceHandler:
    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self._fields = FieldManager(ctx.openapi)  # managedFields, apply, patch schemas
        # Typed decoding of built-in kinds (needs the definitions the OpenAPI holds).
        self._typed = ctx.openapi is not None

    # --- dispatch -----------------------------------------------------------------------

    async def handle(
        self, request: web.Request, ri: RequestInfo, user: UserInfo
    ) -> web.StreamResponse:
        info = self.ctx.registry.by_resource(ri.api_group, ri.api_version, ri.resource)
        if info is None:
            raise not_found()
        namespace = ri.namespace
        if info.group == "" and info.plural == "namespaces":
            namespace = ""
        elif not info.namespaced and namespace:
            raise not_found()
        if info.namespaced and not namespace:
            if ri.path_name:
                raise not_found()
            if ri.verb not in ("list", "watch"):
                raise method_not_allowed()
        if not ri.subresource:  # as upstream, the answer's media type is settled first
            check_acceptable(request.headers.get("Accept", ""))
        if (info.group, info.plural) in _REVIEW_RESOURCES and not ri.subresource:
            if ri.verb != "create":
                raise method_not_allowed()
            return await self._review(request, ri, info, namespace, user)
        if (info.group, info.plural) == ("", "componentstatuses") and not ri.subresource:
            return await self._component_statuses(request, ri, info)
        if (info.group, info.plural) == ("", "bindings") and not ri.subresource:
            if ri.verb != "create":
                raise method_not_allowed()
            return await self._bind(request, ri, info, namespace or None, user)
        if ri.subresource:
            sub = info.subresource(ri.subresource)
            if sub is None:
                raise not_found()
            verb = "get" if ri.verb in ("get", "list") else ri.verb
            if verb not in sub.verbs:
                raise method_not_allowed()
            return await self._subresource(request, ri, info, sub, namespace, user)
        if ri.verb not in info.verbs or not info.stored:
            raise method_not_allowed()
        if ri.verb in ("update", "patch") and not ri.path_name:
            raise method_not_allowed()
        if ri.verb == "create" and ri.path_name:
            raise method_not_allowed()
        call: dict[str, Callable[..., Awaitable[web.StreamResponse]]] = {
            "get": self._get,
            "list": self._list,
            "watch": self._watch,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._delete_collection,
        }
        handler = call.get(ri.verb)
        if handler is None:
            raise method_not_allowed()
        return await handler(request, ri, info, namespace or None, user)

    # --- helpers ------------------------------------------------------------------------

    def _storage_info(self, info: ResourceInfo) -> ResourceInfo:
        if info.storage_version == info.api_version:
            return info
        storage_info = self.ctx.registry.by_kind(info.storage_version, info.kind)
        return storage_info or info

    def _store(self, info: ResourceInfo) -> ResourceStore:
        return self.ctx.storage.for_resource(self._storage_info(info))

    def _to_request_version(
        self, info: ResourceInfo
    ) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        storage_info = self._storage_info(info)
        if storage_info is info or self.ctx.convert is None:
            return None
        if self._webhook_converted(info):
            return lambda obj: _converted_already(obj, info.api_version)
        convert = self.ctx.convert
        return lambda obj: convert(storage_info, obj, info)

    def _to_storage_version(self, info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        storage_info = self._storage_info(info)
        if storage_info is info or self.ctx.convert is None:
            return obj
        if self._webhook_converted(info):
            return _converted_already(obj, info.storage_version)
        return self.ctx.convert(info, obj, storage_info)

    # A custom resource whose CRD converts through a webhook is converted asynchronously
    # (``_in_version``) before the synchronous converters above see it; they only check.

    def _webhook_converted(self, info: ResourceInfo) -> bool:
        custom = self.ctx.custom
        return custom is not None and custom.conversion_webhook(info) is not None

    async def _in_version(
        self, info: ResourceInfo, objs: list[dict[str, Any]], api_version: str = ""
    ) -> list[dict[str, Any]]:
        """``objs`` of ``info``'s resource in ``api_version`` (default: ``info``'s), through
        the CRD's conversion webhook when it has one (unchanged otherwise)."""
        if self.ctx.custom is None or not self._webhook_converted(info):
            return objs
        return await self.ctx.custom.convert(info, objs, api_version or info.api_version)

    def _event_converter(
        self, info: ResourceInfo
    ) -> Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]] | None:
        if not self._webhook_converted(info):
            return None

        async def convert(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
            if event_type == "BOOKMARK":  # metadata only: nothing for the webhook to convert
                return {**obj, "apiVersion": info.api_version}
            return (await self._in_version(info, [obj]))[0]

        return convert

    async def _in_storage_version(self, info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        return (await self._in_version(info, [obj], info.storage_version))[0]

    def _renderer(self, request: web.Request, info: ResourceInfo) -> Renderer:
        output = parse_accept(request.headers.get("Accept", ""))
        include = request.query.get("includeObject", "")
        if self.ctx.custom is not None:
            custom = self.ctx.custom.renderer(
                info,
                output,
                self._to_request_version(info),
                include_object=include or "Metadata",
                request=request,
            )
            if custom is not None:
                return custom
        return Renderer(
            info,
            output,
            self._to_request_version(info),
            include_object=include or "Metadata",
        )

    def _prepare_body(
        self,
        request: web.Request,
        info: ResourceInfo,
        obj: dict[str, Any],
        operation: str,
        subresource: str = "",
    ) -> dict[str, Any]:
        """fieldValidation, and for custom resources pruning, defaulting and schema checks."""
        if self.ctx.custom is None:
            return obj
        return self.ctx.custom.prepare_body(
            request, info, obj, operation=operation, subresource=subresource
        )

    async def _respond(
        self, request: web.Request, info: ResourceInfo, obj: dict[str, Any], status: int = 200
    ) -> web.Response:
        (obj,) = await self._in_version(info, [obj])
        return json_response(self._renderer(request, info).object_bytes(obj), status)

    async def _read_object(
        self,
        request: web.Request,
        info: ResourceInfo,
        expected_kind: str | None = None,
        expected_api_version: str | None = None,
    ) -> dict[str, Any]:
        body = await read_body(request, self.ctx.max_body_bytes)
        kind = expected_kind or info.kind
        api_version = expected_api_version or info.api_version
        obj = decode_object(body, media_type_of(request), kind)
        body_api_version = obj.get("apiVersion") or ""
        body_kind = obj.get("kind") or ""
        if body_api_version and body_api_version != api_version:
            raise BadRequest(
                f"the API version in the data ({body_api_version}) does not match the "
                f"expected API version ({api_version})"
            )
        if body_kind and body_kind != kind:
            version = body_api_version.rpartition("/")[2] or info.version
            raise BadRequest(
                f'{body_kind} in version "{version}" cannot be handled as a {kind}: '
                f"the kind in the data ({body_kind}) does not match the expected kind ({kind})"
            )
        # Fewer brackets than the bound cannot nest deeper than it (protobuf has no brackets).
        few_brackets = body.count(b"{") + body.count(b"[") <= jsonwire.MAX_OBJECT_DEPTH
        if not few_brackets or media_type_of(request) == PROTOBUF_CONTENT_TYPE:
            try:
                jsonwire.check_object_depth(obj)
            except jsonwire.DecodeError as exc:
                raise self._decode_error(api_version, kind, str(exc)) from exc
        error = self._type_error(api_version, kind, obj)
        if error is not None:
            raise self._decode_error(api_version, kind, error)
        obj["apiVersion"] = api_version
        obj["kind"] = kind
        metadata = obj.get("metadata")
        if metadata is None:
            metadata = obj["metadata"] = {}
        if not isinstance(metadata, dict):
            raise BadRequest(
                f"the object provided is unrecognized (must be of type {kind}): "
                "metadata must be an object"
            )
        record_request_object(request, obj, body)
        return obj

    def _type_error(
        self, api_version: str, kind: str, obj: dict[str, Any], *, unstructured: bool = False
    ) -> str | None:
        """The typed decoder's error for a built-in kind's object (None: it decodes, or the
        kind is a custom resource, judged by its CRD schema instead)."""
        if not self._typed:
            return None
        return builtin_type_error(api_version, kind, obj, unstructured=unstructured)

    @staticmethod
    def _decode_error(api_version: str, kind: str, error: str) -> BadRequest:
        version = api_version.rpartition("/")[2]
        return BadRequest(f'{kind} in version "{version}" cannot be handled as a {kind}: {error}')

    def _check_patched(
        self, info: ResourceInfo, patched: dict[str, Any], patch_type: str, body: bytes
    ) -> None:
        """The patched object must decode as the kind does (upstream decodes it into the
        typed struct): an apply configuration that does not fit answers 400, any other
        patch 422 with the decoder's error on ``patch`` (as kube-apiserver's patcher). A
        strategic merge patch result goes through upstream's map-to-struct converter
        instead of the JSON decoder: its rules and words, and the patch shown as Go's %+v."""
        strategic = patch_type == STRATEGIC_MERGE_PATCH
        try:
            jsonwire.check_object_depth(patched)
            error = self._type_error(info.api_version, info.kind, patched, unstructured=strategic)
        except jsonwire.DecodeError as exc:
            error = str(exc)
        if error is None:
            return
        if patch_type == APPLY_PATCH:
            raise self._decode_error(info.api_version, info.kind, error)
        if strategic:
            shown = go_format_value(jsonwire.loads(body))
        else:
            shown = dump_json(patched).decode()
        raise Invalid.for_object("", "", "", [fielderrors.invalid("patch", shown, error)])

    @staticmethod
    def _check_namespace(obj: dict[str, Any], info: ResourceInfo, namespace: str | None) -> None:
        metadata = obj["metadata"]
        if not info.namespaced:
            metadata.pop("namespace", None)
            return
        body_namespace = metadata.get("namespace") or ""
        if body_namespace and body_namespace != namespace:
            raise BadRequest(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        metadata["namespace"] = namespace

    @staticmethod
    def _dry_run(request: web.Request, body_dry_run: Any = None) -> bool:
        values = list(request.query.getall("dryRun", []))
        if isinstance(body_dry_run, list):
            values.extend(str(v) for v in body_dry_run)
        for value in values:
            if value != "All":
                raise BadRequest(f'Invalid dryRun value: {value!r}: supported values: "All"')
        return bool(values)

    def _admission(
        self,
        operation: str,
        info: ResourceInfo,
        namespace: str | None,
        name: str,
        user: UserInfo,
        *,
        subresource: str = "",
        obj: dict[str, Any] | None = None,
        dry_run: bool = False,
        request_name: str | None = None,
    ) -> AdmissionAttributes:
        return AdmissionAttributes(
            operation=operation,
            group=info.group,
            version=info.version,
            resource=info.plural,
            subresource=subresource,
            namespace=namespace or "",
            name=name,
            namespaced=info.namespaced,
            obj=obj,
            dry_run=dry_run,
            user=user,
            request_name=request_name,
        )

    def _selectors(
        self, request: web.Request, info: ResourceInfo
    ) -> tuple[Selector | None, FieldSelector | None]:
        label_text = request.query.get("labelSelector", "")
        field_text = request.query.get("fieldSelector", "")
        labels = self.ctx.label_selector(label_text) if label_text else None
        fields = self.ctx.field_selector(info, field_text) if field_text else None
        return labels, fields

    # --- verbs --------------------------------------------------------------------------

    async def _get(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str | None,
        user: UserInfo,
    ) -> web.StreamResponse:
        resource_version = request.query.get("resourceVersion", "")
        if self._renderer(request, info).passthrough and not self._webhook_converted(info):
            # Served as stored: the cached bytes, not a parse and an encode of them.
            data = await self._store(info).get_bytes(
                namespace, ri.path_name, resource_version=resource_version
            )
            return json_response(data)
        obj = await self._store(info).get(
            namespace, ri.path_name, resource_version=resource_version
        )
        return await self._respond(request, info, obj)

    async def _list(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str | None,
        user: UserInfo,
    ) -> web.StreamResponse:
        if query_flag(request.query, "watch"):
            return await self._watch(request, ri, info, namespace, user)
        labels, fields = self._selectors(request, info)
        limit = _int_param(request, "limit", 0)
        _int_param(request, "timeoutSeconds", 0)  # decoded (and refused) as upstream does
        page = await self._store(info).list(
            namespace,
            label_selector=labels,
            field_selector=fields,
            limit=max(limit, 0),
            continue_token=request.query.get("continue", ""),
            resource_version=request.query.get("resourceVersion", ""),
            resource_version_match=request.query.get("resourceVersionMatch", ""),
        )
        items = page.items
        if self._webhook_converted(info) and items:
            converted = await self._in_version(info, [json.loads(item) for item in items])
            items = [json.dumps(o, separators=(",", ":")).encode() for o in converted]
        renderer = self._renderer(request, info)
        chunks = renderer.list_chunks(
            items,
            resource_version=page.resource_version,
            continue_token=page.continue_token,
            remaining=page.remaining,
        )
        return await stream_json(request, chunks)

    async def _watch(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str | None,
        user: UserInfo,
    ) -> web.StreamResponse:
        labels, fields = self._selectors(request, info)
        if ri.path_name:
            # Deprecated single-object watch (/watch/.../<name>): a name field selector.
            fields = self.ctx.field_selector(info, f"metadata.name={ri.path_name}")
        send_initial: bool | None = None
        if "sendInitialEvents" in request.query:
            send_initial = query_flag(request.query, "sendInitialEvents")
        events = self._store(info).watch(
            namespace,
            label_selector=labels,
            field_selector=fields,
            resource_version=request.query.get("resourceVersion", ""),
            allow_bookmarks=query_flag(request.query, "allowWatchBookmarks"),
            send_initial_events=send_initial,
        )
        timeout_s = _int_param(request, "timeoutSeconds", 0)
        return await watch_stream.serve_watch(
            request,
            events,
            self._renderer(request, info),
            timeout_s=float(timeout_s) if timeout_s > 0 else None,
            tracker=self.ctx.watches,
            convert=self._event_converter(info),
        )

    async def _create(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str | None,
        user: UserInfo,
    ) -> web.StreamResponse:
        obj = await self._read_object(request, info)
        self._check_namespace(obj, info, namespace)
        dry_run = self._dry_run(request)
        obj = self._prepare_body(request, info, obj, "CREATE")
        name = obj["metadata"].get("name") or ""
        attrs = self._admission(
            "CREATE", info, namespace, name, user, obj=obj, dry_run=dry_run, request_name=""
        )
        await self.ctx.admission.admit(attrs)
        obj = self._fields.on_write(request, info, None, attrs.obj or obj)
        if self._webhook_converted(info):
            obj = await self._in_storage_version(info, obj)
        created = await self._admitted_create(attrs, self._store(info), info, obj)
        return _warn(await self._respond(request, info, created, 201), attrs)

    async def _admitted_create(
        self,
        attrs: AdmissionAttributes,
        store: ResourceStore,
        info: ResourceInfo,
        obj: dict[str, Any],
        *,
        converted: bool = False,
    ) -> dict[str, Any]:
        """Store an admitted create; the admission hooks learn whether it happened."""
        try:
            user = attrs.user
            created = await store.create(
                obj if converted else self._to_storage_version(info, obj),
                dry_run=attrs.dry_run,
                requester=None
                if user is None
                else {
                    "username": user.name,
                    "uid": user.uid,
                    "groups": list(user.groups),
                    "extra": {k: list(v) for k, v in user.extra.items()},
                },
            )
        except BaseException:
            await self.ctx.admission.finish(attrs, ok=False)
            raise
        await self.ctx.admission.finish(attrs, ok=True)
        return created

    async def _update(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str | None,
        user: UserInfo,
        *,
        subresource: str = "",
    ) -> web.StreamResponse:
        obj = await self._read_object(request, info)
        self._check_name(obj, ri.path_name)
        self._check_namespace(obj, info, namespace)
        dry_run = self._dry_run(request)
        obj = self._prepare_body(request, info, obj, "UPDATE", subresource)
        attrs = self._admission(
            "UPDATE", info, namespace, ri.path_name, user, subresource=subresource, dry_run=dry_run
        )
        store = self._store(info)
        if self._webhook_converted(info):
            obj = await self._in_storage_version(info, obj)
        stored = self._to_storage_version(info, obj)

        def replace(current: dict[str, Any]) -> dict[str, Any]:
            return self._fields.on_write(
                request, info, current, stored, subresource=subresource, copy_new=True
            )

        try:
            # Admitted against the object it replaces (see admission.admitted_update).
            updated = await admitted_update(
                self.ctx.admission, store, attrs, replace, subresource=subresource
            )
        except NotFound:
            if subresource or (info.group, info.plural) not in _CREATE_ON_UPDATE:
                raise
            # Kinds whose strategy allows create-on-update: a PUT of a missing object
            # creates it (201), as kube-apiserver does for endpoints, events and RBAC.
            attrs = self._admission(
                "CREATE", info, namespace, ri.path_name, user, obj=stored, dry_run=dry_run
            )
            await self.ctx.admission.admit(attrs)
            stored["metadata"].pop("resourceVersion", None)
            stored = self._fields.on_write(request, info, None, stored)
            created = await self._admitted_create(attrs, store, info, stored, converted=True)
            return _warn(await self._respond(request, info, created, 201), attrs)
        return _warn(await self._respond(request, info, updated), attrs)

    @staticmethod
    def _check_name(obj: dict[str, Any], url_name: str) -> None:
        body_name = obj["metadata"].get("name") or ""
        if body_name and body_name != url_name:
            raise BadRequest(
                f"the name of the object ({body_name}) does not match the name on the URL "
                f"({url_name})"
            )
        obj["metadata"]["name"] = url_name

    async def _patch(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str | None,
        user: UserInfo,
        *,
        subresource: str = "",
    ) -> web.StreamResponse:
        patch_type = media_type_of(request)
        body = await read_body(request, self.ctx.max_body_bytes)
        record_request_patch(request, body)
        dry_run = self._dry_run(request)
        check_patch_type(patch_type, custom=self._fields.is_custom(info))
        applied = decode_apply_patch(body) if patch_type == APPLY_PATCH else None
        if applied is not None:
            self._fields.check_type(info, applied)
            # The configuration must decode as the kind (upstream: the typed patch object).
            error = self._type_error(info.api_version, info.kind, applied)
            if error is not None:
                raise self._decode_error(info.api_version, info.kind, error)
            if not isinstance(applied.get("metadata") or {}, dict):
                raise BadRequest(
                    f"the object provided is unrecognized (must be of type {info.kind}): "
                    "metadata must be an object"
                )
        if applied is not None and self.ctx.custom is not None:
            # Unknown fields leave an apply configuration before it is merged (Strict: 400),
            # so managedFields never name a field that is not stored.
            applied = self.ctx.custom.drop_unknown_fields(request, info, applied)
        self._fields.check_force(request, apply=applied is not None)
        schema = self._fields.schema(info)
        attrs = self._admission(
            "UPDATE", info, namespace, ri.path_name, user, subresource=subresource, dry_run=dry_run
        )
        to_request = self._to_request_version(info)
        rv_in_body = b"resourceVersion" in body

        def mutate(current: dict[str, Any]) -> dict[str, Any]:
            return patched_in(to_request(current) if to_request else current)

        async def mutate_converted(current: dict[str, Any]) -> dict[str, Any]:
            (view,) = await self._in_version(info, [current])
            return await self._in_storage_version(info, patched_in(view))

        def patched_in(view: dict[str, Any]) -> dict[str, Any]:
            if applied is not None:
                patched = self._fields.apply(request, info, view, applied, subresource=subresource)
                self._check_patched(info, patched, patch_type, body)
                _check_patched_identity(info, view, patched)
                patched = self._prepare_body(request, info, patched, "UPDATE", subresource)
            else:
                patched = apply_patch(
                    view,
                    body,
                    patch_type,
                    schema,
                    field_validation=request.query.get("fieldValidation", ""),
                )
                self._check_patched(info, patched, patch_type, body)
                _check_patched_identity(info, view, patched)
                # Pruned/unknown fields go before managedFields are computed.
                patched = self._prepare_body(request, info, patched, "UPDATE", subresource)
                patched = self._fields.on_write(
                    request, info, view, patched, subresource=subresource
                )
            if not rv_in_body:
                # The resourceVersion came from the current object, not from the client: it
                # is no precondition, so a concurrent write makes admitted_update retry
                # instead of answering 409.
                (patched.get("metadata") or {}).pop("resourceVersion", None)
            if self._webhook_converted(info):
                return patched  # mutate_converted converts it
            return self._to_storage_version(info, patched)

        try:
            # Admitted against the patched object (see admission.admitted_update).
            updated = await admitted_update(
                self.ctx.admission,
                self._store(info),
                attrs,
                mutate_converted if self._webhook_converted(info) else mutate,
                subresource=subresource,
            )
        except NotFound:
            if applied is None or subresource:
                raise
            return await self._apply_create(request, ri, info, namespace, user, applied, dry_run)
        return _warn(await self._respond(request, info, updated), attrs)

    async def _apply_create(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str | None,
        user: UserInfo,
        applied: dict[str, Any],
        dry_run: bool,
    ) -> web.StreamResponse:
        """Server-side apply of a missing object creates it (201), as upstream."""
        obj = self._fields.apply(request, info, None, applied)
        self._check_patched(info, obj, APPLY_PATCH, b"")
        if not isinstance(obj.get("metadata"), dict):
            obj["metadata"] = {}
        self._check_name(obj, ri.path_name)
        self._check_namespace(obj, info, namespace)
        obj["metadata"].pop("resourceVersion", None)
        obj = self._prepare_body(request, info, obj, "CREATE")
        attrs = self._admission(
            "CREATE", info, namespace, ri.path_name, user, obj=obj, dry_run=dry_run
        )
        await self.ctx.admission.admit(attrs)
        obj = attrs.obj or obj
        if self._webhook_converted(info):
            obj = await self._in_storage_version(info, obj)
        created = await self._admitted_create(attrs, self._store(info), info, obj)
        return _warn(await self._respond(request, info, created, 201), attrs)

    async def _delete_options(self, request: web.Request) -> tuple[DeleteOptions, bool | None]:
        body = await read_body(request, self.ctx.max_body_bytes)
        options: dict[str, Any] = {}
        if body.strip():
            decoded = decode_object(body, media_type_of(request), "DeleteOptions")
            error = self._type_error("v1", "DeleteOptions", decoded)
            if error is not None:
                raise self._decode_error("v1", "DeleteOptions", error)
            options = decoded
            record_request_object(request, decoded, body)
        query = request.query
        grace: int | None = options.get("gracePeriodSeconds")
        if "gracePeriodSeconds" in query:
            grace = _int_param(request, "gracePeriodSeconds", 0)
        propagation = query.get("propagationPolicy") or options.get("propagationPolicy")
        orphan = options.get("orphanDependents")
        if "orphanDependents" in query:
            orphan = query_flag(query, "orphanDependents")
        if propagation is None and orphan is not None:
            propagation = "Orphan" if orphan else "Background"
        if propagation not in (None, "Orphan", "Background", "Foreground"):
            raise Invalid(
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
                f'"{propagation}": supported values: "Foreground", "Background", "Orphan"'
            )
        preconditions = options.get("preconditions") or {}
        dry_run = self._dry_run(request, options.get("dryRun"))
        if grace is not None and not isinstance(grace, int):
            raise BadRequest("gracePeriodSeconds must be an integer")
        delete_options = self.ctx.delete_options_type(
            grace_period_s=grace,
            propagation_policy=propagation,
            precondition_uid=preconditions.get("uid"),
            precondition_rv=preconditions.get("resourceVersion"),
            dry_run=dry_run,
        )
        return delete_options, orphan

    async def _delete(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str | None,
        user: UserInfo,
    ) -> web.StreamResponse:
        options, orphan = await self._delete_options(request)
        attrs = self._admission(
            "DELETE", info, namespace, ri.path_name, user, dry_run=options.dry_run
        )
        await self.ctx.admission.admit(attrs)
        try:
            obj, deleted_now = await self._store(info).delete(namespace, ri.path_name, options)
        except BaseException:
            await self.ctx.admission.finish(attrs, ok=False)
            raise
        await self.ctx.admission.finish(attrs, ok=True)
        status = 202 if (not deleted_now and orphan is False) else 200
        if deleted_now and (info.group, info.plural) not in _RETURNS_DELETED_OBJECT:
            metadata = obj.get("metadata", {})
            details = {
                "name": ri.path_name,
                "group": info.group,
                "kind": info.plural,
                "uid": metadata.get("uid", ""),
            }
            if not info.group:
                details.pop("group")
            return json_response(status_success(200, details), status)
        return await self._respond(request, info, obj, status)

    async def _delete_collection(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str | None,
        user: UserInfo,
    ) -> web.StreamResponse:
        labels, fields = self._selectors(request, info)
        options, _ = await self._delete_options(request)
        attrs = self._admission("DELETE", info, namespace, "", user, dry_run=options.dry_run)
        await self.ctx.admission.admit(attrs)
        try:
            deleted = await self._store(info).delete_collection(
                namespace, label_selector=labels, field_selector=fields, options=options
            )
        finally:
            # Partial success is possible: hooks check what is really gone.
            await self.ctx.admission.finish(attrs, ok=True)
        deleted = await self._in_version(info, list(deleted))
        renderer = Renderer(info, parse_accept(""), self._to_request_version(info))
        body = renderer.list_bytes(
            [json.dumps(o, separators=(",", ":")).encode() for o in deleted],
            resource_version="",
            continue_token=None,
            remaining=None,
        )
        return json_response(body)

    # --- subresources -------------------------------------------------------------------

    async def _subresource(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        sub: SubresourceInfo,
        namespace: str | None,
        user: UserInfo,
    ) -> web.StreamResponse:
        ns = namespace or None
        name = ri.subresource
        if name == "status":
            if ri.verb == "get":
                return await self._get(request, ri, info, ns, user)
            if ri.verb == "update":
                return await self._update(request, ri, info, ns, user, subresource="status")
            if ri.verb == "patch":
                return await self._patch(request, ri, info, ns, user, subresource="status")
        if (info.group, info.plural, name) in _STRATEGY_SUBRESOURCES:
            # pods/ephemeralcontainers, certificatesigningrequests/approval: the whole object,
            # of which the subresource's strategy lets only its own part change.
            if ri.verb == "get":
                return await self._get(request, ri, info, ns, user)
            if ri.verb == "update":
                return await self._update(request, ri, info, ns, user, subresource=name)
            if ri.verb == "patch":
                return await self._patch(request, ri, info, ns, user, subresource=name)
        if name == "finalize" and info.plural == "namespaces" and ri.verb == "update":
            return await self._update(request, ri, info, ns, user, subresource="finalize")
        if name == "scale" and (
            (info.group, info.plural) in _SCALABLE
            or (self.ctx.custom is not None and self.ctx.custom.scale_paths(info) is not None)
        ):
            return await self._scale(request, ri, info, ns, user)
        if name == "binding" and info.plural == "pods" and ri.verb == "create":
            return await self._bind(request, ri, info, ns, user)
        extra = self.ctx.subresources.get((info.group, info.plural, name))
        # The verb was checked against sub.verbs above (pods/log and pods/exec take GET).
        if extra is not None and (ri.verb == "create" or ri.verb in sub.verbs):
            return await extra(request, ri, info, ns, user)
        raise method_not_allowed()

    async def _scale(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str | None,
        user: UserInfo,
    ) -> web.StreamResponse:
        store = self._store(info)
        paths = self.ctx.custom.scale_paths(info) if self.ctx.custom is not None else None

        def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
            return crd_scale.scale_of(paths, obj) if paths else _scale_of(info, obj)

        if ri.verb == "get":
            obj = await store.get(namespace, ri.path_name)
            (obj,) = await self._in_version(info, [obj])
            return json_response(scale_of(obj))
        dry_run = self._dry_run(request)
        if ri.verb == "update":
            scale = await self._read_object(
                request, info, expected_kind="Scale", expected_api_version="autoscaling/v1"
            )
            self._check_name(scale, ri.path_name)

            def wanted(current_scale: dict[str, Any]) -> dict[str, Any]:
                return scale
        else:
            patch_type = media_type_of(request)
            check_patch_type(patch_type)
            if patch_type == APPLY_PATCH:
                raise method_not_allowed()  # apply to /scale: not served
            body = await read_body(request, self.ctx.max_body_bytes)

            def wanted(current_scale: dict[str, Any]) -> dict[str, Any]:
                patched = apply_patch(
                    current_scale,
                    body,
                    patch_type,
                    field_validation=request.query.get("fieldValidation", ""),
                )
                error = self._type_error("autoscaling/v1", "Scale", patched)
                if error is not None:
                    shown = dump_json(patched).decode()
                    cause = fielderrors.invalid("patch", shown, error)
                    raise Invalid.for_object("", "", "", [cause])
                return patched

        def mutate(current: dict[str, Any]) -> dict[str, Any]:
            current_scale = scale_of(current)
            new_scale = wanted(current_scale)
            rv = (new_scale.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current_scale["metadata"].get("resourceVersion"):
                raise Conflict.stale(info.plural, info.group, ri.path_name)
            replicas = (new_scale.get("spec") or {}).get("replicas", 0)
            if not isinstance(replicas, int) or replicas < 0:
                raise Invalid(
                    f'Scale.autoscaling "{ri.path_name}" is invalid: spec.replicas: Invalid value: '
                    f"{replicas}: must be greater than or equal to 0"
                )
            if paths:
                updated = crd_scale.set_replicas(paths, current, replicas)
            else:
                updated = dict(current)
                updated["spec"] = {**(current.get("spec") or {}), "replicas": replicas}
            return self._fields.on_write(request, info, current, updated, subresource="scale")

        attrs = self._admission(
            "UPDATE", info, namespace, ri.path_name, user, subresource="scale", dry_run=dry_run
        )
        # Admission sees the Scale objects (old and new), as upstream's scale REST storage
        # passes them: a ValidatingAdmissionPolicy on deployments/scale reads object.spec.replicas.
        current = await store.get(namespace, ri.path_name)
        (view,) = await self._in_version(info, [current])
        attrs.old_obj = scale_of(view)
        attrs.obj = wanted(copy_json(attrs.old_obj))
        await self.ctx.admission.admit(attrs)
        if self._webhook_converted(info) and view is not current:
            # Scale paths are the requested version's: the object read above is scaled in
            # that version and converted back; a concurrent write in between is a 409.
            stored = await self._in_storage_version(info, mutate(view))
            stored.setdefault("metadata", {})["resourceVersion"] = current["metadata"].get(
                "resourceVersion"
            )
            updated = await store.guaranteed_update(
                namespace, ri.path_name, lambda _: copy_json(stored), dry_run=dry_run
            )
        else:
            updated = await store.guaranteed_update(
                namespace, ri.path_name, mutate, dry_run=dry_run
            )
        (updated,) = await self._in_version(info, [updated])
        return json_response(scale_of(updated))

    async def _bind(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str | None,
        user: UserInfo,
    ) -> web.StreamResponse:
        binding = await self._read_object(
            request, info, expected_kind="Binding", expected_api_version="v1"
        )
        # pods/<name>/binding names the pod in the URL; the legacy bindings collection in
        # the body. Either way the pod store is written.
        pod_name = ri.path_name if ri.subresource else binding["metadata"].get("name") or ""
        pods = self.ctx.registry.by_resource("", "v1", "pods")
        assert pods is not None
        target = binding.get("target") or {}
        node_name = target.get("name") or ""
        if not node_name:
            raise Invalid(
                f'Binding "{pod_name}" is invalid: target.name: Required value',
                name=pod_name,
                kind="Binding",
            )
        dry_run = self._dry_run(request)
        annotations = (binding["metadata"].get("annotations")) or {}
        await self.ctx.admission.admit(
            self._admission(
                "CREATE",
                pods,
                namespace,
                pod_name,
                user,
                subresource="binding",
                obj=binding,
                dry_run=dry_run,
            )
        )

        await bind_pod(
            self._store(pods),
            namespace or "",
            pod_name,
            node_name,
            dict(annotations),
            dry_run=dry_run,
        )
        return json_response(status_success(201), 201)

    # --- computed kinds ------------------------------------------------------------------

    async def _token_review_status(self, spec: dict[str, Any]) -> dict[str, Any]:
        token = spec.get("token") or ""
        wanted = list(spec.get("audiences") or [])
        if wanted and not set(wanted) & set(self.ctx.api_audiences):
            return {"authenticated": False, "error": "token audiences are not supported"}
        try:
            reviewed = await self.ctx.authenticate_token(token) if token else None
        except AuthenticationError as exc:
            return {"authenticated": False, "error": exc.message}
        if reviewed is None:
            return {"authenticated": False, "error": "invalid bearer token"}
        audiences = [a for a in wanted if a in self.ctx.api_audiences] or list(
            self.ctx.api_audiences
        )
        return {"authenticated": True, "user": reviewed.to_dict(), "audiences": audiences}

    async def _component_statuses(
        self, request: web.Request, ri: RequestInfo, info: ResourceInfo
    ) -> web.StreamResponse:
        """componentstatuses (deprecated upstream): the datastore's health as ``etcd-0``.
        Sampan's scheduler and controllers run inside the server and report through
        /readyz, so they are not listed here."""
        if ri.verb not in ("get", "list"):
            raise method_not_allowed()
        healthy, message = await self.ctx.datastore_health()
        status = {
            "apiVersion": "v1",
            "kind": "ComponentStatus",
            "metadata": {"name": "etcd-0"},
            "conditions": [
                {"type": "Healthy", "status": "True" if healthy else "False", "message": message}
            ],
        }
        renderer = self._renderer(request, info)
        if ri.verb == "get":
            if ri.path_name != "etcd-0":
                raise NotFound.for_object(info.plural, info.group, ri.path_name)
            response = json_response(renderer.object_bytes(status))
        else:
            response = json_response(
                renderer.list_bytes(
                    [dump_json(status)], resource_version="", continue_token=None, remaining=None
                )
            )
        response.headers["Warning"] = COMPONENT_STATUS_WARNING
        return response

    async def _review(
        self,
        request: web.Request,
        ri: RequestInfo,
        info: ResourceInfo,
        namespace: str,
        user: UserInfo,
    ) -> web.StreamResponse:
        review = await self._read_object(request, info)
        self._dry_run(request)
        review["metadata"].setdefault("creationTimestamp", None)
        spec = review.get("spec") or {}
        if info.plural == "tokenreviews":
            review["status"] = await self._token_review_status(spec)
            return json_response(review, 201)
        if info.plural == "selfsubjectrulesreviews":
            rules_namespace = spec.get("namespace") or ""
            resource_rules, non_resource_rules, incomplete = self.ctx.rules_for(
                user, rules_namespace
            )
            review["status"] = {
                "resourceRules": resource_rules,
                "nonResourceRules": non_resource_rules,
                "incomplete": incomplete,
            }
            return json_response(review, 201)
        if info.plural == "selfsubjectreviews":
            user_info: dict[str, Any] = {"username": user.name, "groups": list(user.groups)}
            if user.uid:
                user_info["uid"] = user.uid
            if user.extra:
                user_info["extra"] = {k: list(v) for k, v in user.extra.items()}
            review["status"] = {"userInfo": user_info}
            return json_response(review, 201)
        spec = review.get("spec") or {}
        if info.plural == "selfsubjectaccessreviews":
            subject = user
        else:
            subject = _user_from_spec(user, spec)
        if info.plural == "localsubjectaccessreviews":
            resource_attributes = spec.get("resourceAttributes") or {}
            if resource_attributes.get("namespace", namespace) != namespace:
                raise BadRequest(
                    "spec.resourceAttributes.namespace must match namespace: " + namespace
                )
        attrs = _review_attributes(self.ctx.make_attributes, subject, spec)
        if attrs is None:
            raise Invalid(
                f'{info.kind}.authorization.k8s.io "" is invalid: spec.resourceAttributes: '
                'Invalid value: "null": exactly one of nonResourceAttributes or '
                "resourceAttributes must be specified"
            )
        decision = self.ctx.authorize(attrs)
        review["status"] = {"allowed": bool(decision.allowed)}
        if decision.reason:
            review["status"]["reason"] = decision.reason
        return json_response(review, 201)


def _user_from_spec(caller: UserInfo, spec: dict[str, Any]) -> UserInfo:
    """The user a SubjectAccessReview asks about (same type as the caller's UserInfo)."""
    # null is a field's zero value (as the typed decoder reads it): "" / () here.
    extra = {k: tuple(v or ()) for k, v in (spec.get("extra") or {}).items()}
    return type(caller)(
        name=spec.get("user") or "",
        uid=spec.get("uid") or "",
        groups=tuple(spec.get("groups") or ()),
        extra=extra,
    )


def _review_attributes(
    make: Callable[..., Attributes], user: UserInfo, spec: dict[str, Any]
) -> Attributes | None:
    resource = spec.get("resourceAttributes")
    if resource:
        return make(
            user=user,
            verb=resource.get("verb") or "",
            namespace=resource.get("namespace") or "",
            api_group=resource.get("group") or "",
            resource=resource.get("resource") or "",
            subresource=resource.get("subresource") or "",
            name=resource.get("name") or "",
            resource_request=True,
        )
    non_resource = spec.get("nonResourceAttributes")
    if non_resource:
        return make(
            user=user,
            verb=non_resource.get("verb") or "",
            path=non_resource.get("path") or "",
            resource_request=False,
        )
    return None


def _check_patched_identity(info: ResourceInfo, old: dict[str, Any], new: dict[str, Any]) -> None:
    """A patch may not rename or move an object, and a resourceVersion it sets must match."""
    old_meta = old.get("metadata") or {}
    new_meta = new.get("metadata")
    if not isinstance(new_meta, dict):
        raise BadRequest("metadata must be an object")
    name = old_meta.get("name", "")
    if new_meta.get("name", name) != name:
        raise BadRequest(
            f"the name of the object ({new_meta.get('name')}) does not match the name on the "
            f"URL ({name})"
        )
    if info.namespaced and new_meta.get("namespace", old_meta.get("namespace")) != old_meta.get(
        "namespace"
    ):
        raise BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    new_rv = new_meta.get("resourceVersion")
    if new_rv and new_rv != old_meta.get("resourceVersion"):
        raise Conflict.stale(info.plural, info.group, name)
    if new.get("kind", info.kind) != old.get("kind", info.kind) or new.get(
        "apiVersion", old.get("apiVersion")
    ) != old.get("apiVersion"):
        raise BadRequest("a patch may not change the object's kind or apiVersion")


def _selector_string(info: ResourceInfo, obj: dict[str, Any]) -> str:
    selector = (obj.get("spec") or {}).get("selector") or {}
    if info.plural == "replicationcontrollers":
        return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _scale_of(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata") or {}
    scale_meta = {
        k: metadata[k]
        for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        if k in metadata
    }
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": _selector_string(info, obj),
        },
    }


def _converted_already(obj: dict[str, Any], api_version: str) -> dict[str, Any]:
    """The guard of webhook-converted resources: ``obj`` must be in ``api_version`` already
    (a path that skipped ``_in_version`` is a 500, never an unconverted object)."""
    if obj.get("apiVersion") != api_version:
        raise ConversionFailed(
            f"conversion webhook for {obj.get('apiVersion')}, Kind={obj.get('kind')} failed: "
            f"the object was not converted to {api_version}"
        )
    return obj


def _warn(response: web.Response, attrs: AdmissionAttributes) -> web.Response:
    """Admission warnings as ``Warning`` headers (kubectl prints them)."""
    for message in attrs.warnings:
        if warning_text_ok(message):  # upstream drops text with control characters
            response.headers.add("Warning", warning_header(message))
    return response


def _int_param(request: web.Request, key: str, default: int) -> int:
    """An int64 query option as kube-apiserver's parameter codec reads it: absent is the
    default, but present-and-empty (``?limit=``) is parsed like any value, so a 400."""
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        return query_int(raw)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
