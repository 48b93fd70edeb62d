#!/usr/bin/env bash
# Throughput of `conductor worker` processes on one machine: a fan-out of N mock tasks of a
# given latency, placed on workers, run through PostgreSQL with W worker processes.
#
#   bash benches/workers.sh [N] [W] [LATENCY] [CONCURRENCY]    defaults: 10000 2 0ms 64
#
# Uses the release binary (built if missing) and the cluster named by CONDUCTOR_TEST_POSTGRES,
# or starts a private one (.ci/postgres.sh). Prints tasks per second (the run's makespan, from
# its first to its last event) and, from the workers' own timings, the queue wait (enqueued →
# claimed, by the database's clock) and claim → start, p50 and p99.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
W=${2:-2}
LATENCY=${3:-0ms}
CONC=${4:-64}
BIN=target/release/conductor
[ -x "$BIN" ] || cargo build --release --bin conductor
if [ -z "${CONDUCTOR_TEST_POSTGRES:-}" ]; then
    source .ci/postgres.sh
fi
admin=$CONDUCTOR_TEST_POSTGRES
db="bench_$$"
psql "$admin" -X -q -c "CREATE DATABASE $db"
store="${admin%/*}/$db"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "$admin" -X -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

items=$(seq -s ', ' 1 "$N")
cat >"$work/fan.cond" <<COND
workflow fan {
    max_parallel = $((W * CONC))
    agent m {
        kind = "mock"
        count = $((W * CONC))
        latency = $LATENCY
        placement = "workers"
        output = { severity = "ok" }
    }
    phase p {
        task t on m {
            matrix = { i = [$items] }
            max_items = $N
        }
    }
}
COND
for w in $(seq 1 "$W"); do
    CONDUCTOR_LOG=warn "$BIN" --store "$store" worker --concurrency "$CONC" --poll 50ms \
        --dir "$work/w$w" --stats "$work/stats.$w" 2>"$work/w$w.log" &
    pids+=($!)
done
sleep 0.5
start=$(date +%s.%N)
"$BIN" --store "$store" run "$work/fan.cond" --json >"$work/events.jsonl"
end=$(date +%s.%N)
run=$(head -n 1 "$work/events.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
python3 - "$work" "$N" "$W" "$LATENCY" "$CONC" "$start" "$end" <<'PY'
import json, sys, glob, datetime
work, n, w, latency, conc, start, end = sys.argv[1:]
n = int(n)
def at(e):
    return datetime.datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()
events = [json.loads(l) for l in open(f"{work}/events.jsonl") if l.startswith("{")]
events = [e for e in events if "event" in e]
done = sum(1 for e in events if e["event"] == "attempt_finished" and "error" not in e)
makespan = at(events[-1]) - at(events[0])
wall = float(end) - float(start)
waits, starts = [], []
for f in glob.glob(f"{work}/stats.*"):
    for line in open(f):
        q, s = line.split()
        waits.append(float(q)); starts.append(float(s))
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")
print(f"{n} tasks of {latency}, {w} workers x {conc} slots: {done} attempts completed")
print(f"  makespan {makespan:.2f}s (run process wall {wall:.2f}s): {n / makespan:.0f} tasks/s")
print(f"  queue wait (enqueued -> claimed): p50 {pct(waits, .5):.1f} ms, p99 {pct(waits, .99):.1f} ms")
print(f"  claim -> start:                   p50 {pct(starts, .5):.3f} ms, p99 {pct(starts, .99):.3f} ms")
PY
