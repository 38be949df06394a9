"""Process wiring for ``sampan server`` and ``sampan agent``: logging, signals, components."""

from sampan.supervisor.main import run

__all__ = ["run"]
