#!/usr/bin/env bash
# Relais benchmarks (issue 7). Never run by CI or `cargo test`.
#
#   bench/run.sh [sqlite] [postgres] [scale] [peer] [peer-pg]
#                                   (default: sqlite postgres scale peer)
#
#   sqlite, postgres  fresh database with $PATIENTS patients (default 1000,
#                     $HOT_MESSAGES=100 messages in each thread), release
#                     server on a free loopback port, then wrk -t2 -cN -d${DURATION}s
#                     --latency for N in $CONNS ("16 64") on: health/live,
#                     analgesic-plan (pharmacist), thread read (50 messages),
#                     message post, care-plan PUT with rules; peak memory
#                     (VmHWM), then `relais audit verify`. $SCENARIOS picks
#                     among those (default: all five, in that order).
#   scale             the analgesic-plan read with $BIG_PATIENTS (1000000)
#                     patients, $BIG_MESSAGES messages and $BIG_AUDIT audit rows,
#                     on each backend in $SCALE_BACKENDS ("sqlite postgres").
#   peer              ../shared/bench/peer-synapse/run.sh (Synapse, 16 clients).
#   peer-pg           the same with Synapse on PostgreSQL (throwaway cluster, port 55432).
#
# Results: bench/out/results.tsv (one line per wrk run) and a table on stdout.
# Load goes to 127.0.0.1 only. PostgreSQL databases relais_bench_* are
# created and dropped on 127.0.0.1:5432 ($PGURL_BASE).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=$ROOT/bench/out
mkdir -p "$OUT"
PATIENTS=${PATIENTS:-1000}
HOT_MESSAGES=${HOT_MESSAGES:-100}
BIG_PATIENTS=${BIG_PATIENTS:-1000000}
BIG_MESSAGES=${BIG_MESSAGES:-10000000}
BIG_AUDIT=${BIG_AUDIT:-10000000}
SCALE_BACKENDS=${SCALE_BACKENDS:-"sqlite postgres"}
DURATION=${DURATION:-10}
CONNS=${CONNS:-"16 64"}
PGURL_BASE=${PGURL_BASE:-postgres://postgres@127.0.0.1:5432}
# Relais's connections to PostgreSQL: TLS off by default, since it protects
# nothing on loopback and costs ~25 % of the throughput here (PG_QUERY= to
# keep libpq's default, sslmode=prefer, which negotiates TLS with Debian's
# snakeoil certificate).
PG_QUERY=${PG_QUERY-?sslmode=disable}
SECRET=bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
RESULTS=$OUT/results.tsv
STEPS=${*:-sqlite postgres scale peer}
BIN=${BIN:-$ROOT/target/release/relais}
SEED=${SEED:-$ROOT/target/release/relais-bench-seed}
SCENARIOS=${SCENARIOS:-"health analgesic thread_read message_post care_plan_put"}

# BIN and SEED may name other builds (e.g. a copy of main's, for before/after).
if [[ ! -x $BIN || ! -x $SEED || ${BUILD:-1} == 1 ]]; then
    cargo build --release --bin relais --bin relais-bench-seed
fi
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
[[ -f $RESULTS ]] || printf 'when\tbackend\tpatients\tscenario\tconns\treq_s\tp50_ms\tp99_ms\tnon2xx\terrors\n' >"$RESULTS"

SERVER_PID=
stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
trap stop_server EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# fresh_db BACKEND NAME -> sets DB_URL (and PG_DB)
fresh_db() {
    local backend=$1 name=$2
    if [[ $backend == sqlite ]]; then
        rm -rf "$OUT/$name"
        mkdir -p "$OUT/$name"
        DB_URL="sqlite://$OUT/$name/relais.db"
    else
        PG_DB=relais_bench_$name
        psql -q "$PGURL_BASE/postgres" -c "DROP DATABASE IF EXISTS $PG_DB" -c "CREATE DATABASE $PG_DB"
        DB_URL="$PGURL_BASE/$PG_DB$PG_QUERY"
    fi
}

drop_db() {
    local backend=$1 name=$2
    if [[ $backend == postgres ]]; then
        psql -q "$PGURL_BASE/postgres" -c "DROP DATABASE IF EXISTS relais_bench_$name"
    else
        rm -rf "${OUT:?}/$name" # the SQLite file (GBs at 1 M patients)
    fi
}

server_env() {
    export RELAIS__DATABASE__URL=$DB_URL
    export RELAIS__SERVER__BIND=127.0.0.1:$PORT
    export RELAIS__SERVER__PUBLIC_URL=http://127.0.0.1:$PORT
    export RELAIS__SERVER__DATA_DIR=$DATA
    export RELAIS__AUTH__JWT_SECRET=$SECRET
    export RELAIS__EMAIL__TRANSPORT=log
}

start_server() {
    local tag=$1
    PORT=$(free_port)
    server_env
    "$BIN" serve >"$OUT/server-$tag.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        curl -fsS "http://127.0.0.1:$PORT/api/v1/health/live" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server did not start; see $OUT/server-$tag.log" >&2
    exit 1
}

to_ms() { # "1.23ms" | "850.00us" | "1.02s" -> milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else { sub(/s$/, "", v); printf "%.3f", v * 1000 } }'
}

# load BACKEND PATIENTS SCENARIO CONNS [lua args...]
load() {
    local backend=$1 patients=$2 scenario=$3 conns=$4
    shift 4
    local file=$OUT/$backend-$patients-$scenario-c$conns-$(date -u +%H%M%S).txt
    local token=PHARMACIST_TOKEN
    [[ $scenario == care_plan_put ]] && token=GP_TOKEN
    BENCH_DIR=$SEED_DIR BENCH_LUA=$ROOT/bench/lua BENCH_TOKEN=$token \
        wrk -t2 -c"$conns" -d"${DURATION}s" --latency -s "$ROOT/bench/lua/$scenario.lua" \
        "http://127.0.0.1:$PORT" ${1:+--} "$@" >"$file" 2>&1
    local rps p50 p99 non2xx errors
    rps=$(awk '/^Requests\/sec/ {print $2}' "$file")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$file")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$file")")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$file")
    errors=$(awk '/Socket errors/ {print $0}' "$file" | tr -s ' ' | cut -d' ' -f3- | tr -d ',')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$backend" "$patients" \
        "$scenario" "$conns" "$rps" "$p50" "$p99" "${non2xx:-0}" "${errors:-0}" | tee -a "$RESULTS"
}

hwm() { awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$SERVER_PID/status"; }

verify_audit() {
    server_env
    "$BIN" audit verify
}

run_backend() {
    local backend=$1 name=1k
    fresh_db "$backend" "$name"
    DATA=$OUT/data-$backend-$name
    SEED_DIR=$OUT/seed-$backend-$name
    rm -rf "$DATA" "$SEED_DIR"
    "$SEED" --url "$DB_URL" --secret "$SECRET" --out "$SEED_DIR" --patients "$PATIENTS" \
        --messages $((PATIENTS * HOT_MESSAGES)) --hot-messages "$HOT_MESSAGES" --sample "$PATIENTS"
    start_server "$backend-$name"
    local half=$((PATIENTS / 2)) first=1
    for c in $CONNS; do
        for scenario in $SCENARIOS; do
            if [[ $scenario == care_plan_put ]]; then
                # Each run writes its own half of the patients, so If-Match starts at "1".
                load "$backend" "$PATIENTS" care_plan_put "$c" "$first" $((first + half - 1)) 2
                first=$((first + half))
            else
                load "$backend" "$PATIENTS" "$scenario" "$c"
            fi
        done
    done
    echo "peak memory ($backend, $PATIENTS patients, all runs above): $(hwm)" | tee -a "$OUT/memory.txt"
    stop_server
    verify_audit | tee -a "$OUT/memory.txt"
    drop_db "$backend" "$name"
}

# run_scale BACKEND NAME PATIENTS MESSAGES AUDIT: the analgesic-plan read only.
run_scale() {
    local backend=$1 name=$2 patients=$3 messages=$4 audit=$5
    fresh_db "$backend" "$name"
    DATA=$OUT/data-$backend-$name
    SEED_DIR=$OUT/seed-$backend-$name
    rm -rf "$DATA" "$SEED_DIR"
    "$SEED" --url "$DB_URL" --secret "$SECRET" --out "$SEED_DIR" --patients "$patients" \
        --messages "$messages" --hot-messages "$HOT_MESSAGES" --audit "$audit" --sample 1000
    # Let the seed's gigabytes reach the disk before measuring (on
    # PostgreSQL, first out of its shared buffers).
    [[ $backend == postgres ]] && psql -q "$PGURL_BASE/postgres" -c CHECKPOINT
    sync
    sleep "${SETTLE:-20}"
    start_server "$backend-$name"
    for c in $CONNS; do
        load "$backend" "$patients" health "$c"
        load "$backend" "$patients" analgesic "$c"
    done
    echo "peak memory ($backend, $patients patients, analgesic only): $(hwm)" | tee -a "$OUT/memory.txt"
    stop_server
    drop_db "$backend" "$name"
}

for step in $STEPS; do
    case $step in
        sqlite | postgres) run_backend "$step" ;;
        # 1 000 then BIG_PATIENTS back to back, so the p50 ratio compares like with like.
        scale) for b in $SCALE_BACKENDS; do
                run_scale "$b" s1k 1000 $((1000 * HOT_MESSAGES)) 1000
                run_scale "$b" s1m "$BIG_PATIENTS" "$BIG_MESSAGES" "$BIG_AUDIT"
            done ;;
        peer) "$ROOT/../shared/bench/peer-synapse/run.sh" 2>&1 | tee "$OUT/peer-synapse.txt" | grep '^PEER' ;;
        # Synapse on PostgreSQL: a throwaway cluster on port 55432, stopped afterwards.
        peer-pg)
            PEER=$ROOT/../shared/bench/peer-synapse
            eval "$("$PEER/pg-throwaway.sh" start)"
            PEER_PG_URL=$PEER_PG_URL PEER_PG_POSTMASTER_PID=$PEER_PG_POSTMASTER_PID "$PEER/run.sh" 2>&1 |
                tee "$OUT/peer-synapse-pg.txt" | grep '^PEER' || true
            "$PEER/pg-throwaway.sh" stop ;;
        *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done

echo
echo "== $RESULTS (latest runs)"
column -t -s $'\t' "$RESULTS" | tail -n 40
