"""Random documents sent to the patch endpoints: JSON patch, JSON merge patch, strategic merge
patch and server-side apply (``application/apply-patch+yaml``), on seeded objects of a few
kinds (ConfigMap, Service, Deployment, Role, a CRD's Widget).

The documents come from Hypothesis strategies of JSON values whose keys are mostly the kinds'
own field names (so patches reach deep into real objects) and sometimes anything; JSON patch
operations get random ops, pointer paths (with ``~0``/``~1`` escapes, ``-`` and indices) and
values; strategic merge patches get the ``$patch``/``$retainKeys``/``$setElementOrder``/
``$deleteFromPrimitiveList`` directives in random places. A 4xx with a well-formed Status is
fine; a 5xx, a hang or a dropped connection never is.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import (
    CRD_GROUP,
    CRD_PLURAL,
    FUZZ_NAMESPACE,
    SEED_NAME,
    FuzzAPI,
    check_response,
    fuzz_settings,
)

pytestmark = pytest.mark.fuzz

MAX_EXAMPLES = 150
NS = f"/namespaces/{FUZZ_NAMESPACE}"
# (collection path, apiVersion, kind, custom resource?)
TARGETS = [
    (f"/api/v1{NS}/configmaps", "v1", "ConfigMap", False),
    (f"/api/v1{NS}/services", "v1", "Service", False),
    (f"/apis/apps/v1{NS}/deployments", "apps/v1", "Deployment", False),
    (
        f"/apis/rbac.authorization.k8s.io/v1{NS}/roles",
        "rbac.authorization.k8s.io/v1",
        "Role",
        False,
    ),
    (f"/apis/{CRD_GROUP}/v1{NS}/{CRD_PLURAL}", f"{CRD_GROUP}/v1", "Widget", True),
]
FIELDS = (
    "metadata labels annotations name namespace finalizers ownerReferences uid resourceVersion "
    "generation managedFields spec status data binaryData selector ports port targetPort "
    "protocol type clusterIP replicas template containers image env value volumeMounts rules "
    "verbs resources apiGroups size color tags parts count extra matchLabels strategy "
    "conditions 0 1 -"
).split()
DIRECTIVES = (
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "$setElementOrder/ports",
    "$deleteFromPrimitiveList/finalizers",
    "$deleteFromPrimitiveList/tags",
)

keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x", "a=b", "100m", "1Gi", "2024-01-01T00:00:00Z", "TCP", "replace"]),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)
json_objects = st.dictionaries(keys, json_values, max_size=5)


def _pointer_segment() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(FIELDS),
        st.integers(min_value=-2, max_value=5).map(str),
        st.sampled_from(["~0", "~1", "a~1b", "~2", "~", "", "00", "1e3"]),
        st.text(max_size=5),
    )


pointers = st.one_of(
    st.lists(_pointer_segment(), max_size=5).map(lambda parts: "".join("/" + p for p in parts)),
    st.text(max_size=10),
)
json_patch_ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"])},
    optional={"path": pointers, "from": pointers, "value": json_values},
)
json_patches = st.one_of(
    st.lists(json_patch_ops, max_size=5),
    st.lists(st.one_of(json_patch_ops, json_values), max_size=3),
    json_values,
)


@st.composite
def strategic_patches(draw: st.DrawFn) -> Any:
    patch = draw(json_objects)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        # A directive somewhere: at the top, or inside a nested object of the patch.
        target = patch
        while isinstance(target, dict) and target and draw(st.booleans()):
            child = target[draw(st.sampled_from(sorted(target)))]
            if not isinstance(child, dict):
                break
            target = child
        if isinstance(target, dict):
            target[draw(st.sampled_from(DIRECTIVES))] = draw(
                st.one_of(
                    st.sampled_from(["replace", "delete", "merge", "bogus"]),
                    st.lists(st.one_of(st.sampled_from(FIELDS), scalars), max_size=3),
                    json_values,
                )
            )
    if draw(st.booleans()):
        # A list of objects with merge keys, which strategic merge handles by key.
        field = draw(st.sampled_from(["containers", "ports", "conditions", "parts", "rules"]))
        patch.setdefault("spec", {})
        if isinstance(patch["spec"], dict):
            patch["spec"][field] = draw(
                st.lists(
                    st.dictionaries(
                        st.sampled_from(["name", "port", "containerPort", "type", "$patch"]),
                        st.one_of(scalars, st.sampled_from(["delete", "replace", "c"])),
                        max_size=3,
                    ),
                    max_size=3,
                )
            )
    return patch


@st.composite
def apply_configurations(draw: st.DrawFn, api_version: str, kind: str, name: str) -> Any:
    body = draw(json_objects)
    if draw(st.integers(min_value=0, max_value=4)):
        body["apiVersion"] = api_version
        body["kind"] = kind
        metadata = body.get("metadata")
        if not isinstance(metadata, dict) or draw(st.booleans()):
            metadata = {}
            body["metadata"] = metadata
        metadata["name"] = name
    return body


def _encode(draw: st.DrawFn, document: Any, *, yaml_allowed: bool) -> bytes:
    text = json.dumps(document)
    if yaml_allowed and draw(st.booleans()):
        # Apply takes YAML: the JSON text is YAML too; add a YAML-only spelling sometimes.
        text = "# fuzz\n" + text
    return text.encode()


def _send(api: FuzzAPI, url: str, content_type: str, body: bytes, params: dict) -> int:
    what = f"PATCH {url} {params} {content_type}\n{body[:600]!r}"
    try:
        response = api.request(
            "PATCH", url, data=body, params=params, headers={"Content-Type": content_type}
        )
    except requests.Timeout as error:
        raise AssertionError(f"hang: {what}") from error
    except requests.ConnectionError as error:
        raise AssertionError(f"dropped connection: {what}") from error
    check_response(response, what)
    return response.status_code


PATCH_TYPES = {
    "json": "application/json-patch+json",
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


@pytest.mark.parametrize("patch_type", list(PATCH_TYPES))
def test_random_patches_never_5xx(fuzz_api: FuzzAPI, patch_type: str) -> None:
    content_type = PATCH_TYPES[patch_type]
    codes: list[int] = []

    @fuzz_settings(MAX_EXAMPLES)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        collection, api_version, kind, custom = data.draw(st.sampled_from(TARGETS), label="kind")
        if custom and patch_type == "strategic":
            # Custom resources take no strategic merge patch (415): aim at a built-in kind.
            collection, api_version, kind, custom = TARGETS[0]
        # Apply may create; the other patch types need an existing object.
        names = [SEED_NAME, "fz-p"] if patch_type == "apply" else [SEED_NAME]
        name = data.draw(st.sampled_from(names), label="name")
        params: dict[str, str] = {}
        if patch_type == "json":
            document = data.draw(json_patches, label="patch")
        elif patch_type == "merge":
            document = data.draw(st.one_of(json_objects, json_values), label="patch")
        elif patch_type == "strategic":
            document = data.draw(strategic_patches(), label="patch")
        else:
            document = data.draw(apply_configurations(api_version, kind, name), label="patch")
            if data.draw(st.integers(min_value=0, max_value=5)):
                params["fieldManager"] = data.draw(
                    st.sampled_from(["fuzz", "other", "", "x" * 200]), label="fieldManager"
                )
            if data.draw(st.booleans()):
                params["force"] = data.draw(st.sampled_from(["true", "false", "maybe"]))
        if data.draw(st.booleans(), label="dry run"):
            params["dryRun"] = "All"
        if data.draw(st.booleans(), label="validation"):
            params["fieldValidation"] = data.draw(st.sampled_from(["Strict", "Warn", "Ignore"]))
        body = _encode(data.draw, document, yaml_allowed=patch_type == "apply")
        url = f"{collection}/{name}"
        codes.append(_send(fuzz_api, url, content_type, body, params))
        if data.draw(st.integers(min_value=0, max_value=9)) == 0:
            # The status subresource takes the same patches.
            codes.append(_send(fuzz_api, url + "/status", content_type, body, params))

    fuzz_api.seed()
    run()
    import collections

    print(patch_type, collections.Counter(codes))
    assert any(code == 200 for code in codes), codes
