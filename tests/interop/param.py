#!/usr/bin/env python3
"""MyData parameter encryption (pid, tx_id, secret_key), brief section 9.2.

  param.py encrypt --secret S --iv IV TEXT          Base64(AES-256-CBC/PKCS7(TEXT))
  param.py decrypt --secret S --iv IV B64           plaintext
  param.py encrypt --gcm --secret S [--nonce-hex H] TEXT
                                                    Base64(nonce(12) || ct || tag(16))
  param.py decrypt --gcm --secret S B64

key = UTF-8 bytes of S+S (S has 16 bytes), CBC IV = UTF-8 bytes of IV (16 bytes).
GCM uses the same key and no AAD; --iv is ignored with --gcm. The result is
printed on stdout followed by one newline. Exit 0 on success, 1 on failure
(message on stderr), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
import binascii

sys.dont_write_bytecode = True  # keep tests/interop free of __pycache__

from mydata_py import (
    Failure,
    emit,
    param_decrypt_cbc,
    param_decrypt_gcm,
    param_encrypt_cbc,
    param_encrypt_gcm,
    run_main,
)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="param.py", description="MyData parameter encryption (AES-256-CBC or AES-256-GCM)"
    )
    sub = ap.add_subparsers(dest="command", required=True)
    for name, arg, helptext in (
        ("encrypt", "text", "plaintext to encrypt (UTF-8)"),
        ("decrypt", "b64", "Base64 ciphertext; a '+' that arrived as a space is accepted"),
    ):
        p = sub.add_parser(name)
        p.add_argument("--secret", required=True, help="client_secret (16 characters)")
        p.add_argument("--iv", help="cbc_iv (16 characters); required without --gcm")
        p.add_argument("--gcm", action="store_true", help="AES-256-GCM instead of CBC")
        if name == "encrypt":
            p.add_argument("--nonce-hex", help="GCM nonce as 24 hex digits (default: random)")
        p.add_argument(arg, help=helptext)
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    if not args.gcm and args.iv is None:
        raise Failure("--iv is required for AES-256-CBC (or give --gcm)")
    if args.command == "encrypt":
        if args.gcm:
            nonce = None
            if args.nonce_hex is not None:
                try:
                    nonce = binascii.unhexlify(args.nonce_hex)
                except (binascii.Error, ValueError) as exc:
                    raise Failure(f"--nonce-hex is not hex: {exc}") from exc
                if len(nonce) != 12:
                    raise Failure("--nonce-hex must be 24 hex digits (12 bytes)")
            emit(param_encrypt_gcm(args.secret, args.text, nonce))
        else:
            if args.nonce_hex is not None:
                raise Failure("--nonce-hex only applies with --gcm")
            emit(param_encrypt_cbc(args.secret, args.iv, args.text))
    else:
        if args.gcm:
            emit(param_decrypt_gcm(args.secret, args.b64))
        else:
            emit(param_decrypt_cbc(args.secret, args.iv, args.b64))
    return 0


if __name__ == "__main__":
    run_main("param.py", main)
