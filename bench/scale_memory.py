"""``bench.scale`` plus where the server's memory goes: the same run (same flags), and right
after the server's RSS is read at the end, the server writes a breakdown by component
(``bench/memprobe/sitecustomize.py``: watch caches, their rings, each informer's cache, the
scheduler's cache, the garbage collector, unwalked objects, glibc's ``mallinfo2``) to
``--memory-out`` (JSON) and a short table is printed. The restart step is skipped (the
breakdown walk is the last thing measured). Run it at two sizes and subtract to get each
component's bytes per extra pod (bench/README.md, "Memory per pod")::

    python -m bench.scale_memory --nodes 200 --pods 2000 --memory-out m2k.json
    python -m bench.scale_memory --nodes 200 --pods 6000 --memory-out m6k.json

Nothing in ``src/`` changes: the probe is loaded through PYTHONPATH in the server's process
only (``MEMPROBE_OUT``, not a ``SAMPAN_`` variable, which bench.scale drops from the
children's environment), and listens for SIGUSR1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bench import scale

PROBE_DIR = Path(__file__).resolve().parent / "memprobe"
PROBE_TIMEOUT_S = 600.0


def _memory_out() -> Path:
    if "--memory-out" in sys.argv:
        i = sys.argv.index("--memory-out")
        path = Path(sys.argv[i + 1])
        del sys.argv[i : i + 2]
        return path.resolve()
    return Path("scale-memory.json").resolve()


def _print(result: dict[str, Any]) -> None:
    mib = 1024 * 1024
    print("\nserver memory by component (MiB):")
    for key in ("watchcache.objects", "watchcache.keys", "watchcache.ring"):
        print(f"  {key:<58} {result[key]['bytes'] / mib:9.1f}")
    informers = sorted(result["informers"].items(), key=lambda kv: -kv[1]["bytes"])
    for name, row in informers[:8]:
        label = f"informer {name} ({row['items']} items)"
        print(f"  {label:<58} {row['bytes'] / mib:9.1f}")
    for key in (
        "sampan.scheduler.cache.SchedulerCache",
        "sampan.controllers.garbagecollector.GarbageCollector",
    ):
        print(f"  {key:<58} {result[key]['bytes'] / mib:9.1f}")
    print(f"  {'unwalked gc-tracked objects':<58} {result['unwalked_gc_objects_bytes'] / mib:9.1f}")


def main() -> None:
    out = _memory_out()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(PROBE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    os.environ["MEMPROBE_OUT"] = str(out)

    async def probe_instead_of_restart(self: scale.Bench, config: Any) -> None:
        assert self.procs.server is not None
        out.unlink(missing_ok=True)
        self.procs.server.send_signal(signal.SIGUSR1)
        for _ in range(int(PROBE_TIMEOUT_S / 0.5)):
            if out.exists():
                break
            await asyncio.sleep(0.5)

    scale.Bench.restart = probe_instead_of_restart  # type: ignore[method-assign]
    scale.main()
    if out.exists():
        _print(json.loads(out.read_text()))
        print(f"breakdown written to {out}")


if __name__ == "__main__":
    main()
