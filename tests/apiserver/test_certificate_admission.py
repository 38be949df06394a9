"""The certificate admission plugins against a real in-process API server and real RBAC:
approving needs ``approve`` on the request's signer, signing needs ``sign``, and nobody (not
even an admin) gets the API server's client signer to issue a ``system:masters`` identity."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sampan.client import Client
from sampan.client.api import CLUSTERROLEBINDINGS, CLUSTERROLES, CSRS, ApiError, ForbiddenError
from tests.support.apiserver import ApiServerHarness

CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
OTHER_SIGNER = "example.com/other"


def _request(cn: str, *orgs: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    names.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    pem = csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    return base64.b64encode(pem).decode()


def _csr(name: str, signer: str, request: str) -> dict[str, Any]:
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": request, "signerName": signer, "usages": ["client auth"]},
    }


async def _grant(client: Client, name: str, rules: list[dict[str, Any]]) -> None:
    await client.create(CLUSTERROLES, {"metadata": {"name": name}, "rules": rules})
    await client.create(
        CLUSTERROLEBINDINGS,
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}
            ],
        },
    )


CSR_WRITER = [
    {
        "apiGroups": ["certificates.k8s.io"],
        "resources": [
            "certificatesigningrequests",
            "certificatesigningrequests/approval",
            "certificatesigningrequests/status",
        ],
        "verbs": ["get", "list", "create", "update"],
    }
]


async def _approve(client: Client, name: str) -> dict[str, Any]:
    csr = await client.get(CSRS, name)
    csr["status"] = {
        "conditions": [{"type": "Approved", "status": "True", "reason": "R", "message": "m"}]
    }
    return await client.request("PUT", CSRS.path(name=name, subresource="approval"), body=csr)


async def _sign(client: Client, name: str) -> dict[str, Any]:
    csr = await client.get(CSRS, name)
    csr.setdefault("status", {})["certificate"] = base64.b64encode(b"not checked here").decode()
    return await client.request("PUT", CSRS.path(name=name, subresource="status"), body=csr)


async def test_approving_and_signing_need_the_verb_on_the_signer(harness: ApiServerHarness) -> None:
    async with harness.new_client() as client:
        await _approving_and_signing(harness, client)


async def _approving_and_signing(api_server: ApiServerHarness, client: Client) -> None:
    await _grant(client, "csr-writer", CSR_WRITER)
    await client.create(CSRS, _csr("pooh", CLIENT_SIGNER, _request("pooh", "qa")))
    await client.create(CSRS, _csr("other", OTHER_SIGNER, _request("other")))
    async with Client(await api_server.identity_config("mallory")) as mallory:
        with pytest.raises(ForbiddenError) as refused:
            await _approve(mallory, "pooh")
        assert refused.value.message == (
            'certificatesigningrequests.certificates.k8s.io "pooh" is forbidden: user not '
            f'permitted to approve requests with signerName "{CLIENT_SIGNER}"'
        )
        with pytest.raises(ForbiddenError) as refused:
            await _sign(mallory, "pooh")
        assert refused.value.message == (
            'certificatesigningrequests.certificates.k8s.io "pooh" is forbidden: user not '
            f'permitted to sign requests with signerName "{CLIENT_SIGNER}"'
        )
        # a status write that changes neither the certificate nor the conditions needs no sign
        unchanged = await mallory.get(CSRS, "pooh")
        await mallory.request("PUT", CSRS.path(name="pooh", subresource="status"), body=unchanged)

        # approve on the signer's domain (``kubernetes.io/*``) covers its signers only
        await _grant(
            client,
            "approver",
            [
                {
                    "apiGroups": ["certificates.k8s.io"],
                    "resources": ["signers"],
                    "resourceNames": ["kubernetes.io/*"],
                    "verbs": ["approve"],
                }
            ],
        )
        approved = await _approve(mallory, "pooh")
        assert approved["status"]["conditions"][0]["type"] == "Approved"
        with pytest.raises(ForbiddenError, match=f'signerName "{OTHER_SIGNER}"'):
            await _approve(mallory, "other")

        # sign on the exact signer name
        await _grant(
            client,
            "signer",
            [
                {
                    "apiGroups": ["certificates.k8s.io"],
                    "resources": ["signers"],
                    "resourceNames": [OTHER_SIGNER],
                    "verbs": ["sign"],
                }
            ],
        )
        signed = await _sign(mallory, "other")
        assert signed["status"]["certificate"]
        with pytest.raises(ForbiddenError):
            await _sign(mallory, "pooh")


async def test_nobody_gets_system_masters_from_the_api_server_client_signer(
    harness: ApiServerHarness,
) -> None:
    async with harness.new_client() as client:
        await _no_system_masters(client)


async def _no_system_masters(client: Client) -> None:
    with pytest.raises(ForbiddenError) as refused:
        await client.create(CSRS, _csr("pooh", CLIENT_SIGNER, _request("pooh", "system:masters")))
    assert refused.value.status == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'certificatesigningrequests.certificates.k8s.io "pooh" is forbidden: use of '
        "kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed",
        "reason": "Forbidden",
        "details": {
            "name": "pooh",
            "group": "certificates.k8s.io",
            "kind": "certificatesigningrequests",
        },
        "code": 403,
    }
    with pytest.raises(ApiError):
        await client.get(CSRS, "pooh")  # nothing was stored
    # the same subject for another signer, and other groups for this one, are accepted
    await client.create(CSRS, _csr("elsewhere", OTHER_SIGNER, _request("x", "system:masters")))
    await client.create(CSRS, _csr("qa", CLIENT_SIGNER, _request("qa", "qa", "system:mastersx")))


async def test_v1_refuses_missing_unknown_and_duplicate_usages_and_the_legacy_signer(
    harness: ApiServerHarness,
) -> None:
    request = _request("u")
    async with harness.new_client() as client:
        bad = _csr("bad", "kubernetes.io/legacy-unknown", request)
        bad["spec"]["usages"] = ["client auth", "flying", "client auth"]
        with pytest.raises(ApiError) as refused:
            await client.create(CSRS, bad)
        assert refused.value.code == 422
        causes = refused.value.details["causes"]
        assert causes[-3:] == [
            {
                "reason": "FieldValueNotSupported",
                "message": 'Unsupported value: "flying": supported values: "any", "cert sign", '
                '"client auth", "code signing", "content commitment", "crl sign", '
                '"data encipherment", "decipher only", "digital signature", "email protection", '
                '"encipher only", "ipsec end system", "ipsec tunnel", "ipsec user", '
                '"key agreement", "key encipherment", "microsoft sgc", "netscape sgc", '
                '"ocsp signing", "s/mime", "server auth", "signing", "timestamping"',
                "field": "spec.usages[1]",
            },
            {
                "reason": "FieldValueDuplicate",
                "message": 'Duplicate value: "client auth"',
                "field": "spec.usages[2]",
            },
            {
                "reason": "FieldValueInvalid",
                "message": 'Invalid value: "kubernetes.io/legacy-unknown": the legacy signerName '
                "is not allowed via this API version",
                "field": "spec.signerName",
            },
        ]
        none = _csr("none", OTHER_SIGNER, request)
        del none["spec"]["usages"]
        with pytest.raises(ApiError) as refused:
            await client.create(CSRS, none)
        assert refused.value.message == (
            'CertificateSigningRequest.certificates.k8s.io "none" is invalid: spec.usages: '
            "Required value: usages must be provided"
        )
