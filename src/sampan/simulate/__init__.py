"""``sampan simulate``: fake nodes in KWOK's model, for trying Sampan at scale.

``Simulator`` (``sampan.simulate.simulator``) registers N Nodes that keep their Leases and
conditions fresh and "run" every pod bound to them (Running and Ready with an IP, deleted with
grace 0 once marked for deletion); no container is started. The shapes it writes live in
``sampan.simulate.objects``. It talks to the API server only through ``sampan.client`` with
the credentials it is given (the admin kubeconfig), like any other client; benchmarks
(``bench.scale``) drive it from Python.
"""

from sampan.simulate.simulator import Simulator, SimulatorOptions, parse_duration

__all__ = ["Simulator", "SimulatorOptions", "parse_duration"]
