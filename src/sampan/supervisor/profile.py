"""The hardened profile, RKE2's ``--profile=cis``, and ``--protect-kernel-defaults``.

``apply_profile(config)`` runs before any component is built:

* ``--profile=cis``: the kernel parameters the kubelet protects (RKE2's list:
  ``vm.overcommit_memory=1``, ``vm.panic_on_oom=0``, ``kernel.panic=10``,
  ``kernel.panic_on_oops=1``) must have those values, or Sampan stops with one line naming
  every wrong one in RKE2's words (``invalid kernel parameter value vm.panic_on_oom=1 -
  expected 0``); then ``protect-kernel-defaults`` is set.
* ``--protect-kernel-defaults`` (alone, as ``--kubelet-arg=protect-kernel-defaults=true``, or
  set by the profile): the same parameters, in the
  kubelet's words (``invalid kernel flag: vm/panic_on_oom, expected value: 0, actual value:
  1``). Sampan's kubelet never changes kernel parameters itself.

The values are read from ``proc_sys`` (``/proc/sys``), which tests point elsewhere.

For a server, ``cis_server_files(config)`` gives what the profile turns on, as RKE2 does: an
audit policy (``<config dir>/audit-policy.yaml``, written once with RKE2's default single
``level: None`` rule, 0600; the log at ``<data-dir>/server/logs/audit.log``) unless
``--audit-policy-file`` names one, and a PodSecurity configuration
(``<config dir>/sampan-pss.yaml``, rewritten at each start, 0600) enforcing, auditing and
warning ``restricted:latest`` everywhere but the exempt namespaces ``kube-system``,
``compliance-operator-system`` and ``tigera-operator`` (RKE2's rke2-pss.yaml) unless
``--pod-security-admission-config-file`` names one. ``SecretFilePermissions`` (a component
started last) makes every file in the data dir that holds a secret 0600: private keys,
kubeconfigs, tokens, the node password, the datastore, the encryption configuration and the
audit logs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from sampan.config import DEFAULT_CONFIG_FILE, Config, ConfigError

__all__ = [
    "KERNEL_PARAMETERS",
    "PROC_SYS",
    "PROFILE_CIS",
    "SecretFilePermissions",
    "apply_profile",
    "cis_server_files",
    "harden_secret_files",
    "kernel_parameter_errors",
]

log = logging.getLogger("sampan.supervisor")

PROFILE_CIS = "cis"
PROC_SYS = Path("/proc/sys")
KERNEL_PARAMETERS = {
    "kernel.panic": 10,
    "kernel.panic_on_oops": 1,
    "vm.overcommit_memory": 1,
    "vm.panic_on_oom": 0,
}
"""What the kubelet's protect-kernel-defaults requires (RKE2's CIS check list)."""
SECRET_FILE_MODE = 0o600
AUDIT_POLICY_NAME = "audit-policy.yaml"
PSS_CONFIG_NAME = "sampan-pss.yaml"
DEFAULT_AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
metadata:
  creationTimestamp: null
rules:
- level: None
"""
RESTRICTED_PSS_CONFIG = """\
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1beta1
    kind: PodSecurityConfiguration
    defaults:
      enforce: "restricted"
      enforce-version: "latest"
      audit: "restricted"
      audit-version: "latest"
      warn: "restricted"
      warn-version: "latest"
    exemptions:
      usernames: []
      runtimeClasses: []
      namespaces: [kube-system, compliance-operator-system, tigera-operator]
"""
_SECRET_SUFFIXES = (".key", ".kubeconfig", ".db", ".db-wal", ".db-shm")
_SECRET_NAMES = frozenset({"token", "agent-token", "node-password", "password"})
_SECRET_DIRS = (("server", "cred"), ("server", "logs"))
_SKIPPED_DIRS = frozenset({"containerd", "pods", "images", "cni", "storage", "pod-manifests"})


def _read_parameter(proc_sys: Path, name: str) -> int:
    text = (proc_sys / name.replace(".", "/")).read_text()
    return int(text.strip())


def kernel_parameter_errors(proc_sys: Path = PROC_SYS, *, kubelet_words: bool = False) -> list[str]:
    """One message per protected kernel parameter that is not as required (name order)."""
    errors = []
    for name, wanted in sorted(KERNEL_PARAMETERS.items()):
        try:
            value = _read_parameter(proc_sys, name)
        except OSError as exc:
            errors.append(f"cannot read kernel parameter {name}: {exc.strerror}")
            continue
        except ValueError:
            errors.append(f"cannot read kernel parameter {name}: not an integer")
            continue
        if value == wanted:
            continue
        if kubelet_words:
            flag = name.replace(".", "/")
            errors.append(
                f"invalid kernel flag: {flag}, expected value: {wanted}, actual value: {value}"
            )
        else:
            errors.append(f"invalid kernel parameter value {name}={value} - expected {wanted}")
    return errors


def apply_profile(config: Config, *, proc_sys: Path = PROC_SYS) -> Config:
    """The configuration with the profile applied; ``ConfigError`` (one line) when the host
    does not meet it."""
    if config.profile == PROFILE_CIS:
        errors = kernel_parameter_errors(proc_sys)
        if errors:
            raise ConfigError(f"--profile={PROFILE_CIS}: {'; '.join(errors)}")
        return dataclasses.replace(config, protect_kernel_defaults=True)
    kubelet_flag = config.component_args("kubelet-arg").get("protect-kernel-defaults", "")
    if config.protect_kernel_defaults or kubelet_flag.strip().lower() in ("true", "1"):
        errors = kernel_parameter_errors(proc_sys, kubelet_words=True)
        if errors:
            raise ConfigError(f"--protect-kernel-defaults: {'; '.join(errors)}")
    return config


def _write_private(path: Path, text: str, *, overwrite: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, SECRET_FILE_MODE)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, SECRET_FILE_MODE)


def cis_server_files(config: Config) -> tuple[str, str]:
    """(audit policy file, PodSecurity admission configuration file) for a server: the user's
    files; with ``--profile=cis``, RKE2's defaults for the ones not given (written now); else
    ``""`` for each not given."""
    audit = config.audit_policy_file
    pss = config.pod_security_admission_config_file
    if config.profile != PROFILE_CIS:
        return audit, pss
    # Beside the configuration file (/etc/sampan by default); --config /dev/null means none.
    config_dir = (
        config.config.parent if config.config != Path(os.devnull) else DEFAULT_CONFIG_FILE.parent
    )
    try:
        if not audit:
            audit = str(config_dir / AUDIT_POLICY_NAME)
            _write_private(Path(audit), DEFAULT_AUDIT_POLICY, overwrite=False)
        if not pss:
            pss = str(config_dir / PSS_CONFIG_NAME)
            _write_private(Path(pss), RESTRICTED_PSS_CONFIG, overwrite=True)
    except OSError as exc:
        raise ConfigError(
            f"--profile={PROFILE_CIS}: cannot write {exc.filename}: {exc.strerror}"
        ) from None
    return audit, pss


def _holds_secret(relative: tuple[str, ...]) -> bool:
    name = relative[-1]
    if name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES):
        return True
    if name.startswith("encryption-") and name.endswith(".json"):
        return True
    return any(relative[: len(d)] == d for d in _SECRET_DIRS)


def harden_secret_files(data_dir: Path) -> list[Path]:
    """chmod 0600 every file under ``data_dir`` that holds a secret; the files changed."""
    changed = []
    for root, dirs, files in os.walk(data_dir):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]
        relative_root = Path(root).relative_to(data_dir).parts
        for name in files:
            if not _holds_secret((*relative_root, name)):
                continue
            path = Path(root) / name
            try:
                mode = path.lstat().st_mode
                if (mode & 0o777) != SECRET_FILE_MODE and not os.path.islink(path):
                    path.chmod(SECRET_FILE_MODE)
                    changed.append(path)
            except OSError as exc:
                log.warning("cannot restrict %s to 0600: %s", path, exc.strerror)
    return changed


class SecretFilePermissions:
    """``--profile=cis``: started after every other component (so the files they wrote at
    start are there), restricts the data dir's secret files to 0600."""

    name = "file-permissions"

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir

    async def start(self, ctx: Any) -> None:
        changed = await asyncio.to_thread(harden_secret_files, self._data_dir)
        for path in changed:
            log.info("restricted %s to 0600 (profile %s)", path, PROFILE_CIS)

    async def stop(self) -> None:
        return None
