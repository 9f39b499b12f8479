#!/usr/bin/env bash
# $everything benchmark (issue 16): release server on a fresh SQLite demo
# database, a patient with 1 000 messages and 50 plan versions, 200
# sequential reads timed by bench/fhir_everything.py. Never run by CI.
#
#   bench/fhir_everything.sh            (BUILD=0 to reuse target/release/relais)
#   REQUESTS=200 WARMUP=20 BIN=...      knobs
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BIN=${BIN:-$ROOT/target/release/relais}
if [[ ! -x $BIN || ${BUILD:-1} == 1 ]]; then
    cargo build --release --bin relais
fi
work=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" || true
    rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export RELAIS__DATABASE__URL="sqlite://$work/relais.db"
export RELAIS__SERVER__DATA_DIR="$work/data"
export RELAIS__SERVER__BIND="127.0.0.1:$port"
export RELAIS__SERVER__PUBLIC_URL="http://127.0.0.1:$port"
export RELAIS__EMAIL__TRANSPORT=log
export RUST_LOG=warn
"$BIN" demo > /dev/null
"$BIN" serve > "$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/api/v1/health/ready" > /dev/null && break
    sleep 0.1
done
python3 "$ROOT/bench/fhir_everything.py" "http://127.0.0.1:$port" "${REQUESTS:-200}" "${WARMUP:-20}"
