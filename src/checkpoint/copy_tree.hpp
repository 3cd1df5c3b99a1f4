// The file-tree copy that checkpoints and restores are made of. Everything here blocks on the
// filesystem: run it through offload(), never on the executor.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sm::checkpoint {

struct copy_stats {
  // Regular files whose data was copied; a second name of an inode counts in `hardlinks` only.
  std::uint64_t files = 0;
  // Directories created, `to` itself included.
  std::uint64_t dirs = 0;
  std::uint64_t symlinks = 0;
  std::uint64_t fifos = 0;
  // Names made with link(2) because their inode was already copied under another name.
  std::uint64_t hardlinks = 0;
  // Sockets and character/block devices, which are left out: a socket is dead without the process
  // listening on it, and device nodes belong to the container runtime, not to a checkpoint.
  std::uint64_t skipped = 0;
  // Apparent size of the regular files copied (holes included, each inode once).
  std::uint64_t bytes = 0;

  // Files by the method that copied their data. Empty files need none, so these add up to
  // `files` minus the empty ones; a file whose copy_file_range was refused part-way counts as
  // read_write.
  std::uint64_t reflinked = 0;
  std::uint64_t copy_file_range = 0;
  std::uint64_t read_write = 0;
};

struct copy_options {
  // Called after each regular file with the bytes copied so far (for progress); may be empty.
  std::function<void(std::uint64_t bytes_done)> progress;
  // Set from another thread to stop early: copy_tree then throws copy_cancelled.
  const std::atomic<bool>* cancel = nullptr;
  // False skips FICLONE and copy_file_range: every file's data goes by reads and writes (for
  // tests and benchmarks of that path, on any filesystem).
  bool kernel_copy = true;
  // Whether the files' data and metadata are filled on a second thread while this one walks
  // the tree and creates them. `when_reflinking` (the default) starts it once a file has been
  // reflinked: there the two halves cost about the same, and a checkpoint of 10,000 files on
  // xfs took ~20% less time (restores ~27% less). Where data is really copied the disk is the
  // limit; on ext4 runs with and without the filler differed less than the disk's own slowdown
  // over a benchmark run, so it stays where it was measured to help. `progress` and `move_data`
  // are called from the filler once it runs.
  enum class filler { off, when_reflinking, always };
  filler parallel = filler::when_reflinking;
  // False leaves out the final syncfs(): for a caller that makes the same file system durable
  // itself right after (a checkpoint's commit does), so that it is not paid twice.
  bool sync = true;
  // Copies [offset, offset + length) of `source` to the same offsets of `target` by reads and
  // writes, and returns the bytes copied (fewer when the source ended); throws
  // std::system_error. Called on the copying thread, for at most 16 MiB at a time so that
  // `cancel` is still seen. Empty means copy_tree's own pread/pwrite. uring/copy.hpp has one
  // (executor_data_mover: io_uring requests awaited on the executor).
  std::function<std::uint64_t(int source, int target, std::uint64_t offset, std::uint64_t length)>
      move_data;
};

// Not a std::system_error, so that a caller mapping I/O failures to responses cannot mistake a
// cancellation for one.
class copy_cancelled : public std::runtime_error {
 public:
  copy_cancelled() : std::runtime_error("copy cancelled") {}
};

// Copies the tree at `from` (a directory, not a symlink to one) to `to`, which must not exist and
// is created (its parent must exist). Preserved: file types (regular, directory, symlink as a
// symlink, FIFO; sockets and devices are skipped and counted), modes, ownership (when root;
// otherwise attempted and EPERM ignored), atime and mtime to the nanosecond (directories after
// their contents), hard links within the tree, holes of sparse files (zero-filled blocks that are
// not holes are copied as data), and extended attributes (ENOTSUP from the destination ignored).
// Symlinks are never followed, neither out of the tree nor within it; mount points inside the tree
// are copied into, like `cp -a`.
// File data goes by FICLONE (reflink), then copy_file_range per data extent, then reads and
// writes per data extent: `options.move_data` when set, pread/pwrite with a 1 MiB buffer
// otherwise (`options.kernel_copy` false skips the first two). Everything written is durable
// on return (one syncfs() of the destination's file system); `to` is not renamed anywhere and
// its parent is not fsynced, which is the caller's rename step.
// Throws std::system_error naming the step and the path on any failure (ENOSPC included), and
// copy_cancelled when `options.cancel` is set; either way the partial copy is left for the caller
// to remove (remove_tree). Any depth of tree: the walk keeps its own stack on the heap, and the
// descriptors of the 64 deepest levels at most (two each); it comes back to a shallower directory
// by "..", checked to be the one it left (EAGAIN, "moved during the walk", if not). tree_size and
// remove_tree walk so too.
copy_stats copy_tree(const std::filesystem::path& from, const std::filesystem::path& to,
                     const copy_options& options = {});

// One regular file `from` (a symlink is refused) to `to`, which must not exist: its data by the
// same methods as copy_tree (reflink first), its mode, owner, times and xattrs, fsynced unless
// `options.sync` is false. `to`'s directory is not fsynced. Throws as copy_tree does; a partial
// `to` is left for the caller to remove.
copy_stats copy_file(const std::filesystem::path& from, const std::filesystem::path& to,
                     const copy_options& options = {});

// The apparent size of the regular files under `root`, each inode once: the total that
// copy_tree's progress reaches (for a tree that does not change meanwhile). Symlinks are not
// followed. Throws std::system_error.
std::uint64_t tree_size(const std::filesystem::path& root);

// Removes `path` and everything under it, like `rm -rf`: symlinks are removed, never followed,
// read-only directories are made writable first so that a non-root caller can empty them, and a
// missing `path` is not an error. Unlike std::filesystem::remove_all it works relative to open
// directory descriptors, so a directory swapped for a symlink mid-way cannot redirect it.
// Throws std::system_error naming the path that could not be removed.
void remove_tree(const std::filesystem::path& path);

// Extended attributes as name and value, in the order the file system lists them.
using xattr_list = std::vector<std::pair<std::string, std::string>>;

// The extended attributes of the inode at `path`, not following a symlink; empty where its file
// system keeps none. Throws std::system_error.
xattr_list read_xattrs(const std::filesystem::path& path);

// Sets `xattrs` on the inode at `path`, not following a symlink. As in copy_tree, a file system
// without xattrs (ENOTSUP) and, when not root, a namespace we may not write (EPERM) lose them
// silently. Throws std::system_error for any other failure.
void write_xattrs(const std::filesystem::path& path, const xattr_list& xattrs);

}  // namespace sm::checkpoint
