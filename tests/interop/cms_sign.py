#!/usr/bin/env python3
"""A certificate login's signature made by code we did not write (Python `cryptography`).

    cms_sign.py CERT.pem KEY.pem CHALLENGE > signature.der

Signs the challenge's UTF-8 bytes as a detached PKCS#7 SignedData (DER) with SHA-256, the
signer's certificate enclosed: the wire format of spec decision D51. Works for RSA and P-256 keys.
"""

import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7


def main() -> None:
    cert_path, key_path, challenge = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    der = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(challenge.encode("utf-8"))
        .add_signer(cert, key, hashes.SHA256())
        .sign(
            serialization.Encoding.DER,
            [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
        )
    )
    sys.stdout.buffer.write(der)


if __name__ == "__main__":
    main()
