#!/usr/bin/env bash
# Relais benchmarks (issue 7). Never run by CI or `cargo test`.
#
#   bench/run.sh [sqlite] [postgres] [pgbench] [multi] [scale] [peer] [peer-pg]
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
#   pgbench           PostgreSQL's own limit on the same server, for the ratios:
#                     `pgbench -i -s $PGBENCH_SCALE` (10) into a throwaway
#                     database, then for N in $CONNS `pgbench -M prepared -cN -j2
#                     -T$DURATION`, select-only (-S) and TPC-B-like (5 statements,
#                     one commit each); p50/p99 from its per-transaction log.
#   multi             two instances on one fresh PostgreSQL database ($MULTI_PATIENTS
#                     patients, 200), one wrk process per instance, $MULTI_WRITERS
#                     (64) connections in all for $MULTI_DURATION (60) s on the same
#                     16 threads and 16 patients (bench/lua/multi_write.lua: three
#                     message posts in four, one care-plan PUT); reports 5xx, writes
#                     acknowledged but not stored (lost), writes and audit rows
#                     committed per second by both together, peak memory of each,
#                     then `relais audit verify` with each instance's checkpoints.
#   peer              ../shared/bench/peer-synapse/run.sh (Synapse, 16 clients).
#   peer-pg           the same with Synapse on PostgreSQL (throwaway cluster, port 55432).
#   WRAP=             a command the server runs under (e.g. "env LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
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
OTHER_PID= # multi: the first instance, while SERVER_PID is the second
stop_server() {
    local pid
    for pid in $SERVER_PID $OTHER_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            wait "$pid" 2>/dev/null || true
        fi
    done
    SERVER_PID=
    OTHER_PID=
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
    export RELAIS__SERVER__METRICS_BIND=127.0.0.1:$METRICS_PORT
}

start_server() {
    local tag=$1
    PORT=$(free_port)
    METRICS_PORT=$(free_port)
    server_env
    ${WRAP:-} "$BIN" serve >"$OUT/server-$tag.log" 2>&1 &
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
    # The in-memory caches' counters so far (hits, misses), for the hit rates.
    printf '%s %s %s c%s: %s\n' "$(date -u +%FT%TZ)" "$backend" "$scenario" "$conns" \
        "$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
            awk '/^relais_(plan|thread_page)_cache_(hits|misses)_total/ {printf "%s=%s ", $1, $2}')" \
        >>"$OUT/caches.txt"
}

hwm() { awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/${1:-$SERVER_PID}/status"; }

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

# percentiles P.. of pgbench's per-transaction logs (microseconds, 3rd field) in ms
pgbench_percentiles() {
    cat "$@" | awk '{print $3}' | sort -n | awk '{v[NR] = $1} END {
        if (NR == 0) { print "- -"; exit }
        printf "%.3f %.3f\n", v[int(NR * 0.50) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000 }'
}

run_pgbench() {
    local db=relais_bench_pgbench
    psql -q "$PGURL_BASE/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    pgbench -q -i -s "${PGBENCH_SCALE:-10}" "$PGURL_BASE/$db$PG_QUERY" >"$OUT/pgbench-init.txt" 2>&1
    local c mode
    for c in $CONNS; do
        for mode in select tpcb; do
            local tag=pgbench-$mode-c$c-$(date -u +%H%M%S)
            local args=(-M prepared -c "$c" -j 2 -T "$DURATION" -l --log-prefix="$OUT/$tag-log")
            [[ $mode == select ]] && args+=(-S)
            rm -f "$OUT/$tag-log".*
            pgbench "${args[@]}" "$PGURL_BASE/$db$PG_QUERY" >"$OUT/$tag.txt" 2>&1
            local tps failed p
            tps=$(awk '/^tps = / {print $3; exit}' "$OUT/$tag.txt")
            failed=$(awk '/^number of failed transactions/ {print $5; exit}' "$OUT/$tag.txt")
            read -r -a p <<<"$(pgbench_percentiles "$OUT/$tag-log".*)"
            rm -f "$OUT/$tag-log".*
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" pgbench \
                "scale-${PGBENCH_SCALE:-10}" "pgbench_$mode" "$c" "$tps" "${p[0]}" "${p[1]}" \
                "${failed:-0}" 0 | tee -a "$RESULTS"
        done
    done
    psql -q "$PGURL_BASE/postgres" -c "DROP DATABASE IF EXISTS $db"
}

run_multi() {
    local name=multi patients=${MULTI_PATIENTS:-200} writers=${MULTI_WRITERS:-64}
    local duration=${MULTI_DURATION:-60}
    fresh_db postgres "$name"
    local data=$OUT/data-postgres-$name
    SEED_DIR=$OUT/seed-postgres-$name
    rm -rf "$data-a" "$data-b" "$SEED_DIR"
    "$SEED" --url "$DB_URL" --secret "$SECRET" --out "$SEED_DIR" --patients "$patients" \
        --messages $((patients * 10)) --hot-messages 10 --sample "$patients"
    sql() { psql -AtqX "$PGURL_BASE/$PG_DB" -c "$1"; }
    local messages0 versions0 audit0
    messages0=$(sql "SELECT count(*) FROM messages")
    versions0=$(sql "SELECT count(*) FROM care_plan_versions")
    audit0=$(sql "SELECT count(*) FROM audit_events")
    DATA=$data-a start_server postgres-multi-a
    OTHER_PID=$SERVER_PID
    local port_a=$PORT
    DATA=$data-b start_server postgres-multi-b
    local port_b=$PORT half=$((writers / 2)) stamp
    stamp=$(date -u +%H%M%S)
    local out_a=$OUT/postgres-multi-a-c$writers-$stamp.txt out_b=$OUT/postgres-multi-b-c$writers-$stamp.txt
    local ids=$OUT/multi-ids-$stamp
    local wrk_env=(env BENCH_DIR="$SEED_DIR" BENCH_LUA="$ROOT/bench/lua" BENCH_IDS="$ids")
    "${wrk_env[@]}" wrk -t1 -c"$half" -d"${duration}s" --timeout 10s --latency \
        -s "$ROOT/bench/lua/multi_write.lua" "http://127.0.0.1:$port_a" -- a 0 >"$out_a" 2>&1 &
    local wrk_a=$!
    "${wrk_env[@]}" wrk -t1 -c"$half" -d"${duration}s" --timeout 10s --latency \
        -s "$ROOT/bench/lua/multi_write.lua" "http://127.0.0.1:$port_b" -- b 5 >"$out_b" 2>&1
    wait "$wrk_a"
    local hwm_a hwm_b
    hwm_a=$(hwm "$OTHER_PID")
    hwm_b=$(hwm "$SERVER_PID")
    stop_server
    field() { awk -v k="$2" '/^MULTI/ { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) s += kv[2] } } END { print s + 0 }' "$1"; }
    local posted planned stale s5xx other errors messages versions audit
    posted=$(( $(field "$out_a" posted) + $(field "$out_b" posted) ))
    planned=$(( $(field "$out_a" planned) + $(field "$out_b" planned) ))
    stale=$(( $(field "$out_a" stale) + $(field "$out_b" stale) ))
    s5xx=$(( $(field "$out_a" s5xx) + $(field "$out_b" s5xx) ))
    other=$(( $(field "$out_a" other) + $(field "$out_b" other) ))
    errors=$(( $(field "$out_a" errors) + $(field "$out_b" errors) ))
    # Each acknowledged message looked up by its id.
    # Each acknowledged write looked up: messages by id, plan versions by
    # (patient, version).
    local acked missing
    awk '$1 == "m" {print $2}' "$ids"-* >"$ids.m"
    awk '$1 == "p" {print $2 "\t" $3}' "$ids"-* >"$ids.p"
    acked=$(cat "$ids.m" "$ids.p" | wc -l)
    missing=$(psql -AtqX "$PGURL_BASE/$PG_DB" \
        -c "CREATE TEMP TABLE m (id text)" -c "CREATE TEMP TABLE p (patient text, version int)" \
        -c "\\copy m FROM '$ids.m'" -c "\\copy p FROM '$ids.p'" \
        -c "SELECT (SELECT count(*) FROM m WHERE NOT EXISTS (SELECT 1 FROM messages x WHERE x.id = m.id))
                 + (SELECT count(*) FROM p WHERE NOT EXISTS (SELECT 1 FROM care_plan_versions v
                        WHERE v.patient_id = p.patient AND v.version = p.version))")
    rm -f "$ids"-* "$ids.m" "$ids.p"
    messages=$(( $(sql "SELECT count(*) FROM messages") - messages0 ))
    versions=$(( $(sql "SELECT count(*) FROM care_plan_versions") - versions0 ))
    audit=$(( $(sql "SELECT count(*) FROM audit_events") - audit0 ))
    local p_a p_b
    p_a="$(to_ms "$(awk '$1 == "50%" {print $2}' "$out_a")")/$(to_ms "$(awk '$1 == "99%" {print $2}' "$out_a")")"
    p_b="$(to_ms "$(awk '$1 == "50%" {print $2}' "$out_b")")/$(to_ms "$(awk '$1 == "99%" {print $2}' "$out_b")")"
    {
        echo "multi: 2 instances, $writers writers, ${duration}s, load $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "  answers: posted=$posted planned=$planned stale(412)=$stale 5xx=$s5xx other=$other socket_errors=$errors"
        echo "  acknowledged writes not stored: $missing of $acked (each looked up)"
        echo "  stored: messages=$messages, plan versions=$versions (stored - acknowledged: $((messages - posted)), $((versions - planned)): in flight when wrk stopped, or timed out)"
        echo "  committed by both together: $(( (messages + versions) / duration )) writes/s, $((audit / duration)) audit rows/s"
        echo "  p50/p99 ms: a $p_a, b $p_b; peak memory: a $hwm_a, b $hwm_b"
    } | tee -a "$OUT/multi.txt"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" postgres-2x "$patients" \
        multi_write "$writers" "$(( (posted + planned + stale) / duration ))" "${p_a%%/*}" "${p_a##*/}" \
        "5xx=$s5xx,lost=$missing" "$errors" >>"$RESULTS"
    for d in "$data-a" "$data-b"; do
        DATA=$d verify_audit | tee -a "$OUT/multi.txt"
    done
    drop_db postgres "$name"
}

for step in $STEPS; do
    case $step in
        sqlite | postgres) run_backend "$step" ;;
        pgbench) run_pgbench ;;
        multi) run_multi ;;
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
