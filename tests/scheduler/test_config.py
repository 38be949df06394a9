"""Configuration: kube-scheduler-arg keys, KubeSchedulerConfiguration files, profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from sampan.client import ClientConfig
from sampan.scheduler import Scheduler, SchedulerConfigError, SchedulerOptions
from sampan.scheduler.config import resolve_options

HEADER = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
CLIENT = ClientConfig(server="https://127.0.0.1:1")


def load(tmp_path: Path, text: str) -> Scheduler:
    path = tmp_path / "sched.yaml"
    path.write_text(text)
    return Scheduler(CLIENT, SchedulerOptions(args={"config": str(path)}))


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(SchedulerConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "sched.yaml") + ": ")
    return message.split(": ", 1)[1]


def test_defaults_are_kube_scheduler_1_32() -> None:
    scheduler = Scheduler(CLIENT, SchedulerOptions())
    (profile,) = scheduler.configuration.profiles
    assert profile.scheduler_name == "default-scheduler"
    assert profile.points["score"] == [
        ("TaintToleration", 3),
        ("NodeAffinity", 2),
        ("NodeResourcesFit", 1),
        ("PodTopologySpread", 2),
        ("InterPodAffinity", 2),
        ("NodeResourcesBalancedAllocation", 1),
        ("ImageLocality", 1),
    ]
    assert [n for n, _ in profile.points["filter"]] == [
        "NodeUnschedulable",
        "NodeName",
        "TaintToleration",
        "NodeAffinity",
        "NodePorts",
        "NodeResourcesFit",
        "VolumeBinding",
        "PodTopologySpread",
        "InterPodAffinity",
    ]
    assert profile.points["queue_sort"] == [("PrioritySort", 1)]
    assert profile.points["post_filter"] == [("DefaultPreemption", 1)]
    assert profile.points["bind"] == [("DefaultBinder", 1)]
    assert profile.points["pre_enqueue"] == [("SchedulingGates", 1)]


def test_unknown_argument_is_rejected() -> None:
    with pytest.raises(SchedulerConfigError, match=r"^kube-scheduler-arg: feature-gates: unknown"):
        Scheduler(CLIENT, SchedulerOptions(args={"feature-gates": "X=true"}))


def test_leader_elect_argument_overrides_the_option() -> None:
    options, _ = resolve_options(
        SchedulerOptions(args={"leader-elect": "false"}, leader_elect=True)
    )
    assert options.leader_elect is False
    with pytest.raises(SchedulerConfigError, match="leader-elect: invalid boolean"):
        resolve_options(SchedulerOptions(args={"leader-elect": "maybe"}))


def test_most_allocated_file(tmp_path: Path) -> None:
    scheduler = load(
        tmp_path,
        HEADER
        + """profiles:
- schedulerName: default-scheduler
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - {name: cpu, weight: 1}
        - {name: memory, weight: 1}
""",
    )
    (profile,) = scheduler.configuration.profiles
    assert profile.plugin_args["NodeResourcesFit"]["scoringStrategy"]["type"] == "MostAllocated"


def test_invalid_files_name_the_field(tmp_path: Path) -> None:
    assert error(
        tmp_path,
        "apiVersion: kubescheduler.config.k8s.io/v1beta3\nkind: KubeSchedulerConfiguration\n",
    ) == (
        'apiVersion: Unsupported value: "kubescheduler.config.k8s.io/v1beta3": '
        'supported values: "kubescheduler.config.k8s.io/v1"'
    )
    assert (
        error(
            tmp_path,
            HEADER + "profiles:\n- schedulerName: s\n  plugins:\n    score:\n"
            "      enabled:\n      - name: Nope\n",
        )
        == 'profiles[0].plugins.score.enabled[0].name: Invalid value: "Nope": unknown plugin'
    )
    assert error(
        tmp_path,
        HEADER + "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n"
        "      scoringStrategy: {type: Most}\n",
    ) == (
        'profiles[0].pluginConfig[0].args.scoringStrategy.type: Unsupported value: "Most": '
        'supported values: "LeastAllocated", "MostAllocated", "RequestedToCapacityRatio"'
    )
    assert error(tmp_path, HEADER + "percentageOfNodesToScore: 101\n").startswith(
        "percentageOfNodesToScore: Invalid value: 101"
    )
    assert error(tmp_path, HEADER + "bogus: 1\n") == "bogus: unknown field"
    assert error(
        tmp_path,
        HEADER + "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args: {extra: 1}\n",
    ) == ("profiles[0].pluginConfig[0].args.extra: unknown field")
    assert error(tmp_path, "{{{").startswith("not valid YAML")


def test_profiles_plugins_enable_disable(tmp_path: Path) -> None:
    scheduler = load(
        tmp_path,
        HEADER
        + """percentageOfNodesToScore: 30
profiles:
- schedulerName: default-scheduler
- schedulerName: no-spread
  percentageOfNodesToScore: 50
  plugins:
    multiPoint:
      disabled:
      - name: PodTopologySpread
    score:
      disabled:
      - name: ImageLocality
      enabled:
      - name: NodeResourcesBalancedAllocation
        weight: 5
""",
    )
    default, custom = scheduler.configuration.profiles
    assert scheduler.configuration.percentage_of_nodes_to_score == 30
    assert custom.percentage_of_nodes_to_score == 50
    names = [n for n, _ in custom.points["score"]]
    assert names[0] == "NodeResourcesBalancedAllocation"
    assert dict(custom.points["score"])["NodeResourcesBalancedAllocation"] == 5
    assert "ImageLocality" not in names and "PodTopologySpread" not in names
    assert "PodTopologySpread" not in [n for n, _ in custom.points["filter"]]
    assert "ImageLocality" in [n for n, _ in default.points["score"]]


def test_duplicate_profiles_and_queue_sort(tmp_path: Path) -> None:
    assert error(tmp_path, HEADER + "profiles:\n- schedulerName: a\n- schedulerName: a\n") == (
        'profiles[1].schedulerName: Duplicate value: "a"'
    )
    assert error(
        tmp_path,
        HEADER + "profiles:\n- plugins:\n    queueSort:\n      disabled:\n      - name: '*'\n",
    ).startswith("profiles[0].plugins.queueSort: Invalid value: 0 plugins")


def test_enabling_at_points_upstream_plugins_extend(tmp_path: Path) -> None:
    load(
        tmp_path,
        HEADER
        + "profiles:\n- plugins:\n    preFilter:\n      enabled:\n      - name: NodeResourcesFit\n",
    )
    message = error(
        tmp_path,
        HEADER + "profiles:\n- plugins:\n    queueSort:\n      enabled:\n      - name: NodeName\n",
    )
    assert message == (
        'profiles[0].plugins.queueSort.enabled[0].name: Invalid value: "NodeName": '
        "plugin does not extend queueSort"
    )
