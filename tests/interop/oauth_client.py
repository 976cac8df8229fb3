"""An independent OAuth client against the platform's authorization server (issue 4).

Uses Authlib's requests client for RFC 7662 introspection (client_secret_basic) and plain
`requests` for RFC 8414 discovery and userinfo. Prints one JSON object with what it saw.

usage: oauth_client.py BASE_URL RESOURCE_ID RESOURCE_SECRET TOKEN OTHER_ID OTHER_SECRET
"""
import json
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session


def main() -> None:
    base, rid, secret, token, other_id, other_secret = sys.argv[1:7]
    out = {}

    meta = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10)
    out["metadata_status"] = meta.status_code
    meta = meta.json()
    out["metadata"] = meta
    endpoint = meta["introspection_endpoint"].replace(meta["issuer"], base)
    userinfo = meta["userinfo_endpoint"].replace(meta["issuer"], base)

    own = OAuth2Session(rid, secret, token_endpoint_auth_method="client_secret_basic")
    r = own.introspect_token(endpoint, token=token, token_type_hint="access_token")
    out["own"] = {"status": r.status_code, "body": r.json()}

    other = OAuth2Session(other_id, other_secret, token_endpoint_auth_method="client_secret_basic")
    r = other.introspect_token(endpoint, token=token)
    out["other"] = {"status": r.status_code, "body": r.json()}

    wrong = OAuth2Session(rid, secret[::-1], token_endpoint_auth_method="client_secret_basic")
    r = wrong.introspect_token(endpoint, token=token)
    out["wrong"] = {"status": r.status_code, "www": r.headers.get("WWW-Authenticate"),
                    "body": r.text}

    r = requests.post(endpoint, data={"token": token}, timeout=10)
    out["anonymous"] = {"status": r.status_code}

    r = requests.get(userinfo, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    out["userinfo"] = {"status": r.status_code, "body": r.json() if r.ok else None}
    r = requests.get(userinfo, headers={"Authorization": "Bearer x" + token}, timeout=10)
    out["userinfo_bad"] = {"status": r.status_code, "www": r.headers.get("WWW-Authenticate")}

    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
