#!/usr/bin/env bash
# tmp/config.json across restarts: a saved configuration is loaded at start; an invalid file
# makes the server start unconfigured and is moved aside, byte for byte, never overwritten.
source "$(dirname "$0")/harness.sh"

# Applied, stopped, started again in the same directory: still configured, same configuration.
mkdir restart && cd restart
sm_start
req POST /config -d "$(file_config)"
expect_status 200
req GET /config
expect_status 200
cp "$BODY_FILE" config-before.json
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
[[ -f tmp/config.json ]] || fail "tmp/config.json gone after shut-down"

sm_start
req GET /config
expect_status 200
python3 - config-before.json "$BODY_FILE" <<'EOF' || fail "configuration changed across restart: $BODY"
import json, sys
assert json.load(open(sys.argv[1])) == json.load(open(sys.argv[2]))
EOF
req GET /
expect_status 200
expect_json 'j["configured"] is True and j["state"] == "running"'
req POST /config -d "$(file_config)"
expect_status 400  # still applied once
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM (second run)"
cd ..

# A secret from the environment is resolved again at start (against a real S3 server).
s3_server_start
s3_make_bucket env-bucket
mkdir secret && cd secret
SM_TEST_SECRET=$S3_SECRET_KEY sm_start
req POST /config -d "{\"storage\": {\"bucket\": \"env-bucket\", \"endpoint\": \"$S3_ENDPOINT\",
  \"access_key\": \"$S3_ACCESS_KEY\", \"secret_key\": {\"\$env\": \"SM_TEST_SECRET\"}}, \"stacks\": []}"
expect_status 200
sm_stop
SM_TEST_SECRET=$S3_SECRET_KEY sm_start
req GET /config
expect_status 200
expect_json 'j["storage"]["secret_key"] == "***"'
grep -q "$S3_SECRET_KEY" tmp/config.json "$BODY_FILE" && fail "secret leaked after restart"
# The restart claimed the store and took the lease again: its own, from the same directory.
wait_until "the lease after restart" sh -c "curl -s $SM_URL/ | grep -q '\"held\":true'"
sm_stop
cd ..

# start_with_invalid CONTENT: the server starts unconfigured, warns, and moves the file aside.
start_with_invalid() {
  mkdir -p tmp
  printf '%s' "$1" >tmp/config.json
  cp tmp/config.json expected-invalid
  sm_start
  req GET /config
  expect_status 404
  req GET /
  expect_status 200
  expect_json 'j["configured"] is False and j["state"] == "unconfigured"'
  grep -qiE '(^|[^a-z])warn' "$SM_LOG" || fail "no warn-level log line about the invalid file: $(cat "$SM_LOG")"
  grep -i warn "$SM_LOG" | grep -q 'config' || fail "the warn line does not mention the configuration: $(cat "$SM_LOG")"
  [[ ! -e tmp/config.json ]] || fail "the invalid tmp/config.json was left in place"
  # Still usable: a valid configuration can be applied.
  sm_stop
  ((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
}

mkdir garbage && cd garbage
start_with_invalid $'this is {not JSON\n\x01\xff'
cmp -s expected-invalid tmp/config.json.invalid || fail "tmp/config.json.invalid differs from the original"
# A second invalid file does not overwrite the first one.
start_with_invalid '{"storage": {"bucket": "b"}}'
cmp -s expected-invalid tmp/config.json.invalid.1 || fail "second invalid file not at tmp/config.json.invalid.1: $(ls tmp)"
[[ $(head -c 9 tmp/config.json.invalid) == 'this is {' ]] || fail "the first config.json.invalid was overwritten"
cd ..

# Valid JSON that fails validation is treated the same way; afterwards POST /config works.
mkdir semantic && cd semantic
start_with_invalid '{"storage": {"bucket": "bkt", "endpoint": "file:///x"}, "stacks": ["nosuch"]}'
cmp -s expected-invalid tmp/config.json.invalid || fail "tmp/config.json.invalid differs from the original"
sm_start
req POST /config -d "$(file_config)"
expect_status 200
[[ -f tmp/config.json.invalid ]] || fail "applying a configuration removed config.json.invalid"
cd ..
