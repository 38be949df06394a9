"""``--profile=cis`` and ``--protect-kernel-defaults``: kernel parameter checks (read from a
fake /proc/sys), the files the profile writes, its audit and PodSecurity wiring, and 0600 on
the data dir's secret files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from sampan.config import ConfigError, load_config
from sampan.supervisor.profile import (
    KERNEL_PARAMETERS,
    SecretFilePermissions,
    apply_profile,
    harden_secret_files,
)
from sampan.supervisor.server import APIServerComponent, server_components


def fake_proc_sys(root: Path, **overrides: int) -> Path:
    values = {**KERNEL_PARAMETERS, **{k.replace("__", "."): v for k, v in overrides.items()}}
    for name, value in values.items():
        path = root / name.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")
    return root


def config_for(tmp_path: Path, text: str = "", command: str = "server"):
    path = tmp_path / "etc" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("node-name: n1\nnode-ip: [10.0.0.5]\n" + text)
    flags = {"data_dir": str(tmp_path / "data")}
    if command == "agent":
        flags |= {"server": "https://10.0.0.1:6443", "token": "K10abc::server:secret"}
    return load_config(command, flags, env={}, default_config_file=path)  # type: ignore[arg-type]


def test_cis_with_good_kernel_parameters_sets_protect_kernel_defaults(tmp_path):
    config = config_for(tmp_path, "profile: cis\n")
    assert not config.protect_kernel_defaults
    applied = apply_profile(config, proc_sys=fake_proc_sys(tmp_path / "proc"))
    assert applied.protect_kernel_defaults


def test_cis_names_every_wrong_kernel_parameter_in_one_line(tmp_path):
    proc = fake_proc_sys(tmp_path / "proc", vm__panic_on_oom=1, kernel__panic=0)
    with pytest.raises(ConfigError) as caught:
        apply_profile(config_for(tmp_path, "profile: cis\n"), proc_sys=proc)
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        "--profile=cis: invalid kernel parameter value kernel.panic=0 - expected 10; "
        "invalid kernel parameter value vm.panic_on_oom=1 - expected 0"
    )


def test_cis_names_a_missing_kernel_parameter(tmp_path):
    proc = fake_proc_sys(tmp_path / "proc")
    (proc / "vm" / "overcommit_memory").unlink()
    with pytest.raises(ConfigError, match=r"cannot read kernel parameter vm\.overcommit_memory"):
        apply_profile(config_for(tmp_path, "profile: cis\n", "agent"), proc_sys=proc)


def test_protect_kernel_defaults_alone_uses_the_kubelet_words(tmp_path):
    proc = fake_proc_sys(tmp_path / "proc", vm__overcommit_memory=0)
    config = config_for(tmp_path, "protect-kernel-defaults: true\n", "agent")
    with pytest.raises(ConfigError) as caught:
        apply_profile(config, proc_sys=proc)
    assert str(caught.value) == (
        "--protect-kernel-defaults: invalid kernel flag: vm/overcommit_memory, "
        "expected value: 1, actual value: 0"
    )
    as_kubelet_arg = config_for(tmp_path, "kubelet-arg: [protect-kernel-defaults=true]\n")
    with pytest.raises(ConfigError, match=r"^--protect-kernel-defaults: invalid kernel flag"):
        apply_profile(as_kubelet_arg, proc_sys=proc)
    # Without either flag nothing is checked.
    assert apply_profile(config_for(tmp_path), proc_sys=tmp_path / "nowhere") is not None


def test_unknown_profile_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'cis'"):
        config_for(tmp_path, "profile: cis-1.6\n")


def test_cis_server_turns_on_audit_and_restricted_pod_security(tmp_path):
    config = apply_profile(
        config_for(tmp_path, "profile: cis\n"), proc_sys=fake_proc_sys(tmp_path / "proc")
    )
    components = server_components(config)
    api = next(c for c in components if isinstance(c, APIServerComponent))
    policy = tmp_path / "etc" / "audit-policy.yaml"
    pss = tmp_path / "etc" / "sampan-pss.yaml"
    for path in (policy, pss):
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert yaml.safe_load(policy.read_text())["rules"] == [{"level": "None"}]
    assert api._audit.policy_file == policy
    assert api._audit.log_path == str(tmp_path / "data" / "server" / "logs" / "audit.log")
    assert (api._audit.max_age_days, api._audit.max_backups, api._audit.max_size_mb) == (
        30,
        10,
        100,
    )
    assert api._admission_config == pss
    psa = yaml.safe_load(pss.read_text())["plugins"][0]["configuration"]
    assert psa["defaults"]["enforce"] == "restricted"
    assert "kube-system" in psa["exemptions"]["namespaces"]
    assert isinstance(components[-1], SecretFilePermissions)
    # A policy the user edited is kept on the next start.
    policy.write_text(policy.read_text().replace("None", "Metadata"))
    server_components(config)
    assert "Metadata" in policy.read_text()


def test_user_files_win_over_the_profile(tmp_path):
    own = tmp_path / "own-policy.yaml"
    own.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
    config = config_for(
        tmp_path,
        f"profile: cis\naudit-policy-file: {own}\n"
        "kube-apiserver-arg: [audit-log-path=-, audit-log-maxbackup=3]\n",
    )
    api = next(c for c in server_components(config) if isinstance(c, APIServerComponent))
    assert api._audit.policy_file == own
    assert api._audit.log_path == "-"
    assert api._audit.max_backups == 3
    assert not (tmp_path / "etc" / "audit-policy.yaml").exists()


def test_no_profile_no_audit(tmp_path):
    api = next(
        c for c in server_components(config_for(tmp_path)) if isinstance(c, APIServerComponent)
    )
    assert api._audit is None and api._admission_config is None


def test_bad_audit_policy_stops_the_start_naming_file_and_field(tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n")
    with pytest.raises(ConfigError) as caught:
        server_components(config_for(tmp_path, f"audit-policy-file: {bad}\n"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"audit-policy-file: {bad}: rules[0].level: Unsupported value")


def test_bad_pod_security_config_stops_the_start(tmp_path):
    bad = tmp_path / "psa.yaml"
    bad.write_text(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n"
        "- name: PodSecurity\n  configuration:\n"
        "    apiVersion: pod-security.admission.config.k8s.io/v1\n"
        "    kind: PodSecurityConfiguration\n    defaults: {enforce: strict}\n"
    )
    with pytest.raises(ConfigError) as caught:
        server_components(config_for(tmp_path, f"pod-security-admission-config-file: {bad}\n"))
    assert str(caught.value) == (
        f"pod-security-admission-config-file: {bad}: plugins[0].configuration.defaults.enforce: "
        'Unsupported value: "strict": supported values: "privileged", "baseline", "restricted"'
    )


def test_audit_args_without_a_policy_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="--audit-log-path needs an audit policy"):
        server_components(config_for(tmp_path, "kube-apiserver-arg: [audit-log-path=/x]\n"))


def test_secret_files_become_0600(tmp_path):
    data = tmp_path / "data"
    files = {
        "server/tls/server-ca.key": True,
        "server/tls/server-ca.crt": False,
        "server/cred/admin.kubeconfig": True,
        "server/cred/encryption-config.json": True,
        "server/token": True,
        "server/db/state.db": True,
        "server/logs/audit-2026-12-07T03-04-05.000.log": True,
        "agent/client-kubelet.key": True,
        "agent/node-password": True,
        "agent/etc/resolv.conf": False,
        "agent/containerd/some.key": False,  # containerd's own tree is left alone
    }
    for name in files:
        path = data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        os.chmod(path, 0o644)
    changed = harden_secret_files(data)
    assert sorted(str(p.relative_to(data)) for p in changed) == sorted(
        name for name, secret in files.items() if secret
    )
    for name, secret in files.items():
        mode = (data / name).stat().st_mode & 0o777
        assert mode == (0o600 if secret else 0o644), name
    assert harden_secret_files(data) == []
