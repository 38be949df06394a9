"""CEL validation rules of CRDs (``x-kubernetes-validations``) with the real kubectl 1.32.

Rules from the Kubernetes documentation's "Validation rules" examples: cross-field bounds,
an immutable field (transition rule ``self == oldSelf``), ``has()`` with a reason and
fieldPath, list rules with ``all`` and a ``messageExpression``, rules on map values and list
items; rules that do not compile refuse the CRD; a pathological rule is stopped by the cost
bound and the server keeps answering.
"""

from __future__ import annotations

import copy
import json
import os

import pytest

from tests.apiserver.test_crd import KUBECTL, dump, establish, kubectl, ok

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

GROUP = "cel.example.com"
CRD_NAME = f"widgets.{GROUP}"

SPEC_SCHEMA = {
    "type": "object",
    "x-kubernetes-validations": [
        {
            "rule": "self.minReplicas <= self.replicas && self.replicas <= self.maxReplicas",
            "message": "replicas should be in the range minReplicas..maxReplicas.",
        },
        {
            "rule": "has(self.owner)",
            "reason": "FieldValueRequired",
            "fieldPath": ".owner",
            "message": "an owner is required",
        },
        {"rule": "!has(self.legacy) || self.legacy == false"},
    ],
    "properties": {
        "minReplicas": {"type": "integer"},
        "replicas": {"type": "integer"},
        "maxReplicas": {"type": "integer"},
        "owner": {"type": "string"},
        "legacy": {"type": "boolean"},
        "name": {
            "type": "string",
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "Value is immutable"}
            ],
        },
        "tags": {
            "type": "array",
            "maxItems": 20,
            "items": {"type": "string", "maxLength": 64},
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(t, t.size() <= 8)",
                    "messageExpression": (
                        "'tag ' + self.filter(t, t.size() > 8)[0] + ' is longer than 8'"
                    ),
                }
            ],
        },
        "ports": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "port": {"type": "integer"}},
                "x-kubernetes-validations": [
                    {"rule": "self.port > 0 && self.port < 65536", "message": "bad port"}
                ],
            },
        },
        "limits": {
            "type": "object",
            "additionalProperties": {
                "type": "string",
                "x-kubernetes-validations": [
                    {"rule": "isQuantity(self) && quantity(self).isLessThan(quantity('1Gi'))"}
                ],
            },
        },
        "numbers": {"type": "array", "items": {"type": "integer"}},
        "endpoint": {
            "type": "string",
            "x-kubernetes-validations": [
                {"rule": "url(self).getScheme() == 'https'", "message": "must be https"}
            ],
        },
        "kind": {
            "type": "string",
            "x-kubernetes-validations": [
                {"rule": "self.lowerAscii() in ['a', 'b']", "reason": "FieldValueForbidden"}
            ],
        },
    },
}


def widget_crd(spec_schema: dict | None = None) -> dict:
    schema = {"type": "object", "properties": {"spec": spec_schema or SPEC_SCHEMA}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": copy.deepcopy(schema)},
                }
            ],
        },
    }


def widget(object_name: str = "w", **spec: object) -> dict:
    body = {"minReplicas": 1, "replicas": 2, "maxReplicas": 3, "owner": "me", **spec}
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": object_name},
        "spec": body,
    }


async def refused(harness, obj: dict, verb: str = "create") -> str:
    code, _, err = await kubectl(harness, verb, "-f", "-", stdin=dump(obj))
    assert code != 0, f"{verb} was accepted: {obj}"
    return err.strip()


async def test_documentation_rules(harness):
    await establish(harness, widget_crd())
    await ok(harness, "create", "-f", "-", stdin=dump(widget(tags=["a", "bb"])))

    err = await refused(harness, widget("w2", replicas=10))
    assert err == (
        'The Widget "w2" is invalid: spec: Invalid value: "object": '
        "replicas should be in the range minReplicas..maxReplicas."
    )

    body = widget("w3")
    del body["spec"]["owner"]
    err = await refused(harness, body)
    assert err == 'The Widget "w3" is invalid: spec.owner: Required value: an owner is required'

    err = await refused(harness, widget("w4", legacy=True))
    assert err == (
        'The Widget "w4" is invalid: spec: Invalid value: "object": '
        "failed rule: !has(self.legacy) || self.legacy == false"
    )

    err = await refused(harness, widget("w5", tags=["ok", "muchtoolong"]))
    assert err == (
        'The Widget "w5" is invalid: spec.tags: Invalid value: "array": '
        "tag muchtoolong is longer than 8"
    )

    err = await refused(
        harness, widget("w6", ports=[{"name": "a", "port": 80}, {"name": "b", "port": 70000}])
    )
    assert err == 'The Widget "w6" is invalid: spec.ports[1]: Invalid value: "object": bad port'

    err = await refused(harness, widget("w7", limits={"mem": "512Mi", "disk": "2Gi"}))
    assert err == (
        'The Widget "w7" is invalid: spec.limits[disk]: Invalid value: "string": failed rule: '
        "isQuantity(self) && quantity(self).isLessThan(quantity('1Gi'))"
    )

    err = await refused(harness, widget("w8", endpoint="http://example.com"))
    assert (
        err == 'The Widget "w8" is invalid: spec.endpoint: Invalid value: "string": must be https'
    )

    err = await refused(harness, widget("w9", kind="C"))
    assert err == (
        'The Widget "w9" is invalid: spec.kind: Forbidden: '
        "failed rule: self.lowerAscii() in ['a', 'b']"
    )

    # Several failures are listed together, as upstream aggregates them.
    err = await refused(harness, widget("w10", replicas=0, legacy=True))
    assert err == (
        'The Widget "w10" is invalid: \n'
        '* spec: Invalid value: "object": replicas should be in the range '
        "minReplicas..maxReplicas.\n"
        '* spec: Invalid value: "object": failed rule: !has(self.legacy) || self.legacy == false'
    )

    await ok(
        harness,
        "create",
        "-f",
        "-",
        stdin=dump(
            widget(
                "good",
                kind="A",
                endpoint="https://example.com/x",
                limits={"mem": "512Mi"},
                ports=[{"name": "a", "port": 80}],
            )
        ),
    )


async def test_transition_rule_immutable(harness):
    await establish(harness, widget_crd())
    await ok(harness, "create", "-f", "-", stdin=dump(widget("imm", name="first")))
    # The rule does not run on create, nor when the field keeps its value.
    await ok(harness, "label", "widget", "imm", "x=y")
    err = await refused(harness, widget("imm", name="second"), verb="apply")
    assert (
        'The Widget "imm" is invalid: spec.name: Invalid value: "string": Value is immutable' in err
    )
    code, _, err = await kubectl(
        harness, "patch", "widget", "imm", "--type=merge", "-p", '{"spec":{"name":"third"}}'
    )
    assert code != 0
    assert 'spec.name: Invalid value: "string": Value is immutable' in err
    stored = json.loads(await ok(harness, "get", "widget", "imm", "-o", "json"))
    assert stored["spec"]["name"] == "first"
    # A value that did not exist before may be set (no oldSelf there).
    await ok(harness, "create", "-f", "-", stdin=dump(widget("late")))
    await ok(harness, "patch", "widget", "late", "--type=merge", "-p", '{"spec":{"name":"n"}}')


async def test_optional_old_self(harness):
    spec = {
        "type": "object",
        "properties": {
            "value": {
                "type": "integer",
                "x-kubernetes-validations": [
                    {
                        "rule": "!oldSelf.hasValue() || self >= oldSelf.value()",
                        "optionalOldSelf": True,
                        "message": "value may only grow",
                    }
                ],
            }
        },
    }
    await establish(harness, widget_crd(spec))
    obj = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": "o"}}
    await ok(harness, "create", "-f", "-", stdin=dump({**obj, "spec": {"value": 5}}))
    await ok(harness, "patch", "widget", "o", "--type=merge", "-p", '{"spec":{"value":6}}')
    code, _, err = await kubectl(
        harness, "patch", "widget", "o", "--type=merge", "-p", '{"spec":{"value":1}}'
    )
    assert code != 0
    assert 'spec.value: Invalid value: "integer": value may only grow' in err


async def test_rules_that_do_not_compile_refuse_the_crd(harness):
    spec = copy.deepcopy(SPEC_SCHEMA)
    spec["x-kubernetes-validations"] = [{"rule": "self.replicas <="}]
    code, _, err = await kubectl(harness, "create", "-f", "-", stdin=dump(widget_crd(spec)))
    assert code != 0
    assert err.startswith(
        f'The CustomResourceDefinition "{CRD_NAME}" is invalid: '
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0]"
        '.rule: Invalid value: apiextensions.ValidationRule{Rule:"self.replicas <=", '
    )
    assert "compilation failed: ERROR: <input>:1:" in err
    assert "Syntax error" in err

    spec["x-kubernetes-validations"] = [{"rule": "self.replicas"}, {"rule": "nope(self)"}]
    code, _, err = await kubectl(harness, "create", "-f", "-", stdin=dump(widget_crd(spec)))
    assert code != 0
    assert "x-kubernetes-validations[1].rule" in err
    assert "undeclared reference to 'nope'" in err

    spec["x-kubernetes-validations"] = [{"rule": "true", "messageExpression": "self.replicas +"}]
    code, _, err = await kubectl(harness, "create", "-f", "-", stdin=dump(widget_crd(spec)))
    assert code != 0
    assert "x-kubernetes-validations[0].messageExpression" in err
    assert "messageExpression compilation failed" in err
    code, _, _ = await kubectl(harness, "get", "crd", CRD_NAME)
    assert code != 0


async def test_cost_limit_stops_pathological_rules(harness):
    spec = {
        "type": "object",
        "properties": {
            "numbers": {
                "type": "array",
                "items": {"type": "integer"},
                "x-kubernetes-validations": [
                    {"rule": "self.all(x, self.all(y, self.all(z, x + y + z >= 0)))"}
                ],
            }
        },
    }
    await establish(harness, widget_crd(spec))
    obj = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": "big"}}
    small = {**obj, "spec": {"numbers": list(range(10))}}
    await ok(harness, "create", "-f", "-", stdin=dump(small))
    big = {**obj, "metadata": {"name": "big2"}, "spec": {"numbers": list(range(2000))}}
    code, _, err = await kubectl(harness, "create", "-f", "-", stdin=dump(big))
    assert code != 0
    assert 'spec.numbers: Invalid value: "array": ' in err
    assert "call cost exceeds limit for rule" in err
    # The server still answers.
    await ok(harness, "get", "widgets")


async def test_changed_rules_take_effect(harness):
    await establish(harness, widget_crd())
    await ok(harness, "create", "-f", "-", stdin=dump(widget("before", replicas=3)))
    spec = copy.deepcopy(SPEC_SCHEMA)
    spec["x-kubernetes-validations"][0] = {"rule": "self.replicas <= 2", "message": "at most 2"}
    await ok(harness, "apply", "-f", "-", stdin=dump(widget_crd(spec)))
    for _ in range(200):
        code, _, err = await kubectl(
            harness,
            "create",
            "--dry-run=server",
            "-f",
            "-",
            stdin=dump(widget("after", replicas=3)),
        )
        if code != 0:
            break
    assert code != 0
    assert err.strip() == 'The Widget "after" is invalid: spec: Invalid value: "object": at most 2'


async def test_scale_subresource_is_judged_by_the_rules(harness):
    crd = widget_crd()
    version = crd["spec"]["versions"][0]
    version["subresources"] = {
        "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
    }
    version["schema"]["openAPIV3Schema"]["properties"]["status"] = {
        "type": "object",
        "properties": {"replicas": {"type": "integer"}},
    }
    await establish(harness, crd)
    await ok(harness, "create", "-f", "-", stdin=dump(widget("scaled")))
    await ok(harness, "scale", "widget", "scaled", "--replicas=3")
    code, _, err = await kubectl(harness, "scale", "widget", "scaled", "--replicas=30")
    assert code != 0
    assert (
        err.strip() == 'The Widget "scaled" is invalid: spec: Invalid value: "object": '
        "replicas should be in the range minReplicas..maxReplicas."
    )
    stored = json.loads(await ok(harness, "get", "widget", "scaled", "-o", "json"))
    assert stored["spec"]["replicas"] == 3
