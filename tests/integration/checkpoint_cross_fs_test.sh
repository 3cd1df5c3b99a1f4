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

# A restore that runs out of space half-way: 507, the state before it is put back as it was, and
# COMMAND runs again.
echo "before the failed restore" >data/env/sub/small.txt
head -c 57M /dev/zero >data/env/filler 2>/dev/null || true  # the 64 MiB tmpfs, nearly full
sha_before=$(cd data/env && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)
req POST /restore -d '{"id": "x1"}'
expect_status 507
expect_json '"No space left" in j["error"]'
sha_after=$(cd data/env && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)
[[ $sha_before == "$sha_after" ]] || fail "a failed restore changed the environment directory: $(ls -la data/env)"
[[ -z $(ls -A data/env | grep state-manager-restore) ]] || fail "the failed restore left its reserved directories: $(ls -A data/env)"
wait_until "COMMAND running after the failed restore" sh -c "curl -s '$SM_URL/' | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)[\"process\"][\"state\"] == \"running\" else 1)'"
rm data/env/filler
req POST /restore -d '{"id": "x1"}'
expect_status 200
cmp data/env/blob tmp/checkpoints/x1/mount/blob || fail "the restore after freeing space"
