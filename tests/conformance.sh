#!/usr/bin/env bash
# Runs the three conformance suites the way a CI job runs them, with the binaries that
# `cargo test --workspace --all-targets` built (tests/run.sh calls this after the tests):
#   1. `mydata serve --sandbox --no-sandbox-dp --sandbox-clock`, then
#      `mydata conformance platform --sandbox` against it;
#   2. the example SP pointed at the suite, then `mydata conformance sp` against it;
#   3. `mydata sandbox-dp` pointed at the suite, then `mydata conformance dp --sandbox`;
#   4. the example DP (one instant, one `--slow 2` instance) pointed at the suite, then
#      `mydata conformance dp --profile` (the profile is written here, with the ports).
# JUnit XML goes to target/conformance/{platform,sp,sandbox-dp,example-dp}.xml; exit status
# non-zero when a suite fails. The DPs keep introspection answers 5 s (the revocation check
# waits that long), so each DP run takes about 10 s.
set -euo pipefail

say() { printf '[conformance] %s\n' "$*"; }
die() { printf '[conformance] error: %s\n' "$*" >&2; exit 1; }

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "${repo_root}"
bin="${CARGO_TARGET_DIR:-${repo_root}/target}/debug"
if [[ ! -x "${bin}/mydata" || ! -x "${bin}/example-sp" || ! -x "${bin}/example-dp" ]]; then
    say "building mydata, example-sp and example-dp"
    cargo build -q -p mydata-cli -p example-sp -p example-dp
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

read -r platform_port dp_port sp_port suite_port example_port dp_suite_port sandbox_dp_port \
    example_dp_port example_slow_port < <(free_ports 9)

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

# (3) The sandbox DP passes `conformance dp`.
say "mydata sandbox-dp on 127.0.0.1:${sandbox_dp_port}, platform = the suite on 127.0.0.1:${dp_suite_port}"
"${bin}/mydata" sandbox-dp --listen "127.0.0.1:${sandbox_dp_port}" \
    --platform "http://127.0.0.1:${dp_suite_port}" --introspection-cache-secs 5 \
    >"${work}/sandbox-dp.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:${sandbox_dp_port}/dp" "${work}/sandbox-dp.log"
"${bin}/mydata" conformance dp --sandbox --dp-url "http://127.0.0.1:${sandbox_dp_port}" \
    --platform-url "http://127.0.0.1:${dp_suite_port}" --cache-secs 5 \
    --junit "${out}/sandbox-dp.xml" || status=1

# (4) The example DP passes `conformance dp`: an instant and a slow instance, both pointed at
# the suite, with the fixture key; its demo records are the profile's citizens.
say "example-dp on 127.0.0.1:${example_dp_port} and (--slow 2) 127.0.0.1:${example_slow_port}"
for spec in "${example_dp_port}:API.EXAMPLEDP1:" "${example_slow_port}:API.EXAMPLEDP2:--slow=2"; do
    IFS=: read -r port rid slow <<<"${spec}"
    MYDATA_RESOURCE_SECRET="conformance-secret-${rid}" "${bin}/example-dp" \
        --listen "127.0.0.1:${port}" --platform "http://127.0.0.1:${dp_suite_port}" \
        --resource-id "${rid}" --key fixtures/pki/dp-moi.key --cert fixtures/pki/dp-moi.pem \
        --introspection-cache-secs 5 ${slow} >"${work}/example-dp-${port}.log" 2>&1 &
    pids+=($!)
    wait_http "http://127.0.0.1:${port}/dp/household-transcript?heartbeat=true" \
        "${work}/example-dp-${port}.log"
done
cat >"${work}/example-dp.json" <<JSON
{
  "platform_url": "http://127.0.0.1:${dp_suite_port}",
  "instant": {"resource_id": "API.EXAMPLEDP1", "resource_secret": "conformance-secret-API.EXAMPLEDP1",
              "endpoint": "http://127.0.0.1:${example_dp_port}/dp/household-transcript"},
  "slow": {"resource_id": "API.EXAMPLEDP2", "resource_secret": "conformance-secret-API.EXAMPLEDP2",
           "endpoint": "http://127.0.0.1:${example_slow_port}/dp/household-transcript"},
  "citizen": {"id": "A120345672", "name": "王大明", "birth_date": "1988-01-01"},
  "other_citizen": {"id": "A240177369", "name": "李佳穎", "birth_date": "1995-12-07"},
  "no_data_id": "F228710436",
  "dp_ca": "${repo_root}/fixtures/pki/sandbox-root-ca.pem",
  "cache_secs": 5,
  "slow_max_secs": 30
}
JSON
"${bin}/mydata" conformance dp --profile "${work}/example-dp.json" \
    --junit "${out}/example-dp.xml" || status=1

if [[ "${status}" -ne 0 ]]; then
    die "a conformance suite failed (JUnit XML in target/conformance/)"
fi
say "all suites passed (JUnit XML in target/conformance/)"
