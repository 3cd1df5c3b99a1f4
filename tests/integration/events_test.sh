#!/usr/bin/env bash
# GET /events: Server-Sent Events for every change of COMMAND's state and of the system's, in
# order, with increasing ids; the stream ends when state-manager stops.
source "$(dirname "$0")/harness.sh"

sm_start --restart-delay 0 -- sleep 1000
curl -sN --max-time 60 "$SM_URL/events" >events.txt &
curl_pid=$!
STARTED_PIDS+=("$curl_pid")
wait_until "the event stream to open" grep -q 'state-manager events' events.txt

# A crash and a restart, a configuration (which restarts COMMAND), a shut-down.
req GET /
first=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["pid"])' "$BODY_FILE")
kill -TERM "$first"
wait_until "the restart's events" grep -q '"old":"starting"' events.txt
req POST /config -d "$(file_config)"
expect_status 200
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT"
# The stream ends by itself when state-manager stops.
wait_exit "$curl_pid" 10 || fail "the event stream outlived state-manager"

python3 - events.txt <<'PY' || fail "events: $(cat events.txt)"
import json, sys
events, current = [], {}
for line in open(sys.argv[1]).read().split("\n"):
    if not line:
        if current:
            events.append(current)
        current = {}
    elif not line.startswith(":"):
        key, _, value = line.partition(": ")
        current[key] = value
ids = [int(e["id"]) for e in events]
assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
seen = [(e["event"], json.loads(e["data"])["old"], json.loads(e["data"])["new"]) for e in events]
expected = [
    ("process", "running", "restarting"),
    ("process", "restarting", "starting"),
    ("process", "starting", "running"),
    # POST /config: COMMAND is stopped, then started again once the components are up.
    ("process", "running", "stopping"),
    ("system", "unconfigured", "starting"),
    ("process", "stopping", "stopped"),
    ("process", "stopped", "pending"),
    ("process", "pending", "starting"),
    ("process", "starting", "running"),
    ("system", "starting", "running"),
    # Shut-down.
    ("system", "running", "stopping"),
    ("process", "running", "stopping"),
    ("process", "stopping", "stopped"),
    ("system", "stopping", "stopped"),
]
assert seen == expected, seen
restart = json.loads(events[0]["data"])
assert restart["last_exit"]["signal"] == "SIGTERM" and restart["restarts"] == 1, restart
assert all("at" in json.loads(e["data"]) for e in events)
PY

# The content type is text/event-stream; without COMMAND the stream still opens.
sm_start
req HEAD /events
expect_status 200
expect_header Content-Type 'text/event-stream'
sm_stop
