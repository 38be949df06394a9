"""AdmissionChain: order, hooks on refusal and success, warning headers; admitted_update
re-admits when another writer gets in between."""

from __future__ import annotations

import copy

import pytest

from sampan.api.errors import Forbidden
from sampan.apiserver.admission import (
    AdmissionAttributes,
    AdmissionChain,
    admitted_update,
    forbidden,
    warning_header,
)


def attrs(operation: str = "CREATE", obj: dict | None = None) -> AdmissionAttributes:
    return AdmissionAttributes(
        operation=operation,
        group="",
        version="v1",
        resource="configmaps",
        subresource="",
        namespace="default",
        name="cm",
        namespaced=True,
        obj=obj,
    )


class Recorder:
    def __init__(self, name: str, mutating: bool, log: list[str], refuse: bool = False) -> None:
        self.name = name
        self.mutating = mutating
        self.log = log
        self.refuse = refuse

    async def admit(self, a: AdmissionAttributes) -> None:
        self.log.append(self.name)

        async def undo() -> None:
            self.log.append(f"undo {self.name}")

        async def done() -> None:
            self.log.append(f"done {self.name}")

        a.on_failure(undo)
        a.on_success(done)
        if self.refuse:
            raise forbidden(a, "no")


async def test_order_and_failure_hooks():
    log: list[str] = []
    chain = AdmissionChain(
        [
            Recorder("validate", False, log, refuse=True),
            Recorder("mutate", True, log),
        ]
    )
    a = attrs()
    with pytest.raises(Forbidden, match='configmaps "cm" is forbidden: no'):
        await chain.admit(a)
    assert log == ["mutate", "validate", "undo mutate", "undo validate"]
    await chain.finish(a, ok=True)  # already finished: nothing runs twice
    assert log[-1] == "undo validate"


async def test_success_hooks_and_warnings():
    log: list[str] = []
    chain = AdmissionChain([Recorder("m", True, log)])
    a = attrs()
    await chain.admit(a)
    await chain.finish(a, ok=True)
    assert log == ["m", "done m"]
    a.warn('say "hi"')
    a.warn('say "hi"')
    assert a.warnings == ['say "hi"']
    assert warning_header('say "hi"') == '299 - "say \\"hi\\""'


class RacyStore:
    """A one-object store whose first compare-and-swap loses to another writer."""

    def __init__(self) -> None:
        self.obj = {"metadata": {"name": "cm", "resourceVersion": "1"}, "data": {"n": "0"}}
        self.raced = False

    async def get(self, namespace, name):
        return copy.deepcopy(self.obj)

    async def guaranteed_update(
        self,
        namespace,
        name,
        mutate,
        *,
        subresource="",
        dry_run=False,
        mutate_reads_only=False,
        known=None,
    ):
        if not self.raced:
            self.raced = True
            self.obj["metadata"]["resourceVersion"] = "2"
            self.obj["data"]["other"] = "x"
        new = mutate(copy.deepcopy(self.obj))
        new["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
        self.obj = new
        return new


async def test_admitted_update_readmits_after_a_race():
    seen: list[dict] = []

    class Watcher:
        name = "watch"
        mutating = True

        async def admit(self, a: AdmissionAttributes) -> None:
            seen.append(dict(a.old_obj["data"]))

    store = RacyStore()

    def bump(current: dict) -> dict:
        current["data"]["n"] = "1"
        current["metadata"].pop("resourceVersion", None)
        return current

    updated = await admitted_update(AdmissionChain([Watcher()]), store, attrs("UPDATE"), bump)
    assert updated["data"] == {"n": "1", "other": "x"}
    assert seen == [{"n": "0"}, {"n": "0", "other": "x"}]
