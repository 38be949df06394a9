"""Scheduler configuration: options from ``sampan server``, ``KubeSchedulerConfiguration``
files, and building one ``Framework`` per profile.

This module owns what a user may configure and the checks that make a bad configuration
fail at construction with one line naming the file (or the argument) and the field::

    SchedulerConfigError("/etc/sampan/sched.yaml: profiles[0].pluginConfig[0].args.
                          scoringStrategy.type: Unsupported value: "Most": supported values:
                          "LeastAllocated", "MostAllocated", "RequestedToCapacityRatio"")

Accepted ``kube-scheduler-arg`` keys: ``KNOWN_ARGS`` (``config=FILE`` loads a
``kubescheduler.config.k8s.io/v1`` file; ``leader-elect`` overrides the option; the
serving/profiling keys are accepted for compatibility and have no effect: Sampan's scheduler
serves no HTTP endpoint of its own).

Plugin set semantics (v1): the default profile enables ``DEFAULT_PLUGINS`` at ``multiPoint``.
A profile's ``multiPoint`` enabled list adds (or re-weights) plugins and its disabled list
removes them (``*``: all defaults). Per extension point, ``enabled`` plugins run first (and
take the weight given there), then the multiPoint plugins that implement the point and are
not disabled at it. Score weights default to the plugin's default weight, else 1.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sampan.scheduler.framework import POINTS, Framework, Handle, implements
from sampan.scheduler.plugins import DEFAULT_PLUGINS, REGISTRY
from sampan.scheduler.plugins.noderesources import REQUESTED_TO_CAPACITY_RATIO, SCORING_STRATEGIES

__all__ = [
    "API_VERSION",
    "DEFAULT_SCHEDULER_NAME",
    "KNOWN_ARGS",
    "ProfileConfig",
    "SchedulerConfigError",
    "SchedulerConfiguration",
    "SchedulerOptions",
    "build_framework",
    "load_configuration",
]

API_VERSION = "kubescheduler.config.k8s.io/v1"
KIND = "KubeSchedulerConfiguration"
DEFAULT_SCHEDULER_NAME = "default-scheduler"
KNOWN_ARGS = frozenset(
    {
        "config",
        "v",
        "bind-address",
        "secure-port",
        "leader-elect",
        "leader-elect-lease-duration",
        "leader-elect-renew-deadline",
        "leader-elect-retry-period",
        "profiling",
        "contention-profiling",
        "kube-api-qps",
        "kube-api-burst",
    }
)
_TOP_LEVEL = frozenset(
    {
        "apiVersion",
        "kind",
        "parallelism",
        "leaderElection",
        "clientConnection",
        "healthzBindAddress",
        "metricsBindAddress",
        "enableProfiling",
        "enableContentionProfiling",
        "percentageOfNodesToScore",
        "podInitialBackoffSeconds",
        "podMaxBackoffSeconds",
        "profiles",
        "extenders",
        "delayCacheUntilActive",
    }
)
_PROFILE_KEYS = frozenset({"schedulerName", "percentageOfNodesToScore", "plugins", "pluginConfig"})
_POINT_NAMES = {
    "preEnqueue": "pre_enqueue",
    "queueSort": "queue_sort",
    "preFilter": "pre_filter",
    "filter": "filter",
    "postFilter": "post_filter",
    "preScore": "pre_score",
    "score": "score",
    "reserve": "reserve",
    "permit": "permit",
    "preBind": "pre_bind",
    "bind": "bind",
    "postBind": "post_bind",
}
_DURATION_ARGS = {
    "leader-elect-lease-duration": "lease_duration_s",
    "leader-elect-renew-deadline": "renew_deadline_s",
    "leader-elect-retry-period": "retry_period_s",
}


class SchedulerConfigError(ValueError):
    """The configuration cannot work; the message is one line: ``<source>: <field>: <why>``."""


def default_identity() -> str:
    """``<hostname>_<uuid>``, as kube-scheduler names its leader-election identity."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass(frozen=True)
class SchedulerOptions:
    """What ``sampan server`` hands the scheduler. ``args`` is the parsed
    ``kube-scheduler-arg`` dict (``config.component_args("kube-scheduler-arg")``)."""

    identity: str = field(default_factory=default_identity)
    args: Mapping[str, str] = field(default_factory=dict)
    leader_elect: bool = True
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0


@dataclass(frozen=True)
class ProfileConfig:
    scheduler_name: str
    percentage_of_nodes_to_score: int | None
    points: dict[str, list[tuple[str, int]]]
    """extension point -> [(plugin name, score weight)] in run order."""
    plugin_args: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class SchedulerConfiguration:
    profiles: tuple[ProfileConfig, ...]
    percentage_of_nodes_to_score: int | None = None
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 10.0
    leader_elect: bool | None = None
    source: str = "defaults"


# ---------------------------------------------------------------------------------------------
# Loading


def _bool_arg(source: str, key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", ""):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise SchedulerConfigError(f"{source}: {key}: invalid boolean {value!r}")


def _duration_s(source: str, key: str, value: str) -> float:
    text = value.strip()
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, scale in units:
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * scale
            except ValueError:
                break
    raise SchedulerConfigError(f"{source}: {key}: invalid duration {value!r}")


def resolve_options(options: SchedulerOptions) -> tuple[SchedulerOptions, SchedulerConfiguration]:
    """Check ``options.args`` and load the configuration they name (raises
    ``SchedulerConfigError``). Returns options with the leader-election overrides applied."""
    source = "kube-scheduler-arg"
    for key in options.args:
        if key not in KNOWN_ARGS:
            known = ", ".join(sorted(KNOWN_ARGS))
            raise SchedulerConfigError(f"{source}: {key}: unknown argument (known: {known})")
    changes: dict[str, Any] = {}
    if "leader-elect" in options.args:
        changes["leader_elect"] = _bool_arg(source, "leader-elect", options.args["leader-elect"])
    for key, attr in _DURATION_ARGS.items():
        if key in options.args:
            changes[attr] = _duration_s(source, key, options.args[key])
    if "v" in options.args and not options.args["v"].strip().isdigit():
        raise SchedulerConfigError(f"{source}: v: not a number: {options.args['v']!r}")
    path = options.args.get("config")
    if path:
        configuration = load_configuration(Path(path))
    else:
        configuration = default_configuration()
    if configuration.leader_elect is not None and "leader_elect" not in changes:
        changes["leader_elect"] = configuration.leader_elect
    return dataclasses.replace(options, **changes), configuration


def default_configuration() -> SchedulerConfiguration:
    return SchedulerConfiguration(
        profiles=(_profile("defaults", "profiles[0]", {"schedulerName": DEFAULT_SCHEDULER_NAME}),)
    )


def load_configuration(path: Path) -> SchedulerConfiguration:
    """Read and validate a ``KubeSchedulerConfiguration`` file."""
    source = os.fspath(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SchedulerConfigError(f"{source}: cannot read: {e.strerror or e}") from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SchedulerConfigError(f"{source}: not valid YAML: {str(e).splitlines()[0]}") from e
    return parse_configuration(doc, source)


def parse_configuration(doc: Any, source: str) -> SchedulerConfiguration:
    def fail(fld: str, problem: str) -> SchedulerConfigError:
        return SchedulerConfigError(f"{source}: {fld}: {problem}")

    if not isinstance(doc, dict):
        raise fail("(root)", "expected a KubeSchedulerConfiguration object")
    api_version = doc.get("apiVersion")
    if api_version != API_VERSION:
        raise fail(
            "apiVersion", f'Unsupported value: "{api_version}": supported values: "{API_VERSION}"'
        )
    if doc.get("kind") != KIND:
        raise fail("kind", f'Unsupported value: "{doc.get("kind")}": supported values: "{KIND}"')
    for key in doc:
        if key not in _TOP_LEVEL:
            raise fail(key, "unknown field")
    if doc.get("extenders"):
        raise fail("extenders", "not supported by Sampan's scheduler")
    pct = _percentage(doc.get("percentageOfNodesToScore"), "percentageOfNodesToScore", fail)
    initial = doc.get("podInitialBackoffSeconds", 1)
    maximum = doc.get("podMaxBackoffSeconds", 10)
    if not isinstance(initial, int) or initial <= 0:
        raise fail(
            "podInitialBackoffSeconds", f"Invalid value: {initial!r}: must be greater than 0"
        )
    if not isinstance(maximum, int) or maximum < initial:
        raise fail(
            "podMaxBackoffSeconds",
            f"Invalid value: {maximum!r}: must be greater than or equal to "
            "podInitialBackoffSeconds",
        )
    leader = doc.get("leaderElection") or {}
    if not isinstance(leader, dict):
        raise fail("leaderElection", "expected an object")
    leader_elect = leader.get("leaderElect")
    if leader_elect is not None and not isinstance(leader_elect, bool):
        raise fail(
            "leaderElection.leaderElect", f"Invalid value: {leader_elect!r}: expected a boolean"
        )
    raw_profiles = doc.get("profiles")
    if raw_profiles is None:
        raw_profiles = [{"schedulerName": DEFAULT_SCHEDULER_NAME}]
    if not isinstance(raw_profiles, list) or not raw_profiles:
        raise fail("profiles", "Required value: at least one profile")
    profiles = []
    names: set[str] = set()
    for i, raw in enumerate(raw_profiles):
        where = f"profiles[{i}]"
        if not isinstance(raw, dict):
            raise fail(where, "expected an object")
        raw = dict(raw)
        raw.setdefault("schedulerName", DEFAULT_SCHEDULER_NAME)
        profile = _profile(source, where, raw)
        if profile.scheduler_name in names:
            raise fail(f"{where}.schedulerName", f'Duplicate value: "{profile.scheduler_name}"')
        names.add(profile.scheduler_name)
        if profiles and profile.points["queue_sort"] != profiles[0].points["queue_sort"]:
            raise fail(
                f"{where}.plugins.queueSort",
                "Invalid value: queueSort must be the same for all profiles",
            )
        profiles.append(profile)
    return SchedulerConfiguration(
        profiles=tuple(profiles),
        percentage_of_nodes_to_score=pct,
        initial_backoff_s=float(initial),
        max_backoff_s=float(maximum),
        leader_elect=leader_elect,
        source=source,
    )


def _percentage(value: Any, fld: str, fail: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
        raise fail(fld, f"Invalid value: {value!r}: not in valid range [0-100]")
    return value


def _plugin_list(source: str, where: str, raw: Any, *, with_weight: bool) -> list[tuple[str, int]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SchedulerConfigError(f"{source}: {where}: expected a list")
    out = []
    for j, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise SchedulerConfigError(f"{source}: {where}[{j}].name: Required value")
        name = entry["name"]
        if name != "*" and name not in REGISTRY:
            raise SchedulerConfigError(
                f'{source}: {where}[{j}].name: Invalid value: "{name}": unknown plugin'
            )
        for key in entry:
            if key not in ("name", "weight"):
                raise SchedulerConfigError(f"{source}: {where}[{j}].{key}: unknown field")
        weight = entry.get("weight") or 0
        if not isinstance(weight, int) or weight < 0 or (with_weight and weight > 100):
            raise SchedulerConfigError(
                f"{source}: {where}[{j}].weight: Invalid value: {weight!r}: must be in range 0-100"
            )
        out.append((name, weight))
    return out


def _profile(source: str, where: str, raw: dict[str, Any]) -> ProfileConfig:
    def fail(fld: str, problem: str) -> SchedulerConfigError:
        return SchedulerConfigError(f"{source}: {where}.{fld}: {problem}")

    for key in raw:
        if key not in _PROFILE_KEYS:
            raise fail(key, "unknown field")
    name = raw.get("schedulerName")
    if not isinstance(name, str) or not name:
        raise fail("schedulerName", "Required value")
    pct = _percentage(
        raw.get("percentageOfNodesToScore"),
        f"{where}.percentageOfNodesToScore",
        lambda f, p: SchedulerConfigError(f"{source}: {f}: {p}"),
    )
    plugins = raw.get("plugins") or {}
    if not isinstance(plugins, dict):
        raise fail("plugins", "expected an object")
    for key in plugins:
        if key != "multiPoint" and key not in _POINT_NAMES:
            raise fail(f"plugins.{key}", "unknown field")

    def section(key: str) -> tuple[list[tuple[str, int]], set[str]]:
        sec = plugins.get(key) or {}
        if not isinstance(sec, dict):
            raise fail(f"plugins.{key}", "expected an object")
        for k in sec:
            if k not in ("enabled", "disabled"):
                raise fail(f"plugins.{key}.{k}", "unknown field")
        enabled = _plugin_list(
            source,
            f"{where}.plugins.{key}.enabled",
            sec.get("enabled"),
            with_weight=key in ("score", "multiPoint"),
        )
        disabled = {
            n
            for n, _ in _plugin_list(
                source, f"{where}.plugins.{key}.disabled", sec.get("disabled"), with_weight=False
            )
        }
        if any(n == "*" for n, _ in enabled):
            raise fail(f"plugins.{key}.enabled", 'Invalid value: "*": only allowed in disabled')
        return enabled, disabled

    # multiPoint: defaults, minus disabled, plus/re-weighted enabled.
    m_enabled, m_disabled = section("multiPoint")
    multi = [(n, w) for n, w in DEFAULT_PLUGINS if "*" not in m_disabled and n not in m_disabled]
    for n, w in m_enabled:
        for idx, (existing, _) in enumerate(multi):
            if existing == n:
                multi[idx] = (n, w or dict(DEFAULT_PLUGINS).get(n, 0))
                break
        else:
            multi.append((n, w))
    default_weights = dict(DEFAULT_PLUGINS)
    points: dict[str, list[tuple[str, int]]] = {}
    for key, point in _POINT_NAMES.items():
        enabled, disabled = section(key)
        for j, (n, _) in enumerate(enabled):
            # Some of our plugins fold a point into another (NodeResourcesFit computes its
            # requests in Filter, not PreFilter): enabling them at a point upstream's version
            # extends is accepted and means nothing more. Only the points that matter to the
            # profile's shape are checked.
            if point in ("queue_sort", "bind") and not implements(REGISTRY[n], point):
                raise fail(
                    f"plugins.{key}.enabled[{j}].name",
                    f'Invalid value: "{n}": plugin does not extend {key}',
                )
        chosen: list[tuple[str, int]] = []
        seen: set[str] = set()
        for n, w in enabled:
            if n in seen or not implements(REGISTRY[n], point):
                continue
            seen.add(n)
            chosen.append((n, w or default_weights.get(n) or 1))
        for n, w in multi:
            if n in seen or "*" in disabled or n in disabled or not implements(REGISTRY[n], point):
                continue
            seen.add(n)
            chosen.append((n, w or default_weights.get(n) or 1))
        points[point] = chosen
    if len(points["queue_sort"]) != 1:
        raise fail(
            "plugins.queueSort",
            f"Invalid value: {len(points['queue_sort'])} plugins: "
            "exactly one queueSort plugin is required",
        )
    if not points["bind"]:
        raise fail("plugins.bind", "Required value: at least one bind plugin is needed")

    plugin_args: dict[str, dict[str, Any]] = {}
    raw_config = raw.get("pluginConfig") or []
    if not isinstance(raw_config, list):
        raise fail("pluginConfig", "expected a list")
    for j, entry in enumerate(raw_config):
        fld = f"pluginConfig[{j}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise fail(f"{fld}.name", "Required value")
        pname = entry["name"]
        if pname not in REGISTRY:
            raise fail(f"{fld}.name", f'Invalid value: "{pname}": unknown plugin')
        if pname in plugin_args:
            raise fail(f"{fld}.name", f'Duplicate value: "{pname}"')
        args = entry.get("args") or {}
        if not isinstance(args, dict):
            raise fail(f"{fld}.args", "expected an object")
        allowed = REGISTRY[pname].args_keys | {"apiVersion", "kind"}
        for key in args:
            if key not in allowed:
                raise fail(f"{fld}.args.{key}", "unknown field")
        _validate_args(pname, args, lambda f, p, fld=fld: fail(f"{fld}.args.{f}", p))
        plugin_args[pname] = {k: v for k, v in args.items() if k not in ("apiVersion", "kind")}
    return ProfileConfig(name, pct, points, plugin_args)


def _validate_args(name: str, args: dict[str, Any], fail: Any) -> None:
    if name == "NodeResourcesFit":
        strategy = args.get("scoringStrategy")
        if strategy is None:
            return
        if not isinstance(strategy, dict):
            raise fail("scoringStrategy", "expected an object")
        for key in strategy:
            if key not in ("type", "resources", "requestedToCapacityRatio"):
                raise fail(f"scoringStrategy.{key}", "unknown field")
        kind = strategy.get("type", "LeastAllocated")
        if kind not in SCORING_STRATEGIES:
            supported = ", ".join(f'"{s}"' for s in SCORING_STRATEGIES)
            raise fail(
                "scoringStrategy.type",
                f'Unsupported value: "{kind}": supported values: {supported}',
            )
        _validate_resources(strategy.get("resources"), "scoringStrategy.resources", fail)
        if kind == REQUESTED_TO_CAPACITY_RATIO:
            rtcr = strategy.get("requestedToCapacityRatio") or {}
            shape = rtcr.get("shape")
            if not isinstance(shape, list) or not shape:
                raise fail(
                    "scoringStrategy.requestedToCapacityRatio.shape",
                    "Required value: at least one point",
                )
            last = -1
            for k, point in enumerate(shape):
                where = f"scoringStrategy.requestedToCapacityRatio.shape[{k}]"
                if not isinstance(point, dict):
                    raise fail(where, "expected an object")
                u, s = point.get("utilization"), point.get("score")
                if not isinstance(u, int) or not 0 <= u <= 100:
                    raise fail(
                        f"{where}.utilization", f"Invalid value: {u!r}: not in valid range [0-100]"
                    )
                if u <= last:
                    raise fail(
                        f"{where}.utilization",
                        f"Invalid value: {u}: utilization values must be sorted "
                        "in increasing order",
                    )
                last = u
                if not isinstance(s, int) or not 0 <= s <= 10:
                    raise fail(f"{where}.score", f"Invalid value: {s!r}: not in valid range [0-10]")
    elif name == "NodeResourcesBalancedAllocation":
        _validate_resources(args.get("resources"), "resources", fail)
    elif name == "PodTopologySpread":
        kind = args.get("defaultingType", "System")
        if kind not in ("System", "List"):
            raise fail(
                "defaultingType", f'Unsupported value: "{kind}": supported values: "List", "System"'
            )
        if kind == "System" and args.get("defaultConstraints"):
            raise fail("defaultConstraints", 'Invalid value: when .defaultingType is "System"')
    elif name == "InterPodAffinity":
        weight = args.get("hardPodAffinityWeight", 1)
        if not isinstance(weight, int) or not 0 <= weight <= 100:
            raise fail(
                "hardPodAffinityWeight", f"Invalid value: {weight!r}: not in valid range [0-100]"
            )
    elif name == "DefaultPreemption":
        for key, low, high in (
            ("minCandidateNodesPercentage", 0, 100),
            ("minCandidateNodesAbsolute", 0, None),
        ):
            value = args.get(key)
            if value is None:
                continue
            if not isinstance(value, int) or value < low or (high is not None and value > high):
                raise fail(key, f"Invalid value: {value!r}: out of range")


def _validate_resources(resources: Any, fld: str, fail: Any) -> None:
    if resources is None:
        return
    if not isinstance(resources, list):
        raise fail(fld, "expected a list")
    for k, r in enumerate(resources):
        if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not r["name"]:
            raise fail(f"{fld}[{k}].name", "Required value")
        weight = r.get("weight", 1)
        if not isinstance(weight, int) or not 1 <= weight <= 100:
            raise fail(
                f"{fld}[{k}].weight",
                f"Invalid value: {weight!r}: resource weight of {r['name']} "
                "not in valid range [1, 100]",
            )


# ---------------------------------------------------------------------------------------------
# Building


def build_framework(
    profile: ProfileConfig, handle: Handle, percentage: int | None = None
) -> Framework:
    """Instantiate the profile's plugins (one instance per plugin, shared by its points)."""
    instances = {}
    points: dict[str, list[Any]] = {p: [] for p in POINTS}
    weights: dict[str, int] = {}
    for point in POINTS:
        for name, weight in profile.points.get(point, []):
            plugin = instances.get(name)
            if plugin is None:
                plugin = REGISTRY[name](profile.plugin_args.get(name, {}), handle)
                instances[name] = plugin
            points[point].append(plugin)
            if point == "score":
                weights[name] = weight
    fwk = Framework(
        scheduler_name=profile.scheduler_name,
        plugins=instances,
        points=points,
        score_weights=weights,
        percentage_of_nodes_to_score=(
            profile.percentage_of_nodes_to_score
            if profile.percentage_of_nodes_to_score is not None
            else percentage
        ),
        handle=handle,
    )
    return fwk
