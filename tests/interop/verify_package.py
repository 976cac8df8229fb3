#!/usr/bin/env python3
"""Verify a MyData DP package (brief sections 6 and 9.6) with cryptography only.

  verify_package.py PKG.zip [--ca CA.pem] [--check-time] [--json]

Order: (1) META-INFO/certificate.cer loads (PEM or DER); with --ca it must be directly
issued by CA (PEM or DER); with --check-time it must be inside its validity period now;
(2) its key must be RSA; (3) META-INFO/manifest.sha256withrsa (raw, or Base64 text)
must be a PKCS#1 v1.5 SHA-256 signature over the raw manifest.xml bytes; (4)
manifest.xml (any DOCTYPE/ENTITY refused) must list every data file with its SHA-256,
and the zip must hold no missing or unlisted data files. META-INFO\\ entry names with
backslashes are accepted; other entries under META-INFO/ are ignored.

Exit 0: stdout "OK". Exit 1: one "FAIL: <file>: <reason>" line per problem on stderr.
--json: stdout instead carries {"ok":bool,"problems":[...],"files":[...],
"signature_format":"raw"|"base64"|null,"subject":str|null} (exit status unchanged).
Exit 2: usage error.
"""

from __future__ import annotations

import argparse
import json
import sys

sys.dont_write_bytecode = True  # keep tests/interop free of __pycache__

from mydata_py import Failure, emit, load_certificate, run_main, verify_dp_package


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc}") from exc


def main() -> int:
    ap = argparse.ArgumentParser(prog="verify_package.py", description="verify a MyData DP package")
    ap.add_argument("package", metavar="PKG.zip")
    ap.add_argument("--ca", help="CA certificate (PEM or DER) that must have issued the DP's")
    ap.add_argument("--check-time", action="store_true", help="also check the validity period")
    ap.add_argument("--json", action="store_true", help="print a JSON result on stdout")
    args = ap.parse_args()

    ca = load_certificate(read(args.ca), args.ca) if args.ca else None
    result = verify_dp_package(read(args.package), ca=ca, check_time=args.check_time)
    if args.json:
        emit(json.dumps({
            "ok": result.ok,
            "problems": result.problems,
            "files": result.files,
            "signature_format": result.signature_format,
            "subject": result.subject,
        }, ensure_ascii=False, separators=(",", ":")))
    if result.ok:
        if not args.json:
            emit("OK")
        return 0
    for problem in result.problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    run_main("verify_package.py", main)
