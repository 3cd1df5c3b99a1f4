#!/usr/bin/env bash
# Checkpoints through the object store: what a restore on another machine gets back (hard links,
# owners, set-group-ID bits, extended attributes, names that are not UTF-8), release-lease
# waiting for an upload under way, a failed upload going up again at the next start, and
# shut-down waiting for an upload.
source "$(dirname "$0")/harness.sh"

config() {  # config KEY_PREFIX
  printf '{"storage": {"bucket": "env-bucket", "endpoint": "file://%s/objects", "key_prefix": "%s"},
  "stacks": ["database"]}' "$TEST_DIR" "$1"
}
store=$TEST_DIR/objects/env-bucket
# object_of DIR PATH: the object file that holds PATH of the checkpoint uploaded to DIR
# (files/<sha256>, found through manifest.json and the index it names).
object_of() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
d, path = sys.argv[1], sys.argv[2]
sha = json.load(open(d + "/manifest.json"))["store"]["index_sha256"]
for e in json.load(open(d + "/index-" + sha + ".json")):
    if e.get("path") == path:
        print(d + "/files/" + e["sha256"])
EOF
}
index_of() {  # index_of DIR: the index file of the checkpoint uploaded to DIR
  python3 -c 'import json,sys; print(sys.argv[1] + "/index-" + json.load(open(sys.argv[1] + "/manifest.json"))["store"]["index_sha256"] + ".json")' "$1"
}
upload_is() {  # upload_is ID STATE: whether GET /checkpoints/ID says its upload is STATE
  [[ $(curl -s "$SM_URL/checkpoints/$1" |
    python3 -c 'import json,sys; u=json.load(sys.stdin).get("upload") or {}; print(u.get("state"))') == "$2" ]]
}

# --- Machine a makes a checkpoint whose files carry every kind of metadata.
mkdir -p a/data/env/sub a/data/env/dir
cd a
echo "linked" >data/env/sub/file
ln data/env/sub/file data/env/hard
ln -s sub/file data/env/symlink
# 40 MiB apparent, 1 MiB of data in the middle.
truncate -s 40M data/env/sparse
head -c 1048576 /dev/urandom | dd of=data/env/sparse bs=1M seek=20 conv=notrunc status=none
bad=$'bad\xffname'
echo "not UTF-8" >"data/env/$bad"
python3 - <<'EOF'
import os
os.setxattr("data/env/sub/file", "user.binary", b"\x00\xff\x01 bytes")
os.setxattr("data/env/dir", "user.note", b"on a directory")
EOF
as_root=0
if ((EUID == 0)); then
  as_root=1
  chown 1234:5678 data/env/sub/file
  chown -h 4321:8765 data/env/symlink
fi
chmod 2750 data/env/sub/file  # after the chown, which would clear it
touch -d '2020-02-02 02:02:02.123456789' data/env/dir
sm_start -- sleep 1000
req POST /config -d "$(config "")"
expect_status 200
req POST /checkpoint -d '{"id": "meta"}'
expect_status 200
# release-lease answers once the checkpoint is in the store: the next owner needs it.
req POST /release-lease
expect_status 200
[[ -e $store/checkpoints/meta/manifest.json ]] || fail "release-lease answered before the upload ended"
expect_json 'j["released"] is True'
# The second name of the inode is not uploaded twice.
linked=$(object_of "$store/checkpoints/meta" mount/sub/file)
[[ -n $linked && $(cat "$linked") == linked ]] || fail "the linked file is not in the store"
[[ -z $(object_of "$store/checkpoints/meta" mount/hard) ]] || fail "a hard link's second name was uploaded again"
python3 - "$(index_of "$store/checkpoints/meta")" <<'EOF' || fail "the index does not describe the link"
import json, sys
index = {e.get("path"): e for e in json.load(open(sys.argv[1]))}
hard = index["mount/hard"]
assert hard["type"] == "h" and hard["target"] == "mount/sub/file", hard
assert "path_hex" in [k for e in json.load(open(sys.argv[1])) for k in e], "no hex-encoded name"
EOF
sm_stop
((SM_EXIT == 0)) || fail "a exited $SM_EXIT"
cd "$TEST_DIR"

# --- Machine b (its own directory, the same bucket) restores it from the store, set-id bits
# included (restore_privileged; checkpoint_distrust_test.sh covers the default).
mkdir b
cd b
sm_start -- sleep 1000
req POST /config -d "$(config "" | sed 's/^{/{"restore_privileged": true, /')"
expect_status 200
# Before any restore, b lists what a made: in the store only.
req GET /checkpoints
expect_status 200
expect_json 'j["count"] == 1 and j["store_error"] is None'
expect_json 'j["checkpoints"][0]["id"] == "meta" and j["checkpoints"][0]["location"] == "store"'
expect_json 'j["checkpoints"][0]["mount"]["files"] == 3  # a hard link counts once'
req GET /checkpoints/meta
expect_status 200
expect_json 'j["location"] == "store" and j["id"] == "meta"'
req GET /checkpoints/nosuch
expect_status 404
run_cli checkpoint list --url "$SM_URL"
((CLI_EXIT == 0)) || fail "checkpoint list: exit $CLI_EXIT"
grep -Eq '^meta +[^ ]+ +store ' "$CLI_OUT" || fail "checkpoint list: $(cat "$CLI_OUT")"
req POST /restore -d '{"id": "meta"}'
expect_status 200
req GET /checkpoints/meta
expect_json 'j["location"] == "local"'
[[ $(cat data/env/hard) == linked ]] || fail "the hard link's content"
[[ $(stat -c %i data/env/hard) == $(stat -c %i data/env/sub/file) ]] ||
  fail "the two names are separate files after the restore"
[[ $(stat -c %h data/env/sub/file) == 2 ]] || fail "link count $(stat -c %h data/env/sub/file)"
[[ $(readlink data/env/symlink) == sub/file ]] || fail "the symlink"
[[ $(cat "data/env/$bad") == "not UTF-8" ]] || fail "the file whose name is not UTF-8"
cmp data/env/sparse "$TEST_DIR/a/data/env/sparse" || fail "the sparse file's content"
(($(du -k data/env/sparse | cut -f1) < 4096)) || fail "the sparse file came back without its holes: $(du -k data/env/sparse)"
[[ $(stat -c %a data/env/sub/file) == 2750 ]] || fail "mode $(stat -c %a data/env/sub/file), not 2750"
[[ $(stat -c %y data/env/dir) == "2020-02-02 02:02:02.123456789"* ]] ||
  fail "the directory's time: $(stat -c %y data/env/dir)"
python3 - <<'EOF' || fail "extended attributes were not restored"
import os
assert os.getxattr("data/env/sub/file", "user.binary") == b"\x00\xff\x01 bytes"
assert os.getxattr("data/env/dir", "user.note") == b"on a directory"
EOF
if ((as_root)); then
  [[ $(stat -c %u:%g data/env/sub/file) == 1234:5678 ]] || fail "owner $(stat -c %u:%g data/env/sub/file)"
  [[ $(stat -c %u:%g data/env/symlink) == 4321:8765 ]] || fail "the symlink's owner"
fi
# A checkpoint in the store whose index leads out of it (through a symlink it makes, or by an
# entry of a type we do not know) is refused, and nothing is written outside. (In the layout
# before hashes, format 1, whose downloads are still read: no "store" in the manifest,
# index.json, files/<path>.)
mkdir -p "$TEST_DIR/outside"
for evil in through-link unknown-type; do
  mkdir -p "$store/checkpoints/$evil/files/mount"
  python3 - "$store/checkpoints/meta/manifest.json" "$evil" >"$store/checkpoints/$evil/manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
m["id"] = sys.argv[2]
del m["store"]
print(json.dumps(m))
EOF
  echo pwn >"$store/checkpoints/$evil/files/mount/f"
done
cat >"$store/checkpoints/through-link/index.json" <<EOF
[{"path": "mount", "type": "d", "mode": 493, "mtime_ns": 0, "size": 0},
 {"path": "mount/a", "type": "l", "target": "$TEST_DIR/outside", "mode": 511, "mtime_ns": 0, "size": 0},
 {"path": "mount/f", "type": "f", "mode": 420, "mtime_ns": 0, "size": 4},
 {"path": "mount/a/pwn", "type": "h", "target": "mount/f", "mode": 420, "mtime_ns": 0, "size": 4}]
EOF
cat >"$store/checkpoints/unknown-type/index.json" <<EOF
[{"path": "mount", "type": "d", "mode": 493, "mtime_ns": 0, "size": 0},
 {"path": "mount/x", "type": "x", "mode": 511, "mtime_ns": 0, "size": 0, "uid": 0, "gid": 0}]
EOF
for evil in through-link unknown-type; do
  req POST /restore -d "{\"id\": \"$evil\"}"
  expect_status 502
  [[ ! -e tmp/checkpoints/$evil && ! -e tmp/checkpoints/$evil.partial ]] || fail "$evil was kept"
done
[[ -z $(ls -A "$TEST_DIR/outside") ]] || fail "a download wrote outside the checkpoint: $(ls "$TEST_DIR/outside")"
[[ $(cat data/env/hard) == linked ]] || fail "a refused download changed the environment"
sm_stop
cd "$TEST_DIR"

# --- An upload that fails (the store refuses its keys) goes up again at the next start.
mkdir -p c/data/env "$store/c"
echo "retry me" >c/data/env/file
: >"$store/c/checkpoints"  # a file where the store needs a directory
cd c
sm_start -- sleep 1000
req POST /config -d "$(config c/)"
expect_status 200
req POST /checkpoint -d '{"id": "retried"}'
expect_status 200
wait_until "the upload to fail" upload_is retried failed
sm_stop
rm "$store/c/checkpoints"
sm_start -- sleep 1000
wait_until "the upload to be resumed" test -e "$store/c/checkpoints/retried/manifest.json"
grep -q 'uploading it again' "$SM_LOG" || fail "no log line for the resumed upload"
wait_until "the upload's status" upload_is retried done
[[ $(cat "$(object_of "$store/c/checkpoints/retried" mount/file)") == "retry me" ]] || fail "the resumed upload's file"
sm_stop
# The next start finds it in the store and says so, without uploading it again.
sm_start -- sleep 1000
wait_until "the upload found done" upload_is retried done
! grep -q 'uploading it again' "$SM_LOG" || fail "an uploaded checkpoint was uploaded again"
sm_stop
cd "$TEST_DIR"

# --- SIGTERM while an upload runs: shut-down waits for it before it frees the lease.
# 600 small files besides: an object each, fsynced by the file:// store, so that the upload is
# still running when SIGTERM comes.
mkdir -p d/data/env/small
for i in $(seq 1 24); do head -c 4000000 /dev/urandom >"d/data/env/big-$i"; done
for i in $(seq 1 600); do echo "$i" >"d/data/env/small/$i"; done
cd d
sm_start -- sleep 1000
req POST /config -d "$(config d/)"
expect_status 200
req POST /checkpoint -d '{"id": "at-exit"}'
expect_status 200
sm_stop
((SM_EXIT == 0)) || fail "d exited $SM_EXIT"
[[ -e $store/d/checkpoints/at-exit/manifest.json ]] || fail "shut-down did not wait for the upload"
# The lease was freed (lease.json rewritten) only after the manifest: the next owner finds it.
python3 - "$store/d" <<'EOF' || fail "the lease was freed before the upload ended"
import os, sys
manifest = os.stat(sys.argv[1] + "/checkpoints/at-exit/manifest.json").st_mtime_ns
lease = os.stat(sys.argv[1] + "/lease.json").st_mtime_ns
sys.exit(0 if lease >= manifest else 1)
EOF
for i in $(seq 1 24); do
  cmp "data/env/big-$i" "$(object_of "$store/d/checkpoints/at-exit" "mount/big-$i")" || fail "big-$i in the store"
done
log "ok"
