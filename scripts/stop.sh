#!/usr/bin/env bash
# `make stop`: end the services scripts/serve.sh started, by the PIDs it recorded in $RUN_DIR/serve/.
# Each service runs in its own process group, so its children (server workers, flow runs) end too.
# Nothing else is touched: a PID whose process is no longer the recorded service is left alone.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=$(realpath -m "${RUN_DIR:-runs}")
STATE="$RUN_DIR/serve"

alive() { kill -0 "$1" 2>/dev/null; }

ends_within() {   # ends_within PID SECONDS
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    alive "$1" || return 0
    sleep 0.2
  done
  return 1
}

stop() {   # stop NAME EXPECTED-WORD SIGNAL...: each signal to the group, until the leader has gone
  local name=$1 word=$2 pid sig
  shift 2
  [ -f "$STATE/$name.pid" ] || return 0
  pid=$(cat "$STATE/$name.pid")
  if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$word"; then
    for sig in "$@"; do
      kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null
      if ends_within "$pid" 15; then break; fi
    done
    if alive "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null
      echo "$name: killed (pid $pid)"
    else
      echo "$name: stopped (pid $pid)"
    fi
  fi
  rm -f "$STATE/$name.pid"
}

# a process worker sits on SIGTERM for a long time but ends on SIGINT
stop worker "prefect" INT TERM
stop prefect-server "prefect" TERM INT
stop mlflow "mlflow" TERM INT
