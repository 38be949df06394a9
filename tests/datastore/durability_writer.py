"""Child process for the durability test: writes to a SQLite store until killed.

Usage: ``python -m tests.datastore.durability_writer <db path> <concurrent writers>``. Prints
``<revision> <key>`` (flushed) for every create() that has returned, i.e. that the store said
was committed.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys

from sampan.datastore.sqlite import SQLiteBackend


async def main(path: pathlib.Path, writers: int) -> None:
    backend = SQLiteBackend(path, auto_compact=False)
    await backend.start()

    async def writer(n: int) -> None:
        i = 0
        while True:
            key = f"/registry/durable/w{n}-{i}"
            revision = await backend.create(key, f"value {i}".encode() * 10)
            sys.stdout.write(f"{revision} {key}\n")
            sys.stdout.flush()
            i += 1

    await asyncio.gather(*(writer(n) for n in range(writers)))


if __name__ == "__main__":
    asyncio.run(main(pathlib.Path(sys.argv[1]), int(sys.argv[2])))
