#!/usr/bin/env bash
# The test suite N times in a row on a loaded machine: bash tests/loaded.sh [RUNS] [HOGS]
#
# Starts HOGS CPU-bound processes (default 2: one per core of the reference machine) that run
# for the whole time, then `bash tests/run.sh` RUNS times (default 10), each to its end
# (`--no-fail-fast`), and prints one line per run (result, seconds) and the totals. The first
# run builds; the others reuse the build. Logs: target/loaded/run-N.log. Exit status 1 when any
# run failed. Not part of CI (10 runs take hours on 2 cores); run it before a release and after
# touching timing-sensitive tests.
set -uo pipefail

runs="${1:-10}"
hogs="${2:-2}"
repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
out="${repo_root}/target/loaded"
mkdir -p -- "${out}"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "${p}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 1 "${hogs}"); do
    sh -c 'while :; do :; done' &
    pids+=($!)
done
printf '[loaded] %s CPU hogs running; %s runs of tests/run.sh\n' "${hogs}" "${runs}"

failed=0
for n in $(seq 1 "${runs}"); do
    start=$(date +%s)
    if bash "${repo_root}/tests/run.sh" --no-fail-fast >"${out}/run-${n}.log" 2>&1; then
        result=PASS
    else
        result=FAIL
        failed=$((failed + 1))
    fi
    printf '[loaded] run %s: %s in %s s (log %s)\n' "${n}" "${result}" "$(( $(date +%s) - start ))" \
        "${out}/run-${n}.log"
    if [[ "${result}" == FAIL ]]; then
        grep -E '^test .* FAILED$|^---- |panicked at' "${out}/run-${n}.log" | head -20 || true
    fi
done
printf '[loaded] %s of %s runs passed\n' "$((runs - failed))" "${runs}"
[[ "${failed}" -eq 0 ]]
