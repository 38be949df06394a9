"""``wait_sync``: how tests wait for a sync loop (proxy, network policy, ingress) to have
acted on what they just changed, instead of sleeping."""

from __future__ import annotations

from sampan.client.syncloop import SyncLoop
from tests.support.poll import eventually

__all__ = ["wait_sync"]


async def wait_sync(loop: SyncLoop, timeout_s: float) -> int:
    """Ask ``loop`` for a sync and wait until one that started after the request has finished
    (failed or not); returns the number of finished syncs. A sync already running when this
    is called does not count: it may have read the caches before the caller's change."""
    target = loop.syncs_started + 1
    loop.request_sync()
    return await eventually(
        lambda: loop.sync_count if loop.sync_count >= target else 0,
        timeout_s,
        what=f"a {loop.log_name} sync started after the request",
    )
