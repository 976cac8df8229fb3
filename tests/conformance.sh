#!/usr/bin/env bash
# Runs both conformance suites the way a CI job runs them, with the binaries that
# `cargo test --workspace --all-targets` built (tests/run.sh calls this after the tests):
#   1. `mydata serve --sandbox --no-sandbox-dp --sandbox-clock`, then
#      `mydata conformance platform --sandbox` against it;
#   2. the example SP pointed at the suite, then `mydata conformance sp` against it.
# JUnit XML goes to target/conformance/{platform,sp}.xml; exit status non-zero when a suite fails.
set -euo pipefail

say() { printf '[conformance] %s\n' "$*"; }
die() { printf '[conformance] error: %s\n' "$*" >&2; exit 1; }

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "${repo_root}"
bin="${CARGO_TARGET_DIR:-${repo_root}/target}/debug"
if [[ ! -x "${bin}/mydata" || ! -x "${bin}/example-sp" ]]; then
    say "building mydata and example-sp"
    cargo build -q -p mydata-cli -p example-sp
fi
out="${repo_root}/target/conformance"
mkdir -p -- "${out}"
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "${p}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf -- "${work}"
}
trap cleanup EXIT

# Free loopback ports, chosen by the kernel.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_http() { # URL, log file
    for _ in $(seq 1 300); do
        if python3 -c 'import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass
' "$1" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    cat -- "$2" >&2
    die "nothing answers at $1"
}

read -r platform_port dp_port sp_port suite_port example_port < <(free_ports 5)

# (1) The reference server passes `conformance platform`.
say "mydata serve --sandbox --no-sandbox-dp --sandbox-clock on 127.0.0.1:${platform_port}"
MYDATA_SANDBOX_DP_URL="http://127.0.0.1:${dp_port}" \
MYDATA_SANDBOX_SP_URL="http://127.0.0.1:${sp_port}" \
    "${bin}/mydata" serve --sandbox --no-sandbox-dp --sandbox-clock \
    --listen "127.0.0.1:${platform_port}" --data-dir "${work}/platform" \
    >"${work}/serve.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:${platform_port}/.well-known/oauth-authorization-server" "${work}/serve.log"
status=0
"${bin}/mydata" conformance platform --sandbox \
    --platform "http://127.0.0.1:${platform_port}" \
    --sandbox-dp-url "http://127.0.0.1:${dp_port}" \
    --sandbox-sp-url "http://127.0.0.1:${sp_port}" \
    --junit "${out}/platform.xml" || status=1

# (2) The example SP passes `conformance sp`.
say "example-sp --sandbox 1 on 127.0.0.1:${example_port}, platform = the suite on 127.0.0.1:${suite_port}"
"${bin}/example-sp" --sandbox 1 --listen "127.0.0.1:${example_port}" \
    --platform "http://127.0.0.1:${suite_port}" >"${work}/example-sp.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:${example_port}/" "${work}/example-sp.log"
"${bin}/mydata" conformance sp --sp "http://127.0.0.1:${example_port}" \
    --listen "127.0.0.1:${suite_port}" --junit "${out}/sp.xml" || status=1

if [[ "${status}" -ne 0 ]]; then
    die "a conformance suite failed (JUnit XML in target/conformance/)"
fi
say "both suites passed (JUnit XML in target/conformance/)"
