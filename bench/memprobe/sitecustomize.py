"""Memory probe for ``bench.scale_memory`` (loaded by ``sampan server`` only when this directory
is put first on PYTHONPATH by that benchmark; nothing in ``src/`` knows of it).

On SIGUSR1 the server writes ``$MEMPROBE_OUT`` (JSON): the deep size (``sys.getsizeof``
over ``gc.get_referents``) of each component, walked in this order so an object shared by two
components counts once, for the first: the watch caches' current entries, their key lists,
their rings (what the ring holds beyond the current entries), every informer's cache (by
informer name), the scheduler's cache, the garbage collector; then object counts by type, the
shallow size of the gc-tracked objects no walk reached, VmRSS and glibc's ``mallinfo2``. The
walk stops at modules, classes, functions, frames, tasks, futures and event loops, and does
not descend into asyncio, aiohttp, ssl, socket or logging objects. The walk itself allocates
(a set of every object id), so RSS after a dump is not the figure to use: the benchmark
reads RSS before signalling.
"""

from __future__ import annotations

import os
import sys

if len(sys.argv) > 1 and "server" in sys.argv[1:3]:
    import signal

    def _dump(*_: object) -> None:
        out = os.environ.get("MEMPROBE_OUT", "memprobe.json")
        try:
            result = _measure()
        except BaseException as e:  # the probe must not kill the server
            result = {"error": repr(e)}
        import json

        with open(out + ".tmp", "w") as f:
            json.dump(result, f, indent=1, default=str)
        os.replace(out + ".tmp", out)

    def _measure() -> dict[str, object]:
        import asyncio
        import collections
        import ctypes
        import gc
        import time
        from types import CodeType, FrameType, FunctionType, MethodType, ModuleType

        start = time.monotonic()
        gc.collect()
        objs = gc.get_objects()
        stop = (ModuleType, type, FunctionType, MethodType, CodeType, FrameType, asyncio.Task,
                asyncio.Future, asyncio.AbstractEventLoop)  # fmt: skip
        skip_modules = ("asyncio", "aiohttp", "ssl", "socket", "logging")
        leaves = (str, bytes, int, float, bool, type(None))
        seen: set[int] = set()

        def deep(root: object) -> tuple[int, int]:
            total = count = 0
            stack = [root]
            while stack:
                o = stack.pop()
                if id(o) in seen or isinstance(o, stop):
                    continue
                seen.add(id(o))
                total += sys.getsizeof(o)
                count += 1
                if isinstance(o, leaves) or type(o).__module__.startswith(skip_modules):
                    continue
                stack.extend(gc.get_referents(o))
            return total, count

        by_class: dict[str, list[object]] = collections.defaultdict(list)
        for o in objs:
            t = type(o)
            by_class[f"{getattr(t, '__module__', '')}.{getattr(t, '__qualname__', t)}"].append(o)
        result: dict[str, object] = {}

        def component(name: str, roots: list[object]) -> None:
            size = count = 0
            for root in roots:
                s, c = deep(root)
                size, count = size + s, count + c
            result[name] = {"bytes": size, "objects": count}

        caches = by_class.get("sampan.apiserver.storage.cache.WatchCache", [])
        component("watchcache.objects", [getattr(c, "objects", None) for c in caches])
        component("watchcache.keys", [getattr(c, "keys", None) for c in caches])
        component("watchcache.ring", [getattr(c, "ring", None) for c in caches])
        result["watchcache.per_prefix"] = {
            c.prefix: {  # type: ignore[attr-defined]
                "objects": len(c.objects),  # type: ignore[attr-defined]
                "ring": len(c.ring),  # type: ignore[attr-defined]
                "data_bytes": sum(len(e.data) for e in c.objects.values()),  # type: ignore[attr-defined]
            }
            for c in caches
        }
        informers: dict[str, dict[str, int]] = {}
        for informer in by_class.get("sampan.client.informer.Informer", []):
            size, count = deep(informer.cache)  # type: ignore[attr-defined]
            row = informers.setdefault(informer.name, {"bytes": 0, "objects": 0, "items": 0})  # type: ignore[attr-defined]
            row["bytes"] += size
            row["objects"] += count
            row["items"] += len(informer.cache)  # type: ignore[attr-defined]
        result["informers"] = informers
        for name in (
            "sampan.scheduler.cache.SchedulerCache",
            "sampan.controllers.garbagecollector.GarbageCollector",
        ):
            component(name, by_class.get(name, []))
        counts = collections.Counter({k: len(v) for k, v in by_class.items()})
        result["gc_top_types"] = counts.most_common(30)
        result["unwalked_gc_objects_bytes"] = sum(
            sys.getsizeof(o) for o in objs if id(o) not in seen
        )
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "RssAnon", "VmHWM")):
                    key, _, value = line.partition(":")
                    result[key] = value.strip()
        try:
            fields = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"

            class MallInfo2(ctypes.Structure):
                _fields_ = [(f, ctypes.c_size_t) for f in fields.split()]

            libc = ctypes.CDLL("libc.so.6")
            libc.mallinfo2.restype = MallInfo2
            info = libc.mallinfo2()
            result["mallinfo2"] = {f: getattr(info, f) for f in fields.split()}
        except (OSError, AttributeError):
            pass
        result["probe_s"] = time.monotonic() - start
        return result

    signal.signal(signal.SIGUSR1, _dump)
