#!/usr/bin/env bash
# `make serve`: lob-sweep's services, every one bound to 127.0.0.1 and stopped by scripts/stop.sh:
#   - a Prefect server (PREFECT_PORT, default 4200), its database under $RUN_DIR/prefect-home;
#   - the process work pool "lobsweep", the deployments of prefect.yaml, and a worker;
#   - an MLflow tracking server with the UI (MLFLOW_PORT, default 5000) on $RUN_DIR/mlflow.db,
#     the store every lobsweep command writes by default.
# PIDs and logs live in $RUN_DIR/serve/. Running it again starts only what is not running.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=$(realpath -m "${RUN_DIR:-runs}")
# through a whitespace-free link to the environment when its path holds a space (Ray needs it: envlink.py)
BIN=${BIN:-$(.venv/bin/python -m lobsweep.envlink)/bin}
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
POOL=${POOL:-lobsweep}
STATE="$RUN_DIR/serve"
mkdir -p "$STATE"

export PREFECT_HOME=${PREFECT_HOME:-$RUN_DIR/prefect-home}
export PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_WORKER_QUERY_SECONDS=${PREFECT_WORKER_QUERY_SECONDS:-5}
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false     # the UI app starts in ~1 s instead of ~11 s
export MLFLOW_DISABLE_TELEMETRY=true
MLFLOW_URL="http://127.0.0.1:$MLFLOW_PORT"

running() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

start() {   # start NAME COMMAND...: in its own process group (stop.sh ends the whole group)
  local name=$1; shift
  if running "$name"; then
    echo "$name: already running (pid $(cat "$STATE/$name.pid"))"
    return
  fi
  setsid "$@" >"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
  echo "$name: started (pid $!, log $STATE/$name.log)"
}

wait_healthy() {   # wait_healthy NAME URL SECONDS
  local i
  for ((i = 0; i < $3; i++)); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    if ! running "$1"; then
      echo "$1 exited during start-up; last lines of $STATE/$1.log:" >&2
      tail -n 5 "$STATE/$1.log" >&2
      exit 1
    fi
    sleep 1
  done
  echo "$1 not healthy after $3 s ($2); see $STATE/$1.log" >&2
  exit 1
}

start prefect-server "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
start mlflow "$BIN/mlflow" server --backend-store-uri "sqlite:///$RUN_DIR/mlflow.db" \
  --artifacts-destination "$RUN_DIR/mlartifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1

wait_healthy prefect-server "$PREFECT_API_URL/health" 180
"$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1 || "$BIN/prefect" work-pool create "$POOL" --type process
"$BIN/prefect" --no-prompt deploy --all >"$STATE/deploy.log" 2>&1 || {
  echo "prefect deploy failed; see $STATE/deploy.log" >&2
  exit 1
}
echo "deployments: $(grep -o "'[a-z-]*/default'" "$STATE/deploy.log" | sort -u | tr '\n' ' ')"

wait_healthy mlflow "$MLFLOW_URL/health" 240
LOBSWEEP_RUN_DIR="$RUN_DIR" MLFLOW_TRACKING_URI="$MLFLOW_URL" \
  start worker "$BIN/prefect" worker start --pool "$POOL" --type process

cat <<MSG

Prefect UI  http://127.0.0.1:$PREFECT_PORT      MLflow UI  $MLFLOW_URL
In another shell:
  export PREFECT_API_URL=$PREFECT_API_URL
  $BIN/prefect deployment run full-search/default --watch
  $BIN/prefect deployment run ensemble/default --param checkpoints=$RUN_DIR/checkpoints --watch
Stop everything with: make stop
MSG
