"""``crd.conversion.WebhookConversion`` on its own: what is sent, how answers are checked and
which metadata survives (the poster is a function standing in for the HTTPS call)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sampan.apiserver.crd.conversion import ConversionFailed, WebhookConversion

WEBHOOK = {"clientConfig": {"url": "https://c.example/"}, "conversionReviewVersions": ["v1"]}


def obj(name: str = "a", api_version: str = "example.com/v1") -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": "Thing",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "labels": {"keep": "me"},
        },
        "spec": {"x": 1},
    }


def answering(change=None, **response: Any):
    sent: list[dict[str, Any]] = []

    async def post(client: dict[str, Any], review: dict[str, Any], timeout_s: int) -> Any:
        sent.append(review)
        request = review["request"]
        converted = []
        for o in request["objects"]:
            c = copy.deepcopy(o)
            c["apiVersion"] = request["desiredAPIVersion"]
            if change is not None:
                change(c)
            converted.append(c)
        body = {
            "uid": request["uid"],
            "result": {"status": "Success"},
            "convertedObjects": converted,
        }
        body.update(response)
        return {"apiVersion": review["apiVersion"], "kind": "ConversionReview", "response": body}

    return post, sent


async def test_only_objects_in_another_version_are_sent():
    post, sent = answering()
    conversion = WebhookConversion(post)
    mixed = [obj("a"), obj("b", "example.com/v2")]
    out = await conversion.convert(mixed, "example.com/v2", WEBHOOK)
    assert [o["apiVersion"] for o in out] == ["example.com/v2", "example.com/v2"]
    assert [o["metadata"]["name"] for o in sent[0]["request"]["objects"]] == ["a"]
    assert mixed[0]["apiVersion"] == "example.com/v1"  # inputs untouched
    assert await conversion.convert([obj("c", "example.com/v2")], "example.com/v2", WEBHOOK)
    assert len(sent) == 1


async def test_metadata_other_than_labels_and_annotations_is_restored():
    def change(o: dict[str, Any]) -> None:
        o["metadata"]["resourceVersion"] = "999"
        o["metadata"]["labels"] = {"new": "label"}
        o["metadata"]["annotations"] = {"a": "b"}

    post, _ = answering(change)
    (out,) = await WebhookConversion(post).convert([obj()], "example.com/v2", WEBHOOK)
    assert out["metadata"]["resourceVersion"] == "7"
    assert out["metadata"]["labels"] == {"new": "label"}
    assert out["metadata"]["annotations"] == {"a": "b"}


@pytest.mark.parametrize(
    ("change", "response", "message"),
    [
        (
            None,
            {"uid": "other"},
            'conversion webhook for example.com/v1, Kind=Thing failed: expected response.uid="',
        ),
        (
            None,
            {"convertedObjects": []},
            "conversion webhook for example.com/v1, Kind=Thing returned 0 objects, expected 1",
        ),
        (
            None,
            {"result": {"status": "Failure"}},
            "conversion webhook for example.com/v1, Kind=Thing failed: response.result.status "
            "was 'Failure', not 'Success'",
        ),
        (
            lambda o: o["metadata"].update(name="renamed"),
            {},
            "conversion webhook for example.com/v1, Kind=Thing returned invalid converted object "
            "at index 0: must have the same name: a != renamed",
        ),
        (
            lambda o: o.update(apiVersion="example.com/v3"),
            {},
            "conversion webhook for example.com/v1, Kind=Thing returned invalid converted object "
            "at index 0: invalid groupVersion (expected example.com/v2, received example.com/v3)",
        ),
        (
            lambda o: o["metadata"].update(labels={"n": 1}),
            {},
            "conversion webhook for example.com/v1, Kind=Thing returned invalid metadata in "
            "object at index 0: metadata.labels[n] must be a string, but is int in converted "
            "object",
        ),
    ],
)
async def test_bad_answers(change, response, message):
    post, _ = answering(change, **response)
    with pytest.raises(ConversionFailed) as caught:
        await WebhookConversion(post).convert([obj()], "example.com/v2", WEBHOOK)
    assert caught.value.message.startswith(message), caught.value.message
    assert caught.value.code == 500


async def test_call_errors_and_review_versions():
    async def refused(client: dict[str, Any], review: dict[str, Any], timeout_s: int) -> Any:
        raise OSError('Post "https://c.example/?timeout=30s": connection refused')

    with pytest.raises(ConversionFailed) as caught:
        await WebhookConversion(refused).convert([obj()], "example.com/v2", WEBHOOK)
    assert caught.value.message == (
        "conversion webhook for example.com/v1, Kind=Thing failed: "
        'Post "https://c.example/?timeout=30s": connection refused'
    )
    post, sent = answering()
    webhook = {**WEBHOOK, "conversionReviewVersions": ["v9", "v1beta1"]}
    await WebhookConversion(post).convert([obj()], "example.com/v2", webhook)
    assert sent[0]["apiVersion"] == "apiextensions.k8s.io/v1beta1"
    with pytest.raises(ConversionFailed) as caught:
        await WebhookConversion(post).convert(
            [obj()], "example.com/v2", {**WEBHOOK, "conversionReviewVersions": ["v9"]}
        )
    assert caught.value.message.endswith("failed: no supported conversion review versions")
