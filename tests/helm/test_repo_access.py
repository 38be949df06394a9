"""``repoCA`` / ``repoCAConfigMap`` and ``authSecret``: a chart repository over HTTPS with its
own CA that wants basic auth."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sampan.client import Client
from sampan.client.api import CONFIGMAPS, SECRETS
from sampan.helm import HELMCHARTS, HelmControllerComponent
from tests.helm.charts import ChartRepo, demo_chart_files
from tests.helm.test_bad_input import failed_with
from tests.helm.test_helmchart import at_revision, helmchart
from tests.kubelet.test_registries import _certs
from tests.support.poll import eventually

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def tls_repo(tmp_path: Path) -> AsyncIterator[tuple[ChartRepo, str]]:
    ca_file, cert_file, key_file = _certs(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    repo = ChartRepo(ssl_context=context, credentials=("charts", "s3cret"))
    repo.add(demo_chart_files())
    await repo.start()
    try:
        yield repo, ca_file.read_text()
    finally:
        await repo.stop()


async def test_repo_ca_and_auth_secret(
    client: Client, tls_repo: tuple[ChartRepo, str], helm_controller: HelmControllerComponent
) -> None:
    repo, ca_pem = tls_repo
    # Without the CA: the repository's certificate is not trusted.
    await client.create(
        HELMCHARTS, helmchart("noca", chart="demo", repo=repo.url), namespace="default"
    )
    status = await eventually(lambda: failed_with(client, "noca", "RepoUnavailable"))
    assert "certificate" in status["conditions"][-1]["message"].lower()

    # With the CA but no credentials: 401.
    await client.create(
        HELMCHARTS,
        helmchart("noauth", chart="demo", repo=repo.url, repoCA=ca_pem),
        namespace="default",
    )
    status = await eventually(lambda: failed_with(client, "noauth", "RepoUnavailable"))
    assert "401" in status["conditions"][-1]["message"]

    # The CA from a ConfigMap, the credentials from a basic-auth Secret.
    await client.create(
        CONFIGMAPS,
        {"metadata": {"name": "repo-ca"}, "data": {"ca-bundle.crt": ca_pem}},
        namespace="default",
    )
    await client.create(
        SECRETS,
        {
            "metadata": {"name": "repo-auth"},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": "charts", "password": "s3cret"},
        },
        namespace="default",
    )
    await client.create(
        HELMCHARTS,
        helmchart(
            "private",
            chart="demo",
            repo=repo.url,
            repoCAConfigMap={"name": "repo-ca"},
            authSecret={"name": "repo-auth"},
        ),
        namespace="default",
    )
    await eventually(lambda: at_revision(client, "private", 1))
    assert await client.get(CONFIGMAPS, "private-demo", namespace="default")
