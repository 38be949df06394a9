"""Controllers: desired state -> current state, run by one leader-elected manager.

Modules:

* ``base``: the contract — ``ControllerManagerOptions``, ``ControllerContext``, ``Controller``.
* ``registry``: ``CONTROLLERS``, every controller class by upstream name.
* ``manager``: ``ControllerManager`` (the supervisor component "controllers"): leader election
  on Lease ``kube-system/kube-controller-manager``; per term a context, informers and one
  named task per enabled controller.
* one module per controller (namespace, serviceaccount, garbagecollector, endpoints,
  endpointslice, nodeipam, nodelifecycle, podgc, deployment, replicaset, ...).

Every controller follows the pattern in ``sampan.client``: informer handlers only enqueue keys;
reconcile is level-triggered and idempotent; never mutate cached objects.
"""

from sampan.controllers.base import Controller, ControllerContext, ControllerManagerOptions

__all__ = ["Controller", "ControllerContext", "ControllerManagerOptions"]
