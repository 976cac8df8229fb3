#!/usr/bin/env bash
# The project's test command: bash tests/run.sh [extra cargo test args]
#
# Installs the system packages the tests need and the machine lacks (Chromium and
# chromedriver, PostgreSQL's initdb/pg_ctl, the openssl CLI, Python's venv module; all at
# once, with apt-get, as root or through sudo), checks spec/traceability.md against the spec
# and the tests (tests/spec_trace.py: every MUST and decision has a row, every test it names
# exists), prepares the Python interop peers (tests/interop/*.py) in a venv at
# target/interop-venv, starts a private PostgreSQL for the storage tests (unless
# MYDATA_TEST_PG_URL names one), then runs
#   cargo test --workspace --all-targets "$@"
# and then both conformance suites (tests/conformance.sh) and a short kill -9 run
# (benches/crash_soak.rs, 3 kills),
# with MYDATA_PYTHON, MYDATA_INTEROP_DIR and MYDATA_TEST_PG_URL exported for the Rust tests.
# MYDATA_NO_INSTALL=1: install nothing, only name what is missing and stop.
set -euo pipefail

say() { printf '[run.sh] %s\n' "$*"; }
die() { printf '[run.sh] error: %s\n' "$*" >&2; exit 1; }

script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
repo_root="$(cd -- "${script_dir}/.." && pwd -P)"
cd -- "${repo_root}"

venv="${repo_root}/target/interop-venv"
py="${venv}/bin/python"
req="${repo_root}/tests/requirements.txt"
stamp="${venv}/requirements.sha256"
interop_dir="${repo_root}/tests/interop"

command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH (install Rust: https://rustup.rs)"
[[ -f "${req}" ]] || die "missing ${req}"

# (0) system packages: every missing one is found first, then all are installed in one apt-get
# call (Debian's package names). Without apt-get, or as a user without sudo, or with
# MYDATA_NO_INSTALL=1, the script names them all and stops.
venv_ok() { [[ -x "${py}" ]] && "${py}" -m pip --version >/dev/null 2>&1; }
pg_bin_dir() { # the newest installed PostgreSQL's bin directory with initdb and pg_ctl
    local d
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [[ -x "${d}/initdb" && -x "${d}/pg_ctl" ]]; then printf '%s\n' "${d}"; return 0; fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname -- "$(command -v initdb)"
        return 0
    fi
    return 1
}
missing=() # Debian package names
need() { missing+=("$@"); }
command -v cc >/dev/null 2>&1 || need gcc libc6-dev
command -v make >/dev/null 2>&1 || need make
command -v perl >/dev/null 2>&1 || need perl
command -v python3 >/dev/null 2>&1 || need python3
if ! venv_ok && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then need python3-venv; fi
command -v openssl >/dev/null 2>&1 || need openssl
if [[ -z "${CHROMIUM:-}" ]] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1; then
    need chromium
fi
if [[ -z "${CHROMEDRIVER:-}" ]] && ! command -v chromedriver >/dev/null 2>&1; then need chromium-driver; fi
if [[ -z "${MYDATA_TEST_PG_URL:-}" ]] && ! pg_bin_dir >/dev/null; then need postgresql; fi
# psql creates the databases of the CLI's PostgreSQL tests (crates/mydata-cli/tests/live_changes.rs).
if ! command -v psql >/dev/null 2>&1 && [[ " ${missing[*]} " != *" postgresql "* ]]; then
    need postgresql-client
fi
if [[ "${#missing[@]}" -gt 0 ]]; then
    pkgs=("${missing[@]}")
    what="missing system packages: ${pkgs[*]}"
    if [[ "${MYDATA_NO_INSTALL:-0}" != 0 ]]; then
        die "${what}; install them (Debian/Ubuntu: sudo apt-get install ${pkgs[*]}) and rerun (MYDATA_NO_INSTALL is set)"
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "${what} (Debian's names); there is no apt-get here: install their equivalents and rerun"
    as_root=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 \
            || die "${what}; not root and no sudo: run 'apt-get install ${pkgs[*]}' as root and rerun"
        as_root=(sudo)
    fi
    say "installing with ${as_root[*]:+${as_root[*]} }apt-get: ${pkgs[*]}"
    "${as_root[@]}" apt-get update -qq \
        || die "apt-get update failed; install ${pkgs[*]} by hand and rerun"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" \
        || die "apt-get install ${pkgs[*]} failed (output above)"
fi

# (0b) the traceability table (spec/traceability.md): every MUST/SHALL/REQUIRED sentence of spec/
# and every decision has a row, and every test a row names exists. Standard library only, no
# build, about a second; it fails the run before anything slow starts.
say "python3 tests/spec_trace.py"
python3 "${script_dir}/spec_trace.py" \
    || die "spec/traceability.md is out of date (above); see the top of that file"

# (0c) no crate's modules import each other in a cycle (issue 13): `crate::` paths between the
# files of each crate's src/. Standard library only, no build.
say "python3 tests/import_cycles.py"
python3 "${script_dir}/import_cycles.py" "${script_dir}"/../crates/*/src \
    || die "an import cycle among a crate's modules (above)"

# (1) the venv; a venv without a working pip (e.g. half-created earlier) is rebuilt.
if ! venv_ok; then
    say "creating Python venv at target/interop-venv"
    command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH (Python 3.11 or newer is needed)"
    rm -rf -- "${venv}"
    mkdir -p -- "${repo_root}/target"
    venv_log="$(mktemp)"
    if ! python3 -m venv "${venv}" >"${venv_log}" 2>&1; then
        cat -- "${venv_log}" >&2
        rm -rf -- "${venv}"
        if grep -qi 'ensurepip' -- "${venv_log}" || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
            rm -f -- "${venv_log}"
            die "'python3 -m venv' failed because ensurepip is missing; install the venv module (Debian/Ubuntu: sudo apt-get install python3-venv) and rerun"
        fi
        rm -f -- "${venv_log}"
        die "'python3 -m venv ${venv}' failed (output above)"
    fi
    rm -f -- "${venv_log}"
fi

# (2) install the pinned requirements when requirements.txt changed.
req_sum="$("${py}" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "${req}")"
if [[ ! -f "${stamp}" ]] || [[ "$(cat -- "${stamp}")" != "${req_sum}" ]] \
    || ! "${py}" -c 'import cryptography, jwcrypto, authlib, requests, selenium' >/dev/null 2>&1; then
    say "installing tests/requirements.txt into the venv"
    rm -f -- "${stamp}"
    "${py}" -m pip install -q --disable-pip-version-check -r "${req}" \
        || die "pip install -r tests/requirements.txt failed (network or PyPI access needed once)"
    printf '%s\n' "${req_sum}" >"${stamp}"
else
    say "Python requirements up to date"
fi

# (3) the openssl CLI, used by some interop tests.
command -v openssl >/dev/null 2>&1 \
    || die "the openssl command-line tool is required by the interop tests (Debian/Ubuntu: sudo apt-get install openssl)"

# (4) headless Chromium and its WebDriver, used by the page tests (Selenium drives them).
chromium="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
chromedriver="${CHROMEDRIVER:-$(command -v chromedriver || true)}"
[[ -n "${chromium}" && -x "${chromium}" ]] \
    || die "Chromium is required by the page tests (Debian/Ubuntu: sudo apt-get install chromium chromium-driver)"
[[ -n "${chromedriver}" && -x "${chromedriver}" ]] \
    || die "chromedriver is required by the page tests (Debian/Ubuntu: sudo apt-get install chromium-driver)"
export CHROMIUM="${chromium}" CHROMEDRIVER="${chromedriver}"

# (5) tell the Rust tests where the peers are.
export MYDATA_PYTHON="${py}"
export MYDATA_INTEROP_DIR="${interop_dir}"
say "MYDATA_PYTHON=${MYDATA_PYTHON}"
say "MYDATA_INTEROP_DIR=${MYDATA_INTEROP_DIR}"

# (6) a PostgreSQL for the storage tests (spec D45). MYDATA_TEST_PG_URL may name a server whose
# user may CREATE DATABASE (each test creates its own database and drops it). Otherwise a private
# cluster is started: initdb (the newest installed version) into a fresh directory under /tmp,
# trust authentication, listening on 127.0.0.1 only, on a free port, with its socket in that
# directory; it is stopped on exit and its log copied to target/pg/log. initdb refuses to run as
# root, so as root the cluster belongs to the 'postgres' system user (target/ may not be
# readable by it, hence /tmp).
if [[ -n "${MYDATA_TEST_PG_URL:-}" ]]; then
    say "MYDATA_TEST_PG_URL given; using that PostgreSQL"
else
    pg_bin="$(pg_bin_dir || true)"
    [[ -n "${pg_bin}" ]] \
        || die "PostgreSQL (initdb, pg_ctl) is required by the storage tests (Debian/Ubuntu: sudo apt-get install postgresql), or set MYDATA_TEST_PG_URL=postgres://USER@HOST:PORT/postgres to use a running server"
    as_pg=()
    pg_user="$(id -un)"
    pg_dir="$(mktemp -d /tmp/mydata-pg.XXXXXX)"
    if [[ "$(id -u)" = 0 ]]; then
        id -u postgres >/dev/null 2>&1 \
            || die "running as root, the test cluster needs the 'postgres' system user (created by the postgresql package), or set MYDATA_TEST_PG_URL"
        chown postgres: "${pg_dir}"
        as_pg=(runuser -u postgres --)
        pg_user=postgres
    fi
    stop_pg() {
        "${as_pg[@]}" "${pg_bin}/pg_ctl" -D "${pg_dir}/data" -m fast -w stop >/dev/null 2>&1 || true
        mkdir -p -- "${repo_root}/target/pg"
        cp -- "${pg_dir}/log" "${repo_root}/target/pg/log" 2>/dev/null || true
        rm -rf -- "${pg_dir}"
    }
    trap stop_pg EXIT
    say "starting a private PostgreSQL $("${pg_bin}/postgres" --version | awk '{print $3}') in ${pg_dir}"
    "${as_pg[@]}" "${pg_bin}/initdb" -D "${pg_dir}/data" -U "${pg_user}" --auth=trust -E UTF8 \
        --no-sync >"${pg_dir}/initdb.log" 2>&1 \
        || { cat -- "${pg_dir}/initdb.log" >&2; die "initdb failed (output above)"; }
    pg_port=""
    for _ in 1 2 3; do
        port="$("${py}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        if "${as_pg[@]}" "${pg_bin}/pg_ctl" -D "${pg_dir}/data" -l "${pg_dir}/log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p ${port} -k ${pg_dir} -c fsync=off -c max_connections=300" \
            start >/dev/null 2>&1; then
            pg_port="${port}"
            break
        fi
    done
    [[ -n "${pg_port}" ]] || { cat -- "${pg_dir}/log" >&2 || true; die "the test PostgreSQL did not start (log above)"; }
    export MYDATA_TEST_PG_URL="postgres://${pg_user}@127.0.0.1:${pg_port}/postgres"
    say "MYDATA_TEST_PG_URL=${MYDATA_TEST_PG_URL}"
fi

# (7) the tests.
say "cargo test --workspace --all-targets $*"
cargo test --workspace --all-targets "$@"

# (8) both conformance suites, as an SP's or an operator's CI runs them (JUnit XML in
# target/conformance/): the reference server must pass `conformance platform`, the example SP
# `conformance sp`.
say "bash tests/conformance.sh"
bash "${script_dir}/conformance.sh"

# (9) a short kill -9 run under load (spec D47): `mydata serve` killed and restarted 3 times while
# consents run; every consent must end in one verified delivery or its documented code. The full
# run is `cargo bench -p mydata-cli --bench crash_soak` (20 kills). Built with the test profile,
# so it reuses the binaries above.
say "crash_soak (3 kills)"
MYDATA_SOAK_KILLS="${MYDATA_SOAK_KILLS:-3}" cargo bench --profile dev -p mydata-cli --bench crash_soak
