#!/usr/bin/env bash
# A checkpoint and a restore between two file systems that share no extents (the environment
# directory on a tmpfs, tmp/checkpoints on the test directory's): no reflink, no
# copy_file_range, so every file's data goes by io_uring reads and writes awaited on the
# executor. The copies are exact, holes stay holes, and the manifest says how they were made.
source "$(dirname "$0")/harness.sh"

if ! mount_tmpfs "$PWD/data/env" 64m; then
  log "skipped: mounting a tmpfs is not allowed here"
  exit 77
fi
[[ $(stat -f -c %T data/env) != $(stat -f -c %T tmp 2>/dev/null || (mkdir -p tmp && stat -f -c %T tmp)) ]] ||
  { log "skipped: the test directory is itself on a tmpfs"; exit 77; }

mkdir -p data/env/sub
head -c 3000000 /dev/urandom >data/env/blob
echo "small" >data/env/sub/small.txt
: >data/env/empty
# 40 MiB apparent, 1 MiB of data in the middle.
truncate -s 40M data/env/sparse
head -c 1048576 /dev/urandom | dd of=data/env/sparse bs=1M seek=20 conv=notrunc status=none
sm_start -- sleep 1000
req POST /config -d "{\"storage\": {\"bucket\": \"env-bucket\", \"endpoint\": \"file://$TEST_DIR/objects\"},
  \"stacks\": []}"
expect_status 200

req POST /checkpoint -d '{"id": "x1"}'
expect_status 200
expect_json 'j["manifest"]["mount"]["files"] == 4'
expect_json 'j["manifest"]["mount"]["copied_by"] == {"reflink": 0, "copy_file_range": 0, "read_write": 3}'
for f in blob sub/small.txt empty sparse; do
  cmp "data/env/$f" "tmp/checkpoints/x1/mount/$f" || fail "$f differs in the checkpoint"
done
(($(du -k tmp/checkpoints/x1/mount/sparse | cut -f1) < 4096)) ||
  fail "the sparse file's holes were filled: $(du -k tmp/checkpoints/x1/mount/sparse)"
# The reads and writes went through a ring of state-manager's own.
ls -l "/proc/$SM_PID/fd" | grep -q 'anon_inode:\[io_uring\]' ||
  fail "state-manager has no io_uring open after the copy"

# Back the other way, onto the tmpfs.
echo "changed" >data/env/sub/small.txt
rm data/env/blob
req POST /restore -d '{"id": "x1"}'
expect_status 200
for f in blob sub/small.txt empty sparse; do
  cmp "data/env/$f" "tmp/checkpoints/x1/mount/$f" || fail "$f was not restored exactly"
done
(($(du -k data/env/sparse | cut -f1) < 4096)) || fail "the restore filled the sparse file's holes"
[[ $(stat -f -c %T data/env) == tmpfs ]] || fail "the restore replaced the mount point instead of filling it"
