"""CRD conversion webhooks (``spec.conversion.strategy: Webhook``, ``ConversionReview``).

``WebhookConversion(post)`` converts custom resources between the versions of a CRD whose
conversion strategy is ``Webhook``: ``convert(objects, desired_api_version, stanza)`` sends
the objects that are not in the desired version in one ``ConversionReview`` (``uid``,
``desiredAPIVersion``, ``objects``), in the first of the CRD's ``conversionReviewVersions``
Sampan speaks (v1, v1beta1), to the stanza's ``clientConfig`` (a URL, or a Service resolved
through its endpoints, verified with ``caBundle``) through the admission webhooks' shared
HTTPS pool (``WebhookCaller.post_review``), within ``CONVERSION_TIMEOUT_S``.

The answer is checked as kube-apiserver checks it: ``ConversionReview`` of the version sent
(v1: same ``uid``), ``result.status`` Success, as many ``convertedObjects`` as objects sent,
each of the desired apiVersion, of the same kind, name, namespace and uid; metadata other than
labels and annotations is restored from the original (labels and annotations must be
strings). Any failure is a 500 with upstream's message, the request's GVK being the object's
before conversion: ``conversion webhook for stable.example.com/v1, Kind=CronTab failed:
Post "https://...": ...``.

Invariants: the input objects are never mutated; objects already in the desired version are
returned as they are, without a call; a call never outlives ``CONVERSION_TIMEOUT_S``.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sampan.api.errors import StatusError
from sampan.api.names import is_qualified_name

__all__ = ["CONVERSION_TIMEOUT_S", "ConversionFailed", "WebhookConversion"]

CONVERSION_TIMEOUT_S = 30
"""kube-apiserver's conversion webhook client timeout."""
REVIEW_VERSIONS = ("v1", "v1beta1")
REVIEW_GROUP = "apiextensions.k8s.io"

Poster = Callable[[dict[str, Any], dict[str, Any], int], Awaitable[dict[str, Any]]]
"""(clientConfig, review, timeout_s) -> decoded answer; raises an exception whose text is the
REST client's error."""


class ConversionFailed(StatusError):
    """A conversion that could not be made: 500, no reason (kube-apiserver returns the
    converter's error as is, which kubectl prints as ``Error from server: ...``)."""

    code = 500
    reason = ""


def _gvk(obj: Mapping[str, Any]) -> str:
    api_version = str(obj.get("apiVersion") or "")
    group, _, version = api_version.rpartition("/")
    return (
        f"{group}/{version}, Kind={obj.get('kind') or ''}"
        if group
        else (f"{version}, Kind={obj.get('kind') or ''}")
    )


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _check_converted(original: Mapping[str, Any], converted: Mapping[str, Any]) -> str:
    """Upstream's checks of one converted object (the error text, or "")."""
    if original.get("kind") != converted.get("kind"):
        return f"must have the same kind: {original.get('kind')} != {converted.get('kind')}"
    before, after = _meta(original), _meta(converted)
    for key, what in (("name", "name"), ("namespace", "namespace"), ("uid", "UID")):
        if (before.get(key) or "") != (after.get(key) or ""):
            return f"must have the same {what}: {before.get(key) or ''} != {after.get(key) or ''}"
    return ""


def _restore_meta(original: Mapping[str, Any], converted: dict[str, Any]) -> str:
    """The original's metadata with the converted object's labels and annotations (the error
    text, or "")."""
    response_meta = converted.get("metadata")
    if response_meta is None:
        return "missing metadata in converted object"
    if not isinstance(response_meta, dict):
        return f"invalid metadata of type {type(response_meta).__name__} in converted object"
    meta = copy.deepcopy(dict(_meta(original)))
    for key in ("labels", "annotations"):
        value = response_meta.get(key)
        if value is None:
            meta.pop(key, None)
            continue
        if not isinstance(value, dict):
            return f"invalid metadata.{key} of type {type(value).__name__} in converted object"
        for k, v in value.items():
            if not isinstance(v, str):
                return (
                    f"metadata.{key}[{k}] must be a string, but is {type(v).__name__} in "
                    "converted object"
                )
        if key == "labels" and value != meta.get(key):
            for k in value:
                errors = is_qualified_name(k)
                if errors:
                    return f'metadata.labels: Invalid value: "{k}": {errors[0]}'
        meta[key] = dict(value)
    converted["metadata"] = meta
    return ""


class WebhookConversion:
    """See the module docstring."""

    def __init__(self, post: Poster, *, timeout_s: int = CONVERSION_TIMEOUT_S) -> None:
        self._post = post
        self._timeout_s = timeout_s

    async def convert(
        self,
        objects: Sequence[dict[str, Any]],
        desired_api_version: str,
        webhook: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """``objects`` in ``desired_api_version`` (ConversionFailed otherwise)."""
        pending = [o for o in objects if o.get("apiVersion") != desired_api_version]
        if not pending:
            return list(objects)
        what = _gvk(pending[0])

        def failed(reason: str) -> ConversionFailed:
            return ConversionFailed(f"conversion webhook for {what} failed: {reason}")

        versions = [str(v) for v in webhook.get("conversionReviewVersions") or ()]
        review_version = next((v for v in versions if v in REVIEW_VERSIONS), None)
        if review_version is None:
            raise failed("no supported conversion review versions")
        uid = str(uuid.uuid4())
        review_api_version = f"{REVIEW_GROUP}/{review_version}"
        review = {
            "kind": "ConversionReview",
            "apiVersion": review_api_version,
            "request": {
                "uid": uid,
                "desiredAPIVersion": desired_api_version,
                "objects": pending,
            },
        }
        client = webhook.get("clientConfig")
        try:
            answer = await self._post(
                dict(client) if isinstance(client, Mapping) else {}, review, self._timeout_s
            )
        except ConversionFailed:
            raise
        except Exception as e:  # the poster's errors are its REST client's messages
            raise failed(str(e)) from None
        converted_objects = self._verified(answer, uid, review_api_version, failed)
        if len(converted_objects) != len(pending):
            raise ConversionFailed(
                f"conversion webhook for {what} returned {len(converted_objects)} objects, "
                f"expected {len(pending)}"
            )
        desired_group_version = desired_api_version
        out: list[dict[str, Any]] = []
        index = 0
        for original in objects:
            if original.get("apiVersion") == desired_api_version:
                out.append(original)
                continue
            converted = converted_objects[index]
            where = (
                f"conversion webhook for {what} returned invalid converted object at index {index}"
            )
            if not isinstance(converted, dict):
                raise ConversionFailed(f"{where}: expected an object")
            converted = copy.deepcopy(converted)
            got = str(converted.get("apiVersion") or "")
            if got != desired_group_version:
                raise ConversionFailed(
                    f"{where}: invalid groupVersion (expected {desired_group_version}, "
                    f"received {got})"
                )
            if converted.get("kind") != original.get("kind"):
                raise ConversionFailed(
                    f"{where}: invalid kind (expected {original.get('kind')}, received "
                    f"{converted.get('kind')})"
                )
            error = _check_converted(original, converted)
            if error:
                raise ConversionFailed(f"{where}: {error}")
            error = _restore_meta(original, converted)
            if error:
                raise ConversionFailed(
                    f"conversion webhook for {what} returned invalid metadata in object at "
                    f"index {index}: {error}"
                )
            out.append(converted)
            index += 1
        return out

    @staticmethod
    def _verified(
        answer: Mapping[str, Any],
        uid: str,
        review_api_version: str,
        failed: Callable[[str], ConversionFailed],
    ) -> list[Any]:
        if review_api_version.endswith("/v1"):
            got = f"{answer.get('apiVersion') or ''}, Kind={answer.get('kind') or ''}"
            if (answer.get("apiVersion"), answer.get("kind")) != (
                review_api_version,
                "ConversionReview",
            ):
                raise failed(
                    f"expected webhook response of {review_api_version}, Kind=ConversionReview, "
                    f"got {got}"
                )
        response = answer.get("response")
        if not isinstance(response, dict):
            raise failed("no response provided")
        if review_api_version.endswith("/v1") and str(response.get("uid") or "") != uid:
            raise failed(f'expected response.uid="{uid}", got "{response.get("uid") or ""}"')
        result = response.get("result") if isinstance(response.get("result"), dict) else {}
        if result.get("status") != "Success":
            if result.get("message"):
                raise failed(str(result["message"]))
            raise failed(
                f"response.result.status was '{result.get('status') or ''}', not 'Success'"
            )
        converted = response.get("convertedObjects")
        return list(converted) if isinstance(converted, list) else []
