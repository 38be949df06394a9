"""Review bodies (kubectl auth can-i / --list / whoami) and issuer discovery documents."""

from __future__ import annotations

import jwt
import pytest

from sampan.apiserver.auth import (
    SYSTEM_AUTHENTICATED,
    RBACAuthorizer,
    StaticRBACSource,
    TokenIssuer,
    UserInfo,
)
from sampan.apiserver.auth.bootstrap import bootstrap_policy
from sampan.apiserver.auth.reviews import (
    ReviewError,
    access_review_status,
    attributes_from_access_review,
    openid_configuration,
    rules_review_status,
    self_subject_review_status,
    service_account_jwks,
    user_from_access_review,
)
from sampan.pki.certs import generate_ec_key, generate_rsa_key, key_to_pem, public_key_to_pem


@pytest.fixture(scope="module")
def authz() -> RBACAuthorizer:
    policy = bootstrap_policy()
    return RBACAuthorizer(
        StaticRBACSource(
            cluster_role_list=[o for o in policy if o["kind"] == "ClusterRole"],
            cluster_role_binding_list=[o for o in policy if o["kind"] == "ClusterRoleBinding"],
        )
    )


ADMIN = UserInfo("system:admin", groups=("system:masters", SYSTEM_AUTHENTICATED))
JANE = UserInfo("jane", groups=(SYSTEM_AUTHENTICATED,))


def test_can_i_resource(authz) -> None:
    spec = {"resourceAttributes": {"namespace": "demo", "verb": "create", "resource": "pods"}}
    attrs = attributes_from_access_review(spec, JANE)
    assert attrs.namespace == "demo" and attrs.verb == "create" and attrs.resource_request
    assert access_review_status(authz.authorize(attrs)) == {"allowed": False}
    assert access_review_status(authz.authorize(attributes_from_access_review(spec, ADMIN))) == {
        "allowed": True
    }


def test_can_i_non_resource(authz) -> None:
    spec = {"nonResourceAttributes": {"path": "/apis", "verb": "get"}}
    status = access_review_status(authz.authorize(attributes_from_access_review(spec, JANE)))
    assert status["allowed"] is True
    assert 'ClusterRoleBinding "system:discovery"' in status["reason"]


def test_bad_specs() -> None:
    with pytest.raises(ReviewError):
        attributes_from_access_review({}, JANE)
    with pytest.raises(ReviewError):
        attributes_from_access_review(
            {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/"}}, JANE
        )
    with pytest.raises(ReviewError):
        user_from_access_review({"resourceAttributes": {}})


def test_subject_access_review_user() -> None:
    user = user_from_access_review(
        {"user": "bob", "groups": ["g1"], "uid": "u", "extra": {"k": ["v"]}}
    )
    assert user == UserInfo("bob", uid="u", groups=("g1",), extra={"k": ("v",)})


def test_rules_review(authz) -> None:
    status = rules_review_status(authz, JANE, "demo")
    assert status["incomplete"] is False
    assert {
        "verbs": ["create"],
        "apiGroups": ["authentication.k8s.io"],
        "resources": ["selfsubjectreviews"],
    } in status["resourceRules"]
    assert any("/apis/*" in r["nonResourceURLs"] for r in status["nonResourceRules"])
    admin = rules_review_status(authz, ADMIN, "demo")
    assert {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]} in admin["resourceRules"]


def test_whoami() -> None:
    user = UserInfo("jane", uid="1", groups=("devs", SYSTEM_AUTHENTICATED), extra={"a": ("b",)})
    assert self_subject_review_status(user) == {
        "userInfo": {
            "username": "jane",
            "uid": "1",
            "groups": ["devs", SYSTEM_AUTHENTICATED],
            "extra": {"a": ["b"]},
        }
    }
    assert self_subject_review_status(UserInfo("x")) == {"userInfo": {"username": "x"}}


def test_jwks_verifies_issued_tokens() -> None:
    rsa_key, ec_key = generate_rsa_key(), generate_ec_key()
    jwks = service_account_jwks([public_key_to_pem(rsa_key), public_key_to_pem(ec_key)])
    assert [k["alg"] for k in jwks["keys"]] == ["RS256", "ES256"]
    client = jwt.PyJWKSet.from_dict(jwks)
    for key in (rsa_key, ec_key):
        token, _ = TokenIssuer(key_to_pem(key)).issue("demo", "robot", "uid", audiences=["x"])
        kid = jwt.get_unverified_header(token)["kid"]
        (match,) = [k for k in client.keys if k.key_id == kid]
        claims = jwt.decode(token, match.key, algorithms=[match.algorithm_name], audience="x")
        assert claims["sub"] == "system:serviceaccount:demo:robot"
    config = openid_configuration(
        "https://kubernetes.default.svc.cluster.local",
        "https://10.0.0.1:6443/openid/v1/jwks",
        [public_key_to_pem(rsa_key)],
    )
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    assert config["issuer"] == "https://kubernetes.default.svc.cluster.local"
