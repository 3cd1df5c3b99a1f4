#!/usr/bin/env bash
# Start-up and shut-down: directories created, the log formats, GET / unconfigured, SIGTERM and
# SIGINT end in an orderly exit 0.
source "$(dirname "$0")/harness.sh"

# No configuration, empty directory: ./data and ./tmp appear, the text log states the address.
mkdir plain && cd plain
sm_start
[[ -d data ]] || fail "./data not created"
[[ -d tmp ]] || fail "./tmp not created"
grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z info +listening .*address=127\.0\.0\.1:[0-9]+' "$SM_LOG" ||
  fail "no text-format listening line: $(cat "$SM_LOG")"

req GET /
expect_status 200
expect_json_response
expect_json 'j["configured"] is False and j["state"] == "unconfigured"'
expect_json 'j["process"] is None and j["components"] == {} and j["lease"] is None'
expect_json 'j["operation"] is None and j["checkpoints"] == {"count": 0, "latest": None}'
expect_json 'j["version"] == "0.1.0"'

req GET /config
expect_status 404
expect_json_response
expect_json 'isinstance(j["error"], str) and j["error"]'

req GET /healthz
expect_status 200
expect_json_response
expect_json 'j == {"status": "ok"}'

sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM, expected 0"
cd ..

# SIGINT is an orderly shut-down as well; existing directories are reused.
mkdir -p sigint/data sigint/tmp && cd sigint
echo keep >data/existing
sm_start
req GET /
expect_status 200
sm_stop "$SM_PID" INT
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGINT, expected 0"
[[ $(cat data/existing) == keep ]] || fail "data/existing was touched"
cd ..

# Other directories; JSON logs: every line an object with time, level, msg (and fields).
mkdir json && cd json
sm_start --log-format json --data-dir my-data --tmp-dir my-tmp
[[ -d my-data && -d my-tmp ]] || fail "--data-dir/--tmp-dir not created: $(ls)"
[[ ! -e data && ! -e tmp ]] || fail "./data or ./tmp created despite --data-dir/--tmp-dir"
req GET /
expect_status 200
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM (json logs)"
python3 - "$SM_LOG" "$SM_PORT" <<'EOF' || fail "bad JSON log"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert lines, "empty log"
listening = []
for line in lines:
    entry = json.loads(line)
    for key in ("time", "level", "msg"):
        assert isinstance(entry.get(key), str), f"{key!r} missing in {line}"
    assert entry["level"] in ("debug", "info", "warn", "error"), line
    if "address" in entry:
        listening.append(entry)
assert any(e["address"] == "127.0.0.1:" + sys.argv[2] for e in listening), lines
EOF
cd ..

# --log-level warn hides info lines (so no listening line: find the port by asking).
mkdir quiet && cd quiet
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SM_LISTEN=127.0.0.1:$port
STATE_MANAGER_LOG_LEVEL=warn env --default-signal=INT "$STATE_MANAGER_BIN" --listen "$SM_LISTEN" \
  >"$LOG_DIR/quiet.log" 2>&1 &
SM_PID=$!
STARTED_PIDS+=("$SM_PID")
SM_URL=http://127.0.0.1:$port
end=$((SECONDS + DEADLINE))
until req GET /healthz && [[ $STATUS == 200 ]]; do
  pid_running "$SM_PID" || fail "--log-level warn instance exited: $(cat "$LOG_DIR/quiet.log")"
  ((SECONDS < end)) || fail "--log-level warn instance never answered /healthz"
  sleep 0.1
done
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM (log level warn)"
if grep -E ' (info|debug) ' "$LOG_DIR/quiet.log"; then fail "--log-level warn printed info lines"; fi
cd ..
