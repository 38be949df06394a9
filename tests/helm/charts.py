"""Charts written by the tests, packaged as Helm packages them, and a chart repository.

``demo_chart_files()`` is the acceptance chart: a Deployment, a Service, a ConfigMap from
values, ``NOTES.txt``, a helper template (``_helpers.tpl``), a values schema and a dependency
subchart ``sub`` (its own ConfigMap). ``many_templates_chart_files(n)`` has ``n`` ConfigMap
templates. ``package(files)`` makes the ``.tgz``; ``ChartRepo`` serves ``index.yaml`` and the
archives over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ssl
import tarfile
from collections.abc import Mapping
from typing import Any

import yaml
from aiohttp import web

__all__ = ["ChartRepo", "demo_chart_files", "many_templates_chart_files", "package"]

DEMO_VALUES = """\
greeting: hello
replicaCount: 1
image: registry.invalid/demo:1.0
service:
  port: 80
sub:
  color: blue
"""

HELPERS = """\
{{- define "demo.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "demo.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
"""

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "demo.fullname" . }}
  labels:
    {{- include "demo.labels" . | nindent 4 }}
data:
  greeting: {{ .Values.greeting | quote }}
  revision: {{ .Release.Revision | quote }}
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "demo.fullname" . }}
  labels:
    {{- include "demo.labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/instance: {{ .Release.Name }}
    spec:
      containers:
        - name: demo
          image: {{ .Values.image }}
          envFrom:
            - configMapRef:
                name: {{ include "demo.fullname" . }}
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: {{ include "demo.fullname" . }}
  labels:
    {{- include "demo.labels" . | nindent 4 }}
spec:
  selector:
    app.kubernetes.io/instance: {{ .Release.Name }}
  ports:
    - port: {{ .Values.service.port }}
      targetPort: 8080
"""

NOTES = """\
{{ include "demo.fullname" . }} says {{ .Values.greeting }}.
"""

SCHEMA = """\
{
  "$schema": "https://json-schema.org/draft-07/schema#",
  "type": "object",
  "properties": {
    "greeting": {"type": "string"},
    "replicaCount": {"type": "integer", "minimum": 0}
  }
}
"""


def demo_chart_files(version: str = "0.1.0") -> dict[str, str]:
    chart = {
        "apiVersion": "v2",
        "name": "demo",
        "version": version,
        "appVersion": "1.0",
        "dependencies": [{"name": "sub", "version": "0.2.0"}],
    }
    return {
        "demo/Chart.yaml": yaml.safe_dump(chart, sort_keys=False),
        "demo/values.yaml": DEMO_VALUES,
        "demo/values.schema.json": SCHEMA,
        "demo/templates/_helpers.tpl": HELPERS,
        "demo/templates/configmap.yaml": CONFIGMAP,
        "demo/templates/deployment.yaml": DEPLOYMENT,
        "demo/templates/service.yaml": SERVICE,
        "demo/templates/NOTES.txt": NOTES,
        "demo/charts/sub/Chart.yaml": "apiVersion: v2\nname: sub\nversion: 0.2.0\n",
        "demo/charts/sub/values.yaml": "color: red\n",
        "demo/charts/sub/templates/configmap.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-sub\n"
            "data:\n  color: {{ .Values.color | quote }}\n"
        ),
    }


def many_templates_chart_files(count: int, version: str = "1.0.0") -> dict[str, str]:
    files = {
        "many/Chart.yaml": f"apiVersion: v2\nname: many\nversion: {version}\n",
        "many/values.yaml": "value: one\n",
    }
    for index in range(count):
        files[f"many/templates/cm{index:03d}.yaml"] = (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            f"  name: {{{{ .Release.Name }}}}-{index:03d}\n"
            "data:\n  value: {{ .Values.value | quote }}\n"
        )
    return files


def package(files: Mapping[str, str]) -> bytes:
    """A chart archive as ``helm package`` lays it out (``<name>/...`` inside a .tgz)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(files):
            data = files[path].encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class ChartRepo:
    """A chart repository: ``/index.yaml`` and ``/charts/<name>-<version>.tgz``; over TLS
    with ``ssl_context``, and asking for basic auth with ``credentials`` (user, password)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.archives: dict[str, tuple[str, str, bytes]] = {}  # file -> (name, version, data)
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.ssl_context = ssl_context
        self.credentials = credentials
        self.refused = 0

    def add(self, files: Mapping[str, str]) -> bytes:
        chart = yaml.safe_load(
            next(v for k, v in files.items() if k.count("/") == 1 and k.endswith("/Chart.yaml"))
        )
        data = package(files)
        self.archives[f"{chart['name']}-{chart['version']}.tgz"] = (
            chart["name"],
            str(chart["version"]),
            data,
        )
        return data

    def index(self) -> str:
        entries: dict[str, list[dict[str, Any]]] = {}
        for file, (name, version, data) in self.archives.items():
            entries.setdefault(name, []).append(
                {
                    "apiVersion": "v2",
                    "name": name,
                    "version": version,
                    "digest": hashlib.sha256(data).hexdigest(),
                    "urls": [f"charts/{file}"],
                }
            )
        return yaml.safe_dump({"apiVersion": "v1", "entries": entries})

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/index.yaml", self._index)
        app.router.add_get("/charts/{file}", self._archive)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        port = self.runner.addresses[0][1]
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.credentials is not None:
            want = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if request.headers.get("Authorization") != want:
                self.refused += 1
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="charts"'})
        return await handler(request)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=self.index(), content_type="application/x-yaml")

    async def _archive(self, request: web.Request) -> web.Response:
        entry = self.archives.get(request.match_info["file"])
        if entry is None:
            raise web.HTTPNotFound()
        return web.Response(body=entry[2], content_type="application/gzip")
