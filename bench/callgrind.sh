#!/usr/bin/env bash
# Instruction counts per request (valgrind --tool=callgrind): a before/after
# comparison that does not depend on how busy the machine is. Never run by CI.
#
#   BIN=… SEED=… WORKDIR=… TAG=… bench/callgrind.sh
#
# For one build: seeds a fresh SQLite database ($PATIENTS patients, 100
# messages in each thread) with $SEED, starts `$BIN serve` under callgrind
# (from $WORKDIR, whose config/default.toml must be the one of that build: an
# older binary refuses newer keys), sends $WARMUP requests of each scenario,
# then for each scenario: `callgrind_control --zero`, exactly $N sequential
# requests on one keep-alive connection (every answer must be 2xx), and
# `callgrind_control --dump=<scenario>`; the dump's `totals:` divided by $N is
# the scenario's instructions per request (Ir/request), every thread of the
# server included (actix workers, the writer thread and its group commits,
# the WAL checkpoint thread, the audit anchor, the outbox and the scheduler).
#
# The request sequence is the same for every build: same seed, fixed ids, the
# same JWT secret, patients and threads in file order. Background work driven
# by the clock, which under valgrind (~50x slower) would be charged to far
# fewer requests than in production and vary with the machine's load, is
# pushed out of the measurement where the build has the key: outbox poll and
# scheduler tick 1 h, session cache and audit checkpoint interval 60 s (their
# maxima); PIN=0 keeps the defaults. What remains clocked is the WAL
# checkpoint thread (every 250 ms, not configurable), the main source of the
# spread, and one session-cache miss and one checkpoint a minute.
#
# THREADS=K makes the thread reads cycle over the first K threads (with
# WARMUP >= K every measured read finds its page held: the warm path); by
# default they walk all of threads.txt, each read once (the cold path).
#
# VALGRIND=0 runs the same workload natively and reports peak memory (VmHWM)
# after start-up, after the first request of each scenario and after each
# scenario's N instead (and keeps /proc/<pid>/smaps
# and status at the end in bench/out/cg-<tag>/).
#
# Output: one line per scenario, "CG <tag> <scenario> <N> <Ir total> <Ir/request>",
# also appended to bench/out/callgrind.tsv; the dumps stay in bench/out/cg-<tag>/.
#
# PG=1 seeds and serves a fresh PostgreSQL database (relais_cg_<tag> on
# $PGURL_BASE, dropped afterwards) instead, and for each scenario also resets
# pg_stat_statements before its N requests and reads it after: the line gains
# "stmts/request" (calls of every statement of that database, BEGIN, COMMIT
# and SAVEPOINT included, divided by N) and "pg_ms/request" (their
# total_exec_time: the database's time executing them, a floor of its CPU);
# the statements themselves land in bench/out/cg-<tag>/pgstat-<scenario>.txt.
# Needs `shared_preload_libraries = 'pg_stat_statements'` (the script creates
# the extension). Statement counts do not depend on the build profile or on
# valgrind: VALGRIND=0 with a debug build counts them as well.
#
# knobs: PATIENTS=200 N=300 WARMUP=30 TAG=run PIN=1 VALGRIND=1 PG=0
#        PGURL_BASE=postgres://postgres@127.0.0.1:5432
#        SCENARIOS="health analgesic thread_read message_post care_plan_put"
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/relais}
SEED=${SEED:-$ROOT/target/release/relais-bench-seed}
WORKDIR=${WORKDIR:-$ROOT}
TAG=${TAG:-run}
PATIENTS=${PATIENTS:-200}
N=${N:-300}
WARMUP=${WARMUP:-30}
PIN=${PIN:-1}
VALGRIND=${VALGRIND:-1}
PG=${PG:-0}
PGURL_BASE=${PGURL_BASE:-postgres://postgres@127.0.0.1:5432}
SCENARIOS=${SCENARIOS:-"health analgesic thread_read message_post care_plan_put"}
# Fixed, so that tokens (and their checking) are the same for every build.
SECRET=bench-callgrind-secret-0123456789abcdef
OUT=$ROOT/bench/out/cg-$TAG
RESULTS=$ROOT/bench/out/callgrind.tsv

rm -rf "$OUT"
mkdir -p "$OUT"
DB_URL="sqlite://$OUT/relais.db"
PG_DB=
if [[ $PG == 1 ]]; then
    PG_DB=relais_cg_${TAG//[^a-zA-Z0-9_]/_}
    psql -q "$PGURL_BASE/postgres" -c "DROP DATABASE IF EXISTS $PG_DB" -c "CREATE DATABASE $PG_DB"
    psql -q "$PGURL_BASE/$PG_DB" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
    DB_URL="$PGURL_BASE/$PG_DB?sslmode=disable"
fi
"$SEED" --url "$DB_URL" --secret "$SECRET" --out "$OUT/seed" --patients "$PATIENTS" \
    --messages $((PATIENTS * 100)) --hot-messages 100 --sample "$PATIENTS" >"$OUT/seed.log" 2>&1

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
export RELAIS__DATABASE__URL=$DB_URL
export RELAIS__SERVER__BIND=127.0.0.1:$PORT
export RELAIS__SERVER__PUBLIC_URL=http://127.0.0.1:$PORT
export RELAIS__SERVER__DATA_DIR=$OUT/data
export RELAIS__AUTH__JWT_SECRET=$SECRET
export RELAIS__EMAIL__TRANSPORT=log
pin() { # pin SECTION KEY VALUE, only when this build knows the key
    if [[ $PIN == 1 ]] && grep -q "^$2 *=" "$WORKDIR/config/default.toml"; then
        export "RELAIS__${1^^}__${2^^}=$3"
        echo "pinned $1.$2 = $3" >>"$OUT/pins.txt"
    fi
}
pin email poll_interval_ms 3600000
pin scheduler tick_ms 3600000
pin auth session_cache_ms 60000
pin audit checkpoint_interval_ms 60000

cd "$WORKDIR"
if [[ $VALGRIND == 1 ]]; then
    valgrind --tool=callgrind --collect-atstart=yes --callgrind-out-file="$OUT/callgrind.out" \
        "$BIN" serve >"$OUT/server.log" 2>&1 &
else
    "$BIN" serve >"$OUT/server.log" 2>&1 &
fi
SERVER_PID=$!
stop() {
    kill -TERM $SERVER_PID 2>/dev/null
    wait $SERVER_PID 2>/dev/null || true
    if [[ -n $PG_DB ]]; then
        psql -q "$PGURL_BASE/postgres" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)"
    fi
}
trap stop EXIT
for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$PORT/api/v1/health/live" >/dev/null 2>&1 && break
    kill -0 $SERVER_PID 2>/dev/null || { echo "server died; see $OUT/server.log" >&2; exit 1; }
    sleep 0.5
done

PG_STAT_URL=${PG_DB:+$PGURL_BASE/$PG_DB}
python3 - "$PORT" "$SERVER_PID" "$OUT" "$N" "$WARMUP" "$TAG" "$VALGRIND" "$RESULTS" "${PG_STAT_URL:--}" $SCENARIOS <<'EOF'
import glob, http.client, json, os, re, subprocess, sys, time

port, pid, out, n, warmup, tag, valgrind, results, pg = sys.argv[1:10]
n, warmup, pid, valgrind = int(n), int(warmup), int(pid), valgrind == "1"
pg = None if pg == "-" else pg
scenarios = sys.argv[10:]
seed = os.path.join(out, "seed")
lines = lambda f: [l.strip() for l in open(os.path.join(seed, f)) if l.strip()]
patients, threads = lines("patients.txt"), lines("threads.txt")
# THREADS=K: the thread reads cycle over the first K threads only (pages
# held in memory after the warm-up); default all, each read once (cold).
threads = threads[:int(os.environ.get("THREADS") or len(threads))]
tokens = dict(l.strip().split("=", 1) for l in open(os.path.join(seed, "tokens.env")) if "=" in l)
plan = open(os.path.join(seed, "plan.json"), "rb").read()
post = b'{"body":"Patient seen at the counter, reports pain 5/10, took the evening dose at 19:00. Please confirm the new schedule."}'
ph = {"Authorization": "Bearer " + tokens["PHARMACIST_TOKEN"]}
gp = {"Authorization": "Bearer " + tokens["GP_TOKEN"], "Content-Type": "application/json"}
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=600)
version = {p: 1 for p in patients}
counter = {}
reconnects = 0

def request(scenario):
    i = counter.get(scenario, 0)
    counter[scenario] = i + 1
    if scenario == "health":
        args = ("GET", "/api/v1/health/live", None, {})
    elif scenario == "analgesic":
        args = ("GET", f"/api/v1/patients/{patients[i % len(patients)]}/analgesic-plan", None, ph)
    elif scenario == "thread_read":
        args = ("GET", f"/api/v1/threads/{threads[i % len(threads)]}/messages?limit=50", None, ph)
    elif scenario == "message_post":
        args = ("POST", f"/api/v1/threads/{threads[i % len(threads)]}/messages", post,
                dict(ph, **{"Content-Type": "application/json"}))
    elif scenario == "care_plan_put":
        p = patients[i % len(patients)]
        args = ("PUT", f"/api/v1/patients/{p}/care-plan", plan, dict(gp, **{"If-Match": f'"{version[p]}"'}))
    method, path, body, headers = args
    global conn, reconnects
    for attempt in (1, 2):
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            break
        except (ConnectionError, http.client.RemoteDisconnected):
            # actix closes a keep-alive connection it finds idle for 5 s
            # (valgrind's pauses): open another and send again.
            if attempt == 2:
                raise
            reconnects += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=600)
    if not 200 <= r.status < 300:
        sys.exit(f"{scenario} #{i}: {method} {path} -> {r.status} {data[:300]!r}")
    if scenario == "care_plan_put":
        m = re.search(rb'"version":(\d+)', data)
        version[p] = int(m.group(1)) if m else int(r.getheader("ETag").strip('"W/'))

def status_hwm():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmHWM"):
            return int(l.split()[1]) / 1024
    return float("nan")

def psql(sql):
    return subprocess.run(["psql", "-AtqX", "-F", "\t", pg, "-c", sql], check=True,
                          capture_output=True, text=True).stdout

# Statements of this database only (the other engineers' tests share the server).
THIS_DB = "dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"

def pg_reset():
    psql("SELECT pg_stat_statements_reset()")

def pg_read(s):
    rows = psql(f"SELECT calls, round(total_exec_time::numeric, 3), regexp_replace(query, '\\s+', ' ', 'g') "
                f"FROM pg_stat_statements WHERE {THIS_DB} AND query NOT LIKE '%pg_stat_statements%' "
                f"ORDER BY calls DESC, total_exec_time DESC")
    with open(os.path.join(out, f"pgstat-{s}.txt"), "w") as f:
        f.write(rows)
    calls = ms = 0.0
    for row in rows.splitlines():
        c, t, _ = row.split("\t", 2)
        calls += int(c)
        ms += float(t)
    return f"\tstmts/request={calls / n:.2f}\tpg_ms/request={ms / n:.3f}"

def control(*args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, stdout=subprocess.DEVNULL)

if not valgrind:
    print(f"MEM {tag} after start-up VmHWM {status_hwm():.1f} MiB", flush=True)
for s in scenarios:
    for k in range(warmup):
        request(s)
        if not valgrind and k == 0:
            print(f"MEM {tag} after the first {s} VmHWM {status_hwm():.1f} MiB", flush=True)
rows = []
for s in scenarios:
    if valgrind:
        control("--zero")
        # A fresh connection for each scenario (actix closes one idle for 5 s,
        # as it is while callgrind_control runs): its accept is counted too.
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=600)
    if pg:
        pg_reset()
    t0 = time.time()
    for _ in range(n):
        request(s)
    elapsed = time.time() - t0
    # The audit rows of reads are committed before their answers: nothing
    # of these N requests is still on its way to the database.
    stats = pg_read(s) if pg else ""
    if not valgrind:
        print(f"MEM {tag} after {s} VmHWM {status_hwm():.1f} MiB{stats}", flush=True)
        if stats:
            rows.append(f"PG\t{tag}\t{s}\t{n}{stats}")
        continue
    before = set(glob.glob(os.path.join(out, "callgrind.out*")))
    control(f"--dump={s}")
    total = None
    for _ in range(600):
        new = sorted(set(glob.glob(os.path.join(out, "callgrind.out*"))) - before)
        totals = []
        for f in new:
            m = re.search(r"^(?:totals|summary): (\d+)", open(f).read(), re.M)
            if m:
                totals.append(int(m.group(1)))
        if new and len(totals) == len(new):
            total = sum(totals)
            break
        time.sleep(0.5)
    line = f"CG\t{tag}\t{s}\t{n}\t{total}\t{total / n:.0f}\t{elapsed:.1f}s\treconnects={reconnects}{stats}"
    print(line, flush=True)
    rows.append(line)
if not valgrind:
    # Where the resident memory is now, by mapping (binary, heap, anonymous), for comparisons.
    with open(os.path.join(out, "smaps.txt"), "w") as f:
        f.write(open(f"/proc/{pid}/smaps").read())
    with open(os.path.join(out, "status.txt"), "w") as f:
        f.write(open(f"/proc/{pid}/status").read())
with open(results, "a") as f:
    for r in rows:
        f.write(r + "\n")
EOF
