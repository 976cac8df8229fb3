#!/usr/bin/env python3
"""JWE compact serialization as the MyData-API uses it (brief section 9.5), via jwcrypto.

  jwe.py encrypt --key K --mode cbc|gcm --in FILE [--content-iv IV] [--crit NAME]
      stdout: the compact JWE of FILE's bytes, one line.
      cbc: {"alg":"A256KW","enc":"A256CBC-HS512"}; gcm: {"alg":"A256GCMKW","enc":"A256GCM"}
      (jwcrypto adds the key-wrap "iv" and "tag" to the gcm header).
      --content-iv (cbc only): use the UTF-8 bytes of IV (16 bytes) as the content IV,
      as the platform in service does with the SP's cbc_iv; built with `cryptography`
      and checked by decrypting it with jwcrypto before printing.
      --crit NAME (repeatable): jwcrypto adds "crit": [NAME, ...] and NAME: true to the
      protected header, a JWE that a MyData SP must refuse (spec protocol.md section 12, D2).
  jwe.py decrypt --key K --in FILE [--expect-iv IV] [--mode cbc|gcm] [--out FILE]
      stdout (or --out): the plaintext bytes; stderr: the protected header JSON.
      --expect-iv: the content IV (3rd part) must equal the UTF-8 bytes of IV.
      --mode: the header must carry exactly that mode's alg and enc.
  jwe.py payload --client-id CLI.xxxxxxxxxx --zip FILE
      stdout: {"filename":"{client_id}.zip","data":"application/zip;data:{base64url}"}
  jwe.py unpayload --in FILE --out ZIP [--client-id CLI.xxxxxxxxxx]
      writes the zip; stdout: the payload's filename.

K is the SP's 32-character secret_key; the JWK is {"kty":"oct","k":base64url(UTF-8 bytes of K)}.
FILE may be '-' for stdin. Exit 0 on success, 1 on failure (message on stderr), 2 on usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import struct
import sys

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from jwcrypto import jwe as jw_jwe
from jwcrypto import jwk as jw_jwk

sys.dont_write_bytecode = True  # keep tests/interop free of __pycache__

from mydata_py import (
    CLIENT_ID_RE,
    DATA_PREFIX,
    Failure,
    b64url_decode,
    b64url_encode,
    emit,
    run_main,
)

MODES = {
    "cbc": ("A256KW", "A256CBC-HS512"),
    "gcm": ("A256GCMKW", "A256GCM"),
}
ALLOWED = ["A256KW", "A256GCMKW", "A256CBC-HS512", "A256GCM"]


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc}") from exc


def write_output(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise Failure(f"cannot write {path}: {exc}") from exc


def raw_key(secret_key: str) -> bytes:
    key = secret_key.encode("utf-8")
    if len(key) != 32:
        raise Failure(f"--key must be 32 bytes of UTF-8 (the SP's secret_key); got {len(key)}")
    return key


def make_jwk(secret_key: str) -> jw_jwk.JWK:
    return jw_jwk.JWK(kty="oct", k=b64url_encode(raw_key(secret_key)))


def header_json(alg: str, enc: str, crit: list[str] | None = None) -> str:
    header: dict = {"alg": alg, "enc": enc}
    if crit:
        header["crit"] = list(crit)
        for name in crit:
            header[name] = True
    return json.dumps(header, separators=(",", ":"))


def encrypt_jwcrypto(secret_key: str, mode: str, plaintext: bytes,
                     crit: list[str] | None = None) -> str:
    alg, enc = MODES[mode]
    token = jw_jwe.JWE(plaintext, protected=header_json(alg, enc, crit))
    token.add_recipient(make_jwk(secret_key))
    return token.serialize(compact=True)


def encrypt_cbc_fixed_iv(secret_key: str, plaintext: bytes, iv: bytes) -> str:
    """A256KW + A256CBC-HS512 (RFC 7518 sections 4.4 and 5.2) with a caller-chosen IV."""
    if len(iv) != 16:
        raise Failure(f"--content-iv must be 16 bytes of UTF-8; got {len(iv)}")
    cek = os.urandom(64)
    mac_key, enc_key = cek[:32], cek[32:]
    encrypted_key = aes_key_wrap(raw_key(secret_key), cek)
    protected_b64 = b64url_encode(header_json(*MODES["cbc"]).encode("utf-8"))
    aad = protected_b64.encode("ascii")
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    al = struct.pack(">Q", len(aad) * 8)
    tag = hmac.new(mac_key, aad + iv + ciphertext + al, hashlib.sha512).digest()[:32]
    compact = ".".join(
        [protected_b64, b64url_encode(encrypted_key), b64url_encode(iv),
         b64url_encode(ciphertext), b64url_encode(tag)]
    )
    if decrypt(secret_key, compact)[1] != plaintext:  # cross-check with jwcrypto
        raise Failure("internal error: jwcrypto does not decrypt the fixed-IV JWE")
    return compact


def decrypt(secret_key: str, compact: str):
    """Return (protected header text, plaintext) of a compact JWE."""
    parts = compact.split(".")
    if len(parts) != 5:
        raise Failure(f"not a compact JWE: {len(parts)} dot-separated parts, expected 5")
    token = jw_jwe.JWE()
    token.allowed_algs = ALLOWED
    try:
        token.deserialize(compact, make_jwk(secret_key))
    except Exception as exc:  # noqa: BLE001 - jwcrypto raises several kinds
        raise Failure(f"jwcrypto cannot decrypt the JWE: {type(exc).__name__}: {exc}") from exc
    header = b64url_decode(parts[0]).decode("utf-8")
    return header, token.payload


def cmd_encrypt(args) -> int:
    plaintext = read_input(args.input)
    if args.content_iv is not None:
        if args.mode != "cbc":
            raise Failure("--content-iv applies only to --mode cbc")
        if args.crit:
            raise Failure("--crit and --content-iv cannot be combined")
        compact = encrypt_cbc_fixed_iv(args.key, plaintext, args.content_iv.encode("utf-8"))
    else:
        compact = encrypt_jwcrypto(args.key, args.mode, plaintext, args.crit)
    emit(compact)
    return 0


def cmd_decrypt(args) -> int:
    compact = "".join(read_input(args.input).decode("ascii", errors="strict").split())
    parts = compact.split(".")
    if len(parts) != 5:
        raise Failure(f"not a compact JWE: {len(parts)} dot-separated parts, expected 5")
    header_text = b64url_decode(parts[0]).decode("utf-8")
    print(header_text, file=sys.stderr)
    header = json.loads(header_text)
    if args.mode is not None:
        alg, enc = MODES[args.mode]
        if header.get("alg") != alg or header.get("enc") != enc:
            raise Failure(
                f"header has alg={header.get('alg')!r} enc={header.get('enc')!r}; "
                f"--mode {args.mode} expects alg={alg!r} enc={enc!r}"
            )
    if args.expect_iv is not None:
        iv = b64url_decode(parts[2])
        want = args.expect_iv.encode("utf-8")
        if iv != want:
            raise Failure(f"content IV is {iv!r}, expected {want!r} (--expect-iv)")
    _, plaintext = decrypt(args.key, compact)
    if args.out:
        write_output(args.out, plaintext)
    else:
        sys.stdout.buffer.write(plaintext)
        sys.stdout.buffer.flush()
    return 0


def check_client_id(client_id: str) -> None:
    if not CLIENT_ID_RE.match(client_id):
        raise Failure(f"client_id {client_id!r} is not 'CLI.' followed by 10 alphanumerics")


def cmd_payload(args) -> int:
    check_client_id(args.client_id)
    data = read_input(args.zip)
    payload = {"filename": f"{args.client_id}.zip", "data": DATA_PREFIX + b64url_encode(data)}
    emit(json.dumps(payload, separators=(",", ":")))
    return 0


def cmd_unpayload(args) -> int:
    try:
        payload = json.loads(read_input(args.input).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Failure(f"payload is not UTF-8 JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise Failure("payload is not a JSON object")
    if set(payload) != {"filename", "data"}:
        raise Failure(f"payload keys are {sorted(payload)}, expected ['data', 'filename']")
    filename, data = payload["filename"], payload["data"]
    if not isinstance(filename, str) or not isinstance(data, str):
        raise Failure("payload filename and data must be strings")
    if not filename.endswith(".zip"):
        raise Failure(f"payload filename {filename!r} does not end in .zip")
    if args.client_id is not None:
        check_client_id(args.client_id)
        if filename != f"{args.client_id}.zip":
            raise Failure(f"payload filename {filename!r} is not {args.client_id}.zip")
    if not data.startswith(DATA_PREFIX):
        raise Failure(f"payload data does not start with {DATA_PREFIX!r}")
    try:
        raw = b64url_decode(data[len(DATA_PREFIX):])
    except Failure as exc:
        raise Failure(f"payload data: {exc}") from exc
    write_output(args.out, raw)
    emit(filename)
    return 0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="jwe.py", description="MyData-API JWE peer (jwcrypto)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encrypt", help="compact JWE of a file")
    p.add_argument("--key", required=True, help="the SP's 32-character secret_key")
    p.add_argument("--mode", required=True, choices=sorted(MODES))
    p.add_argument("--in", dest="input", required=True, help="plaintext file ('-' = stdin)")
    p.add_argument("--content-iv", help="cbc only: fixed content IV (16 characters, e.g. cbc_iv)")
    p.add_argument("--crit", action="append", metavar="NAME",
                   help="add NAME to a 'crit' protected header parameter (repeatable)")
    p.set_defaults(func=cmd_encrypt)

    p = sub.add_parser("decrypt", help="decrypt a compact JWE")
    p.add_argument("--key", required=True, help="the SP's 32-character secret_key")
    p.add_argument("--in", dest="input", required=True, help="file with the JWE ('-' = stdin)")
    p.add_argument("--expect-iv", help="require this content IV (UTF-8, e.g. cbc_iv)")
    p.add_argument("--mode", choices=sorted(MODES), help="require this mode's alg and enc")
    p.add_argument("--out", help="write the plaintext here instead of stdout")
    p.set_defaults(func=cmd_decrypt)

    p = sub.add_parser("payload", help="MyData payload JSON for a zip")
    p.add_argument("--client-id", required=True)
    p.add_argument("--zip", required=True, help="zip file ('-' = stdin)")
    p.set_defaults(func=cmd_payload)

    p = sub.add_parser("unpayload", help="zip from a MyData payload JSON")
    p.add_argument("--in", dest="input", required=True, help="payload JSON file ('-' = stdin)")
    p.add_argument("--out", required=True, help="where to write the zip")
    p.add_argument("--client-id", help="require filename == {client_id}.zip")
    p.set_defaults(func=cmd_unpayload)
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    return args.func(args)


if __name__ == "__main__":
    run_main("jwe.py", main)
