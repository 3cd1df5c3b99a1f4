#!/usr/bin/env bash
# The fast path on a reflink file system (XFS, on a loop device the test makes and unmounts):
# a checkpoint and a restore share the files' extents instead of copying their data. The
# manifest says every file was reflinked, the database too, filefrag sees the extents shared,
# and the space used hardly grows; the copies are exact, and so is what a restore brings back.
source "$(dirname "$0")/harness.sh"

if ((EUID != 0)) || ! command -v mkfs.xfs >/dev/null; then
  log "skipped: needs root and mkfs.xfs (xfsprogs)"
  exit 77
fi
truncate -s 600M xfs.img
mkfs.xfs -q -m reflink=1 xfs.img || fail "mkfs.xfs failed"
mkdir xfs
if ! mount -o loop xfs.img xfs 2>"$LOG_DIR/mount.err"; then
  log "skipped: cannot loop-mount here: $(cat "$LOG_DIR/mount.err")"
  exit 77
fi
MOUNTED+=("$TEST_DIR/xfs")
cd xfs

# 64 MiB of data in 40 files, and a database of a few MiB.
mkdir -p data/env/a/b
for i in $(seq 1 40); do head -c 1677722 /dev/urandom >"data/env/a/b/f$i"; done
echo "small" >data/env/small.txt
sqlite3 data/database.sqlite "PRAGMA journal_mode=WAL; CREATE TABLE t(v);
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
  INSERT INTO t SELECT randomblob(200) FROM n;" >/dev/null
# Space used on the file system, less the replication shadow's (a new generation after a
# restore writes its own snapshot there, which is replication's cost, not the copy's).
used_kib() {
  sync -f .
  echo $(($(df --output=used -k . | tail -1) - $(du -sk data/database.sqlite-litestream 2>/dev/null | cut -f1 || echo 0)))
}

sm_start -- sleep 1000
req POST /config -d "{\"storage\": {\"bucket\": \"env-bucket\", \"endpoint\": \"file://$TEST_DIR/objects\"},
  \"stacks\": [\"database\"]}"
expect_status 200
before=$(used_kib)
req POST /checkpoint -d '{"id": "r1"}'
expect_status 200
expect_json 'j["manifest"]["mount"]["files"] == 41'
expect_json 'j["manifest"]["mount"]["copied_by"]["reflink"] == 41'
expect_json 'j["manifest"]["database"]["method"] == "reflink"'
after=$(used_kib)
# 68 MiB copied would add 70,000 KiB; shared extents add only metadata (and whatever xfs
# preallocates for the files being written meanwhile: a few MiB at most).
((after - before < 8192)) || fail "the checkpoint took $((after - before)) KiB: not reflinked"
shared=$(filefrag -v tmp/checkpoints/r1/mount/a/b/f7 | grep -c shared || true)
((shared > 0)) || fail "filefrag sees no shared extent: $(filefrag -v tmp/checkpoints/r1/mount/a/b/f7)"
for i in 1 20 40; do
  cmp "data/env/a/b/f$i" "tmp/checkpoints/r1/mount/a/b/f$i" || fail "f$i differs in the checkpoint"
done
[[ $(sqlite3 tmp/checkpoints/r1/database.sqlite "PRAGMA integrity_check") == ok ]] ||
  fail "the reflinked database copy is not sound"
[[ $(sqlite3 tmp/checkpoints/r1/database.sqlite "SELECT count(*) FROM t") == 20000 ]] ||
  fail "the reflinked database copy lacks rows"

# Changed after the checkpoint, then restored: exact, and still sharing extents.
head -c 1000 /dev/urandom | dd of=data/env/a/b/f1 conv=notrunc status=none
rm data/env/a/b/f2
sqlite3 -cmd ".timeout 5000" data/database.sqlite "DELETE FROM t WHERE rowid <= 5000"
before=$(used_kib)
req POST /restore -d '{"id": "r1"}'
expect_status 200
for i in 1 2 40; do
  cmp "data/env/a/b/f$i" "tmp/checkpoints/r1/mount/a/b/f$i" || fail "f$i was not restored exactly"
done
[[ $(sqlite3 -cmd ".timeout 5000" data/database.sqlite "SELECT count(*) FROM t") == 20000 ]] ||
  fail "the rows were not restored"
wait_until "the replaced state removed" sh -c '! ls -A data | grep -q restore'
after=$(used_kib)
((after - before < 8192)) || fail "the restore took $((after - before)) KiB: not reflinked"
for f in data/env/a/b/f9 data/database.sqlite; do
  shared=$(filefrag -v "$f" | grep -c shared || true)
  ((shared > 0)) || fail "the restored $f shares no extent with the checkpoint"
done
sm_stop
((SM_EXIT == 0)) || fail "exit $SM_EXIT"
cd "$TEST_DIR"
log "ok"
