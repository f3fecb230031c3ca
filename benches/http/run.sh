#!/usr/bin/env bash
# HTTP load check (issue 18, item 6; not run by CI): the hyper app on
# stakplane (examples/http_hello.rs) and the same app on tokio's
# current-thread runtime (examples/http_tokio.rs), alternating, under wrk
# at 1, 50 and 200 connections; then memory per idle keep-alive
# connection, and a slowloris check (half-sent requests closed at the
# header timeout while other clients are served).
#
#   bash benches/http/run.sh                  # 5 rounds of 10 s per point
#   ROUNDS=3 SECS=5 bash benches/http/run.sh  # quicker
#   SKIP_LOAD=1 bash benches/http/run.sh      # memory and slowloris only
#   HELLO_APP=cell bash benches/http/run.sh   # the tokio app bumps a Cell
#
# The tokio app is the same app as stakplane's by default (HELLO_APP=actor:
# a task owns the count and answers each request over mpsc + oneshot, as
# the stakplane app asks an actor); HELLO_APP=cell makes it bump a `Cell`
# in the handler instead, less work than either app does.
#
# Installs wrk with apt-get when missing. Each server is one thread; wrk
# runs one thread: on a 2-core machine each has a core.
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=${ROUNDS:-5}
secs=${SECS:-10}
idle=${IDLE:-2000}
ports=(3000 3001)
names=(stakplane tokio)

if ! command -v wrk >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get install -y -qq wrk || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk; }
fi
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true

echo "== building" >&2
cargo build -q --release --features hyper --example http_hello --example http_tokio
target=${CARGO_TARGET_DIR:-target}
bins=("$target/release/examples/http_hello" "$target/release/examples/http_tokio")

pids=()
stop() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT

start() { # index
    HELLO_APP=${HELLO_APP:-actor} PORT=${ports[$1]} "${bins[$1]}" >/dev/null 2>&1 &
    pids[$1]=$!
    for _ in $(seq 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', ${ports[$1]}), 0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "http: ${names[$1]} did not start" >&2
    exit 1
}
start 0
start 1

out=$(mktemp -d)
if [ -z "${SKIP_LOAD:-}" ]; then
    echo "== load: $rounds rounds x ${secs}s at 1, 50, 200 connections (tokio app: ${HELLO_APP:-actor})" >&2
    for c in 1 50 200; do
        for r in $(seq "$rounds"); do
            # Alternate which goes first.
            order=(0 1); [ $((r % 2)) = 0 ] && order=(1 0)
            for i in "${order[@]}"; do
                wrk -t1 -c"$c" -d"${secs}s" --latency "http://127.0.0.1:${ports[$i]}/world" \
                    > "$out/${names[$i]}-$c-$r.txt" 2>&1
            done
        done
    done
fi

rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

echo "== idle memory: $idle keep-alive connections each" >&2
for i in 0 1; do
    before=$(rss_kib "${pids[$i]}")
    python3 - "${ports[$i]}" "$idle" "$out/idle-$i" "${pids[$i]}" <<'PY'
import socket, sys, time
port, n, path, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
        if b"\r\n\r\n" in got:
            head, _, body = got.partition(b"\r\n\r\n")
            length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")]
            if length and len(body) >= length[0]:
                break
    conns.append(s)
time.sleep(1)
rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]
open(path, "w").write(rss)
for s in conns:
    s.close()
PY
    after=$(cat "$out/idle-$i")
    echo "${names[$i]} $before $after" >> "$out/idle.txt"
done

echo "== slowloris: 50 half-sent requests to stakplane while wrk runs" >&2
python3 - "${ports[0]}" "$out/slowloris.txt" <<'PY' &
import socket, sys, time
port, path = int(sys.argv[1]), sys.argv[2]
half = []
for _ in range(50):
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # no blank line: never finished
    half.append(s)
start = time.monotonic()
closed = []
for s in half:
    s.settimeout(max(0.1, 45 - (time.monotonic() - start)))
    try:
        data = s.recv(4096)  # the server's 408 or end of stream
        closed.append(time.monotonic() - start)
    except socket.timeout:
        pass
open(path, "w").write(f"{len(closed)} {max(closed) if closed else -1:.1f}\n")
PY
loris=$!
sleep 1
wrk -t1 -c20 -d5s "http://127.0.0.1:${ports[0]}/world" > "$out/during-loris.txt" 2>&1
wait "$loris"

python3 - "$out" "$rounds" "${SKIP_LOAD:-}" <<'PY'
import os, re, statistics, sys
out, rounds, skip = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def parse(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", text)
    return rps, p99, errors.group(0) if errors else ""
if not skip:
    print("| connections | stakplane req/s (median) | tokio req/s (median) | ratio (median of rounds) | stakplane p99 ms | tokio p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c in (1, 50, 200):
        sp = [parse(f"{out}/stakplane-{c}-{r}.txt") for r in range(1, rounds + 1)]
        tk = [parse(f"{out}/tokio-{c}-{r}.txt") for r in range(1, rounds + 1)]
        ratios = [a[0] / b[0] for a, b in zip(sp, tk)]
        print(f"| {c} | {statistics.median(x[0] for x in sp):,.0f} | {statistics.median(x[0] for x in tk):,.0f} | "
              f"{statistics.median(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)}) | "
              f"{statistics.median(x[1] for x in sp):.2f} | {statistics.median(x[1] for x in tk):.2f} |")
        for name, runs in (("stakplane", sp), ("tokio", tk)):
            for r in runs:
                if r[2]:
                    print(f"  {name} at {c}: {r[2]}")
print()
for line in open(f"{out}/idle.txt"):
    name, before, after = line.split()
    n = int(os.environ.get("IDLE", "2000"))
    print(f"{name}: {before} KiB -> {after} KiB with {n} idle keep-alive connections: {(int(after) - int(before)) / n:.1f} KiB each")
closed, last = open(f"{out}/slowloris.txt").read().split()
rps, _, err = parse(f"{out}/during-loris.txt")
print(f"slowloris: {closed} of 50 half-sent requests closed by the server (the last after {last} s); "
      f"meanwhile wrk got {rps:,.0f} req/s {err}")
PY
echo
uptime
rm -rf "$out"
