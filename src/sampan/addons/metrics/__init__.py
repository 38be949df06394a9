"""The metrics add-on: a metrics-server equivalent serving ``metrics.k8s.io/v1beta1``.

* ``sampan.addons.metrics.store``: scrape parsing, rates, the NodeMetrics/PodMetrics shapes;
* ``sampan.addons.metrics.server``: the ``MetricsServer`` component (scraper, HTTPS
  aggregated API server with request-header authentication, APIService registration).

K3s's ``--disable=metrics-server`` leaves it out.
"""

from sampan.addons.metrics.server import (
    APISERVICE_NAME,
    DEFAULT_METRICS_PORT,
    DEFAULT_SCRAPE_INTERVAL_S,
    MetricsServer,
    MetricsServerOptions,
    MetricsServerRemoval,
)

__all__ = [
    "APISERVICE_NAME",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_SCRAPE_INTERVAL_S",
    "MetricsServer",
    "MetricsServerOptions",
    "MetricsServerRemoval",
]
