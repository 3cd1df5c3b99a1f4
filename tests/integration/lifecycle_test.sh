#!/usr/bin/env bash
# The lifecycle of COMMAND and component health: POST /config stops a COMMAND that runs before there is a
# configuration, starts the components, then starts COMMAND again (so the application never
# sees state from before the restore); a component whose health check fails is `degraded` and
# comes back to `running`; bad health settings are refused.
source "$(dirname "$0")/harness.sh"

pid_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["pid"])' "$BODY_FILE"; }

# --- POST /config restarts a running COMMAND, after the components ---------------------------
# COMMAND notes at each start whether the component had started before it.
cat >command.sh <<'SH'
if [ -f component.started ]; then echo after-component >>starts; else echo alone >>starts; fi
exec sleep 1000
SH
cat >config.json <<JSON
{"storage": {"bucket": "bkt", "endpoint": "file://$TEST_DIR/objects"},
 "components": {"svc": {"command": ["sh", "-c", "touch component.started; exec sleep 1000"],
                        "ready_command": ["test", "-f", "component.started"]}},
 "stacks": ["svc"]}
JSON
sm_start --restart-delay 0 -- sh command.sh
wait_until "COMMAND's first start" test -s starts
req GET /
first=$(pid_of)
req POST /config -d @config.json
expect_status 200
# The answer comes once COMMAND runs again: a new process, started after the component.
req GET /
expect_json 'j["process"]["state"] == "running" and j["components"]["svc"]["state"] == "running"'
second=$(pid_of)
[[ $second != "$first" ]] || fail "COMMAND was not restarted by POST /config (pid $first)"
! pid_running "$first" || fail "the COMMAND from before the configuration still runs"
[[ $(cat starts) == $'alone\nafter-component' ]] || fail "COMMAND's starts: $(cat starts)"
# An intentional restart, not a crash: no restart counted, nothing in last_error.
expect_json 'j["process"]["restarts"] == 0 and j["process"]["last_error"] is None'
expect_json 'j["process"]["last_exit"]["signal"] == "SIGTERM"'
expect_json 'j["state"] == "running"'
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT"

# With --wait-for-config, COMMAND starts once, after the components: nothing to stop.
mkdir wait && cd wait
cp ../command.sh .
sed "s|$TEST_DIR/objects|$TEST_DIR/wait/objects|" ../config.json >config.json
sm_start --wait-for-config -- sh command.sh
req POST /config -d @config.json
expect_status 200
wait_until "COMMAND's start" test -s starts
[[ $(cat starts) == after-component ]] || fail "COMMAND's starts with --wait-for-config: $(cat starts)"
sm_stop
cd ..

# A COMMAND that ignores SIGTERM is killed after --timeout-stop, then started again.
mkdir stubborn && cd stubborn
sm_start --timeout-stop 300ms -- sh -c 'trap "" TERM; echo start >>starts; while :; do sleep 0.05; done'
wait_until "COMMAND's first start" test -s starts
req POST /config -d "$(file_config)"
expect_status 200
wait_until "COMMAND's second start" test "$(wc -l <starts)" -eq 2
req GET /
expect_json 'j["process"]["state"] == "running" and j["process"]["last_exit"]["signal"] == "SIGKILL"'
sm_stop
cd ..

# --- Health: degraded and back -------------------------------------------------------------
mkdir health && cd health
cat >config.json <<JSON
{"storage": {"bucket": "bkt", "endpoint": "file://$TEST_DIR/health/objects"},
 "components": {"web": {"command": ["sleep", "1000"], "ready_command": ["test", "-f", "healthy"],
                        "health_interval": "100ms"}},
 "stacks": ["web"]}
JSON
touch healthy
sm_start
curl -sN --max-time 60 "$SM_URL/events" >events.txt &
STARTED_PIDS+=("$!")
wait_until "the event stream to open" grep -q 'state-manager events' events.txt
req POST /config -d @config.json
expect_status 200
req GET /
expect_json 'j["components"]["web"]["state"] == "running" and j["state"] == "running"'
web_pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["components"]["web"]["pid"])' "$BODY_FILE")

rm healthy
state_is() {
  req GET / && python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if (j["components"]["web"]["state"], j["state"]) == (sys.argv[2], sys.argv[3]) else 1)' "$BODY_FILE" "$1" "$2"
}
wait_until "web to be degraded" state_is degraded degraded
# Degraded is not dead: the same process runs, with the failure in its last error.
expect_json "j['components']['web']['pid'] == $web_pid and j['components']['web']['restarts'] == 0"
expect_json '"health check failed" in j["components"]["web"]["last_error"]'
req GET /metrics
grep -qx 'state_manager_component_state{component="web",state="degraded"} 1' "$BODY_FILE" ||
  fail "degraded not in /metrics: $(grep 'component_state{component="web"' "$BODY_FILE")"

touch healthy
wait_until "web to recover" state_is running running
expect_json 'j["components"]["web"]["last_error"] is None and len(j["components"]["web"]["errors"]) >= 1'
wait_until "the recovery's event" grep -q '"new":"running","old":"degraded"' events.txt
python3 - events.txt <<'PY' || fail "events: $(cat events.txt)"
import json, sys
seen = []
for block in open(sys.argv[1]).read().split("\n\n"):
    fields = dict(l.split(": ", 1) for l in block.split("\n") if l and not l.startswith(":"))
    if "event" in fields:
        d = json.loads(fields["data"])
        seen.append((fields["event"], d.get("name"), d["old"], d["new"]))
web = [s for s in seen if s[1] == "web"]
assert web[-2:] == [("component", "web", "running", "degraded"),
                    ("component", "web", "degraded", "running")], web
system = [s[2:] for s in seen if s[0] == "system"]
assert ("running", "degraded") in system and system[-1] == ("degraded", "running"), system
PY
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT"
cd ..

# --- Bad health settings: 400 with the path -------------------------------------------------
mkdir bad && cd bad
sm_start
for spec in '"health_interval": "100ms"' \
  '"ready_command": ["true"], "health_interval": "0s"' \
  '"ready_command": ["true"], "health_interval": "often"'; do
  req POST /config -d "{\"storage\": {\"bucket\": \"bkt\", \"endpoint\": \"file://$TEST_DIR/bad/o\"},
    \"components\": {\"w\": {\"command\": [\"true\"], $spec}}, \"stacks\": [\"w\"]}"
  expect_status 400
  expect_json '[d["path"] for d in j["details"]] == ["components.w.health_interval"]'
done
req GET /
expect_json 'j["configured"] == False'
sm_stop
