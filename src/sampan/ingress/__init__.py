"""The ingress controller: nginx configured from Ingress objects (see ``controller``)."""

from sampan.ingress.controller import IngressController, IngressOptions
from sampan.ingress.render import Rendered, RenderOptions, render

__all__ = ["IngressController", "IngressOptions", "RenderOptions", "Rendered", "render"]
