"""Calls the platform's MyData-API over HTTPS with Python `requests`, optionally presenting a
client certificate (mutual TLS): a peer we did not write.

Argument (one JSON object): {"url", "ca", "cert"?, "key"?, "headers"?}.
Prints {"status", "body", "tls_version"} or, when the TLS handshake or connection fails,
{"error": "<exception class>: <text>"}.
"""

import json
import sys

import requests
import urllib3


def main() -> None:
    args = json.loads(sys.argv[1])
    cert = (args["cert"], args["key"]) if args.get("cert") else None
    try:
        with requests.Session() as s:
            r = s.get(
                args["url"],
                headers=args.get("headers", {}),
                cert=cert,
                verify=args["ca"],
                timeout=10,
                stream=True,
            )
            version = None
            sock = getattr(getattr(r.raw, "_connection", None), "sock", None)
            if sock is not None and hasattr(sock, "version"):
                version = sock.version()
            body = r.content.decode("utf-8", "replace")
            print(json.dumps({"status": r.status_code, "body": body, "tls_version": version}))
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))


if __name__ == "__main__":
    main()
