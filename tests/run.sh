#!/usr/bin/env bash
# The project's test command: bash tests/run.sh [extra cargo test args]
#
# Prepares the Python interop peers (tests/interop/*.py) in a venv at
# target/interop-venv, checks for the openssl CLI, then runs
#   cargo test --workspace --all-targets "$@"
# and then both conformance suites (tests/conformance.sh),
# with MYDATA_PYTHON and MYDATA_INTEROP_DIR exported for the Rust tests.
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

# (1) the venv; a venv without a working pip (e.g. half-created earlier) is rebuilt.
if [[ ! -x "${py}" ]] || ! "${py}" -m pip --version >/dev/null 2>&1; then
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

# (6) the tests.
say "cargo test --workspace --all-targets $*"
cargo test --workspace --all-targets "$@"

# (7) both conformance suites, as an SP's or an operator's CI runs them (JUnit XML in
# target/conformance/): the reference server must pass `conformance platform`, the example SP
# `conformance sp`.
say "bash tests/conformance.sh"
bash "${script_dir}/conformance.sh"
