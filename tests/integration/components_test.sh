#!/usr/bin/env bash
# Components declared in the configuration: dependency order, readiness, environment, a
# component that cannot start, a failed dependency, the cascaded system state, reverse stop,
# and start again from the saved configuration.
source "$(dirname "$0")/harness.sh"

# Each component notes when it starts and when it is asked to stop.
cat >config.json <<JSON
{"storage": {"bucket": "bkt", "endpoint": "file://$TEST_DIR/objects"},
 "components": {
   "db":  {"command": ["sh", "-c", "trap 'echo stop-db >>order; exit 0' TERM; sleep 0.3; echo db >>order; touch db.ready; sleep 1000 & wait"],
           "ready_command": ["test", "-f", "db.ready"]},
   "web": {"command": ["sh", "-c", "trap 'echo stop-web >>order; exit 0' TERM; echo web \$PORT >>order; sleep 1000 & wait"],
           "depends_on": ["db"], "env": {"PORT": "9999"}},
   "broken": {"command": ["./no-such-program"]},
   "after-broken": {"command": ["sleep", "1000"], "depends_on": ["broken"]}
 },
 "stacks": ["web", "after-broken"]}
JSON

sm_start -- sleep 1000
req POST /config -d @config.json
expect_status 200
# web started only once db was ready, and got its environment.
[[ $(cat order) == $'db\nweb 9999' ]] || fail "start order: $(cat order)"
req GET /
expect_json 'j["components"]["db"]["state"] == "running" and j["components"]["web"]["state"] == "running"'
expect_json 'j["components"]["web"]["depends_on"] == ["db"]'
# A program that cannot be executed: failed, with the errno; its dependent never starts.
expect_json 'j["components"]["broken"]["state"] == "failed"'
expect_json '"No such file or directory" in j["components"]["broken"]["last_error"]'
expect_json 'len(j["components"]["broken"]["errors"]) == 1 and j["components"]["broken"]["errors"][0]["message"] == j["components"]["broken"]["last_error"]'
expect_json 'j["components"]["db"]["uptime_s"] >= 0 and j["components"]["broken"]["uptime_s"] is None'
expect_json 'j["components"]["after-broken"]["state"] == "failed" and "broken" in j["components"]["after-broken"]["last_error"]'
# Some parts failed: the system is degraded (and state-manager keeps serving).
expect_json 'j["state"] == "degraded"'
# Every component, and the declared-only dependency "db" and "broken", was started by need.
expect_json 'sorted(j["components"]) == ["after-broken", "broken", "db", "web"]'

# A component that dies is restarted like COMMAND.
web_pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["components"]["web"]["pid"])' "$BODY_FILE")
# The whole tree, as a crash takes it (killing only the sh would leave its sleep behind).
kill -KILL -- "-$web_pid"
end=$((SECONDS + DEADLINE))
until req GET / && python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["components"]["web"]; sys.exit(0 if c["restarts"] == 1 and c["state"] == "running" else 1)' "$BODY_FILE"; do
  ((SECONDS < end)) || fail "web was not restarted: $BODY"
  sleep 0.1
done

# /metrics has every component, labelled.
req GET /metrics
expect_status 200
grep -qx 'state_manager_component_restarts_total{component="web"} 1' "$BODY_FILE" ||
  fail "web's restarts not in /metrics: $(grep component "$BODY_FILE" | head -20)"
grep -qx 'state_manager_component_state{component="broken",state="failed"} 1' "$BODY_FILE" ||
  fail "broken's state not in /metrics"
grep -qx 'state_manager_component_up{component="db"} 1' "$BODY_FILE" || fail "db not up in /metrics"
[[ $(grep -c '^# TYPE state_manager_component_state ' "$BODY_FILE") == 1 ]] ||
  fail "a metric family's TYPE line must appear once"

# Shut-down: COMMAND, then the components in reverse dependency order.
: >order
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT"
[[ $(grep stop- order | tr '\n' ' ') == 'stop-web stop-db ' ]] || fail "stop order: $(cat order)"

# Started again in the same directory: the saved configuration starts the components again.
rm -f db.ready order
sm_start -- sleep 1000
end=$((SECONDS + DEADLINE))
until req GET / && python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if j["components"].get("web", {}).get("state") == "running" and j["process"]["state"] == "running" else 1)' "$BODY_FILE"; do
  ((SECONDS < end)) || fail "components not started from the saved configuration: $BODY"
  sleep 0.1
done
[[ $(head -n1 order) == db ]] || fail "start order after restart: $(cat order)"
sm_stop

# A ready_command that hangs is killed at ready_timeout, the component counts as failing to
# start, and shut-down is not held up by a check (nothing of it is left behind).
mkdir hang && cd hang
sm_start --restart-delay 0
req POST /config -d '{"storage": {"bucket": "bkt", "endpoint": "file://'"$TEST_DIR"'/objects"}, "stacks": ["slow"],
  "components": {"slow": {"command": ["sleep", "1000"], "ready_command": ["sleep", "987652"],
                          "ready_timeout": "1s"}}}'
expect_status 200
end=$((SECONDS + DEADLINE))
until req GET / && python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["components"]["slow"]; sys.exit(0 if any("not ready after 1s" in e["message"] for e in c["errors"]) else 1)' "$BODY_FILE"; do
  ((SECONDS < end)) || fail "the hanging check was not cut off: $BODY"
  sleep 0.1
done
# Restarted at once, it hangs in a new check right now; shut-down kills that at once.
pgrep -f 'sleep 987652' >/dev/null || fail "expected a check to be running"
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT"
pgrep -f 'sleep 987652' >/dev/null && fail "a ready_command outlived state-manager: $(pgrep -af 'sleep 987652')"
cd ..

# Bad declarations are 400 with their paths, and nothing is started.
mkdir bad && cd bad
sm_start
req POST /config -d '{"storage": {"bucket": "bkt", "endpoint": "file://'"$TEST_DIR"'/objects"}, "stacks": ["a"],
  "components": {"a": {"command": [], "depends_on": ["b"]}, "b": {"command": ["true"], "depends_on": ["a"],
  "restart_delay": "-1s"}}}'
expect_status 400
expect_json '{"components.a.command", "components.b.restart_delay"} <= {d["path"] for d in j["details"]}'
expect_json 'any("cycle" in d["message"] for d in j["details"])'
req GET /
expect_json 'j["components"] == {} and j["configured"] is False'
sm_stop
