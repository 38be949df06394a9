"""Unit tests per plugin: the scores and reasons upstream's plugins give for the same inputs.

Where a case comes from upstream's own tests (kube-scheduler's ``*_test.go``), its arithmetic is
written beside it as upstream documents it.
"""

from __future__ import annotations

import random

import pytest

from sampan.scheduler.cache import SchedulerCache
from sampan.scheduler.framework import (
    UNSCHEDULABLE,
    UNSCHEDULABLE_AND_UNRESOLVABLE,
    CycleState,
    NodeInfo,
    PodInfo,
    _term_entries,
    pod_requests,
)
from sampan.scheduler.plugins.imagelocality import calculate_priority
from sampan.scheduler.plugins.preemption import fit_error_message

from .helpers import Env, node, pod

MB = 1024 * 1024

# upstream's "cpuAndMemory" pod: two containers, 1000m/2000 and 2000m/3000 -> 3000m / 5000.
CPU_AND_MEMORY = [
    {"name": "a", "image": "x", "resources": {"requests": {"cpu": "1000m", "memory": "2000"}}},
    {"name": "b", "image": "x", "resources": {"requests": {"cpu": "2000m", "memory": "3000"}}},
]


def two_machines(profile: dict | None = None) -> Env:
    env = Env(profile)
    env.add_nodes(
        node("machine1", cpu="4000m", memory="10000"), node("machine2", cpu="6000m", memory="10000")
    )
    return env


def fit_profile(strategy: dict) -> dict:
    return {
        "schedulerName": "default-scheduler",
        "pluginConfig": [{"name": "NodeResourcesFit", "args": {"scoringStrategy": strategy}}],
    }


# -- NodeResourcesFit / BalancedAllocation --------------------------------------------------------


def test_least_allocated_scores() -> None:
    # CPU ((4000-3000)*100)/4000 = 25, memory ((10000-5000)*100)/10000 = 50 -> 37;
    # machine2: 50 and 50 -> 50.
    env = two_machines()
    assert env.score("NodeResourcesFit", pod(containers=CPU_AND_MEMORY)) == [37, 50]


def test_most_allocated_scores() -> None:
    # CPU (3000*100)/4000 = 75, memory 50 -> 62; machine2: 50 and 50 -> 50.
    env = two_machines(fit_profile({"type": "MostAllocated"}))
    assert env.score("NodeResourcesFit", pod(containers=CPU_AND_MEMORY)) == [62, 50]


def test_requested_to_capacity_ratio_scores_round() -> None:
    # shape (0,10),(100,0) scaled x10: cpu 75% -> 25, memory 50% -> 50; mean 37.5 -> 38.
    shape = [{"utilization": 0, "score": 10}, {"utilization": 100, "score": 0}]
    env = two_machines(
        fit_profile(
            {"type": "RequestedToCapacityRatio", "requestedToCapacityRatio": {"shape": shape}}
        )
    )
    assert env.score("NodeResourcesFit", pod(containers=CPU_AND_MEMORY)) == [38, 50]


def test_resource_weights_change_the_mean() -> None:
    # cpu weight 3, memory 1: (25*3 + 50)/4 = 31; machine2 (50*3 + 50)/4 = 50.
    strategy = {
        "type": "LeastAllocated",
        "resources": [{"name": "cpu", "weight": 3}, {"name": "memory", "weight": 1}],
    }
    env = two_machines(fit_profile(strategy))
    assert env.score("NodeResourcesFit", pod(containers=CPU_AND_MEMORY)) == [31, 50]


def test_balanced_allocation_scores() -> None:
    # machine1: cpu 75%, memory 50%, std 0.125 -> 87; machine2: 50%/50% -> 100.
    env = two_machines()
    assert env.score("NodeResourcesBalancedAllocation", pod(containers=CPU_AND_MEMORY)) == [87, 100]
    # A pod that requests nothing skips the plugin (upstream's best-effort skip).
    assert env.score("NodeResourcesBalancedAllocation", pod(requests={})) == []


def test_scoring_counts_missing_requests_as_non_zero_defaults() -> None:
    env = Env()
    env.add_nodes(node("n", cpu="1000m", memory=str(1000 * MB)))
    # 100m and 200Mi: cpu (1000-100)*100/1000 = 90, memory (1000-200)*100/1000 = 80 -> 85.
    assert env.score("NodeResourcesFit", pod(requests={})) == [85]


def test_fit_filter_reasons() -> None:
    env = Env()
    env.add_nodes(
        node("small", cpu="1", memory="1Gi", pods="1"), node("big", cpu="8", memory="8Gi")
    )
    env.add_pod(pod("existing", requests={"cpu": "500m"}, node_name="small"))
    passed, failed = env.filter("NodeResourcesFit", pod(requests={"cpu": "2", "memory": "2Gi"}))
    assert passed == ["big"]
    assert failed["small"].code == UNSCHEDULABLE
    assert failed["small"].reasons == ("Too many pods", "Insufficient cpu", "Insufficient memory")


def test_fit_counts_nominated_pods_of_higher_priority() -> None:
    env = Env()
    env.add_nodes(node("n", cpu="1"))
    preemptor = pod("preemptor", requests={"cpu": "800m"}, priority=100)
    env.cache.set_nominated(preemptor, "n")
    passed, failed = env.filter(
        "NodeResourcesFit", pod("low", requests={"cpu": "500m"}, priority=1)
    )
    assert passed == [] and failed["n"].reasons == ("Insufficient cpu",)
    passed, _ = env.filter(
        "NodeResourcesFit", pod("higher", requests={"cpu": "500m"}, priority=200)
    )
    assert passed == ["n"]


def test_pod_requests_with_init_containers_sidecars_and_overhead() -> None:
    spec = {
        "containers": [{"resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}],
        "initContainers": [
            {"resources": {"requests": {"cpu": "50m"}}, "restartPolicy": "Always"},
            {"resources": {"requests": {"cpu": "2", "memory": "50Mi"}}},
        ],
        "overhead": {"cpu": "10m"},
    }
    req = pod_requests(spec)
    # sum(containers + sidecar) = 150m; init step = 2000m + 50m sidecar = 2050m -> max 2050m.
    assert req.milli_cpu == 2050 + 10
    assert req.memory == 100 * MB


# -- NodeName, NodeUnschedulable, NodePorts ------------------------------------------------------


def test_node_name_unschedulable_and_ports() -> None:
    env = Env()
    env.add_nodes(node("a"), node("b", unschedulable=True))
    passed, failed = env.filter("NodeName", pod(nodeName="a"))
    assert passed == ["a"]
    assert failed["b"].reasons == ("node(s) didn't match the requested node name",)
    passed, failed = env.filter("NodeUnschedulable", pod())
    assert passed == ["a"] and failed["b"].reasons == ("node(s) were unschedulable",)
    assert failed["b"].code == UNSCHEDULABLE_AND_UNRESOLVABLE
    tolerant = pod(
        tolerations=[
            {
                "key": "node.kubernetes.io/unschedulable",
                "operator": "Exists",
                "effect": "NoSchedule",
            }
        ]
    )
    assert env.filter("NodeUnschedulable", tolerant)[0] == ["a", "b"]

    port = [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]
    env.add_pod(pod("web", containers=port, node_name="a"))
    passed, failed = env.filter("NodePorts", pod("web2", containers=port))
    assert passed == ["b"]
    assert failed["a"].reasons == ("node(s) didn't have free ports for the requested pod ports",)
    udp = [
        {
            "name": "c",
            "image": "x",
            "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}],
        }
    ]
    assert env.filter("NodePorts", pod("dns", containers=udp))[0] == ["a", "b"]


# -- TaintToleration ------------------------------------------------------------------------------


def test_taint_filter_message_and_tolerations() -> None:
    env = Env()
    taint = {"key": "dedicated", "value": "user1", "effect": "NoSchedule"}
    env.add_nodes(node("tainted", taints=[taint]), node("clean"))
    passed, failed = env.filter("TaintToleration", pod())
    assert passed == ["clean"]
    assert failed["tainted"].reasons == ("node(s) had untolerated taint {dedicated: user1}",)
    assert failed["tainted"].code == UNSCHEDULABLE_AND_UNRESOLVABLE
    ok = pod(
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "user1", "effect": "NoSchedule"}
        ]
    )
    assert env.filter("TaintToleration", ok)[0] == ["tainted", "clean"]
    wrong_value = pod(tolerations=[{"key": "dedicated", "value": "user2", "effect": "NoSchedule"}])
    assert env.filter("TaintToleration", wrong_value)[0] == ["clean"]


def test_taint_score_more_intolerable_taints_lower_score() -> None:
    # upstream: no taints -> 100, one PreferNoSchedule -> 50, two -> 0.
    env = Env()
    soft = [{"key": f"k{i}", "value": "v", "effect": "PreferNoSchedule"} for i in range(2)]
    env.add_nodes(node("nodeA"), node("nodeB", taints=soft[:1]), node("nodeC", taints=soft))
    assert env.score("TaintToleration", pod()) == [100, 50, 0]
    tolerate_one = pod(
        tolerations=[{"key": "k0", "operator": "Exists", "effect": "PreferNoSchedule"}]
    )
    assert env.score("TaintToleration", tolerate_one) == [100, 100, 0]
    # No tainted node anywhere: every node would score 100, so the plugin skips.
    clean = Env()
    clean.add_nodes(node("a"), node("b"))
    assert clean.score("TaintToleration", pod()) == []


# -- NodeAffinity ---------------------------------------------------------------------------------


def _preferred(weight: int, key: str, value: str) -> dict:
    return {
        "weight": weight,
        "preference": {"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]},
    }


def test_node_affinity_filter_and_score() -> None:
    env = Env()
    env.add_nodes(
        node("n1", labels={"foo": "bar"}),
        node("n2", labels={"foo": "bar", "key": "value"}),
        node("n3", labels={"foo": "bar", "key": "value", "az": "az1"}),
    )
    affinity = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                _preferred(2, "foo", "bar"),
                _preferred(4, "key", "value"),
                _preferred(5, "az", "az1"),
            ]
        }
    }
    # raw 2, 6, 11 -> 100*2//11 = 18, 100*6//11 = 54, 100.
    assert env.score("NodeAffinity", pod(affinity=affinity)) == [18, 54, 100]
    passed, failed = env.filter("NodeAffinity", pod(nodeSelector={"az": "az1"}))
    assert passed == ["n3"]
    assert failed["n1"].reasons == ("node(s) didn't match Pod's node affinity/selector",)
    required = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "key", "operator": "Exists"}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
                ]
            }
        }
    }
    assert env.filter("NodeAffinity", pod(affinity=required))[0] == ["n1", "n2", "n3"]
    empty_term = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}
        }
    }
    assert env.filter("NodeAffinity", pod(affinity=empty_term))[0] == []


def test_framework_normalizes_raw_scores_before_weighting() -> None:
    # Raw NodeAffinity scores are weight sums and raw TaintToleration scores count untolerated
    # taints (more is worse): only after NormalizeScore are they 0..100 and comparable with the
    # other plugins' scores, which decides the winner below.
    env = Env()
    busy, idle = env.add_nodes(node("busy", labels={"zone": "a"}), node("idle"))
    env.add_pod(pod("load", requests={"cpu": "3", "memory": "24Gi"}, node_name="busy"))
    prefers_a = pod(
        affinity={
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [_preferred(1, "zone", "a")]
            }
        }
    )
    totals = env.framework.run_score(CycleState(), prefers_a, [busy, idle])
    # NodeAffinity 100 x weight 2 outweighs the idle node's lead in NodeResourcesFit.
    assert totals[0] > totals[1], totals

    env = Env()
    soft = [{"key": f"k{i}", "value": "v", "effect": "PreferNoSchedule"} for i in range(3)]
    tainted, clean = env.add_nodes(node("tainted", taints=soft), node("clean"))
    totals = env.framework.run_score(CycleState(), pod(), [tainted, clean])
    # Three untolerated taints score 0 and none 100 (x weight 3), not 3 and 0.
    assert totals[1] - totals[0] == 300, totals


# -- ImageLocality --------------------------------------------------------------------------------


def test_image_locality_scores() -> None:
    env = Env()
    env.add_nodes(
        node("with", images=[{"names": ["registry/app:1"], "sizeBytes": 500 * MB}]),
        node("without"),
    )
    containers = [{"name": "c", "image": "registry/app:1"}]
    # 500 MB spread over 1 of 2 nodes -> 250 MB: 100*(250-23)//(1000-23) = 23.
    assert env.score("ImageLocality", pod(containers=containers)) == [23, 0]
    assert calculate_priority(0, 1) == 0
    assert calculate_priority(5000 * MB, 1) == 100


def test_image_names_without_tag_mean_latest() -> None:
    env = Env()
    env.add_nodes(node("n", images=[{"names": ["busybox:latest"], "sizeBytes": 2000 * MB}]))
    assert env.score("ImageLocality", pod(containers=[{"name": "c", "image": "busybox"}])) == [100]


# -- PodTopologySpread ----------------------------------------------------------------------------


def _spread(
    when: str, max_skew: int = 1, key: str = "kubernetes.io/hostname", **extra: object
) -> dict:
    return {
        "maxSkew": max_skew,
        "topologyKey": key,
        "whenUnsatisfiable": when,
        "labelSelector": {"matchLabels": {"app": "web"}},
        **extra,
    }


def _web_env(counts: dict[str, int]) -> Env:
    env = Env()
    env.add_nodes(*(node(n, labels={"zone": "z1" if n != "n3" else "z2"}) for n in counts))
    for n, count in counts.items():
        for i in range(count):
            env.add_pod(pod(f"{n}-{i}", labels={"app": "web"}, node_name=n))
    return env


def test_topology_spread_filter() -> None:
    env = _web_env({"n1": 2, "n2": 1, "n3": 0})
    incoming = pod(
        "new", labels={"app": "web"}, topologySpreadConstraints=[_spread("DoNotSchedule")]
    )
    passed, failed = env.filter("PodTopologySpread", incoming)
    # min is 0 (n3): n1 would be 3-0 > 1, n2 2-0 > 1, n3 1-0 ok.
    assert passed == ["n3"]
    assert failed["n1"].reasons == ("node(s) didn't match pod topology spread constraints",)
    zone = pod(
        "z", labels={"app": "web"}, topologySpreadConstraints=[_spread("DoNotSchedule", key="zone")]
    )
    # z1 has 3, z2 has 0: only z2 (n3).
    assert env.filter("PodTopologySpread", zone)[0] == ["n3"]
    missing = pod(
        "m", labels={"app": "web"}, topologySpreadConstraints=[_spread("DoNotSchedule", key="rack")]
    )
    passed, failed = env.filter("PodTopologySpread", missing)
    assert passed == [] and failed["n1"].code == UNSCHEDULABLE_AND_UNRESOLVABLE


def test_topology_spread_min_domains() -> None:
    env = _web_env({"n1": 1, "n2": 1})
    incoming = pod(
        "new",
        labels={"app": "web"},
        topologySpreadConstraints=[_spread("DoNotSchedule", minDomains=3)],
    )
    # Two domains < minDomains 3: the global minimum counts as 0, so 1+1-0 > 1 everywhere.
    assert env.filter("PodTopologySpread", incoming)[0] == []


def test_topology_spread_score() -> None:
    env = _web_env({"n1": 2, "n2": 1, "n3": 0})
    incoming = pod(
        "new", labels={"app": "web"}, topologySpreadConstraints=[_spread("ScheduleAnyway")]
    )
    # weight log(3+2) = 1.609: raw round(2*1.609) = 3, round(1.609) = 2, 0;
    # normalised 100*(3+0-s)//3 -> 0, 33, 100.
    assert env.score("PodTopologySpread", incoming) == [0, 33, 100]


def test_topology_spread_system_defaults_need_an_owner_or_service() -> None:
    env = _web_env({"n1": 1, "n2": 0, "n3": 0})
    assert env.score("PodTopologySpread", pod("lonely", labels={"app": "web"})) == []
    service = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}},
    }
    env2 = Env(services=[service])
    env2.add_nodes(node("n1"), node("n2"))
    env2.add_pod(pod("a", labels={"app": "web"}, node_name="n1"))
    scores = env2.score("PodTopologySpread", pod("b", labels={"app": "web"}))
    assert scores[1] == 100 and scores[0] < 100


def test_topology_spread_counts_from_the_label_index_as_from_every_pod() -> None:
    """``Constraint.count`` reads ``NodeInfo.by_label`` for a selector with an equality or
    ``in`` requirement; it must count exactly what a walk over every pod counts (namespace,
    terminating pods, the selector's other requirements), through adds, removals and clones."""
    env = Env()
    (n1,) = env.add_nodes(node("n1"))
    env.add_pod(pod("a", labels={"app": "web", "tier": "fe"}, node_name="n1"))
    env.add_pod(pod("b", labels={"app": "web", "tier": "be"}, node_name="n1"))
    env.add_pod(pod("c", labels={"app": "db"}, node_name="n1"))
    env.add_pod(pod("d", labels={"app": "web"}, namespace="other", node_name="n1"))
    gone = pod("e", labels={"app": "web"}, node_name="n1")
    gone.pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    env.add_pod(PodInfo(gone.pod))
    plugin = env.plugin("PodTopologySpread")
    selectors = {
        "equality": {"matchLabels": {"app": "web"}},
        "equality and more": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["be"]}],
        },
        "in": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]},
        "no equality": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
        "nothing": {"matchExpressions": [{"key": "app", "operator": "Bogus"}]},
    }

    def counts(info: NodeInfo) -> dict[str, tuple[int, int]]:
        out = {}
        for name, sel in selectors.items():
            incoming = pod(
                "new",
                topologySpreadConstraints=[{**_spread("DoNotSchedule"), "labelSelector": sel}],
            )
            (c,), _ = plugin._pod_constraints(incoming)
            walked = sum(
                1
                for p in info.pods.values()
                if p.namespace == "default" and not p.terminating and c.selector.matches(p.labels)
            )
            out[name] = (c.count(info, "default"), walked)
        return out

    assert counts(n1) == {
        "equality": (2, 2),
        "equality and more": (1, 1),
        "in": (3, 3),
        "no equality": (2, 2),
        "nothing": (0, 0),
    }
    clone = n1.clone()
    clone.remove_pod(env.cache.pod_info("uid-a"))
    assert counts(clone)["equality"] == (1, 1)
    assert counts(n1)["equality"] == (2, 2)  # the clone's removal left the node alone
    env.cache.remove_pod("uid-b")
    env.cache.remove_pod("uid-a")
    assert counts(n1)["in"] == (1, 1)
    assert [p.name for p in n1.by_label[("default", "app", "web")]] == ["e"]
    env.cache.remove_pod("uid-e")
    assert ("default", "app", "web") not in n1.by_label
    assert n1.by_label[("other", "app", "web")][0].name == "d"


def test_cache_key_nodes_follows_node_labels() -> None:
    """``SchedulerCache.key_nodes`` counts, per label key, the known nodes that have it,
    through adds, label changes and removals (a placeholder holds no labels)."""
    cache = SchedulerCache()
    cache.add_node(node("n1", labels={"zone": "a", "rack": "r1"}))
    cache.add_node(node("n2", labels={"zone": "b"}))
    cache.add_pod(pod("p", node_name="n3"))  # a node not seen yet
    assert cache.key_nodes == {"kubernetes.io/hostname": 2, "zone": 2, "rack": 1}
    cache.update_node(node("n1", labels={"zone": "a"}))
    assert cache.key_nodes == {"kubernetes.io/hostname": 2, "zone": 2}
    cache.add_node(node("n3", labels={"rack": "r2"}))
    cache.remove_node("n2")
    assert cache.key_nodes == {"kubernetes.io/hostname": 2, "zone": 1, "rack": 1}
    cache.remove_node("n1")
    cache.remove_node("n3")
    assert cache.key_nodes == {}


def test_cache_label_nodes_follows_adds_assumes_and_removals() -> None:
    """``SchedulerCache.label_nodes`` must always say, per (namespace, key, value), how many
    counted pods on each node carry that label -- through assume, confirm, forget, moves,
    removal, pods seen before their node -- and ``nodes_with`` must name known nodes only."""
    rng = random.Random(7)
    cache = SchedulerCache()
    for i in range(4):
        cache.add_node(node(f"n{i}"))

    def expected() -> dict:
        out: dict = {}
        for name, info in [*cache.nodes.items(), *cache._placeholders.items()]:
            for key, pods in info.by_label.items():
                out.setdefault(key, {})[name] = len(pods)
        return out

    live: dict[str, PodInfo] = {}
    for step in range(300):
        action = rng.random()
        name = f"p{rng.randrange(40)}"
        labels = {"app": rng.choice("ab"), "tier": rng.choice("xy")}
        ns = rng.choice(["default", "other"])
        target = f"n{rng.randrange(5)}"  # n4 is never added: a placeholder
        if action < 0.4:
            p = pod(name, labels=labels, namespace=ns, node_name=target)
            cache.add_pod(p)
            live[p.uid] = p
        elif action < 0.65:
            p = pod(name, labels=labels, namespace=ns)
            cache.assume_pod(p, target)
            if rng.random() < 0.5:
                cache.forget_pod(p)
        else:
            cache.remove_pod(f"uid-{name}")
        assert cache.label_nodes == expected(), step
    hot = cache.nodes_with((("default", "app", "a"), ("default", "app", "b")))
    assert hot is not None
    assert all(info.name in cache.nodes for info in hot)
    assert {info.name for info in hot} == {
        name
        for key, per_node in expected().items()
        if key[0] == "default" and key[1] == "app"
        for name in per_node
        if name in cache.nodes
    }
    assert cache.nodes_with(None) is None
    for uid in list(cache.pod_nodes):
        cache.remove_pod(uid)
    assert cache.label_nodes == {}


@pytest.mark.parametrize("seed", range(6))
def test_label_index_gives_what_walking_every_pod_gives(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PodTopologySpread and InterPodAffinity read candidates from ``NodeInfo.by_label``
    (``NodeInfo.matching``), the nodes that hold them from ``SchedulerCache.label_nodes``
    (``nodes_with``), which topology keys some node has from ``SchedulerCache.key_nodes``,
    and existing pods' terms from ``NodeInfo.affinity_terms``. On random clusters and random
    incoming pods, their filter and score results must equal those of the same plugins made
    to walk every pod (and every term) on each node."""
    rng = random.Random(seed)
    apps, tiers = ["a", "b", "c"], ["fe", "be"]

    def labels() -> dict[str, str]:
        out = {"app": rng.choice(apps)}
        if rng.random() < 0.6:
            out["tier"] = rng.choice(tiers)
        return out

    def selector() -> dict:
        return rng.choice(
            [
                {"matchLabels": {"app": rng.choice(apps)}},
                {"matchExpressions": [{"key": "app", "operator": "In", "values": apps[:2]}]},
                {
                    "matchLabels": {"app": rng.choice(apps)},
                    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["be"]}],
                },
                {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
            ]
        )

    def term(key: str) -> dict:
        t: dict = {"labelSelector": selector(), "topologyKey": key}
        if rng.random() < 0.3:
            t["namespaces"] = ["default", "other"]
        return t

    def affinity(key: str, required: bool) -> dict:
        return {
            "podAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 5, "podAffinityTerm": term(key)}
                ],
                **(
                    {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone")]}
                    if required
                    else {}
                ),
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 7, "podAffinityTerm": term("kubernetes.io/hostname")}
                ],
                "requiredDuringSchedulingIgnoredDuringExecution": [term(key)],
            },
        }

    # A Service selecting app=a gives pods without constraints the system defaults, whose
    # zone key (topology.kubernetes.io/zone) no node here has.
    service = {
        "metadata": {"name": "svc-a", "namespace": "default"},
        "spec": {"selector": {"app": "a"}},
    }
    env = Env(services=[service])
    env.add_nodes(*(node(f"n{i}", labels={"zone": f"z{i % 3}"}) for i in range(6)))
    for i in range(60):
        extra = {}
        if rng.random() < 0.3:  # existing pods' own terms count too (symmetry)
            extra["affinity"] = affinity(rng.choice(["kubernetes.io/hostname", "zone"]), i % 2 == 0)
        p = pod(
            f"p{i}",
            labels=labels(),
            namespace=rng.choice(["default", "other"]),
            node_name=f"n{rng.randrange(6)}",
            **extra,
        )
        if rng.random() < 0.1:
            p.pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            p = PodInfo(p.pod)
        env.add_pod(p)
    for _ in range(8):  # some removed again: the index must forget them
        env.cache.remove_pod(f"uid-p{rng.randrange(60)}")

    incoming = []
    for i in range(12):
        key = rng.choice(["kubernetes.io/hostname", "zone", "rack"])  # no node has a rack
        if i % 4 == 3:
            incoming.append(pod(f"new{i}", labels={"app": "a", "tier": rng.choice(tiers)}))
            continue
        incoming.append(
            pod(
                f"new{i}",
                labels=labels(),
                topologySpreadConstraints=[
                    {
                        **_spread(rng.choice(["DoNotSchedule", "ScheduleAnyway"]), key=key),
                        "labelSelector": selector(),
                    }
                ],
                affinity=affinity(key, required=i % 3 == 0),
            )
        )

    def results() -> list[object]:
        out: list[object] = []
        for p in incoming:
            for name in ("PodTopologySpread", "InterPodAffinity"):
                passed, failed = env.filter(name, p)
                out.append((passed, sorted(failed)))
                out.append(env.score(name, p))
        return out

    indexed = results()
    monkeypatch.setattr(NodeInfo, "matching", lambda self, _lookups: self.pods.values())
    monkeypatch.setattr(SchedulerCache, "nodes_with", lambda self, _lookups: None)

    class EveryKey(dict):  # as if every node had every label key
        def get(self, _key: object, _default: object = None) -> int:
            return 1

    monkeypatch.setattr(env.cache, "key_nodes", EveryKey())
    monkeypatch.setattr(
        NodeInfo,
        "affinity_terms_for",
        lambda self, _labels: [
            e for p in self.pods_with_affinity.values() for e in _term_entries(p)
        ],
    )
    walked = results()
    assert indexed == walked
    assert any(scores for scores in indexed[1::2] if scores)  # the scores were computed


def test_topology_spread_an_empty_required_node_affinity_still_excludes_every_node() -> None:
    """The shortcut for pods no inclusion policy can exclude must not take a pod whose
    required node affinity has no terms (which matches no node) for one without any."""
    env = _web_env({"n1": 2, "n2": 0})
    incoming = pod(
        "new",
        labels={"app": "web"},
        topologySpreadConstraints=[_spread("DoNotSchedule")],
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
    )
    plugin = env.plugin("PodTopologySpread")
    (c,), _ = plugin._pod_constraints(incoming)
    assert not c.everywhere
    assert not c.includes(incoming, env.cache.nodes["n1"])
    plain = pod(
        "plain", labels={"app": "web"}, topologySpreadConstraints=[_spread("DoNotSchedule")]
    )
    (c,), _ = plugin._pod_constraints(plain)
    assert c.everywhere


# -- InterPodAffinity -----------------------------------------------------------------------------


def _term(app: str, key: str = "kubernetes.io/hostname") -> dict:
    return {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}


def test_inter_pod_affinity_filter() -> None:
    env = Env()
    env.add_nodes(
        node("n1", labels={"zone": "a"}),
        node("n2", labels={"zone": "a"}),
        node("n3", labels={"zone": "b"}),
    )
    env.add_pod(pod("db", labels={"app": "db"}, node_name="n1"))
    near_db = pod(
        "web",
        affinity={
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [_term("db", "zone")]}
        },
    )
    passed, failed = env.filter("InterPodAffinity", near_db)
    assert passed == ["n1", "n2"]
    assert failed["n3"].reasons == ("node(s) didn't match pod affinity rules",)
    assert failed["n3"].code == UNSCHEDULABLE_AND_UNRESOLVABLE
    away = pod(
        "web",
        affinity={
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [_term("db")]}
        },
    )
    passed, failed = env.filter("InterPodAffinity", away)
    assert passed == ["n2", "n3"]
    assert failed["n1"].reasons == ("node(s) didn't match pod anti-affinity rules",)
    # The first pod of a self-affine group may go anywhere the topology key exists.
    first = pod(
        "cache",
        labels={"app": "cache"},
        affinity={
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [_term("cache")]}
        },
    )
    assert env.filter("InterPodAffinity", first)[0] == ["n1", "n2", "n3"]


def test_existing_pods_anti_affinity_blocks_matching_pods() -> None:
    env = Env()
    env.add_nodes(node("n1"), node("n2"))
    guard = pod(
        "guard",
        labels={"app": "guard"},
        node_name="n1",
        affinity={
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [_term("noisy")]}
        },
    )
    env.add_pod(guard)
    passed, failed = env.filter("InterPodAffinity", pod("x", labels={"app": "noisy"}))
    assert passed == ["n2"]
    assert failed["n1"].reasons == ("node(s) didn't satisfy existing pods anti-affinity rules",)
    assert env.filter("InterPodAffinity", pod("y", labels={"app": "quiet"}))[0] == ["n1", "n2"]


def test_inter_pod_affinity_score() -> None:
    env = Env()
    env.add_nodes(
        node("n1", labels={"zone": "a"}),
        node("n2", labels={"zone": "a"}),
        node("n3", labels={"zone": "b"}),
    )
    env.add_pod(pod("db", labels={"app": "db"}, node_name="n1"))
    preferred = {
        "podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "podAffinityTerm": _term("db", "zone")}
            ]
        }
    }
    assert env.score("InterPodAffinity", pod("web", affinity=preferred)) == [100, 100, 0]
    avoid = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "podAffinityTerm": _term("db", "zone")}
            ]
        }
    }
    assert env.score("InterPodAffinity", pod("web", affinity=avoid)) == [0, 0, 100]
    assert env.score("InterPodAffinity", pod("plain")) == []


# -- VolumeBinding --------------------------------------------------------------------------------


def test_volume_binding_bound_claims_follow_pv_node_affinity() -> None:
    pv = {
        "metadata": {"name": "pv1"},
        "spec": {
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": ["n2"],
                                }
                            ]
                        }
                    ]
                }
            }
        },
    }
    pvc = {"metadata": {"name": "data", "namespace": "default"}, "spec": {"volumeName": "pv1"}}
    env = Env(persistentvolumes=[pv], persistentvolumeclaims=[pvc])
    env.add_nodes(node("n1"), node("n2"))
    with_claim = pod(volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}])
    passed, failed = env.filter("VolumeBinding", with_claim)
    assert passed == ["n2"] and failed["n1"].reasons == (
        "node(s) had volume node affinity conflict",
    )
    missing = pod(volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "nope"}}])
    st = env.plugin("VolumeBinding").pre_filter(CycleState(), missing)
    assert (
        st.code == UNSCHEDULABLE_AND_UNRESOLVABLE
        and st.message == 'persistentvolumeclaim "nope" not found'
    )


def test_volume_binding_wait_for_first_consumer() -> None:
    wffc = {
        "metadata": {"name": "local-path"},
        "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer",
    }
    immediate = {"metadata": {"name": "fast"}, "provisioner": "x", "volumeBindingMode": "Immediate"}
    claims = [
        {
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"storageClassName": "local-path"},
        },
        {"metadata": {"name": "b", "namespace": "default"}, "spec": {"storageClassName": "fast"}},
    ]
    env = Env(storageclasses=[wffc, immediate], persistentvolumeclaims=claims)
    env.add_nodes(node("n1"))
    delayed = pod(volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "a"}}])
    assert env.filter("VolumeBinding", delayed)[0] == ["n1"]
    unbound = pod(volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "b"}}])
    st = env.plugin("VolumeBinding").pre_filter(CycleState(), unbound)
    assert st.message == "pod has unbound immediate PersistentVolumeClaims"


# -- DefaultPreemption ----------------------------------------------------------------------------


def test_preemption_picks_the_node_with_the_least_important_victims() -> None:
    env = Env()
    env.add_nodes(node("n1", cpu="1"), node("n2", cpu="1"))
    env.add_pod(pod("mid", requests={"cpu": "800m"}, priority=50, node_name="n1"))
    env.add_pod(pod("low", requests={"cpu": "800m"}, priority=10, node_name="n2"))
    high = pod("high", requests={"cpu": "500m"}, priority=100)
    state = CycleState()
    failed: dict = {}
    assert env.framework.run_pre_filter(state, high) is None
    assert env.framework.run_filter(state, high, list(env.cache.node_list), failed) == []
    nominated, st = env.framework.run_post_filter(state, high, failed)
    assert nominated == "n2" and st is not None and st.ok
    assert env.evicted == ["low"]


def test_preemption_keeps_victims_it_does_not_need() -> None:
    env = Env()
    env.add_nodes(node("n", cpu="2"))
    for name, prio in (("a", 1), ("b", 2), ("c", 3)):
        env.add_pod(pod(name, requests={"cpu": "600m"}, priority=prio, node_name="n"))
    high = pod("high", requests={"cpu": "1"}, priority=100)
    state = CycleState()
    failed: dict = {}
    env.framework.run_pre_filter(state, high)
    env.framework.run_filter(state, high, list(env.cache.node_list), failed)
    nominated, _ = env.framework.run_post_filter(state, high, failed)
    # 1800m used of 2000m; freeing 1000m needs two victims: the two least important.
    assert nominated == "n" and sorted(env.evicted) == ["a", "b"]


def test_preemption_messages() -> None:
    env = Env()
    env.add_nodes(
        node("n", cpu="1", taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}]),
        node("m", cpu="1"),
    )
    env.add_pod(pod("peer", requests={"cpu": "800m"}, priority=100, node_name="m"))
    incoming = pod("x", requests={"cpu": "500m"}, priority=100)
    state = CycleState()
    failed: dict = {}
    env.framework.run_pre_filter(state, incoming)
    env.framework.run_filter(state, incoming, list(env.cache.node_list), failed)
    nominated, st = env.framework.run_post_filter(state, incoming, failed)
    assert nominated is None
    assert st.message == (
        "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, "
        "1 Preemption is not helpful for scheduling."
    )
    never = pod("y", requests={"cpu": "500m"}, priority=1000, preemptionPolicy="Never")
    _, st = env.framework.run_post_filter(state, never, failed)
    assert st.message == "not eligible due to preemptionPolicy=Never."


def test_fit_error_message_format() -> None:
    msg = fit_error_message(
        3, {"Insufficient cpu": 2, "node(s) had untolerated taint {a: b}": 1}, "preemption: x."
    )
    assert msg == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {a: b}, 2 Insufficient cpu. "
        "preemption: x.."
    )


@pytest.mark.parametrize(
    ("percentage", "nodes", "expected"),
    [
        (None, 50, 50),
        (None, 1000, 420),
        (None, 5000, 500),
        (None, 6000, 300),
        (None, 200, 100),
        (30, 1000, 300),
        (1, 1000, 100),
    ],
)
def test_num_feasible_nodes_to_find(percentage: int | None, nodes: int, expected: int) -> None:
    from sampan.scheduler.scheduler import num_feasible_nodes_to_find

    assert num_feasible_nodes_to_find(percentage, nodes) == expected


def test_preemption_sees_victims_through_affinity_counts() -> None:
    env = Env()
    env.add_nodes(node("n"))
    env.add_pod(pod("low-db", labels={"app": "db"}, priority=1, node_name="n"))
    env.add_pod(pod("low-other", labels={"app": "x"}, priority=1, node_name="n"))
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [_term("db")]}}
    high = pod("high", priority=100, affinity=anti)
    state = CycleState()
    failed: dict = {}
    assert env.framework.run_pre_filter(state, high) is None
    assert env.framework.run_filter(state, high, list(env.cache.node_list), failed) == []
    assert failed["n"].reasons == ("node(s) didn't match pod anti-affinity rules",)
    nominated, _ = env.framework.run_post_filter(state, high, failed)
    # Only the pod the anti-affinity term matches has to go; the other one is reprieved.
    assert nominated == "n" and env.evicted == ["low-db"]
    # The what-if left the real cycle state alone.
    assert state["InterPodAffinity"][2] == {("kubernetes.io/hostname", "n"): 1}


def test_memoised_scores_follow_node_changes() -> None:
    env = two_machines()
    incoming = pod(containers=CPU_AND_MEMORY)
    assert env.score("NodeResourcesFit", incoming) == [37, 50]
    assert env.score("NodeResourcesBalancedAllocation", incoming) == [87, 100]
    # machine2 gets 1500m / 2500 more: cpu (6000-4500)*100/6000 = 25, memory 25 -> 25;
    # balanced: 75% and 75% -> 100.
    env.add_pod(pod("more", requests={"cpu": "1500m", "memory": "2500"}, node_name="machine2"))
    assert env.score("NodeResourcesFit", incoming) == [37, 25]
    assert env.score("NodeResourcesBalancedAllocation", incoming) == [87, 100]
    env.cache.remove_pod("uid-more")
    assert env.score("NodeResourcesFit", incoming) == [37, 50]
