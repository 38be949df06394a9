"""The API server's authorizer chain: Node, then RBAC (``--authorization-mode=Node,RBAC``).

``UnionAuthorizer.authorize`` asks each authorizer in order; the first that allows decides
(none of Sampan's authorizers denies outright). When none allows, the reasons of those that
gave one are joined with newlines, as kube-apiserver's union authorizer does, and end up
after the colon of the 403 message (``... in the namespace "x": no relationship found ...``).

``rules_for`` (SelfSubjectRulesReview, escalation checks) is RBAC's: the Node authorizer
cannot enumerate what it allows, so for node users the answer is marked incomplete, as
upstream's rule resolver chain marks it.
"""

from __future__ import annotations

from sampan.apiserver.auth.node import NodeAuthorizer, node_identity
from sampan.apiserver.auth.rbac import Attributes, Decision, RBACAuthorizer
from sampan.apiserver.auth.user import UserInfo

__all__ = ["UnionAuthorizer"]


class UnionAuthorizer:
    """Node then RBAC (module docstring). ``rbac`` stays reachable for RBAC-only checks."""

    def __init__(self, node: NodeAuthorizer, rbac: RBACAuthorizer) -> None:
        self.node = node
        self.rbac = rbac

    def authorize(self, attrs: Attributes) -> Decision:
        reasons: list[str] = []
        for authorizer in (self.node, self.rbac):
            decision = authorizer.authorize(attrs)
            if decision.allowed:
                return decision
            if decision.reason:
                reasons.append(decision.reason)
        return Decision(False, "\n".join(reasons))

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[dict], list[dict], bool]:
        resource_rules, non_resource_rules, incomplete = self.rbac.rules_for(user, namespace)
        _name, is_node = node_identity(user)
        return resource_rules, non_resource_rules, incomplete or is_node
