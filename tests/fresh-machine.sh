#!/usr/bin/env bash
# tests/fresh-machine.sh: the README's two commands on a fresh machine.
#
# Builds a minimal Debian 12 root with debootstrap (--variant=minbase bookworm, plus only what a
# newcomer has: build-essential, git, python3, python3-venv, perl, make, ca-certificates), makes
# the host's Rust toolchain available inside it read-only (an empty CARGO_HOME inside, so crates
# come fresh from crates.io), clones the repository's committed HEAD into it, and runs there,
# exactly as the README writes them:
#   1. cargo run -q -p mydata-cli -- serve --sandbox   (must answer on 127.0.0.1:8080, then stopped)
#   2. bash tests/run.sh                                (must pass; it installs what it needs)
# then prints a summary and the total duration. Nothing is installed in the root by hand.
#
# Needs root (debootstrap, chroot, mounts) and network access to Debian's mirror, crates.io and
# PyPI; installs the host's debootstrap with apt-get when missing. Slow: everything is built from
# scratch (about an hour on 2 cores), so .ci/run does not call it.
#
# The root lives in target/fresh-machine/root (MYDATA_FRESH_ROOT to change), is rebuilt on every
# run, and is left in place afterwards for inspection (logs in target/fresh-machine/). All mounts
# are made in a private mount namespace and every process of the run is in its own PID
# namespace, so nothing outlives the script; a trap checks that no mount is left either way.
# Port 8080 and 8081 on the host's loopback must be free (the root shares the host's network).
#
# Environment: MYDATA_FRESH_MIRROR (default http://deb.debian.org/debian),
# MYDATA_FRESH_SERVE_TIMEOUT (seconds for the main command to build and answer; default 5400).
set -euo pipefail

say() { printf '[fresh-machine] %s\n' "$*"; }
die() { printf '[fresh-machine] error: %s\n' "$*" >&2; exit 1; }

t0=$(date +%s)
elapsed() { local s=$(($(date +%s) - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
out="${repo_root}/target/fresh-machine"
root="${MYDATA_FRESH_ROOT:-${out}/root}"
mirror="${MYDATA_FRESH_MIRROR:-http://deb.debian.org/debian}"
serve_timeout="${MYDATA_FRESH_SERVE_TIMEOUT:-5400}"

[[ "$(id -u)" = 0 ]] || die "needs root (debootstrap, chroot and mounts); run it with sudo"
for tool in git unshare chroot mount findmnt python3; do
    command -v "${tool}" >/dev/null 2>&1 || die "${tool} not found on PATH"
done
command -v rustc >/dev/null 2>&1 || die "rustc not found on PATH (the host's toolchain is lent to the root)"
toolchain="$(rustc --print sysroot)"
[[ -x "${toolchain}/bin/cargo" && -x "${toolchain}/bin/rustc" ]] \
    || die "no cargo and rustc in the active toolchain ${toolchain}"
[[ "${root}" != / && "${root}" = /* ]] || die "MYDATA_FRESH_ROOT must be an absolute path other than /"

head="$(git -C "${repo_root}" rev-parse HEAD)"
if [[ -n "$(git -C "${repo_root}" status --porcelain --untracked-files=no)" ]]; then
    say "note: uncommitted changes in ${repo_root} are not part of the run (it clones HEAD ${head:0:12})"
fi

for port in 8080 8081; do
    if python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "${port}" 2>/dev/null; then :; else
        die "127.0.0.1:${port} is in use on this host; the main command listens there (the root shares the host's network)"
    fi
done

mounts_under_root() { findmnt -rn -o TARGET | awk -v r="${root}" 'index($0, r "/") == 1 || $0 == r'; }
ns_pidfile="${out}/unshare.pid"
cleanup() {
    local m ns_pid
    # When this script is interrupted: the run's PID namespace dies with its unshare
    # (--kill-child); unshare waits through SIGTERM, hence SIGKILL.
    ns_pid="$(cat -- "${ns_pidfile}" 2>/dev/null || true)"
    if [[ -n "${ns_pid}" ]] && kill -0 "${ns_pid}" 2>/dev/null; then kill -KILL "${ns_pid}" 2>/dev/null || true; fi
    rm -f -- "${ns_pidfile}"
    # The mounts were made in a private namespace; any left here would be a bug, but check.
    for m in $(mounts_under_root | sort -r); do umount -l -- "${m}" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# (1) the host's debootstrap.
if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing the host's debootstrap with apt-get"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap \
        || die "apt-get install debootstrap failed"
fi

# (2) a fresh minimal bookworm with only what a newcomer has.
mkdir -p -- "${out}"
if [[ -e "${root}" ]]; then
    [[ -z "$(mounts_under_root)" ]] || die "something is mounted under ${root}; unmount it first"
    say "removing the previous root ${root}"
    rm -rf --one-file-system -- "${root}"
fi
newcomer="build-essential,git,python3,python3-venv,perl,make,ca-certificates"
say "debootstrap --variant=minbase --include=${newcomer} bookworm (${mirror})"
t_boot=$(date +%s)
unshare --mount --propagation private \
    debootstrap --variant=minbase --include="${newcomer}" bookworm "${root}" "${mirror}" \
    >"${out}/debootstrap.log" 2>&1 \
    || { tail -n 30 -- "${out}/debootstrap.log" >&2; die "debootstrap failed (log: ${out}/debootstrap.log)"; }
d_boot="$(elapsed "${t_boot}")"

# The machine's setting, not the newcomer's packages: the mirror's updates and security suites
# (as a Debian 12 installation has them), the host's name resolution, the host's own CA
# certificates and apt network options (this host may reach the network through a proxy that
# needs them), and a policy-rc.d so that packages installed in the root do not start services
# (there is no init in a chroot; tests/run.sh starts its own PostgreSQL).
cat >"${root}/etc/apt/sources.list" <<EOF
deb ${mirror} bookworm main
deb ${mirror} bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
cp -L -- /etc/resolv.conf "${root}/etc/resolv.conf"
printf '#!/bin/sh\nexit 101\n' >"${root}/usr/sbin/policy-rc.d"
chmod 0755 -- "${root}/usr/sbin/policy-rc.d"
for f in /etc/apt/apt.conf.d/*; do
    if [[ -f "${f}" ]] && grep -q '^[[:space:]]*Acquire::' -- "${f}"; then
        cp -- "${f}" "${root}/etc/apt/apt.conf.d/"
    fi
done
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p -- "${root}/usr/local/share/ca-certificates"
    cp -- /usr/local/share/ca-certificates/*.crt "${root}/usr/local/share/ca-certificates/"
    chroot "${root}" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates in the root failed"
fi

# (3) the repository, as a newcomer clones it.
say "cloning ${repo_root} at HEAD ${head:0:12} into the root"
git clone -q --no-hardlinks --no-checkout -- "${repo_root}" "${root}/root/mydata-rs"
git -C "${root}/root/mydata-rs" checkout -q --detach "${head}"

# (4) the script run inside: the README's two commands, as written.
cat >"${root}/root/fresh-run.sh" <<'EOF'
#!/bin/bash
set -euo pipefail
say() { printf '[fresh-machine:root] %s\n' "$*"; }
elapsed() { local s=$(($(date +%s) - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
cd /root/mydata-rs
say "cargo $(cargo --version | cut -d' ' -f2), rustc $(rustc --version | cut -d' ' -f2), $(cc --version | head -n1)"
for pkg in libssl-dev libpq-dev pkg-config chromium chromium-driver postgresql; do
    if dpkg -s "${pkg}" >/dev/null 2>&1; then say "unexpected: ${pkg} is installed"; exit 1; fi
done
say "not installed: libssl-dev libpq-dev pkg-config chromium chromium-driver postgresql"

# 1. The main command answers on its port.
t=$(date +%s)
say "\$ cargo run -q -p mydata-cli -- serve --sandbox"
setsid cargo run -q -p mydata-cli -- serve --sandbox >/root/serve.log 2>&1 &
serve_pid=$!
answered=""
for _ in $(seq 1 "${SERVE_TIMEOUT}"); do
    if python3 -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()' \
        http://127.0.0.1:8080/.well-known/oauth-authorization-server >/dev/null 2>&1; then
        answered=yes
        break
    fi
    kill -0 "${serve_pid}" 2>/dev/null || break
    sleep 1
done
kill -TERM -- "-${serve_pid}" 2>/dev/null || true
wait "${serve_pid}" 2>/dev/null || true
if [[ -z "${answered}" ]]; then
    tail -n 40 /root/serve.log >&2
    say "FAIL: the main command did not answer on 127.0.0.1:8080 ($(elapsed "${t}"))"
    exit 1
fi
say "main command answered on http://127.0.0.1:8080 after $(elapsed "${t}"); stopped"
echo "serve $(( $(date +%s) - t ))" >>/root/fresh-times

# 2. The test command passes.
t=$(date +%s)
say "\$ bash tests/run.sh"
if ! bash tests/run.sh; then
    say "FAIL: the test command failed ($(elapsed "${t}"))"
    exit 1
fi
say "test command passed after $(elapsed "${t}")"
echo "tests $(( $(date +%s) - t ))" >>/root/fresh-times
EOF
chmod 0755 -- "${root}/root/fresh-run.sh"

# (5) run it: a private mount namespace (proc, sys read-only, a fresh devpts, a tmpfs for
# /dev/shm, the toolchain read-only), a PID namespace that ends every process with the run.
say "running the README's two commands in the root (log: ${out}/run.log)"
t_run=$(date +%s)
status=0
# shellcheck disable=SC2016 # expanded by the inner shell
bash -c 'echo "$$" >"$1"; shift; exec "$@"' _ "${ns_pidfile}" \
    unshare --mount --propagation private --pid --fork --kill-child \
    env ROOT="${root}" TOOLCHAIN="${toolchain}" SERVE_TIMEOUT="${serve_timeout}" bash -c '
set -euo pipefail
mount -t proc proc "${ROOT}/proc"
mount -t sysfs -o ro sysfs "${ROOT}/sys"
mkdir -p "${ROOT}/dev/pts" "${ROOT}/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "${ROOT}/dev/pts"
mount -t tmpfs -o mode=1777 shm "${ROOT}/dev/shm"
mkdir -p "${ROOT}/opt/rust"
mount --bind "${TOOLCHAIN}" "${ROOT}/opt/rust"
mount -o remount,bind,ro "${ROOT}/opt/rust"
exec chroot "${ROOT}" /usr/bin/env -i \
    HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
    PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/root/.cargo SERVE_TIMEOUT="${SERVE_TIMEOUT}" \
    /bin/bash /root/fresh-run.sh
' 2>&1 | tee "${out}/run.log" || status=$?
rm -f -- "${ns_pidfile}"
d_run="$(elapsed "${t_run}")"

serve_s="$(awk '$1 == "serve" {print $2}' "${root}/root/fresh-times" 2>/dev/null || true)"
tests_s="$(awk '$1 == "tests" {print $2}' "${root}/root/fresh-times" 2>/dev/null || true)"
fmt_s() { if [[ -n "$1" ]]; then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); else printf 'not reached or failed'; fi; }
say "summary (HEAD ${head:0:12}, toolchain $(rustc --version | cut -d' ' -f2)):"
say "  debootstrap minbase bookworm + newcomer packages: ${d_boot}"
say "  1. cargo run -q -p mydata-cli -- serve --sandbox -> answered on :8080: $(fmt_s "${serve_s}") (first build included)"
say "  2. bash tests/run.sh -> passed: $(fmt_s "${tests_s}") (package installs included)"
say "  run in the root: ${d_run}; total: $(elapsed "${t0}")"
if [[ "${status}" -ne 0 || -z "${tests_s}" ]]; then
    die "the README's commands did not both succeed on a fresh machine (log: ${out}/run.log)"
fi
say "PASS: both README commands work on a fresh Debian 12 with no package installed by hand"
