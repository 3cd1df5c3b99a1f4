#!/usr/bin/env bash
# The API token (--token-file or STATE_MANAGER_TOKEN): every endpoint but GET /healthz needs
# "Authorization: Bearer <token>"; a missing or unreadable token file stops start-up.
source "$(dirname "$0")/harness.sh"

TOKEN=tok-5b8e1f2a
printf '%s\n' "$TOKEN" >token  # the trailing newline is not part of the token

# expect_unauthorized METHOD PATH [CURL ARGS...]
expect_unauthorized() {
  req "$@"
  expect_status 401
  expect_json_response
  expect_header WWW-Authenticate 'Bearer.*'
}

mkdir file && cd file
sm_start --token-file ../token

req GET /healthz
expect_status 200

for auth in '' 'Authorization: Bearer wrong' "Authorization: Bearer ${TOKEN}x" \
  "Authorization: Bearer ${TOKEN:0:-1}" "Authorization: Basic $TOKEN" "Authorization: $TOKEN" \
  'Authorization: Bearer '; do
  expect_unauthorized GET / -H "$auth"
  expect_unauthorized GET /config -H "$auth"
  expect_unauthorized POST /config -H "$auth" -d "$(file_config)"
  expect_unauthorized POST /checkpoint -H "$auth" -d '{"id":"test1"}'
  expect_unauthorized POST /restore -H "$auth" -d '{"id":"test1"}'
  expect_unauthorized POST /release-lease -H "$auth"
done
[[ ! -e tmp/config.json ]] || fail "an unauthorized POST /config was applied"
[[ $BODY != *"$TOKEN"* ]] || fail "the 401 answer contains the token"

good=(-H "Authorization: Bearer $TOKEN")
req GET / "${good[@]}"
expect_status 200
expect_json 'j["configured"] is False'
req GET /config "${good[@]}"
expect_status 404
req POST /config "${good[@]}" -d "$(file_config)"
expect_status 200
req GET /config "${good[@]}"
expect_status 200
req GET /healthz "${good[@]}"
expect_status 200
grep -q "$TOKEN" "$SM_LOG" && fail "the token appears in the log"
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
cd ..

# STATE_MANAGER_TOKEN works the same way.
mkdir env && cd env
STATE_MANAGER_TOKEN=$TOKEN sm_start
req GET /healthz
expect_status 200
expect_unauthorized GET /
expect_unauthorized GET / -H 'Authorization: Bearer nope'
req GET / -H "Authorization: Bearer $TOKEN"
expect_status 200
sm_stop
cd ..

# Refused before the body: without the token, a client announcing a large body with
# "Expect: 100-continue" gets its 401 at once, never an invitation to upload.
mkdir early && cd early
printf 'early-token\n' >token
sm_start --token-file token
sm_python <<'PY' || fail "401 before the body"
import rawhttp
s = rawhttp.connect()
s.sendall(b"POST /config HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n"
          b"Expect: 100-continue\r\n\r\n")
status, headers, _ = rawhttp.Reader(s).response()
assert status == 401, status
assert headers.get("connection") == "close", headers
s = rawhttp.connect()
s.sendall(b"POST /config HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer early-token\r\n"
          b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n")
assert s.recv(64).startswith(b"HTTP/1.1 100 Continue"), "no 100 Continue with the token"
PY
sm_stop
cd ..

# A missing or unreadable token file: exit 1 (or 2) with a message naming the problem.
for token_file in missing-token "$TEST_DIR"; do
  run_cli --listen 127.0.0.1:0 --token-file "$token_file"
  ((CLI_EXIT == 1 || CLI_EXIT == 2)) ||
    fail "--token-file $token_file: expected exit 1 or 2, got $CLI_EXIT; stderr: $(cat "$CLI_ERR")"
  grep -qiE 'token' "$CLI_ERR" || fail "--token-file $token_file: unclear message: $(cat "$CLI_ERR")"
done
