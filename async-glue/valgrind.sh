#!/usr/bin/env bash
# Runs every test binary of stakplane-async under valgrind's memcheck.
#
# Any memory error (invalid read/write, use of uninitialised memory,
# invalid free) or definite leak fails the run (`--error-exitcode=1`).
# "Possibly lost" and "still reachable" blocks are not errors: they are
# what long-lived threads (futures-timer's timer thread) and thread-local
# tables hold at exit.
#
# Usage: async-glue/valgrind.sh            (from anywhere in the repo)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
    echo "valgrind not found: install it (Debian: apt-get install valgrind)" >&2
    exit 2
fi

# Build the test binaries (debug, so assertions and overflow checks stay on)
# and list their paths.
mapfile -t bins < <(
    cargo test -p stakplane-async --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])
'
)
if [ "${#bins[@]}" -eq 0 ]; then
    echo "no test binaries found" >&2
    exit 2
fi

# Property tests run fewer cases here (memory errors show in any case
# that reaches them; `cargo test` runs the full count).
export PROPTEST_CASES=128
# Real-time tests declare a hang after 10 s; under valgrind a busy host
# needs longer (see `deadline` in tests/interop.rs).
export STAKPLANE_HANG_SECS=120

status=0
for bin in "${bins[@]}"; do
    echo "== valgrind $(basename "$bin")"
    # One test thread: valgrind serialises threads anyway, and the output
    # stays readable.
    if ! valgrind --quiet --error-exitcode=1 --leak-check=full \
        --errors-for-leak-kinds=definite --show-leak-kinds=definite \
        "$bin" --test-threads=1 -q; then
        echo "valgrind: errors in $(basename "$bin")" >&2
        status=1
    fi
done
exit "$status"
