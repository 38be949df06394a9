"""X.509 building blocks: keys, certificate authorities, leaf certificates, inspection.

Pure functions over ``cryptography`` objects; no file I/O here (see ``sampan.pki.cluster``).
Key choice follows K3s: ECDSA P-256 for CAs and leaves. Certificates are backdated by
``BACKDATE_S`` so a node whose clock is slightly behind still accepts a fresh certificate.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "BACKDATE_S",
    "CA_VALIDITY_DAYS",
    "LEAF_VALIDITY_DAYS",
    "CertificateNames",
    "PrivateKey",
    "cert_names",
    "cert_to_pem",
    "create_ca",
    "generate_ec_key",
    "generate_rsa_key",
    "is_issued_by",
    "issue_leaf",
    "key_to_pem",
    "load_cert",
    "load_csr",
    "load_pem_private_key",
    "load_private_key",
    "public_key_to_pem",
    "remaining_validity",
    "sign_request",
    "split_names",
]

CA_VALIDITY_DAYS = 3650
LEAF_VALIDITY_DAYS = 365
BACKDATE_S = 300
RSA_KEY_BITS = 2048

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class CertificateNames:
    """Subject alternative names of a certificate, normalised for comparison."""

    dns: frozenset[str]
    ips: frozenset[IPAddress]

    def covers(self, other: CertificateNames) -> bool:
        return other.dns <= self.dns and other.ips <= self.ips


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def generate_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def generate_rsa_key(bits: int = RSA_KEY_BITS) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_to_pem(key: PrivateKey) -> bytes:
    """``EC PRIVATE KEY`` / ``RSA PRIVATE KEY`` PEM, as K3s and kubeadm write them."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def public_key_to_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


@functools.lru_cache(maxsize=64)
def load_pem_private_key(pem: bytes) -> PrivateKeyTypes:
    """Any unencrypted PEM private key, loaded once per process for the same bytes.

    Loading an RSA key checks its consistency (about 35 ms for 2,048 bits), and a server loads
    the service-account key in several places while it starts; a key object is immutable, so
    they share one. Another PEM (a rotated key) is another entry."""
    return serialization.load_pem_private_key(pem, password=None)


def load_private_key(pem: bytes) -> PrivateKey:
    key = load_pem_private_key(pem)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def split_names(names: Iterable[str]) -> CertificateNames:
    """Sort names into IP SANs and DNS SANs (DNS names lower-cased, duplicates dropped)."""
    dns: set[str] = set()
    ips: set[IPAddress] = set()
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        try:
            ips.add(ipaddress.ip_address(name))
        except ValueError:
            dns.add(name.lower())
    return CertificateNames(frozenset(dns), frozenset(ips))


def cert_names(cert: x509.Certificate) -> CertificateNames:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return CertificateNames(frozenset(), frozenset())
    dns = frozenset(n.lower() for n in san.get_values_for_type(x509.DNSName))
    ips = frozenset(
        ip
        for ip in san.get_values_for_type(x509.IPAddress)
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
    )
    return CertificateNames(dns, ips)


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def create_ca(
    common_name: str, *, valid_days: int = CA_VALIDITY_DAYS
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed ECDSA P-256 CA that may sign leaves (no intermediate CAs)."""
    key = generate_ec_key()
    now = _now()
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=BACKDATE_S))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_leaf(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    names: CertificateNames | None = None,
    client_auth: bool = False,
    server_auth: bool = False,
    valid_days: int = LEAF_VALIDITY_DAYS,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new ECDSA key and a certificate for it signed by ``ca_cert``/``ca_key``."""
    if not (client_auth or server_auth):
        raise ValueError("a leaf certificate needs clientAuth and/or serverAuth usage")
    key = generate_ec_key()
    now = _now()
    usages = []
    if server_auth:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(seconds=BACKDATE_S))
        .not_valid_after(min(now + dt.timedelta(days=valid_days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if names is not None and (names.dns or names.ips):
        general: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(names.dns)]
        general += [x509.IPAddress(ip) for ip in sorted(names.ips, key=lambda a: (a.version, a))]
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def is_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True if ``ca_cert``'s key signed ``cert`` (signature and issuer name both checked)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def remaining_validity(cert: x509.Certificate) -> dt.timedelta:
    return cert.not_valid_after_utc - _now()


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """A PEM ``CERTIFICATE REQUEST`` whose self-signature verifies (``ValueError`` if not)."""
    csr = x509.load_pem_x509_csr(pem)
    if not csr.is_signature_valid:
        raise ValueError("the certificate request's signature does not verify")
    return csr


# Kubernetes ``spec.usages`` strings -> X.509 key usage bits / extended key usages.
_KEY_USAGE_BITS = {
    "signing": "digital_signature",
    "digital signature": "digital_signature",
    "content commitment": "content_commitment",
    "key encipherment": "key_encipherment",
    "key agreement": "key_agreement",
    "data encipherment": "data_encipherment",
    "cert sign": "key_cert_sign",
    "crl sign": "crl_sign",
    "encipher only": "encipher_only",
    "decipher only": "decipher_only",
}
_EXTENDED_USAGES = {
    "any": x509.ObjectIdentifier("2.5.29.37.0"),
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ipsec end system": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec tunnel": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec user": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "microsoft sgc": x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
    "netscape sgc": x509.ObjectIdentifier("2.16.840.1.113730.4.1"),
}
REQUEST_BACKDATE_S = 300


def sign_request(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    csr: x509.CertificateSigningRequest,
    usages: Sequence[str],
    *,
    valid_s: float,
) -> x509.Certificate:
    """A leaf for ``csr``'s public key, subject and subject alternative names (DNS, IP,
    e-mail, URI), with exactly the key usages and extended key usages named by the
    Kubernetes ``usages`` strings (an unknown string: ``ValueError``). Valid from
    ``REQUEST_BACKDATE_S`` ago for ``valid_s`` seconds, never past the CA's own expiry. What
    a signer may sign (which subjects and usages) is the caller's policy."""
    bits = dict.fromkeys(_KEY_USAGE_BITS.values(), False)
    extended: list[x509.ObjectIdentifier] = []
    for usage in usages:
        if usage in _KEY_USAGE_BITS:
            bits[_KEY_USAGE_BITS[usage]] = True
        elif usage in _EXTENDED_USAGES:
            if _EXTENDED_USAGES[usage] not in extended:
                extended.append(_EXTENDED_USAGES[usage])
        else:
            raise ValueError(f"unknown key usage {usage!r}")
    if not bits["key_agreement"]:
        # X.509: encipherOnly/decipherOnly only mean something with keyAgreement.
        bits["encipher_only"] = bits["decipher_only"] = False
    now = _now()
    not_before = now - dt.timedelta(seconds=REQUEST_BACKDATE_S)
    not_after = min(now + dt.timedelta(seconds=valid_s), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if any(bits.values()):
        builder = builder.add_extension(x509.KeyUsage(**bits), critical=True)
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None and len(san):
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    return builder.sign(ca_key, hashes.SHA256())
