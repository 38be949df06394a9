"""ValidatingAdmissionPolicy and its bindings with the real kubectl 1.32.

The documentation's example (Deployments limited to 5 replicas) with Deny, Warn, the scale
subresource, params from a ConfigMap, variables, messageExpression, matchConditions,
namespaceSelector; policies whose CEL does not compile are refused at write time; a
pathological expression is stopped by the cost bound.
"""

from __future__ import annotations

import asyncio
import os

import pytest
import yaml

from tests.apiserver.test_crd import KUBECTL, dump, kubectl, ok

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")

POLICY = "demo-policy.example.com"
BINDING = "demo-binding-test.example.com"
ATTEMPTS = 200


def policy(
    expression: str = "object.spec.replicas <= 5",
    *,
    resources: tuple[str, ...] = ("deployments",),
    **extra: object,
) -> dict:
    spec: dict = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": ["apps"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": list(resources),
                }
            ]
        },
        "validations": [{"expression": expression}],
    }
    spec.update(extra)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": spec,
    }


def binding(actions: tuple[str, ...] = ("Deny",), **extra: object) -> dict:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": BINDING},
        "spec": {"policyName": POLICY, "validationActions": list(actions), **extra},
    }


def deployment(name: str, replicas: int, namespace: str = "default") -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }


async def wait_refused(harness, obj: dict) -> str:
    """Server-side dry runs until the policy (in the watch cache) refuses ``obj``."""
    for _ in range(ATTEMPTS):
        code, _, err = await kubectl(
            harness, "create", "--dry-run=server", "-f", "-", stdin=dump(obj)
        )
        if code != 0:
            return err.strip()
    raise AssertionError("the policy never took effect")


async def test_deny_replicas_documentation_example(harness):
    await ok(harness, "create", "-f", "-", stdin=dump(policy()))
    await ok(harness, "create", "-f", "-", stdin=dump(binding()))
    expected = (
        f"ValidatingAdmissionPolicy '{POLICY}' with binding '{BINDING}' denied request: "
        "failed expression: object.spec.replicas <= 5"
    )
    err = await wait_refused(harness, deployment("big", 100))
    # kubectl words a 422 from its details, as the documentation shows it.
    assert err == f'The deployments "big" is invalid: : {expected}'

    code, _, err = await kubectl(
        harness, "create", "deployment", "web", "--image=nginx", "--replicas=100"
    )
    assert code != 0
    assert f'failed to create deployment: deployments.apps "web" is forbidden: {expected}' in err
    code, _, err = await kubectl(harness, "apply", "-f", "-", stdin=dump(deployment("web", 100)))
    assert code != 0
    assert expected in err

    await ok(harness, "create", "-f", "-", stdin=dump(deployment("web", 3)))
    # The documentation's policy matches deployments, not deployments/scale: kubectl scale is
    # not judged by it (as upstream).
    await ok(harness, "scale", "deployment", "web", "--replicas=100")
    await ok(harness, "scale", "deployment", "web", "--replicas=3")

    # Matching the scale subresource too: the policy sees the Scale object.
    await ok(
        harness,
        "apply",
        "-f",
        "-",
        stdin=dump(policy(resources=("deployments", "deployments/scale"))),
    )
    for _ in range(ATTEMPTS):
        code, _, err = await kubectl(harness, "scale", "deployment", "web", "--replicas=100")
        if code != 0:
            break
        await ok(harness, "scale", "deployment", "web", "--replicas=3")
    assert code != 0
    assert expected in err
    await ok(harness, "scale", "deployment", "web", "--replicas=4")
    # An update that keeps replicas within the bound passes.
    await ok(harness, "label", "deployment", "web", "tier=front")


async def test_warn_action(harness):
    await ok(harness, "create", "-f", "-", stdin=dump(policy()))
    await ok(harness, "create", "-f", "-", stdin=dump(binding(("Warn",))))
    await ok(harness, "create", "-f", "-", stdin=dump(deployment("warm", 1)))
    message = (
        f"Warning: Validation failed for ValidatingAdmissionPolicy '{POLICY}' with binding "
        f"'{BINDING}': failed expression: object.spec.replicas <= 5"
    )
    for i in range(ATTEMPTS):
        code, _, err = await kubectl(
            harness, "create", "-f", "-", stdin=dump(deployment(f"big{i}", 100))
        )
        assert code == 0, err
        if message in err:
            break
    else:
        raise AssertionError("no warning")


async def test_params_variables_message_expression_and_selectors(harness):
    await ok(harness, "create", "namespace", "test")
    await ok(harness, "label", "namespace", "test", "environment=test")
    await ok(harness, "create", "namespace", "prod")
    await ok(
        harness, "create", "configmap", "limits", "-n", "default", "--from-literal=maxReplicas=3"
    )
    spec = policy(
        "object.spec.replicas <= variables.limit",
        paramKind={"apiVersion": "v1", "kind": "ConfigMap"},
        variables=[{"name": "limit", "expression": "int(params.data.maxReplicas)"}],
        matchConditions=[
            {
                "name": "not-exempt",
                "expression": "!('exempt' in object.metadata.?labels.orValue({}))",
            }
        ],
    )
    spec["spec"]["validations"][0]["messageExpression"] = (
        "'replicas must be no greater than ' + string(variables.limit)"
    )
    spec["spec"]["validations"][0]["reason"] = "Forbidden"
    await ok(harness, "create", "-f", "-", stdin=dump(spec))
    await ok(
        harness,
        "create",
        "-f",
        "-",
        stdin=dump(
            binding(
                paramRef={
                    "name": "limits",
                    "namespace": "default",
                    "parameterNotFoundAction": "Deny",
                },
                matchResources={"namespaceSelector": {"matchLabels": {"environment": "test"}}},
            )
        ),
    )
    err = await wait_refused(harness, deployment("d", 4, "test"))
    assert err == (
        'Error from server (Forbidden): error when creating "STDIN": deployments.apps "d" is '
        f"forbidden: ValidatingAdmissionPolicy '{POLICY}' with binding '{BINDING}' denied "
        "request: replicas must be no greater than 3"
    )
    await ok(harness, "create", "-f", "-", stdin=dump(deployment("d", 3, "test")))
    # Another namespace is not selected; an exempt object is not matched.
    await ok(harness, "create", "-f", "-", stdin=dump(deployment("p", 10, "prod")))
    exempt = deployment("e", 10, "test")
    exempt["metadata"]["labels"] = {"exempt": "yes"}
    await ok(harness, "create", "-f", "-", stdin=dump(exempt))
    # The param changes: the limit follows.
    await ok(harness, "patch", "configmap", "limits", "-p", '{"data":{"maxReplicas":"10"}}')
    for _ in range(ATTEMPTS):
        code, _, err = await kubectl(
            harness, "create", "-f", "-", stdin=dump(deployment("later", 8, "test"))
        )
        if code == 0:
            break
    assert code == 0, err
    # The param disappears: parameterNotFoundAction Deny refuses.
    await ok(harness, "delete", "configmap", "limits")
    err = await wait_refused(harness, deployment("gone", 1, "test"))
    assert "no params found for policy binding with `Deny` parameterNotFoundAction" in err


async def test_invalid_cel_refused_at_write_time(harness):
    code, _, err = await kubectl(
        harness, "create", "-f", "-", stdin=dump(policy("object.spec.replicas <="))
    )
    assert code != 0
    assert err.startswith(
        f'The ValidatingAdmissionPolicy "{POLICY}" is invalid: spec.validations[0].expression: '
        'Invalid value: "object.spec.replicas <=": compilation failed: ERROR: <input>:1:'
    )
    code, _, err = await kubectl(
        harness, "create", "-f", "-", stdin=dump(policy("authorizer.groups('') != null"))
    )
    assert code != 0
    assert "undeclared reference to 'groups'" in err
    code, _, err = await kubectl(
        harness, "create", "-f", "-", stdin=dump(binding(("Deny", "Warn")))
    )
    assert code != 0
    assert "must not contain both Deny and Warn" in err
    code, _, err = await kubectl(harness, "create", "-f", "-", stdin=dump(binding(("Block",))))
    assert code != 0
    assert 'spec.validationActions[0]: Unsupported value: "Block"' in err


async def test_cost_limit_refuses_and_server_stays_responsive(harness):
    expression = (
        "object.spec.template.spec.containers.all(a, "
        "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19].all(b, "
        "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19].all(c, "
        "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19].all(d, "
        "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19].all(e, true)))))"
    )
    await ok(harness, "create", "-f", "-", stdin=dump(policy(expression)))
    await ok(harness, "create", "-f", "-", stdin=dump(binding()))
    err = await wait_refused(harness, deployment("slow", 1))
    assert "resulted in error: operation cancelled: actual cost limit exceeded" in err
    await ok(harness, "get", "deployments")


async def test_delete_sees_old_object_and_defaults_are_applied(harness):
    protect = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["DELETE"],
                        "resources": ["configmaps"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "oldObject.metadata.name != 'keep' && object == null",
                    "message": "this ConfigMap is protected",
                }
            ],
        },
    }
    await ok(harness, "create", "-f", "-", stdin=dump(protect))
    await ok(harness, "create", "-f", "-", stdin=dump(binding()))
    stored = yaml.safe_load(
        await ok(harness, "get", "validatingadmissionpolicy", POLICY, "-o", "yaml")
    )
    assert stored["spec"]["failurePolicy"] == "Fail"
    assert stored["spec"]["matchConstraints"]["matchPolicy"] == "Equivalent"
    assert stored["spec"]["matchConstraints"]["namespaceSelector"] == {}
    assert stored["spec"]["matchConstraints"]["resourceRules"][0]["scope"] == "*"
    await ok(harness, "create", "configmap", "keep")
    await ok(harness, "create", "configmap", "other")
    await ok(harness, "delete", "configmap", "other")
    for _ in range(ATTEMPTS):
        code, _, err = await kubectl(harness, "delete", "configmap", "keep", "--dry-run=server")
        if code != 0:
            break
    assert code != 0
    assert "this ConfigMap is protected" in err
    await ok(harness, "get", "configmap", "keep")


async def test_type_checking_status(harness):
    """The documentation's type-checking example: a misspelt field is reported in
    status.typeChecking for each kind the policy names."""
    spec = policy("object.replicas > 1", resources=("deployments", "replicasets"))
    spec["spec"]["validations"][0]["message"] = "must be replicated"
    await ok(harness, "create", "-f", "-", stdin=dump(spec))
    for _ in range(ATTEMPTS):
        stored = yaml.safe_load(
            await ok(harness, "get", "validatingadmissionpolicy", POLICY, "-o", "yaml")
        )
        if stored.get("status", {}).get("observedGeneration") == 1:
            break
        await asyncio.sleep(0.05)
    warnings = stored["status"]["typeChecking"]["expressionWarnings"]
    assert warnings == [
        {
            "fieldRef": "spec.validations[0].expression",
            "warning": "apps/v1, Kind=Deployment: ERROR: <input>:1:7: undefined field 'replicas'\n"
            " | object.replicas > 1\n"
            " | ......^\n"
            "apps/v1, Kind=ReplicaSet: ERROR: <input>:1:7: undefined field 'replicas'\n"
            " | object.replicas > 1\n"
            " | ......^",
        }
    ]
    # Fixed: the next generation has no warnings.
    spec["spec"]["validations"][0]["expression"] = "object.spec.replicas > 1"
    await ok(harness, "apply", "-f", "-", stdin=dump(spec))
    for _ in range(ATTEMPTS):
        stored = yaml.safe_load(
            await ok(harness, "get", "validatingadmissionpolicy", POLICY, "-o", "yaml")
        )
        if stored.get("status", {}).get("observedGeneration") == 2:
            break
        await asyncio.sleep(0.05)
    assert stored["status"]["observedGeneration"] == 2
    assert stored["status"]["typeChecking"] == {}


async def test_authorizer_variable(harness):
    await ok(
        harness, "create", "role", "creator", "--verb=create,get,list", "--resource=deployments"
    )
    await ok(harness, "create", "rolebinding", "jane", "--role=creator", "--user=jane")
    spec = policy(
        "authorizer.group('apps').resource('deployments').namespace(request.namespace)"
        ".check('delete').allowed()"
    )
    spec["spec"]["validations"][0]["messageExpression"] = (
        "'user ' + request.userInfo.username + ' may not delete deployments here'"
    )
    await ok(harness, "create", "-f", "-", stdin=dump(spec))
    await ok(harness, "create", "-f", "-", stdin=dump(binding()))
    for i in range(ATTEMPTS):
        code, _, err = await kubectl(
            harness, "create", "--as=jane", "-f", "-", stdin=dump(deployment(f"j{i}", 1))
        )
        if code != 0:
            break
    assert code != 0
    assert "denied request: user jane may not delete deployments here" in err
    # The admin (system:masters) may delete, so its creates pass.
    await ok(harness, "create", "-f", "-", stdin=dump(deployment("admin", 1)))
