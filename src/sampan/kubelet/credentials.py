"""Registry credentials from a pod's ``imagePullSecrets`` for CRI ``PullImage``.

Secrets of type ``kubernetes.io/dockerconfigjson`` (``.dockerconfigjson``: ``{"auths": {...}}``)
and ``kubernetes.io/dockercfg`` (``.dockercfg``: the map itself) are read; an entry applies
when its key names the image's registry host (with or without a scheme or path; Docker Hub's
historical names count as ``docker.io``). Pure functions; the caller tries each candidate in
turn and finally an anonymous pull, as the kubelet does. Nothing here logs: the values are
credentials.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from sampan.kubelet.runtime import pb

__all__ = ["image_registry", "pull_credentials"]

_DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io"}


def image_registry(image: str) -> str:
    """The registry host of an image reference (``docker.io`` when none is named)."""
    first, sep, _rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host = first
    else:
        host = "docker.io"
    return "docker.io" if host in _DOCKER_HUB else host


def _entry_host(key: str) -> str:
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in _DOCKER_HUB else host


def _entries(secret: Mapping[str, Any]) -> dict[str, Any]:
    data = secret.get("data") or {}
    try:
        if ".dockerconfigjson" in data:
            parsed = json.loads(base64.b64decode(data[".dockerconfigjson"]))
            return dict(parsed.get("auths") or {})
        if ".dockercfg" in data:
            return dict(json.loads(base64.b64decode(data[".dockercfg"])))
    except (ValueError, TypeError):
        return {}
    return {}


def pull_credentials(image: str, secrets: Iterable[Mapping[str, Any]]) -> list[pb.AuthConfig]:
    """Every credential in ``secrets`` that applies to ``image``'s registry, in order."""
    registry = image_registry(image)
    found: list[pb.AuthConfig] = []
    for secret in secrets:
        for key, entry in _entries(secret).items():
            if _entry_host(key) != registry or not isinstance(entry, dict):
                continue
            username = str(entry.get("username") or "")
            password = str(entry.get("password") or "")
            auth = str(entry.get("auth") or "")
            if auth and not username:
                try:
                    username, _, password = base64.b64decode(auth).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    continue
            found.append(
                pb.AuthConfig(
                    username=username,
                    password=password,
                    # Left empty as upstream's kubelet does: containerd drops credentials
                    # whose server address does not parse as a URL of the host it talks to
                    # (a bare "host:port" key fails, "index.docker.io" never matches).
                    server_address="",
                    identity_token=str(entry.get("identitytoken") or ""),
                )
            )
    return found
