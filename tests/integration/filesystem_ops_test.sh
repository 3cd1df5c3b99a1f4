#!/usr/bin/env bash
# The filesystem component's less common operations as a user meets them, on the file:// store:
#   - cp within the mount is a metadata-only copy (copy_file_range): no new block in the store;
#     os.copy_file_range between offsets of two files;
#   - SEEK_DATA / SEEK_HOLE on a sparse file, with the semantics ext4 has beside it;
#   - fallocate: allocate, punch a hole, zero a range; an unsupported mode fails cleanly;
#   - a file unlinked while open lives until its last close, and its space comes back then;
#   - hard links across directories; a sparse file over several chunks; a file over two chunks;
#     copy_file_range, a punched hole and a zeroed range across the chunk boundary;
#   - many small pieces of one chunk are compacted into few records;
#   - GET / components.filesystem, df against the configured capacity, GET /metrics, GET /events;
#   - COMMAND (and a declared component) that lives on the mount, or runs inside it, across a
#     restart and a shut-down;
#   - the database component beside the filesystem through a checkpoint and a restore.
source "$(dirname "$0")/harness.sh"

[[ -e /dev/fuse ]] || { log "no /dev/fuse here: skipped"; exit 77; }
command -v sqlite3 >/dev/null || fail "sqlite3 is needed (tools/install-deps --test installs it)"
DEADLINE=60
mnt=$TEST_DIR/mnt
objects=$TEST_DIR/objects
meta_db=$TEST_DIR/data/filesystem/meta.sqlite

config() {  # [STACKS JSON] [EXTRA TOP-LEVEL JSON]
  printf '{"storage": {"bucket": "env-bucket", "endpoint": "file://%s", "env_dir": "%s"},
    "filesystem": {"capacity": "10GiB"}, "stacks": %s%s}\n' \
    "$objects" "$mnt" "${1:-[\"filesystem\"]}" "${2:-}"
}
mounted() { grep -q " $mnt fuse.juicefs " /proc/self/mounts; }
fs_json() {  # PY_EXPR over components.filesystem as f
  req GET /
  python3 -c 'import json,sys; f=json.load(open(sys.argv[1]))["components"]["filesystem"]; sys.exit(0 if eval(sys.argv[2]) else 1)' \
    "$BODY_FILE" "$1"
}
fs_value() {  # KEY: components.filesystem[KEY]
  req GET /
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["components"]["filesystem"][sys.argv[2]])' "$BODY_FILE" "$1"
}
fs_running() { fs_json 'f["state"] == "running"'; }
staging_empty() { fs_json 'f["staging"]["blocks"] == 0 and f["uploads_in_flight"] == 0'; }
block_objects() { find "$objects/env-bucket/fs/blocks" -type f 2>/dev/null | wc -l; }
drop_cached_pages() {  # the kernel's pages of these files go, so that reads reach us
  python3 - "$@" <<'PY'
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}

sm_start
curl -sN --max-time 600 "$SM_URL/events" >"$TEST_DIR/events.txt" &
STARTED_PIDS+=("$!")
wait_until "the event stream to open" grep -q 'state-manager events' "$TEST_DIR/events.txt"
req POST /config -d "$(config)"
expect_status 200
mounted || fail "not mounted when POST /config answered"

# --- 1. copy_file_range: a copy within the mount shares the blocks -------------------------------
# (cp of coreutils 9 tries FICLONE, which FUSE refuses, then copy_file_range.)
head -c 20000000 /dev/urandom >"$TEST_DIR/big"
cp "$TEST_DIR/big" "$mnt/big"
wait_until "the 20 MB file's blocks in the store" staging_empty
before=$(block_objects)
((before >= 5)) || fail "a 20 MB file made only $before block objects under $objects/env-bucket/fs/blocks"
cp "$mnt/big" "$mnt/big-copy"
wait_until "staging to empty after the copy" staging_empty
after=$(block_objects)
((after == before)) || fail "cp within the mount made $((after - before)) new block objects (not a metadata-only copy)"
drop_cached_pages "$mnt/big-copy" "$mnt/big"
cmp "$TEST_DIR/big" "$mnt/big-copy" || fail "the copy does not read back the same"
cmp "$TEST_DIR/big" "$mnt/big" || fail "the original changed after the copy"
# Offsets into the middle of another file; the source and the target keep the rest.
head -c 3000000 /dev/urandom >"$TEST_DIR/dst"
cp "$TEST_DIR/dst" "$mnt/dst"
python3 - "$mnt/big" "$mnt/dst" "$TEST_DIR/big" "$TEST_DIR/dst" <<'PY' || fail "os.copy_file_range with offsets"
import os, sys
src, dst, local_src, local_dst = sys.argv[1:]
fi, fo = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDWR)
want, done = 1500000, 0
while done < want:   # a short copy is allowed: go on from where it stopped
    n = os.copy_file_range(fi, fo, want - done, 5000001 + done, 777777 + done)
    assert n > 0, n
    done += n
os.close(fi); os.close(fo)
model = bytearray(open(local_dst, "rb").read())
model[777777:777777 + want] = open(local_src, "rb").read()[5000001:5000001 + want]
assert open(dst, "rb").read() == bytes(model), "the target differs from the model"
# Past the source's end: the copy stops there (a short count), the target grows to fit.
fi, fo = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDWR)
n = os.copy_file_range(fi, fo, 1 << 20, 20000000 - 1000, 3000000)
assert n == 1000, n
assert os.copy_file_range(fi, fo, 100, 20000000 + 5, 0) == 0
os.close(fi); os.close(fo)
model[3000000:3001000] = open(local_src, "rb").read()[-1000:]
assert os.stat(dst).st_size == 3001000, os.stat(dst).st_size
assert open(dst, "rb").read() == bytes(model), "the tail copy differs"
PY
# A copy of what a writer has not flushed yet (still in its buffers) copies that data.
python3 - "$mnt/unflushed" "$mnt/unflushed-copy" <<'PY' || fail "copy_file_range of unflushed writes"
import os, sys
data = os.urandom(3 << 20)
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, data)
fo = os.open(sys.argv[2], os.O_CREAT | os.O_RDWR, 0o644)
assert os.copy_file_range(fd, fo, len(data), 0, 0) == len(data)
os.close(fo)
os.close(fd)
assert open(sys.argv[2], "rb").read() == data
PY
rm "$mnt/big-copy" "$mnt/dst" "$mnt/unflushed" "$mnt/unflushed-copy"

# --- 2. SEEK_DATA / SEEK_HOLE on a sparse file, beside the same on the local disk -----------------
# The local disk is held to the same answers where it is a file system that tracks holes.
local_fs=$(df --output=fstype "$TEST_DIR" | tail -n1)
python3 - "$mnt/sparse" "$TEST_DIR/sparse" "$local_fs" <<'PY' || fail "SEEK_DATA / SEEK_HOLE"
import errno, os, sys
M = 10 << 20
def make(path):
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    os.pwrite(fd, b"a" * 4096, 0)
    os.pwrite(fd, b"b" * 4096, M)
    os.fsync(fd)
    return fd
def seek(fd, off, whence):
    try:
        return os.lseek(fd, off, whence)
    except OSError as e:
        return errno.errorcode[e.errno]
ours, local = make(sys.argv[1]), make(sys.argv[2])
size = M + 4096
assert os.fstat(ours).st_size == size
D, H = os.SEEK_DATA, os.SEEK_HOLE
compared = [(ours, "mount")]
if sys.argv[3] in ("ext4", "xfs", "btrfs", "tmpfs"):
    compared.append((local, "local disk"))
for fd, where in compared:
    got = {
        "data@0": seek(fd, 0, D), "hole@0": seek(fd, 0, H),
        "data@8192": seek(fd, 8192, D), "hole@8192": seek(fd, 8192, H),
        "data@M+100": seek(fd, M + 100, D), "hole@M+100": seek(fd, M + 100, H),
        "data@end": seek(fd, size, D), "hole@end": seek(fd, size, H),
        "data@end+5": seek(fd, size + 5, D),
    }
    assert got["data@0"] == 0, (where, got)
    assert isinstance(got["hole@0"], int) and 4096 <= got["hole@0"] <= M, (where, got)
    assert isinstance(got["data@8192"], int) and 8192 <= got["data@8192"] <= M, (where, got)
    assert got["hole@8192"] == 8192, (where, got)   # inside the hole already
    assert got["data@M+100"] == M + 100, (where, got)
    assert got["hole@M+100"] == size, (where, got)  # the end of the file is a hole
    assert got["data@end"] == "ENXIO" and got["hole@end"] == "ENXIO", (where, got)
    assert got["data@end+5"] == "ENXIO", (where, got)
# Where the mount's answer is finer than ext4's block granularity, it is exactly the data's end.
assert seek(ours, 0, H) == 4096 and seek(ours, 8192, D) == M, "the mount's answers are not exact"
# A hole written over becomes data.
os.pwrite(ours, b"c", 6 << 20)
assert seek(ours, 4096, D) == 6 << 20, seek(ours, 4096, D)
os.close(ours); os.close(local)
PY
cmp -n 4096 "$mnt/sparse" <(head -c 4096 /dev/zero | tr '\0' a) || fail "the sparse file's head"
rm "$mnt/sparse"

# --- 3. fallocate ------------------------------------------------------------------------------
fallocate -l 10M "$mnt/f" || fail "fallocate -l 10M"
[[ $(stat -c %s "$mnt/f") == 10485760 ]] || fail "fallocate -l 10M made size $(stat -c %s "$mnt/f")"
cmp "$mnt/f" <(head -c 10485760 /dev/zero) || fail "an allocated file does not read zeros"
printf hello >"$mnt/kept"
fallocate -n -l 1M "$mnt/kept" || fail "fallocate -n (keep size)"
[[ $(stat -c %s "$mnt/kept") == 5 && $(cat "$mnt/kept") == hello ]] || fail "fallocate -n changed the file"
head -c 65536 /dev/urandom >"$TEST_DIR/f2"
cp "$TEST_DIR/f2" "$mnt/f2"
fallocate -p -o 4096 -l 8192 "$mnt/f2" || fail "fallocate -p (punch hole)"
python3 - "$mnt/f2" "$TEST_DIR/f2" <<'PY' || fail "the punched file"
import sys
got, want = open(sys.argv[1], "rb").read(), bytearray(open(sys.argv[2], "rb").read())
want[4096:12288] = bytes(8192)
assert len(got) == 65536 and got == bytes(want)
PY
cp "$TEST_DIR/f2" "$mnt/f3"
fallocate -z -o 1000 -l 5000 "$mnt/f3" || fail "fallocate -z (zero range)"
fallocate -z -o 60000 -l 10000 "$mnt/f3" || fail "fallocate -z past the end"
python3 - "$mnt/f3" "$TEST_DIR/f2" <<'PY' || fail "the zeroed file"
import sys
got, want = open(sys.argv[1], "rb").read(), bytearray(open(sys.argv[2], "rb").read())
want[1000:6000] = bytes(5000)
want[60000:] = bytes(70000 - 60000)   # zero range without KEEP_SIZE grows the file
assert len(got) == 70000, len(got)
assert got == bytes(want)
PY
if out=$(fallocate -c -o 0 -l 65536 "$mnt/f2" 2>&1); then
  fail "fallocate -c (collapse range) succeeded"
fi
[[ $out == *"Operation not supported"* ]] || fail "fallocate -c: $out"
if out=$(fallocate -i -o 0 -l 65536 "$mnt/f2" 2>&1); then
  fail "fallocate -i (insert range) succeeded"
fi
[[ $out == *"Operation not supported"* ]] || fail "fallocate -i: $out"
[[ $(stat -c %s "$mnt/f2") == 65536 ]] || fail "a refused fallocate changed the size"
rm "$mnt/f" "$mnt/f2" "$mnt/f3" "$mnt/kept"

# --- 4. A file unlinked while open lives until its last close ----------------------------------
wait_until "staging to empty" staging_empty
used_before=$(fs_value used_bytes)
inodes_before=$(fs_value inodes)
python3 - "$mnt/doomed" "$SM_URL" "$used_before" "$inodes_before" <<'PY' || fail "unlinked while open"
import json, os, sys, urllib.request
path, url, used_before, inodes_before = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
data = os.urandom(1 << 20)
fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, data)
os.unlink(path)
assert not os.path.exists(path)
assert os.fstat(fd).st_nlink == 0
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
assert os.pread(fd, len(data) + 10, 0) == data, "unlinked file reads back wrong"
os.pwrite(fd, b"more" * 1000, len(data))
os.fsync(fd)
assert os.pread(fd, 4000, len(data)) == b"more" * 1000
assert os.fstat(fd).st_size == len(data) + 4000
status = json.load(urllib.request.urlopen(url + "/"))["components"]["filesystem"]
# Still open: its bytes and its inode are still there.
assert status["used_bytes"] >= used_before + len(data), status
assert status["inodes"] == inodes_before + 1, status
os.close(fd)
PY
[[ ! -e $mnt/doomed ]] || fail "the unlinked name is back"
wait_until "used_bytes and inodes back down after the last close" \
  fs_json "f['used_bytes'] <= $used_before and f['inodes'] == $inodes_before"

# --- 5. Hard links across directories; sparse and multi-chunk files ------------------------------
mkdir -p "$mnt/d1" "$mnt/d2/sub"
echo "linked content" >"$mnt/d1/orig"
ln "$mnt/d1/orig" "$mnt/d2/sub/link"
[[ $(stat -c %h "$mnt/d1/orig") == 2 && $(stat -c %h "$mnt/d2/sub/link") == 2 ]] || fail "link count"
[[ $(stat -c %i "$mnt/d1/orig") == $(stat -c %i "$mnt/d2/sub/link") ]] || fail "two inodes for one file"
echo "appended" >>"$mnt/d2/sub/link"
[[ $(cat "$mnt/d1/orig") == $'linked content\nappended' ]] || fail "a write through one name is not seen through the other"
rm "$mnt/d1/orig"
[[ $(stat -c %h "$mnt/d2/sub/link") == 1 ]] || fail "link count after unlinking one name"
[[ $(cat "$mnt/d2/sub/link") == $'linked content\nappended' ]] || fail "the other name after an unlink"
rm -r "$mnt/d1" "$mnt/d2"

python3 - "$mnt/sparse130" <<'PY' || fail "a sparse file over three chunks"
import os, sys
at = 130 << 20
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)
os.pwrite(fd, b"tail", at)
os.close(fd)
assert os.stat(sys.argv[1]).st_size == at + 4
with open(sys.argv[1], "rb") as f:
    assert f.read(1 << 20) == bytes(1 << 20)
    f.seek((64 << 20) - 10)              # across the first chunk boundary
    assert f.read(20) == bytes(20)
    f.seek(at - 4)
    assert f.read() == bytes(4) + b"tail"
fd = os.open(sys.argv[1], os.O_RDONLY)
assert os.lseek(fd, 0, os.SEEK_DATA) == at and os.lseek(fd, 0, os.SEEK_HOLE) == 0
os.close(fd)
PY
rm "$mnt/sparse130"
# copy_file_range, a punched hole and a zeroed range across the 64 MiB chunk boundary, each
# compared with a model.
python3 - "$mnt/across" "$mnt/across-copy" <<'PY' || fail "operations across the chunk boundary"
import ctypes, os, sys
M = 1 << 20
libc = ctypes.CDLL(None, use_errno=True)
def fallocate(fd, mode, off, n):
    assert libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(n)) == 0, ctypes.get_errno()
def reread(path, model):
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    got = open(path, "rb").read()
    assert len(got) == len(model), (path, len(got), len(model))
    if got != bytes(model):
        raise AssertionError(f"{path} differs from byte {next(i for i, (a, b) in enumerate(zip(got, model)) if a != b)}")
src = bytearray(70 * M)
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)
data = os.urandom(4 * M)
os.pwrite(fd, data, 62 * M)
src[62 * M:66 * M] = data
os.ftruncate(fd, 70 * M)
os.fsync(fd)
dst = bytearray(os.urandom(3 * M)) + bytearray(67 * M)
fo = os.open(sys.argv[2], os.O_CREAT | os.O_RDWR, 0o644)
os.pwrite(fo, bytes(dst[:3 * M]), 0)
os.ftruncate(fo, 70 * M)
for so, do, n in ((63 * M, M + 7, 2 * M + 13), (M // 2, 63 * M + 12345, 2 * M), (62 * M - 100, 64 * M - 50, 3 * M)):
    done = 0
    while done < n:
        r = os.copy_file_range(fd, fo, n - done, so + done, do + done)
        assert r > 0
        done += r
    dst[do:do + n] = src[so:so + n]
os.close(fo)
reread(sys.argv[2], dst)
fallocate(fd, 3, 63 * M + 5, 2 * M)            # PUNCH_HOLE | KEEP_SIZE
src[63 * M + 5:65 * M + 5] = bytes(2 * M)
fallocate(fd, 0x10, 65 * M + 100, 7 * M)       # ZERO_RANGE, past the end: the file grows
src[65 * M + 100:] = bytes(len(src) - 65 * M - 100)
src.extend(bytes(72 * M + 100 - len(src)))
assert os.lseek(fd, 62 * M, os.SEEK_HOLE) == 63 * M + 5
assert os.lseek(fd, 63 * M + 5, os.SEEK_DATA) == 65 * M + 5
assert os.lseek(fd, 65 * M + 5, os.SEEK_HOLE) == 65 * M + 100
os.close(fd)
reread(sys.argv[1], src)
PY
rm "$mnt/across" "$mnt/across-copy"
dd if=/dev/urandom of="$TEST_DIR/two-chunks" bs=1M count=140 status=none
dd if="$TEST_DIR/two-chunks" of="$mnt/two-chunks" bs=1M status=none || fail "dd of 140 MB into the mount"
[[ $(stat -c %s "$mnt/two-chunks") == 146800640 ]] || fail "140 MB file size $(stat -c %s "$mnt/two-chunks")"
wait_until "the 140 MB file in the store" staging_empty
drop_cached_pages "$mnt/two-chunks"
cmp "$TEST_DIR/two-chunks" "$mnt/two-chunks" || fail "a file over two chunks does not read back"
rm "$mnt/two-chunks" "$TEST_DIR/two-chunks"

# --- 6. Many small pieces of one chunk are compacted --------------------------------------------
python3 - "$mnt/pieces" "$TEST_DIR/pieces" <<'PY' || fail "writing 400 pieces"
import os, sys
data = os.urandom(400 * 4096)
open(sys.argv[2], "wb").write(data)
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)
for i in reversed(range(400)):   # backwards: no piece extends the one before
    os.pwrite(fd, data[i * 4096:(i + 1) * 4096], i * 4096)
os.fsync(fd)
os.close(fd)
PY
ino=$(stat -c %i "$mnt/pieces")
records() { sqlite3 -cmd ".timeout 10000" "$meta_db" "SELECT length(slices) / 24 FROM chunks WHERE ino = $ino AND idx = 0"; }
# A chunk is compacted each time it reaches 100 records: what is left is fewer than that.
compacted() { local n; n=$(records); [[ -n $n ]] && ((n < 100)); }
wait_until "chunk 0 of a file of 400 pieces to be compacted (records at first: $(records))" compacted
log "chunk 0 of 400 pieces: $(records) records"
drop_cached_pages "$mnt/pieces"
cmp "$TEST_DIR/pieces" "$mnt/pieces" || fail "the compacted file does not read back"
rm "$mnt/pieces"

# --- 7. Status, df, metrics, events ------------------------------------------------------------
fs_json '(f["state"] == "running" and f["mountpoint"] == "'"$mnt"'" and f["last_error"] is None
  and all(isinstance(f[k], int) for k in ("used_bytes", "inodes", "uploads_in_flight"))
  and set(f["cache"]) >= {"bytes", "limit", "hits", "misses"}
  and set(f["staging"]) >= {"bytes", "blocks"} and isinstance(f["metadata"], dict)
  and f["capacity"] == 10 * 2**30)' || fail "components.filesystem: $BODY"
df_field() { df -B1 --output="$1" "$mnt" | tail -n1 | tr -d ' '; }
[[ $(df_field size) == $((10 * 1024 * 1024 * 1024)) ]] || fail "df size $(df_field size), not the configured 10GiB"
df_used_before=$(df_field used)
head -c 10000000 /dev/urandom >"$mnt/ten"
sync "$mnt/ten"
df_grew() { (($(df_field used) >= df_used_before + 9000000)); }
wait_until "df's used to grow by 10 MB (was $df_used_before, now $(df_field used))" df_grew
req GET /metrics
expect_status 200
grep -q '^state_manager_filesystem_up 1$' "$BODY_FILE" || fail "metrics: no state_manager_filesystem_up 1"
for series in used_bytes inodes capacity_bytes cache_bytes cache_limit_bytes cache_hits_total \
  cache_misses_total staging_bytes staging_blocks uploads_in_flight uploaded_bytes_total \
  downloaded_bytes_total requests_total errors_total commits_total; do
  grep -q "^state_manager_filesystem_$series [0-9]*$" "$BODY_FILE" || fail "metrics: no state_manager_filesystem_$series"
done
grep -q "^state_manager_filesystem_capacity_bytes $((10 * 1024 * 1024 * 1024))$" "$BODY_FILE" ||
  fail "metrics: capacity"
rm "$mnt/ten"

# The mount's scripts for section 8, written while it is up.
printf '#!/bin/sh\necho started >"%s/cmd.out"\nexec sleep 1000\n' "$TEST_DIR" >"$mnt/run.sh"
printf '#!/bin/sh\necho web started >"%s/web.out"\nexec sleep 1000\n' "$TEST_DIR" >"$mnt/run2.sh"
chmod +x "$mnt/run.sh" "$mnt/run2.sh"
sm_stop
((SM_EXIT == 0)) || fail "shut-down exited $SM_EXIT"
mounted && fail "still mounted after shut-down"
python3 - "$TEST_DIR/events.txt" <<'PY' || fail "the filesystem's events: $(cat "$TEST_DIR/events.txt")"
import json, sys
events, current = [], {}
for line in open(sys.argv[1]).read().split("\n"):
    if not line:
        if current:
            events.append(current)
        current = {}
    elif not line.startswith(":"):
        key, _, value = line.partition(": ")
        current[key] = value
seen = [(json.loads(e["data"])["old"], json.loads(e["data"])["new"]) for e in events
        if e["event"] == "component" and json.loads(e["data"])["name"] == "filesystem"]
assert seen[-3:] == [("starting", "running"), ("running", "stopping"), ("stopping", "stopped")], seen
assert ("starting", "running") in seen and seen.index(("starting", "running")) < len(seen) - 2, seen
fs = [json.loads(e["data"]) for e in events if e["event"] == "component"]
assert all(d.get("mountpoint") for d in fs), fs
PY

# --- 4 (continued). A file unlinked while open when state-manager is killed ---------------------
# Its inode is an orphan in the metadata: the next start removes it, and its space comes back.
sm_start
wait_until "the filesystem running" fs_running
used_before=$(fs_value used_bytes)
inodes_before=$(fs_value inodes)
python3 - "$mnt/orphan" "$TEST_DIR/orphan-ready" <<'PY' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, os.urandom(5 << 20))
os.fsync(fd)
os.unlink(sys.argv[1])
open(sys.argv[2], "w").close()
time.sleep(600)
PY
holder=$!
STARTED_PIDS+=("$holder")
wait_until "the unlinked file held open" test -e "$TEST_DIR/orphan-ready"
fs_json "f['inodes'] == $inodes_before + 1" || fail "the open unlinked file has no inode: $BODY"
kill -KILL "$SM_PID"
wait "$SM_PID" 2>/dev/null || true
kill "$holder"
wait "$holder" 2>/dev/null || true
sm_start
wait_until "the filesystem running after kill -9" fs_running
fs_json "f['used_bytes'] <= $used_before and f['inodes'] == $inodes_before" ||
  fail "the orphan of a kill -9 was not removed at the next start: $BODY"
sm_stop
((SM_EXIT == 0)) || fail "shut-down exited $SM_EXIT"

# --- 8. COMMAND on the mount -----------------------------------------------------------------
process_json() {  # PY_EXPR over GET / as j
  req GET /
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$BODY_FILE" "$1"
}
# tmp/config.json is loaded at start: the mount comes up first, then COMMAND runs from it.
sm_start -- "$mnt/run.sh"
wait_until "COMMAND from the mount running" process_json 'j["process"]["state"] == "running"'
wait_until "COMMAND's output" test -s "$TEST_DIR/cmd.out"
[[ $(cat "$TEST_DIR/cmd.out") == started ]] || fail "cmd.out: $(cat "$TEST_DIR/cmd.out")"
process_json 'j["components"]["filesystem"]["state"] == "running"' || fail "filesystem: $BODY"
sm_stop
((SM_EXIT == 0)) || fail "shut-down with COMMAND on the mount exited $SM_EXIT"
mounted && fail "still mounted after shut-down with COMMAND on the mount"

# A declared component whose command is on the mount, across a restart (a configuration is
# changed by removing the saved one).
rm tmp/config.json
sm_start
req POST /config -d "$(config '["filesystem", "web"]' ', "components": {"web": {"command": ["'"$mnt"'/run2.sh"]}}')"
expect_status 200
wait_until "the web component's output" test -s "$TEST_DIR/web.out"
wait_until "web running" process_json 'j["components"]["web"]["state"] == "running"'
sm_stop
((SM_EXIT == 0)) || fail "shut-down with web on the mount exited $SM_EXIT"
mounted && fail "still mounted after shut-down with web on the mount"
rm "$TEST_DIR/web.out"
sm_start
wait_until "web running again after a restart" process_json 'j["components"]["web"]["state"] == "running"'
wait_until "the web component's output after a restart" test -s "$TEST_DIR/web.out"
process_json 'j["components"]["web"]["restarts"] == 0' || fail "web restarted (started before the mount?): $BODY"
sm_stop
((SM_EXIT == 0)) || fail "shut-down exited $SM_EXIT"
mounted && fail "still mounted"

# COMMAND working inside the mount (its cwd there, writing files by relative names): shut-down
# stops it first, and then unmounts cleanly.
sm_start -- sh -c "cd '$mnt' && echo here >cwd.txt && exec sleep 1000"
wait_until "COMMAND running in the mount" process_json 'j["process"]["state"] == "running"'
wait_until "COMMAND's file in the mount" test -s "$mnt/cwd.txt"
pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["pid"])' "$BODY_FILE")
[[ $(readlink "/proc/$pid/cwd") == "$mnt" ]] || fail "COMMAND's cwd is $(readlink "/proc/$pid/cwd")"
curl -sN --max-time 600 "$SM_URL/events" >"$TEST_DIR/events-cwd.txt" &
STARTED_PIDS+=("$!")
wait_until "the event stream to open" grep -q 'state-manager events' "$TEST_DIR/events-cwd.txt"
sm_stop
((SM_EXIT == 0)) || fail "shut-down with COMMAND's cwd in the mount exited $SM_EXIT"
mounted && fail "still mounted after shut-down with COMMAND's cwd in the mount"
pid_running "$pid" && fail "COMMAND outlived shut-down"
# The order: COMMAND and web stopped before the filesystem starts to stop (its unmount then
# finds nobody inside, and does not have to detach a busy mount).
python3 - "$TEST_DIR/events-cwd.txt" <<'PY' || fail "shut-down order: $(cat "$TEST_DIR/events-cwd.txt")"
import json, sys
seen = []
for block in open(sys.argv[1]).read().split("\n\n"):
    fields = dict(l.split(": ", 1) for l in block.split("\n") if l and not l.startswith(":"))
    if "data" in fields:
        d = json.loads(fields["data"])
        seen.append((fields["event"], d.get("name", ""), d["new"]))
i = seen.index
assert i(("process", "", "stopped")) < i(("component", "filesystem", "stopping")), seen
assert i(("component", "web", "stopped")) < i(("component", "filesystem", "stopping")), seen
assert seen[-2:] == [("component", "filesystem", "stopped"), ("system", "", "stopped")], seen
PY
grep -q 'failed to unmount' "$SM_LOG" && fail "the unmount met a busy mount: $(grep 'failed to unmount' "$SM_LOG")"

# --- 9. The database component beside the filesystem ------------------------------------------
sql() { sqlite3 -cmd ".timeout 10000" "$TEST_DIR/data/database.sqlite" "$1"; }
rm tmp/config.json
sm_start
req POST /config -d "$(config '["database", "filesystem"]')"
expect_status 200
wait_until "both components running" \
  process_json 'j["components"]["database"]["state"] == "running" and j["components"]["filesystem"]["state"] == "running"'
sql "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);"
echo "version one" >"$mnt/doc.txt"
head -c 5000000 /dev/urandom >"$TEST_DIR/blob"
cp "$TEST_DIR/blob" "$mnt/blob"
req POST /checkpoint -d '{"id":"both"}'
expect_status 200
sql "INSERT INTO t VALUES (4); DELETE FROM t WHERE x = 1;"
echo "version two" >"$mnt/doc.txt"
rm "$mnt/blob"
echo new >"$mnt/new.txt"
req POST /restore -d '{"id":"both"}'
expect_status 200
mounted || fail "the restore left the mount"
[[ $(sql "SELECT group_concat(x) FROM (SELECT x FROM t ORDER BY x)") == 1,2,3 ]] ||
  fail "the database after the restore: $(sql "SELECT group_concat(x) FROM t")"
[[ $(cat "$mnt/doc.txt") == "version one" ]] || fail "doc.txt after the restore: $(cat "$mnt/doc.txt")"
cmp "$TEST_DIR/blob" "$mnt/blob" || fail "blob after the restore"
[[ ! -e $mnt/new.txt ]] || fail "new.txt survived the restore"
wait_until "both components running after the restore" \
  process_json 'j["components"]["database"]["state"] == "running" and j["components"]["filesystem"]["state"] == "running"'
sm_stop
((SM_EXIT == 0)) || fail "shut-down exited $SM_EXIT"
mounted && fail "still mounted after the last shut-down"
exit 0
