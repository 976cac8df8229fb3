#!/usr/bin/env python3
"""Build a MyData DP package (brief sections 6 and 9.6) with zipfile + cryptography only.

  build_package.py --key KEY.pem --cert CERT.pem --out PKG.zip
                   [--base64-signature] [--backslash] [--der-cert]
                   [--tamper NAME]... [--extra NAME]... [--omit NAME]... FILE...

Zip layout (all entries deflated, fixed timestamp 2021-01-01 00:00:00, so the output
is byte-for-byte reproducible): each FILE at the root under its basename, then any
--extra files, then META-INFO/manifest.xml, META-INFO/manifest.sha256withrsa and
META-INFO/certificate.cer (the certificate file's bytes as given; DER with --der-cert).

manifest.xml = '<?xml version="1.0" encoding="UTF-8"?>' "\n" '<files>' then per FILE
'<file><filename>NAME</filename><digest>sha256 lowercase hex</digest></file>' then
'</files>' (no trailing newline). The signature is RSA PKCS#1 v1.5 / SHA-256 over the
raw manifest bytes, written raw or, with --base64-signature, as one line of Base64.

Faults for negative tests (each may be repeated):
  --tamper NAME  flip the lowest bit of NAME's first byte in the zip after digesting it
  --extra NAME   add NAME (content "extra") to the zip without listing it
  --omit NAME    list NAME in the manifest but leave it out of the zip
  --backslash    write META-INFO\\manifest.xml etc. with a literal backslash

Prints the manifest digest lines ("NAME  sha256") on stderr; stdout is empty.
Exit 0 on success, 1 on failure (message on stderr), 2 on usage error.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import zipfile

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.dont_write_bytecode = True  # keep tests/interop free of __pycache__

from mydata_py import (
    CERTIFICATE,
    MANIFEST,
    SIGNATURE,
    Failure,
    dp_manifest_xml,
    load_certificate,
    run_main,
    sha256_hex,
)

FIXED_TIME = (2021, 1, 1, 0, 0, 0)


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc}") from exc


def add_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="build_package.py", description="build a MyData DP package")
    ap.add_argument("--key", required=True, help="RSA private key, PEM (unencrypted)")
    ap.add_argument("--cert", required=True, help="the DP's certificate, PEM")
    ap.add_argument("--out", required=True, help="package zip to write")
    ap.add_argument("--base64-signature", action="store_true", help="signature as Base64 text")
    ap.add_argument("--backslash", action="store_true", help="META-INFO\\ entry names")
    ap.add_argument("--der-cert", action="store_true", help="write certificate.cer as DER")
    ap.add_argument("--tamper", action="append", default=[], metavar="NAME")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME")
    ap.add_argument("--omit", action="append", default=[], metavar="NAME")
    ap.add_argument("files", nargs="+", metavar="FILE", help="data files (json, pdf, csv)")
    return ap.parse_args()


def main() -> int:
    args = parse_args()

    try:
        key = serialization.load_pem_private_key(read(args.key), password=None)
    except (ValueError, TypeError) as exc:
        raise Failure(f"cannot load {args.key} as an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise Failure(f"{args.key} is not an RSA private key")
    cert_bytes = read(args.cert)
    cert = load_certificate(cert_bytes, args.cert)
    if args.der_cert:
        cert_bytes = cert.public_bytes(serialization.Encoding.DER)
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        print("build_package.py: note: the key does not match the certificate", file=sys.stderr)

    files = []  # (name, content)
    for path in args.files:
        name = os.path.basename(path)
        if not name:
            raise Failure(f"{path!r} has no file name")
        if any(name == n for n, _ in files):
            raise Failure(f"two data files are named {name!r}")
        files.append((name, read(path)))
    names = {n for n, _ in files}
    for opt, chosen in (("--tamper", args.tamper), ("--omit", args.omit)):
        for name in chosen:
            if name not in names:
                raise Failure(f"{opt} {name!r} is not one of the data files {sorted(names)}")
    for name in args.tamper:
        if name in args.omit:
            raise Failure(f"{name!r} cannot be both tampered with and omitted")
    for name in args.extra:
        if name in names or args.extra.count(name) > 1:
            raise Failure(f"--extra {name!r} clashes with another entry")

    manifest = dp_manifest_xml([(n, sha256_hex(c)) for n, c in files])
    signature = key.sign(manifest, padding.PKCS1v15(), hashes.SHA256())
    if args.base64_signature:
        signature = base64.b64encode(signature)
    for n, c in files:
        print(f"{n}  {sha256_hex(c)}", file=sys.stderr)

    def meta(name: str) -> str:
        return name.replace("/", "\\") if args.backslash else name

    try:
        with zipfile.ZipFile(args.out, "w") as zf:
            for name, content in files:
                if name in args.omit:
                    continue
                if name in args.tamper:
                    content = bytes([content[0] ^ 0x01]) + content[1:] if content else b"\x01"
                add_entry(zf, name, content)
            for name in args.extra:
                add_entry(zf, name, b"extra")
            add_entry(zf, meta(MANIFEST), manifest)
            add_entry(zf, meta(SIGNATURE), signature)
            add_entry(zf, meta(CERTIFICATE), cert_bytes)
    except OSError as exc:
        raise Failure(f"cannot write {args.out}: {exc}") from exc
    return 0


if __name__ == "__main__":
    run_main("build_package.py", main)
