"""Log set-up: one line per event, ``time level component: message``, to stderr."""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["setup_logging"]


class _Formatter(logging.Formatter):
    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        name = record.name.removeprefix("sampan.")
        record.component = name
        return super().format(record)


def setup_logging(*, debug: bool, verbosity: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _Formatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)-5s %(component)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = logging.DEBUG if debug or verbosity >= 4 else logging.INFO
    root.setLevel(logging.WARNING)
    logging.getLogger("sampan").setLevel(level)
    # aiohttp's access log is noisy; show it only at high verbosity as kube-apiserver does.
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if verbosity >= 6 else logging.WARNING
    )
