#include "checkpoint/contents_swap.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "base/crash_point.hpp"
#include "base/fd.hpp"

namespace sm::checkpoint {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view prefix = ".state-manager-restore-";
// Step 1's directory, step 2's (all of the old state), step 3's copy, step 4's garbage.
const std::string aside_name = std::string(prefix) + "aside";
const std::string old_name = std::string(prefix) + "old";
const std::string new_name = std::string(prefix) + "new";
const std::string trash_name = std::string(prefix) + "trash";

[[noreturn]] void throw_errno(std::string_view step, const fs::path& path, int error = errno) {
  throw std::system_error(error, std::generic_category(), std::string(step) + " " + path.string());
}

unique_fd open_dir(const fs::path& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) throw_errno("open", path);
  return fd;
}

void fsync_dir(const fs::path& path) {
  const unique_fd fd = open_dir(path);
  if (::fsync(fd.get()) != 0) throw_errno("fsync", path);
}

// The names in `dir` but the reserved ones.
std::vector<std::string> entries(const fs::path& dir) {
  unique_fd fd = open_dir(dir);
  DIR* listing = ::fdopendir(fd.get());
  if (listing == nullptr) throw_errno("list", dir);
  fd.release();
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = ::readdir(listing)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != ".." && !is_contents_swap_name(std::string(name))) {
      names.emplace_back(name);
    }
  }
  const int error = errno;
  ::closedir(listing);
  if (error != 0) throw_errno("list", dir, error);
  return names;
}

// Every entry of `from` into `to` (both directories of one file system), by rename.
void move_entries(const fs::path& from, const fs::path& to) {
  const unique_fd source = open_dir(from), target = open_dir(to);
  for (const std::string& name : entries(from)) {
    if (::renameat(source.get(), name.c_str(), target.get(), name.c_str()) != 0) {
      throw_errno("move", from / name);
    }
  }
}

bool present(const fs::path& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

}  // namespace

bool is_contents_swap_name(const std::string& name) {
  return name == aside_name || name == old_name || name == new_name || name == trash_name;
}

copy_stats swap_contents(const fs::path& from, const fs::path& dir, const copy_options& options) {
  // What an earlier swap left. Its restore's journal is gone (a new one could not have
  // begun otherwise), so that swap was committed or undone: what is left is garbage, never
  // the state to go back to.
  finish_contents_swap(dir);
  remove_tree(dir / new_name);
  // 1. The old state, entry by entry, into the aside directory.
  if (::mkdir((dir / aside_name).c_str(), 0700) != 0) throw_errno("mkdir", dir / aside_name);
  move_entries(dir, dir / aside_name);
  fsync_dir(dir / aside_name);
  fsync_dir(dir);
  crash_point("restore.contents_after_aside");
  // 2. All of it is there: from now on an undo may empty the directory first.
  if (::rename((dir / aside_name).c_str(), (dir / old_name).c_str()) != 0) {
    throw_errno("rename", dir / aside_name);
  }
  fsync_dir(dir);
  crash_point("restore.contents_after_old");
  // 3. The checkpoint next to it, then moved up.
  const copy_stats stats = copy_tree(from, dir / new_name, options);
  crash_point("restore.contents_after_copy");
  move_entries(dir / new_name, dir);
  crash_point("restore.contents_after_move_up");
  if (::rmdir((dir / new_name).c_str()) != 0) throw_errno("rmdir", dir / new_name);
  struct stat st {};
  if (::stat(from.c_str(), &st) != 0) throw_errno("stat", from);
  const unique_fd target = open_dir(dir);
  if (::fchown(target.get(), st.st_uid, st.st_gid) != 0 && errno != EPERM) {
    throw_errno("chown", dir);
  }
  if (::fchmod(target.get(), st.st_mode & 07777) != 0) throw_errno("chmod", dir);
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (::futimens(target.get(), times) != 0) throw_errno("set times", dir);
  if (::fsync(target.get()) != 0) throw_errno("fsync", dir);
  return stats;
}

void finish_contents_swap(const fs::path& dir) {
  // One rename makes it final; the removal that follows may be cut short by a crash.
  if (present(dir / old_name)) {
    remove_tree(dir / trash_name);
    if (::rename((dir / old_name).c_str(), (dir / trash_name).c_str()) != 0) {
      throw_errno("rename", dir / old_name);
    }
    fsync_dir(dir);
    crash_point("restore.contents_after_trash");
  }
  remove_tree(dir / trash_name);
}

void remove_contents_swap_garbage(const fs::path& dir) {
  remove_tree(dir / trash_name);
}

bool undo_contents_swap(const fs::path& dir) {
  const bool trash = present(dir / trash_name), old = present(dir / old_name),
             aside = present(dir / aside_name), copy = present(dir / new_name);
  if (!trash && !old && !aside && !copy) return false;
  remove_tree(dir / trash_name);  // a swap that was final: only its removal is finished
  remove_tree(dir / new_name);
  if (old) {
    // What is outside it is the checkpoint's, in part or whole.
    for (const std::string& name : entries(dir)) remove_tree(dir / name);
    move_entries(dir / old_name, dir);
    if (::rmdir((dir / old_name).c_str()) != 0) throw_errno("rmdir", dir / old_name);
  } else if (aside) {
    // Step 1 was cut short: what is outside it is the old state's still.
    move_entries(dir / aside_name, dir);
    if (::rmdir((dir / aside_name).c_str()) != 0) throw_errno("rmdir", dir / aside_name);
  }
  fsync_dir(dir);
  return old || aside;
}

}  // namespace sm::checkpoint
