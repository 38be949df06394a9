"""The ``AddOn`` kind (``addons.sampan.io``): one object per manifest file, in kube-system.

Like K3s's ``k3s.cattle.io/v1 Addon``: ``spec.source`` is the manifest's path on the server and
``spec.checksum`` the sha256 of the file's bytes last applied in full. A manifest whose checksum
equals its AddOn's is not applied again (so a restart re-applies nothing that did not change).
"""

from __future__ import annotations

from typing import Any

from sampan.client import Resource

__all__ = ["ADDONS", "ADDON_NAMESPACE", "CRD_NAME", "addon_crd"]

ADDON_GROUP = "sampan.io"
ADDON_VERSION = "v1"
ADDON_NAMESPACE = "kube-system"
ADDONS = Resource(ADDON_GROUP, ADDON_VERSION, "addons", "AddOn", True)
CRD_NAME = f"{ADDONS.plural}.{ADDON_GROUP}"


def addon_crd() -> dict[str, Any]:
    """The CustomResourceDefinition body (applied by the AddOn manager at start)."""
    string = {"type": "string"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": ADDON_GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": ADDONS.plural,
                "singular": "addon",
                "kind": ADDONS.kind,
                "listKind": ADDONS.list_kind,
            },
            "versions": [
                {
                    "name": ADDON_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"source": string, "checksum": string},
                                },
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                    "additionalPrinterColumns": [
                        {"name": "Source", "type": "string", "jsonPath": ".spec.source"},
                        {"name": "Checksum", "type": "string", "jsonPath": ".spec.checksum"},
                    ],
                }
            ],
        },
    }
