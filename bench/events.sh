#!/usr/bin/env bash
# The live event stream's targets (issue 15), measured on a release build.
#
#   bench/events.sh                 # = idle latency pg
#   bench/events.sh idle            # 10 000 idle streams: server VmRSS / VmHWM
#   bench/events.sh latency         # SQLite, one instance: 1 000 streams, 200 events/s
#   bench/events.sh pg              # PostgreSQL (a throwaway cluster of its own):
#                                   # two instances (posts on B, streams on A),
#                                   # loss across reconnects + an instance restart +
#                                   # a restart of that cluster, basis ended
#   knobs: STREAMS=10000 PROCS=4 HOLD=20 RATE=200 DURATION=30 PH_STREAMS=5
#          BUILD=0 (use target/release as is) EV_PG_PORT=55433
#          (idle also writes bench/out/events-smaps-{before,after}.json: bench/smaps_split.py)
#          WRAP="valgrind --tool=massif --massif-out-file=bench/out/massif.out" (idle:
#          where the per-stream heap goes; VmRSS is then valgrind's, ignore it)
#
# The load generator is bench/events.py (standard library only). Figures go
# to bench/out/events-results.jsonl, one JSON object per measure, with the
# load average at its start. The PostgreSQL parts never touch the shared
# server on 5432: they initdb a cluster under $EV_BASE on $EV_PG_PORT and
# restart only that one.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/bench/out
mkdir -p "$OUT"
BIN=${BIN:-$ROOT/target/release/relais}
SEED=${SEED:-$ROOT/target/release/relais-bench-seed}
STEPS=${*:-idle latency pg}
STREAMS=${STREAMS:-10000}
PROCS=${PROCS:-4}
HOLD=${HOLD:-20}
RATE=${RATE:-200}
DURATION=${DURATION:-30}
PH_STREAMS=${PH_STREAMS:-5}
EV_BASE=${EV_BASE:-/tmp/relais-events-pg}
EV_PG_PORT=${EV_PG_PORT:-55433}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
RESULTS=$OUT/events-results.jsonl
SECRET=bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PHARMACIST=0c000000-0000-7000-8000-000000000002
PY="python3 $ROOT/bench/events.py"

if [[ ${BUILD:-1} == 1 ]]; then
    cargo build --release --bin relais --bin relais-bench-seed
fi
# One socket per stream on each side, plus the database's.
ulimit -n "$(ulimit -Hn)"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -f $EV_BASE/data/postmaster.pid ]] && pg stop || true
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

record() { # JSON object -> results, with when and the load average
    local load
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.pop("ids",None); d.update(when=sys.argv[2], load=sys.argv[3], step=sys.argv[4]); print(json.dumps(d))' \
        "$1" "$(date -u +%FT%TZ)" "$load" "$2" | tee -a "$RESULTS"
}

# start_server TAG DB_URL [PORT] -> sets SERVER_PID, PORT
start_server() {
    local tag=$1 url=$2
    PORT=${3:-$(free_port)}
    RELAIS__DATABASE__URL=$url \
    RELAIS__SERVER__BIND=127.0.0.1:$PORT \
    RELAIS__SERVER__PUBLIC_URL=http://127.0.0.1:$PORT \
    RELAIS__SERVER__DATA_DIR=$OUT/events-data-$tag \
    RELAIS__AUTH__JWT_SECRET=$SECRET \
    RELAIS__AUTH__IP_REQUESTS_PER_MINUTE=1000000 \
    RELAIS__EMAIL__TRANSPORT=log \
    RUST_LOG=warn \
        ${WRAP:-} "$BIN" serve >>"$OUT/events-server-$tag.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:$PORT/api/v1/health/live" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server $tag did not start; see $OUT/events-server-$tag.log" >&2
    exit 1
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

mem() { # PID -> "rss_kib hwm_kib"
    awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {print r, h}' "/proc/$1/status"
}

seed() { # URL DIR
    rm -rf "$2"
    "$SEED" --url "$1" --secret "$SECRET" --out "$2" --patients 1000 --messages 0 \
        --stream-users "$STREAMS" >/dev/null
    # shellcheck disable=SC1091
    source "$2/tokens.env"
}

pg() { # start | stop | restart: the throwaway cluster only
    local as=()
    [[ $(id -u) -eq 0 ]] && as=(runuser -u postgres --)
    case $1 in
    start)
        mkdir -p "$EV_BASE"
        [[ $(id -u) -eq 0 ]] && chown postgres: "$EV_BASE"
        [[ -f $EV_BASE/data/PG_VERSION ]] ||
            "${as[@]}" "$PGBIN/initdb" -D "$EV_BASE/data" -E UTF8 --locale=C -A trust -U postgres >/dev/null
        "${as[@]}" "$PGBIN/pg_ctl" -D "$EV_BASE/data" -l "$EV_BASE/postgres.log" -w -t 60 \
            -o "-p $EV_PG_PORT -k $EV_BASE -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
        ;;
    stop) "${as[@]}" "$PGBIN/pg_ctl" -D "$EV_BASE/data" -m fast -w stop >/dev/null ;;
    restart) "${as[@]}" "$PGBIN/pg_ctl" -D "$EV_BASE/data" -m fast -w restart \
        -o "-p $EV_PG_PORT -k $EV_BASE -c listen_addresses=127.0.0.1 -c max_connections=200" >/dev/null ;;
    esac
}

# idle_streams PORT SKIP COUNT PROCS HOLD: starts the holders, waits until all are ready
idle_streams() {
    local port=$1 skip=$2 count=$3 procs=$4 hold=$5 per ready_files=()
    per=$(((count + procs - 1) / procs))
    # The children truncate these only once started: no stale "ready" line.
    rm -f "$OUT"/events-idle-*.ready "$OUT"/events-idle-*.json
    HOLDERS=()
    for k in $(seq 0 $((procs - 1))); do
        local n=$per
        ((k * per + n > count)) && n=$((count - k * per))
        ((n <= 0)) && continue
        $PY idle --port "$port" --tokens "$SEED_DIR/stream_tokens.txt" --skip $((skip + k * per)) \
            --count "$n" --hold "$hold" >"$OUT/events-idle-$k.json" 2>"$OUT/events-idle-$k.ready" &
        HOLDERS+=($!)
        ready_files+=("$OUT/events-idle-$k.ready")
    done
    for f in "${ready_files[@]}"; do
        until grep -q ready "$f" 2>/dev/null; do sleep 0.5; done
    done
    IDLE_READY=$(cat "${ready_files[@]}" | python3 -c 'import json,sys; print(sum(json.loads(l)["ready"] for l in sys.stdin if l.startswith("{")))')
}

step_idle() {
    local db=$OUT/events-idle/relais.db
    rm -rf "$OUT/events-idle" "$OUT/events-data-idle"
    mkdir -p "$OUT/events-idle"
    SEED_DIR=$OUT/events-seed-idle
    seed "sqlite://$db" "$SEED_DIR"
    start_server idle "sqlite://$db"
    # A few requests first, so that the baseline has what every server has.
    curl -fsS -H "Authorization: Bearer $PHARMACIST_TOKEN" "http://127.0.0.1:$PORT/api/v1/me" >/dev/null
    read -r rss0 hwm0 < <(mem "$SERVER_PID")
    python3 "$ROOT/bench/smaps_split.py" "$SERVER_PID" >"$OUT/events-smaps-before.json"
    local t0=$SECONDS
    idle_streams "$PORT" 0 "$STREAMS" "$PROCS" "$HOLD"
    local opened_s=$((SECONDS - t0))
    sleep 5
    read -r rss hwm < <(mem "$SERVER_PID")
    python3 "$ROOT/bench/smaps_split.py" "$SERVER_PID" >"$OUT/events-smaps-after.json"
    local anon0 anon
    anon0=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["anonymous_kib"]/1024, 1))' "$OUT/events-smaps-before.json")
    anon=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["anonymous_kib"]/1024, 1))' "$OUT/events-smaps-after.json")
    local fds
    fds=$(find "/proc/$SERVER_PID/fd" -maxdepth 1 | wc -l)
    local threads
    threads=$(find "/proc/$SERVER_PID/task" -mindepth 1 -maxdepth 1 | wc -l)
    local open
    open=$(curl -fsS -H "Authorization: Bearer $PHARMACIST_TOKEN" "http://127.0.0.1:$PORT/api/v1/me" >/dev/null && echo ok)
    for pid in "${HOLDERS[@]}"; do wait "$pid"; done
    local alive
    alive=$(cat "$OUT"/events-idle-*.json | python3 -c 'import json,sys; print(sum(json.loads(l)["alive_at_end"] for l in sys.stdin))')
    record "{\"streams\": $STREAMS, \"ready\": $IDLE_READY, \"alive_after_hold\": $alive, \"open_s\": $opened_s, \"server_fds\": $fds, \"server_threads\": $threads, \"malloc_arena_max\": \"${MALLOC_ARENA_MAX:-}\", \"wrap\": \"${WRAP:-}\", \"rss_before_mib\": $((rss0 / 1024)), \"rss_mib\": $(echo "scale=1; $rss/1024" | bc), \"hwm_mib\": $(echo "scale=1; $hwm/1024" | bc), \"per_stream_kib\": $(echo "scale=2; ($rss-$rss0)/$STREAMS" | bc), \"anon_before_mib\": $anon0, \"anon_mib\": $anon, \"api_answers_meanwhile\": \"$open\"}" idle
    stop_pid "$SERVER_PID"
}

# latency_run STREAM_PORT POST_PORT TAG
latency_run() {
    local idle=$((1000 - PH_STREAMS))
    idle_streams "$1" 0 "$idle" 1 $((DURATION + 30))
    local idle_pid=${HOLDERS[0]}
    local res
    res=$($PY latency --port "$1" --post-port "$2" --gp "$GP_TOKEN" --ph "$PHARMACIST_TOKEN" \
        --threads "$SEED_DIR/patients.threads" --ph-streams "$PH_STREAMS" --rate "$RATE" --duration "$DURATION")
    kill "$idle_pid" 2>/dev/null || true
    wait "$idle_pid" 2>/dev/null || true
    record "${res%\}}, \"idle_streams\": $IDLE_READY}" "$3"
}

threads_file() { # the seed's thread ids: 01000000-0000-7000-8000-<n>
    python3 -c 'import sys; [print("01000000-0000-7000-8000-%012x" % i) for i in range(1, 1001)]' >"$SEED_DIR/patients.threads"
}

step_latency() {
    local db=$OUT/events-lat/relais.db
    rm -rf "$OUT/events-lat" "$OUT/events-data-lat"
    mkdir -p "$OUT/events-lat"
    SEED_DIR=$OUT/events-seed-lat
    STREAMS=1000 seed "sqlite://$db" "$SEED_DIR"
    threads_file
    start_server lat "sqlite://$db"
    latency_run "$PORT" "$PORT" latency-sqlite-one-instance
    stop_pid "$SERVER_PID"
}

pg_url() { echo "postgres://postgres@127.0.0.1:$EV_PG_PORT/relais_events?sslmode=disable"; }

step_pg() {
    pg start
    psql -q "postgres://postgres@127.0.0.1:$EV_PG_PORT/postgres" -c "DROP DATABASE IF EXISTS relais_events" -c "CREATE DATABASE relais_events"
    SEED_DIR=$OUT/events-seed-pg
    STREAMS=1000 seed "$(pg_url)" "$SEED_DIR"
    threads_file
    start_server pga "$(pg_url)"
    local a_pid=$SERVER_PID a_port=$PORT
    start_server pgb "$(pg_url)"
    local b_pid=$SERVER_PID b_port=$PORT
    latency_run "$a_port" "$a_port" latency-pg-one-instance
    # actix notices a client gone only when it next writes to it (actix-web
    # #1313), i.e. at the next heartbeat: until then the pharmacist's five
    # slots on A are taken.
    sleep 35
    latency_run "$a_port" "$b_port" latency-pg-two-instances

    # Loss: one stream resuming with Last-Event-ID (every 2 s, alternating A
    # and B), GP posting on B; A restarted at 1/3, the cluster at 2/3.
    local fifo=$OUT/events-loss.json
    $PY loss --ports "$a_port,$b_port" --post-port "$b_port" --gp "$GP_TOKEN" --ph "$PHARMACIST_TOKEN" \
        --threads "$SEED_DIR/patients.threads" --rate 50 --duration 45 >"$fifo" &
    local loss_pid=$!
    sleep 15
    stop_pid "$a_pid"
    start_server pga "$(pg_url)" "$a_port"
    a_pid=$SERVER_PID
    sleep 15
    pg restart
    wait "$loss_pid"
    local after
    after=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["after"])' "$fifo")
    psql -qtA "postgres://postgres@127.0.0.1:$EV_PG_PORT/relais_events" \
        -c "SELECT id FROM events WHERE user_id = '$PHARMACIST' AND id > $after ORDER BY id" >"$OUT/events-loss-db.txt"
    local verdict
    verdict=$(python3 - "$fifo" "$OUT/events-loss-db.txt" <<'EOF'
import json, sys
got = json.load(open(sys.argv[1]))
stored = [int(l) for l in open(sys.argv[2]) if l.strip()]
ids = got["ids"]
dup = len(ids) - len(set(ids))
lost = len(set(stored) - set(ids))
extra = len(set(ids) - set(stored))
order = sum(1 for x, y in zip(ids, ids[1:]) if y <= x)
print(json.dumps({"stored_events": len(stored), "received": len(ids), "lost": lost, "duplicated": dup,
                  "not_stored": extra, "out_of_order": order, "connections": got["connections"],
                  "resets": got["resets"], "posted_ok": got["posted_ok"], "post_failed": got["post_failed"],
                  "restarts": "instance A at 15 s, PostgreSQL cluster at 30 s"}))
EOF
)
    record "$verdict" loss-pg
    sleep 35 # the loss client's last stream leaves its slot (see above)

    # Basis ended: the GP removes the pharmacist from patient 1's team while posting there.
    local res
    res=$($PY basis --port "$a_port" --gp "$GP_TOKEN" --ph "$PHARMACIST_TOKEN" --ph-id "$PHARMACIST" \
        --patient 0a000000-0000-7000-8000-000000000001 --thread 01000000-0000-7000-8000-000000000001 \
        --rate 100 --duration 10)
    record "$res" basis-pg
    stop_pid "$a_pid"
    stop_pid "$b_pid"
    pg stop
}

for step in $STEPS; do
    "step_$step"
done
