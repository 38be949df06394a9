"""The event recorder against a real in-process API server."""

from __future__ import annotations

import pytest

from sampan.client.api import CONFIGMAPS, EVENTS, Client
from sampan.client.events import TYPE_NORMAL, TYPE_WARNING, EventRecorder


async def test_repeats_are_aggregated_into_one_event(client: Client) -> None:
    cm = await client.create(
        CONFIGMAPS, {"metadata": {"name": "subject", "namespace": "default"}, "data": {}}
    )
    recorder = EventRecorder(client, "test-controller", "host-1")
    for _ in range(3):
        recorder.event(cm, TYPE_WARNING, "FailedSync", "could not sync")
    recorder.event(cm, TYPE_NORMAL, "Synced", "all good")
    await recorder.flush()

    events = (await client.list(EVENTS, namespace="default"))["items"]
    mine = {e["reason"]: e for e in events if e["involvedObject"].get("name") == "subject"}
    assert set(mine) == {"FailedSync", "Synced"}
    failed = mine["FailedSync"]
    assert failed["count"] == 3
    assert failed["type"] == "Warning" and failed["message"] == "could not sync"
    assert failed["source"] == {"component": "test-controller", "host": "host-1"}
    assert failed["involvedObject"]["uid"] == cm["metadata"]["uid"]
    assert failed["involvedObject"]["kind"] == "ConfigMap"
    assert failed["metadata"]["name"].startswith("subject.")
    assert failed["firstTimestamp"] <= failed["lastTimestamp"]
    assert mine["Synced"]["count"] == 1
    await recorder.stop()
    assert recorder.dropped == 0


async def test_deleted_event_is_recreated_and_cluster_objects_go_to_default(
    client: Client,
) -> None:
    node = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n1", "uid": "u-n1"}}
    recorder = EventRecorder(client, "kubelet", "n1")
    recorder.event(node, TYPE_NORMAL, "Starting", "Starting kubelet.")
    await recorder.flush()
    events = [
        e
        for e in (await client.list(EVENTS, namespace="default"))["items"]
        if e["involvedObject"].get("name") == "n1"
    ]
    assert len(events) == 1 and events[0]["count"] == 1
    await client.delete(EVENTS, events[0]["metadata"]["name"], namespace="default")

    recorder.event(node, TYPE_NORMAL, "Starting", "Starting kubelet.")
    await recorder.flush()
    again = [
        e
        for e in (await client.list(EVENTS, namespace="default"))["items"]
        if e["involvedObject"].get("name") == "n1"
    ]
    assert len(again) == 1 and again[0]["count"] == 1
    assert again[0]["metadata"]["name"] != events[0]["metadata"]["name"]
    await recorder.stop()


async def test_event_type_is_checked(client: Client) -> None:
    recorder = EventRecorder(client, "c")
    with pytest.raises(ValueError):
        recorder.event({"metadata": {"name": "x"}}, "Bad", "R", "m")
    await recorder.stop()


async def test_spam_filter_limits_events_per_object(client: Client) -> None:
    recorder = EventRecorder(client, "noisy", spam_burst=3, spam_refill_s=3600)
    subject = {"kind": "ConfigMap", "apiVersion": "v1", "namespace": "default", "name": "s"}
    other = {**subject, "name": "t"}
    for i in range(5):
        recorder.event(subject, TYPE_WARNING, "Failed", f"attempt {i}")
    recorder.event(other, TYPE_WARNING, "Failed", "attempt 0")
    await recorder.flush()
    events = (await client.list(EVENTS, namespace="default"))["items"]
    by_object = [e["involvedObject"]["name"] for e in events if e["source"]["component"] == "noisy"]
    assert sorted(by_object) == ["s", "s", "s", "t"]
    assert recorder.dropped == 2
    await recorder.stop()


async def test_a_full_queue_logs_once_per_burst(client: Client, caplog) -> None:
    """Dropping events because the queue is full is logged once when it starts and once
    with the count when the queue drains, not once per event (a ramp drops hundreds)."""
    from sampan.client.events import EVENT_QUEUE_SIZE

    recorder = EventRecorder(client, "burst", spam_burst=10**6)
    subjects = [
        {"kind": "ConfigMap", "apiVersion": "v1", "namespace": "default", "name": f"c{i}"}
        for i in range(EVENT_QUEUE_SIZE + 7)
    ]
    with caplog.at_level("WARNING", logger="sampan.client.events"):
        for subject in subjects:  # no await: the writer cannot take any yet
            recorder.event(subject, TYPE_NORMAL, "Burst", "one of many")
        await recorder.flush()
    assert recorder.dropped == 7
    lines = [r.getMessage() for r in caplog.records if r.name == "sampan.client.events"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("events: queue full; dropping events until it drains")
    assert lines[1] == "events: 7 events were dropped while the queue was full"
    await recorder.stop()
