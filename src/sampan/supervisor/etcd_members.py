"""The etcd member controller of an embedded-etcd server: ``kubectl delete node NAME`` of a
server node removes that server's etcd member (K3s's etcd member controller).

Every server with embedded etcd runs one (``EtcdMemberController``, a client component):

* it marks its own Node, when there is one, with the annotation ``etcd.sampan.io/member-name``
  = its etcd member name (chosen at the first start, ``<hostname>-<8 hex>``), as K3s annotates
  its nodes with ``etcd.k3s.cattle.io/node-name``;
* it watches Nodes; for every deletion it removes the etcd member whose name is the deleted
  Node's annotation, or the Node's name itself. Several servers may race to remove the same
  member: a member already gone is not an error.

Invariants: never the member of the server doing the removal (a server does not remove
itself: another server does, or nobody) and never the last member; a Node of an agent (no
annotation, no member of that name) changes nothing. While the API or etcd is unreachable it
retries; deletions that happened while its watch was down are not replayed (the member stays
until removed with ``etcdctl member remove``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["MEMBER_ANNOTATION", "EtcdMemberController", "member_to_remove"]

log = logging.getLogger("sampan.supervisor.etcd_members")

MEMBER_ANNOTATION = "etcd.sampan.io/member-name"
RETRY_S = 5.0
WATCH_TIMEOUT_S = 300
REMOVE_ATTEMPTS = 24


def member_to_remove(node: dict[str, Any], members: list[Any], own_id: int) -> Any | None:
    """The member a deleted ``node`` stood for, or None (unknown, our own, or the last)."""
    meta = node.get("metadata") or {}
    wanted = {(meta.get("annotations") or {}).get(MEMBER_ANNOTATION), meta.get("name")} - {None}
    for member in members:
        if member.name and member.name in wanted:
            if member.id == own_id or len(members) <= 1:
                return None
            return member
    return None


class EtcdMemberController:
    """See the module docstring."""

    name = "etcd-member-controller"

    def __init__(self, client_config: Any, etcd: Any, node_name: str) -> None:
        self._client_config = client_config
        self._etcd = etcd
        self._node = node_name
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, ctx: Any) -> None:
        from sampan.client import Client

        del ctx
        self._client = Client(self._client_config)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def _member_name(self) -> str:
        def read() -> str:
            return str((self._etcd.data_dir / "name").read_text()).strip()

        return await asyncio.to_thread(read)

    async def _mark_own(self, node: dict[str, Any], member_name: str) -> None:
        from sampan.client.api import NODES

        annotations = (node.get("metadata") or {}).get("annotations") or {}
        if annotations.get(MEMBER_ANNOTATION) == member_name:
            return
        patch = {"metadata": {"annotations": {MEMBER_ANNOTATION: member_name}}}
        await self._client.patch(NODES, self._node, patch)
        log.info("node %s annotated with its etcd member %s", self._node, member_name)

    async def _deleted(self, node: dict[str, Any]) -> None:
        """Remove the deleted node's member; etcd refuses a removal right after a membership
        change (``unhealthy cluster`` until every member was connected for a few seconds):
        that is retried for up to ``REMOVE_ATTEMPTS * RETRY_S``."""
        from sampan.datastore.etcd import EtcdMembers
        from sampan.datastore.types import StoreError

        name = (node.get("metadata") or {}).get("name")
        for attempt in range(REMOVE_ATTEMPTS):
            try:
                async with EtcdMembers(self._etcd.endpoint, self._etcd.tls) as members:
                    own = await members.status()
                    member = member_to_remove(node, await members.list(), own)
                    if member is None:
                        return
                    await members.remove(member.id)
            except StoreError as exc:
                if "member not found" in str(exc):
                    return  # another server removed it first
                if "unhealthy cluster" in str(exc) and attempt + 1 < REMOVE_ATTEMPTS:
                    await asyncio.sleep(RETRY_S)
                    continue
                log.warning("could not remove the etcd member of deleted node %s: %s", name, exc)
                return
            log.info(
                "node %s deleted: removed its etcd member %s (%x)", name, member.name, member.id
            )
            return

    async def _run(self) -> None:
        from sampan.client import ClientError
        from sampan.client.api import NODES

        while True:
            try:
                member_name = await self._member_name()
                listed = await self._client.list(NODES)
                for node in listed.get("items") or []:
                    if (node.get("metadata") or {}).get("name") == self._node:
                        await self._mark_own(node, member_name)
                rv = (listed.get("metadata") or {}).get("resourceVersion")
                async with self._client.watch(
                    NODES, resource_version=rv, timeout_s=WATCH_TIMEOUT_S
                ) as stream:
                    async for event_type, obj in stream:
                        if event_type == "DELETED":
                            await self._deleted(obj)
                        elif event_type in ("ADDED", "MODIFIED") and (
                            (obj.get("metadata") or {}).get("name") == self._node
                        ):
                            await self._mark_own(obj, member_name)
            except (ClientError, OSError) as exc:
                log.warning("etcd member controller: %s; retrying", str(exc).splitlines()[0])
                await asyncio.sleep(RETRY_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._client is not None:
            await self._client.close()
            self._client = None
