#!/usr/bin/env bash
# The wall-clock targets of issue 19, checked the way the issue states
# them: whole criterion runs of the side-by-side groups, one ratio per
# run (stakplane's time over the peer's in the same run; for a floor
# row, the floor's over the peer's), the median of the runs. Not run by CI: wall-clock times on a shared VM
# drift by 15-30 % from run to run (CI runs the instruction guard,
# benches/guard/run.sh, instead).
#
#   bash benches/targets/run.sh                       # 5 rounds, every group
#   RUNS=10 bash benches/targets/run.sh               # 10 rounds
#   ONLY="devices restart" bash benches/targets/run.sh  # some groups
#   bash benches/targets/run.sh --report              # the saved rounds again
#
# Groups: devices (device_create_drop, device_monitor_drop_notify,
# device_peer_drop_notify, call_guarded), pingpong (channel_pingpong),
# restart (restart_one_for_one), tcp (tcp_echo_roundtrip). A round runs
# each chosen group once, in the order given.
#
# After each round the time criterion printed for each function (the
# slope estimate, else the mean, of target/criterion/<group>/<function>/
# new/estimates.json) is saved as round-<n>.json in
# ${CARGO_TARGET_DIR:-target}/targets/, with criterion's output as
# printed (round-<n>-<bench>.txt). A new measurement clears the rounds
# of the one before, and the criterion data of the groups it runs.
#
# The report prints every round's ratio, the median, and whether each
# target is met (the median at or under its limit; for the restart, no
# round above 2.0 either). A ratio missing from some rounds says how
# many it has; one missing from all is reported missing. The floor rows
# (bare stakker doing the least a device layer must do,
# benches/devices/floor.rs) say where a target sits against what
# stakker itself can reach; call_guarded's row has no target. A second
# table gives, for each device target, the room it leaves a device layer:
# the target over its floor's median ratio to the same peer, the most
# stakplane's time may be over the floor's for the target to hold,
# beside the median of what it is (BENCHMARKS.md, eleventh session).
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${CARGO_TARGET_DIR:-target}
rounds_dir="$target/targets"
runs=${RUNS:-5}
groups=${ONLY:-"devices pingpong restart tcp"}

case "${1:-}" in
    "" | --report) ;;
    *) echo "usage: bash benches/targets/run.sh [--report]" >&2; exit 2 ;;
esac
if ! [[ $runs =~ ^[1-9][0-9]*$ ]]; then
    echo "RUNS must be a positive integer, not '$runs'" >&2
    exit 2
fi

report() {
    python3 - "$rounds_dir" <<'EOF'
import json, os, statistics, sys

rounds_dir = sys.argv[1]
files = sorted(
    (f for f in os.listdir(rounds_dir) if f.startswith("round-") and f.endswith(".json")),
    key=lambda f: int(f[6:-5]),
) if os.path.isdir(rounds_dir) else []
rounds = [json.load(open(os.path.join(rounds_dir, f))) for f in files]
if not rounds:
    sys.exit("no rounds saved: run benches/targets/run.sh first")

PEERS = ["futures-localpool", "async-executor", "tokio-localset"]

def fastest_peer(r):
    times = [r.get(f"channel_pingpong/{p}") for p in PEERS]
    times = [x for x in times if x is not None]
    return min(times) if times else None

def floor(num, den):
    """A floor row: bare stakker's time over the peer's, no target."""
    return (f"  floor: {num} / {den}", num, den, None, None, None)

# Per criterion group, its rows: (label, numerator, denominator, limit,
# max_limit, floor), the functions named within the group (a denominator
# may be a function of the round instead); a target row when limit is
# set. A target's `floor` is the function of bare stakker doing the
# least a device layer must do for it (see the room table below).
KEYED, SLOT = "stakker-keyed", "stakker-slot"
KEYED_TRAP, DYN, DYN_TRAP = "stakker-keyed-trap", "stakker-dynamic", "stakker-dynamic-trap"
GROUPS = {
    "device_create_drop": [
        ("create / stakker", "stakplane", "stakker", 1.3, None, KEYED),
        ("create / async-backplane", "stakplane", "async-backplane", 0.8, None, KEYED),
        floor(KEYED, "async-backplane"),
        floor(KEYED, "stakker"),
        floor(SLOT, "stakker"),
    ],
    "device_monitor_drop_notify": [
        ("monitor / stakker", "stakplane", "stakker", 1.4, None, KEYED),
        floor(KEYED, "stakker"),
        ("monitor / async-backplane-read", "stakplane", "async-backplane-read", 0.8, None, KEYED),
        ("monitor / async-backplane", "stakplane", "async-backplane", 1.0, None, KEYED),
    ],
    "device_peer_drop_notify": [
        ("peer-trap / async-backplane-read", "stakplane-trap", "async-backplane-read", 0.8, None, DYN_TRAP),
        floor(KEYED_TRAP, "async-backplane-read"),
        floor(DYN_TRAP, "async-backplane-read"),
        ("peer / async-backplane", "stakplane", "async-backplane", 1.0, None, DYN),
        floor(KEYED, "async-backplane"),
        floor(DYN, "async-backplane"),
    ],
    "call_guarded": [("call_guarded / stakker", "stakplane", "stakker", None, None, None)],
    "channel_pingpong": [("pingpong / fastest peer", "stakplane", fastest_peer, 1.0, None, None)],
    "restart_one_for_one": [("restart / stakker", "stakplane", "stakker", 1.8, 2.0, None)],
    "tcp_echo_roundtrip": [
        ("tcp echo async / tokio", "stakplane-async", "tokio-current-thread", 1.05, None, None),
        ("tcp echo push / tokio", "stakplane-push", "tokio-current-thread", 1.05, None, None),
    ],
}

def qualified(group, function):
    """A function's full name, `group/function` (or as it is: a
    function of the round, or None)."""
    return function if function is None or callable(function) else f"{group}/{function}"

# Every row with its functions' full names: (label, numerator,
# denominator, floor, limit, max_limit), then the floor's own name.
ROWS = [
    (label, *(qualified(g, f) for f in (num, den, fl)), limit, max_limit, fl)
    for g, rows in GROUPS.items()
    for label, num, den, limit, max_limit, fl in rows
]

def ratios_of(num, den):
    """The per-round ratios num / den, over the rounds that have both."""
    out = []
    for r in rounds:
        a = r.get(num)
        b = den(r) if callable(den) else r.get(den)
        if a is not None and b:
            out.append(a / b)
    return out

n = len(rounds)
print(f"{n} round{'' if n == 1 else 's'} ({rounds_dir}): each ratio per round, then the median")
print()
print("| ratio | per round | median | target |")
print("|---|---|---|---|")
for label, num, den, _, limit, max_limit, _ in ROWS:
    ratios = ratios_of(num, den)
    if not ratios:
        if limit is not None:
            print(f"| {label} | missing from every round | - | NOT checked |")
        continue
    med = statistics.median(ratios)
    if limit is None:
        verdict = "floor" if "floor" in label else "-"
    else:
        met = med <= limit
        want = f"<= {limit}"
        if max_limit is not None:
            met = met and max(ratios) <= max_limit
            want += f", none above {max_limit}"
        verdict = f"{want}: {'met' if met else 'NOT met'}"
    runs = " ".join(f"{x:.3f}" for x in ratios)
    if len(ratios) < n:
        runs += f" (in {len(ratios)} of {n} rounds)"
    print(f"| {label} | {runs} | {med:.3f} | {verdict} |")

# What each target leaves a device layer over its floor. With the floor
# at f against the peer (the median of the rounds), a target of t lets
# stakplane take at most t / f of the floor's time: the room. Beside it,
# stakplane's time over the floor's (the median of the rounds).
room = []
for label, num, den, fl, limit, _, name in ROWS:
    if limit is None or fl is None:
        continue
    f, over = ratios_of(fl, den), ratios_of(num, fl)
    if f and over:
        f_med = statistics.median(f)
        room.append((label, name, f_med, limit / f_med, statistics.median(over)))
if room:
    print()
    print("| target | floor, against the peer | room: target / floor | stakplane / floor |")
    print("|---|---|---|---|")
    for label, fl, f_med, r, o in room:
        print(f"| {label} | {fl}: {f_med:.3f} | {r:.3f} | {o:.3f} |")
EOF
}

collect() {
    python3 - "$target/criterion" "$rounds_dir/round-$1.json" "${crit_groups[@]}" <<'EOF'
import json, os, sys

crit, out, groups = sys.argv[1], sys.argv[2], sys.argv[3:]
times = {}
for group in groups:
    gdir = os.path.join(crit, group)
    if not os.path.isdir(gdir):
        continue
    for function in sorted(os.listdir(gdir)):
        path = os.path.join(gdir, function, "new", "estimates.json")
        if not os.path.isfile(path):
            continue
        est = json.load(open(path))
        point = (est.get("slope") or est.get("mean") or {}).get("point_estimate")
        if point is not None:
            times[f"{group}/{function}"] = point
if not times:
    print(f"warning: no criterion results found for {' '.join(groups)}", file=sys.stderr)
json.dump(times, open(out, "w"), indent=1, sort_keys=True)
EOF
}

if [ "${1:-}" = "--report" ]; then
    report
    exit 0
fi

benches=()
crit_groups=()
for g in $groups; do
    case "$g" in
        devices)
            benches+=("devices|")
            crit_groups+=(device_create_drop device_monitor_drop_notify device_peer_drop_notify call_guarded)
            ;;
        pingpong) benches+=("glue|channel_pingpong"); crit_groups+=(channel_pingpong) ;;
        restart) benches+=("supervise|restart_one_for_one"); crit_groups+=(restart_one_for_one) ;;
        tcp) benches+=("net|tcp_echo_roundtrip"); crit_groups+=(tcp_echo_roundtrip) ;;
        *) echo "unknown group '$g' (devices, pingpong, restart, tcp)" >&2; exit 2 ;;
    esac
done
if [ "${#benches[@]}" -eq 0 ]; then
    echo "no group chosen (ONLY: devices, pingpong, restart, tcp)" >&2
    exit 2
fi

echo "== building" >&2
for b in "${benches[@]}"; do
    cargo bench -q --bench "${b%%|*}" --no-run
done

# Only this measurement's results count: a group's data left by an
# earlier run would otherwise be read as this round's if its run failed.
rm -rf "$rounds_dir"
for c in "${crit_groups[@]}"; do
    rm -rf "${target:?}/criterion/$c"
done
mkdir -p "$rounds_dir"
for round in $(seq 1 "$runs"); do
    echo "== round $round of $runs" >&2
    for b in "${benches[@]}"; do
        bench=${b%%|*}
        filter=${b#*|}
        log="$rounds_dir/round-$round-$bench.txt"
        args=()
        [ -n "$filter" ] && args=(-- "$filter")
        cargo bench --bench "$bench" "${args[@]}" >"$log" 2>&1 || {
            echo "cargo bench --bench $bench failed: see $log" >&2
            exit 1
        }
    done
    collect "$round"
done
report
