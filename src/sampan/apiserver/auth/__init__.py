"""Authentication and authorization for the API server.

* ``sampan.apiserver.auth.user``: ``UserInfo``, well-known names, the ``TokenLookup`` and
  ``TokenAuthenticator`` protocols, ``AuthenticationError``;
* ``sampan.apiserver.auth.authn``: ``Authenticator`` (client certificates, then bearer tokens);
* ``sampan.apiserver.auth.serviceaccount``: ``TokenIssuer`` and service-account JWT checks;
* ``sampan.apiserver.auth.rbac``: ``RBACAuthorizer``, ``Attributes``, ``Decision``,
  ``forbidden_message``, ``aggregate_cluster_role``;
* ``sampan.apiserver.auth.node``: ``NodeAuthorizer`` and its ``NodeGraph`` (what each kubelet
  may reach), ``node_identity``;
* ``sampan.apiserver.auth.union``: ``UnionAuthorizer`` (Node, then RBAC: the server's chain);
* ``sampan.apiserver.auth.bootstrap``: ``bootstrap_policy()`` (cluster-scoped defaults),
  ``bootstrap_namespaced_policy()`` (kube-system Roles and RoleBindings), ``node_rules()``;
* ``sampan.apiserver.auth.escalation``: ``RBACEscalation``, the admission plugin that keeps
  Role/ClusterRole/RoleBinding/ClusterRoleBinding writes from granting more than the writer
  holds (upstream's escalate/bind rules and messages);
* ``sampan.apiserver.auth.reviews``: the service-account issuer discovery documents (OIDC
  configuration and JWKS), served by the API server.
"""

from sampan.apiserver.auth.authn import (
    Authenticator,
    RequestHeaderConfig,
    user_from_certificate,
)
from sampan.apiserver.auth.rbac import (
    Attributes,
    Decision,
    RBACAuthorizer,
    RBACSource,
    StaticRBACSource,
    aggregate_cluster_role,
    forbidden_message,
)
from sampan.apiserver.auth.serviceaccount import (
    DEFAULT_API_AUDIENCES,
    DEFAULT_ISSUER,
    LEGACY_ISSUER,
    ServiceAccountTokenAuthenticator,
    TokenIssuer,
)
from sampan.apiserver.auth.user import (
    ANONYMOUS,
    SYSTEM_AUTHENTICATED,
    SYSTEM_MASTERS,
    SYSTEM_UNAUTHENTICATED,
    AuthenticationError,
    TokenAuthenticator,
    TokenLookup,
    UserInfo,
)

__all__ = [
    "ANONYMOUS",
    "DEFAULT_API_AUDIENCES",
    "DEFAULT_ISSUER",
    "LEGACY_ISSUER",
    "SYSTEM_AUTHENTICATED",
    "SYSTEM_MASTERS",
    "SYSTEM_UNAUTHENTICATED",
    "Attributes",
    "AuthenticationError",
    "Authenticator",
    "Decision",
    "RBACAuthorizer",
    "RBACSource",
    "RequestHeaderConfig",
    "ServiceAccountTokenAuthenticator",
    "StaticRBACSource",
    "TokenAuthenticator",
    "TokenIssuer",
    "TokenLookup",
    "UserInfo",
    "aggregate_cluster_role",
    "forbidden_message",
    "user_from_certificate",
]
