"""Kubernetes kinds as data: pure functions and tables, no I/O, no asyncio.

Modules (import the one you need; this package imports none of them eagerly):

* ``resources``   the registry of served kinds: discovery data, scopes, storage paths
* ``names``       name, label-key/value and annotation syntax with upstream messages
* ``labels``      label selectors (parse, match, canonical form, metav1.LabelSelector)
* ``fields``      field selectors and the selectable fields of each kind
* ``defaults``    the defaults kube-apiserver fills on decode
* ``validation``  per-kind validation returning ``Cause`` lists worded as upstream
* ``strategy``    create/update/status preparation and validation entry points, scale helpers
* ``conversion``  conversion between versions sharing storage (events, HPAs)
* ``fielderrors`` field-error causes (``Required value``, ``Invalid value: ...``)
* ``strictfields`` strict typed reads of JSON fields (security checks: API side and kubelet)
* ``quantity``    resource quantities as Decimals
* ``cron``        CronJob schedules
* ``printing``    table columns for ``kubectl get`` (owned by the printing helper)
"""
