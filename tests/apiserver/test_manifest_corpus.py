"""Real published install manifests of well-known add-ons, applied with the real kubectl 1.32.

The manifests under ``corpus/`` are copied verbatim from their upstream repositories (see
``corpus/README.md`` for source, commit and licence of each file). For every project, against a
fresh in-process API server:

1. ``kubectl apply -f`` (client-side) of every file. Files whose last-applied annotation would
   exceed the 262144-byte annotation limit (KEDA's ScaledJob CRD, which is why KEDA's install
   docs say ``--server-side``) must be refused client-side exactly as kube-apiserver refuses
   them, and are then applied with ``--server-side``.
2. ``kubectl apply --server-side --force-conflicts`` of everything again: no error (the
   documented client-side to server-side migration, as Flux and Argo CD do).
3. ``kubectl wait --for condition=established crd --all``.
4. Webhook configurations in the manifests (Gatekeeper's) point at Services whose pods never
   run here; as on a real cluster without the controller they could block creates, so they are
   accepted in step 1-2 and then DELETED before any custom object is created.
5. At least two valid custom objects per project (written from each project's documentation
   examples) are created; one invalid object per project is refused with kube-apiserver's
   message; ``kubectl get`` prints the CRD's additionalPrinterColumns as headers; ``kubectl
   explain`` resolves a nested field.

kube-state-metrics and the Dashboard ship no CRDs: their built-in objects (RBAC, Deployments,
Services, Secrets, ConfigMaps) are applied the same way, and the invalid case is one of their
own objects with a field made invalid.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
CORPUS = Path(__file__).parent / "corpus"
ANNOTATION_LIMIT_MESSAGE = "metadata.annotations: Too long: may not be more than 262144 bytes"

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")


@dataclass(frozen=True)
class Invalid:
    """An object kube-apiserver refuses, and the messages its answer carries."""

    manifest: str
    messages: tuple[str, ...]


@dataclass(frozen=True)
class Project:
    name: str
    files: tuple[str, ...]
    server_side_only: tuple[str, ...] = ()
    valid: tuple[str, ...] = ()
    invalid: Invalid | None = None
    # (resource for kubectl get, namespace or "", expected header or None to derive from CRD)
    gets: tuple[tuple[str, str, tuple[str, ...] | None], ...] = ()
    explain: tuple[str, str, tuple[str, ...]] | None = None  # (path, api-version, must contain)
    built_in_invalid: object = None  # callable(list[docs]) -> Invalid
    # Structural-schema defaults: (resource, namespace or "", name, jsonpath, printed value)
    defaults: tuple[tuple[str, str, str, str, str], ...] = ()
    extra_namespaces: tuple[str, ...] = field(default=())


def _files(directory: str) -> tuple[str, ...]:
    return tuple(sorted(f"{directory}/{p.name}" for p in (CORPUS / directory).glob("*.yaml")))


def load_docs(files: tuple[str, ...]) -> list[dict]:
    docs: list[dict] = []
    for name in files:
        docs.extend(d for d in yaml.safe_load_all((CORPUS / name).read_text()) if d)
    return docs


CERT_MANAGER_VALID = (
    """
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: selfsigned-issuer, namespace: corpus}
spec:
  selfSigned: {}
""",
    """
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: ca-issuer}
spec:
  ca:
    secretName: ca-key-pair
""",
    """
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: example-com, namespace: corpus}
spec:
  secretName: example-com-tls
  duration: 2160h
  renewBefore: 360h
  subject:
    organizations: [jetstack]
  commonName: example.com
  isCA: false
  privateKey:
    algorithm: ECDSA
    encoding: PKCS1
    size: 256
    rotationPolicy: Always
  usages: [server auth, client auth]
  dnsNames: [example.com, www.example.com]
  issuerRef:
    name: selfsigned-issuer
    kind: Issuer
    group: cert-manager.io
""",
)

FLUX_VALID = (
    """
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: podinfo, namespace: corpus}
spec:
  interval: 5m0s
  url: https://github.com/stefanprodan/podinfo
  ref:
    branch: master
  ignore: |
    /*
    !/deploy
""",
    """
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: podinfo, namespace: corpus}
spec:
  interval: 10m
  url: https://stefanprodan.github.io/podinfo
""",
    """
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: podinfo, namespace: corpus}
spec:
  interval: 10m
  targetNamespace: default
  sourceRef:
    kind: GitRepository
    name: podinfo
  path: ./kustomize
  prune: true
  timeout: 1m
""",
    """
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: podinfo-oci, namespace: corpus}
spec:
  interval: 5m0s
  url: oci://ghcr.io/stefanprodan/manifests/podinfo
  ref:
    tag: latest
""",
)

KEDA_VALID = (
    """
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: keda-trigger-auth-rabbitmq, namespace: corpus}
spec:
  secretTargetRef:
  - parameter: host
    name: keda-rabbitmq-secret
    key: host
""",
    """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: rabbitmq-consumer, namespace: corpus}
spec:
  scaleTargetRef:
    name: rabbitmq-consumer
  pollingInterval: 30
  cooldownPeriod: 300
  minReplicaCount: 0
  maxReplicaCount: 30
  triggers:
  - type: rabbitmq
    metadata:
      queueName: hello
      mode: QueueLength
      value: "20"
    authenticationRef:
      name: keda-trigger-auth-rabbitmq
""",
    """
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: rabbitmq-job, namespace: corpus}
spec:
  jobTargetRef:
    parallelism: 1
    completions: 1
    backoffLimit: 4
    template:
      spec:
        restartPolicy: Never
        containers:
        - name: consumer
          image: ghcr.io/kedacore/rabbitmq-client:v1.0
          command: [receive, "amqp://user:PASSWORD@rabbitmq.default.svc.cluster.local:5672"]
          ports:
          - containerPort: 8080
  pollingInterval: 10
  maxReplicaCount: 30
  triggers:
  - type: rabbitmq
    metadata:
      queueName: hello
      value: "5"
    authenticationRef:
      name: keda-trigger-auth-rabbitmq
""",
)

ISTIO_VALID = (
    """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-route, namespace: corpus}
spec:
  hosts:
  - reviews.prod.svc.cluster.local
  http:
  - name: reviews-v2-routes
    match:
    - uri:
        prefix: /wpcatalog
    rewrite:
      uri: /newcatalog
    route:
    - destination:
        host: reviews.prod.svc.cluster.local
        subset: v2
  - name: reviews-v1-route
    route:
    - destination:
        host: reviews.prod.svc.cluster.local
        subset: v1
      weight: 100
""",
    """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-destination, namespace: corpus}
spec:
  host: reviews.prod.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
    loadBalancer:
      simple: LEAST_REQUEST
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
""",
    """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: corpus}
spec:
  mtls:
    mode: STRICT
""",
    """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: corpus}
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
""",
)

CROSSPLANE_VALID = (
    """
apiVersion: pkg.crossplane.io/v1
kind: Provider
metadata: {name: provider-aws-s3}
spec:
  package: xpkg.crossplane.io/crossplane-contrib/provider-aws-s3:v1.20.0
""",
    """
apiVersion: apiextensions.crossplane.io/v1
kind: CompositeResourceDefinition
metadata: {name: xbuckets.example.crossplane.io}
spec:
  group: example.crossplane.io
  names:
    kind: XBucket
    plural: xbuckets
  versions:
  - name: v1alpha1
    served: true
    referenceable: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              region:
                type: string
            required: [region]
""",
    """
apiVersion: apiextensions.crossplane.io/v1
kind: Composition
metadata: {name: xbuckets-aws}
spec:
  compositeTypeRef:
    apiVersion: example.crossplane.io/v1alpha1
    kind: XBucket
  mode: Pipeline
  pipeline:
  - step: patch-and-transform
    functionRef:
      name: function-patch-and-transform
    input:
      apiVersion: pt.fn.crossplane.io/v1beta1
      kind: Resources
      resources:
      - name: storage-bucket
        base:
          apiVersion: s3.aws.upbound.io/v1beta1
          kind: Bucket
""",
)

GATEKEEPER_VALID = (
    """
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: k8srequiredlabels}
spec:
  crd:
    spec:
      names:
        kind: K8sRequiredLabels
      validation:
        openAPIV3Schema:
          type: object
          properties:
            labels:
              type: array
              items:
                type: string
  targets:
  - target: admission.k8s.gatekeeper.sh
    rego: |
      package k8srequiredlabels

      violation[{"msg": msg, "details": {"missing_labels": missing}}] {
        provided := {label | input.review.object.metadata.labels[label]}
        required := {label | label := input.parameters.labels[_]}
        missing := required - provided
        count(missing) > 0
        msg := sprintf("you must provide labels: %v", [missing])
      }
""",
    """
apiVersion: config.gatekeeper.sh/v1alpha1
kind: Config
metadata: {name: config, namespace: gatekeeper-system}
spec:
  match:
  - excludedNamespaces: ["kube-*"]
    processes: ["*"]
""",
    """
apiVersion: mutations.gatekeeper.sh/v1
kind: AssignMetadata
metadata: {name: demo-annotation-owner}
spec:
  match:
    scope: Namespaced
    excludedNamespaces: ["kube-*", "gatekeeper-system"]
  location: metadata.annotations.owner
  parameters:
    assign:
      value: admin
""",
)


def _ksm_invalid(docs: list[dict]) -> Invalid:
    service = copy.deepcopy(next(d for d in docs if d["kind"] == "Service"))
    service["metadata"]["name"] = "kube-state-metrics-broken"
    service["spec"]["ports"][0]["port"] = 70000
    return Invalid(
        yaml.safe_dump(service),
        ("spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",),
    )


def _dashboard_invalid(docs: list[dict]) -> Invalid:
    deployment = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    deployment["metadata"]["name"] = "kubernetes-dashboard-broken"
    deployment["spec"]["replicas"] = -1
    return Invalid(
        yaml.safe_dump(deployment),
        ("spec.replicas: Invalid value: -1: must be greater than or equal to 0",),
    )


PROJECTS = [
    Project(
        name="cert-manager",
        files=_files("cert-manager"),
        valid=CERT_MANAGER_VALID,
        invalid=Invalid(
            """
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: broken, namespace: corpus}
spec:
  dnsNames: [example.com]
  issuerRef: {name: selfsigned-issuer}
  privateKey: {algorithm: DSA}
""",
            (
                'The Certificate "broken" is invalid',
                "spec.secretName: Required value",
                'spec.privateKey.algorithm: Unsupported value: "DSA": supported values: '
                '"RSA", "ECDSA", "Ed25519"',
            ),
        ),
        gets=(
            ("certificates.cert-manager.io", "corpus", None),
            ("issuers.cert-manager.io", "corpus", None),
            ("clusterissuers.cert-manager.io", "", None),
        ),
        explain=(
            "certificates.spec.privateKey",
            "cert-manager.io/v1",
            ("KIND:       Certificate", "FIELD: privateKey <Object>", "algorithm\t<string>"),
        ),
    ),
    Project(
        name="flux",
        files=_files("flux"),
        valid=FLUX_VALID,
        invalid=Invalid(
            """
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: broken, namespace: corpus}
spec:
  interval: 1 minute
  url: ftp://example.com/repo.git
""",
            (
                'spec.interval: Invalid value: "1 minute": spec.interval in body should match '
                "'^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$'",
                'spec.url: Invalid value: "ftp://example.com/repo.git": spec.url in body should '
                "match '^(http|https|ssh)://.*$'",
            ),
        ),
        defaults=(
            (
                "gitrepositories.source.toolkit.fluxcd.io",
                "corpus",
                "podinfo",
                ".spec.timeout",
                "60s",
            ),
            (
                "helmrepositories.source.toolkit.fluxcd.io",
                "corpus",
                "podinfo",
                ".spec.provider",
                "generic",
            ),
        ),
        gets=(
            ("gitrepositories.source.toolkit.fluxcd.io", "corpus", None),
            ("helmrepositories.source.toolkit.fluxcd.io", "corpus", None),
            ("kustomizations.kustomize.toolkit.fluxcd.io", "corpus", None),
            ("ocirepositories.source.toolkit.fluxcd.io", "corpus", None),
        ),
        explain=(
            "gitrepositories.spec.ref",
            "source.toolkit.fluxcd.io/v1",
            ("KIND:       GitRepository", "FIELD: ref <Object>", "branch\t<string>"),
        ),
    ),
    Project(
        name="keda",
        files=_files("keda"),
        server_side_only=("keda/keda.sh_scaledjobs.yaml",),
        valid=KEDA_VALID,
        invalid=Invalid(
            """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: broken, namespace: corpus}
spec:
  scaleTargetRef: {name: rabbitmq-consumer}
""",
            ('The ScaledObject "broken" is invalid', "spec.triggers: Required value"),
        ),
        defaults=(
            (
                "scaledjobs.keda.sh",
                "corpus",
                "rabbitmq-job",
                ".spec.jobTargetRef.template.spec.containers[0].ports[0].protocol",
                "TCP",
            ),
        ),
        gets=(
            ("scaledobjects.keda.sh", "corpus", None),
            ("scaledjobs.keda.sh", "corpus", None),
            ("triggerauthentications.keda.sh", "corpus", None),
        ),
        explain=(
            "scaledobjects.spec.advanced.horizontalPodAutoscalerConfig.behavior",
            "keda.sh/v1alpha1",
            ("KIND:       ScaledObject", "FIELD: behavior <Object>", "scaleDown\t<Object>"),
        ),
    ),
    Project(
        name="istio",
        files=_files("istio"),
        valid=ISTIO_VALID,
        invalid=Invalid(
            """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: broken, namespace: corpus}
spec:
  mtls:
    mode: STRICTEST
""",
            (
                'spec.mtls.mode: Unsupported value: "STRICTEST": supported values: '
                '"UNSET", "DISABLE", "PERMISSIVE", "STRICT"',
            ),
        ),
        gets=(
            ("virtualservices.networking.istio.io", "corpus", None),
            ("destinationrules.networking.istio.io", "corpus", None),
            ("peerauthentications.security.istio.io", "corpus", None),
            ("authorizationpolicies.security.istio.io", "corpus", None),
        ),
        explain=(
            "destinationrules.spec.trafficPolicy.loadBalancer",
            "networking.istio.io/v1",
            ("KIND:       DestinationRule", "FIELD: loadBalancer <Object>", "simple\t<string>"),
        ),
    ),
    Project(
        name="crossplane",
        files=_files("crossplane"),
        valid=CROSSPLANE_VALID,
        invalid=Invalid(
            """
apiVersion: pkg.crossplane.io/v1
kind: Provider
metadata: {name: broken}
spec:
  packagePullPolicy: IfNotPresent
""",
            ('The Provider "broken" is invalid', "spec.package: Required value"),
        ),
        defaults=(
            (
                "providers.pkg.crossplane.io",
                "",
                "provider-aws-s3",
                ".spec.runtimeConfigRef.name",
                "default",
            ),
            (
                "providers.pkg.crossplane.io",
                "",
                "provider-aws-s3",
                ".spec.revisionHistoryLimit",
                "1",
            ),
            (
                "compositeresourcedefinitions.apiextensions.crossplane.io",
                "",
                "xbuckets.example.crossplane.io",
                ".spec.defaultCompositeDeletePolicy",
                "Background",
            ),
        ),
        gets=(
            ("providers.pkg.crossplane.io", "", None),
            ("compositions.apiextensions.crossplane.io", "", None),
            ("compositeresourcedefinitions.apiextensions.crossplane.io", "", None),
        ),
        explain=(
            "compositions.spec.pipeline.functionRef",
            "apiextensions.crossplane.io/v1",
            ("KIND:       Composition", "FIELD: functionRef <Object>", "name\t<string>"),
        ),
    ),
    Project(
        name="gatekeeper",
        files=_files("gatekeeper"),
        valid=GATEKEEPER_VALID,
        invalid=Invalid(
            """
apiVersion: mutations.gatekeeper.sh/v1
kind: AssignMetadata
metadata: {name: broken}
spec:
  match:
    excludedNamespaces: ["Kube_System"]
  location: metadata.labels.owner
  parameters:
    assign:
      value: admin
""",
            (
                'spec.match.excludedNamespaces[0]: Invalid value: "Kube_System": '
                "spec.match.excludedNamespaces[0] in body should match '^\\*?[-:a-z0-9]*\\*?$'",
            ),
        ),
        defaults=(
            (
                "constrainttemplates.templates.gatekeeper.sh",
                "",
                "k8srequiredlabels",
                ".spec.crd.spec.validation.legacySchema",
                "false",
            ),
        ),
        gets=(
            ("constrainttemplates.templates.gatekeeper.sh", "", None),
            ("assignmetadata.mutations.gatekeeper.sh", "", None),
            ("configs.config.gatekeeper.sh", "gatekeeper-system", None),
        ),
        explain=(
            "constrainttemplates.spec.crd.spec.names",
            "templates.gatekeeper.sh/v1",
            ("KIND:       ConstraintTemplate", "FIELD: names <Object>", "shortNames\t<[]string>"),
        ),
    ),
    Project(
        name="kube-state-metrics",
        files=_files("kube-state-metrics"),
        built_in_invalid=_ksm_invalid,
        gets=(
            (
                "deployments.apps/kube-state-metrics",
                "kube-system",
                ("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"),
            ),
            (
                "services/kube-state-metrics",
                "kube-system",
                ("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"),
            ),
        ),
        explain=(
            "deployments.spec.template.spec.containers.livenessProbe.httpGet",
            "apps/v1",
            (
                "KIND:       Deployment",
                "FIELD: httpGet <HTTPGetAction>",
                "port\t<IntOrString> -required-",
            ),
        ),
    ),
    Project(
        name="dashboard",
        files=_files("dashboard"),
        built_in_invalid=_dashboard_invalid,
        gets=(
            (
                "deployments.apps",
                "kubernetes-dashboard",
                ("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"),
            ),
            ("secrets", "kubernetes-dashboard", ("NAME", "TYPE", "DATA", "AGE")),
        ),
        explain=(
            "deployments.spec.template.spec.securityContext.seccompProfile",
            "apps/v1",
            ("KIND:       Deployment", "FIELD: seccompProfile <SeccompProfile>", "type\t<string>"),
        ),
    ),
]


async def kubectl(harness, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    environment = dict(os.environ, KUBECONFIG=str(harness.kubeconfig), HOME=str(harness.data_dir))
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def ok(harness, *args: str, stdin: bytes | None = None) -> str:
    code, out, err = await kubectl(harness, *args, stdin=stdin)
    assert code == 0, f"kubectl {' '.join(args)} failed ({code}): {err}\n{out}"
    return out


def file_args(files: tuple[str, ...]) -> list[str]:
    args: list[str] = []
    for name in files:
        args += ["-f", str(CORPUS / name)]
    return args


def expected_headers(
    crds: dict[str, dict], resource: str, api_version: str, *, wide: bool = False
) -> tuple[str, ...]:
    """The header line kube-apiserver's Table and kubectl print for a custom resource
    (``-o wide`` adds the columns of priority > 0, in the CRD's order)."""
    crd = crds[resource]
    version = next(v for v in crd["spec"]["versions"] if v["name"] == api_version)
    columns = version.get("additionalPrinterColumns")
    if not columns:
        return ("NAME", "AGE")
    shown = [c for c in columns if wide or c.get("priority", 0) == 0]
    return ("NAME", *(c["name"].upper() for c in shown))


def header_of(output: str) -> str:
    return " ".join(output.splitlines()[0].split())


def preferred_version(crd: dict) -> str:
    """The version kubectl discovers as preferred: kube-aware ordering of the served ones."""

    def priority(name: str) -> tuple:
        match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", name)
        if not match:
            return (0, 0, 0, name)
        stability = {None: 3, "beta": 2, "alpha": 1}[match.group(2)]
        return (1, stability, int(match.group(1)), int(match.group(3) or 0))

    served = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
    return max(served, key=priority)


@pytest.mark.parametrize("project", PROJECTS, ids=[p.name for p in PROJECTS])
async def test_published_manifests(harness, project: Project):
    docs = load_docs(project.files)
    crds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    await ok(harness, "create", "namespace", "corpus")

    # 1. Client-side apply, as the install docs say.
    client_side = tuple(f for f in project.files if f not in project.server_side_only)
    out = await ok(harness, "apply", *file_args(client_side))
    assert "created" in out
    for name in project.server_side_only:
        code, out, err = await kubectl(harness, "apply", *file_args((name,)))
        assert code != 0
        for doc in load_docs((name,)):
            refused = f'The {doc["kind"]} "{doc["metadata"]["name"]}" is invalid: '
            assert refused + ANNOTATION_LIMIT_MESSAGE in err, err
        out = await ok(harness, "apply", "--server-side", *file_args((name,)))
        assert "serverside-applied" in out

    # 2. Server-side apply of everything again: the client-side to server-side migration.
    out = await ok(
        harness, "apply", "--server-side", "--force-conflicts", *file_args(project.files)
    )
    assert out.count("serverside-applied") == len(docs), out

    # Every object of the manifests is there.
    for doc in docs:
        namespace = doc["metadata"].get("namespace")
        kind = doc["kind"].lower()
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        resource = f"{kind}.{group}" if group else kind
        args = ["get", resource, doc["metadata"]["name"], "-o", "name"]
        if namespace:
            args += ["-n", namespace]
        await ok(harness, *args)

    # 3. Every CRD established.
    if crds:
        out = await ok(
            harness, "wait", "--for", "condition=established", "crd", "--all", "--timeout=30s"
        )
        assert out.count("condition met") >= len(crds)

    # 4. Webhook configurations point at Services with no pods: remove them first.
    for doc in docs:
        if doc["kind"] in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
            await ok(harness, "delete", doc["kind"].lower(), doc["metadata"]["name"])

    # 5. Valid objects are created, the invalid one refused as upstream refuses it.
    for manifest in project.valid:
        out = await ok(harness, "create", "-f", "-", stdin=manifest.encode())
        assert "created" in out
    invalid = project.invalid or project.built_in_invalid(docs)
    code, out, err = await kubectl(harness, "create", "-f", "-", stdin=invalid.manifest.encode())
    assert code != 0, out
    for message in invalid.messages:
        assert message in err, err

    # Defaults of the published schemas are applied (and shown) as upstream applies them.
    for resource, namespace, name, path, expected in project.defaults:
        args = ["get", resource, name, "-o", f"jsonpath={{{path}}}"]
        out = await ok(harness, *args, *(["-n", namespace] if namespace else []))
        assert out == expected, (resource, path, out)

    # kubectl get: headers are the CRD's printer columns (or the built-in table's).
    for resource, namespace, headers in project.gets:
        args = ["get", resource] + (["-n", namespace] if namespace else [])
        if headers is None:
            version = preferred_version(crds[resource])
            headers = expected_headers(crds, resource, version)
            wide = await ok(harness, *args, "-o", "wide")
            assert header_of(wide) == " ".join(
                expected_headers(crds, resource, version, wide=True)
            ), wide
        out = await ok(harness, *args)
        assert header_of(out) == " ".join(headers), out
        assert len(out.splitlines()) >= 2, out

    # kubectl explain resolves a nested field from the published OpenAPI.
    if project.explain is not None:
        path, api_version, needles = project.explain
        out = await ok(harness, "explain", path, f"--api-version={api_version}")
        for needle in needles:
            assert needle in out, out


async def test_status_default_applied_on_read(harness):
    """A default on ``.status`` itself is visible right after create, as upstream's
    defaulting on read from storage makes it (Flux's GitRepository defaults ``.status`` to
    ``{observedGeneration: -1}``; create drops the status: status subresource)."""
    crd = "flux/source.toolkit.fluxcd.io_gitrepositories.yaml"
    await ok(harness, "create", "namespace", "corpus")
    await ok(harness, "apply", *file_args((crd,)))
    await ok(
        harness,
        "wait",
        "--for",
        "condition=established",
        "crd/gitrepositories.source.toolkit.fluxcd.io",
        "--timeout=30s",
    )
    await ok(harness, "create", "-f", "-", stdin=FLUX_VALID[0].encode())
    out = await ok(
        harness,
        "get",
        "gitrepositories.source.toolkit.fluxcd.io",
        "podinfo",
        "-n",
        "corpus",
        "-o",
        "jsonpath={.status.observedGeneration}",
    )
    assert out == "-1"
