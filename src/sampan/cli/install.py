"""``sampan install [server|agent] [flags...]`` and the service half of ``sampan uninstall``.

What it owns (K3s's install script, for a machine where Sampan is already installed as a
Python package):

* ``<root>/etc/sampan/config.yaml`` (0600): the flags given, written as the configuration file
  ``sampan.config`` reads (keys are the flag names; lists stay lists). Keys already in the file
  and not given again are kept. Secret options (``--token``, ``--agent-token``,
  ``--datastore-endpoint``) never go there: they go to the environment file;
* ``<root>/etc/systemd/system/sampan.service`` (server) or ``sampan-agent.service`` (agent), with
  K3s's unit settings (``Type=notify``: the server and agent report ``READY=1`` once every
  component is ready, see ``sampan.supervisor.notify``; ``KillMode=process`` so containers
  outlive a restart; ``Delegate=yes``; the limits; ``Restart=always``);
* ``<root>/etc/systemd/system/<unit>.env`` (0600, written so it is never readable by others):
  the secret options as their ``SAMPAN_*`` variables, plus the ``SAMPAN_*`` and proxy variables
  of the installing shell, as K3s copies ``K3S_*`` and proxies;
* then ``systemctl daemon-reload`` and ``systemctl enable --now <unit>``.

Invariants: the flags are checked exactly as ``sampan server``/``agent`` would check them
before anything is written; nothing secret is printed; where systemd is not the running init
(no ``/run/systemd/system``, as in containers) the files are written, one line says so and
the exit code is 1 (``--skip-enable`` writes the files only and exits 0). ``--root`` (or
``SAMPAN_INSTALL_ROOT``) writes under another root (tests, images) and never calls systemctl.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sampan.config import OPTIONS, ConfigError, load_config, options_for

__all__ = [
    "ENV_ROOT",
    "SERVICE_NAMES",
    "InstallArgs",
    "ServiceFiles",
    "parse_install_args",
    "remove_services",
    "render_unit",
    "run_install",
    "service_files",
    "stop_services",
]

ENV_ROOT = "SAMPAN_INSTALL_ROOT"
SERVICE_NAMES = {"server": "sampan", "agent": "sampan-agent"}
SYSTEMD_RUNNING = Path("/run/systemd/system")
"""Exists only where systemd is the running init (what ``sd_booted()`` checks)."""
LIVE_ROOT = Path("/")
"""The root of the running system: only files installed there are handed to systemctl."""
SYSTEMCTL_TIMEOUT_S = 120.0
COPIED_ENV_PREFIXES = ("SAMPAN_",)
COPIED_ENV_NAMES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
EXIT_USAGE = 1

_BY_NAME = {opt.name: opt for opt in OPTIONS}


@dataclass(frozen=True)
class ServiceFiles:
    """Where one service's files live under ``root``."""

    root: Path
    command: str

    @property
    def unit_name(self) -> str:
        return f"{SERVICE_NAMES[self.command]}.service"

    @property
    def unit(self) -> Path:
        return self.root / "etc" / "systemd" / "system" / self.unit_name

    @property
    def env_file(self) -> Path:
        return self.unit.with_name(self.unit_name + ".env")

    @property
    def config(self) -> Path:
        return self.root / "etc" / "sampan" / "config.yaml"

    def installed_path(self, path: Path) -> str:
        """``path`` as the running system sees it (the unit names files by that path)."""
        return "/" + str(path.relative_to(self.root))


def service_files(root: Path, command: str) -> ServiceFiles:
    return ServiceFiles(root, command)


def render_unit(files: ServiceFiles, exec_start: Sequence[str]) -> str:
    """The unit file: K3s's settings, Sampan's names."""
    description = "Sampan: lightweight Kubernetes" + (
        " (agent)" if files.command == "agent" else ""
    )
    command = " ".join(_quote(part) for part in exec_start)
    return f"""\
[Unit]
Description={description}
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-{files.installed_path(files.env_file)}
KillMode=process
Delegate=yes
# Non-zero Limit*s cost kernel accounting overhead; containers are accounted by cgroups.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart={command} {files.command}
"""


def _quote(part: str) -> str:
    """systemd's command-line quoting for one word (only where needed)."""
    if part and all(c.isalnum() or c in "/._-+:=@%," for c in part):
        return part
    return '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sampan_command() -> list[str]:
    """How systemd should run this Sampan: the ``sampan`` script beside this interpreter (a
    venv or pipx install), else the one on PATH, else this interpreter with ``-m``."""
    beside = Path(sys.executable).parent / "sampan"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside.absolute())]
    found = shutil.which("sampan")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "sampan.cli.main"]


USAGE = (
    "usage: sampan install [server|agent] [--root DIR] [--skip-enable] [--skip-start] "
    "[flags of 'sampan server|agent'...]"
)
HELP = f"""{USAGE}

Install Sampan as a systemd service: writes the flags into /etc/sampan/config.yaml (secret
ones into the unit's environment file), the unit sampan.service (server) or
sampan-agent.service (agent), then runs systemctl daemon-reload and enable --now.

  --root DIR      install under DIR instead of / (files only, no systemctl) [${ENV_ROOT}]
  --skip-enable   write the files only
  --skip-start    enable the service but do not start it
"""


@dataclass(frozen=True)
class InstallArgs:
    command: str
    root: Path
    skip_enable: bool
    skip_start: bool
    flags: list[str]


def parse_install_args(argv: Sequence[str], env: Mapping[str, str]) -> InstallArgs | str:
    """``sampan install`` arguments, or the usage problem. Install's own options may come
    anywhere; everything else is a flag of the service's command."""
    args = list(argv)
    command = ""
    root = env.get(ENV_ROOT, "/")
    skip_enable = skip_start = False
    flags: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--skip-enable":
            skip_enable = True
        elif arg == "--skip-start":
            skip_start = True
        elif arg == "--root" or arg.startswith("--root="):
            if "=" in arg:
                root = arg.split("=", 1)[1]
            elif i + 1 < len(args) and not args[i + 1].startswith("-"):
                i += 1
                root = args[i]
            else:
                return "--root needs a directory"
        elif not command and not flags and arg in SERVICE_NAMES:
            command = arg
        else:
            flags.append(arg)
        i += 1
    if not root:
        return "--root needs a directory"
    return InstallArgs(command or "server", Path(root), skip_enable, skip_start, flags)


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _systemctl(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemctl", *args], capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_S
    )


def run_install(
    argv: Sequence[str],
    parse_flags: Callable[[str, list[str]], dict[str, Any]],
    *,
    systemctl: Runner = _systemctl,
    env: Mapping[str, str] | None = None,
) -> int:
    """``sampan install ARGS``; ``parse_flags(command, flags)`` parses the flags with the
    parser of ``sampan server`` or ``sampan agent`` (option attribute -> raw value; it exits
    with a one-line usage error for an unknown flag)."""
    env = os.environ if env is None else env
    prog = "sampan install"
    if any(a in ("-h", "--help") for a in argv[:2]):
        print(HELP)
        return 0
    ns = parse_install_args(argv, env)
    if isinstance(ns, str):
        print(f"{prog}: {ns}\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE
    command = ns.command
    root = ns.root
    files = service_files(root, command)
    try:
        flags = _check_flags(parse_flags(command, ns.flags), prog)
        document, secrets = _merge(files.config, command, flags)
        env_lines = {**_read_env_file(files.env_file), **_env_lines(secrets, env)}
        # Checked as the service will see them: the files there now (drop-ins too) with the
        # given flags over them, and the environment file.
        load_config(
            command,
            {**flags, **{k.replace("-", "_"): v for k, v in secrets.items()}},
            env=env_lines,
            default_config_file=files.config,
        )
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    unit = render_unit(files, sampan_command())
    _write(files.config, _dump(document), 0o600)
    _write(files.env_file, _env_file_text(env_lines), 0o600)
    _write(files.unit, unit, 0o644)
    written = f"{files.config}, {files.unit}, {files.env_file}"
    if ns.skip_enable:
        print(f"{prog}: wrote {written}")
        return 0
    if not SYSTEMD_RUNNING.is_dir():
        print(
            f"{prog}: systemd is not running here (not PID 1): wrote {written} but cannot "
            f"enable {files.unit_name}; run 'sampan {command}' by hand",
            file=sys.stderr,
        )
        return 1
    if root.resolve() != LIVE_ROOT.resolve():
        print(f"{prog}: wrote {written} (under {root}: not enabled)")
        return 0
    steps = [["daemon-reload"], ["enable", files.unit_name]]
    if not ns.skip_start:
        steps[-1].insert(1, "--now")
    for step in steps:
        done = systemctl(step)
        if done.returncode != 0:
            detail = " ".join((done.stderr or done.stdout).split())
            print(f"{prog}: systemctl {' '.join(step)} failed: {detail}", file=sys.stderr)
            return 1
    state = "enabled" if ns.skip_start else "enabled and started"
    print(f"{prog}: wrote {written}; {files.unit_name} {state}")
    return 0


def _check_flags(given: dict[str, Any], prog: str) -> dict[str, Any]:
    if "config" in given:
        raise ConfigError(f"--config: {prog} writes /etc/sampan/config.yaml itself")
    return given


def _merge(
    path: Path, command: str, flags: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The new config.yaml document (the existing one updated with ``flags``) and the secret
    options given (option name -> value), which stay out of the document."""
    document: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the existing configuration: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of option names to values")
        document = dict(loaded or {})
    secrets: dict[str, str] = {}
    names = {opt.attr: opt for opt in options_for(command)}  # type: ignore[arg-type]
    for attr, value in flags.items():
        opt = names[attr]
        if opt.type == "secret":
            if not opt.env:
                raise ConfigError(f"--{opt.name}: no environment variable to keep it in")
            secrets[opt.name] = str(value)
            continue
        document.pop(opt.name + "+", None)
        document[opt.name] = list(value) if isinstance(value, list) else value
    return document, secrets


def _env_lines(secrets: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    lines = {
        k: v
        for k, v in sorted(env.items())
        if (k.startswith(COPIED_ENV_PREFIXES) or k in COPIED_ENV_NAMES)
        and k != ENV_ROOT
        and "\n" not in v
    }
    for name, value in secrets.items():
        variable = _BY_NAME[name].env
        assert variable is not None
        if "\n" in value:
            raise ConfigError(f"--{name}: the value holds a line break")
        lines[variable] = value
    return lines


def _read_env_file(path: Path) -> dict[str, str]:
    """The variables of an environment file written before (kept unless given again, so a
    second install does not lose the token)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key or key.lstrip().startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _env_file_text(values: Mapping[str, str]) -> str:
    """systemd EnvironmentFile lines (a value with spaces or quotes is double-quoted)."""
    out = []
    for key, value in values.items():
        if value and all(c.isalnum() or c in "/._-+:=@%,~" for c in value):
            out.append(f"{key}={value}\n")
        else:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'{key}="{escaped}"\n')
    return "".join(out)


def _dump(document: Mapping[str, Any]) -> str:
    header = "# Written by 'sampan install'; the keys are the flags of 'sampan server|agent'.\n"
    body = yaml.safe_dump(dict(document), default_flow_style=False, sort_keys=False)
    return header + ("" if not document else body)


def _write(path: Path, text: str, mode: int) -> None:
    """Write ``text`` atomically, created with ``mode`` (never readable by others first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def stop_services(root: Path, *, systemctl: Runner = _systemctl) -> list[str]:
    """``sampan killall``'s first step, as K3s's killall script: stop the installed units
    (where systemd runs and ``root`` is the live root), or ``Restart=always`` would start
    again what killall stops. Returns the units stopped."""
    if not (SYSTEMD_RUNNING.is_dir() and root.resolve() == LIVE_ROOT.resolve()):
        return []
    stopped = []
    for command in SERVICE_NAMES:
        files = service_files(root, command)
        if files.unit.exists():
            systemctl(["stop", files.unit_name])
            stopped.append(files.unit_name)
    return stopped


def remove_services(root: Path, *, systemctl: Runner = _systemctl) -> list[Path]:
    """``sampan uninstall``'s service half: stop and disable the installed units (where
    systemd runs and ``root`` is ``/``), then remove the unit and environment files and reload.
    Returns the files removed."""
    removed: list[Path] = []
    present = [
        files for files in (service_files(root, c) for c in SERVICE_NAMES) if files.unit.exists()
    ]
    live = SYSTEMD_RUNNING.is_dir() and root.resolve() == LIVE_ROOT.resolve()
    for files in present:
        if live:
            systemctl(["disable", "--now", files.unit_name])
    for files in present:
        for path in (files.unit, files.env_file):
            if path.exists():
                path.unlink()
                removed.append(path)
    if live and present:
        systemctl(["daemon-reload"])
        systemctl(["reset-failed", *(files.unit_name for files in present)])
    return removed
