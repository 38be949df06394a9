"""Auto-deployed manifests: ``<data-dir>/server/manifests/*.yaml`` applied and tracked as
``AddOn`` objects (``addons.sampan.io``), as K3s's deploy controller does.

* ``sampan.addons.manifests``: which files count, checksums, parsing (pure functions);
* ``sampan.addons.crd``: the AddOn kind;
* ``sampan.addons.manager``: the ``AddonManager`` component (``name = "addons"``), which also
  writes the packaged components (``sampan/addons/packaged/*.yaml``, package data) and removes
  disabled ones.

Construct: ``AddonManager(ClientConfig.from_kubeconfig(path), AddonOptions(manifests_dir,
disabled))``; it talks to the API server only through the client, with cluster-admin rights.
"""

from sampan.addons.crd import ADDON_NAMESPACE, ADDONS, CRD_NAME
from sampan.addons.manager import (
    FIELD_MANAGER,
    PACKAGED_NAMES,
    AddonManager,
    AddonOptions,
    packaged_manifests,
    render,
    template_vars,
)

__all__ = [
    "ADDONS",
    "ADDON_NAMESPACE",
    "CRD_NAME",
    "FIELD_MANAGER",
    "PACKAGED_NAMES",
    "AddonManager",
    "AddonOptions",
    "packaged_manifests",
    "render",
    "template_vars",
]
