"""``sampan``: the command tree.

Flags come from the option table in ``sampan.config`` (one place per option, grouped by
category in the help, with the environment alias beside it). This module only parses, resolves
the configuration and hands over to the supervisor; it holds no logic of its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from sampan import version
from sampan.cli.certificate import add_certificate_parser, run_certificate
from sampan.cli.checkconfig import add_checkconfig_parser, run_checkconfig
from sampan.cli.etcd_snapshot import add_etcd_snapshot_parser, run_etcd_snapshot
from sampan.cli.install import remove_services, run_install, stop_services
from sampan.cli.manager import add_manager_parser, run_manager
from sampan.cli.secrets_encrypt import add_secrets_encrypt_parser, run_secrets_encrypt
from sampan.cli.simulate import add_simulate_parser, run_simulate
from sampan.cli.token import add_token_parser, run_token
from sampan.config import (
    COMMANDS,
    DEFAULT_CONFIG_FILE,
    DEFAULT_DATA_DIR,
    DEFAULT_KUBECONFIG,
    Config,
    ConfigError,
    Option,
    check_server_files,
    load_config,
    options_for,
)

__all__ = ["build_parser", "main"]

EXIT_USAGE = 1
ETC_DIR = Path("/etc/sampan")

_GROUP_TITLES = {
    "general": "general",
    "cluster": "cluster",
    "listener": "listener",
    "client": "client",
    "networking": "networking",
    "database": "database",
    "components": "components",
    "flags": "flags (key=value, passed to the component)",
    "agent/node": "agent/node",
    "agent/networking": "agent/networking",
    "agent/runtime": "agent/runtime",
}

_DESCRIPTIONS = {
    "server": "Run the control plane (datastore, API server, controllers, scheduler) and an agent",
    "agent": "Run a node agent joined to a server",
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit with code 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_option(group: argparse._ArgumentGroup, opt: Option) -> None:
    names = [f"--{opt.name}"]
    if opt.short:
        names.append(f"-{opt.short}")
    help_text = opt.help
    if opt.env:
        help_text += f" [${opt.env}]"
    kwargs: dict = {"dest": opt.attr, "default": argparse.SUPPRESS, "help": help_text}
    if opt.type == "bool":
        kwargs["action"] = "store_const"
        kwargs["const"] = True
    elif opt.type == "list":
        kwargs["action"] = "append"
        kwargs["metavar"] = "VALUE"
    else:
        kwargs["metavar"] = opt.type.upper() if opt.type != "str" else "VALUE"
    if opt.choices:
        kwargs["choices"] = [c for c in opt.choices]
    group.add_argument(*names, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sampan",
        description="Sampan: a lightweight Kubernetes distribution written in Python",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"sampan version v{version.__version__} (Kubernetes {version.KUBERNETES_VERSION})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        cmd = sub.add_parser(
            command, help=_DESCRIPTIONS[command], description=_DESCRIPTIONS[command]
        )
        groups: dict[str, argparse._ArgumentGroup] = {}
        for opt in options_for(command):
            if opt.group not in groups:
                groups[opt.group] = cmd.add_argument_group(_GROUP_TITLES.get(opt.group, opt.group))
            _add_option(groups[opt.group], opt)
    for name, text in (
        ("killall", "Stop Sampan, its containers and pods; remove its mounts, devices, chains"),
        ("uninstall", "killall, then remove the data dir and /etc/sampan"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument(
            "--config",
            "-c",
            dest="config",
            default=argparse.SUPPRESS,
            help="Load configuration from FILE [$SAMPAN_CONFIG_FILE]",
        )
        cmd.add_argument(
            "--data-dir",
            "-d",
            dest="data_dir",
            default=argparse.SUPPRESS,
            help="Folder to hold state [$SAMPAN_DATA_DIR]",
        )
        cmd.add_argument(
            "--cluster-name",
            dest="cluster_name",
            metavar="NAME",
            default=argparse.SUPPRESS,
            help="Only this named cluster's interfaces, chains and cgroups [$SAMPAN_CLUSTER_NAME]",
        )
        if name == "uninstall":
            cmd.add_argument(
                "--yes",
                action="store_true",
                default=False,
                help="Confirm: this deletes the cluster's data",
            )
    add_token_parser(sub, _Parser)
    add_secrets_encrypt_parser(sub, _Parser)
    add_certificate_parser(sub, _Parser)
    add_etcd_snapshot_parser(sub, _Parser)
    add_checkconfig_parser(sub)
    add_simulate_parser(sub, _Parser)
    add_manager_parser(sub, _Parser)
    for tool, text in (
        ("ctr", "Run ctr against this node's containerd (namespace k8s.io)"),
        ("crictl", "Run crictl against this node's containerd"),
    ):
        sub.add_parser(tool, help=text, add_help=False, description=text)
    sub.add_parser(
        "install",
        help="Install Sampan as a systemd service (sampan.service / sampan-agent.service)",
        add_help=False,
        description="sampan install [server|agent] [flags...] (see 'sampan install --help')",
    )
    sub.add_parser(
        "kubectl",
        help="Run kubectl with the admin kubeconfig",
        add_help=False,
        description="Run the system kubectl with the admin kubeconfig",
    )
    return parser


def _run_kubectl(args: Sequence[str]) -> int:
    """``sampan kubectl ARGS``: exec the system kubectl with the admin kubeconfig unless the
    user set KUBECONFIG or --kubeconfig."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("sampan kubectl: kubectl is not installed (it is not on PATH)", file=sys.stderr)
        return EXIT_USAGE
    env = dict(os.environ)
    if "KUBECONFIG" not in env and not any(a.startswith("--kubeconfig") for a in args):
        try:
            config = load_config("server", {})
        except ConfigError as exc:
            print(f"sampan kubectl: {exc}", file=sys.stderr)
            return EXIT_USAGE
        env["KUBECONFIG"] = str(config.write_kubeconfig)
    os.execve(kubectl, [kubectl, *args], env)
    return 0  # not reached


def _command_flags(command: str, flags: list[str]) -> dict[str, object]:
    """The flags of ``sampan <command>`` given in ``flags`` (attribute -> raw value); a bad
    flag exits with the command's one-line usage error."""
    ns = build_parser().parse_args([command, *flags])
    return {k: v for k, v in vars(ns).items() if k != "command"}


def _cleanup(command: str, config: Config, *, confirmed: bool) -> int:
    from sampan.supervisor.killall import killall, uninstall
    from sampan.supervisor.logs import setup_logging

    if command == "uninstall" and not confirmed:
        print(
            f"sampan uninstall: this removes {config.data_dir} and /etc/sampan; "
            "run again with --yes to confirm",
            file=sys.stderr,
        )
        return EXIT_USAGE
    setup_logging(debug=config.debug, verbosity=config.v)
    names = config.host_names
    cgroup_root = config.component_args("kubelet-arg").get("cgroup-root", names.cgroup_root)
    default = config.data_dir.resolve() == DEFAULT_DATA_DIR
    cluster_cidr = config.cluster_cidr.split(",")[0]
    # The installed services run with the default configuration file (the one install wrote):
    # they are stopped first (a running unit would restart what killall stops), as K3s's
    # scripts do; a killall for another configuration or a named cluster leaves them.
    if config.config == DEFAULT_CONFIG_FILE and not names.cluster_name:
        if command == "uninstall":
            for path in remove_services(Path("/")):
                print(f"sampan uninstall: removed {path}")
        else:
            for unit in stop_services(Path("/")):
                print(f"sampan killall: stopped {unit}")
    if command == "killall":
        return killall(
            config.data_dir,
            default_data_dir=default,
            cgroup_root=cgroup_root,
            names=names,
            cluster_cidr=cluster_cidr,
        )
    code = uninstall(
        config.data_dir,
        default_data_dir=default,
        # /etc/sampan belongs to the unnamed cluster; a named one keeps its files elsewhere
        etc_dir=None if names.cluster_name else ETC_DIR,
        cgroup_root=cgroup_root,
        names=names,
        cluster_cidr=cluster_cidr,
    )
    if not names.cluster_name or config.write_kubeconfig != DEFAULT_KUBECONFIG:
        config.write_kubeconfig.unlink(missing_ok=True)  # when written outside /etc/sampan
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "kubectl":
        return _run_kubectl(argv[1:])
    if argv and argv[0] == "install":
        return run_install(argv[1:], _command_flags)
    if argv and argv[0] in ("ctr", "crictl"):
        from sampan.cli.ctr import run_passthrough

        return run_passthrough(argv[0], argv[1:])
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command is None:
        parser.print_help()
        return EXIT_USAGE
    if ns.command == "token":
        return run_token(ns)
    if ns.command == "secrets-encrypt":
        return run_secrets_encrypt(ns)
    if ns.command == "certificate":
        return run_certificate(ns)
    if ns.command == "etcd-snapshot":
        return run_etcd_snapshot(ns)
    if ns.command == "check-config":
        return run_checkconfig(ns)
    if ns.command == "simulate":
        return run_simulate(ns)
    if ns.command == "manager":
        return run_manager(ns)
    flags = {k: v for k, v in vars(ns).items() if k not in ("command", "yes")}
    command = "server" if ns.command in ("killall", "uninstall") else ns.command
    try:
        config = load_config(command, flags)
    except ConfigError as exc:
        print(f"sampan {ns.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if ns.command in ("killall", "uninstall"):
        return _cleanup(ns.command, config, confirmed=getattr(ns, "yes", False))
    if ns.command == "server":
        try:
            check_server_files(config)
        except ConfigError as exc:
            print(f"sampan {ns.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE

    from sampan.supervisor import run  # imported late: keeps --help and errors fast

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
