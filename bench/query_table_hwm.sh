#!/usr/bin/env bash
# hwm.sh BIN TAG: VmHWM of `BIN serve` after start-up, after 20 GET /health/live,
# after one GET /health/live?x=1 (the first request with a query string), after 20 more.
set -euo pipefail
BIN=$1; TAG=$2; D=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
export RELAIS__DATABASE__URL=sqlite://$D/relais.db RELAIS__SERVER__BIND=127.0.0.1:$PORT \
  RELAIS__SERVER__PUBLIC_URL=http://127.0.0.1:$PORT RELAIS__SERVER__DATA_DIR=$D/data \
  RELAIS__AUTH__JWT_SECRET=hwm-secret-0123456789abcdef0123456789 RELAIS__EMAIL__TRANSPORT=log
cd "$(dirname "$0")/.."
"$BIN" serve >"$D/log" 2>&1 & PID=$!
for i in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/api/v1/health/live" >/dev/null && break; sleep 0.2; done
hwm() { awk '/VmHWM/{print $2}' /proc/$PID/status; }
a=$(hwm)
for i in $(seq 20); do curl -fs "http://127.0.0.1:$PORT/api/v1/health/live" >/dev/null; done; b=$(hwm)
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/api/v1/health/live?x=1"); c=$(hwm)
for i in $(seq 20); do curl -s -o /dev/null "http://127.0.0.1:$PORT/api/v1/health/live?x=1"; done; d=$(hwm)
kill $PID; wait $PID 2>/dev/null || true
echo "HWM $TAG start=${a}kB live20=${b}kB first_query(${code})=${c}kB query20=${d}kB"
rm -rf "$D"
