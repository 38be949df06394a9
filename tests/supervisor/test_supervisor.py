"""The supervisor's contract: ordered start behind readiness, reverse stop, failure -> stop."""

from __future__ import annotations

import asyncio

from sampan.supervisor.supervisor import ComponentContext, Supervisor


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []


class Fake:
    def __init__(self, name: str, rec: Recorder, *, fail_start: bool = False) -> None:
        self.name = name
        self.rec = rec
        self.fail_start = fail_start
        self.ctx: ComponentContext | None = None
        self.ready = asyncio.Event()

    async def start(self, ctx: ComponentContext) -> None:
        self.rec.events.append(f"start {self.name}")
        self.ctx = ctx
        await asyncio.sleep(0)
        if self.fail_start:
            raise RuntimeError("boom")
        self.rec.events.append(f"ready {self.name}")
        self.ready.set()

    async def stop(self) -> None:
        self.rec.events.append(f"stop {self.name}")


async def test_start_in_order_stop_in_reverse() -> None:
    rec = Recorder()
    comps = [Fake("a", rec), Fake("b", rec), Fake("c", rec)]
    sup = Supervisor(comps, on_ready=lambda: rec.events.append("all ready"))
    task = asyncio.create_task(sup.run(install_signals=False))
    await comps[-1].ready.wait()
    sup.request_stop("test over")
    assert await task == 0
    assert rec.events == [
        "start a",
        "ready a",
        "start b",
        "ready b",
        "start c",
        "ready c",
        "all ready",
        "stop c",
        "stop b",
        "stop a",
    ]


async def test_failed_start_stops_what_started_and_exits_1() -> None:
    rec = Recorder()
    comps = [Fake("a", rec), Fake("b", rec, fail_start=True), Fake("c", rec)]
    sup = Supervisor(comps, on_ready=lambda: rec.events.append("all ready"))
    assert await sup.run(install_signals=False) == 1
    assert "start c" not in rec.events and "all ready" not in rec.events
    assert rec.events[-2:] == ["stop b", "stop a"]


async def test_component_failure_later_stops_everything() -> None:
    rec = Recorder()
    a, b = Fake("a", rec), Fake("b", rec)
    sup = Supervisor([a, b])
    task = asyncio.create_task(sup.run(install_signals=False))
    await b.ready.wait()
    assert a.ctx is not None
    a.ctx.fail("lost the database")
    assert await task == 1
    assert rec.events[-2:] == ["stop b", "stop a"]


async def test_stop_that_hangs_does_not_block_the_others(monkeypatch) -> None:
    import sampan.supervisor.supervisor as mod

    monkeypatch.setattr(mod, "STOP_TIMEOUT_S", 0.2)
    rec = Recorder()

    class Hangs(Fake):
        async def stop(self) -> None:
            rec.events.append("stop hang")
            await asyncio.Event().wait()

    hangs = Hangs("h", rec)
    sup = Supervisor([Fake("a", rec), hangs])
    task = asyncio.create_task(sup.run(install_signals=False))
    await hangs.ready.wait()
    sup.request_stop("done")
    assert await task == 0
    assert rec.events[-2:] == ["stop hang", "stop a"]
