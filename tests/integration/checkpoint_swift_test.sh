#!/usr/bin/env bash
# Checkpoints through a real S3 server (Swift with s3api, tools/s3-test-server): a checkpoint with
# a file large enough for a multipart upload and ranged downloads (checked 206s, If-Match on the
# ETag), a path of over 2000 bytes and a name that is not UTF-8 goes up (the manifest created
# best effort: Swift answers 501 to If-None-Match) and comes back whole on another machine.
source "$(dirname "$0")/harness.sh"

s3_server_start
s3_make_bucket ckpt-bucket
config() {
  printf '{"storage": {"bucket": "ckpt-bucket", "endpoint": "%s", "access_key": "%s", "secret_key": "%s"}, "stacks": []}' \
    "$S3_ENDPOINT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
}
upload_state() {
  curl -s "$SM_URL/checkpoints/$1" |
    python3 -c 'import json,sys; u=json.load(sys.stdin).get("upload") or {}; print(u.get("state"))'
}
upload_ended() { [[ $(upload_state "$1") == done || $(upload_state "$1") == failed ]]; }

mkdir -p a/data/env
head -c $((40 << 20)) /dev/urandom >a/data/env/big
echo small >a/data/env/small
long=$(python3 -c 'print("/".join(["d" * 200] * 10))')
mkdir -p "a/data/env/$long"
echo marker-long >"a/data/env/$long/file"
bad=$'name\xff\xfe'
echo marker-bad >"a/data/env/$bad"

cd a
sm_start -- sleep 1000
req POST /config -d "$(config)"
expect_status 200
req POST /checkpoint -d '{"id": "through-swift"}'
expect_status 200
DEADLINE=60 wait_until "the upload to end" upload_ended through-swift
[[ $(upload_state through-swift) == done ]] || fail "the upload: $(curl -s "$SM_URL/checkpoints/through-swift")"
sm_stop
cd "$TEST_DIR"

mkdir -p b/data/env
cd b
sm_start -- sleep 1000
req POST /config -d "$(config)"
expect_status 200
req POST /restore -d '{"id": "through-swift"}'
expect_status 200
expect_json 'j["dropped_privileged"] == 0'
cmp data/env/big "$TEST_DIR/a/data/env/big" || fail "the multipart file differs"
[[ $(cat data/env/small) == small ]] || fail "the small file"
[[ $(cat "data/env/$long/file") == marker-long ]] || fail "the file under a 2000-byte path"
[[ $(cat "data/env/$bad") == marker-bad ]] || fail "the file whose name is not UTF-8"
sm_stop
log "ok"
