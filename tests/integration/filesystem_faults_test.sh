#!/usr/bin/env bash
# The filesystem component when things go wrong, and under load (Swift behind a relay, small
# blocks, a cache and a staging bound far smaller than the data):
#   - 64 readers and writers at once, every file right; a file larger than the cache reads back
#     whole while the cache stays within its bound;
#   - the store down: cached files still read, an uncached one fails with EIO within the read
#     bound, writes go on into staging until its bound and then fail with ENOSPC, each error is
#     logged; the store back: staging uploads by itself and every file reads back whole;
#   - the disk full (staging and cache on a small tmpfs): ENOSPC to the writer, nothing else
#     harmed, writing works again once space returns.
source "$(dirname "$0")/harness.sh"

[[ -e /dev/fuse ]] || { log "no /dev/fuse here: skipped"; exit 77; }
DEADLINE=60
mnt=$TEST_DIR/mnt

s3_server_start
s3_make_bucket env-bucket
fs_json() {  # PY_EXPR over components.filesystem as f
  req GET /
  python3 -c 'import json,sys; f=json.load(open(sys.argv[1]))["components"]["filesystem"]; sys.exit(0 if eval(sys.argv[2]) else 1)' \
    "$BODY_FILE" "$1"
}
drop_cached_pages() {  # the kernel's pages of these files go, so that reads reach us
  python3 - "$@" <<'PY'
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}

relay_start
# A lease that outlives the outage: this test is about the filesystem's faults (a lease that
# expires during an outage fences the writers: ownership_test covers that).
sm_start --lease-ttl 300s
req POST /config -d "$(cat <<JSON
{"storage": {"bucket": "env-bucket", "endpoint": "http://127.0.0.1:$relay_port",
             "access_key": "$S3_ACCESS_KEY", "secret_key": "$S3_SECRET_KEY", "env_dir": "$mnt"},
 "filesystem": {"block_size": "64KiB", "cache_size": "1MiB", "staging_size": "2MiB"},
 "stacks": ["filesystem"]}
JSON
)"
expect_status 200

# --- 64 at once: 32 writers of new files, 32 readers of files written before -----------------
mkdir "$TEST_DIR/src"
for i in $(seq 1 32); do head -c $((100000 + i * 977)) /dev/urandom >"$TEST_DIR/src/r$i"; done
for i in $(seq 1 32); do cp "$TEST_DIR/src/r$i" "$mnt/r$i"; done
for i in $(seq 1 32); do head -c $((50000 + i * 1231)) /dev/urandom >"$TEST_DIR/src/w$i"; done
pids=()
for i in $(seq 1 32); do
  cp "$TEST_DIR/src/w$i" "$mnt/w$i" & pids+=($!)
  cmp -s "$TEST_DIR/src/r$i" "$mnt/r$i" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a reader or writer of the 64 failed"; done
for i in $(seq 1 32); do
  cmp -s "$TEST_DIR/src/w$i" "$mnt/w$i" || fail "w$i differs after 64 concurrent readers and writers"
done

# --- A file larger than the cache ----------------------------------------------------------------
head -c 3000000 /dev/urandom >"$TEST_DIR/src/big"
cp "$TEST_DIR/src/big" "$mnt/big"
wait_until "every block in the store" fs_json 'f["staging"]["blocks"] == 0'
drop_cached_pages "$mnt/big"
cmp "$TEST_DIR/src/big" "$mnt/big" || fail "a file 3 times the cache does not read back whole"
fs_json 'f["cache"]["bytes"] <= f["cache"]["limit"] == 1048576' || fail "the cache outgrew its bound: $BODY"
fs_json 'f["cache"]["misses"] > 0' || fail "no block came from the store: $BODY"

# A small file read now, so that it is in the cache when the store goes.
head -c 20000 /dev/urandom >"$TEST_DIR/src/small"
cp "$TEST_DIR/src/small" "$mnt/small"
wait_until "the small file in the store" fs_json 'f["staging"]["blocks"] == 0'
drop_cached_pages "$mnt/small"
cmp "$TEST_DIR/src/small" "$mnt/small" || fail "small"

# --- The store down ----------------------------------------------------------------------------
kill -KILL "$RELAY_PID"
wait_exit "$RELAY_PID" || fail "the relay did not stop"
drop_cached_pages "$mnt/small" "$mnt/big"
cmp "$TEST_DIR/src/small" "$mnt/small" || fail "a cached file does not read while the store is down"
started=$SECONDS
if out=$(timeout 120 cat "$mnt/big" 2>&1 >/dev/null); then
  fail "a file not in the cache read while the store was down"
fi
[[ $out == *"Input/output error"* ]] || fail "reading an uncached file with the store down: $out"
((SECONDS - started <= 60)) || fail "EIO came after $((SECONDS - started)) s, more than the bound of about 40 s (60 with slack for a loaded machine)"
# Writes go into staging while it has room...
head -c 1000000 /dev/urandom >"$TEST_DIR/src/during"
cp "$TEST_DIR/src/during" "$mnt/during" || fail "a write within the staging bound failed with the store down"
fs_json 'f["staging"]["blocks"] > 0' || fail "nothing staged: $BODY"
# ...and then fail with ENOSPC, not hang.
if out=$(timeout 120 dd if=/dev/urandom of="$mnt/toomuch" bs=64k count=64 2>&1); then
  fail "4 MiB more than a 2 MiB staging bound went in with the store down"
fi
[[ $out == *"No space left on device"* ]] || fail "a write past the staging bound: $out"
grep -q 'filesystem error.*Input/output error' "$SM_LOG" || fail "the EIO was not logged"
grep -q 'filesystem error.*No space left on device' "$SM_LOG" || fail "the ENOSPC was not logged"
rm -f "$mnt/toomuch"

# --- The store back ------------------------------------------------------------------------------
relay_start
wait_until "staging to empty once the store is back" fs_json 'f["staging"]["blocks"] == 0'
drop_cached_pages "$mnt/big" "$mnt/during"
cmp "$TEST_DIR/src/big" "$mnt/big" || fail "big after the outage"
cmp "$TEST_DIR/src/during" "$mnt/during" || fail "a file written during the outage"
sm_stop
((SM_EXIT == 0)) || fail "shut-down exited $SM_EXIT"

# --- Uploads refused for good while staging is full: no byte is dropped ---------------------------
# (A plain file where the store's fs/ folder goes: every upload fails without a retry.) The
# writes fit the buffer; their staging fails once staging is full; fsync and close report it;
# once the store takes uploads again, a later fsync succeeds and every byte is there.
mkdir "$TEST_DIR/refusing"
cd "$TEST_DIR/refusing"
sm_start --lease-ttl 300s
req POST /config -d "$(cat <<JSON
{"storage": {"bucket": "env-bucket", "endpoint": "file://$TEST_DIR/refusing/objects", "env_dir": "$TEST_DIR/mnt3"},
 "filesystem": {"block_size": "64KiB", "staging_size": "128KiB"},
 "stacks": ["filesystem"]}
JSON
)"
expect_status 200
mkdir -p objects/env-bucket
rm -rf objects/env-bucket/fs
echo "not a folder" >objects/env-bucket/fs
python3 - "$TEST_DIR/mnt3/kept" "$TEST_DIR/refusing/objects/env-bucket/fs" <<'PY' || fail "bytes written while uploads failed"
import os, sys
path, blocker = sys.argv[1], sys.argv[2]
data = bytes(range(256)) * 768  # 3 blocks of 64 KiB
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
for i in range(3):
    assert os.pwrite(fd, data[i * 65536:(i + 1) * 65536], i * 65536) == 65536
try:
    os.fsync(fd)
    sys.exit("fsync succeeded although the third block could not be staged")
except OSError:
    pass
os.remove(blocker)  # the store takes uploads again: once a retry (at most 30 s apart) gets
import time         # through, staging has room, and the bytes kept since go there
deadline = time.monotonic() + 90
while True:
    try:
        os.fsync(fd)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
os.close(fd)
with open(path, "rb") as f:
    got = f.read()
assert got == data, "%d bytes read back, expected %d" % (len(got), len(data))
PY
sm_stop
cd "$TEST_DIR"

# --- The disk full: staging and cache on a 1 MiB tmpfs --------------------------------------------
if mount_tmpfs "$TEST_DIR/small-disk" 1m; then
  mkdir "$TEST_DIR/disk"
  cd "$TEST_DIR/disk"
  sm_start
  req POST /config -d "$(cat <<JSON
{"storage": {"bucket": "env-bucket", "endpoint": "file://$TEST_DIR/objects", "env_dir": "$TEST_DIR/mnt2"},
 "filesystem": {"block_size": "64KiB", "cache_size": "64MiB", "staging_size": "64MiB",
                "cache_dir": "$TEST_DIR/small-disk/cache", "staging_dir": "$TEST_DIR/small-disk/staging"},
 "stacks": ["filesystem"]}
JSON
)"
  expect_status 200
  echo kept >"$TEST_DIR/mnt2/kept"
  # The file store is on the big disk, so uploads free staging: a fill faster than they go
  # (one big write held open) is what meets the full disk.
  if out=$(timeout 120 python3 - "$TEST_DIR/mnt2/fill" <<'PY' 2>&1
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
block = os.urandom(1 << 20)
for _ in range(256):
    os.write(fd, block)
os.fsync(fd)
os.close(fd)
PY
  ); then
    log "the disk did not fill (uploads kept up): ENOSPC not exercised"
  else
    [[ $out == *"No space left on device"* || $out == *"Errno 28"* ]] || fail "a full disk: $out"
  fi
  rm -f "$TEST_DIR/mnt2/fill"
  [[ $(cat "$TEST_DIR/mnt2/kept") == kept ]] || fail "a full disk harmed another file"
  wait_until "staging to empty after the full disk" fs_json 'f["staging"]["blocks"] == 0'
  head -c 300000 /dev/urandom >"$TEST_DIR/src/after"
  cp "$TEST_DIR/src/after" "$TEST_DIR/mnt2/after" || fail "no write once space returned"
  cmp "$TEST_DIR/src/after" "$TEST_DIR/mnt2/after" || fail "after a full disk"
  sm_stop
  cd "$TEST_DIR"
else
  log "cannot mount a tmpfs here: the full-disk part is skipped"
fi
exit 0
