#!/usr/bin/env bash
# Instruction counts of every scenario of benches/counts.rs under
# callgrind, per unit of work (the totals divided by 100,000). Stable from
# run to run, unlike wall-clock times on a shared VM.
#
#   bash benches/callgrind.sh            # every scenario
#   bash benches/callgrind.sh create_drop/stakplane ...
#
# The driver is built as one codegen unit, in its own target directory
# (`counts/` under CARGO_TARGET_DIR, or under target/). With the default
# 16 units, how the generic code of stakker and the executor is split and
# inlined depends on whatever else the driver holds: adding two scenarios
# to benches/counts.rs moved channel_pingpong's count by 8 % with no
# change to the code it runs. One unit makes a count a property of the
# code measured. The criterion benches keep cargo's default bench
# profile. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/counts"
CARGO_TARGET_DIR="$target" CARGO_PROFILE_BENCH_CODEGEN_UNITS=1 \
    cargo bench --bench counts --no-run 2>/dev/null
bin=$(ls -t "$target"/release/deps/counts-* | grep -v '\.d$' | head -1)
if [ "$#" -eq 0 ]; then
    set -- $({ "$bin" list 2>&1 || true; } | sed -n 's/^  //p')
fi
out=$(mktemp -d)
for s in "$@"; do
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$s" >/dev/null 2>"$out/log"
    total=$(grep -o 'Collected : [0-9]*' "$out/log" | grep -o '[0-9]*$')
    printf '%-36s %8d\n' "$s" $((total / 100000))
done
rm -rf "$out"
