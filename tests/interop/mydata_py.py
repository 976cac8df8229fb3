"""Shared helpers for the Python interop peers in tests/interop.

An independent implementation of the MyData wire formats described in
../shared/mydata-brief.md section 9, written only against the Python standard
library and `cryptography`. The Rust workspace never imports this module; the
Rust tests run the scripts next to it as separate processes.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import io
import os
import re
import sys
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class Failure(Exception):
    """A failure to report on stderr; the script exits with status 1."""


def run_main(prog: str, main: Callable[[], int]) -> None:
    """Run `main`, turning any exception into one stderr line and exit status 1."""
    try:
        status = main()
    except Failure as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - every failure must be a clean exit 1
        print(f"{prog}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status or 0)


def emit(text: str) -> None:
    """Write text plus a newline to stdout as UTF-8 whatever the locale."""
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8") + b"\n")
    sys.stdout.buffer.flush()


# --------------------------------------------------------------------------
# Base64 flavours
# --------------------------------------------------------------------------

_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url decoding, padding optional; rejects '+', '/' and junk."""
    if not _B64URL_RE.match(text):
        raise Failure("not base64url (allowed: A-Z a-z 0-9 - _ and optional '=' padding)")
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise Failure("base64url text has an impossible length")
    if "=" in text and len(text) % 4 != 0:
        raise Failure("base64url text has wrong padding")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise Failure(f"bad base64url: {exc}") from exc


def b64_decode_strict(text: str) -> bytes:
    """Strict standard Base64 (with '+' and '/', padding required)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Failure(f"bad Base64: {exc}") from exc


# --------------------------------------------------------------------------
# Parameter encryption (brief section 9.2): pid, tx_id, secret_key
# --------------------------------------------------------------------------


def param_key(secret: str) -> bytes:
    """key = UTF-8 bytes of secret + secret, which must be 32 bytes (AES-256)."""
    key = (secret + secret).encode("utf-8")
    if len(key) != 32:
        raise Failure(
            f"secret must be 16 bytes of UTF-8 so that secret+secret is a 32-byte "
            f"AES-256 key; got {len(secret.encode('utf-8'))} bytes"
        )
    return key


def param_iv(iv: str) -> bytes:
    raw = iv.encode("utf-8")
    if len(raw) != 16:
        raise Failure(f"CBC IV must be 16 bytes of UTF-8; got {len(raw)} bytes")
    return raw


def param_encrypt_cbc(secret: str, iv: str, text: str) -> str:
    key, ivb = param_key(secret), param_iv(iv)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(text.encode("utf-8")) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(ivb)).encryptor()
    return base64.b64encode(enc.update(padded) + enc.finalize()).decode("ascii")


def _param_b64(text: str) -> bytes:
    # A '+' that went through form/query decoding arrives as a space.
    cleaned = text.strip().replace(" ", "+")
    return b64_decode_strict(cleaned)


def param_decrypt_cbc(secret: str, iv: str, b64text: str) -> str:
    key, ivb = param_key(secret), param_iv(iv)
    data = _param_b64(b64text)
    if not data or len(data) % 16 != 0:
        raise Failure(f"ciphertext length {len(data)} is not a positive multiple of 16")
    dec = Cipher(algorithms.AES(key), modes.CBC(ivb)).decryptor()
    padded = dec.update(data) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise Failure("bad PKCS#7 padding (wrong key or IV?)") from exc
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Failure("plaintext is not valid UTF-8") from exc


def param_encrypt_gcm(secret: str, text: str, nonce: Optional[bytes] = None) -> str:
    key = param_key(secret)
    if nonce is None:
        nonce = os.urandom(12)
    if len(nonce) != 12:
        raise Failure(f"GCM nonce must be 12 bytes; got {len(nonce)}")
    sealed = AESGCM(key).encrypt(nonce, text.encode("utf-8"), None)  # ct || tag
    return base64.b64encode(nonce + sealed).decode("ascii")


def param_decrypt_gcm(secret: str, b64text: str) -> str:
    key = param_key(secret)
    data = _param_b64(b64text)
    if len(data) < 12 + 16:
        raise Failure(f"GCM input is {len(data)} bytes; needs at least nonce(12) + tag(16)")
    try:
        plain = AESGCM(key).decrypt(data[:12], data[12:], None)
    except InvalidTag as exc:
        raise Failure("GCM authentication failed (wrong key or corrupted input)") from exc
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Failure("plaintext is not valid UTF-8") from exc


# --------------------------------------------------------------------------
# JWE payload (brief section 9.5)
# --------------------------------------------------------------------------

CLIENT_ID_RE = re.compile(r"^CLI\.[A-Za-z0-9]{10}$")
RESOURCE_ID_RE = re.compile(r"^API\.[A-Za-z0-9]{10}$")
DATA_PREFIX = "application/zip;data:"


# --------------------------------------------------------------------------
# Manifests and DP packages (brief sections 6 and 9.6)
# --------------------------------------------------------------------------

XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>'
META_DIR = "META-INFO/"
MANIFEST = "META-INFO/manifest.xml"
SIGNATURE = "META-INFO/manifest.sha256withrsa"
CERTIFICATE = "META-INFO/certificate.cer"


def xml_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dp_manifest_xml(entries: Sequence[Tuple[str, str]]) -> bytes:
    """The DP manifest for (filename, lowercase hex digest) pairs."""
    parts = [XML_DECL, "\n", "<files>"]
    for name, digest in entries:
        parts.append(
            f"<file><filename>{xml_escape(name)}</filename><digest>{digest}</digest></file>"
        )
    parts.append("</files>")
    return "".join(parts).encode("utf-8")


def normalize_entry_name(name: str) -> str:
    """Zip entry names compared with '\\' read as '/' (some DPs write META-INFO\\...)."""
    return name.replace("\\", "/")


def parse_xml_safely(data: bytes, what: str) -> ET.Element:
    """Parse XML with ElementTree after refusing DTDs (no entity tricks)."""
    upper = data.upper()
    if b"<!DOCTYPE" in upper or b"<!ENTITY" in upper:
        raise Failure(f"{what}: DOCTYPE/ENTITY declarations are refused")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise Failure(f"{what}: not well-formed XML: {exc}") from exc


def load_certificate(data: bytes, what: str = "certificate") -> x509.Certificate:
    """Load an X.509 certificate given as PEM or DER."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise Failure(f"{what}: cannot load X.509 certificate (PEM or DER): {exc}") from exc


def read_zip_entries(data: bytes, what: str) -> Dict[str, bytes]:
    """All file entries of a zip by normalized name; refuses duplicates."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise Failure(f"{what}: not a zip archive: {exc}") from exc
    out: Dict[str, bytes] = {}
    with zf:
        for info in zf.infolist():
            if info.is_dir() or info.filename.endswith("\\"):
                continue
            name = normalize_entry_name(info.filename)
            if name in out:
                raise Failure(f"{what}: duplicate zip entry {name!r}")
            try:
                out[name] = zf.open(info).read()
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
                raise Failure(f"{what}: cannot read zip entry {name!r}: {exc}") from exc
    return out


@dataclass
class DpVerification:
    ok: bool
    problems: List[str] = field(default_factory=list)
    files: List[str] = field(default_factory=list)
    signature_format: Optional[str] = None  # "raw" or "base64"
    subject: Optional[str] = None


def _verify_signature(pub: rsa.RSAPublicKey, sig: bytes, manifest: bytes) -> Optional[str]:
    """Return "raw" or "base64" for the signature form that verifies, else None."""

    def ok(candidate: bytes) -> bool:
        try:
            pub.verify(candidate, manifest, asym_padding.PKCS1v15(), hashes.SHA256())
            return True
        except InvalidSignature:
            return False

    if len(sig) == (pub.key_size + 7) // 8 and ok(sig):
        return "raw"
    try:
        text = sig.decode("ascii")
    except UnicodeDecodeError:
        return None
    compact = "".join(text.split())
    try:
        decoded = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    if decoded and ok(decoded):
        return "base64"
    return None


def verify_dp_package(
    data: bytes,
    ca: Optional[x509.Certificate] = None,
    check_time: bool = False,
    now: Optional[datetime.datetime] = None,
) -> DpVerification:
    """Verify a DP package in the order of brief section 6.

    Structural failures stop at the first problem; file-level problems
    (digest mismatch, missing, extra) are all collected. Never raises Failure.
    """
    try:
        return _verify_dp_package(data, ca, check_time, now)
    except Failure as exc:
        return DpVerification(ok=False, problems=[str(exc)])


def _verify_dp_package(data, ca, check_time, now) -> DpVerification:
    entries = read_zip_entries(data, "package")
    for required in (MANIFEST, SIGNATURE, CERTIFICATE):
        if required not in entries:
            raise Failure(f"{required}: missing (also looked for the backslash form)")

    # (1) the certificate is valid
    cert = load_certificate(entries[CERTIFICATE], CERTIFICATE)
    result = DpVerification(ok=False, subject=cert.subject.rfc4514_string())
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise Failure(
                f"{CERTIFICATE}: not issued by the given CA: {type(exc).__name__} {exc}"
            ) from exc
    if check_time:
        at = now or datetime.datetime.now(datetime.timezone.utc)
        if not (cert.not_valid_before_utc <= at <= cert.not_valid_after_utc):
            raise Failure(
                f"{CERTIFICATE}: not valid at {at.isoformat()} (valid "
                f"{cert.not_valid_before_utc.isoformat()} .. {cert.not_valid_after_utc.isoformat()})"
            )

    # (2) the DP public key
    pub = cert.public_key()
    if not isinstance(pub, rsa.RSAPublicKey):
        raise Failure(f"{CERTIFICATE}: public key is {type(pub).__name__}, not RSA")

    # (3) the manifest signature
    manifest = entries[MANIFEST]
    form = _verify_signature(pub, entries[SIGNATURE], manifest)
    if form is None:
        raise Failure(f"{SIGNATURE}: SHA256withRSA signature over manifest.xml does not verify")
    result.signature_format = form

    # (4) every file against its digest
    root = parse_xml_safely(manifest, MANIFEST)
    if root.tag != "files":
        raise Failure(f"{MANIFEST}: root element is <{root.tag}>, expected <files>")
    listed: Dict[str, str] = {}
    for child in root:
        if child.tag != "file":
            raise Failure(f"{MANIFEST}: unexpected element <{child.tag}> in <files>")
        fn = child.find("filename")
        dg = child.find("digest")
        if fn is None or dg is None:
            raise Failure(f"{MANIFEST}: <file> without <filename> and <digest>")
        name = normalize_entry_name((fn.text or "").strip())
        digest = (dg.text or "").strip().lower()
        if not name:
            raise Failure(f"{MANIFEST}: empty <filename>")
        if name in listed:
            raise Failure(f"{MANIFEST}: {name!r} listed twice")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise Failure(f"{MANIFEST}: {name!r} has a digest that is not 64 hex digits")
        if name.startswith(META_DIR):
            raise Failure(f"{MANIFEST}: lists {name!r} inside META-INFO/")
        listed[name] = digest
    if not listed:
        raise Failure(f"{MANIFEST}: lists no files")

    data_files = {n: b for n, b in entries.items() if not n.startswith(META_DIR)}
    for name, digest in listed.items():
        if name not in data_files:
            result.problems.append(f"{name}: listed in the manifest but missing from the zip")
        elif sha256_hex(data_files[name]) != digest:
            result.problems.append(f"{name}: SHA-256 digest does not match the manifest")
    for name in sorted(set(data_files) - set(listed)):
        result.problems.append(f"{name}: in the zip but not listed in the manifest")
    result.files = list(listed)
    result.ok = not result.problems
    return result
