#!/usr/bin/env bash
# stakplane, Erlang/OTP and ractor_cluster side by side, on loopback: the
# same ping-pong between two nodes, in one table (issue 17, item 6). Not
# run by CI.
#
#   bash benches/erlang/run.sh                 # cargo bench, then Erlang
#   bash benches/erlang/run.sh --no-cargo      # Erlang only
#   bash benches/erlang/run.sh --bursts 5000 --rounds 200000
#
# stakplane and ractor_cluster: the criterion groups `remote_send` and
# `remote_ask_roundtrip` of benches/cluster.rs (see its top comment), run
# with
#   cargo bench -p stakplane --bench cluster --features cluster -- 'remote_send|remote_ask_roundtrip'
# and read from target/criterion/<group>/<function>/new/estimates.json
# (mean.point_estimate, ns per iteration). CARGO_TARGET_DIR is honoured.
# Without --no-cargo only estimates written by this run are shown (a
# function criterion skipped shows "not measured"); with --no-cargo any
# estimates already there are shown, marked with the date they were
# written.
#
# Erlang: pingpong.erl beside this script, compiled with erlc into a temp
# dir. Two nodes started here (-name ...@127.0.0.1, one cookie, +S 1:1 so
# one scheduler thread each, like one runtime thread per node in
# cluster.rs; both killed on exit): a sink on node B, and on node A one
# process that sends bursts of 1,000 messages of a 100-byte binary (the
# sink answers the 1,000th) and does round trips ({ping, Self, 7} and
# {pong, 7}), each warmed up for 2 s, then timed with
# erlang:monotonic_time(nanosecond) over --bursts bursts (default 2000)
# and --rounds round trips (default 100000). Erlang's distribution is
# plain TCP, unencrypted, like ractor_cluster's (stakplane's sessions are
# Noise-encrypted). Extra emulator flags for both nodes may be given in
# ERL_FLAGS, which erl reads itself.
#
# Installs Erlang (erlang-nox) with apt-get when erl is missing. Needs
# python3 to read the JSON and print the table.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

cargo=1
bursts=2000
rounds=100000
while [ "$#" -gt 0 ]; do
    case "$1" in
        --no-cargo) cargo=0 ;;
        --bursts) bursts=${2:?--bursts needs a number}; shift ;;
        --rounds) rounds=${2:?--rounds needs a number}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
for n in "$bursts" "$rounds"; do
    case "$n" in
        ''|*[!0-9]*|0) echo "run.sh: --bursts and --rounds take a positive number" >&2; exit 2 ;;
    esac
done

command -v python3 >/dev/null || { echo "run.sh: needs python3" >&2; exit 1; }

# Erlang, installed when missing.
if ! command -v erl >/dev/null || ! command -v erlc >/dev/null; then
    echo "run.sh: erl not found, installing erlang-nox" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt=(apt-get)
    elif command -v sudo >/dev/null; then
        apt=(sudo apt-get)
    else
        echo "run.sh: not root and no sudo: install erlang-nox by hand" >&2
        exit 1
    fi
    "${apt[@]}" install -y erlang-nox || { "${apt[@]}" update && "${apt[@]}" install -y erlang-nox; }
fi

work=$(mktemp -d)
pid_a=
pid_b=
epmd_was_up=0
if epmd -names >/dev/null 2>&1; then epmd_was_up=1; fi

stop_node() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
    stop_node "$pid_a"
    stop_node "$pid_b"
    # epmd was started by node B's erl: stop it again (it refuses while
    # any other node is registered with it).
    if [ "$epmd_was_up" -eq 0 ]; then epmd -kill >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show() { printf '%q ' "$@" | sed 's/ $//'; echo; }

load_before=$(uptime)
started=$(date +%s)
commands=()

# stakplane and ractor_cluster.
target=${CARGO_TARGET_DIR:-target}
case "$target" in /*) ;; *) target="$root/$target" ;; esac
if [ "$cargo" -eq 1 ]; then
    cmd=(cargo bench -p stakplane --bench cluster --features cluster -- 'remote_send|remote_ask_roundtrip')
    commands+=("(cd $(printf '%q' "$root") && $(show "${cmd[@]}"))")
    echo "== $(show "${cmd[@]}")" >&2
    (cd "$root" && "${cmd[@]}") >&2
fi

# Erlang.
cookie="pp$$x$RANDOM$RANDOM"
na="pingpong_a_$$@127.0.0.1"
nb="pingpong_b_$$@127.0.0.1"
compile=(erlc -o "$work" "$here/pingpong.erl")
node_b=(erl -noinput -name "$nb" -setcookie "$cookie" -pa "$work" +S 1:1)
node_a=(erl -noinput -name "$na" -setcookie "$cookie" -pa "$work" +S 1:1
        -run pingpong main "$nb" "$bursts" "$rounds")
commands+=("$(show "${compile[@]}")" "$(show "${node_b[@]}") &" "$(show "${node_a[@]}")")

echo "== Erlang: $bursts bursts, $rounds round trips (each after a 2 s warm-up)" >&2
"${compile[@]}"
"${node_b[@]}" </dev/null >"$work/b.log" 2>&1 &
pid_b=$!
"${node_a[@]}" </dev/null >"$work/a.out" &
pid_a=$!
if ! wait "$pid_a"; then
    pid_a=
    echo "run.sh: the Erlang run failed; node A printed:" >&2
    cat "$work/a.out" >&2
    echo "node B printed:" >&2
    cat "$work/b.log" >&2
    exit 1
fi
pid_a=

load_after=$(uptime)

python3 - "$target" "$work/a.out" "$cargo" "$started" <<'EOF'
import json, os, sys, time

target, erl_out, cargo, started = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
notes = []

def criterion(group, function):
    """Mean ns per iteration, or None; with a note when from an earlier run."""
    path = os.path.join(target, "criterion", group, function, "new", "estimates.json")
    try:
        mtime = os.path.getmtime(path)
        with open(path) as f:
            ns = float(json.load(f)["mean"]["point_estimate"])
    except (OSError, KeyError, ValueError) as e:
        notes.append(f"{group}/{function}: not measured ({e.__class__.__name__}: {path})")
        return None
    if cargo and mtime < started:
        notes.append(f"{group}/{function}: not measured by this run (skipped? see cargo's output)")
        return None
    if not cargo:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))
        notes.append(f"{group}/{function}: from an earlier cargo bench, written {when}")
    return ns

erl = {}
with open(erl_out) as f:
    for line in f:
        key, *vals = line.split()
        erl[key] = vals
otp = erl["otp"][0]

rows = [
    ("stakplane", criterion("remote_send", "stakplane"), criterion("remote_ask_roundtrip", "stakplane")),
    (f"Erlang/OTP {otp}", float(erl["burst_ns"][0]), float(erl["rtt_ns"][0])),
    ("ractor_cluster", criterion("remote_send", "ractor-cluster"), criterion("remote_ask_roundtrip", "ractor-cluster")),
]

def cell(x, fmt):
    return "n/a" if x is None else fmt(x)

print("| implementation | burst (µs per 1,000 msgs) | messages/s | round trip (µs) |")
print("|---|---:|---:|---:|")
for name, burst, rtt in rows:
    print("| {} | {} | {} | {} |".format(
        name,
        cell(burst, lambda ns: f"{ns / 1e3:,.1f}"),
        cell(burst, lambda ns: f"{1000 / (ns / 1e9):,.0f}"),
        cell(rtt, lambda ns: f"{ns / 1e3:,.2f}"),
    ))
print()
b, r = erl["burst_ns"], erl["rtt_ns"]
print(f"Erlang: {b[3]} bursts, per burst {float(b[1]) / 1e3:,.1f} to {float(b[2]) / 1e3:,.1f} µs "
      f"over 10 samples; {r[3]} round trips, {float(r[1]) / 1e3:,.2f} to {float(r[2]) / 1e3:,.2f} µs; "
      f"schedulers (A, B): {', '.join(erl['schedulers'])}.")
for n in notes:
    print(f"Note: {n}.")
EOF

echo
echo "Load average before: ${load_before##*load average: }; after: ${load_after##*load average: } ($(nproc) CPUs); $(date '+%Y-%m-%d %H:%M:%S %Z')."
echo
echo "Commands:"
for c in "${commands[@]}"; do echo "    $c"; done
