#!/usr/bin/env python3
"""Summarize a MyData package to the SP (brief section 9.6).

  sp_package.py PKG.zip [--ca CA.pem] [--check-time] [--strict] [--extract DIR]

PKG.zip holds each DP package as {resource_id}.zip plus META-INFO/manifest.xml
(or META-INFO\\manifest.xml):
  <files><file><filename/><resource_id/><resource_name/><code/></file>...</files>
stdout, one line of JSON (UTF-8):
  {"datasets":[{"resource_id":str,"resource_name":str,"code":int|str,"filename":str,
                "present":bool,"dp_verified":bool,"dp_problems":[str,...]}, ...],
   "unlisted":[entry names in the zip but not in the manifest]}
code is an int when it is all digits, else the text as is; missing elements are "".
present = filename non-empty and that entry is in the zip; dp_verified = present and the
entry passes verify_package.py's checks (with --ca / --check-time as given);
dp_problems = the reasons it did not ([] when verified or absent).
--extract DIR: write each present inner package to DIR/{filename}.

Exit 0 when the outer package could be read (whatever the datasets' results); with
--strict, exit 1 unless every present dataset is dp_verified and nothing is unlisted.
Exit 1 with a message on stderr if the outer zip or its manifest is unusable; 2 on usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.dont_write_bytecode = True  # keep tests/interop free of __pycache__

from mydata_py import (
    MANIFEST,
    META_DIR,
    Failure,
    emit,
    load_certificate,
    normalize_entry_name,
    parse_xml_safely,
    read_zip_entries,
    run_main,
    verify_dp_package,
)

FIELDS = ("filename", "resource_id", "resource_name", "code")


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise Failure(f"cannot read {path}: {exc}") from exc


def main() -> int:
    ap = argparse.ArgumentParser(prog="sp_package.py", description="summarize an SP package")
    ap.add_argument("package", metavar="PKG.zip")
    ap.add_argument("--ca", help="CA certificate (PEM or DER) for the inner DP packages")
    ap.add_argument("--check-time", action="store_true", help="check DP certificate validity dates")
    ap.add_argument("--strict", action="store_true", help="exit 1 on any failed or unlisted entry")
    ap.add_argument("--extract", metavar="DIR", help="write the present inner packages here")
    args = ap.parse_args()

    ca = load_certificate(read(args.ca), args.ca) if args.ca else None
    entries = read_zip_entries(read(args.package), "SP package")
    if MANIFEST not in entries:
        raise Failure(f"SP package: {MANIFEST} missing")
    root = parse_xml_safely(entries[MANIFEST], MANIFEST)
    if root.tag != "files":
        raise Failure(f"{MANIFEST}: root element is <{root.tag}>, expected <files>")

    datasets = []
    listed = set()
    for child in root:
        if child.tag != "file":
            raise Failure(f"{MANIFEST}: unexpected element <{child.tag}> in <files>")
        row = {}
        for name in FIELDS:
            el = child.find(name)
            row[name] = (el.text or "").strip() if el is not None else ""
        code = row["code"]
        filename = normalize_entry_name(row["filename"])
        present = bool(filename) and filename in entries
        verified, problems = False, []
        if present:
            if filename in listed:
                raise Failure(f"{MANIFEST}: {filename!r} listed twice")
            listed.add(filename)
            result = verify_dp_package(entries[filename], ca=ca, check_time=args.check_time)
            verified, problems = result.ok, result.problems
            if args.extract:
                os.makedirs(args.extract, exist_ok=True)
                with open(os.path.join(args.extract, os.path.basename(filename)), "wb") as fh:
                    fh.write(entries[filename])
        datasets.append({
            "resource_id": row["resource_id"],
            "resource_name": row["resource_name"],
            "code": int(code) if code.isascii() and code.isdigit() else code,
            "filename": row["filename"],
            "present": present,
            "dp_verified": verified,
            "dp_problems": problems,
        })

    unlisted = sorted(n for n in entries if not n.startswith(META_DIR) and n not in listed)
    emit(json.dumps({"datasets": datasets, "unlisted": unlisted},
                    ensure_ascii=False, separators=(",", ":")))
    if args.strict:
        bad = [d["filename"] for d in datasets if d["present"] and not d["dp_verified"]]
        for name in bad:
            print(f"FAIL: {name}: inner DP package does not verify", file=sys.stderr)
        for name in unlisted:
            print(f"FAIL: {name}: in the zip but not listed in the manifest", file=sys.stderr)
        if bad or unlisted:
            return 1
    return 0


if __name__ == "__main__":
    run_main("sp_package.py", main)
