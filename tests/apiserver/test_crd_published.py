"""Published CRDs as controller-gen writes them (issue #13), with the real kubectl 1.32 against
the in-process server: an ``intstr.IntOrString`` field in its ``anyOf`` form, a Go RE2
``pattern`` with an inline flag group, a ``list-type: map`` of conditions and a printer column
with a JSONPath filter. Non-structural schemas, invalid patterns and bad column paths are
refused with kube-apiserver's field paths and messages, and nothing is stored or served."""

from __future__ import annotations

import copy

import yaml

from tests.apiserver.test_crd import CRDS, establish, kubectl, ok

GROUP = "published.example.com"
CRD_NAME = f"widgets.{GROUP}"
WIDGETS = f"/apis/{GROUP}/v1/namespaces/default/widgets"
DAY_PATTERN = r"^((?i)sun|mon|tues|wednes|thurs|fri|satur)day( [0-9]{2}:[0-9]{2})?$"

# Written the way controller-gen v0.16 writes it (kubebuilder markers on Go types).
WIDGET_CRD = f"""\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  annotations:
    controller-gen.kubebuilder.io/version: v0.16.4
  name: {CRD_NAME}
spec:
  group: {GROUP}
  names:
    kind: Widget
    listKind: WidgetList
    plural: widgets
    singular: widget
  scope: Namespaced
  versions:
  - additionalPrinterColumns:
    - jsonPath: .status.conditions[?(@.type=='Ready')].status
      name: Ready
      type: string
    - jsonPath: .spec.port
      name: Port
      type: string
    - jsonPath: .metadata.creationTimestamp
      name: Age
      type: date
    name: v1
    schema:
      openAPIV3Schema:
        description: Widget is the Schema for the widgets API.
        properties:
          apiVersion:
            description: APIVersion defines the versioned schema of this representation.
            type: string
          kind:
            description: Kind is a string value representing the REST resource.
            type: string
          metadata:
            type: object
          spec:
            description: WidgetSpec defines the desired state of Widget.
            properties:
              day:
                description: Day the widget runs.
                pattern: {DAY_PATTERN}
                type: string
              port:
                anyOf:
                - type: integer
                - type: string
                description: Port to serve on, by number or name.
                x-kubernetes-int-or-string: true
              maxUnavailable:
                anyOf:
                - type: integer
                - type: string
                default: 1
                x-kubernetes-int-or-string: true
              template:
                type: object
                x-kubernetes-embedded-resource: true
                x-kubernetes-preserve-unknown-fields: true
            required:
            - port
            type: object
          status:
            description: WidgetStatus defines the observed state of Widget.
            properties:
              conditions:
                items:
                  properties:
                    lastTransitionTime:
                      format: date-time
                      type: string
                    message:
                      maxLength: 32768
                      type: string
                    reason:
                      maxLength: 1024
                      minLength: 1
                      pattern: ^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$
                      type: string
                    status:
                      enum:
                      - "True"
                      - "False"
                      - Unknown
                      type: string
                    type:
                      maxLength: 316
                      pattern: ^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$
                      type: string
                  required:
                  - lastTransitionTime
                  - message
                  - reason
                  - status
                  - type
                  type: object
                type: array
                x-kubernetes-list-map-keys:
                - type
                x-kubernetes-list-type: map
            type: object
        type: object
    served: true
    storage: true
    subresources:
      status: {{}}
"""  # noqa: E501


def widget(name: str, **spec: object) -> bytes:
    body = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}}
    body["spec"] = spec
    return yaml.safe_dump(body).encode()


async def test_controller_gen_crd_is_established_and_served(harness):
    crd = yaml.safe_load(WIDGET_CRD)
    await establish(harness, crd)

    assert "widget.published.example.com/w1 created" in await ok(
        harness, "apply", "-f", "-", stdin=widget("w1", port=8080, day="SUNday 10:00")
    )
    await ok(harness, "apply", "-f", "-", stdin=widget("w2", port="http", day="Monday"))
    stored = (await harness.request("GET", f"{WIDGETS}/w1"))[1]
    assert stored["spec"]["maxUnavailable"] == 1  # the int-or-string default

    # Go's RE2 semantics: (?i) applies inside its group only; objects breaking it are refused.
    code, _, err = await kubectl(
        harness, "apply", "-f", "-", stdin=widget("w3", port=1, day="SUNDAY")
    )
    assert code != 0
    assert (
        f'The Widget "w3" is invalid: spec.day: Invalid value: "SUNDAY": '
        f"spec.day in body should match '{DAY_PATTERN}'"
    ) in err
    code, _, err = await kubectl(
        harness, "apply", "-f", "-", stdin=widget("w4", port=True, day="Friday")
    )
    assert code != 0
    assert 'spec.port: Invalid value: "boolean": spec.port in body must be of type' in err

    table = await ok(harness, "get", "widgets")
    assert table.split("\n")[0].split() == ["NAME", "READY", "PORT", "AGE"]
    assert table.split("\n")[1].split()[:2] == ["w1", "8080"]  # no status yet: empty cell

    status = (
        '{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Up",'
        '"message":"ok","lastTransitionTime":"2026-01-01T00:00:00Z"},{"type":"Synced",'
        '"status":"False","reason":"Later","message":"","lastTransitionTime":'
        '"2026-01-01T00:00:00Z"}]}}'
    )
    await ok(harness, "patch", "widget", "w1", "--subresource=status", "--type=merge", "-p", status)
    rows = [line.split() for line in (await ok(harness, "get", "widgets")).splitlines()]
    assert rows[1][:3] == ["w1", "True", "8080"]
    assert rows[2][:2] == ["w2", "http"]
    jsonpath = "{.status.conditions[?(@.type=='Ready')].status}"
    assert await ok(harness, "get", "widget", "w1", "-o", f"jsonpath={jsonpath}") == "True"


def _crd_with(mutate) -> dict:  # type: ignore[no-untyped-def]
    crd = copy.deepcopy(yaml.safe_load(WIDGET_CRD))
    mutate(crd["spec"]["versions"][0])
    return crd


def _spec_props(version: dict) -> dict:
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


SCHEMA = "spec.versions[0].schema.openAPIV3Schema"


async def test_unservable_crds_are_refused_and_nothing_is_stored(harness):
    cases = [
        (
            lambda v: _spec_props(v)["port"]["anyOf"].append({"type": "boolean"}),
            f"{SCHEMA}.properties[spec].properties[port].anyOf[0].type",
            "Forbidden: must be empty to be structural",
        ),
        (
            lambda v: _spec_props(v)["day"].update(pattern="^(?<!x)day$"),
            f"{SCHEMA}.properties[spec].properties[day].pattern",
            'Invalid value: "^(?<!x)day$": must be a valid regular expression, but isn\'t: '
            "error parsing regexp: invalid named capture: `(?<!x)day$`",
        ),
        (
            lambda v: v["additionalPrinterColumns"][0].update(jsonPath="status.conditions"),
            "spec.versions[0].additionalPrinterColumns[0].JSONPath",
            'Invalid value: "status.conditions": must be a simple json path starting with .',
        ),
        (
            lambda v: _spec_props(v).update(untyped={"description": "no type"}),
            f"{SCHEMA}.properties[spec].properties[untyped].type",
            "Required value: must not be empty for specified object fields",
        ),
    ]
    for mutate, field, message in cases:
        status, body = await harness.request("POST", CRDS, _crd_with(mutate))
        assert status == 422, body
        causes = [(c["field"], c["message"]) for c in body["details"]["causes"]]
        assert (field, message) in causes, causes
        assert body["message"].startswith(
            f'CustomResourceDefinition.apiextensions.k8s.io "{CRD_NAME}" is invalid: '
        )
        assert f"{field}: {message}" in body["message"]
    status, _ = await harness.request("GET", f"{CRDS}/{CRD_NAME}")
    assert status == 404
    status, _ = await harness.request("GET", f"/apis/{GROUP}/v1")
    assert status == 404
    code, _, err = await kubectl(harness, "get", "widgets")
    assert code != 0 and "the server doesn't have a resource type" in err
