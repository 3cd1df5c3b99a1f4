#!/usr/bin/env bash
# POST /config and GET /config: validation with JSON paths (the filesystem's settings too),
# saving to tmp/config.json (0600, unresolved {"$env"}), redaction, applied once.
source "$(dirname "$0")/harness.sh"

# A real S3 server: an http(s) endpoint is reached (and the lease taken) before anything is
# saved.
s3_server_start
s3_make_bucket env-bucket
SECRET=$S3_SECRET_KEY
ACCESS=$S3_ACCESS_KEY

# The configuration was not saved and the instance is still unconfigured.
expect_unconfigured() {
  [[ ! -e tmp/config.json ]] || fail "$1: tmp/config.json was written: $(cat tmp/config.json)"
  req GET /config
  expect_status 404
  req GET /
  expect_status 200
  expect_json 'j["configured"] is False'
}

# expect_invalid BODY PATH...: 400 "invalid configuration" with a detail at each PATH.
expect_invalid() {
  local body=$1
  shift
  req POST /config -d "$body"
  expect_status 400
  expect_json_response
  expect_json 'j["error"] == "invalid configuration" and isinstance(j["details"], list)'
  expect_json 'all(isinstance(d["path"], str) and isinstance(d["message"], str) and d["message"] for d in j["details"])'
  local path
  for path in "$@"; do
    expect_json "\"$path\" in [d[\"path\"] for d in j[\"details\"]]"
  done
  expect_unconfigured "$body"
}

mkdir one && cd one
SM_TEST_SECRET=$SECRET sm_start

# Invalid documents: every problem listed with its path, nothing saved.
expect_invalid '{"invalid":true}' storage stacks invalid
expect_invalid '{"storage": {"endpoint": "file:///x"}, "stacks": []}' storage.bucket
expect_invalid '{"storage": {"bucket": "bkt", "endpoint": "file:///x", "addressing": "sideways"}, "stacks": []}' storage.addressing
expect_invalid '{"storage": {"bucket": "bkt"}, "stacks": []}' storage.endpoint
expect_invalid '{"storage": {"bucket": "bkt", "endpoint": "file:///x"}}' stacks
expect_invalid '{"storage": {"bucket": "bkt", "endpoint": "file:///x"}, "stacks": ["nosuch"]}' 'stacks[0]'
expect_invalid '{"storage": {"bucket": "bkt", "endpoint": "file:///x"}, "stacks": "database"}' stacks
expect_invalid '{"storage": {"bucket": "bkt", "endpoint": "http://127.0.0.1:9000"}, "stacks": []}' \
  storage.access_key storage.secret_key
expect_invalid '{"storage": {"bucket": 7, "endpoint": "file:///x", "colour": "red"}, "stacks": []}' \
  storage.bucket storage.colour
# The filesystem's settings, checked also when it is not in stacks (a cache in the mount).
expect_invalid '{"storage": {"bucket": "bkt", "endpoint": "file:///x"}, "stacks": [],
  "filesystem": {"cache_size": "1.5GiB", "mount_options": ["nosuch"], "cache_dir": "data/env/c",
                 "colour": 1}}' \
  filesystem.cache_size 'filesystem.mount_options[0]' filesystem.cache_dir filesystem.colour

# Not JSON at all, or an empty body.
for body in 'not json' '{"storage": ' '' '[]' '"config"'; do
  req POST /config -d "$body"
  expect_status 400
  expect_json_response
  expect_json 'isinstance(j["error"], str)'
  expect_unconfigured "$body"
done

# {"$env": "VAR"} with VAR unset: 400 naming the variable.
req POST /config -d '{"storage": {"bucket": "bkt", "endpoint": "http://127.0.0.1:9000", "access_key": "a",
  "secret_key": {"$env": "SM_TEST_UNSET_VARIABLE"}}, "stacks": []}'
expect_status 400
[[ $BODY == *SM_TEST_UNSET_VARIABLE* ]] || fail "unset \$env variable not named: $BODY"
expect_unconfigured 'unset $env'

# The store must answer and accept us: an unreachable endpoint is 502, a wrong secret and a
# missing bucket are 400 with the store's error code; nothing is saved.
store_refuses() {  # STATUS CODE_REGEX STORAGE_JSON
  req POST /config -d "{\"storage\": $3, \"stacks\": []}"
  expect_status "$1"
  expect_json_response
  expect_json "j['details'][0]['path'] == 'storage' and __import__('re').fullmatch('$2', j['details'][0]['code'])"
  expect_unconfigured "store $2"
}
closed_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
store_refuses 502 'ConnectionFailed' "{\"bucket\": \"env-bucket\", \"endpoint\": \"http://127.0.0.1:$closed_port\", \"access_key\": \"a\", \"secret_key\": \"b\"}"
store_refuses 400 'SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId' "{\"bucket\": \"env-bucket\", \"endpoint\": \"$S3_ENDPOINT\", \"access_key\": \"$ACCESS\", \"secret_key\": \"wrong-secret\"}"
store_refuses 400 'NoSuchBucket' "{\"bucket\": \"no-such-bucket\", \"endpoint\": \"$S3_ENDPOINT\", \"access_key\": \"$ACCESS\", \"secret_key\": \"$SECRET\"}"

# A valid configuration with an http endpoint and a secret from the environment, sent the way
# the seed does it (curl -d: form content type).
cat >config.json <<EOF
{"storage": {"bucket": "env-bucket", "endpoint": "$S3_ENDPOINT",
             "access_key": "$ACCESS", "secret_key": {"\$env": "SM_TEST_SECRET"}},
 "stacks": []}
EOF
req POST /config -d @config.json
expect_status 200
expect_json_response
expect_json 'j["configured"] is True and j["config"]["storage"]["bucket"] == "env-bucket"'
expect_json 'j["config"]["storage"]["secret_key"] == "***" and j["config"]["storage"]["access_key"] == "***"'
[[ $BODY != *"$SECRET"* && $BODY != *"$ACCESS"* ]] || fail "POST /config answer leaks a secret: $BODY"

# Saved: mode 0600, the submitted document with the $env reference unresolved.
[[ -f tmp/config.json ]] || fail "tmp/config.json not written"
mode=$(stat -c %a tmp/config.json)
[[ $mode == 600 ]] || fail "tmp/config.json has mode $mode, expected 600"
grep -q "$SECRET" tmp/config.json && fail "the secret from the environment reached tmp/config.json"
python3 - config.json tmp/config.json <<'EOF' || fail "tmp/config.json differs from the submitted document: $(cat tmp/config.json)"
import json, sys
assert json.load(open(sys.argv[1])) == json.load(open(sys.argv[2]))
EOF
cp tmp/config.json saved.json

req GET /config
expect_status 200
expect_json_response
expect_json "j['storage']['bucket'] == 'env-bucket' and j['storage']['endpoint'] == '$S3_ENDPOINT'"
expect_json 'j["storage"]["access_key"] == "***" and j["storage"]["secret_key"] == "***"'
expect_json 'j["storage"]["region"] == "us-east-1" and j["storage"]["key_prefix"] == "" and j["storage"]["env_dir"] == "data/env"'
expect_json 'j["stacks"] == [] and j.get("components", {}) == {}'
# The filesystem's settings as they are in effect: sizes in bytes, default paths null.
expect_json 'j["filesystem"]["block_size"] == 4194304 and j["filesystem"]["cache_size"] == 1073741824'
expect_json 'j["filesystem"]["cache_dir"] is None and j["filesystem"]["mount_options"] == []'
[[ $BODY != *"$SECRET"* && $BODY != *"$ACCESS"* ]] || fail "GET /config leaks a secret: $BODY"

req GET /
expect_status 200
expect_json 'j["configured"] is True and j["state"] == "running" and j["components"] == {}'

# Applied once: a second POST is 400 and changes nothing.
req POST /config -d "$(file_config)"
expect_status 400
expect_json_response
cmp -s saved.json tmp/config.json || fail "a rejected second POST /config changed tmp/config.json"
req GET /config
expect_json "j['storage']['endpoint'] == '$S3_ENDPOINT'"

grep -q "$SECRET" "$SM_LOG" && fail "the secret appears in the log"
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
cd ..

# The embedded file store: no keys needed; application/json content type works too.
mkdir two && cd two
sm_start
req POST /config -H 'Content-Type: application/json' -d "$(file_config)"
expect_status 200
expect_json 'j["configured"] is True'
req GET /config
expect_status 200
expect_json "j[\"storage\"][\"endpoint\"] == \"file://$TEST_DIR/objects\" and j[\"storage\"][\"bucket\"] == \"env-bucket\""
expect_json 'j["storage"].get("access_key", "") in ("", "***") and j["storage"].get("secret_key", "") in ("", "***")'
cd ..
