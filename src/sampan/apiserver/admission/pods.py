"""Pod admission plugins: ServiceAccount, DefaultTolerationSeconds and Priority.

* ``ServiceAccountAdmission`` (kube-apiserver's ServiceAccount plugin): a new pod runs as
  ``spec.serviceAccountName`` (defaulted to ``default``); the account must exist (the default
  one is waited for a little, since the service-account controller creates it right after the
  namespace); unless automounting is off (pod first, then account), every container gets the
  ``kube-api-access-<random>`` projected volume (a bound token, ``kube-root-ca.crt`` and the
  namespace) at ``/var/run/secrets/kubernetes.io/serviceaccount``; the account's
  imagePullSecrets are copied to a pod that names none. Mirror pods may not use any of it.
* ``DefaultTolerationSeconds``: pods tolerate ``node.kubernetes.io/not-ready`` and
  ``node.kubernetes.io/unreachable`` (NoExecute) for 300 s unless they already say otherwise.
* ``PriorityAdmission``: ``spec.priorityClassName`` becomes ``spec.priority`` (and the class's
  preemptionPolicy); without a class, the global default class or 0. Only one PriorityClass
  may be the global default; the built-in classes cannot be deleted. The built-in classes
  ``system-node-critical`` and ``system-cluster-critical`` are created at start
  (``SYSTEM_PRIORITY_CLASSES``).

Invariant: these plugins only touch pods on CREATE (the fields they set are immutable after).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from sampan.api import fielderrors as fe
from sampan.api.errors import Invalid
from sampan.api.strictfields import FieldTypeError, get_bool
from sampan.apiserver.admission.chain import AdmissionAttributes, forbidden

__all__ = [
    "DEFAULT_NOT_READY_TOLERATION_S",
    "DEFAULT_SERVICE_ACCOUNT",
    "DEFAULT_UNREACHABLE_TOLERATION_S",
    "MIRROR_POD_ANNOTATION",
    "SERVICE_ACCOUNT_MOUNT_PATH",
    "SYSTEM_PRIORITY_CLASSES",
    "TOKEN_EXPIRATION_S",
    "DefaultTolerationSeconds",
    "PriorityAdmission",
    "ServiceAccountAdmission",
]

Getter = Callable[[str, str, str, str], Awaitable[dict[str, Any] | None]]
"""(group, plural, namespace, name) -> the object or None."""
Lister = Callable[[str, str, str], list[dict[str, Any]]]
"""(group, plural, namespace) -> cached objects (do not mutate)."""

DEFAULT_SERVICE_ACCOUNT = "default"
SERVICE_ACCOUNT_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
TOKEN_EXPIRATION_S = 3607
"""Upstream's projected token lifetime (an hour plus 7 s so kubelets can tell it apart)."""
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
VOLUME_PREFIX = "kube-api-access-"
VOLUME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
VOLUME_SUFFIX_LENGTH = 5
PROJECTED_DEFAULT_MODE = 0o644
DEFAULT_SA_ATTEMPTS = 10
"""Looks for the default service account before refusing (upstream: 10, 100-200 ms apart)."""
DEFAULT_SA_RETRY_S = 0.15

DEFAULT_NOT_READY_TOLERATION_S = 300
DEFAULT_UNREACHABLE_TOLERATION_S = 300
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"

SCHEDULING_GROUP = "scheduling.k8s.io"
SYSTEM_CLUSTER_CRITICAL = 2000000000
SYSTEM_NODE_CRITICAL = SYSTEM_CLUSTER_CRITICAL + 1000
SYSTEM_PRIORITY_CLASSES: tuple[dict[str, Any], ...] = (
    {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "system-node-critical"},
        "value": SYSTEM_NODE_CRITICAL,
        "description": "Used for system critical pods that must not be moved from their "
        "current node.",
    },
    {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "system-cluster-critical"},
        "value": SYSTEM_CLUSTER_CRITICAL,
        "description": "Used for system critical pods that must run in the cluster, but can "
        "be moved to another node if necessary.",
    },
)
DEFAULT_PREEMPTION_POLICY = "PreemptLowerPriority"
_SYSTEM_CLASS_NAMES = frozenset(pc["metadata"]["name"] for pc in SYSTEM_PRIORITY_CLASSES)


def _is_pod_create(attrs: AdmissionAttributes) -> bool:
    return (
        attrs.operation == "CREATE"
        and attrs.is_resource("", "pods")
        and isinstance(attrs.obj, dict)
        and isinstance(attrs.obj.get("spec"), dict)
    )


def _containers(spec: dict[str, Any], *keys: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key in keys:
        items = spec.get(key)
        if isinstance(items, list):
            out.extend(c for c in items if isinstance(c, dict))
    return out


class ServiceAccountAdmission:
    """See the module docstring."""

    name = "ServiceAccount"
    mutating = True

    def __init__(self, get: Getter, *, retry_s: float = DEFAULT_SA_RETRY_S) -> None:
        self._get = get
        self._retry_s = retry_s

    async def _service_account(self, namespace: str, name: str) -> dict[str, Any] | None:
        attempts = DEFAULT_SA_ATTEMPTS if name == DEFAULT_SERVICE_ACCOUNT else 1
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._retry_s)
            account = await self._get("", "serviceaccounts", namespace, name)
            if account is not None:
                return account
        return None

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if not _is_pod_create(attrs):
            return
        pod = attrs.obj
        assert pod is not None
        spec = pod["spec"]
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        if MIRROR_POD_ANNOTATION in annotations:
            if spec.get("serviceAccountName"):
                raise forbidden(attrs, "a mirror pod may not reference service accounts")
            for volume in spec.get("volumes") or []:
                if isinstance(volume, dict) and ("secret" in volume or "projected" in volume):
                    raise forbidden(attrs, "a mirror pod may not reference secrets")
            return
        if not spec.get("serviceAccountName"):
            spec["serviceAccountName"] = spec.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT
        sa_name = spec["serviceAccountName"]
        account = await self._service_account(attrs.namespace, sa_name)
        if account is None:
            raise forbidden(
                attrs,
                f"error looking up service account {attrs.namespace}/{sa_name}: "
                f'serviceaccount "{sa_name}" not found',
            )
        try:
            automount = get_bool(spec, "automountServiceAccountToken", "spec")
        except FieldTypeError as exc:  # never read as "false" nor as "true"
            raise Invalid.for_object(
                "Pod", "", attrs.name, [fe.invalid(exc.path, exc.value, exc.detail)]
            ) from None
        if automount is None:
            automount = account.get("automountServiceAccountToken")
        if automount is not False:
            _mount_token(spec)
        if not spec.get("imagePullSecrets") and account.get("imagePullSecrets"):
            spec["imagePullSecrets"] = [dict(s) for s in account["imagePullSecrets"]]


def _token_volume(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "projected": {
            "defaultMode": PROJECTED_DEFAULT_MODE,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_S, "path": "token"}},
                {
                    "configMap": {
                        "name": ROOT_CA_CONFIGMAP,
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                "path": "namespace",
                            }
                        ]
                    }
                },
            ],
        },
    }


def _mount_token(spec: dict[str, Any]) -> None:
    volumes = spec.get("volumes")
    if not isinstance(volumes, list):
        volumes = []
    existing = {v.get("name") for v in volumes if isinstance(v, dict)}
    volume_name = next(
        (
            v["name"]
            for v in volumes
            if isinstance(v, dict) and str(v.get("name", "")).startswith(VOLUME_PREFIX)
        ),
        "",
    )
    has_volume = bool(volume_name)
    while not volume_name or (not has_volume and volume_name in existing):
        volume_name = VOLUME_PREFIX + "".join(
            secrets.choice(VOLUME_SUFFIX_ALPHABET) for _ in range(VOLUME_SUFFIX_LENGTH)
        )
    needs_volume = False
    for container in _containers(spec, "initContainers", "containers"):
        mounts = container.get("volumeMounts")
        if not isinstance(mounts, list):
            mounts = []
        if any(
            isinstance(m, dict) and m.get("mountPath") == SERVICE_ACCOUNT_MOUNT_PATH for m in mounts
        ):
            continue
        mounts.append(
            {"name": volume_name, "readOnly": True, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}
        )
        container["volumeMounts"] = mounts
        needs_volume = True
    if needs_volume and not has_volume:
        volumes.append(_token_volume(volume_name))
        spec["volumes"] = volumes


def _tolerates(tolerations: list[Any], key: str) -> bool:
    for toleration in tolerations:
        if not isinstance(toleration, dict):
            continue
        effect = toleration.get("effect") or ""
        if effect not in ("", "NoExecute"):
            continue
        tkey = toleration.get("key") or ""
        if tkey == key or (not tkey and toleration.get("operator") == "Exists"):
            return True
    return False


class DefaultTolerationSeconds:
    """See the module docstring."""

    name = "DefaultTolerationSeconds"
    mutating = True

    def __init__(
        self,
        not_ready_s: int = DEFAULT_NOT_READY_TOLERATION_S,
        unreachable_s: int = DEFAULT_UNREACHABLE_TOLERATION_S,
    ) -> None:
        self._defaults = ((TAINT_NOT_READY, not_ready_s), (TAINT_UNREACHABLE, unreachable_s))

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if not _is_pod_create(attrs):
            return
        assert attrs.obj is not None
        spec = attrs.obj["spec"]
        tolerations = spec.get("tolerations")
        if not isinstance(tolerations, list):
            tolerations = []
        added = False
        for key, seconds in self._defaults:
            if not _tolerates(tolerations, key):
                tolerations.append(
                    {
                        "key": key,
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": seconds,
                    }
                )
                added = True
        if added:
            spec["tolerations"] = tolerations


class PriorityAdmission:
    """See the module docstring."""

    name = "Priority"
    mutating = True

    def __init__(self, get: Getter, list_cached: Lister) -> None:
        self._get = get
        self._list = list_cached

    def _global_default(self) -> dict[str, Any] | None:
        best: dict[str, Any] | None = None
        for pc in self._list(SCHEDULING_GROUP, "priorityclasses", ""):
            if pc.get("globalDefault") and (best is None or pc.get("value", 0) < best["value"]):
                best = pc
        return best

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.is_resource(SCHEDULING_GROUP, "priorityclasses"):
            self._priority_class(attrs)
            return
        if not _is_pod_create(attrs):
            return
        assert attrs.obj is not None
        spec = attrs.obj["spec"]
        class_name = spec.get("priorityClassName") or ""
        if class_name:
            pc = await self._get(SCHEDULING_GROUP, "priorityclasses", "", class_name)
            if pc is None:
                raise forbidden(attrs, f"no PriorityClass with name {class_name} was found")
        else:
            pc = self._global_default()
            if pc is not None:
                spec["priorityClassName"] = pc["metadata"]["name"]
        value = int(pc.get("value", 0)) if pc is not None else 0
        policy = (pc or {}).get("preemptionPolicy") or DEFAULT_PREEMPTION_POLICY
        given = spec.get("priority")
        if given is not None and given != value:
            raise forbidden(
                attrs,
                f"the integer value of priority ({given}) must not be provided in pod spec; "
                f"priority admission controller computed {value} from the given PriorityClass "
                "name",
            )
        spec["priority"] = value
        given_policy = spec.get("preemptionPolicy")
        if given_policy is not None and given_policy != policy:
            raise forbidden(
                attrs,
                f"the string value of PreemptionPolicy ({given_policy}) must not be provided "
                f"in pod spec; priority admission controller computed {policy} from the given "
                "PriorityClass name",
            )
        spec["preemptionPolicy"] = policy

    def _priority_class(self, attrs: AdmissionAttributes) -> None:
        """One global default at most; the built-in classes cannot be deleted."""
        if attrs.operation == "DELETE" and attrs.name in _SYSTEM_CLASS_NAMES:
            raise forbidden(attrs, "this is a system priority class and cannot be deleted")
        if attrs.operation not in ("CREATE", "UPDATE") or not isinstance(attrs.obj, dict):
            return
        if not attrs.obj.get("globalDefault"):
            return
        for pc in self._list(SCHEDULING_GROUP, "priorityclasses", ""):
            other = (pc.get("metadata") or {}).get("name")
            if pc.get("globalDefault") and other != attrs.name:
                raise forbidden(
                    attrs,
                    f"PriorityClass {other} is already marked as default. Only one default "
                    "can exist",
                )
