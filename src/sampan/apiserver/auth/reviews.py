"""Review APIs over authentication and RBAC: the bodies of ``authorization.k8s.io/v1``
(Self/Local)SubjectAccessReview and SelfSubjectRulesReview, ``authentication.k8s.io/v1``
SelfSubjectReview, and the service-account issuer discovery documents.

Pure functions from request specs to status dicts; the HTTP layer owns routing, decoding and
authorizing the review request itself. ``kubectl auth can-i`` (and ``--list``) and
``kubectl auth whoami`` are the main clients.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from sampan.apiserver.auth.rbac import Attributes, Decision, RBACAuthorizer
from sampan.apiserver.auth.serviceaccount import PublicKey, key_id, load_public_key
from sampan.apiserver.auth.user import UserInfo

__all__ = [
    "JWKS_PATH",
    "OPENID_CONFIGURATION_PATH",
    "ReviewError",
    "access_review_status",
    "attributes_from_access_review",
    "openid_configuration",
    "rules_review_status",
    "self_subject_review_status",
    "service_account_jwks",
    "user_from_access_review",
]

OPENID_CONFIGURATION_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"


class ReviewError(ValueError):
    """The review spec is invalid; the HTTP layer answers 422/400 with this message."""


def user_from_access_review(spec: Mapping[str, Any]) -> UserInfo:
    """The user a SubjectAccessReview asks about (``spec.user``/``groups``/``uid``/``extra``)."""
    user = spec.get("user") or ""
    groups = tuple(spec.get("groups") or ())
    if not user and not groups:
        raise ReviewError("at least one of user or group must be specified")
    extra = {k: tuple(v or ()) for k, v in (spec.get("extra") or {}).items()}
    return UserInfo(name=user, uid=spec.get("uid") or "", groups=groups, extra=extra)


def attributes_from_access_review(spec: Mapping[str, Any], user: UserInfo) -> Attributes:
    """Attributes from ``spec.resourceAttributes`` or ``spec.nonResourceAttributes``.

    For a LocalSubjectAccessReview pass the spec with the URL's namespace already checked
    against ``resourceAttributes.namespace``.
    """
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if bool(resource) == bool(non_resource):
        raise ReviewError(
            "exactly one of nonResourceAttributes or resourceAttributes must be specified"
        )
    if resource:
        return Attributes(
            user=user,
            verb=resource.get("verb") or "",
            namespace=resource.get("namespace") or "",
            api_group=resource.get("group") or "",
            resource=resource.get("resource") or "",
            subresource=resource.get("subresource") or "",
            name=resource.get("name") or "",
            resource_request=True,
        )
    return Attributes(
        user=user,
        verb=non_resource.get("verb") or "",
        path=non_resource.get("path") or "",
        resource_request=False,
    )


def access_review_status(decision: Decision) -> dict[str, Any]:
    """``SubjectAccessReviewStatus``: ``allowed`` always present, ``reason`` when known."""
    status: dict[str, Any] = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    return status


def rules_review_status(
    authorizer: RBACAuthorizer, user: UserInfo, namespace: str
) -> dict[str, Any]:
    """``SubjectRulesReviewStatus`` for a SelfSubjectRulesReview in ``namespace``."""
    resource_rules, non_resource_rules, incomplete = authorizer.rules_for(user, namespace)
    return {
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": incomplete,
    }


def self_subject_review_status(user: UserInfo) -> dict[str, Any]:
    """``SelfSubjectReviewStatus`` (``kubectl auth whoami``)."""
    return {"userInfo": user.to_dict()}


def service_account_jwks(public_keys: Iterable[bytes | str | PublicKey]) -> dict[str, Any]:
    """The JSON Web Key Set served at ``/openid/v1/jwks``."""
    keys = []
    for raw in public_keys:
        key = load_public_key(raw)
        if isinstance(key, rsa.RSAPublicKey):
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
            jwk["alg"] = "RS256"
        else:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
            jwk["alg"] = "ES256"
        jwk["use"] = "sig"
        jwk["kid"] = key_id(key)
        keys.append(jwk)
    return {"keys": keys}


def openid_configuration(
    issuer: str, jwks_uri: str, public_keys: Iterable[bytes | str | PublicKey]
) -> dict[str, Any]:
    """The OIDC discovery document served at ``/.well-known/openid-configuration``."""
    algorithms = sorted({jwk["alg"] for jwk in service_account_jwks(public_keys)["keys"]})
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
    }
