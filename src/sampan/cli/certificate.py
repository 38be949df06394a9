"""``sampan certificate``: check and rotate the node's certificates, as ``k3s certificate``.

* ``check [--service S,...] [--output text|table|json|yaml]``: every certificate of the
  services (all of a server's, or an agent's when there is no ``server/`` dir) and the CAs:
  K3s's table columns FILENAME, SUBJECT, USAGES, EXPIRES, RESIDUAL TIME, STATUS; JSON and
  YAML carry K3s's fields (Filename, Subject, Issuer, Usages, ExpiryTime, ResidualTime in
  nanoseconds, Status).
* ``rotate [--service S,...]``: back up the TLS files to ``tls-<unix time>``, delete the
  services' leaf certificates; the next start issues new ones.
* ``rotate-ca --path DIR [--force]``: validate the CA bundles under ``DIR`` against the current
  ones and install them (``sampan.pki.rotation``); then restart the server, then the agents.
* ``generate-ca --path DIR``: write new CAs cross-signed by the current ones under ``DIR``
  (K3s ships this as ``contrib/util/rotate-default-ca-certs.sh``), for ``rotate-ca``.

``rotate`` and ``rotate-ca`` change files a running server holds: they refuse while something
answers on the server's HTTPS port on this host (stop the server first, as K3s says).
Reads and writes only local files (0600/0700): run as the user that runs the server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import sys
from pathlib import Path
from typing import Any

from sampan.api import times
from sampan.config import Config, ConfigError, load_config

__all__ = ["add_certificate_parser", "run_certificate"]

EXIT_OK = 0
EXIT_FAILED = 1
PORT_PROBE_TIMEOUT_S = 0.5
OUTPUTS = ("text", "table", "json", "yaml")


def add_certificate_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    text = "Manage certificates (check, rotate, rotate-ca)"
    cmd = sub.add_parser("certificate", help=text, description=text)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default=argparse.SUPPRESS, help="configuration file")
    common.add_argument("--data-dir", "-d", default=argparse.SUPPRESS, help="data dir")
    services = argparse.ArgumentParser(add_help=False)
    services.add_argument(
        "--service",
        "-s",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="services: admin, api-server, controller-manager, scheduler, sampan-controller, "
        "auth-proxy, kubelet, kube-proxy, sampan-agent (default: all of this node's)",
    )
    verbs = cmd.add_subparsers(
        dest="certificate_command", metavar="VERB", parser_class=parser_class
    )
    check = verbs.add_parser(
        "check", parents=[common, services], help="Show the certificates and their expiry"
    )
    check.add_argument("--output", "-o", choices=OUTPUTS, default="text", help="output format")
    verbs.add_parser(
        "rotate",
        parents=[common, services],
        help="Remove leaf certificates so the next start issues new ones (server stopped)",
    )
    rotate_ca = verbs.add_parser(
        "rotate-ca", parents=[common], help="Install new CA certificates and keys from --path"
    )
    rotate_ca.add_argument("--path", required=True, help="directory with the new CA files")
    rotate_ca.add_argument(
        "--force", action="store_true", help="install even when the new CAs fail validation"
    )
    generate = verbs.add_parser(
        "generate-ca",
        parents=[common],
        help="Write new CAs cross-signed by the current ones under --path (for rotate-ca)",
    )
    generate.add_argument("--path", required=True, help="directory to write (DIR/tls/...)")


def _service_list(ns: argparse.Namespace, data_dir: Path) -> list[str]:
    from sampan.pki.rotation import default_services

    names = [part.strip() for item in ns.service for part in item.split(",") if part.strip()]
    return names or default_services(data_dir)


def _check_stopped(config: Config) -> None:
    """Refuse while the server answers on its port on this host."""
    port = config.https_listen_port
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PORT_PROBE_TIMEOUT_S):
            pass
    except OSError:
        return
    raise ConfigError(
        f"something answers on the server's port {port}: stop the server first "
        "(its certificates are read at start)"
    )


def _relative(delta: dt.timedelta) -> str:
    """A short human duration, as K3s's RESIDUAL TIME column: ``364 days``, ``5 hours``."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    for unit, size in (("year", 365 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{sign}{count} {unit}{'s' if count != 1 else ''}"
    return f"{sign}{seconds} seconds"


def _print_check(infos: list[Any], output: str) -> None:
    from sampan.pki import LEAF_RENEW_BEFORE_DAYS

    now = dt.datetime.now(dt.UTC)
    if output == "text":
        for info in infos:
            usages = ",".join(info.usages)
            expiry = times.rfc3339(info.not_after)
            name = info.path.name
            if info.status == "NOT YET VALID":
                stamp = times.rfc3339(info.not_before)
                line = f"{name}: certificate {info.subject} ({usages}) is not valid before {stamp}"
            elif info.status == "EXPIRED":
                line = f"{name}: certificate {info.subject} ({usages}) expired at {expiry}"
            elif info.status == "WARNING":
                line = (
                    f"{name}: certificate {info.subject} ({usages}) will expire within "
                    f"{LEAF_RENEW_BEFORE_DAYS} days at {expiry}"
                )
            else:
                line = f"{name}: certificate {info.subject} ({usages}) is ok, expires at {expiry}"
            print(line)
        return
    if output == "table":
        header = ("FILENAME", "SUBJECT", "USAGES", "EXPIRES", "RESIDUAL TIME", "STATUS")
        rows = [header, tuple("-" * len(h) for h in header)]
        for info in infos:
            rows.append(
                (
                    info.path.name,
                    info.subject,
                    ",".join(info.usages),
                    info.not_after.strftime("%b %d, %Y %H:%M UTC"),
                    _relative(info.residual(now)),
                    info.status,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        print()
        for row in rows:
            print(
                "   ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
        return
    doc = {
        "Certificates": [
            {
                "Filename": info.path.name,
                "Subject": info.subject,
                "Issuer": info.issuer,
                "Usages": list(info.usages),
                "ExpiryTime": times.rfc3339(
                    info.not_before if info.status == "NOT YET VALID" else info.not_after
                ),
                "ResidualTime": int(info.residual(now).total_seconds() * 1e9),
                "Status": info.status,
            }
            for info in infos
        ]
    }
    if output == "json":
        print(json.dumps(doc))
    else:
        import yaml

        print(yaml.safe_dump(doc, sort_keys=False), end="")


def run_certificate(ns: argparse.Namespace) -> int:
    from sampan.pki.rotation import (
        RotationError,
        generate_cross_signed_cas,
        inventory,
        rotate_ca,
        rotate_services,
    )

    verb = getattr(ns, "certificate_command", None)
    if verb is None:
        print(
            "sampan certificate: a verb is required: check, rotate, rotate-ca, generate-ca",
            file=sys.stderr,
        )
        return EXIT_FAILED
    flags = {k: getattr(ns, k) for k in ("config", "data_dir") if hasattr(ns, k)}
    try:
        config = load_config("server", flags)
        data_dir = config.data_dir
        if verb == "check":
            _print_check(inventory(data_dir, _service_list(ns, data_dir)), ns.output)
            return EXIT_OK
        if verb == "generate-ca":
            names = generate_cross_signed_cas(data_dir, Path(ns.path))
            print(
                f"cross-signed CA certificates and keys for {', '.join(names)} written to "
                f"{Path(ns.path) / 'tls'}; install them with: sampan certificate rotate-ca "
                f"--path {ns.path}"
            )
            return EXIT_OK
        _check_stopped(config)
        if verb == "rotate":
            backup, deleted = rotate_services(data_dir, _service_list(ns, data_dir))
            for path in deleted:
                print(f"removed {path}")
            print(
                f"successfully backed up certificates to {backup}; start sampan (server "
                "first, then agents) to issue new certificates"
            )
            return EXIT_OK
        backup, names = rotate_ca(data_dir, Path(ns.path), force=ns.force)
        print(
            f"CA certificates {', '.join(names)} installed (previous files in {backup}); "
            "restart the server, then the agents. The server's token now carries the new CA "
            "hash (see <data-dir>/server/token); existing agents keep their old token"
        )
        return EXIT_OK
    except (RotationError, ConfigError, OSError, ValueError) as exc:
        print(f"sampan certificate {verb}: {exc}", file=sys.stderr)
        return EXIT_FAILED
