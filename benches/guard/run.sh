#!/usr/bin/env bash
# The regression guard for the hot paths (issue 19, item 4): instruction
# counts of benches/counts.rs's stakplane scenarios under
# `valgrind --tool=callgrind`, checked against the committed baseline
# benches/guard/baseline.txt with a tolerance. Instruction counts do not
# drift with the machine's load as wall-clock times do, so CI can run it.
# They do change with the compiler: after a toolchain update, --update.
#
#   bash benches/guard/run.sh            # check (CI runs this)
#   bash benches/guard/run.sh --update   # measure and rewrite the baseline
#
# A scenario over its baseline by more than GUARD_TOLERANCE percent
# (default 1: the counts repeat to within 0.1 %) fails the run; one under it by as much is reported, so the
# baseline can be lowered (--update) and the gain kept.
set -euo pipefail
cd "$(dirname "$0")/../.."

baseline=benches/guard/baseline.txt
tolerance=${GUARD_TOLERANCE:-1}
update=false
[ "${1:-}" = "--update" ] && update=true

if ! command -v valgrind >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq valgrind
fi

scenarios=(
    create_drop/stakplane
    monitor_drop_notify/stakplane
    peer_drop_notify/stakplane
    peer_drop_notify/stakplane-trap
    spawn_trivial/stakplane
    channel_pingpong/stakplane
    restart_one_for_one/stakplane
    mailbox_send_handle/stakplane
)

# Instructions per unit of work (100,000 units a scenario, the driver's
# fixed start-up cost included: the same every run), from
# benches/callgrind.sh.
declare -A measured
while read -r name n; do
    measured[$name]=$n
done < <(bash benches/callgrind.sh "${scenarios[@]}")
for s in "${scenarios[@]}"; do
    [ -n "${measured[$s]:-}" ] || { echo "guard: no count for $s" >&2; exit 1; }
done

if $update; then
    {
        echo "# Instructions per unit of work of benches/counts.rs's scenarios"
        echo "# (callgrind, 100,000 units each), written by benches/guard/run.sh --update."
        for s in "${scenarios[@]}"; do
            echo "$s ${measured[$s]}"
        done
    } > "$baseline"
    cat "$baseline"
    exit 0
fi

[ -f "$baseline" ] || { echo "guard: no baseline ($baseline); run with --update" >&2; exit 1; }
fail=0
printf '%-34s %10s %10s %8s\n' scenario baseline now change
for s in "${scenarios[@]}"; do
    base=$(awk -v s="$s" '$1 == s { print $2 }' "$baseline")
    now=${measured[$s]}
    if [ -z "$base" ]; then
        echo "guard: $s has no baseline; run with --update" >&2
        fail=1
        continue
    fi
    change=$(python3 -c "print(f'{($now - $base) * 100 / $base:+.1f}%')")
    printf '%-34s %10s %10s %8s\n' "$s" "$base" "$now" "$change"
    if python3 -c "import sys; sys.exit(0 if $now > $base * (1 + $tolerance / 100) else 1)"; then
        echo "guard: $s regressed past ${tolerance}%: $base -> $now instructions per unit" >&2
        fail=1
    elif python3 -c "import sys; sys.exit(0 if $now < $base * (1 - $tolerance / 100) else 1)"; then
        echo "guard: $s is ${change} under its baseline: lower it with --update"
    fi
done
exit $fail
