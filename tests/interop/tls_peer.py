"""A TLS server the platform calls, written with Python's own `ssl` module (code we
did not write, `ssl` over a plain socket): the SP-API of an SP, or a server that offers only
old TLS versions.

One JSON argument:
  {"ready_file": PATH, "cert": PEM_PATH, "key": PEM_PATH,
   "max_version": "TLSv1_1" | null, "timeout": SECONDS}

The server listens on 127.0.0.1 (port 0), writes its port to `ready_file`, and serves until
one request has been answered or one TLS handshake has failed (or `timeout` passes). A POST is
answered 200 with an empty body. Prints one JSON object on standard output:
  {"requests": [{"method", "path", "content_type", "body"}], "handshake_errors": [TEXT],
   "negotiated": [VERSION]}
"""

import json
import os
import socket
import ssl
import sys
import time
import warnings

# TLSVersion.TLSv1_1 is deprecated: naming it is the point of the old-server mode.
warnings.filterwarnings("ignore", category=DeprecationWarning)


def main():
    args = json.loads(sys.argv[1])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args["cert"], args["key"])
    if args.get("max_version"):
        # An old server: nothing newer than this version is offered. OpenSSL may refuse to
        # speak TLS 1.1 at all at its default security level; either way the handshake fails.
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = getattr(ssl.TLSVersion, args["max_version"])
        try:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        except ssl.SSLError:
            pass
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(1.0)
    tmp = args["ready_file"] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.rename(tmp, args["ready_file"])

    out = {"requests": [], "handshake_errors": [], "negotiated": []}
    deadline = time.monotonic() + float(args.get("timeout", 60))
    while time.monotonic() < deadline and not out["requests"] and not out["handshake_errors"]:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            continue
        conn.settimeout(10)
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            out["handshake_errors"].append(str(e))
            conn.close()
            continue
        out["negotiated"].append(tls.version())
        try:
            serve_one(tls, out)
        finally:
            tls.close()
    print(json.dumps(out))


def serve_one(tls, out):
    """Reads one HTTP/1.1 request and answers 200 (no keep-alive)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(4096)
        if not chunk:
            return
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = tls.recv(4096)
        if not chunk:
            break
        rest += chunk
    out["requests"].append(
        {
            "method": method,
            "path": path,
            "content_type": headers.get("content-type"),
            "body": rest[:length].decode("utf-8", "replace"),
        }
    )
    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


if __name__ == "__main__":
    main()
