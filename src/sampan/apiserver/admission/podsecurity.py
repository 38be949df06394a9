"""PodSecurity admission: the Pod Security Standards (privileged, baseline, restricted) applied
per namespace through the ``pod-security.kubernetes.io/enforce|warn|audit`` labels.

* Pods (create, and updates that change the spec) are refused when they break the namespace's
  ``enforce`` level: ``pods "p" is forbidden: violates PodSecurity "restricted:latest": ...``.
* The ``warn`` level adds ``would violate PodSecurity ...`` Warning headers, for pods and for
  the pod templates of workload objects (Deployments, Jobs, CronJobs...), as upstream does.
* ``audit`` annotates the request's audit event (``pod-security.kubernetes.io/
  audit-violations``), as does every evaluation (``.../enforce-policy``) and exemption
  (``.../exempt``), when the request is audited (sampan.apiserver.audit).
* Namespaces: label values must be valid levels/versions (422 otherwise); turning on or
  tightening ``enforce`` warns about the existing pods that would be refused.

A namespace without a mode's label gets that mode's default from the PodSecurity
configuration (podsecurityconfig.py; without one, ``privileged``: Kubernetes' and K3s's
default). Requests of exempt users, pods of exempt runtime classes and everything in exempt
namespaces are not checked. Only the
``latest`` version of the standards is implemented; a pinned ``*-version`` label is accepted
and evaluated as latest (the 1.32 checks).

Each check returns ``(check id, reason, detail)``; messages join ``reason (detail)`` in check-id
order with ", ", which is upstream's format.

Type strictness (defence in depth behind the API's typed decoding): a field read as a
boolean "is set" unless it is ``false`` or absent — ``"privileged": "true"``, ``"hostPID": 1``
or even ``"hostNetwork": "false"`` are violations, never "false"; a field that must be
``true`` (``runAsNonRoot``) passes only as the boolean ``true``; ``runAsUser`` other than a
non-zero integer, ``capabilities.add`` that is not a list, a ``securityContext`` that is not
an object violate their checks. The kubelet reads the same fields with
``sampan.api.strictfields`` and refuses such a pod, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sampan.api import fielderrors as fe
from sampan.api.errors import Invalid
from sampan.apiserver.admission.chain import AdmissionAttributes, forbidden
from sampan.apiserver.admission.podsecurityconfig import DEFAULT_CONFIG, PodSecurityConfig
from sampan.apiserver.audit import add_annotation

__all__ = [
    "LABEL_PREFIX",
    "LEVELS",
    "PodSecurity",
    "check_pod",
]

LABEL_PREFIX = "pod-security.kubernetes.io/"
LEVELS = ("privileged", "baseline", "restricted")
MODES = ("enforce", "warn", "audit")
LATEST = "latest"
ANNOTATION_ENFORCE_POLICY = LABEL_PREFIX + "enforce-policy"
ANNOTATION_AUDIT_VIOLATIONS = LABEL_PREFIX + "audit-violations"
ANNOTATION_EXEMPT = LABEL_PREFIX + "exempt"

# Workload kinds whose pod template is checked for warn (never enforced), with the template's
# path in the object.
_TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "replicationcontrollers"): ("spec", "template"),
    ("", "podtemplates"): ("template",),
    ("apps", "deployments"): ("spec", "template"),
    ("apps", "replicasets"): ("spec", "template"),
    ("apps", "statefulsets"): ("spec", "template"),
    ("apps", "daemonsets"): ("spec", "template"),
    ("batch", "jobs"): ("spec", "template"),
    ("batch", "cronjobs"): ("spec", "jobTemplate", "spec", "template"),
}

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_VOLUME_META_KEYS = frozenset({"name"})

Finding = tuple[str, str, str]  # (check id, reason, detail)


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_set(obj: Any, key: str) -> bool:
    """A boolean field that is anything but ``false`` or absent (wrong types included)."""
    value = _d(obj).get(key)
    return value is not None and value is not False


def _malformed(value: Any) -> bool:
    """An object-typed field holding something else than an object or null."""
    return value is not None and not isinstance(value, dict)


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        items = spec.get(key)
        if isinstance(items, list):
            out.extend(c for c in items if isinstance(c, dict))
    return out


def _quoted(names: list[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _who(names: list[str], singular: str = "container", plural: str = "containers") -> str:
    return f"{singular if len(names) == 1 else plural} {_quoted(names)}"


def _dedupe(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


# --- baseline -------------------------------------------------------------------------------


def _host_namespaces(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    used = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if _is_set(spec, k)]
    return [("hostNamespaces", "host namespaces", ", ".join(used))] if used else []


def _host_process(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    def is_host(sc: Any) -> bool:
        return _is_set(_d(sc).get("windowsOptions"), "hostProcess")

    names = [c.get("name", "") for c in _containers(spec) if is_host(c.get("securityContext"))]
    parts = []
    if is_host(spec.get("securityContext")):
        parts.append("pod must not set securityContext.windowsOptions.hostProcess=true")
    if names:
        parts.append(f"{_who(names)} must not set securityContext.windowsOptions.hostProcess=true")
    return [("hostProcess", "hostProcess", "; ".join(parts))] if parts else []


def _privileged(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    names = [
        c.get("name", "")
        for c in _containers(spec)
        if _is_set(c.get("securityContext"), "privileged") or _malformed(c.get("securityContext"))
    ]
    if not names:
        return []
    return [
        ("privileged", "privileged", f"{_who(names)} must not set securityContext.privileged=true")
    ]


def _added_caps(container: dict[str, Any]) -> list[str]:
    """``capabilities.add`` as strings; something that is not a list (or an item that is not a
    string) comes back as its text, which no allow-list holds."""
    capabilities = _d(container.get("securityContext")).get("capabilities")
    if _malformed(capabilities):
        return [str(capabilities)]
    caps = _d(capabilities).get("add")
    if caps is None:
        return []
    if not isinstance(caps, list):
        return [str(caps)]
    return [c if isinstance(c, str) else repr(c) for c in caps]


def _capabilities_baseline(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    names: list[str] = []
    bad: list[str] = []
    for container in _containers(spec):
        extra = [c for c in _added_caps(container) if c not in BASELINE_CAPABILITIES]
        if extra:
            names.append(container.get("name", ""))
            bad.extend(extra)
    if not names:
        return []
    detail = (
        f"{_who(names)} must not include {_quoted(sorted(set(bad)))} in "
        "securityContext.capabilities.add"
    )
    return [("capabilities_baseline", "non-default capabilities", detail)]


def _volume_type(volume: dict[str, Any]) -> str:
    for key in volume:
        if key not in _VOLUME_META_KEYS:
            return key
    return ""


def _host_path_volumes(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    names = [
        str(v.get("name", ""))
        for v in spec.get("volumes") or []
        if isinstance(v, dict) and v.get("hostPath") is not None
    ]
    if not names:
        return []
    return [("hostPathVolumes", "hostPath volumes", _who(names, "volume", "volumes"))]


def _host_ports(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    names: list[str] = []
    ports: list[str] = []
    for container in _containers(spec):
        used = [
            str(p.get("hostPort"))
            for p in container.get("ports") or []
            if isinstance(p, dict) and p.get("hostPort")
        ]
        if used:
            names.append(container.get("name", ""))
            ports.extend(used)
    if not names:
        return []
    verb = "uses hostPort" if len(names) == 1 and len(ports) == 1 else "use hostPorts"
    if len(names) == 1 and len(ports) > 1:
        verb = "uses hostPorts"
    elif len(names) > 1 and len(ports) == 1:
        verb = "use hostPort"
    return [("hostPorts", "hostPort", f"{_who(names)} {verb} {', '.join(_dedupe(ports))}")]


def _app_armor(spec: dict[str, Any], meta: dict[str, Any]) -> list[Finding]:
    def bad_profile(profile: Any) -> bool:
        kind = _d(profile).get("type")
        return kind is not None and kind not in ("RuntimeDefault", "Localhost")

    bad: list[str] = []
    if bad_profile(_d(spec.get("securityContext")).get("appArmorProfile")):
        bad.append('pod must not set securityContext.appArmorProfile.type to "Unconfined"')
    names = [
        c.get("name", "")
        for c in _containers(spec)
        if bad_profile(_d(c.get("securityContext")).get("appArmorProfile"))
    ]
    if names:
        bad.append(
            f'{_who(names)} must not set securityContext.appArmorProfile.type to "Unconfined"'
        )
    for key, value in sorted(_d(meta.get("annotations")).items()):
        if key.startswith("container.apparmor.security.beta.kubernetes.io/"):
            if value != "runtime/default" and not str(value).startswith("localhost/"):
                bad.append(f'annotation {key}="{value}"')
    return [("appArmorProfile", "forbidden AppArmor profile", ", ".join(bad))] if bad else []


def _selinux(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    def problems(opts: Any) -> list[str]:
        opts = _d(opts)
        out = []
        kind = opts.get("type", "")
        if not isinstance(kind, str) or kind not in SELINUX_TYPES:
            out.append(f'type "{opts["type"]}"')
        if opts.get("user"):
            out.append("user may not be set")
        if opts.get("role"):
            out.append("role may not be set")
        return out

    bad: list[str] = []
    pod_problems = problems(_d(spec.get("securityContext")).get("seLinuxOptions"))
    if pod_problems:
        bad.append("pod set forbidden securityContext.seLinuxOptions: " + "; ".join(pod_problems))
    names = [
        c.get("name", "")
        for c in _containers(spec)
        if problems(_d(c.get("securityContext")).get("seLinuxOptions"))
    ]
    if names:
        bad.append(f"{_who(names)} set forbidden securityContext.seLinuxOptions")
    return [("seLinuxOptions", "seLinuxOptions", "; ".join(bad))] if bad else []


def _proc_mount(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    names = [
        c.get("name", "")
        for c in _containers(spec)
        if _d(c.get("securityContext")).get("procMount") not in (None, "Default")
    ]
    if not names:
        return []
    return [
        (
            "procMount",
            "procMount",
            f'{_who(names)} must not set securityContext.procMount to "Unmasked"',
        )
    ]


def _seccomp_baseline(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    setters: list[str] = []
    if _d(_d(spec.get("securityContext")).get("seccompProfile")).get("type") == "Unconfined":
        setters.append("pod")
    names = [
        c.get("name", "")
        for c in _containers(spec)
        if _d(_d(c.get("securityContext")).get("seccompProfile")).get("type") == "Unconfined"
    ]
    if names:
        setters.append(_who(names))
    if not setters:
        return []
    detail = (
        f'{" and ".join(setters)} must not set securityContext.seccompProfile.type to "Unconfined"'
    )
    return [("seccompProfile_baseline", "seccompProfile", detail)]


def _sysctls(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    names = [
        str(s.get("name", ""))
        for s in _d(spec.get("securityContext")).get("sysctls") or []
        if not isinstance(s, dict)
        or not isinstance(s.get("name"), str)
        or s.get("name") not in SAFE_SYSCTLS
    ]
    return [("sysctls", "forbidden sysctls", ", ".join(names))] if names else []


# --- restricted -----------------------------------------------------------------------------


def _restricted_volumes(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    bad = [
        (str(v.get("name", "")), _volume_type(v))
        for v in spec.get("volumes") or []
        if isinstance(v, dict) and _volume_type(v) not in RESTRICTED_VOLUME_TYPES
    ]
    if not bad:
        return []
    names = [n for n, _ in bad]
    kinds = sorted({t for _, t in bad})
    verb = "uses" if len(names) == 1 else "use"
    noun = "restricted volume type" if len(kinds) == 1 else "restricted volume types"
    detail = f"{_who(names, 'volume', 'volumes')} {verb} {noun} {_quoted(kinds)}"
    return [("restrictedVolumes", "restricted volume types", detail)]


def _allow_privilege_escalation(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    names = [
        c.get("name", "")
        for c in _containers(spec)
        if _d(c.get("securityContext")).get("allowPrivilegeEscalation") is not False
    ]
    if not names:
        return []
    detail = f"{_who(names)} must set securityContext.allowPrivilegeEscalation=false"
    return [("allowPrivilegeEscalation", "allowPrivilegeEscalation != false", detail)]


def _capabilities_restricted(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    no_drop: list[str] = []
    adders: list[str] = []
    added: list[str] = []
    for container in _containers(spec):
        caps = _d(_d(container.get("securityContext")).get("capabilities"))
        drop = caps.get("drop") if isinstance(caps.get("drop"), list) else []
        if "ALL" not in drop:
            no_drop.append(container.get("name", ""))
        extra = [c for c in _added_caps(container) if c != "NET_BIND_SERVICE"]
        if extra:
            adders.append(container.get("name", ""))
            added.extend(extra)
    parts = []
    if no_drop:
        parts.append(f'{_who(no_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adders:
        parts.append(
            f"{_who(adders)} must not include {_quoted(sorted(set(added)))} in "
            "securityContext.capabilities.add"
        )
    return (
        [("capabilities_restricted", "unrestricted capabilities", "; ".join(parts))]
        if parts
        else []
    )


def _run_as_non_root(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    pod_value = _d(spec.get("securityContext")).get("runAsNonRoot")
    explicit_false: list[str] = []
    unset: list[str] = []
    for container in _containers(spec):
        value = _d(container.get("securityContext")).get("runAsNonRoot")
        if value is not None and value is not True:  # false, or not a boolean
            explicit_false.append(container.get("name", ""))
        elif value is None and pod_value is None:
            unset.append(container.get("name", ""))
    pod_bad = pod_value is not None and pod_value is not True
    setters = (["pod"] if pod_bad else []) + ([_who(explicit_false)] if explicit_false else [])
    if setters:
        detail = f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false"
        return [("runAsNonRoot", "runAsNonRoot != true", detail)]
    if unset:
        detail = f"pod or {_who(unset)} must set securityContext.runAsNonRoot=true"
        return [("runAsNonRoot", "runAsNonRoot != true", detail)]
    return []


def _root_user(sc: Any) -> bool:
    """runAsUser 0, or a runAsUser that is not an integer (which cannot be checked)."""
    value = _d(sc).get("runAsUser")
    if value is None:
        return False
    return value == 0 or not isinstance(value, int) or isinstance(value, bool)


def _run_as_user(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    setters = ["pod"] if _root_user(spec.get("securityContext")) else []
    names = [c.get("name", "") for c in _containers(spec) if _root_user(c.get("securityContext"))]
    if names:
        setters.append(_who(names))
    if not setters:
        return []
    return [("runAsUser", "runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0")]


def _seccomp_restricted(spec: dict[str, Any], _meta: dict[str, Any]) -> list[Finding]:
    good = ("RuntimeDefault", "Localhost")
    pod_type = _d(_d(spec.get("securityContext")).get("seccompProfile")).get("type")
    setters: list[str] = []
    bad_values: set[str] = set()
    if pod_type is not None and pod_type not in good:
        setters.append("pod")
        bad_values.add(str(pod_type))
    bad: list[str] = []
    unset: list[str] = []
    for container in _containers(spec):
        ctype = _d(_d(container.get("securityContext")).get("seccompProfile")).get("type")
        if ctype is not None and ctype not in good:
            bad.append(container.get("name", ""))
            bad_values.add(str(ctype))
        elif ctype is None and pod_type is None:
            unset.append(container.get("name", ""))
    if bad:
        setters.append(_who(bad))
    if setters:
        detail = (
            f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to "
            f"{_quoted(sorted(bad_values))}"
        )
        return [("seccompProfile_restricted", "seccompProfile", detail)]
    if unset:
        detail = (
            f"pod or {_who(unset)} must set securityContext.seccompProfile.type to "
            '"RuntimeDefault" or "Localhost"'
        )
        return [("seccompProfile_restricted", "seccompProfile", detail)]
    return []


Check = Callable[[dict[str, Any], dict[str, Any]], list[Finding]]
BASELINE_CHECKS: tuple[Check, ...] = (
    _app_armor,
    _capabilities_baseline,
    _host_namespaces,
    _host_path_volumes,
    _host_ports,
    _host_process,
    _privileged,
    _proc_mount,
    _selinux,
    _seccomp_baseline,
    _sysctls,
)
RESTRICTED_CHECKS: tuple[Check, ...] = (
    _allow_privilege_escalation,
    _capabilities_restricted,
    _restricted_volumes,
    _run_as_non_root,
    _run_as_user,
    _seccomp_restricted,
)
# Restricted checks that replace a baseline one.
_OVERRIDDEN = {
    "capabilities_baseline": "capabilities_restricted",
    "hostPathVolumes": "restrictedVolumes",
    "seccompProfile_baseline": "seccompProfile_restricted",
}


def check_pod(level: str, metadata: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """The ``reason (detail)`` strings a pod (its metadata and spec) breaks at ``level``, in
    upstream's order; empty when it complies."""
    if level == "privileged":
        return []
    checks = BASELINE_CHECKS + (RESTRICTED_CHECKS if level == "restricted" else ())
    findings: dict[str, Finding] = {}
    for check in checks:
        for finding in check(spec, metadata):
            findings[finding[0]] = finding
    if level == "restricted":
        for baseline_id, restricted_id in _OVERRIDDEN.items():
            if restricted_id in findings or baseline_id in findings:
                findings.pop(baseline_id, None)
        # restrictedVolumes covers hostPath too; keep hostPath reported through it.
    return [
        f"{reason} ({detail})" if detail else reason
        for _, reason, detail in sorted(findings.values(), key=lambda f: f[0].lower())
    ]


def _policy(
    labels: dict[str, Any], mode: str, config: PodSecurityConfig = DEFAULT_CONFIG
) -> tuple[str, str] | None:
    """The (level, version) of ``mode``: the namespace's label, else the configured default;
    None when that is ``privileged`` (nothing to check)."""
    default_level, default_version = config.defaults[mode]
    level = labels.get(LABEL_PREFIX + mode)
    if level is None:
        level = default_level
        version = labels.get(f"{LABEL_PREFIX}{mode}-version") or default_version
        if level == "privileged":
            return None
        return level, str(version)
    version = labels.get(f"{LABEL_PREFIX}{mode}-version") or LATEST
    return str(level), str(version)


def _validate_labels(name: str, labels: dict[str, Any]) -> None:
    causes = []
    for mode in MODES:
        key = LABEL_PREFIX + mode
        if key in labels and labels[key] not in LEVELS:
            causes.append(
                fe.invalid(
                    f"metadata.labels[{key}]",
                    labels[key],
                    "must be one of privileged, baseline, restricted",
                )
            )
        version_key = f"{key}-version"
        version = labels.get(version_key)
        if version is not None and not _valid_version(str(version)):
            causes.append(
                fe.invalid(
                    f"metadata.labels[{version_key}]",
                    version,
                    'must be "latest" or "v1.x"',
                )
            )
    if causes:
        raise Invalid(
            fe.invalid_message("Namespace", name, causes),
            name=name,
            kind="Namespace",
            causes=causes,
        )


def _valid_version(text: str) -> bool:
    if text == LATEST:
        return True
    major, _, minor = text.partition(".")
    return major == "v1" and minor.isdigit()


def _plain(policy: tuple[str, str] | None) -> str:
    """``restricted:latest`` (the enforce-policy annotation's form)."""
    level, version = policy if policy is not None else ("privileged", LATEST)
    return f"{level}:{version}"


def _label(level: str, version: str) -> str:
    return f'"{level}:{version}"'


NamespaceGetter = Callable[[str], Any]
PodLister = Callable[[str], list[dict[str, Any]]]


class PodSecurity:
    """See the module docstring."""

    name = "PodSecurity"
    mutating = False

    def __init__(
        self,
        get_namespace: NamespaceGetter,
        list_pods: PodLister,
        config: PodSecurityConfig = DEFAULT_CONFIG,
    ) -> None:
        self._get_namespace = get_namespace
        self._list_pods = list_pods
        self.config = config

    def _exempt(self, attrs: AdmissionAttributes, spec: dict[str, Any]) -> bool:
        """Exempt namespace, user or runtime class (in upstream's order), annotated."""
        config = self.config
        reason = ""
        if attrs.namespace in config.exempt_namespaces:
            reason = "namespace"
        elif getattr(attrs.user, "name", None) in config.exempt_usernames:
            reason = "user"
        elif spec.get("runtimeClassName") in config.exempt_runtime_classes:
            reason = "runtimeClass"
        if reason:
            add_annotation(ANNOTATION_EXEMPT, reason)
        return bool(reason)

    async def admit(self, attrs: AdmissionAttributes) -> None:
        if attrs.operation not in ("CREATE", "UPDATE") or attrs.obj is None:
            return
        if attrs.is_resource("", "namespaces"):
            await self._namespace(attrs)
            return
        if attrs.subresource and not attrs.is_resource("", "pods", "ephemeralcontainers"):
            return  # upstream: of pods' subresources, only an added debugger is checked
        key = (attrs.group, attrs.resource)
        if key == ("", "pods"):
            await self._pod(attrs)
        elif key in _TEMPLATES:
            await self._workload(attrs, _TEMPLATES[key])

    async def _labels(self, namespace: str) -> dict[str, Any]:
        ns = await self._get_namespace(namespace)
        return _d(_d((ns or {}).get("metadata")).get("labels"))

    async def _pod(self, attrs: AdmissionAttributes) -> None:
        pod = attrs.obj or {}
        spec = _d(pod.get("spec"))
        if attrs.operation == "UPDATE":
            old_spec = _d((attrs.old_obj or {}).get("spec"))
            if spec == old_spec:
                return  # metadata/status-only updates are never re-checked
        if self._exempt(attrs, spec):
            return
        labels = await self._labels(attrs.namespace)
        meta = _d(pod.get("metadata"))
        enforce = _policy(labels, "enforce", self.config)
        add_annotation(ANNOTATION_ENFORCE_POLICY, _plain(enforce))
        audit = _policy(labels, "audit", self.config)
        if audit is not None:
            broken = check_pod(audit[0], meta, spec)
            if broken:
                add_annotation(
                    ANNOTATION_AUDIT_VIOLATIONS,
                    f"would violate PodSecurity {_label(*audit)}: {', '.join(broken)}",
                )
        if enforce is not None:
            broken = check_pod(enforce[0], meta, spec)
            if broken:
                raise forbidden(
                    attrs, f"violates PodSecurity {_label(*enforce)}: {', '.join(broken)}"
                )
        warn = _policy(labels, "warn", self.config)
        if warn is not None:
            broken = check_pod(warn[0], meta, spec)
            if broken:
                attrs.warn(f"would violate PodSecurity {_label(*warn)}: {', '.join(broken)}")

    async def _workload(self, attrs: AdmissionAttributes, path: tuple[str, ...]) -> None:
        template: Any = attrs.obj
        for key in path:
            template = _d(template).get(key)
        template = _d(template)
        if attrs.operation == "UPDATE":
            old: Any = attrs.old_obj
            for key in path:
                old = _d(old).get(key)
            if _d(old) == template:
                return
        meta, spec = _d(template.get("metadata")), _d(template.get("spec"))
        if self._exempt(attrs, spec):
            return
        labels = await self._labels(attrs.namespace)
        audit = _policy(labels, "audit", self.config)
        if audit is not None:
            broken = check_pod(audit[0], meta, spec)
            if broken:
                add_annotation(
                    ANNOTATION_AUDIT_VIOLATIONS,
                    f"would violate PodSecurity {_label(*audit)}: {', '.join(broken)}",
                )
        for mode in ("enforce", "warn"):
            # Upstream warns about workloads for both the enforce and the warn level.
            policy = _policy(labels, mode, self.config)
            if policy is None:
                continue
            broken = check_pod(policy[0], meta, spec)
            if broken:
                attrs.warn(f"would violate PodSecurity {_label(*policy)}: {', '.join(broken)}")

    async def _namespace(self, attrs: AdmissionAttributes) -> None:
        labels = _d(_d((attrs.obj or {}).get("metadata")).get("labels"))
        _validate_labels(attrs.name, labels)
        if attrs.operation != "UPDATE" or attrs.name in self.config.exempt_namespaces:
            return
        enforce = _policy(labels, "enforce", self.config)
        old_labels = _d(_d((attrs.old_obj or {}).get("metadata")).get("labels"))
        if enforce is None or enforce == _policy(old_labels, "enforce", self.config):
            return
        offenders: list[str] = []
        for pod in self._list_pods(attrs.name):
            meta = _d(pod.get("metadata"))
            broken = check_pod(enforce[0], meta, _d(pod.get("spec")))
            if broken:
                offenders.append(f"{meta.get('name', '')}: {', '.join(broken)}")
        if offenders:
            attrs.warn(
                f'existing pods in namespace "{attrs.name}" violate the new PodSecurity '
                f"enforce level {_label(*enforce)}"
            )
            for line in offenders:
                attrs.warn(line)
