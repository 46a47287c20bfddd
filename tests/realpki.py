"""Mocks whose pulumi-tls and pulumi-random resources produce real keys, CSRs, certificates and
random strings (with `cryptography`), for lab runs of the generated steps on real machines."""
from __future__ import annotations

import datetime
import ipaddress
import secrets
import string

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import conftest
from conftest import plain


def _name(subject: dict | None) -> x509.Name:
    subject = subject or {}
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, subject.get("commonName") or "unnamed")]
    if subject.get("organization"):
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"]))
    return x509.Name(attrs)


def _extensions(builder, uses: list[str], is_ca: bool):
    ku = set(uses)
    builder = builder.add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    builder = builder.add_extension(x509.KeyUsage(
        digital_signature="digital_signature" in ku, content_commitment=False,
        key_encipherment="key_encipherment" in ku, data_encipherment=False, key_agreement=False,
        key_cert_sign="cert_signing" in ku, crl_sign="crl_signing" in ku, encipher_only=False,
        decipher_only=False), critical=True)
    eku = [o for u, o in (("server_auth", ExtendedKeyUsageOID.SERVER_AUTH),
                          ("client_auth", ExtendedKeyUsageOID.CLIENT_AUTH)) if u in ku]
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder


def _pem_cert(c: x509.Certificate) -> str:
    return c.public_bytes(serialization.Encoding.PEM).decode()


class RealPkiMocks(conftest.Mocks):
    def new_resource(self, args):
        t, i = args.typ, plain(dict(args.inputs))
        now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        if t == "tls:index/privateKey:PrivateKey":
            if i.get("algorithm") == "RSA":
                key = rsa.generate_private_key(public_exponent=65537, key_size=int(i.get("rsaBits") or 2048))
            else:
                key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode()
            pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
            return f"{args.name}-id", {**i, "private_key_pem": pem, "public_key_pem": pub}
        if t == "tls:index/certRequest:CertRequest":
            key = serialization.load_pem_private_key(i["privateKeyPem"].encode(), None)
            sans = [x509.DNSName(d) for d in i.get("dnsNames") or []]
            sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in i.get("ipAddresses") or []]
            b = x509.CertificateSigningRequestBuilder().subject_name(_name(i.get("subject")))
            if sans:
                b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            csr = b.sign(key, hashes.SHA256())
            return f"{args.name}-id", {**i, "cert_request_pem": csr.public_bytes(serialization.Encoding.PEM).decode()}
        if t == "tls:index/selfSignedCert:SelfSignedCert":
            key = serialization.load_pem_private_key(i["privateKeyPem"].encode(), None)
            name = _name(i.get("subject"))
            b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                 .serial_number(x509.random_serial_number()).not_valid_before(now)
                 .not_valid_after(now + datetime.timedelta(hours=int(i["validityPeriodHours"]))))
            b = _extensions(b, i.get("allowedUses") or [], bool(i.get("isCaCertificate")))
            return f"{args.name}-id", {**i, "cert_pem": _pem_cert(b.sign(key, hashes.SHA256()))}
        if t == "tls:index/locallySignedCert:LocallySignedCert":
            csr = x509.load_pem_x509_csr(i["certRequestPem"].encode())
            ca_key = serialization.load_pem_private_key(i["caPrivateKeyPem"].encode(), None)
            ca = x509.load_pem_x509_certificate(i["caCertPem"].encode())
            b = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.subject)
                 .public_key(csr.public_key()).serial_number(x509.random_serial_number()).not_valid_before(now)
                 .not_valid_after(now + datetime.timedelta(hours=int(i["validityPeriodHours"]))))
            b = _extensions(b, i.get("allowedUses") or [], False)
            try:
                san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                b = b.add_extension(san, critical=False)
            except x509.ExtensionNotFound:
                pass
            return f"{args.name}-id", {**i, "cert_pem": _pem_cert(b.sign(ca_key, hashes.SHA256()))}
        if t in ("random:index/randomString:RandomString", "random:index/randomPassword:RandomPassword"):
            alphabet = string.ascii_lowercase + string.digits
            return f"{args.name}-id", {**i, "result": "".join(secrets.choice(alphabet) for _ in range(int(i["length"])))}
        return super().new_resource(args)
