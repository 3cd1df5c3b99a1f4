#!/usr/bin/env bash
# The routes of the HTTP API: status codes unconfigured and configured, checkpoint
# id validation (no path leaves tmp/checkpoints), 404 / 405 with Allow, HEAD, JSON everywhere.
source "$(dirname "$0")/harness.sh"

mkdir work && cd work  # the instance's directory holds nothing but what it creates
sm_start

req GET /healthz
expect_status 200
expect_json_response
expect_json 'j == {"status": "ok"}'

# Unconfigured: the state operations are 400.
for path in /checkpoint /restore; do
  req POST "$path" -d '{"id":"test1"}'
  expect_status 400
  expect_json_response
  expect_json 'isinstance(j["error"], str) and j["error"]'
done
req POST /release-lease
expect_status 400
expect_json_response

# Unknown paths: 404 JSON.
for path in /nosuch /config/extra /healthz/x '/%2e%2e/etc/passwd'; do
  req GET "$path"
  expect_status 404
  expect_json_response
done

# Wrong methods: 405 with Allow naming the allowed ones.
req DELETE /
expect_status 405
expect_json_response
expect_header Allow '.*GET.*'
req PUT /config -d '{}'
expect_status 405
expect_json_response
expect_header Allow '.*GET.*'
expect_header Allow '.*POST.*'
req GET /checkpoint
expect_status 405
expect_header Allow '.*POST.*'
req GET /restore
expect_status 405
expect_header Allow '.*POST.*'
req GET /release-lease
expect_status 405
expect_header Allow '.*POST.*'
req POST /healthz
expect_status 405
expect_header Allow '.*GET.*'

# HEAD /: 200, headers only (on the wire: the next answer follows the headers at once).
req HEAD /
expect_status 200
expect_header Content-Type 'application/json.*'
sm_python <<'EOF' || fail "HEAD / sent a body"
import json, rawhttp
s = rawhttp.connect()
s.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + rawhttp.get("/healthz"))
r = rawhttp.Reader(s)
status, headers, body = r.response(head_only=True)
assert status == 200, status
status, headers, body = r.response()
assert status == 200 and json.loads(body) == {"status": "ok"}, (status, body)
EOF

# Configured (file store, no components).
req POST /config -d "$(file_config)"
expect_status 200

find . | sort >../before.txt
# Invalid checkpoint ids: 400, and nothing appears anywhere (above all not outside tmp/checkpoints).
long_id=$(printf 'a%.0s' {1..129})
for id in '../x' '.hidden' 'a/b' "$long_id" '' '..' '.' 'a b' 'x\u0000y' '/abs' 'a\\b' '~x'; do
  for path in /checkpoint /restore; do
    req POST "$path" -d "{\"id\": \"$id\"}"
    expect_status 400
    expect_json_response
  done
done
for body in '{"id": 42}' '{"id": null}' '{"id": ["a"]}' 'not json' '[]' '"test1"'; do
  for path in /checkpoint /restore; do
    req POST "$path" -d "$body"
    expect_status 400
    expect_json_response
  done
done
# Restore needs an id (a checkpoint may be created without one: the server names it).
for body in '{}' ''; do
  req POST /restore -d "$body"
  expect_status 400
  expect_json_response
done
find . | grep -v '^\./tmp/checkpoints' | sort >../after.txt
grep -v '^\./tmp/checkpoints' ../before.txt | diff - ../after.txt ||
  fail "invalid checkpoint ids created files outside tmp/checkpoints"
[[ ! -e x && ! -e tmp/x && ! -e tmp/checkpoints/a && ! -e hidden && ! -e /abs ]] ||
  fail "a checkpoint id escaped tmp/checkpoints"

# A valid id at the limit of 128 characters is valid (restore: 404, no such checkpoint).
id128=$(printf 'b%.0s' {1..128})
req POST /restore -d "{\"id\": \"$id128\"}"
expect_status 404
req POST /restore -d '{"id":"nonexistent"}'
expect_status 404
expect_json_response
expect_json 'isinstance(j["error"], str) and j["error"]'

# A checkpoint is made, uploaded in the background and restored (checkpoint_test.sh has the
# details).
req POST /checkpoint -d '{"id":"test1"}'
expect_status 200
expect_json_response
expect_json 'j["id"] == "test1" and j["upload"]["state"] in ("pending", "uploading", "done")'
[[ -e tmp/checkpoints/test1/manifest.json ]] || fail "no manifest for checkpoint test1"
wait_until "test1's upload" sh -c "curl -s '$SM_URL/checkpoints/test1' | grep -q '\"state\":\"done\"'"
req POST /restore -d '{"id":"test1"}'
expect_status 200
expect_json_response
req DELETE /checkpoints/test1
expect_status 200
req POST /restore -d '{"id":"test1"}'
expect_status 404
req GET /
expect_status 200
expect_json_response
expect_json 'j["configured"] is True and j["operation"] is None and j["checkpoints"] == {"count": 0, "latest": None}'

# Listing, describing and deleting what tmp/checkpoints/ holds: a checkpoint as state-manager
# writes it (a manifest naming itself), one without a manifest, ids that are invalid.
req GET /checkpoints
expect_status 200
expect_json_response
expect_json 'j == {"count": 0, "checkpoints": [], "store_error": None}'
mkdir -p tmp/checkpoints/handmade/mount tmp/checkpoints/nomanifest
cat >tmp/checkpoints/handmade/manifest.json <<'JSON'
{"id": "handmade", "created_at_unix_ms": 1795000000000, "parent": null, "version": "0.1.0",
 "database": null, "mount": {"files": 0, "dirs": 1, "symlinks": 0, "bytes": 0}, "steps_ms": {}}
JSON
req GET /checkpoints
expect_status 200
expect_json 'j["count"] == 1 and j["checkpoints"][0]["id"] == "handmade" and j["checkpoints"][0]["created_at"].startswith("2026-")'
req GET /checkpoints/handmade
expect_status 200
expect_json 'j["id"] == "handmade" and j["mount"]["dirs"] == 1'
req GET /
expect_json 'j["checkpoints"] == {"count": 1, "latest": "handmade"}'
for id in nomanifest nosuch; do
  req GET "/checkpoints/$id"
  expect_status 404
  expect_json_response
done
for id in '..' '.hidden' 'x.partial' "$long_id"; do
  req GET "/checkpoints/$id" --path-as-is
  expect_status 400
  req DELETE "/checkpoints/$id" --path-as-is
  expect_status 400
done
req DELETE /checkpoints/handmade
expect_status 200
expect_json 'j["deleted"] == "handmade" and j["local"] is True'
[[ ! -e tmp/checkpoints/handmade ]] || fail "DELETE left the checkpoint"
req DELETE /checkpoints/handmade
expect_status 404
req GET /
expect_json 'j["checkpoints"] == {"count": 0, "latest": None}'

req POST /release-lease
expect_status 200
expect_json_response
expect_json 'j["released"] is True and j["lease"]["held"] is False and j["flushed"] == []'
# Released twice: still 200, nothing was held any more.
req POST /release-lease
expect_status 200
expect_json 'j["released"] is False and j["lease"]["held"] is False'

# Released: fenced until a restart (DESIGN 3.2); the store may be another machine's now.
mkdir -p tmp/checkpoints/handmade2/mount
printf '{"id": "handmade2", "created_at_unix_ms": 1795000000000, "parent": null, "version": "0.1.0", "database": null, "mount": {"files": 0, "dirs": 1, "symlinks": 0, "bytes": 0}, "steps_ms": {}}\n' >tmp/checkpoints/handmade2/manifest.json
req DELETE /checkpoints/handmade2
expect_status 409
expect_json_response
expect_json 'j["error"] == "lease not held"'
[[ -e tmp/checkpoints/handmade2 ]] || fail "a DELETE after the release removed the checkpoint"

# An interrupted checkpoint (<id>.partial/) is gone after a restart.
mkdir -p tmp/checkpoints/v3.partial/mount
sm_stop
sm_start
[[ ! -e tmp/checkpoints/v3.partial ]] || fail "an interrupted checkpoint survived the restart"
grep -q "removed an interrupted checkpoint id=v3" "$SM_LOG" || fail "no log line for the removed partial"

sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT after SIGTERM"
