"""Sampan's web UI (issue 25): a dashboard for one cluster, or for every cluster of the manager.

One code base, two places it is served: by the manager's HTTPS app under ``/dashboard/``
(``--manager``; login with the manager's users, every cluster reached through the manager's
proxy ``/k8s/clusters/<id>`` with the user's own manager token, so downstream RBAC applies),
or on its own HTTPS port as a single-cluster dashboard (``--dashboard``; login with a service
account token, as the Kubernetes Dashboard does). Either way a session holds, server side, "a
cluster API base URL and a bearer token" per cluster (``sampan.ui.kube.Target``); the browser
only ever holds an opaque session id.

Server-side Jinja2 templates (autoescaped) with htmx for partial updates and xterm.js for the
exec shell; every asset ships in the package (``static/vendor`` is filled by
``scripts/vendor-ui.py``), nothing loads from a CDN.
"""
