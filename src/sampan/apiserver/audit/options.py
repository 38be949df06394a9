"""The audit options: kube-apiserver's ``--audit-*`` flags as ``kube-apiserver-arg`` keys.

``parse_audit_args`` reads ``audit-policy-file``, ``audit-log-path`` (``-`` is stdout),
``audit-log-maxsize`` (MB), ``audit-log-maxbackup``, ``audit-log-maxage`` (days) and
``audit-log-format`` (``json`` only) and returns ``AuditOptions``, or None when no policy file
is given (no auditing, as kube-apiserver). With a policy, RKE2's defaults fill what was not
given: the log at ``<data-dir>/server/logs/audit.log``, 100 MB, 10 backups, 30 days.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sampan.apiserver.audit.log import DEFAULT_QUEUE_EVENTS

__all__ = [
    "AUDIT_ARGS",
    "DEFAULT_MAX_AGE_DAYS",
    "DEFAULT_MAX_BACKUPS",
    "DEFAULT_MAX_SIZE_MB",
    "AuditOptions",
    "parse_audit_args",
]

AUDIT_ARGS = (
    "audit-policy-file",
    "audit-log-path",
    "audit-log-maxsize",
    "audit-log-maxbackup",
    "audit-log-maxage",
    "audit-log-format",
)
DEFAULT_MAX_SIZE_MB = 100
DEFAULT_MAX_BACKUPS = 10
DEFAULT_MAX_AGE_DAYS = 30


@dataclass(frozen=True)
class AuditOptions:
    policy_file: Path
    log_path: str
    max_size_mb: int = DEFAULT_MAX_SIZE_MB
    max_backups: int = DEFAULT_MAX_BACKUPS
    max_age_days: int = DEFAULT_MAX_AGE_DAYS
    queue_events: int = DEFAULT_QUEUE_EVENTS


def parse_audit_args(
    args: Mapping[str, str], *, policy_file: str = "", default_log_path: Path
) -> AuditOptions | None:
    """``AuditOptions`` from the ``audit-*`` keys of ``args`` (others are ignored);
    ``policy_file`` is the top-level ``--audit-policy-file`` (the key in ``args`` wins).
    ValueError naming the flag for a bad value."""
    policy = (args.get("audit-policy-file") or policy_file or "").strip()
    if not policy:
        for key in AUDIT_ARGS[1:]:
            if key in args:
                raise ValueError(f"--{key} needs an audit policy (--audit-policy-file)")
        return None
    log_format = args.get("audit-log-format", "json").strip()
    if log_format != "json":
        raise ValueError(f'--audit-log-format: "{log_format}" is not supported (supported: json)')
    path = args.get("audit-log-path", "").strip() or str(default_log_path)
    return AuditOptions(
        policy_file=Path(policy),
        log_path=path,
        max_size_mb=_count(args, "audit-log-maxsize", DEFAULT_MAX_SIZE_MB),
        max_backups=_count(args, "audit-log-maxbackup", DEFAULT_MAX_BACKUPS),
        max_age_days=_count(args, "audit-log-maxage", DEFAULT_MAX_AGE_DAYS),
    )


def _count(args: Mapping[str, str], key: str, default: int) -> int:
    raw = args.get(key)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"--{key}: {raw!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"--{key}: {value} must not be negative")
    return value
