"""Pure parts of admission.webhooks: rule matching, ordering, endpoint choice, denials."""

from __future__ import annotations

import pytest

from sampan.apiserver.admission.webhooks import (
    compile_configurations,
    denied,
    pick_endpoint,
)


def config(name: str, *hooks: str, rules: list | None = None) -> dict:
    return {
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": hook,
                "rules": rules
                or [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
            }
            for hook in hooks
        ],
    }


def test_order_is_configuration_name_then_position():
    hooks = compile_configurations(
        [config("b", "b1.x.y", "b0.x.y"), config("a", "a1.x.y")], mutating=True
    )
    assert [h.name for h in hooks] == ["a1.x.y", "b1.x.y", "b0.x.y"]


@pytest.mark.parametrize(
    ("resources", "resource", "sub", "expected"),
    [
        (["pods"], "pods", "", True),
        (["pods"], "pods", "status", False),
        (["pods/status"], "pods", "status", True),
        (["pods/*"], "pods", "status", True),
        (["*"], "pods", "", True),
        (["*"], "pods", "status", False),
        (["*/*"], "pods", "status", True),
        (["*/status"], "services", "status", True),
        (["services"], "pods", "", False),
    ],
)
def test_resource_rules(resources, resource, sub, expected):
    rule = {"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": resources}
    (hook,) = compile_configurations([config("c", "h.x.y", rules=[rule])], mutating=False)
    assert hook.rules[0].matches("UPDATE", "", "v1", resource, sub, True) is expected


def test_scope_and_operations():
    rule = {
        "operations": ["CREATE", "DELETE"],
        "apiGroups": ["apps"],
        "apiVersions": ["v1"],
        "resources": ["*"],
        "scope": "Namespaced",
    }
    (hook,) = compile_configurations([config("c", "h.x.y", rules=[rule])], mutating=False)
    (r,) = hook.rules
    assert r.matches("CREATE", "apps", "v1", "deployments", "", True)
    assert not r.matches("UPDATE", "apps", "v1", "deployments", "", True)
    assert not r.matches("CREATE", "apps", "v1", "deployments", "", False)
    assert not r.matches("CREATE", "", "v1", "pods", "", True)


SERVICE = {
    "metadata": {"name": "hooks", "namespace": "default"},
    "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]},
}


def test_endpoint_from_slices_skips_unready():
    slices = [
        {
            "ports": [{"name": "https", "port": 8443}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": False}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
            ],
        }
    ]
    assert pick_endpoint(SERVICE, slices, None, 443) == ("10.0.0.2", 8443)


def test_endpoint_from_endpoints_and_errors():
    endpoints = {
        "subsets": [
            {
                "addresses": [{"ip": "127.0.0.1"}],
                "notReadyAddresses": [{"ip": "127.0.0.9"}],
                "ports": [{"name": "https", "port": 9443}],
            }
        ]
    }
    assert pick_endpoint(SERVICE, [], endpoints, 443) == ("127.0.0.1", 9443)
    with pytest.raises(LookupError, match='no endpoints available for service "hooks"'):
        pick_endpoint(SERVICE, [], {"subsets": []}, 443)
    with pytest.raises(LookupError, match="no service port 444"):
        pick_endpoint(SERVICE, [], endpoints, 444)


def test_denials():
    error = denied("h.x.y", {"message": "nope", "code": 200})
    assert (error.code, error.message) == (
        400,
        'admission webhook "h.x.y" denied the request: nope',
    )
    error = denied("h.x.y", {"reason": "Forbidden"})
    assert error.message == 'admission webhook "h.x.y" denied the request: Forbidden'
    error = denied("h.x.y", None)
    assert error.message == 'admission webhook "h.x.y" denied the request without explanation'
    error = denied("h.x.y", {"code": 429, "message": "slow down", "reason": "TooManyRequests"})
    assert (error.code, error.reason) == (429, "TooManyRequests")


def _causes(rule: dict) -> list[str]:
    from sampan.api.resources import builtin_registry
    from sampan.api.validation import validate_create

    info = builtin_registry().by_resource(
        "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations"
    )
    obj = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "c"},
        "webhooks": [
            {
                "name": "h.x.y",
                "clientConfig": {"url": "https://h.example/"},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "rules": [rule],
            }
        ],
    }
    return [f"{c.field}: {c.message}" for c in validate_create(info, obj)]


def test_rule_validation():
    base = {"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"]}
    assert _causes({**base, "resources": ["pods", "pods/status", "*/scale"]}) == []
    assert _causes({**base, "resources": ["*", "pods"]}) == [
        'webhooks[0].rules[0].resources: Invalid value: []string{"*", "pods"}: '
        "if '*' is present, must not specify other resources without subresources"
    ]
    assert _causes({**base, "resources": ["pods/*", "pods/status"]}) == [
        'webhooks[0].rules[0].resources[1]: Invalid value: "pods/status": '
        "if 'pods/*' is present, must not specify pods/status"
    ]
    assert _causes({**base, "resources": ["*/*", "pods"]})[0].endswith(
        "if '*/*' is present, must not specify other resources"
    )
    assert _causes({**base, "apiGroups": ["*", "apps"], "resources": ["pods"]}) == [
        'webhooks[0].rules[0].apiGroups: Invalid value: []string{"*", "apps"}: '
        "if '*' is present, must not specify other API groups"
    ]
    assert _causes({**base, "operations": [], "resources": ["pods"]}) == [
        "webhooks[0].rules[0].operations: Required value"
    ]
