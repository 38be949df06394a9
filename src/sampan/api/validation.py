"""Validation of built-in kinds, returning field causes worded as kube-apiserver 1.32 words them.

Three entry points, each returning a list of ``Cause`` (empty = valid):

* ``validate_create(info, obj)``          object metadata plus the kind's spec rules;
* ``validate_update(info, new, old)``     metadata update rules (name/namespace/uid immutable),
                                          the kind's spec rules on ``new``, then its immutability
                                          and transition rules;
* ``validate_status_update(info, new, old)`` metadata update rules plus the kind's status rules.

Kinds plug in through three tables keyed by (group, kind): ``_CREATE``, ``_UPDATE`` and
``_STATUS``. Objects are expected to be defaulted already (``sampan.api.defaults``), as upstream
validates after defaulting. A value of the wrong JSON type is reported as invalid, never raised.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sampan.api import fielderrors as fe
from sampan.api.apiregistration import validate_apiservice, validate_apiservice_status
from sampan.api.cron import CronError, parse_schedule
from sampan.api.errors import Cause
from sampan.api.labels import SelectorError, selector_from_label_selector
from sampan.api.names import (
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_qualified_name,
    is_valid_label_value,
    is_valid_path_segment_name,
    validate_annotations,
    validate_generate_name,
    validate_labels,
    validate_name,
)
from sampan.api.quantity import QuantityError, parse_quantity
from sampan.api.resources import ResourceInfo

__all__ = [
    "CRONJOB_NAME_MAX_LENGTH",
    "MAX_CONFIG_SIZE_BYTES",
    "is_valid_port_name",
    "validate_create",
    "validate_ephemeral_containers_update",
    "validate_object_meta",
    "validate_object_meta_update",
    "validate_pod_spec",
    "validate_status_update",
    "validate_update",
]

Obj = dict[str, Any]
Causes = list["Cause"]

MAX_CONFIG_SIZE_BYTES = 1024 * 1024  # ConfigMaps and Secrets (upstream MaxSecretSize)
CRONJOB_NAME_MAX_LENGTH = 52
MAX_INT32 = 2**31 - 1
IMMUTABLE = "field is immutable"
GE_ZERO = "must be greater than or equal to 0"
GT_ZERO = "must be greater than 0"
PORT_RANGE = "must be between 1 and 65535, inclusive"
PROTOCOLS = ("SCTP", "TCP", "UDP")
RBAC_GROUP = "rbac.authorization.k8s.io"

# RelaxedEnvironmentVariableValidation is on by default in 1.32: printable ASCII but '='.
_ENV_VAR_NAME_RE = re.compile(r"^[ -<>-~]+$")
_CONFIG_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
_PORT_NAME_CHARS_RE = re.compile(r"^[-a-z0-9]+$")
_PORT_NAME_LETTER_RE = re.compile(r"[a-z]")


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _h(value: Any) -> Any:
    """A hashable stand-in for a JSON value (for duplicate detection in sets)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _nonneg(causes: Causes, path: str, value: Any) -> None:
    if value is None:
        return
    n = _int(value)
    if n is None:
        causes.append(fe.invalid(path, value, "must be an integer"))
    elif n < 0:
        causes.append(fe.invalid(path, n, GE_ZERO))


def _positive(causes: Causes, path: str, value: Any) -> None:
    if value is None:
        return
    n = _int(value)
    if n is None:
        causes.append(fe.invalid(path, value, "must be an integer"))
    elif n <= 0:
        causes.append(fe.invalid(path, n, GT_ZERO))


def _enum(
    causes: Causes, path: str, value: Any, allowed: tuple[str, ...], *, required: bool
) -> None:
    if value in (None, ""):
        if required:
            causes.append(fe.required(path))
        return
    if value not in allowed:
        causes.append(fe.not_supported(path, value, allowed))


def _immutable(causes: Causes, path: str, new: Any, old: Any) -> None:
    if new != old:
        causes.append(fe.invalid(path, new, IMMUTABLE))


def _port_number(causes: Causes, path: str, value: Any, *, required: bool = True) -> None:
    n = _int(value)
    if value is None or n == 0:
        if required:
            causes.append(fe.required(path))
        return
    if n is None or not 1 <= n <= 65535:
        causes.append(fe.invalid(path, value, PORT_RANGE))


def is_valid_port_name(name: str) -> list[str]:
    """IANA service name rules upstream applies to port names."""
    errs = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not _PORT_NAME_CHARS_RE.match(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name and not _PORT_NAME_LETTER_RE.search(name):
        errs.append("must contain at least one letter (a-z)")
    if name.startswith("-") or name.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _label_selector(causes: Causes, path: str, selector: Any) -> None:
    if selector is None:
        return
    if not isinstance(selector, dict):
        causes.append(fe.invalid(path, selector, "must be a label selector"))
        return
    causes.extend(validate_labels(selector.get("matchLabels"), f"{path}.matchLabels"))
    for i, expr in enumerate(_l(selector.get("matchExpressions"))):
        epath = f"{path}.matchExpressions[{i}]"
        expr = _d(expr)
        op = expr.get("operator")
        values = _l(expr.get("values"))
        if op in ("In", "NotIn"):
            if not values:
                causes.append(
                    fe.required(
                        f"{epath}.values", "must be specified when `operator` is 'In' or 'NotIn'"
                    )
                )
        elif op in ("Exists", "DoesNotExist"):
            if values:
                causes.append(
                    fe.forbidden(
                        f"{epath}.values",
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    )
                )
        else:
            causes.append(fe.invalid(f"{epath}.operator", op, "not a valid selector operator"))
        key = expr.get("key")
        if not isinstance(key, str) or not key:
            causes.append(fe.required(f"{epath}.key"))
        else:
            causes.extend(fe.invalid(f"{epath}.key", key, m) for m in is_qualified_name(key))


# --- metadata ------------------------------------------------------------------------------


def validate_object_meta(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [fe.required("metadata")]
    name = meta.get("name") or ""
    generate_name = meta.get("generateName") or ""
    if generate_name:
        causes.extend(
            fe.invalid("metadata.generateName", generate_name, m)
            for m in validate_generate_name(info, str(generate_name))
        )
    if not name:
        if not generate_name:
            causes.append(fe.required("metadata.name", "name or generateName is required"))
    elif not isinstance(name, str):
        causes.append(fe.invalid("metadata.name", name, "must be a string"))
    else:
        causes.extend(fe.invalid("metadata.name", name, m) for m in validate_name(info, name))
    namespace = meta.get("namespace") or ""
    if info.namespaced:
        if not namespace:
            causes.append(fe.required("metadata.namespace"))
        else:
            causes.extend(
                fe.invalid("metadata.namespace", namespace, m)
                for m in is_dns1123_label(str(namespace))
            )
    elif namespace:
        causes.append(fe.forbidden("metadata.namespace", "not allowed on this type"))
    causes.extend(validate_labels(meta.get("labels")))
    causes.extend(validate_annotations(meta.get("annotations")))
    causes.extend(_validate_owner_references(meta.get("ownerReferences")))
    causes.extend(_validate_finalizers(meta.get("finalizers")))
    return causes


def _validate_owner_references(refs: Any) -> Causes:
    causes: Causes = []
    path = "metadata.ownerReferences"
    controller = ""
    for ref in _l(refs):
        ref = _d(ref)
        api_version = str(ref.get("apiVersion") or "")
        if not api_version.rpartition("/")[2]:
            causes.append(
                fe.invalid(f"{path}.apiVersion", api_version, "version must not be empty")
            )
        for key in ("kind", "name", "uid"):
            if not ref.get(key):
                causes.append(fe.invalid(f"{path}.{key}", ref.get(key) or "", "must not be empty"))
        if api_version == "v1" and ref.get("kind") == "Event":
            causes.append(
                fe.invalid(path, ref, "/v1, Kind=Event is disallowed from being an owner")
            )
        if ref.get("controller") is True:
            current = f"{ref.get('kind', '')}/{ref.get('name', '')}"
            if controller:
                causes.append(
                    fe.invalid(
                        path,
                        _l(refs),
                        'Only one reference can have Controller set to true. Found "true" in '
                        f"references for {controller} and {current}",
                    )
                )
            else:
                controller = current
    return causes


FINALIZER_ORPHAN = "orphan"
FINALIZER_FOREGROUND = "foregroundDeletion"


def _validate_finalizers(finalizers: Any) -> Causes:
    causes: Causes = []
    names = _l(finalizers)
    for finalizer in names:
        if not isinstance(finalizer, str):
            causes.append(fe.invalid("metadata.finalizers", finalizer, "must be a string"))
            continue
        causes.extend(
            fe.invalid("metadata.finalizers", finalizer, m) for m in is_qualified_name(finalizer)
        )
    if FINALIZER_ORPHAN in names and FINALIZER_FOREGROUND in names:
        causes.append(
            fe.invalid(
                "metadata.finalizers",
                names,
                f"finalizer {FINALIZER_ORPHAN} and {FINALIZER_FOREGROUND} cannot be both set",
            )
        )
    return causes


def validate_object_meta_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes = validate_object_meta(info, new)
    new_meta, old_meta = _d(new.get("metadata")), _d(old.get("metadata"))
    if old_meta.get("deletionTimestamp"):
        added = sorted(set(_l(new_meta.get("finalizers"))) - set(_l(old_meta.get("finalizers"))))
        if added:
            listed = ", ".join(json.dumps(f) for f in added)
            causes.append(
                fe.forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted, found new "
                    f"finalizers []string{{{listed}}}",
                )
            )
    new_generation, old_generation = new_meta.get("generation"), old_meta.get("generation")
    new_gen, old_gen = _int(new_generation), _int(old_generation)
    if new_gen is not None and old_gen is not None:
        if new_gen < old_gen:
            causes.append(
                fe.invalid("metadata.generation", new_generation, "must not be decremented")
            )
    for key in ("name", "namespace", "uid", "creationTimestamp"):
        if old_meta.get(key) and new_meta.get(key) != old_meta.get(key):
            causes.append(fe.invalid(f"metadata.{key}", new_meta.get(key, ""), IMMUTABLE))
    for key in ("deletionTimestamp", "deletionGracePeriodSeconds"):
        if new_meta.get(key) != old_meta.get(key):
            causes.append(fe.invalid(f"metadata.{key}", new_meta.get(key), IMMUTABLE))
    return causes


# --- pods ----------------------------------------------------------------------------------

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
TAINT_EFFECTS = ("NoExecute", "NoSchedule", "PreferNoSchedule")
TOLERATION_OPERATORS = ("Equal", "Exists")


def _validate_resources(causes: Causes, path: str, resources: Any) -> None:
    resources = _d(resources)
    parsed: dict[str, dict[str, Any]] = {}
    for kind in ("limits", "requests"):
        parsed[kind] = {}
        for name, quantity in _d(resources.get(kind)).items():
            qpath = f"{path}.{kind}[{name}]"
            causes.extend(fe.invalid(qpath, name, m) for m in is_qualified_name(str(name)))
            try:
                value = parse_quantity(quantity)
            except QuantityError as err:
                causes.append(fe.invalid(qpath, quantity, str(err)))
                continue
            if value < 0:
                causes.append(fe.invalid(qpath, str(quantity), GE_ZERO))
            parsed[kind][name] = (value, quantity)
    for name, (request, request_text) in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and request > limit[0]:
            causes.append(
                fe.invalid(
                    f"{path}.requests",
                    str(request_text),
                    f"must be less than or equal to {name} limit of {limit[1]}",
                )
            )


def _validate_container(
    causes: Causes,
    path: str,
    container: Obj,
    volumes: set[str],
    *,
    host_network: bool,
) -> None:
    image = container.get("image")
    if not image:
        causes.append(fe.required(f"{path}.image"))
    port_names: set[str] = set()
    for i, port in enumerate(_l(container.get("ports"))):
        port = _d(port)
        ppath = f"{path}.ports[{i}]"
        name = port.get("name")
        if name:
            causes.extend(
                fe.invalid(f"{ppath}.name", name, m) for m in is_valid_port_name(str(name))
            )
            if _h(name) in port_names:
                causes.append(fe.duplicate(f"{ppath}.name", name))
            port_names.add(_h(name))
        _port_number(causes, f"{ppath}.containerPort", port.get("containerPort"))
        if port.get("hostPort"):
            _port_number(causes, f"{ppath}.hostPort", port.get("hostPort"))
            if host_network and port.get("hostPort") != port.get("containerPort"):
                causes.append(
                    fe.invalid(
                        f"{ppath}.containerPort",
                        port.get("containerPort"),
                        "must match `hostPort` when `hostNetwork` is true",
                    )
                )
        _enum(causes, f"{ppath}.protocol", port.get("protocol"), PROTOCOLS, required=True)
    for i, env in enumerate(_l(container.get("env"))):
        env = _d(env)
        name = env.get("name")
        if not name:
            causes.append(fe.required(f"{path}.env[{i}].name"))
        elif not _ENV_VAR_NAME_RE.match(str(name)):
            causes.append(
                fe.invalid(
                    f"{path}.env[{i}].name",
                    name,
                    "a valid environment variable name must consist only of printable ASCII "
                    "characters other than '='",
                )
            )
    mount_paths: set[str] = set()
    for i, mount in enumerate(_l(container.get("volumeMounts"))):
        mount = _d(mount)
        mpath = f"{path}.volumeMounts[{i}]"
        name = mount.get("name")
        if not name:
            causes.append(fe.required(f"{mpath}.name"))
        elif _h(name) not in volumes:
            causes.append(fe.not_found(f"{mpath}.name", name))
        mount_path = mount.get("mountPath")
        if not mount_path:
            causes.append(fe.required(f"{mpath}.mountPath"))
        elif _h(mount_path) in mount_paths:
            causes.append(fe.invalid(f"{mpath}.mountPath", mount_path, "must be unique"))
        else:
            mount_paths.add(_h(mount_path))
    _enum(
        causes,
        f"{path}.imagePullPolicy",
        container.get("imagePullPolicy"),
        PULL_POLICIES,
        required=True,
    )
    _enum(
        causes,
        f"{path}.terminationMessagePolicy",
        container.get("terminationMessagePolicy"),
        TERMINATION_MESSAGE_POLICIES,
        required=True,
    )
    _validate_resources(causes, f"{path}.resources", container.get("resources"))
    for probe_key in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_key)
        if isinstance(probe, dict):
            ppath = f"{path}.{probe_key}"
            handlers = [k for k in ("exec", "httpGet", "tcpSocket", "grpc") if k in probe]
            if not handlers:
                causes.append(fe.required(ppath, "must specify a handler type"))
            elif len(handlers) > 1:
                causes.append(
                    fe.forbidden(
                        f"{ppath}.{handlers[1]}", "may not specify more than 1 handler type"
                    )
                )
            for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds"):
                _nonneg(causes, f"{ppath}.{key}", probe.get(key))
            for key in ("successThreshold", "failureThreshold"):
                _nonneg(causes, f"{ppath}.{key}", probe.get(key))
            if (
                probe_key in ("livenessProbe", "startupProbe")
                and probe.get("successThreshold", 1) != 1
            ):
                causes.append(
                    fe.invalid(
                        f"{ppath}.successThreshold", probe.get("successThreshold"), "must be 1"
                    )
                )


def validate_pod_spec(spec: Any, path: str = "spec") -> Causes:
    """PodSpec rules, for pods and for every template that embeds a pod spec."""
    causes: Causes = []
    if not isinstance(spec, dict):
        return [fe.required(path)]
    volumes: set[str] = set()
    for i, volume in enumerate(_l(spec.get("volumes"))):
        volume = _d(volume)
        vpath = f"{path}.volumes[{i}]"
        name = volume.get("name")
        if not name:
            causes.append(fe.required(f"{vpath}.name"))
            continue
        causes.extend(fe.invalid(f"{vpath}.name", name, m) for m in is_dns1123_label(str(name)))
        if _h(name) in volumes:
            causes.append(fe.duplicate(f"{vpath}.name", name))
        volumes.add(_h(name))
        sources = [k for k in volume if k != "name"]
        if len(sources) > 1:
            causes.append(
                fe.forbidden(f"{vpath}.{sources[1]}", "may not specify more than 1 volume type")
            )
    containers = _l(spec.get("containers"))
    if not containers:
        causes.append(fe.required(f"{path}.containers"))
    host_network = bool(spec.get("hostNetwork"))
    names: set[str] = set()
    for key in ("initContainers", "containers"):
        for i, container in enumerate(_l(spec.get(key))):
            cpath = f"{path}.{key}[{i}]"
            container = _d(container)
            name = container.get("name")
            if not name:
                causes.append(fe.required(f"{cpath}.name"))
            else:
                causes.extend(
                    fe.invalid(f"{cpath}.name", name, m) for m in is_dns1123_label(str(name))
                )
                if _h(name) in names:
                    causes.append(fe.duplicate(f"{cpath}.name", name))
                names.add(_h(name))
            _validate_container(causes, cpath, container, volumes, host_network=host_network)
    _enum(
        causes, f"{path}.restartPolicy", spec.get("restartPolicy"), RESTART_POLICIES, required=True
    )
    _enum(causes, f"{path}.dnsPolicy", spec.get("dnsPolicy"), DNS_POLICIES, required=True)
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None:
        n = _int(deadline)
        if n is None or not 1 <= n <= MAX_INT32:
            causes.append(
                fe.invalid(
                    f"{path}.activeDeadlineSeconds",
                    deadline,
                    f"must be between 1 and {MAX_INT32}, inclusive",
                )
            )
    sa = spec.get("serviceAccountName")
    if sa:
        causes.extend(
            fe.invalid(f"{path}.serviceAccountName", sa, m) for m in is_dns1123_subdomain(str(sa))
        )
    node_name = spec.get("nodeName")
    if node_name:
        causes.extend(
            fe.invalid(f"{path}.nodeName", node_name, m)
            for m in is_dns1123_subdomain(str(node_name))
        )
    causes.extend(validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector"))
    for i, toleration in enumerate(_l(spec.get("tolerations"))):
        toleration = _d(toleration)
        tpath = f"{path}.tolerations[{i}]"
        tol_key = toleration.get("key")
        operator = toleration.get("operator") or "Equal"
        if tol_key:
            causes.extend(
                fe.invalid(f"{tpath}.key", tol_key, m) for m in is_qualified_name(str(tol_key))
            )
        elif operator != "Exists":
            causes.append(
                fe.invalid(
                    f"{tpath}.operator",
                    operator,
                    'operator must be Exists when `key` is empty, which means "match all values '
                    'and all keys"',
                )
            )
        if operator == "Exists" and toleration.get("value"):
            causes.append(
                fe.invalid(
                    f"{tpath}.operator",
                    toleration.get("value"),
                    "value must be empty when `operator` is 'Exists'",
                )
            )
        if operator not in TOLERATION_OPERATORS:
            causes.append(fe.not_supported(f"{tpath}.operator", operator, TOLERATION_OPERATORS))
        effect = toleration.get("effect")
        if effect:
            _enum(causes, f"{tpath}.effect", effect, TAINT_EFFECTS, required=False)
        if toleration.get("tolerationSeconds") is not None and effect != "NoExecute":
            causes.append(
                fe.invalid(
                    f"{tpath}.effect",
                    effect or "",
                    "effect must be 'NoExecute' when `tolerationSeconds` is set",
                )
            )
    return causes


def _validate_pod(info: ResourceInfo, obj: Obj) -> Causes:
    return validate_pod_spec(obj.get("spec"))


_POD_UPDATABLE = ",".join(
    (
        "`spec.containers[*].image`",
        "`spec.initContainers[*].image`",
        "`spec.activeDeadlineSeconds`",
        "`spec.tolerations` (only additions to existing tolerations)",
        "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously "
        "negative)",
    )
)


def _spec_diff(old: Any, new: Any) -> str:
    old_lines = json.dumps(old, indent=1, sort_keys=True).splitlines()
    new_lines = json.dumps(new, indent=1, sort_keys=True).splitlines()
    diff = difflib.unified_diff(old_lines, new_lines, "old", "new", n=1, lineterm="")
    return "\n".join(list(diff)[2:])


def _validate_pod_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes: Causes = []
    new_spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    # Build the new spec with every allowed change undone; what differs then is forbidden.
    munged = json.loads(json.dumps(new_spec))
    for key in ("containers", "initContainers"):
        new_list, old_list = _l(munged.get(key)), _l(old_spec.get(key))
        if len(new_list) == len(old_list):
            for new_c, old_c in zip(new_list, old_list, strict=True):
                if isinstance(new_c, dict) and isinstance(old_c, dict) and "image" in old_c:
                    new_c["image"] = old_c["image"]
    new_deadline, old_deadline = (
        new_spec.get("activeDeadlineSeconds"),
        old_spec.get("activeDeadlineSeconds"),
    )
    if new_deadline != old_deadline:
        if new_deadline is None:
            causes.append(
                fe.invalid(
                    "spec.activeDeadlineSeconds",
                    None,
                    "must not update from a positive integer to nil value",
                )
            )
        elif (
            old_deadline is not None
            and _int(new_deadline) is not None
            and new_deadline > old_deadline
        ):
            causes.append(
                fe.invalid(
                    "spec.activeDeadlineSeconds",
                    new_deadline,
                    "must be less than or equal to previous value",
                )
            )
    if "activeDeadlineSeconds" in old_spec:
        munged["activeDeadlineSeconds"] = old_spec["activeDeadlineSeconds"]
    else:
        munged.pop("activeDeadlineSeconds", None)
    old_tolerations = _l(old_spec.get("tolerations"))
    new_tolerations = _l(new_spec.get("tolerations"))
    if all(t in new_tolerations for t in old_tolerations):
        if "tolerations" in old_spec:
            munged["tolerations"] = old_spec["tolerations"]
        else:
            munged.pop("tolerations", None)
    old_grace = old_spec.get("terminationGracePeriodSeconds")
    if (
        (grace := _int(old_grace)) is not None
        and grace < 0
        and new_spec.get("terminationGracePeriodSeconds") == 1
    ):
        munged["terminationGracePeriodSeconds"] = old_grace
    # Scheduling gates may only be removed.
    old_gates = _l(old_spec.get("schedulingGates"))
    new_gates = _l(new_spec.get("schedulingGates"))
    for i, gate in enumerate(new_gates):
        if gate not in old_gates:
            causes.append(
                fe.forbidden(
                    f"spec.schedulingGates[{i}]",
                    "only deletion is allowed, but found new scheduling gate "
                    f"'{_d(gate).get('name', '')}'",
                )
            )
    if "schedulingGates" in old_spec:
        munged["schedulingGates"] = old_spec["schedulingGates"]
    else:
        munged.pop("schedulingGates", None)
    if old_gates:
        # While gated, node selector and affinity may be set or narrowed.
        for key in ("nodeSelector", "affinity"):
            if key in old_spec:
                munged[key] = old_spec[key]
            else:
                munged.pop(key, None)
    if munged != old_spec:
        causes.append(
            fe.forbidden(
                "spec",
                f"pod updates may not change fields other than {_POD_UPDATABLE}\n"
                + _spec_diff(old_spec, munged),
            )
        )
    return causes


_EPHEMERAL_FORBIDDEN = (
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "resizePolicy",
    "restartPolicy",
)


def validate_ephemeral_containers_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    """``pods/ephemeralcontainers``: existing ones unchanged, new ones well formed."""
    causes = validate_object_meta_update(info, new, old)
    new_spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    new_list = _l(new_spec.get("ephemeralContainers"))
    by_name = {_h(_d(c).get("name")): c for c in new_list}
    for existing in _l(old_spec.get("ephemeralContainers")):
        name = _d(existing).get("name")
        if by_name.get(_h(name)) != existing:
            causes.append(
                fe.forbidden(
                    "spec.ephemeralContainers",
                    f"existing ephemeral containers {json.dumps(name)} may not be changed",
                )
            )
    taken = {
        _h(_d(c).get("name"))
        for key in ("containers", "initContainers")
        for c in _l(new_spec.get(key))
    }
    volumes = {_h(_d(v).get("name")) for v in _l(new_spec.get("volumes"))}
    seen: set[Any] = set()
    for i, container in enumerate(new_list):
        container = _d(container)
        cpath = f"spec.ephemeralContainers[{i}]"
        name = container.get("name")
        if not name:
            causes.append(fe.required(f"{cpath}.name"))
        else:
            causes.extend(fe.invalid(f"{cpath}.name", name, m) for m in is_dns1123_label(str(name)))
            if _h(name) in taken or _h(name) in seen:
                causes.append(fe.duplicate(f"{cpath}.name", name))
            seen.add(_h(name))
        if not container.get("image"):
            causes.append(fe.required(f"{cpath}.image"))
        target = container.get("targetContainerName")
        if target and _h(target) not in taken:
            causes.append(fe.not_found(f"{cpath}.targetContainerName", target))
        for key in _EPHEMERAL_FORBIDDEN:
            if container.get(key) not in (None, {}, []):
                causes.append(
                    fe.forbidden(f"{cpath}.{key}", "cannot be set for an Ephemeral Container")
                )
        for j, mount in enumerate(_l(container.get("volumeMounts"))):
            mount_name = _d(mount).get("name")
            if _h(mount_name) not in volumes:
                causes.append(fe.not_found(f"{cpath}.volumeMounts[{j}].name", mount_name))
    return causes


POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


def _validate_pod_status(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes: Causes = []
    status = _d(new.get("status"))
    phase = status.get("phase")
    if phase:
        _enum(causes, "status.phase", phase, POD_PHASES, required=False)
    old_phase = _d(old.get("status")).get("phase")
    if old_phase in ("Succeeded", "Failed") and phase != old_phase:
        causes.append(
            fe.forbidden(
                "status.phase", f"cannot transition from {old_phase} to {phase or 'Pending'}"
            )
        )
    for key in ("podIP", "hostIP"):
        value = status.get(key)
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                causes.append(fe.invalid(f"status.{key}", value, "must be a valid IP address"))
    return causes


# --- workloads -----------------------------------------------------------------------------


def _selector_matches_template(
    causes: Causes, spec: Obj, path: str, *, kind_word: str, allow_empty: bool = False
) -> None:
    selector = spec.get("selector")
    if selector is None:
        causes.append(fe.required(f"{path}.selector"))
        return
    _label_selector(causes, f"{path}.selector", selector)
    selector = _d(selector)
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        if not allow_empty:
            causes.append(
                fe.invalid(
                    f"{path}.selector", selector, f"empty selector is invalid for {kind_word}"
                )
            )
        return
    try:
        parsed = selector_from_label_selector(selector)
    except SelectorError:
        return  # reported above
    labels = _d(_d(_d(spec.get("template")).get("metadata")).get("labels"))
    if not parsed.matches(labels):
        causes.append(
            fe.invalid(
                f"{path}.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            )
        )


def _validate_template(
    causes: Causes,
    template: Any,
    path: str,
    *,
    restart_policies: tuple[str, ...] | None = ("Always",),
    owner_kind: str = "ReplicaSet",
) -> None:
    if not isinstance(template, dict):
        causes.append(fe.required(path))
        return
    meta = _d(template.get("metadata"))
    causes.extend(validate_labels(meta.get("labels"), f"{path}.metadata.labels"))
    causes.extend(validate_annotations(meta.get("annotations"), f"{path}.metadata.annotations"))
    spec = template.get("spec")
    causes.extend(validate_pod_spec(spec, f"{path}.spec"))
    policy = _d(spec).get("restartPolicy")
    if (
        restart_policies is not None
        and policy
        and policy in RESTART_POLICIES
        and policy not in restart_policies
    ):
        causes.append(fe.not_supported(f"{path}.spec.restartPolicy", policy, restart_policies))
    deadline = _d(spec).get("activeDeadlineSeconds")
    if deadline is not None and restart_policies == ("Always",):
        causes.append(
            fe.invalid(
                f"{path}.spec.activeDeadlineSeconds",
                deadline,
                f"activeDeadlineSeconds in {owner_kind} is not Supported",
            )
        )


def _int_or_percent(causes: Causes, path: str, value: Any) -> tuple[int, bool] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]+%", value):
            causes.append(
                fe.invalid(
                    path,
                    value,
                    (
                        "a valid percent string must be a numeric string followed by an ending "
                        "'%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
                    ),
                )
            )
            return None
        number = int(value[:-1])
        if number > 100:
            causes.append(fe.invalid(path, value, "must not be greater than 100%"))
        return number, True
    n = _int(value)
    if n is None:
        causes.append(fe.invalid(path, value, "must be an integer or percentage"))
        return None
    if n < 0:
        causes.append(fe.invalid(path, n, GE_ZERO))
    return n, False


def _validate_deployment(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    _nonneg(causes, "spec.replicas", spec.get("replicas"))
    _selector_matches_template(causes, spec, "spec", kind_word="deployment")
    _validate_template(causes, spec.get("template"), "spec.template")
    strategy = _d(spec.get("strategy"))
    stype = strategy.get("type")
    _enum(causes, "spec.strategy.type", stype, ("Recreate", "RollingUpdate"), required=True)
    rolling = strategy.get("rollingUpdate")
    if stype == "Recreate" and rolling is not None:
        causes.append(
            fe.forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            )
        )
    if stype == "RollingUpdate" and isinstance(rolling, dict):
        unavailable = _int_or_percent(
            causes, "spec.strategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable")
        )
        surge = _int_or_percent(
            causes, "spec.strategy.rollingUpdate.maxSurge", rolling.get("maxSurge")
        )
        if unavailable is not None and surge is not None and unavailable[0] == 0 and surge[0] == 0:
            causes.append(
                fe.invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    rolling.get("maxUnavailable"),
                    "may not be 0 when `maxSurge` is 0",
                )
            )
    _nonneg(causes, "spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    _nonneg(causes, "spec.minReadySeconds", spec.get("minReadySeconds"))
    deadline = _int(spec.get("progressDeadlineSeconds"))
    if deadline is not None:
        _nonneg(causes, "spec.progressDeadlineSeconds", deadline)
        min_ready = _int(spec.get("minReadySeconds")) or 0
        if deadline <= min_ready:
            causes.append(
                fe.invalid(
                    "spec.progressDeadlineSeconds",
                    deadline,
                    "must be greater than minReadySeconds",
                )
            )
    return causes


def _validate_replicaset(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    _nonneg(causes, "spec.replicas", spec.get("replicas"))
    _nonneg(causes, "spec.minReadySeconds", spec.get("minReadySeconds"))
    _selector_matches_template(causes, spec, "spec", kind_word=info.singular)
    _validate_template(causes, spec.get("template"), "spec.template", owner_kind=info.kind)
    return causes


def _with_claim_volumes(obj: Obj) -> Obj:
    """The set with each volumeClaimTemplate as a volume of its pod template: containers mount
    claim templates by name (upstream validates the template against their union)."""
    spec = _d(obj.get("spec"))
    names = [_d(_d(t).get("metadata")).get("name") for t in _l(spec.get("volumeClaimTemplates"))]
    template = spec.get("template")
    if not names or not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return obj
    pod_spec = dict(template["spec"])
    volumes = list(_l(pod_spec.get("volumes")))
    present = {_d(v).get("name") for v in volumes if isinstance(_d(v).get("name"), str)}
    volumes += [
        {"name": n, "persistentVolumeClaim": {"claimName": n}}
        for n in names
        if isinstance(n, str) and n and n not in present
    ]
    pod_spec["volumes"] = volumes
    return {**obj, "spec": {**spec, "template": {**template, "spec": pod_spec}}}


def _validate_statefulset(info: ResourceInfo, obj: Obj) -> Causes:
    causes = _validate_replicaset(info, _with_claim_volumes(obj))
    spec = _d(obj.get("spec"))
    _enum(
        causes,
        "spec.podManagementPolicy",
        spec.get("podManagementPolicy"),
        ("OrderedReady", "Parallel"),
        required=True,
    )
    strategy = _d(spec.get("updateStrategy"))
    _enum(
        causes,
        "spec.updateStrategy.type",
        strategy.get("type"),
        ("OnDelete", "RollingUpdate"),
        required=True,
    )
    if strategy.get("type") == "RollingUpdate":
        _nonneg(
            causes,
            "spec.updateStrategy.rollingUpdate.partition",
            _d(strategy.get("rollingUpdate")).get("partition"),
        )
    _nonneg(causes, "spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    retention = _d(spec.get("persistentVolumeClaimRetentionPolicy"))
    for key in ("whenDeleted", "whenScaled"):
        _enum(
            causes,
            f"spec.persistentVolumeClaimRetentionPolicy.{key}",
            retention.get(key),
            ("Retain", "Delete"),
            required=False,
        )
    return causes


def _validate_daemonset(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    _selector_matches_template(causes, spec, "spec", kind_word="daemonset")
    _validate_template(causes, spec.get("template"), "spec.template", owner_kind="DaemonSet")
    strategy = _d(spec.get("updateStrategy"))
    _enum(
        causes,
        "spec.updateStrategy.type",
        strategy.get("type"),
        ("OnDelete", "RollingUpdate"),
        required=True,
    )
    _nonneg(causes, "spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    _nonneg(causes, "spec.minReadySeconds", spec.get("minReadySeconds"))
    return causes


def _validate_selector_immutable(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes: Causes = []
    new_selector = _d(new.get("spec")).get("selector")
    old_selector = _d(old.get("spec")).get("selector")
    _immutable(causes, "spec.selector", new_selector, old_selector)
    return causes


_STS_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def _validate_statefulset_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    new_spec = {k: v for k, v in _d(new.get("spec")).items() if k not in _STS_MUTABLE}
    old_spec = {k: v for k, v in _d(old.get("spec")).items() if k not in _STS_MUTABLE}
    if new_spec != old_spec:
        return [
            fe.forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
                "'minReadySeconds' are forbidden",
            )
        ]
    return []


def _validate_replicationcontroller(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    _nonneg(causes, "spec.replicas", spec.get("replicas"))
    _nonneg(causes, "spec.minReadySeconds", spec.get("minReadySeconds"))
    selector = spec.get("selector")
    if not selector:
        causes.append(fe.required("spec.selector"))
    else:
        causes.extend(validate_labels(selector, "spec.selector"))
    template = spec.get("template")
    if template is None:
        causes.append(fe.required("spec.template"))
        return causes
    labels = _d(_d(_d(template).get("metadata")).get("labels"))
    if (
        isinstance(selector, dict)
        and selector
        and any(labels.get(k) != v for k, v in selector.items())
    ):
        causes.append(
            fe.invalid(
                "spec.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            )
        )
    _validate_template(causes, template, "spec.template", owner_kind="ReplicationController")
    return causes


def _validate_podtemplate(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    _validate_template(causes, obj.get("template"), "template", restart_policies=None)
    return causes


JOB_RESTART_POLICIES = ("OnFailure", "Never")


def _validate_job_spec(causes: Causes, spec: Obj, path: str, *, selector_generated: bool) -> None:
    for key in ("parallelism", "completions", "backoffLimit"):
        _nonneg(causes, f"{path}.{key}", spec.get(key))
    for key in ("activeDeadlineSeconds", "ttlSecondsAfterFinished", "backoffLimitPerIndex"):
        _nonneg(causes, f"{path}.{key}", spec.get(key))
    if spec.get("completionMode", "NonIndexed") == "NonIndexed":
        for key in ("backoffLimitPerIndex", "maxFailedIndexes"):
            if spec.get(key) is not None:
                causes.append(
                    fe.invalid(f"{path}.{key}", spec[key], "requires indexed completion mode")
                )
    _enum(
        causes,
        f"{path}.completionMode",
        spec.get("completionMode"),
        ("NonIndexed", "Indexed"),
        required=False,
    )
    if spec.get("completionMode") == "Indexed" and spec.get("completions") is None:
        causes.append(fe.required(f"{path}.completions", "when completion mode is Indexed"))
    _enum(
        causes,
        f"{path}.podReplacementPolicy",
        spec.get("podReplacementPolicy"),
        ("TerminatingOrFailed", "Failed"),
        required=False,
    )
    template = spec.get("template")
    _validate_template(causes, template, f"{path}.template", restart_policies=None)
    policy = _d(_d(template).get("spec")).get("restartPolicy")
    if policy in ("Always", "", None):
        causes.append(
            fe.required(f"{path}.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"')
        )
    elif policy not in JOB_RESTART_POLICIES:
        causes.append(
            fe.not_supported(f"{path}.template.spec.restartPolicy", policy, JOB_RESTART_POLICIES)
        )
    elif spec.get("podFailurePolicy") is not None and policy != "Never":
        causes.append(
            fe.invalid(
                f"{path}.template.spec.restartPolicy",
                policy,
                'only "Never" is supported when podFailurePolicy is specified',
            )
        )
    if selector_generated:
        # A Job (not a CronJob's template) needs a selector matching its template.
        if spec.get("selector") is None:
            causes.append(fe.required(f"{path}.selector"))
        else:
            _label_selector(causes, f"{path}.selector", spec["selector"])
            try:
                selector = selector_from_label_selector(_d(spec["selector"]))
            except SelectorError:
                return
            labels = _d(_d(_d(template).get("metadata")).get("labels"))
            if not selector.matches(labels):
                causes.append(
                    fe.invalid(
                        f"{path}.template.metadata.labels",
                        labels,
                        "`selector` does not match template `labels`",
                    )
                )


JOB_CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
_JOB_LEGACY_LABELS = ("controller-uid", "job-name")


def _validate_generated_job_selector(causes: Causes, obj: Obj) -> None:
    spec = _d(obj.get("spec"))
    if spec.get("manualSelector") is True or spec.get("selector") is None:
        return
    meta = _d(obj.get("metadata"))
    uid, name = meta.get("uid") or "", meta.get("name") or ""
    if not uid:
        causes.append(fe.required("metadata.uid"))
    labels = _d(_d(_d(spec.get("template")).get("metadata")).get("labels"))
    expected = {
        "controller-uid": uid,
        "job-name": name,
        JOB_CONTROLLER_UID_LABEL: uid,
        JOB_NAME_LABEL: name,
    }
    for key, value in expected.items():
        if key not in labels:
            causes.append(fe.required(f"spec.template.metadata.labels[{key}]", value))
        elif labels[key] != value:
            causes.append(
                fe.invalid(f"spec.template.metadata.labels[{key}]", labels, f"must be '{value}'")
            )
    try:
        selector = selector_from_label_selector(_d(spec["selector"]))
    except SelectorError:
        return
    if not selector.matches(expected):
        causes.append(
            fe.invalid("spec.selector", spec["selector"], "`selector` not auto-generated")
        )


def _validate_job(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    _validate_generated_job_selector(causes, obj)
    _validate_job_spec(causes, _d(obj.get("spec")), "spec", selector_generated=True)
    return causes


# Template fields a suspended Job that never started may still change (scheduling directives).
_JOB_MUTABLE_WHILE_SUSPENDED_SPEC = ("nodeSelector", "tolerations", "schedulingGates")
_JOB_MUTABLE_WHILE_SUSPENDED_META = ("labels", "annotations")


def _validate_job_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes = _validate_selector_immutable(info, new, old)
    new_spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    if new_spec.get("completionMode") != "Indexed":
        _immutable(
            causes, "spec.completions", new_spec.get("completions"), old_spec.get("completions")
        )
    _immutable(
        causes,
        "spec.completionMode",
        new_spec.get("completionMode"),
        old_spec.get("completionMode"),
    )
    for key in ("podFailurePolicy", "backoffLimitPerIndex", "managedBy", "successPolicy"):
        _immutable(causes, f"spec.{key}", new_spec.get(key), old_spec.get(key))
    new_template = _d(new_spec.get("template"))
    old_template = json.loads(json.dumps(_d(old_spec.get("template"))))
    never_started = not _d(old.get("status")).get("startTime")
    if new_spec.get("suspend") and never_started:
        new_pod, old_pod = _d(new_template.get("spec")), old_template.setdefault("spec", {})
        for key in _JOB_MUTABLE_WHILE_SUSPENDED_SPEC:
            _copy_or_drop(old_pod, key, new_pod)
        new_affinity, old_affinity = new_pod.get("affinity"), old_pod.get("affinity")
        if isinstance(new_affinity, dict) or isinstance(old_affinity, dict):
            merged = {k: v for k, v in _d(old_affinity).items() if k != "nodeAffinity"}
            if "nodeAffinity" in _d(new_affinity):
                merged["nodeAffinity"] = _d(new_affinity)["nodeAffinity"]
            if merged or new_affinity is not None:
                old_pod["affinity"] = merged
            else:
                old_pod.pop("affinity", None)
        old_meta = old_template.setdefault("metadata", {})
        for key in _JOB_MUTABLE_WHILE_SUSPENDED_META:
            _copy_or_drop(old_meta, key, _d(new_template.get("metadata")))
    if new_template != old_template:
        causes.append(fe.invalid("spec.template", new_spec.get("template"), IMMUTABLE))
    return causes


def _copy_or_drop(target: Obj, key: str, source: Obj) -> None:
    if key in source:
        target[key] = source[key]
    else:
        target.pop(key, None)


def _validate_cronjob_name(info: ResourceInfo, obj: Obj) -> Causes:
    # Jobs get an 11-character suffix; only checked on create so old objects stay updatable.
    name = _d(obj.get("metadata")).get("name") or ""
    if len(name) > CRONJOB_NAME_MAX_LENGTH:
        return [
            fe.invalid(
                "metadata.name", name, f"must be no more than {CRONJOB_NAME_MAX_LENGTH} characters"
            )
        ]
    return []


def _validate_cronjob(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    schedule = spec.get("schedule")
    if not schedule:
        causes.append(fe.required("spec.schedule"))
    elif not isinstance(schedule, str):
        causes.append(fe.invalid("spec.schedule", schedule, "must be a string"))
    elif "TZ" in schedule:
        causes.append(
            fe.invalid(
                "spec.schedule",
                schedule,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            )
        )
    else:
        try:
            parse_schedule(schedule)
        except CronError as err:
            causes.append(fe.invalid("spec.schedule", schedule, str(err)))
    _enum(
        causes,
        "spec.concurrencyPolicy",
        spec.get("concurrencyPolicy"),
        ("Allow", "Forbid", "Replace"),
        required=True,
    )
    _nonneg(causes, "spec.startingDeadlineSeconds", spec.get("startingDeadlineSeconds"))
    _nonneg(causes, "spec.successfulJobsHistoryLimit", spec.get("successfulJobsHistoryLimit"))
    _nonneg(causes, "spec.failedJobsHistoryLimit", spec.get("failedJobsHistoryLimit"))
    job_template = _d(spec.get("jobTemplate"))
    causes.extend(
        validate_labels(
            _d(job_template.get("metadata")).get("labels"), "spec.jobTemplate.metadata.labels"
        )
    )
    _validate_job_spec(
        causes, _d(job_template.get("spec")), "spec.jobTemplate.spec", selector_generated=False
    )
    return causes


# --- core ----------------------------------------------------------------------------------

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")


def _validate_service(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    stype = spec.get("type")
    _enum(causes, "spec.type", stype, SERVICE_TYPES, required=True)
    headless = spec.get("clusterIP") == "None"
    ports = _l(spec.get("ports"))
    if stype == "ExternalName":
        external = spec.get("externalName")
        if not external:
            causes.append(fe.required("spec.externalName"))
        else:
            name = str(external).rstrip(".")
            causes.extend(
                fe.invalid("spec.externalName", external, m) for m in is_dns1123_subdomain(name)
            )
    elif not ports and not headless:
        causes.append(fe.required("spec.ports"))
    names: set[str] = set()
    seen_ports: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        port = _d(port)
        ppath = f"spec.ports[{i}]"
        port_name = port.get("name")
        if len(ports) > 1 and not port_name:
            causes.append(fe.required(f"{ppath}.name"))
        if port_name:
            causes.extend(
                fe.invalid(f"{ppath}.name", port_name, m) for m in is_dns1123_label(str(port_name))
            )
            if _h(port_name) in names:
                causes.append(fe.duplicate(f"{ppath}.name", port_name))
            names.add(_h(port_name))
        service_port = port.get("port")
        if (number := _int(service_port)) is None or not 1 <= number <= 65535:
            causes.append(fe.invalid(f"{ppath}.port", service_port or 0, PORT_RANGE))
        _enum(causes, f"{ppath}.protocol", port.get("protocol"), PROTOCOLS, required=True)
        key = (_h(port.get("port")), _h(port.get("protocol")))
        if key in seen_ports:
            causes.append(fe.duplicate(ppath, {"port": key[0], "protocol": key[1]}))
        seen_ports.add(key)
        target = port.get("targetPort")
        if isinstance(target, str):
            causes.extend(
                fe.invalid(f"{ppath}.targetPort", target, m) for m in is_valid_port_name(target)
            )
        elif target is not None and (_int(target) is None or not 1 <= target <= 65535):
            causes.append(fe.invalid(f"{ppath}.targetPort", target, PORT_RANGE))
        node_port = port.get("nodePort")
        if node_port:
            if stype == "ClusterIP":
                causes.append(
                    fe.forbidden(f"{ppath}.nodePort", "may not be used when `type` is 'ClusterIP'")
                )
            else:
                _port_number(causes, f"{ppath}.nodePort", node_port)
    causes.extend(validate_labels(spec.get("selector"), "spec.selector"))
    _enum(
        causes,
        "spec.sessionAffinity",
        spec.get("sessionAffinity"),
        ("ClientIP", "None"),
        required=stype != "ExternalName",
    )
    cluster_ip = spec.get("clusterIP")
    if cluster_ip and cluster_ip != "None":
        try:
            ipaddress.ip_address(cluster_ip)
        except ValueError:
            causes.append(
                fe.invalid(
                    "spec.clusterIPs[0]", cluster_ip, "must be empty, 'None', or a valid IP address"
                )
            )
    etp = spec.get("externalTrafficPolicy")
    if etp:
        if stype not in ("NodePort", "LoadBalancer"):
            causes.append(
                fe.invalid(
                    "spec.externalTrafficPolicy",
                    etp,
                    "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
                )
            )
        else:
            _enum(causes, "spec.externalTrafficPolicy", etp, ("Cluster", "Local"), required=False)
    _enum(
        causes,
        "spec.internalTrafficPolicy",
        spec.get("internalTrafficPolicy"),
        ("Cluster", "Local"),
        required=False,
    )
    return causes


def _validate_service_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes: Causes = []
    new_spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    if "ExternalName" in (new_spec.get("type"), old_spec.get("type")):
        return causes
    old_ip, new_ip = old_spec.get("clusterIP"), new_spec.get("clusterIP")
    if old_ip and new_ip != old_ip:
        causes.append(
            fe.invalid(
                "spec.clusterIPs[0]",
                new_spec.get("clusterIPs") or [new_ip or ""],
                "may not change once set",
            )
        )
    return causes


def _config_keys(causes: Causes, data: Any, path: str) -> int:
    total = 0
    for key, value in _d(data).items():
        kpath = f"{path}[{key}]"
        errs = []
        if len(key) > 253:
            errs.append("must be no more than 253 characters")
        if not _CONFIG_KEY_RE.match(key):
            errs.append(
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
                "'[-._a-zA-Z0-9]+')"
            )
        if key == ".":
            errs.append("must not be '.'")
        elif key == "..":
            errs.append("must not be '..'")
        elif key.startswith(".."):
            errs.append("must not start with '..'")
        causes.extend(fe.invalid(kpath, key, m) for m in errs)
        total += len(str(value).encode())
    return total


def _decoded_size(causes: Causes, data: Any, path: str) -> int:
    total = 0
    for key, value in _d(data).items():
        try:
            total += len(base64.b64decode(str(value), validate=True))
        except (binascii.Error, ValueError):
            causes.append(fe.invalid(f"{path}[{key}]", "<value omitted>", "illegal base64 data"))
    return total


def _validate_configmap(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    total = _config_keys(causes, obj.get("data"), "data")
    _config_keys(causes, obj.get("binaryData"), "binaryData")
    total += _decoded_size(causes, obj.get("binaryData"), "binaryData")
    for key in _d(obj.get("data")):
        if key in _d(obj.get("binaryData")):
            causes.append(fe.invalid(f"data[{key}]", key, "duplicate of key present in binaryData"))
    if total > MAX_CONFIG_SIZE_BYTES:
        causes.append(fe.too_long("", MAX_CONFIG_SIZE_BYTES))
    return causes


_SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
}


def _validate_secret(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    _config_keys(causes, obj.get("data"), "data")
    total = _decoded_size(causes, obj.get("data"), "data")
    if total > MAX_CONFIG_SIZE_BYTES:
        causes.append(fe.too_long("data", MAX_CONFIG_SIZE_BYTES))
    secret_type = obj.get("type") or "Opaque"
    if not isinstance(secret_type, str):
        causes.append(fe.invalid("type", secret_type, "must be a string"))
        secret_type = ""
    data = _d(obj.get("data"))
    if secret_type == "kubernetes.io/service-account-token":
        annotations = _d(_d(obj.get("metadata")).get("annotations"))
        key = "kubernetes.io/service-account.name"
        if not annotations.get(key):
            causes.append(fe.required(f"metadata.annotations[{key}]"))
    for key in _SECRET_REQUIRED_KEYS.get(secret_type, ()):
        if key not in data:
            causes.append(fe.required(f"data[{key}]"))
    if secret_type == "kubernetes.io/basic-auth" and not ("username" in data or "password" in data):
        causes.append(fe.required("data[username]"))
        causes.append(fe.required("data[password]"))
    return causes


def _immutable_data(causes: Causes, new: Obj, old: Obj, keys: tuple[str, ...]) -> None:
    if old.get("immutable") is True:
        if new.get("immutable") is not True:
            causes.append(fe.forbidden("immutable", "field is immutable when `immutable` is set"))
        for key in keys:
            if (new.get(key) or {}) != (old.get(key) or {}):
                causes.append(fe.forbidden(key, "field is immutable when `immutable` is set"))


def _validate_configmap_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes: Causes = []
    _immutable_data(causes, new, old, ("data", "binaryData"))
    return causes


def _validate_secret_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes: Causes = []
    _immutable(causes, "type", new.get("type"), old.get("type"))
    _immutable_data(causes, new, old, ("data",))
    return causes


def _validate_namespace(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    for i, finalizer in enumerate(_l(_d(obj.get("spec")).get("finalizers"))):
        causes.extend(
            fe.invalid(f"spec.finalizers[{i}]", finalizer, m)
            for m in is_qualified_name(str(finalizer))
        )
    return causes


def _validate_node(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    seen: set[tuple[Any, Any]] = set()
    for i, taint in enumerate(_l(spec.get("taints"))):
        taint = _d(taint)
        tpath = f"spec.taints[{i}]"
        key = taint.get("key")
        if not key:
            causes.append(fe.required(f"{tpath}.key"))
        else:
            causes.extend(fe.invalid(f"{tpath}.key", key, m) for m in is_qualified_name(str(key)))
        value = taint.get("value")
        if value:
            causes.extend(
                fe.invalid(f"{tpath}.value", value, m) for m in is_valid_label_value(str(value))
            )
        _enum(causes, f"{tpath}.effect", taint.get("effect"), TAINT_EFFECTS, required=True)
        pair = (_h(key), _h(taint.get("effect")))
        if pair in seen:
            causes.append(fe.duplicate(tpath, f"{key}={value or ''}:{taint.get('effect')}"))
        seen.add(pair)
    for key in ("podCIDR",):
        cidr = spec.get(key)
        if cidr:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                causes.append(fe.invalid(f"spec.{key}", cidr, "must be a valid CIDR"))
    return causes


def _validate_node_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes: Causes = []
    new_spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    old_cidr = old_spec.get("podCIDR")
    if old_cidr and new_spec.get("podCIDR") != old_cidr:
        causes.append(fe.forbidden("spec.podCIDR", "podCIDR cannot be changed once set"))
    return causes


PVC_ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")


def _access_modes(causes: Causes, path: str, modes: Any) -> None:
    modes = _l(modes)
    if not modes:
        causes.append(fe.required(path, "at least 1 access mode is required"))
    for mode in modes:
        if mode not in PVC_ACCESS_MODES:
            causes.append(fe.not_supported(path, mode, PVC_ACCESS_MODES))


def _validate_pvc(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    _access_modes(causes, "spec.accessModes", spec.get("accessModes"))
    requests = _d(_d(spec.get("resources")).get("requests"))
    if "storage" not in requests:
        causes.append(fe.required("spec.resources[storage]"))
    else:
        _validate_resources(causes, "spec.resources", spec.get("resources"))
    _enum(
        causes, "spec.volumeMode", spec.get("volumeMode"), ("Block", "Filesystem"), required=False
    )
    return causes


def _validate_pvc_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    new_spec = json.loads(json.dumps(_d(new.get("spec"))))
    old_spec = _d(old.get("spec"))
    if not old_spec.get("volumeName") and new_spec.get("volumeName"):
        new_spec.pop("volumeName")
        old_spec = {k: v for k, v in old_spec.items() if k != "volumeName"}
    old_annotations = _d(_d(old.get("metadata")).get("annotations"))
    if (
        old_spec.get("storageClassName") is None
        and "volume.beta.kubernetes.io/storage-class" not in old_annotations
        and new_spec.get("storageClassName")
    ):
        # A claim without a class may get one once (upstream: the retroactive default
        # StorageClass assignment of the PersistentVolume controller).
        new_spec.pop("storageClassName")
    if old_spec.get("volumeName"):
        # bound claims may grow their storage request
        resources = _d(new_spec.get("resources"))
        if "requests" in resources:
            resources["requests"] = _d(old_spec.get("resources")).get("requests")
    if new_spec != old_spec:
        return [
            fe.forbidden(
                "spec",
                "spec is immutable after creation except resources.requests for bound claims",
            )
        ]
    return []


_PV_NON_SOURCE_KEYS = {
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeMode",
    "volumeAttributesClassName",
}


def _validate_pv(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    _access_modes(causes, "spec.accessModes", spec.get("accessModes"))
    capacity = _d(spec.get("capacity"))
    if "storage" not in capacity:
        causes.append(fe.required("spec.capacity"))
    sources = [k for k in spec if k not in _PV_NON_SOURCE_KEYS]
    host_path = spec.get("hostPath")
    if isinstance(host_path, dict):
        path = host_path.get("path")
        if not path:
            causes.append(fe.required("spec.hostPath.path"))
        elif ".." in str(path).split("/"):
            # upstream validatePathNoBacksteps
            causes.append(fe.invalid("spec.hostPath.path", path, "must not contain '..'"))
    if not sources:
        causes.append(fe.required("spec", "must specify a volume type"))
    elif len(sources) > 1:
        causes.append(fe.forbidden(f"spec.{sources[1]}", "may not specify more than 1 volume type"))
    _enum(
        causes,
        "spec.persistentVolumeReclaimPolicy",
        spec.get("persistentVolumeReclaimPolicy"),
        ("Delete", "Recycle", "Retain"),
        required=False,
    )
    return causes


def _validate_event(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    namespace = _d(obj.get("metadata")).get("namespace") or ""
    if info.group == "events.k8s.io":
        regarding = _d(obj.get("regarding"))
        involved_ns, path = regarding.get("namespace") or "", "regarding.namespace"
        if not obj.get("eventTime"):
            causes.append(fe.required("eventTime"))
        if obj.get("type") not in ("Normal", "Warning"):
            causes.append(fe.invalid("type", "", f"has invalid value: {obj.get('type') or ''}"))
        for key in ("reportingController", "reportingInstance", "action", "reason"):
            value = obj.get(key)
            if not value:
                causes.append(fe.required(key))
            elif len(str(value)) > 128:
                causes.append(fe.too_long(key, 128))
        controller = obj.get("reportingController")
        if controller:
            causes.extend(
                fe.invalid("reportingController", controller, m)
                for m in is_qualified_name(str(controller))
            )
        note = obj.get("note")
        if note and len(str(note)) > 1024:
            causes.append(fe.too_long("note", 1024))
    else:
        involved_ns = _d(obj.get("involvedObject")).get("namespace") or ""
        path = "involvedObject.namespace"
        if obj.get("type") and obj.get("type") not in ("Normal", "Warning"):
            pass  # core/v1 accepts any type (legacy clients)
    if not involved_ns:
        if namespace not in ("", "default"):
            causes.append(fe.invalid(path, involved_ns, "does not match event.namespace"))
    elif namespace != involved_ns:
        causes.append(fe.invalid(path, involved_ns, "does not match event.namespace"))
    return causes


def _validate_endpoints(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    for i, subset in enumerate(_l(obj.get("subsets"))):
        subset = _d(subset)
        for key in ("addresses", "notReadyAddresses"):
            for j, address in enumerate(_l(subset.get(key))):
                ip = _d(address).get("ip")
                apath = f"subsets[{i}].{key}[{j}].ip"
                try:
                    ipaddress.ip_address(ip or "")
                except ValueError:
                    causes.append(fe.invalid(apath, ip or "", "must be a valid IP address"))
        for j, port in enumerate(_l(subset.get("ports"))):
            port = _d(port)
            _port_number(causes, f"subsets[{i}].ports[{j}].port", port.get("port"))
            _enum(
                causes,
                f"subsets[{i}].ports[{j}].protocol",
                port.get("protocol"),
                PROTOCOLS,
                required=True,
            )
    return causes


def _validate_endpointslice(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    _enum(causes, "addressType", obj.get("addressType"), ("FQDN", "IPv4", "IPv6"), required=True)
    for i, endpoint in enumerate(_l(obj.get("endpoints"))):
        addresses = _l(_d(endpoint).get("addresses"))
        if not addresses:
            causes.append(
                fe.required(f"endpoints[{i}].addresses", "must contain at least 1 address")
            )
        elif len(addresses) > 100:
            causes.append(fe.too_many(f"endpoints[{i}].addresses", len(addresses), 100))
    for i, port in enumerate(_l(obj.get("ports"))):
        port = _d(port)
        if port.get("port") is not None:
            _port_number(causes, f"ports[{i}].port", port.get("port"))
        _enum(causes, f"ports[{i}].protocol", port.get("protocol"), PROTOCOLS, required=True)
    return causes


# --- other groups --------------------------------------------------------------------------


def _validate_rules(causes: Causes, rules: Any, *, namespaced: bool, path: str = "rules") -> None:
    for i, rule in enumerate(_l(rules)):
        rule = _d(rule)
        rpath = f"{path}[{i}]"
        if not _l(rule.get("verbs")):
            causes.append(fe.required(f"{rpath}.verbs", "verbs must contain at least one value"))
        urls = _l(rule.get("nonResourceURLs"))
        if urls:
            if namespaced:
                causes.append(
                    fe.invalid(
                        f"{rpath}.nonResourceURLs",
                        urls,
                        "namespaced rules cannot apply to non-resource URLs",
                    )
                )
            if (
                _l(rule.get("apiGroups"))
                or _l(rule.get("resources"))
                or _l(rule.get("resourceNames"))
            ):
                causes.append(
                    fe.invalid(
                        f"{rpath}.nonResourceURLs",
                        urls,
                        "rules cannot apply to both regular resources and non-resource URLs",
                    )
                )
            continue
        if not _l(rule.get("apiGroups")):
            causes.append(
                fe.required(
                    f"{rpath}.apiGroups", "resource rules must supply at least one api group"
                )
            )
        if not _l(rule.get("resources")):
            causes.append(
                fe.required(
                    f"{rpath}.resources", "resource rules must supply at least one resource"
                )
            )


def _validate_role(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    _validate_rules(causes, obj.get("rules"), namespaced=info.namespaced)
    if info.kind == "ClusterRole" and obj.get("aggregationRule") is not None:
        selectors = _l(_d(obj.get("aggregationRule")).get("clusterRoleSelectors"))
        if not selectors:
            causes.append(
                fe.required(
                    "aggregationRule.clusterRoleSelectors",
                    "at least one clusterRoleSelector required if aggregationRule is non-nil",
                )
            )
        for i, selector in enumerate(selectors):
            _label_selector(causes, f"aggregationRule.clusterRoleSelectors[{i}]", selector)
    return causes


SUBJECT_KINDS = ("ServiceAccount", "User", "Group")


def _validate_binding(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    ref = _d(obj.get("roleRef"))
    if ref.get("apiGroup") != RBAC_GROUP:
        causes.append(fe.not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), (RBAC_GROUP,)))
    kinds = ("Role", "ClusterRole") if info.kind == "RoleBinding" else ("ClusterRole",)
    if ref.get("kind") not in kinds:
        causes.append(fe.not_supported("roleRef.kind", ref.get("kind", ""), kinds))
    if not ref.get("name"):
        causes.append(fe.required("roleRef.name"))
    else:
        causes.extend(
            fe.invalid("roleRef.name", ref["name"], m)
            for m in is_valid_path_segment_name(str(ref["name"]))
        )
    for i, subject in enumerate(_l(obj.get("subjects"))):
        subject = _d(subject)
        spath = f"subjects[{i}]"
        kind = subject.get("kind")
        if not subject.get("name"):
            causes.append(fe.required(f"{spath}.name"))
        if kind == "ServiceAccount":
            if subject.get("apiGroup"):
                causes.append(fe.not_supported(f"{spath}.apiGroup", subject.get("apiGroup"), ("",)))
            if not subject.get("namespace") and info.kind == "ClusterRoleBinding":
                causes.append(fe.required(f"{spath}.namespace"))
            if subject.get("name"):
                causes.extend(
                    fe.invalid(f"{spath}.name", subject["name"], m)
                    for m in is_dns1123_subdomain(str(subject["name"]))
                )
        elif kind in ("User", "Group"):
            if subject.get("apiGroup") != RBAC_GROUP:
                causes.append(
                    fe.not_supported(
                        f"{spath}.apiGroup", subject.get("apiGroup", ""), (RBAC_GROUP,)
                    )
                )
        else:
            causes.append(fe.not_supported(f"{spath}.kind", kind or "", SUBJECT_KINDS))
    return causes


def _validate_binding_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    if new.get("roleRef") != old.get("roleRef"):
        return [fe.invalid("roleRef", new.get("roleRef"), "cannot change roleRef")]
    return []


def _validate_lease(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    _positive(causes, "spec.leaseDurationSeconds", spec.get("leaseDurationSeconds"))
    _nonneg(causes, "spec.leaseTransitions", spec.get("leaseTransitions"))
    return causes


def _validate_pdb(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        causes.append(
            fe.invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set")
        )
    _int_or_percent(causes, "spec.minAvailable", spec.get("minAvailable"))
    _int_or_percent(causes, "spec.maxUnavailable", spec.get("maxUnavailable"))
    _label_selector(causes, "spec.selector", spec.get("selector"))
    _enum(
        causes,
        "spec.unhealthyPodEvictionPolicy",
        spec.get("unhealthyPodEvictionPolicy"),
        ("AlwaysAllow", "IfHealthyBudget"),
        required=False,
    )
    return causes


def _validate_hpa(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    ref = _d(spec.get("scaleTargetRef"))
    for key in ("kind", "name"):
        if not ref.get(key):
            causes.append(fe.required(f"spec.scaleTargetRef.{key}"))
    min_replicas = _int(spec.get("minReplicas"))
    max_replicas = _int(spec.get("maxReplicas"))
    if min_replicas is not None and min_replicas < 1:
        causes.append(
            fe.invalid("spec.minReplicas", min_replicas, "must be greater than or equal to 1")
        )
    if max_replicas is None or max_replicas < 1:
        causes.append(fe.invalid("spec.maxReplicas", spec.get("maxReplicas", 0), GT_ZERO))
    elif min_replicas is not None and max_replicas < min_replicas:
        causes.append(
            fe.invalid(
                "spec.maxReplicas", max_replicas, "must be greater than or equal to `minReplicas`"
            )
        )
    if info.version == "v1":
        target = spec.get("targetCPUUtilizationPercentage")
        if target is not None:
            _positive(causes, "spec.targetCPUUtilizationPercentage", target)
    return causes


def _validate_priorityclass(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    value = obj.get("value")
    if _int(value) is None:
        causes.append(
            fe.required("value")
            if value is None
            else fe.invalid("value", value, "must be an integer")
        )
    _enum(
        causes,
        "preemptionPolicy",
        obj.get("preemptionPolicy"),
        ("Never", "PreemptLowerPriority"),
        required=False,
    )
    return causes


def _validate_priorityclass_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes: Causes = []
    if new.get("value") != old.get("value"):
        causes.append(fe.forbidden("value", "may not be changed in an update."))
    _immutable(causes, "preemptionPolicy", new.get("preemptionPolicy"), old.get("preemptionPolicy"))
    return causes


def _validate_storageclass(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    if not obj.get("provisioner"):
        causes.append(fe.required("provisioner"))
    _enum(causes, "reclaimPolicy", obj.get("reclaimPolicy"), ("Delete", "Retain"), required=False)
    _enum(
        causes,
        "volumeBindingMode",
        obj.get("volumeBindingMode"),
        ("Immediate", "WaitForFirstConsumer"),
        required=False,
    )
    return causes


def _validate_storageclass_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes: Causes = []
    for key in ("parameters", "provisioner", "reclaimPolicy"):
        if new.get(key) != old.get(key):
            causes.append(fe.forbidden(key, f"updates to {key} are forbidden."))
    _immutable(
        causes, "volumeBindingMode", new.get("volumeBindingMode"), old.get("volumeBindingMode")
    )
    return causes


def _validate_ingress(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    if not spec.get("defaultBackend") and not _l(spec.get("rules")):
        causes.append(
            fe.invalid("spec.rules", [], "either `defaultBackend` or `rules` must be specified")
        )
    for i, rule in enumerate(_l(spec.get("rules"))):
        for j, path in enumerate(_l(_d(_d(rule).get("http")).get("paths"))):
            path = _d(path)
            ppath = f"spec.rules[{i}].http.paths[{j}]"
            path_type = path.get("pathType")
            if not path_type:
                causes.append(fe.required(f"{ppath}.pathType", "pathType must be specified"))
            else:
                _enum(
                    causes,
                    f"{ppath}.pathType",
                    path_type,
                    ("Exact", "ImplementationSpecific", "Prefix"),
                    required=True,
                )
            if path_type in ("Exact", "Prefix") and not str(path.get("path", "")).startswith("/"):
                causes.append(
                    fe.invalid(f"{ppath}.path", path.get("path", ""), "must be an absolute path")
                )
            backend = _d(path.get("backend"))
            if not backend.get("service") and not backend.get("resource"):
                causes.append(
                    fe.invalid(f"{ppath}.backend", backend, "one backend must be specified")
                )
    return causes


def _validate_ingressclass(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    controller = _d(obj.get("spec")).get("controller")
    if not controller:
        causes.append(fe.required("spec.controller"))
    return causes


def _validate_networkpolicy(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    _label_selector(causes, "spec.podSelector", spec.get("podSelector") or {})
    types = _l(spec.get("policyTypes"))
    for i, ptype in enumerate(types):
        if ptype not in ("Ingress", "Egress"):
            causes.append(fe.not_supported(f"spec.policyTypes[{i}]", ptype, ("Ingress", "Egress")))
    if len(types) > 2:
        causes.append(
            fe.invalid("spec.policyTypes", types, "may not specify more than two policyTypes")
        )
    return causes


_WEBHOOK_OPERATIONS = ("*", "CONNECT", "CREATE", "DELETE", "UPDATE")


def _webhook_url(path: str, url: str) -> Causes:
    """kube-apiserver's ValidateWebhookURL (forceHTTPS)."""
    try:
        parts = urlsplit(url)
    except ValueError as e:
        return [fe.invalid(path, url, f"url must be a valid URL: {e}")]
    causes: Causes = []
    if parts.scheme != "https":
        causes.append(fe.invalid(path, parts.scheme, "'https' is the only allowed URL scheme"))
    if not parts.hostname:
        causes.append(fe.invalid(path, parts.netloc, "host must be specified"))
    if parts.username is not None or parts.password is not None:
        causes.append(
            fe.invalid(path, parts.netloc, "user information is not permitted in the URL")
        )
    if parts.fragment or url.endswith("#"):
        causes.append(fe.invalid(path, parts.fragment, "fragments are not permitted in the URL"))
    if parts.query or url.endswith("?"):
        causes.append(
            fe.invalid(path, parts.query, "query parameters are not permitted in the URL")
        )
    return causes


def _webhook_service(path: str, service: Obj) -> Causes:
    causes: Causes = []
    if not service.get("namespace"):
        causes.append(fe.required(f"{path}.namespace", "service namespace is required"))
    if not service.get("name"):
        causes.append(fe.required(f"{path}.name", "service name is required"))
    svc_path = service.get("path")
    if svc_path:
        if not str(svc_path).startswith("/"):
            causes.append(fe.invalid(f"{path}.path", svc_path, "must start with a '/'"))
    port = _int(service.get("port"))
    if port is not None and not 1 <= port <= 65535:
        causes.append(
            fe.invalid(
                f"{path}.port", port, "port is not valid: must be between 1 and 65535, inclusive"
            )
        )
    return causes


def _webhook_rule_resources(path: str, resources: list[str]) -> Causes:
    """kube-apiserver's rule resource checks: wildcards may not overlap other entries."""
    if not resources:
        return [fe.required(path)]
    causes: Causes = []
    wildcard_sub: set[str] = set()  # "x/*"
    wildcard_res: set[str] = set()  # "*/x"
    plain = False
    for i, entry in enumerate(resources):
        if not entry:
            causes.append(fe.required(f"{path}[{i}]"))
            continue
        res, sep, sub = entry.partition("/")
        if not sep:
            plain = plain or entry != "*"
            continue
        if res in wildcard_sub:
            message = f"if '{res}/*' is present, must not specify {entry}"
            causes.append(fe.invalid(f"{path}[{i}]", entry, message))
        if sub in wildcard_res:
            message = f"if '*/{sub}' is present, must not specify {entry}"
            causes.append(fe.invalid(f"{path}[{i}]", entry, message))
        if sub == "*":
            wildcard_sub.add(res)
        if res == "*":
            wildcard_res.add(sub)
    if len(resources) > 1 and "*/*" in resources:
        message = "if '*/*' is present, must not specify other resources"
        causes.append(fe.invalid(path, resources, message))
    if "*" in resources and plain:
        message = "if '*' is present, must not specify other resources without subresources"
        causes.append(fe.invalid(path, resources, message))
    return causes


def _webhook_rule(path: str, rule: Obj) -> Causes:
    causes: Causes = []
    operations = [str(o) for o in _l(rule.get("operations"))]
    if not operations:
        causes.append(fe.required(f"{path}.operations"))
    elif len(operations) > 1 and "*" in operations:
        causes.append(
            fe.invalid(
                f"{path}.operations",
                operations,
                "if '*' is present, must not specify other operations",
            )
        )
    for k, operation in enumerate(operations):
        if operation not in _WEBHOOK_OPERATIONS:
            causes.append(
                fe.not_supported(f"{path}.operations[{k}]", operation, _WEBHOOK_OPERATIONS)
            )
    for key, what in (("apiGroups", "API groups"), ("apiVersions", "API versions")):
        values = [str(v) for v in _l(rule.get(key))]
        if not values:
            causes.append(fe.required(f"{path}.{key}"))
        elif len(values) > 1 and "*" in values:
            causes.append(
                fe.invalid(
                    f"{path}.{key}", values, f"if '*' is present, must not specify other {what}"
                )
            )
    for k, version in enumerate(_l(rule.get("apiVersions"))):
        if not version:
            causes.append(fe.required(f"{path}.apiVersions[{k}]"))
    resources = [str(r) for r in _l(rule.get("resources"))]
    causes.extend(_webhook_rule_resources(f"{path}.resources", resources))
    _enum(
        causes, f"{path}.scope", rule.get("scope"), ("*", "Cluster", "Namespaced"), required=False
    )
    return causes


def _validate_webhooks(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    names: set[str] = set()
    for i, webhook in enumerate(_l(obj.get("webhooks"))):
        webhook = _d(webhook)
        wpath = f"webhooks[{i}]"
        name = webhook.get("name")
        if not name:
            causes.append(fe.required(f"{wpath}.name"))
        else:
            errs = is_dns1123_subdomain(str(name))
            causes.extend(fe.invalid(f"{wpath}.name", name, m) for m in errs)
            if not errs and len(str(name).split(".")) < 3:
                causes.append(
                    fe.invalid(
                        f"{wpath}.name",
                        name,
                        "should be a domain with at least three segments separated by dots",
                    )
                )
            if _h(name) in names:
                causes.append(fe.duplicate(f"{wpath}.name", name))
            names.add(_h(name))
        if not webhook.get("sideEffects"):
            causes.append(
                fe.required(f"{wpath}.sideEffects", "must specify one of None, NoneOnDryRun")
            )
        elif webhook["sideEffects"] not in ("None", "NoneOnDryRun"):
            causes.append(
                fe.not_supported(
                    f"{wpath}.sideEffects", webhook["sideEffects"], ("None", "NoneOnDryRun")
                )
            )
        if not _l(webhook.get("admissionReviewVersions")):
            causes.append(
                fe.required(f"{wpath}.admissionReviewVersions", "must specify one of v1, v1beta1")
            )
        versions = [str(v) for v in _l(webhook.get("admissionReviewVersions"))]
        if versions and not any(v in ("v1", "v1beta1") for v in versions):
            causes.append(
                fe.invalid(
                    f"{wpath}.admissionReviewVersions",
                    versions,
                    "must include at least one of v1, v1beta1",
                )
            )
        # matchConditions (CEL) are checked by the webhook admission plugin, which compiles
        # them (sampan.apiserver.admission.webhooks.configuration_errors).
        client = _d(webhook.get("clientConfig"))
        if bool(client.get("url")) == bool(client.get("service")):
            causes.append(
                fe.required(f"{wpath}.clientConfig", "exactly one of url or service is required")
            )
        elif client.get("url"):
            causes.extend(_webhook_url(f"{wpath}.clientConfig.url", str(client["url"])))
        else:
            causes.extend(_webhook_service(f"{wpath}.clientConfig.service", _d(client["service"])))
        for j, rule in enumerate(_l(webhook.get("rules"))):
            causes.extend(_webhook_rule(f"{wpath}.rules[{j}]", _d(rule)))
        if "reinvocationPolicy" in webhook and info.kind == "MutatingWebhookConfiguration":
            _enum(
                causes,
                f"{wpath}.reinvocationPolicy",
                webhook.get("reinvocationPolicy"),
                ("IfNeeded", "Never"),
                required=False,
            )
        for key in ("namespaceSelector", "objectSelector"):
            selector = webhook.get(key)
            if selector:
                try:
                    selector_from_label_selector(selector)
                except SelectorError as e:
                    causes.append(fe.invalid(f"{wpath}.{key}", selector, str(e)))
        _enum(
            causes,
            f"{wpath}.failurePolicy",
            webhook.get("failurePolicy"),
            ("Fail", "Ignore"),
            required=False,
        )
        _enum(
            causes,
            f"{wpath}.matchPolicy",
            webhook.get("matchPolicy"),
            ("Equivalent", "Exact"),
            required=False,
        )
        timeout = _int(webhook.get("timeoutSeconds"))
        if timeout is not None and not 1 <= timeout <= 30:
            causes.append(
                fe.invalid(
                    f"{wpath}.timeoutSeconds",
                    timeout,
                    "the timeout value must be between 1 and 30 seconds",
                )
            )
    return causes


def _validate_crd(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    names = _d(spec.get("names"))
    group = spec.get("group")
    if not group:
        causes.append(fe.required("spec.group"))
    elif len(str(group).split(".")) < 2:
        causes.append(fe.invalid("spec.group", group, "should be a domain with at least one dot"))
    plural = names.get("plural")
    if not plural:
        causes.append(fe.required("spec.names.plural"))
    if not names.get("kind"):
        causes.append(fe.required("spec.names.kind"))
    name = _d(obj.get("metadata")).get("name")
    if plural and group and name != f"{plural}.{group}":
        causes.append(fe.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    _enum(causes, "spec.scope", spec.get("scope"), ("Cluster", "Namespaced"), required=True)
    versions = _l(spec.get("versions"))
    if not versions:
        causes.append(
            fe.invalid(
                "spec.versions", versions, "must have exactly one version marked as storage version"
            )
        )
    else:
        storage = [v for v in versions if _d(v).get("storage")]
        if len(storage) != 1:
            causes.append(
                fe.invalid(
                    "spec.versions",
                    versions,
                    "must have exactly one version marked as storage version",
                )
            )
        seen: set[str] = set()
        for i, version in enumerate(versions):
            vname = _d(version).get("name")
            if not vname:
                causes.append(fe.required(f"spec.versions[{i}].name"))
            elif _h(vname) in seen:
                causes.append(
                    fe.invalid("spec.versions", versions, "must contain unique version names")
                )
            else:
                causes.extend(
                    fe.invalid(f"spec.versions[{i}].name", vname, m)
                    for m in is_dns1035_label(str(vname))
                )
            seen.add(_h(vname))
    if isinstance(spec.get("conversion"), dict):
        causes.extend(_crd_conversion(spec["conversion"]))
    return causes


CONVERSION_REVIEW_VERSIONS = ("v1", "v1beta1")


def _crd_conversion(conversion: Obj) -> Causes:
    """kube-apiserver's conversion checks. Its field paths are those of its internal type:
    ``spec.conversion.webhook.clientConfig`` is reported as
    ``spec.conversion.webhookClientConfig`` and ``spec.conversion.webhook.
    conversionReviewVersions`` as ``spec.conversion.conversionReviewVersions``."""
    path = "spec.conversion"
    causes: Causes = []
    strategy = conversion.get("strategy")
    webhook = conversion.get("webhook")
    webhook = webhook if isinstance(webhook, dict) else None
    client = webhook.get("clientConfig") if webhook is not None else None
    versions = [str(v) for v in _l((webhook or {}).get("conversionReviewVersions"))]
    _enum(causes, f"{path}.strategy", strategy, ("None", "Webhook"), required=True)
    if strategy == "Webhook":
        if not isinstance(client, dict):
            causes.append(
                fe.required(
                    f"{path}.webhookClientConfig", "required when strategy is set to Webhook"
                )
            )
        elif bool(client.get("url")) == bool(client.get("service")):
            causes.append(
                fe.required(
                    f"{path}.webhookClientConfig", "exactly one of url or service is required"
                )
            )
        elif client.get("url"):
            causes.extend(_webhook_url(f"{path}.webhookClientConfig.url", str(client["url"])))
        else:
            causes.extend(
                _webhook_service(f"{path}.webhookClientConfig.service", _d(client["service"]))
            )
        where = f"{path}.conversionReviewVersions"
        if not versions:
            causes.append(fe.required(where))
        else:
            seen: set[str] = set()
            for i, version in enumerate(versions):
                if version in seen:
                    causes.append(fe.invalid(f"{where}[{i}]", version, "duplicate version"))
                    continue
                seen.add(version)
                causes.extend(
                    fe.invalid(f"{where}[{i}]", version, m) for m in is_dns1035_label(version)
                )
            if not seen & set(CONVERSION_REVIEW_VERSIONS):
                causes.append(
                    fe.invalid(
                        where,
                        versions,
                        "must include at least one of " + ", ".join(CONVERSION_REVIEW_VERSIONS),
                    )
                )
    else:
        if client is not None:
            causes.append(
                fe.forbidden(
                    f"{path}.webhookClientConfig",
                    "should not be set when strategy is not set to Webhook",
                )
            )
        if versions:
            causes.append(
                fe.forbidden(
                    f"{path}.conversionReviewVersions",
                    "should not be set when strategy is not set to Webhook",
                )
            )
    return causes


CSR_MIN_EXPIRATION_S = 600
CSR_CONDITION_TYPES = ("Approved", "Denied", "Failed")
_PEM_CSR_RE = re.compile(
    r"-----BEGIN (NEW )?CERTIFICATE REQUEST-----\s+[A-Za-z0-9+/=\s]+"
    r"-----END (NEW )?CERTIFICATE REQUEST-----"
)


def _validate_csr(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    spec = _d(obj.get("spec"))
    request = spec.get("request")
    if not request:
        causes.append(fe.required("spec.request"))
    else:
        try:
            pem = base64.b64decode(str(request), validate=True).decode("ascii", "replace")
        except (binascii.Error, ValueError):
            pem = ""
        if not _PEM_CSR_RE.search(pem):
            causes.append(
                fe.invalid("spec.request", request, "PEM block type must be CERTIFICATE REQUEST")
            )
    signer = spec.get("signerName")
    if not signer:
        causes.append(fe.required("spec.signerName"))
    elif not isinstance(signer, str) or "/" not in signer:
        causes.append(
            fe.invalid(
                "spec.signerName",
                signer,
                "must be a fully qualified domain and path of the form 'example.com/signer-name'",
            )
        )
    expiration = spec.get("expirationSeconds")
    if expiration is not None and (_int(expiration) is None or expiration < CSR_MIN_EXPIRATION_S):
        causes.append(
            fe.invalid(
                "spec.expirationSeconds",
                expiration,
                "may not specify a duration less than 600 seconds (10 minutes)",
            )
        )
    causes.extend(_csr_conditions(obj))
    return causes


CSR_USAGES = (
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
)
"""The key usages certificates.k8s.io/v1 accepts, sorted as upstream lists them."""
LEGACY_UNKNOWN_SIGNER = "kubernetes.io/legacy-unknown"


def _validate_csr_v1_create(info: ResourceInfo, obj: Obj) -> Causes:
    """What certificates.k8s.io/v1 refuses in a new request (an object stored before keeps
    its usages and signer: upstream relaxes these on update when the old object had them)."""
    causes: Causes = []
    spec = _d(obj.get("spec"))
    usages = _l(spec.get("usages"))
    if not usages:
        causes.append(fe.required("spec.usages", "usages must be provided"))
    for i, usage in enumerate(usages):
        if usage not in CSR_USAGES:
            causes.append(fe.not_supported(f"spec.usages[{i}]", usage, CSR_USAGES))
    seen: set[Any] = set()
    for i, usage in enumerate(usages):
        if _h(usage) in seen:
            causes.append(fe.duplicate(f"spec.usages[{i}]", usage))
        seen.add(_h(usage))
    if spec.get("signerName") == LEGACY_UNKNOWN_SIGNER:
        causes.append(
            fe.invalid(
                "spec.signerName",
                LEGACY_UNKNOWN_SIGNER,
                "the legacy signerName is not allowed via this API version",
            )
        )
    return causes


def _csr_conditions(obj: Obj) -> Causes:
    causes: Causes = []
    seen: set[Any] = set()
    for i, condition in enumerate(_l(_d(obj.get("status")).get("conditions"))):
        condition = _d(condition)
        ctype = condition.get("type")
        cpath = f"status.conditions[{i}]"
        if not ctype:
            causes.append(fe.required(f"{cpath}.type"))
        elif _h(ctype) in seen and ctype in CSR_CONDITION_TYPES:
            causes.append(fe.duplicate(f"{cpath}.type", ctype))
        seen.add(_h(ctype))
        if condition.get("status") not in ("True", "False", "Unknown"):
            causes.append(
                fe.not_supported(
                    f"{cpath}.status", condition.get("status"), ("False", "True", "Unknown")
                )
            )
    if "Approved" in seen and "Denied" in seen:
        causes.append(
            fe.invalid(
                "status.conditions",
                _l(_d(obj.get("status")).get("conditions")),
                "Approved and Denied conditions are mutually exclusive",
            )
        )
    return causes


def _validate_csr_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes: Causes = []
    if _d(new.get("spec")) != _d(old.get("spec")):
        causes.append(fe.invalid("spec", new.get("spec"), IMMUTABLE))
    return causes


def _validate_csr_status(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes = _csr_conditions(new)
    old_types = {_h(_d(c).get("type")) for c in _l(_d(old.get("status")).get("conditions"))}
    new_types = {_h(_d(c).get("type")) for c in _l(_d(new.get("status")).get("conditions"))}
    for ctype in ("Approved", "Denied", "Failed"):
        if ctype in old_types and ctype not in new_types:
            causes.append(
                fe.forbidden(
                    "status.conditions", f"updates may not remove a condition of type {ctype!r}"
                )
            )
    return causes


def _validate_quota(info: ResourceInfo, obj: Obj) -> Causes:
    causes: Causes = []
    for name, quantity in _d(_d(obj.get("spec")).get("hard")).items():
        try:
            if parse_quantity(quantity) < 0:
                causes.append(fe.invalid(f"spec.hard[{name}]", quantity, GE_ZERO))
        except QuantityError as err:
            causes.append(fe.invalid(f"spec.hard[{name}]", quantity, str(err)))
    return causes


_CreateFn = Callable[[ResourceInfo, Obj], Causes]
_UpdateFn = Callable[[ResourceInfo, Obj, Obj], Causes]

_CREATE: dict[tuple[str, str], _CreateFn] = {
    ("", "Pod"): _validate_pod,
    ("", "PodTemplate"): _validate_podtemplate,
    ("", "ReplicationController"): _validate_replicationcontroller,
    ("", "Service"): _validate_service,
    ("", "ConfigMap"): _validate_configmap,
    ("", "Secret"): _validate_secret,
    ("", "Namespace"): _validate_namespace,
    ("", "Node"): _validate_node,
    ("", "PersistentVolumeClaim"): _validate_pvc,
    ("", "PersistentVolume"): _validate_pv,
    ("", "Event"): _validate_event,
    ("", "Endpoints"): _validate_endpoints,
    ("", "ResourceQuota"): _validate_quota,
    ("certificates.k8s.io", "CertificateSigningRequest"): _validate_csr,
    ("apps", "Deployment"): _validate_deployment,
    ("apps", "ReplicaSet"): _validate_replicaset,
    ("apps", "StatefulSet"): _validate_statefulset,
    ("apps", "DaemonSet"): _validate_daemonset,
    ("batch", "Job"): _validate_job,
    ("batch", "CronJob"): _validate_cronjob,
    ("events.k8s.io", "Event"): _validate_event,
    ("discovery.k8s.io", "EndpointSlice"): _validate_endpointslice,
    ("rbac.authorization.k8s.io", "Role"): _validate_role,
    ("rbac.authorization.k8s.io", "ClusterRole"): _validate_role,
    ("rbac.authorization.k8s.io", "RoleBinding"): _validate_binding,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _validate_binding,
    ("coordination.k8s.io", "Lease"): _validate_lease,
    ("policy", "PodDisruptionBudget"): _validate_pdb,
    ("autoscaling", "HorizontalPodAutoscaler"): _validate_hpa,
    ("scheduling.k8s.io", "PriorityClass"): _validate_priorityclass,
    ("storage.k8s.io", "StorageClass"): _validate_storageclass,
    ("networking.k8s.io", "Ingress"): _validate_ingress,
    ("networking.k8s.io", "IngressClass"): _validate_ingressclass,
    ("networking.k8s.io", "NetworkPolicy"): _validate_networkpolicy,
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): _validate_webhooks,
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): _validate_webhooks,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _validate_crd,
    ("apiregistration.k8s.io", "APIService"): validate_apiservice,
}

# Rules that apply on create only (after the kind's general rules).
_CREATE_ONLY: dict[tuple[str, str], _CreateFn] = {
    ("batch", "CronJob"): _validate_cronjob_name,
    ("certificates.k8s.io", "CertificateSigningRequest"): _validate_csr_v1_create,
}

_UPDATE: dict[tuple[str, str], _UpdateFn] = {
    ("", "Pod"): _validate_pod_update,
    ("", "Service"): _validate_service_update,
    ("", "ConfigMap"): _validate_configmap_update,
    ("", "Secret"): _validate_secret_update,
    ("", "Node"): _validate_node_update,
    ("", "PersistentVolumeClaim"): _validate_pvc_update,
    ("apps", "Deployment"): _validate_selector_immutable,
    ("apps", "ReplicaSet"): _validate_selector_immutable,
    ("apps", "DaemonSet"): _validate_selector_immutable,
    ("apps", "StatefulSet"): _validate_statefulset_update,
    ("batch", "Job"): _validate_job_update,
    ("rbac.authorization.k8s.io", "RoleBinding"): _validate_binding_update,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _validate_binding_update,
    ("scheduling.k8s.io", "PriorityClass"): _validate_priorityclass_update,
    ("storage.k8s.io", "StorageClass"): _validate_storageclass_update,
    ("certificates.k8s.io", "CertificateSigningRequest"): _validate_csr_update,
}

_STATUS: dict[tuple[str, str], _UpdateFn] = {
    ("apiregistration.k8s.io", "APIService"): validate_apiservice_status,
    ("", "Pod"): _validate_pod_status,
    ("certificates.k8s.io", "CertificateSigningRequest"): _validate_csr_status,
}


def validate_create(info: ResourceInfo, obj: Obj) -> Causes:
    causes = validate_object_meta(info, obj)
    check = _CREATE.get((info.group, info.kind))
    if check is not None:
        causes.extend(check(info, obj))
    create_only = _CREATE_ONLY.get((info.group, info.kind))
    if create_only is not None:
        causes.extend(create_only(info, obj))
    return causes


def validate_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes = validate_object_meta_update(info, new, old)
    check = _CREATE.get((info.group, info.kind))
    if check is not None:
        causes.extend(check(info, new))
    transition = _UPDATE.get((info.group, info.kind))
    if transition is not None:
        causes.extend(transition(info, new, old))
    return causes


def validate_status_update(info: ResourceInfo, new: Obj, old: Obj) -> Causes:
    causes = validate_object_meta_update(info, new, old)
    check = _STATUS.get((info.group, info.kind))
    if check is not None:
        causes.extend(check(info, new, old))
    return causes
