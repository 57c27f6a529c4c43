#!/usr/bin/env bash
# N reactors on SO_REUSEPORT, one per core: server CPU per message and throughput for
# 1, 2, 4, 8 reactors (or the counts given), each with as many load generators as
# reactors, on cores of their own.
#
#   cargo build --release --bin sockloop --example echo_load
#   scripts/scale_reactors.sh [SECS] [COUNTS...]      e.g. scripts/scale_reactors.sh 5 1 2 4 8
#
# Needs 2 × max(COUNTS) cores: the server on cores 0..N-1, its N load generators (64
# connections each, one 64-byte message in flight per connection) on cores N..2N-1. On a
# machine with fewer cores the largest counts are skipped, with a line saying so. Every
# server and load generator is this script's own child, stopped by PID; all traffic is on
# 127.0.0.1; each run lasts SECS (+1 s warm-up).
set -u
cd "$(dirname "$0")/.."
secs=${1:-5}
shift || true
counts=("$@")
[ ${#counts[@]} -eq 0 ] && counts=(1 2 4 8)
bin=target/release/sockloop
load=target/release/examples/echo_load
for f in "$bin" "$load"; do
    [ -x "$f" ] || { echo "error: $f is not built (cargo build --release --bin sockloop --example echo_load)"; exit 2; }
done
cores=$(nproc)
tick=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "cores: $cores; $(uptime)"
printf '%-9s %12s %14s %14s\n' reactors msgs/s "CPU us/msg" "msgs/s/reactor"
for n in "${counts[@]}"; do
    if [ $((2 * n)) -gt "$cores" ]; then
        echo "$n: skipped (needs $((2 * n)) cores, this machine has $cores)"
        continue
    fi
    out=$(mktemp)
    taskset -c "0-$((n - 1))" "$bin" serve echo --reactors "$n" --addr 127.0.0.1:0 >"$out" 2>/dev/null &
    server=$!
    for _ in $(seq 200); do grep -q listening "$out" && break; sleep 0.05; done
    addr=$(awk '/listening/{print $4; exit}' "$out")
    if [ -z "$addr" ]; then echo "$n: the server did not start"; kill "$server" 2>/dev/null; continue; fi
    # Warm-up, then the server's CPU over the measured window only.
    pids=()
    results=$(mktemp)
    for i in $(seq 0 $((n - 1))); do
        "$load" --addr "$addr" --conns 64 --size 64 --secs "$secs" --warmup-secs 1 \
            --pin-cpu $((n + i)) >>"$results" 2>&1 &
        pids+=($!)
    done
    sleep 1
    before=$(cpu_ticks "$server")
    wait "${pids[@]}"
    after=$(cpu_ticks "$server")
    kill -INT "$server"; wait "$server" 2>/dev/null
    total=$(grep -o 'msgs_per_s=[0-9]*' "$results" | cut -d= -f2 | awk '{s += $1} END {print s + 0}')
    errors=$(grep -o 'errors=[0-9]*' "$results" | cut -d= -f2 | awk '{s += $1} END {print s + 0}')
    per_msg=$(awk -v t=$((after - before)) -v hz="$tick" -v m="$total" -v s="$secs" \
        'BEGIN {printf "%.2f", m ? t * 1e6 / hz / (m * s) : 0}')
    printf '%-9s %12s %14s %14s%s\n' "$n" "$total" "$per_msg" "$((total / n))" \
        "$([ "$errors" != 0 ] && echo "  ($errors errors)")"
    rm -f "$out" "$results"
done
