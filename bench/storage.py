"""PersistentVolume binding benchmark: ``python -m bench.storage [--claims N]``.

One process: an API server over SQLite in a temporary dir, an admin client, and the
persistentvolume-binder run as the controller manager runs it (``ControllerContext`` +
informers, as ``system:sampan-controller``).

Measured, side by side in the same run:

* **baseline**: creating ``N`` PersistentVolumes and ``N`` claims (32 writes in flight) with no
  controller: the floor set by the API server;
* **bind backlog**: the binder starts with ``N`` Available volumes and ``N`` pending claims
  already stored: time until every claim is Bound, and the binder's CPU seconds (this
  process's CPU minus the idle API server's share is not separable here, so the figure is the
  whole process's);
* **bind live**: ``N`` more volumes and claims created while the binder runs: time from the
  first create until every claim is Bound.

Volumes have distinct sizes, so each claim's search for the smallest fitting volume scans the
pool (the upstream algorithm is linear in the number of volumes too).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

CONCURRENCY = 32
NAMESPACE = "default"
POLL_S = 0.25
TIMEOUT_S = 600.0


def _pv(prefix: str, index: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{prefix}-pv-{index}"},
        "spec": {
            "capacity": {"storage": f"{1024 + index}Mi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": f"/tmp/bench-{prefix}-{index}"},
            "storageClassName": "",
        },
    }


def _pvc(prefix: str, index: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{prefix}-claim-{index}"},
        "spec": {
            "storageClassName": "",
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


async def _create_all(client: Any, resource: Any, bodies: list[dict[str, Any]]) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(body: dict[str, Any]) -> None:
        async with sem:
            await client.create(
                resource, body, namespace=NAMESPACE if resource.namespaced else None
            )

    await asyncio.gather(*(one(b) for b in bodies))


async def _bound(client: Any, prefix: str) -> int:
    from sampan.client.api import PVCS

    items = (await client.list_all(PVCS, namespace=NAMESPACE))["items"]
    return sum(
        1
        for c in items
        if c["metadata"]["name"].startswith(prefix)
        and (c.get("status") or {}).get("phase") == "Bound"
    )


async def _wait_bound(client: Any, prefix: str, count: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while await _bound(client, prefix) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{prefix}: claims not bound within {TIMEOUT_S:g} s")
        await asyncio.sleep(POLL_S)


async def run(claims: int) -> dict[str, float]:
    from sampan.apiserver import APIServer, APIServerOptions
    from sampan.client import Client, ClientConfig, SharedInformerFactory
    from sampan.client.api import PVCS, PVS
    from sampan.controllers.base import ControllerContext, ControllerManagerOptions
    from sampan.controllers.persistentvolume import PersistentVolumeBinder
    from sampan.datastore import open_backend
    from sampan.pki import ensure_client_kubeconfig

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        data_dir = Path(tmp)
        backend = open_backend("", data_dir)
        await backend.start()
        server = APIServer(
            APIServerOptions(
                tls_dir=data_dir / "server" / "tls",
                hostname="localhost",
                node_ips=("127.0.0.1",),
                bind_address="127.0.0.1",
                port=0,
                kubeconfig_path=data_dir / "admin.kubeconfig",
            ),
            backend,
        )
        await server.start()
        ctrl_kubeconfig = data_dir / "controller.kubeconfig"
        await asyncio.to_thread(
            ensure_client_kubeconfig,
            server.pki,
            name="system-sampan-controller",
            common_name="system:sampan-controller",
            path=ctrl_kubeconfig,
            server_url=server.url,
        )
        client = Client(ClientConfig.from_kubeconfig(data_dir / "admin.kubeconfig"))
        ctrl_client = Client(ClientConfig.from_kubeconfig(ctrl_kubeconfig))
        factory = SharedInformerFactory(ctrl_client)
        ctx = ControllerContext(ctrl_client, factory, ControllerManagerOptions())
        task = None
        try:
            start = time.monotonic()
            await _create_all(client, PVS, [_pv("a", i) for i in range(claims)])
            await _create_all(client, PVCS, [_pvc("a", i) for i in range(claims)])
            results["baseline_s"] = time.monotonic() - start

            binder = PersistentVolumeBinder(ctx)
            cpu0 = time.process_time()
            start = time.monotonic()
            factory.start()
            task = asyncio.get_running_loop().create_task(binder.run(2))
            await _wait_bound(client, "a-", claims)
            results["backlog_s"] = time.monotonic() - start
            results["backlog_cpu_s"] = time.process_time() - cpu0

            start = time.monotonic()
            await _create_all(client, PVS, [_pv("b", i) for i in range(claims)])
            await _create_all(client, PVCS, [_pvc("b", i) for i in range(claims)])
            await _wait_bound(client, "b-", claims)
            results["live_s"] = time.monotonic() - start
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await factory.stop()
            await ctx.aclose()
            await ctrl_client.close()
            await client.close()
            await server.stop()
            await backend.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    r = asyncio.run(run(args.claims))
    n = args.claims
    print(f"PersistentVolume binding, {n} volumes + {n} claims per phase:")
    print(f"  baseline: create them, no controller   {r['baseline_s']:7.2f} s")
    print(
        f"  bind backlog (binder starts after)     {r['backlog_s']:7.2f} s"
        f"   {n / r['backlog_s']:6.0f} claims/s   process CPU {r['backlog_cpu_s']:.2f} s"
    )
    print(f"  create + bind live (binder running)    {r['live_s']:7.2f} s")


if __name__ == "__main__":
    main()
