// The filesystem's metadata: one SQLite database (WAL) holding inodes, directory entries, chunks
// as slice lists, symlinks, xattrs and counters that never go back (DESIGN 4). Written only from
// the executor's thread, by short calls: each call here does a few indexed statements and returns.
//
// POSIX semantics live here (link counts, timestamps, set-group-id inheritance, rename's rules);
// permission checks do not: the mount uses `default_permissions`, so the kernel checks modes,
// owners, sticky directories and what chown/chmod/utimes may do before a request arrives.
//
// Errors: a call that fails for a reason POSIX names returns it as a positive errno value (0 on
// success) and changes nothing. A failure of SQLite itself (disk full, I/O error) throws
// std::system_error (ENOSPC for SQLITE_FULL, EIO otherwise) after undoing that call's changes.
//
// Group commit: mutating calls run inside one open write transaction (begun by the first of
// them); commit() ends it. The filesystem calls commit() once per turn of the executor for every
// operation of that turn, and replies to a mutating operation only after its commit. Each call is
// a savepoint inside the transaction, so one call's failure undoes only that call. Reads see the
// transaction's own uncommitted writes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/slices.hpp"

namespace sm::fs {

using inode_id = std::uint64_t;
inline constexpr inode_id root_inode = 1;
inline constexpr std::size_t max_name_length = 255;    // bytes; longer: ENAMETOOLONG
inline constexpr std::size_t max_symlink_length = 4095;  // bytes; longer: ENAMETOOLONG
inline constexpr std::size_t max_xattr_value = 65536;    // bytes; longer: E2BIG
inline constexpr std::uint64_t max_file_size = 1ull << 50;  // setattr/fallocate past it: EFBIG

struct time_value {
  std::int64_t sec = 0;
  std::uint32_t nsec = 0;
  friend bool operator==(const time_value&, const time_value&) = default;
};

struct attributes {
  inode_id ino = 0;
  std::uint32_t mode = 0;  // file type and permission bits, as st_mode
  std::uint32_t nlink = 0;
  std::uint32_t uid = 0, gid = 0;
  std::uint64_t rdev = 0;
  std::uint64_t size = 0;  // bytes; a symlink's target length; a directory's: 4096
  time_value atime, mtime, ctime;
};

// Who asks (fuse_req_ctx): owner of what is created. The kernel has applied the umask already.
struct caller {
  std::uint32_t uid = 0, gid = 0;
};

// setattr's request: only the fields set change. ctime becomes now whenever anything changes.
struct attribute_change {
  std::optional<std::uint32_t> mode;  // permission bits and set-id/sticky bits; the type stays
  std::optional<std::uint32_t> uid, gid;
  std::optional<std::uint64_t> size;  // truncate up (a hole) or down (chunks trimmed)
  std::optional<time_value> atime, mtime;
  bool atime_now = false, mtime_now = false;
};

struct dir_entry {
  std::string name;
  attributes attr;           // of the entry's inode (readdirplus)
  std::uint64_t next_offset; // pass as `offset` to continue after this entry
};

struct statistics {
  std::uint64_t used_bytes = 0;  // sum of regular files' sizes rounded up to 4 KiB
  std::uint64_t inodes = 0;      // inodes that exist (linked or still open)
};

struct format {
  std::uint32_t block_size = 4u << 20;  // fixed once the filesystem exists
};

class metadata {
 public:
  // Opens (creating when absent: schema, root directory 0755 owned by root, counters) the
  // database at `file`, in WAL mode, synchronous=NORMAL. A new database records `wanted`; an
  // existing one keeps its own format (format() says which; block_size never changes).
  // Blocking: call it through offload() or before the executor runs. Throws std::system_error.
  static std::unique_ptr<metadata> open(const std::filesystem::path& file, const format& wanted);
  ~metadata();
  metadata(const metadata&) = delete;
  metadata& operator=(const metadata&) = delete;

  const format& settings() const;
  const std::filesystem::path& file() const;

  // Group commit (see above). commit() is a no-op when nothing is open. Throws std::system_error
  // when the commit fails (then everything since the last commit is rolled back).
  void commit();
  bool in_transaction() const;

  // ---- names -------------------------------------------------------------------------------
  int lookup(inode_id parent, std::string_view name, attributes& out);  // ENOENT, ENOTDIR
  int getattr(inode_id ino, attributes& out);                           // ENOENT
  // Size changes trim or extend the chunks (see truncate below); mtime too on a size change
  // unless given. ENOENT, EISDIR (size of a directory), EINVAL, EFBIG.
  int setattr(inode_id ino, const attribute_change& change, attributes& out);

  // Regular files, FIFOs, sockets, devices (mode holds the type; S_IFREG when none) and
  // directories (S_IFDIR): a new inode linked at parent/name. Owner: `who`; group: the parent's
  // when the parent has S_ISGID (and a new directory keeps S_ISGID then), else who.gid.
  // Timestamps now; the parent's mtime and ctime now; a directory's nlink 2 and its parent's +1.
  // EEXIST, ENOENT (parent), ENOTDIR, ENAMETOOLONG.
  int make_node(inode_id parent, std::string_view name, std::uint32_t mode, std::uint64_t rdev,
                const caller& who, attributes& out);
  int make_symlink(inode_id parent, std::string_view name, std::string_view target,
                   const caller& who, attributes& out);
  int read_symlink(inode_id ino, std::string& target);  // EINVAL when not a symlink
  // A new name for an existing inode (not a directory: EPERM). nlink + 1, its ctime now.
  int link(inode_id ino, inode_id new_parent, std::string_view new_name, attributes& out);

  // Removes the name; the inode's nlink - 1 and ctime now. When nlink reaches 0, `unlinked` is
  // set to the inode: it stays (nlink 0, listed by orphans()) until remove_inode(). EISDIR for
  // a directory (unlink), ENOTDIR for a non-directory (rmdir), ENOTEMPTY, ENOENT.
  int unlink(inode_id parent, std::string_view name, std::optional<inode_id>& unlinked);
  int rmdir(inode_id parent, std::string_view name, std::optional<inode_id>& unlinked);

  // rename(2)/renameat2(2): flags 0, RENAME_NOREPLACE (EEXIST when the target exists) or
  // RENAME_EXCHANGE (ENOENT when it does not; both names swap). A replaced target is unlinked as
  // above (`unlinked` set when its nlink reached 0; a replaced directory must be empty:
  // ENOTEMPTY, and of the same kind: EISDIR / ENOTDIR). Renaming a directory into its own subtree
  // is EINVAL. Same inode on both sides: nothing happens, 0. Parents' mtime/ctime and the moved
  // inode's ctime now; directory link counts kept right across parents. EINVAL for other flags.
  int rename(inode_id parent, std::string_view name, inode_id new_parent,
             std::string_view new_name, unsigned flags, std::optional<inode_id>& unlinked);

  // Entries of a directory from `offset` (0: the start), "." and ".." first, at most `max`.
  // Offsets stay valid while entries come and go: an entry added or removed meanwhile is
  // listed at most once, every other entry exactly once. ENOTDIR, ENOENT.
  int read_directory(inode_id dir, std::uint64_t offset, std::size_t max,
                     std::vector<dir_entry>& out);

  // An inode with nlink 0 that nobody holds open any more: its row, chunks, symlink and xattrs
  // go; its slices' reference counts drop (slices no longer referenced are queued for garbage
  // collection: unreferenced_slices()). No-op for a linked or absent inode.
  void remove_inode(inode_id ino);
  // Inodes with nlink 0 (open when a crash came): removed at start.
  std::vector<inode_id> orphans();

  // ---- data ---------------------------------------------------------------------------------
  // The first chunk of `ino` that exists at or after `from` (nullopt: none): for walks over a
  // sparse file that skip its holes instead of asking for every chunk index.
  std::optional<std::uint32_t> next_chunk(inode_id ino, std::uint32_t from);
  // The records of chunk `index` of `ino`, oldest first (empty when none).
  std::vector<slice_record> chunk(inode_id ino, std::uint32_t index);
  // A write session's result: `records` appended to chunk `index` (their slices' reference
  // counts + 1, the slice rows created with their sizes when new), the size raised to at least
  // `min_size`, mtime and ctime now. ENOENT.
  int append_slices(inode_id ino, std::uint32_t index, const std::vector<slice_record>& records,
                    std::uint64_t min_size);
  // Replaces chunk `index`'s records by `records` only if they are still exactly `expected`
  // (compaction's optimistic swap; references counted as above, old ones dropped). Returns false
  // (and changes nothing) when the chunk changed meanwhile.
  bool replace_chunk(inode_id ino, std::uint32_t index, const std::vector<slice_record>& expected,
                     const std::vector<slice_record>& records);
  // Zeros [offset, offset + length) by hole records (fallocate's PUNCH_HOLE / ZERO_RANGE).
  int punch_hole(inode_id ino, std::uint64_t offset, std::uint64_t length);
  // copy_file_range as a metadata-only copy: the destination's range gets records naming the
  // source's slices (holes stay holes), reference counts + 1; the destination grows to cover it.
  // EINVAL on overlapping ranges of one inode, EISDIR, EBADF-like cases are the caller's.
  int copy_range(inode_id from, std::uint64_t from_offset, inode_id to, std::uint64_t to_offset,
                 std::uint64_t length);

  // A new, never used slice id. Ids are reserved in batches whose counter is committed at once
  // (its own commit when no transaction is open; otherwise it commits the open one): no id is
  // ever handed out twice, not even across a crash, so no block object is ever overwritten.
  std::uint64_t new_slice_id();

  // ---- xattrs -------------------------------------------------------------------------------
  // flags: 0, XATTR_CREATE (EEXIST), XATTR_REPLACE (ENODATA). ctime now. E2BIG, ERANGE names.
  int set_xattr(inode_id ino, std::string_view name, std::string_view value, int flags);
  int get_xattr(inode_id ino, std::string_view name, std::string& value);  // ENODATA
  int list_xattr(inode_id ino, std::vector<std::string>& names);
  int remove_xattr(inode_id ino, std::string_view name);  // ENODATA

  // ---- accounting ---------------------------------------------------------------------------
  statistics stats();
  // Slice ids whose reference count fell to 0 (their blocks may go, after checkpoints allow):
  // how many, for the status; the list is for garbage collection.
  std::uint64_t unreferenced_slice_count();
  // Every slice id referenced by a chunk (the blocks that must stay): for start-up cleaning of
  // staging and for garbage collection.
  bool slice_referenced(std::uint64_t id);

 private:
  struct impl;
  explicit metadata(std::unique_ptr<impl> impl);
  std::unique_ptr<impl> impl_;
};

}  // namespace sm::fs
