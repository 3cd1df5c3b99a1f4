#!/usr/bin/env bash
# PID 1 never blocks on its own logs: with stdout and stderr a pipe that nobody reads, the API
# keeps answering and SIGTERM still stops it; log lines beyond the writer's bound are dropped and
# counted (/metrics), and once the pipe is read again a line says how many were lost.
source "$(dirname "$0")/harness.sh"

# The pipe: this shell holds both ends (fd 3) and reads nothing until the end.
mkfifo out.fifo
exec 3<>out.fifo
env --default-signal=INT,QUIT "$STATE_MANAGER_BIN" --listen 127.0.0.1:0 --log-level debug \
  >out.fifo 2>&1 &
SM_PID=$!
STARTED_PIDS+=("$SM_PID")
port=""
while read -r -t "$DEADLINE" line <&3; do
  port=$(sed -nE 's/.*listening address=[^ ]*:([0-9]+).*/\1/p' <<<"$line")
  [[ -z $port ]] || break
done
[[ -n $port ]] || fail "no 'listening' line within ${DEADLINE}s"
SM_URL=http://127.0.0.1:$port
log "listening on $port; from now on nobody reads its output"

# Each forwarded signal with no COMMAND to take it is a debug line (about 100 bytes): a few
# thousand of them fill the pipe (64 KiB) and then the writer's buffer. The API must answer
# every probe within 5 s meanwhile (before the fix, the first line that did not fit blocked the
# executor for good).
metric() {
  curl -s --max-time 5 "$SM_URL/metrics" | sed -nE "s/^$1 ([0-9]+)$/\1/p"
}
dropped=0
rounds=0
end=$((SECONDS + 3 * DEADLINE))
while ((dropped == 0)); do
  ((SECONDS < end)) || fail "no log line dropped after $((3 * DEADLINE))s of signals"
  rounds=$((rounds + 1))
  for ((i = 0; i < 1000; i++)); do kill -USR1 "$SM_PID"; done
  for path in /healthz /; do
    status=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$SM_URL$path") || true
    [[ $status == 200 ]] || fail "GET $path answered '$status' within 5 s while stdout is stalled"
  done
  dropped=$(metric state_manager_log_lines_dropped_total)
  dropped=${dropped:-0}
done
log "dropped lines so far: $dropped (after $rounds rounds of 1000 signals)"

# Read the pipe again: what was buffered comes out, then the count of what was lost.
timeout -k 5 "$DEADLINE" python3 - <<'PY' || fail "no 'log lines dropped' line once the pipe was read again"
import os, re, sys
seen = b""
while True:
    chunk = os.read(3, 65536)  # the fifo, inherited from this shell
    if not chunk:
        sys.exit(1)
    seen = seen[-4096:] + chunk
    m = re.search(rb"log lines dropped count=([0-9]+)", seen)
    if m and int(m.group(1)) > 0:
        sys.exit(0)
PY

# Stalled again (nobody reads from here on), SIGTERM still ends it within the deadline.
for ((i = 0; i < 2000; i++)); do kill -USR1 "$SM_PID"; done
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
