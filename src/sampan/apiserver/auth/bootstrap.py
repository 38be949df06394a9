"""The RBAC objects every Sampan cluster starts with (``bootstrap_policy()``).

The upstream (Kubernetes 1.32) default roles users and tools rely on — cluster-admin, the
aggregated admin/edit/view with their ``system:aggregate-to-*`` parts, discovery, basic-user,
public-info-viewer, node, node-proxier, scheduler, controller-manager, kube-dns,
auth-delegator, monitoring — with the same names and rules, plus Sampan's own component roles.

Sampan's component identities (client certificates the server issues; document changes here):

* ``system:admin`` in group ``system:masters``: cluster-admin (and the privileged-group
  shortcut in the authorizer);
* ``system:sampan-controller``: ``system:sampan-controller`` (all in-process controllers);
* ``system:kube-scheduler``: ``system:kube-scheduler`` and ``system:volume-scheduler``;
* ``system:kube-controller-manager``: ``system:kube-controller-manager`` (kept for tools
  that expect it; Sampan's controllers use ``system:sampan-controller``);
* ``system:kube-proxy``: ``system:node-proxier`` and ``system:sampan-servicelb`` (patch
  ``services/status``: the proxy's minimal ServiceLB writes LoadBalancer ingress IPs);
* ``system:node:<node>`` in group ``system:nodes``: nothing through RBAC. As upstream, the
  ``system:node`` ClusterRoleBinding has no subjects: the Node authorizer (``auth/node.py``)
  gives each kubelet the ``system:node`` rules and only its own node's objects, and
  NodeRestriction admission narrows its writes;
* ``system:sampan-agent``: ``system:sampan-agent`` — list/watch Nodes (network), Services and
  EndpointSlices (DNS); get/list/watch/delete PersistentVolumes and write events (the node
  half of local-path removes released volumes: its checks, not RBAC, keep it to its own
  storage root). It writes nothing else: the network component annotates its own Node with
  the node's credential, and the server creates the kube-dns Service; and
  ``system:sampan-network-policy`` — list/watch NetworkPolicies, Pods and Namespaces (the
  network policy component; kube-router's ClusterRole has the same reads);
* ``system:sampan-ingress``: ``system:sampan-ingress`` — the ingress controller (list/watch
  Ingresses, IngressClasses, Services, EndpointSlices, Nodes and Secrets — TLS Secrets are
  read cluster-wide, as ingress-nginx's ServiceAccount does; patch/update
  ``ingresses/status``; events). A separate identity so the agent's own stays secret-free;
* service account ``kube-system/kube-dns``: ``system:kube-dns``;
* group ``system:nodes``: ``system:certificates.k8s.io:certificatesigningrequests:
  selfnodeclient`` through ``sampan:node-autoapprove-certificate-rotation`` (kubeadm's
  binding), so csrapproving approves a node's CSR for its own client certificate.

Deliberate differences from upstream, until the matching pieces exist:

* ``system:sampan-controller`` is one broad role for all of Sampan's in-process controllers
  (upstream has one narrow role per controller): every verb a controller uses on every
  resource, but none of the escalating verbs (``escalate``, ``bind``, ``impersonate``) and
  no non-resource URLs; ``approve`` and ``sign`` only on the signers upstream's
  certificate-controller role names (csrapproving, csrsigning).

Reconciliation at start only adds what a bootstrap object lacks (as upstream), except for the
objects in ``NARROWED_POLICY``: Sampan once granted more there (the ``system:nodes`` group in
the ``system:node`` binding; writes in ``system:sampan-agent``; get/update in
``system:sampan-servicelb``), so while they keep ``autoupdate: "true"`` their rules or
subjects are set back to exactly the bootstrap ones.

The scheduler's leader-election Lease must be ``kube-system/kube-scheduler`` (its role only
allows get/update on that name), as upstream.

``bootstrap_namespaced_policy()`` adds upstream's kube-system Roles and RoleBindings that
add-ons expect to find (``extension-apiserver-authentication-reader``, which metrics-server's
manifests bind to, and the leader-locking roles); create them after the namespaces exist.

Aggregated roles (admin, edit, view) are returned with their rules already computed by
``aggregate_cluster_role`` so they are useful before any aggregation controller runs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from sampan.apiserver.auth.rbac import aggregate_cluster_role

__all__ = [
    "AGGREGATE_TO_ADMIN",
    "AGGREGATE_TO_EDIT",
    "AGGREGATE_TO_VIEW",
    "AUTOUPDATE_ANNOTATION",
    "BOOTSTRAPPING_LABEL",
    "NARROWED_POLICY",
    "SAMPAN_AGENT_USER",
    "SAMPAN_CONTROLLER_USER",
    "SAMPAN_INGRESS_USER",
    "bootstrap_namespaced_policy",
    "bootstrap_policy",
    "node_rules",
]

RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"
BOOTSTRAPPING_LABEL = ("kubernetes.io/bootstrapping", "rbac-defaults")
AUTOUPDATE_ANNOTATION = ("rbac.authorization.kubernetes.io/autoupdate", "true")
AGGREGATE_TO_ADMIN = "rbac.authorization.k8s.io/aggregate-to-admin"
AGGREGATE_TO_EDIT = "rbac.authorization.k8s.io/aggregate-to-edit"
AGGREGATE_TO_VIEW = "rbac.authorization.k8s.io/aggregate-to-view"

NARROWED_POLICY = frozenset(
    {
        ("ClusterRoleBinding", "system:node"),
        ("ClusterRole", "system:sampan-agent"),
        ("ClusterRole", "system:sampan-servicelb"),
    }
)
"""(kind, name) of bootstrap objects reconciled to exactly their bootstrap content."""

SAMPAN_CONTROLLER_USER = "system:sampan-controller"
SAMPAN_AGENT_USER = "system:sampan-agent"
SAMPAN_INGRESS_USER = "system:sampan-ingress"

READ = ("get", "list", "watch")
WRITE = ("create", "delete", "deletecollection", "patch", "update")
READ_WRITE = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
EVENT_WRITE = ("create", "patch", "update")

CORE = ""
APPS = "apps"
AUTHENTICATION = "authentication.k8s.io"
AUTHORIZATION = "authorization.k8s.io"
AUTOSCALING = "autoscaling"
BATCH = "batch"
CERTIFICATES = "certificates.k8s.io"
COORDINATION = "coordination.k8s.io"
DISCOVERY = "discovery.k8s.io"
EVENTS = "events.k8s.io"
EXTENSIONS = "extensions"
NETWORKING = "networking.k8s.io"
NODE = "node.k8s.io"
POLICY = "policy"
STORAGE = "storage.k8s.io"


def _rule(
    verbs: Sequence[str],
    groups: Sequence[str],
    resources: Sequence[str],
    names: Sequence[str] = (),
) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": list(groups), "resources": list(resources)}
    if names:
        rule["resourceNames"] = list(names)
    rule["verbs"] = list(verbs)
    return rule


def _urls(verbs: Sequence[str], urls: Sequence[str]) -> dict[str, Any]:
    return {"nonResourceURLs": list(urls), "verbs": list(verbs)}


def _metadata(name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {BOOTSTRAPPING_LABEL[0]: BOOTSTRAPPING_LABEL[1], **(extra_labels or {})}
    return {
        "name": name,
        "labels": labels,
        "annotations": {AUTOUPDATE_ANNOTATION[0]: AUTOUPDATE_ANNOTATION[1]},
    }


def _cluster_role(
    name: str,
    rules: list[dict[str, Any]],
    *,
    labels: dict[str, str] | None = None,
    aggregate_from: str | None = None,
) -> dict[str, Any]:
    role: dict[str, Any] = {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRole",
        "metadata": _metadata(name, labels),
        "rules": rules,
    }
    if aggregate_from is not None:
        role["aggregationRule"] = {
            "clusterRoleSelectors": [{"matchLabels": {aggregate_from: "true"}}]
        }
    return role


def _subject(kind: str, name: str, namespace: str = "") -> dict[str, str]:
    if kind == "ServiceAccount":
        return {"kind": kind, "name": name, "namespace": namespace}
    return {"apiGroup": RBAC_GROUP, "kind": kind, "name": name}


def _binding(name: str, subjects: list[dict[str, str]], role: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": _metadata(name),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role or name},
        "subjects": subjects,
    }


def _leader_lease_rules(lease_name: str) -> list[dict[str, Any]]:
    return [
        _rule(("create",), (COORDINATION,), ("leases",)),
        _rule(("get", "update"), (COORDINATION,), ("leases",), (lease_name,)),
    ]


def _user_facing_roles() -> list[dict[str, Any]]:
    aggregate_to_admin = [
        _rule(("create",), (AUTHORIZATION,), ("localsubjectaccessreviews",)),
        _rule(READ_WRITE, (RBAC_GROUP,), ("rolebindings", "roles")),
    ]
    aggregate_to_edit = [
        _rule(
            READ,
            (CORE,),
            (
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "secrets",
                "services/proxy",
            ),
        ),
        _rule(("impersonate",), (CORE,), ("serviceaccounts",)),
        _rule(
            WRITE,
            (CORE,),
            ("pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"),
        ),
        _rule(("create",), (CORE,), ("pods/eviction",)),
        _rule(
            WRITE,
            (CORE,),
            (
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ),
        ),
        _rule(("create",), (CORE,), ("serviceaccounts/token",)),
        _rule(
            WRITE,
            (APPS,),
            (
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ),
        ),
        _rule(WRITE, (AUTOSCALING,), ("horizontalpodautoscalers",)),
        _rule(WRITE, (BATCH,), ("cronjobs", "jobs")),
        _rule(
            WRITE,
            (EXTENSIONS,),
            (
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "ingresses",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
            ),
        ),
        _rule(WRITE, (POLICY,), ("poddisruptionbudgets",)),
        _rule(WRITE, (NETWORKING,), ("ingresses", "networkpolicies")),
        _rule(READ_WRITE, (COORDINATION,), ("leases",)),
    ]
    aggregate_to_view = [
        _rule(
            READ,
            (CORE,),
            (
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ),
        ),
        _rule(
            READ,
            (CORE,),
            (
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ),
        ),
        _rule(READ, (CORE,), ("namespaces",)),
        _rule(READ, (DISCOVERY,), ("endpointslices",)),
        _rule(
            READ,
            (APPS,),
            (
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ),
        ),
        _rule(
            READ, (AUTOSCALING,), ("horizontalpodautoscalers", "horizontalpodautoscalers/status")
        ),
        _rule(READ, (BATCH,), ("cronjobs", "cronjobs/status", "jobs", "jobs/status")),
        _rule(
            READ,
            (EXTENSIONS,),
            (
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
            ),
        ),
        _rule(READ, (POLICY,), ("poddisruptionbudgets", "poddisruptionbudgets/status")),
        _rule(READ, (NETWORKING,), ("ingresses", "ingresses/status", "networkpolicies")),
    ]
    return [
        _cluster_role(
            "cluster-admin",
            [_rule(("*",), ("*",), ("*",)), _urls(("*",), ("*",))],
        ),
        _cluster_role("admin", [], aggregate_from=AGGREGATE_TO_ADMIN),
        _cluster_role(
            "edit", [], labels={AGGREGATE_TO_ADMIN: "true"}, aggregate_from=AGGREGATE_TO_EDIT
        ),
        _cluster_role(
            "view", [], labels={AGGREGATE_TO_EDIT: "true"}, aggregate_from=AGGREGATE_TO_VIEW
        ),
        _cluster_role(
            "system:aggregate-to-admin", aggregate_to_admin, labels={AGGREGATE_TO_ADMIN: "true"}
        ),
        _cluster_role(
            "system:aggregate-to-edit", aggregate_to_edit, labels={AGGREGATE_TO_EDIT: "true"}
        ),
        _cluster_role(
            "system:aggregate-to-view", aggregate_to_view, labels={AGGREGATE_TO_VIEW: "true"}
        ),
    ]


def node_rules() -> list[dict[str, Any]]:
    """Upstream's NodeRules (1.32, default features): the rules of the ``system:node``
    ClusterRole, which the Node authorizer applies to every node for the resources it does not
    subdivide (``auth/node.py``)."""
    return [
        _rule(("create",), (AUTHENTICATION,), ("tokenreviews",)),
        _rule(("create",), (AUTHORIZATION,), ("localsubjectaccessreviews", "subjectaccessreviews")),
        _rule(READ, (CORE,), ("services",)),
        _rule(("create", "get", "list", "watch"), (CORE,), ("nodes",)),
        _rule(("patch", "update"), (CORE,), ("nodes/status",)),
        _rule(("patch", "update"), (CORE,), ("nodes",)),
        _rule(EVENT_WRITE, (CORE,), ("events",)),
        _rule(READ, (CORE,), ("pods",)),
        _rule(("create", "delete"), (CORE,), ("pods",)),
        _rule(("patch", "update"), (CORE,), ("pods/status",)),
        _rule(("create",), (CORE,), ("pods/eviction",)),
        _rule(READ, (CORE,), ("configmaps", "secrets")),
        _rule(("get",), (CORE,), ("persistentvolumeclaims", "persistentvolumes")),
        _rule(("get",), (CORE,), ("endpoints",)),
        _rule(("create", "get", "list", "watch"), (CERTIFICATES,), ("certificatesigningrequests",)),
        _rule(("create", "delete", "get", "patch", "update"), (COORDINATION,), ("leases",)),
        _rule(("get",), (STORAGE,), ("volumeattachments",)),
        _rule(("create",), (CORE,), ("serviceaccounts/token",)),
        _rule(("get", "patch", "update"), (CORE,), ("persistentvolumeclaims/status",)),
        _rule(READ, (STORAGE,), ("csidrivers",)),
        _rule(("create", "delete", "get", "patch", "update"), (STORAGE,), ("csinodes",)),
        _rule(READ, (NODE,), ("runtimeclasses",)),
    ]


def _system_roles() -> list[dict[str, Any]]:
    events_rule = _rule(EVENT_WRITE, (CORE, EVENTS), ("events",))
    return [
        _cluster_role(
            "system:discovery",
            [
                _urls(
                    ("get",),
                    (
                        "/api",
                        "/api/*",
                        "/apis",
                        "/apis/*",
                        "/healthz",
                        "/livez",
                        "/openapi",
                        "/openapi/*",
                        "/readyz",
                        "/version",
                        "/version/",
                    ),
                )
            ],
        ),
        _cluster_role(
            "system:basic-user",
            [
                _rule(
                    ("create",),
                    (AUTHORIZATION,),
                    ("selfsubjectaccessreviews", "selfsubjectrulesreviews"),
                ),
                _rule(("create",), (AUTHENTICATION,), ("selfsubjectreviews",)),
            ],
        ),
        _cluster_role(
            "system:public-info-viewer",
            [_urls(("get",), ("/healthz", "/livez", "/readyz", "/version", "/version/"))],
        ),
        _cluster_role(
            "system:monitoring",
            [
                _urls(
                    ("get",),
                    (
                        "/healthz",
                        "/healthz/*",
                        "/livez",
                        "/livez/*",
                        "/metrics",
                        "/metrics/slis",
                        "/readyz",
                        "/readyz/*",
                    ),
                )
            ],
        ),
        _cluster_role(
            "system:service-account-issuer-discovery",
            [_urls(("get",), ("/.well-known/openid-configuration", "/openid/v1/jwks"))],
        ),
        _cluster_role(
            "system:auth-delegator",
            [
                _rule(("create",), (AUTHENTICATION,), ("tokenreviews",)),
                _rule(("create",), (AUTHORIZATION,), ("subjectaccessreviews",)),
            ],
        ),
        _cluster_role("system:node", node_rules()),
        _cluster_role(
            "system:node-proxier",
            [
                _rule(("list", "watch"), (CORE,), ("endpoints", "services")),
                _rule(READ, (CORE,), ("nodes",)),
                events_rule,
                _rule(("list", "watch"), (DISCOVERY,), ("endpointslices",)),
            ],
        ),
        _cluster_role(
            "system:sampan-servicelb",
            [_rule(("patch",), (CORE,), ("services/status",))],
        ),
        _cluster_role(
            "system:node-bootstrapper",
            [
                _rule(
                    ("create", "get", "list", "watch"),
                    (CERTIFICATES,),
                    ("certificatesigningrequests",),
                )
            ],
        ),
        # Checked by csrapproving with a SubjectAccessReview for the CSR's requester.
        _cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            [_rule(("create",), (CERTIFICATES,), ("certificatesigningrequests/nodeclient",))],
        ),
        _cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            [_rule(("create",), (CERTIFICATES,), ("certificatesigningrequests/selfnodeclient",))],
        ),
        *(
            _cluster_role(
                f"system:certificates.k8s.io:{signer}-approver",
                [_rule(("approve",), (CERTIFICATES,), ("signers",), (f"kubernetes.io/{signer}",))],
            )
            for signer in (
                "legacy-unknown",
                "kubelet-serving",
                "kube-apiserver-client",
                "kube-apiserver-client-kubelet",
            )
        ),
        _cluster_role(
            "system:kube-dns",
            [_rule(("list", "watch"), (CORE,), ("endpoints", "services"))],
        ),
        _cluster_role(
            "system:kube-scheduler",
            [
                events_rule,
                *_leader_lease_rules("kube-scheduler"),
                _rule(READ, (CORE,), ("nodes",)),
                _rule(("delete", "get", "list", "watch"), (CORE,), ("pods",)),
                _rule(("create",), (CORE,), ("bindings", "pods/binding")),
                _rule(("patch", "update"), (CORE,), ("pods/status",)),
                _rule(READ, (CORE,), ("replicationcontrollers", "services")),
                _rule(READ, (APPS, EXTENSIONS), ("replicasets",)),
                _rule(READ, (APPS,), ("statefulsets",)),
                _rule(READ, (POLICY,), ("poddisruptionbudgets",)),
                _rule(READ, (CORE,), ("persistentvolumeclaims", "persistentvolumes")),
                _rule(("create",), (AUTHENTICATION,), ("tokenreviews",)),
                _rule(("create",), (AUTHORIZATION,), ("subjectaccessreviews",)),
                _rule(READ, (STORAGE,), ("csinodes",)),
                _rule(READ, (CORE,), ("namespaces",)),
                _rule(READ, (STORAGE,), ("csidrivers",)),
                _rule(READ, (STORAGE,), ("csistoragecapacities",)),
                # Sampan: no Priority admission plugin fills spec.priority yet, so the
                # scheduler resolves priorityClassName itself.
                _rule(READ, ("scheduling.k8s.io",), ("priorityclasses",)),
            ],
        ),
        _cluster_role(
            "system:volume-scheduler",
            [
                _rule(("get", "list", "patch", "update", "watch"), (CORE,), ("persistentvolumes",)),
                _rule(READ, (STORAGE,), ("storageclasses",)),
                _rule(
                    ("get", "list", "patch", "update", "watch"),
                    (CORE,),
                    ("persistentvolumeclaims",),
                ),
            ],
        ),
        _cluster_role(
            "system:kube-controller-manager",
            [
                events_rule,
                *_leader_lease_rules("kube-controller-manager"),
                _rule(("create",), (CORE,), ("secrets", "serviceaccounts")),
                _rule(("delete",), (CORE,), ("secrets",)),
                _rule(
                    ("get",), (CORE,), ("configmaps", "namespaces", "secrets", "serviceaccounts")
                ),
                _rule(("update",), (CORE,), ("secrets", "serviceaccounts")),
                _rule(("create",), (AUTHENTICATION,), ("tokenreviews",)),
                _rule(("create",), (AUTHORIZATION,), ("subjectaccessreviews",)),
                _rule(("list", "watch"), ("*",), ("*",)),
                _rule(("create",), (CORE,), ("serviceaccounts/token",)),
            ],
        ),
        _cluster_role(
            "system:kubelet-api-admin",
            [
                _rule(READ, (CORE,), ("nodes",)),
                _rule(("proxy",), (CORE,), ("nodes",)),
                _rule(
                    ("*",), (CORE,), ("nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats")
                ),
            ],
        ),
    ]


def _sampan_roles() -> list[dict[str, Any]]:
    return [
        _cluster_role(
            "system:sampan-controller",
            [
                _rule(READ_WRITE, ("*",), ("*",)),
                _rule(EVENT_WRITE, (CORE, EVENTS), ("events",)),
                _rule(("create",), (AUTHENTICATION,), ("tokenreviews",)),
                _rule(("create",), (AUTHORIZATION,), ("subjectaccessreviews",)),
                # csrapproving and csrsigning, as upstream's certificate-controller role
                _rule(
                    ("approve",),
                    (CERTIFICATES,),
                    ("signers",),
                    ("kubernetes.io/kube-apiserver-client-kubelet",),
                ),
                _rule(
                    ("sign",),
                    (CERTIFICATES,),
                    ("signers",),
                    (
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                        "kubernetes.io/legacy-unknown",
                    ),
                ),
            ],
        ),
        _cluster_role(
            "system:sampan-agent",
            [
                # network: every Node's pod CIDR and overlay annotations (sampan.network)
                _rule(("list", "watch"), (CORE,), ("nodes",)),
                # dns: the records (sampan.dns)
                _rule(("list", "watch"), (CORE,), ("services",)),
                _rule(("list", "watch"), (DISCOVERY,), ("endpointslices",)),
                # local-path: the node half deletes released volumes (sampan.kubelet.localpath)
                _rule(("get", "list", "watch", "delete"), (CORE,), ("persistentvolumes",)),
                _rule(EVENT_WRITE, (CORE, EVENTS), ("events",)),
            ],
        ),
        _cluster_role(
            "system:sampan-network-policy",
            [
                # network policy enforcement (sampan.netpol): targets, peers, policies
                _rule(("list", "watch"), (CORE,), ("pods", "namespaces")),
                _rule(("list", "watch"), (NETWORKING,), ("networkpolicies",)),
            ],
        ),
        _cluster_role(
            "system:sampan-ingress",
            [
                # the ingress controller (sampan.ingress), as ingress-nginx's ServiceAccount:
                # TLS Secrets are read cluster-wide (the informer selects type=kubernetes.io/tls)
                _rule(("list", "watch"), (NETWORKING,), ("ingresses", "ingressclasses")),
                _rule(("patch", "update"), (NETWORKING,), ("ingresses/status",)),
                _rule(("list", "watch"), (CORE,), ("services", "secrets", "nodes")),
                _rule(("list", "watch"), (DISCOVERY,), ("endpointslices",)),
                _rule(EVENT_WRITE, (CORE, EVENTS), ("events",)),
            ],
        ),
    ]


def _bindings() -> list[dict[str, Any]]:
    authenticated = _subject("Group", "system:authenticated")
    unauthenticated = _subject("Group", "system:unauthenticated")
    return [
        _binding("cluster-admin", [_subject("Group", "system:masters")]),
        _binding("system:discovery", [authenticated]),
        _binding("system:basic-user", [authenticated]),
        _binding("system:public-info-viewer", [authenticated, unauthenticated]),
        _binding("system:monitoring", [_subject("Group", "system:monitoring")]),
        _binding(
            "system:service-account-issuer-discovery",
            [_subject("Group", "system:serviceaccounts")],
        ),
        _binding("system:node", []),  # the Node authorizer grants nodes their rights
        _binding("system:node-proxier", [_subject("User", "system:kube-proxy")]),
        _binding("system:sampan-servicelb", [_subject("User", "system:kube-proxy")]),
        _binding("system:kube-dns", [_subject("ServiceAccount", "kube-dns", "kube-system")]),
        _binding("system:kube-scheduler", [_subject("User", "system:kube-scheduler")]),
        _binding("system:volume-scheduler", [_subject("User", "system:kube-scheduler")]),
        _binding(
            "system:kube-controller-manager",
            [_subject("User", "system:kube-controller-manager")],
        ),
        _binding("system:sampan-controller", [_subject("User", SAMPAN_CONTROLLER_USER)]),
        # kubeadm's choice (its node-autoapprove-certificate-rotation binding): a node may
        # have a new client certificate for its own name approved automatically.
        _binding(
            "sampan:node-autoapprove-certificate-rotation",
            [_subject("Group", "system:nodes")],
            role="system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        ),
        _binding("system:sampan-agent", [_subject("User", SAMPAN_AGENT_USER)]),
        _binding("system:sampan-network-policy", [_subject("User", SAMPAN_AGENT_USER)]),
        _binding("system:sampan-ingress", [_subject("User", SAMPAN_INGRESS_USER)]),
    ]


def _fill_aggregated(roles: list[dict[str, Any]]) -> None:
    """Compute aggregated rules in place, repeating until nothing changes (view feeds edit,
    edit feeds admin)."""
    for _ in range(len(roles)):
        changed = False
        for role in roles:
            if "aggregationRule" not in role:
                continue
            rules = aggregate_cluster_role(role, roles)
            if rules != role["rules"]:
                role["rules"] = rules
                changed = True
        if not changed:
            return


def bootstrap_policy() -> list[dict[str, Any]]:
    """Fresh copies of the default ClusterRoles, then the default ClusterRoleBindings."""
    roles = [*_user_facing_roles(), *_system_roles(), *_sampan_roles()]
    _fill_aggregated(roles)
    return copy.deepcopy([*roles, *_bindings()])


def _namespaced_metadata(name: str, namespace: str) -> dict[str, Any]:
    return {**_metadata(name), "namespace": namespace}


def bootstrap_namespaced_policy() -> list[dict[str, Any]]:
    """Fresh copies of the default Roles, then RoleBindings, in ``kube-system``."""
    namespace = "kube-system"
    leader_rules = [
        _rule(("create", "get", "list", "update", "watch"), (COORDINATION,), ("leases",)),
        _rule(("create", "get", "list", "update", "watch"), (COORDINATION,), ("leasecandidates",)),
    ]
    roles = [
        (
            "extension-apiserver-authentication-reader",
            [_rule(READ, (CORE,), ("configmaps",), ("extension-apiserver-authentication",))],
        ),
        ("system::leader-locking-kube-controller-manager", leader_rules),
        ("system::leader-locking-kube-scheduler", leader_rules),
    ]
    bindings = [
        (
            "system::extension-apiserver-authentication-reader",
            "extension-apiserver-authentication-reader",
            [
                _subject("User", "system:kube-controller-manager"),
                _subject("User", "system:kube-scheduler"),
            ],
        ),
        (
            "system::leader-locking-kube-controller-manager",
            "system::leader-locking-kube-controller-manager",
            [_subject("User", "system:kube-controller-manager")],
        ),
        (
            "system::leader-locking-kube-scheduler",
            "system::leader-locking-kube-scheduler",
            [_subject("User", "system:kube-scheduler")],
        ),
    ]
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "Role",
            "metadata": _namespaced_metadata(name, namespace),
            "rules": rules,
        }
        for name, rules in roles
    ]
    objects += [
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "RoleBinding",
            "metadata": _namespaced_metadata(name, namespace),
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": role},
            "subjects": subjects,
        }
        for name, role, subjects in bindings
    ]
    return copy.deepcopy(objects)
