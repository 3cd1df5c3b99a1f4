// The embedded object store: one regular file per object, under <root>/<bucket>/<key_prefix><key>.
//
// Layout and the store's private directory. Beside the objects, the bucket directory holds
// `.sm-tmp/`, the store's own: temporary files (written, fsynced, then renamed or linked into
// place) and `lock`, the bucket's lock file. Because every temporary lives there, on the same
// file system as the objects, a commit is one rename(2) or link(2). A key whose first segment
// (after key_prefix) is `.sm-tmp` is refused, so that no user key can land in it, and the
// listing skips it.
//
// Keys. A key maps to a relative path, so a key that could not be one is refused with 400
// InvalidKey: empty, longer than 1024 bytes (S3's limit), holding a NUL byte, or with an empty,
// `.` or `..` segment or one longer than 255 bytes (NAME_MAX). A file system also cannot hold
// both `a/b` and `a/b/c`: the second of them to be written is refused with InvalidKey too.
// Only regular files are objects; anything else found in the tree is invisible.
//
// ETag: 48 hex digits, (inode, mtime in ns, size) of the object's file, 16 digits each. Every
// commit stamps the new file's mtime from CLOCK_REALTIME, bumped past the mtime of the file it
// replaces, so the ETag changes whenever the content is replaced (even when the old inode
// number is reused at once) and is stable otherwise. MD5 would be S3's choice, but it costs a
// crypto library and a full read of every object.
//
// Concurrency, also against another process using the same directory:
// - create (if_none_match): link(2) the temporary to the final name; EEXIST is 412. No lock.
// - every other commit (plain put, if_match, put_file, copy) and every remove holds an
//   exclusive flock(2) on `.sm-tmp/lock` from the comparison to the rename, so an if_match
//   never interleaves with another write. Removing empty parent directories also happens under
//   it; a lockless create that finds its parent gone recreates it and tries again.
// - readers open the file once and read that inode: a get never sees half a write.
//
// Listing walks the tree below the bucket in one offloaded call, pruning directories that can
// hold no key under the prefix or after the continuation point, then sorts the keys bytewise.
// The continuation token is "K" or "P" (the last entry was a key or a common prefix) followed by
// that entry in hex; the next page starts strictly after it.
#include "s3/file_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <set>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "async/offload.hpp"
#include "base/fd.hpp"
#include "base/hex.hpp"

namespace sm::s3 {

namespace {

constexpr std::string_view private_dir_name = ".sm-tmp";
constexpr std::string_view lock_file_name = "lock";
constexpr std::size_t max_key_bytes = 1024;
constexpr std::size_t max_segment_bytes = 255;
constexpr unsigned max_page_keys = 1000;
// Temporaries older than this in the private directory are leftovers of a crash; check()
// removes them. Every commit finishes within one call, so no live one is ever this old.
constexpr std::chrono::hours stale_temporary_age{24};
// A create or rename whose parent directory keeps vanishing (a concurrent remove pruning it)
// gives up after this many attempts.
constexpr int max_commit_attempts = 16;

// ---------------------------------------------------------------------------------------------
// Errors: every errno becomes an s3::error here, in one place.

// What a failing path is to the caller: an object's path (layout conflicts are the key's
// fault), the store's own directories, or a local file the caller named (put_file, get_file).
enum class subject { object, store, local };

std::string quote_path(std::string_view path) {
  std::string out = "\"";
  out += path;
  out += '"';
  return out;
}

error fs_error(int err, const std::string& what, subject about, const std::string& key = {}) {
  const std::string message = what + ": " + std::system_category().message(err);
  switch (err) {
    case EACCES:
    case EPERM:
    case EROFS:
      return error(403, "AccessDenied", message, key);
    case ENOSPC:
    case EDQUOT:
      return error(507, "InsufficientStorage", message, key);
    case EFBIG:
      return error(400, "EntityTooLarge", message, key);
    case ENAMETOOLONG:
      return error(400, about == subject::local ? "InvalidArgument" : "InvalidKey", message, key);
    case ENOTDIR:
    case EISDIR:
    case ENOTEMPTY:
    case EEXIST:
    case ELOOP:
      // A file where a directory is needed, or the reverse.
      switch (about) {
        case subject::object:
          return error(400, "InvalidKey",
                       message + " (a file-system store cannot hold both a key and keys below it)",
                       key);
        case subject::store:
          return error(400, "InvalidBucket", message, key);
        case subject::local:
          return error(400, "InvalidArgument", message, key);
      }
      break;
    case ENOENT:
      if (about == subject::local) return error(400, "InvalidArgument", message, key);
      break;
    default:
      break;
  }
  return error(500, "InternalError", message, key);
}

// Retries a system call that a signal interrupted.
template <class F>
auto no_eintr(F call) {
  for (;;) {
    auto result = call();
    if (result != -1 || errno != EINTR) return result;
  }
}

std::string parent_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// A name no other writer picks: random where the kernel gives randomness without waiting,
// otherwise pid, time and a counter. O_EXCL settles any collision anyway.
std::string unique_suffix() {
  unsigned char bytes[8];
  if (::getrandom(bytes, sizeof bytes, GRND_NONBLOCK) == static_cast<ssize_t>(sizeof bytes)) {
    return hex(std::string_view(reinterpret_cast<const char*>(bytes), sizeof bytes));
  }
  static std::atomic<unsigned> counter{0};
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return std::to_string(::getpid()) + "-" +
         std::to_string(now.tv_sec * 1000000000LL + now.tv_nsec) + "-" +
         std::to_string(counter.fetch_add(1));
}

// ---------------------------------------------------------------------------------------------
// Keys.

// Throws InvalidKey unless `full` (key_prefix + key) is a relative path of plain segments,
// outside the private directory.
void validate_key(const std::string& key, std::string_view full) {
  auto invalid = [&](const std::string& why) { return error(400, "InvalidKey", why, key); };
  if (key.empty()) throw invalid("the key is empty");
  if (full.size() > max_key_bytes) {
    throw invalid("longer than " + std::to_string(max_key_bytes) + " bytes with the key prefix");
  }
  if (full.find('\0') != std::string_view::npos) throw invalid("contains a NUL byte");
  std::size_t start = 0;
  for (bool first = true;; first = false) {
    const auto end = full.find('/', start);
    const auto segment = full.substr(start, end == std::string_view::npos ? end : end - start);
    if (segment.empty())
      throw invalid("has an empty segment (a leading, trailing or double \"/\")");
    if (segment == "." || segment == "..") throw invalid("has a \".\" or \"..\" segment");
    if (segment.size() > max_segment_bytes) {
      throw invalid("has a segment longer than " + std::to_string(max_segment_bytes) + " bytes");
    }
    if (first && segment == private_dir_name) {
      throw invalid("\"" + std::string(private_dir_name) +
                    "\" at the top of the bucket is reserved for the store");
    }
    if (end == std::string_view::npos) return;
    start = end + 1;
  }
}

std::string unquote(std::string_view etag) {
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
    etag = etag.substr(1, etag.size() - 2);
  }
  return std::string(etag);
}

// ---------------------------------------------------------------------------------------------
// Object metadata.

std::uint64_t nanoseconds_of(const timespec& t) {
  return static_cast<std::uint64_t>(t.tv_sec) * 1000000000ULL +
         static_cast<std::uint64_t>(t.tv_nsec);
}

std::string etag_of(const struct stat& st) {
  char text[49];
  std::snprintf(text, sizeof text, "%016llx%016llx%016llx",
                static_cast<unsigned long long>(st.st_ino),
                static_cast<unsigned long long>(nanoseconds_of(st.st_mtim)),
                static_cast<unsigned long long>(st.st_size));
  return text;
}

object_info info_of(std::string key, const struct stat& st) {
  object_info info;
  info.key = std::move(key);
  info.size = static_cast<std::uint64_t>(st.st_size);
  info.etag = etag_of(st);
  info.last_modified = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
  return info;
}

// ---------------------------------------------------------------------------------------------
// Blocking file-system steps. Each throws s3::error naming the step and the path.

struct stat stat_fd(int fd, const std::string& path, subject about, const std::string& key) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw fs_error(errno, "stat " + quote_path(path), about, key);
  return st;
}

void write_all(int fd, std::string_view data, const std::string& path, const std::string& key) {
  while (!data.empty()) {
    const ssize_t n = no_eintr([&] { return ::write(fd, data.data(), data.size()); });
    if (n < 0) throw fs_error(errno, "write " + quote_path(path), subject::store, key);
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

void sync_fd(int fd, const std::string& path, subject about, const std::string& key) {
  if (no_eintr([&] { return ::fsync(fd); }) != 0) {
    throw fs_error(errno, "fsync " + quote_path(path), about, key);
  }
}

// Makes a rename, link or unlink in `dir` durable. Best effort where the directory is already
// gone (a concurrent remove pruned it), cannot be opened for reading (writable, not readable:
// the change is made, only its durability is the file system's) or cannot be synced.
void sync_directory(const std::string& dir, subject about, const std::string& key) {
  unique_fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT || errno == ENOTDIR || errno == EACCES) return;
    throw fs_error(errno, "open directory " + quote_path(dir), about, key);
  }
  if (no_eintr([&] { return ::fsync(fd.get()); }) != 0 && errno != EINVAL) {
    throw fs_error(errno, "fsync directory " + quote_path(dir), about, key);
  }
}

// mkdir -p, each new directory made durable in its parent.
void make_directories(const std::string& dir, subject about, const std::string& key) {
  for (int attempt = 0;; ++attempt) {
    if (::mkdir(dir.c_str(), 0777) == 0) {
      sync_directory(parent_of(dir), about, key);
      return;
    }
    const int err = errno;
    if (err == EEXIST) {
      struct stat st {};
      if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return;
      throw fs_error(ENOTDIR, "create directory " + quote_path(dir), about, key);
    }
    const std::string parent = parent_of(dir);
    if (err != ENOENT || parent == dir || attempt == max_commit_attempts) {
      throw fs_error(err, "create directory " + quote_path(dir), about, key);
    }
    make_directories(parent, about, key);
  }
}

// A file being written, removed unless committed.
class temporary_file {
 public:
  temporary_file(std::string path, unique_fd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  temporary_file(temporary_file&& other) noexcept
      : path_(std::exchange(other.path_, {})), fd_(std::move(other.fd_)) {}
  temporary_file& operator=(temporary_file&&) = delete;
  ~temporary_file() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }

  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }
  // The name now belongs to a committed object (renamed away): nothing to remove.
  void committed() { path_.clear(); }

 private:
  std::string path_;
  unique_fd fd_;
};

// Creates `<dir>/<name_prefix><random>.tmp` for writing.
temporary_file create_temporary(const std::string& dir, const std::string& name_prefix,
                                subject about, const std::string& key) {
  for (int attempt = 0;; ++attempt) {
    std::string path = dir + "/" + name_prefix + unique_suffix() + ".tmp";
    unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
    if (fd) return temporary_file(std::move(path), std::move(fd));
    const int err = errno;
    if (err == EEXIST && attempt < max_commit_attempts) continue;
    if (err == ENOENT && about == subject::store && attempt < max_commit_attempts) {
      make_directories(dir, subject::store, key);
      continue;
    }
    throw fs_error(err, "create temporary file " + quote_path(path), about, key);
  }
}

// Sets the mtime of `file` to now, or to just past `replaced` (the mtime of the file it is
// about to replace) when the clock has not moved past it: the ETag must change.
void stamp_mtime(const temporary_file& file, const timespec* replaced, const std::string& key) {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  if (replaced && nanoseconds_of(now) <= nanoseconds_of(*replaced)) {
    now = *replaced;
    if (++now.tv_nsec == 1000000000L) {
      now.tv_nsec = 0;
      ++now.tv_sec;
    }
  }
  const timespec times[2] = {{0, UTIME_OMIT}, now};
  if (::futimens(file.fd(), times) != 0) {
    throw fs_error(errno, "set the mtime of " + quote_path(file.path()), subject::store, key);
  }
}

// Copies up to `length` bytes of `from` starting at `offset` to the start of `to`, stopping at
// the end of `from`; returns the bytes copied. Tries a reflink (whole files only), then
// copy_file_range, then plain reads and writes, each where the one before is unsupported.
std::uint64_t copy_bytes(int from, const std::string& from_path, std::uint64_t offset,
                         std::uint64_t length, bool whole_file, const temporary_file& to,
                         subject from_about, const std::string& key) {
  if (whole_file && ::ioctl(to.fd(), FICLONE, from) == 0) {
    return static_cast<std::uint64_t>(stat_fd(to.fd(), to.path(), subject::store, key).st_size);
  }
  std::uint64_t done = 0;
  bool kernel_copy = true;
  std::unique_ptr<char[]> buffer;
  constexpr std::size_t buffer_size = 1 << 20;
  while (done < length) {
    if (kernel_copy) {
      loff_t in = static_cast<loff_t>(offset + done), out = static_cast<loff_t>(done);
      const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(length - done, 1 << 30));
      const ssize_t n = ::copy_file_range(from, &in, to.fd(), &out, chunk, 0);
      if (n > 0) {
        done += static_cast<std::uint64_t>(n);
        continue;
      }
      if (n == 0) break;
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EXDEV || err == EINVAL || err == EOPNOTSUPP || err == ENOSYS || err == EBADF ||
          err == EPERM) {
        kernel_copy = false;
        continue;
      }
      throw fs_error(err, "copy " + quote_path(from_path) + " to " + quote_path(to.path()),
                     from_about, key);
    }
    if (!buffer) buffer.reset(new char[buffer_size]);
    const auto chunk =
        static_cast<std::size_t>(std::min<std::uint64_t>(length - done, buffer_size));
    const ssize_t n = no_eintr(
        [&] { return ::pread(from, buffer.get(), chunk, static_cast<off_t>(offset + done)); });
    if (n < 0) throw fs_error(errno, "read " + quote_path(from_path), from_about, key);
    if (n == 0) break;
    for (ssize_t written = 0; written < n;) {
      const ssize_t w = no_eintr([&] {
        return ::pwrite(to.fd(), buffer.get() + written, static_cast<std::size_t>(n - written),
                        static_cast<off_t>(done + static_cast<std::uint64_t>(written)));
      });
      if (w < 0) throw fs_error(errno, "write " + quote_path(to.path()), subject::store, key);
      written += w;
    }
    done += static_cast<std::uint64_t>(n);
  }
  return done;
}

// An open object: its file and what it was when opened. Readers use the descriptor only, so
// they read one version even while a writer replaces the name.
struct open_object {
  unique_fd fd;
  struct stat st {};
};

// nullopt when there is no object under `path` (nothing there, a directory, or a non-regular
// file, which the store never creates).
std::optional<open_object> open_for_reading(const std::string& path, const std::string& key) {
  // O_NONBLOCK: a FIFO someone left in the tree must not hang the worker; no effect on files.
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR || err == ELOOP) return std::nullopt;
    throw fs_error(err, "open " + quote_path(path), subject::object, key);
  }
  open_object object{std::move(fd)};
  object.st = stat_fd(object.fd.get(), path, subject::object, key);
  if (!S_ISREG(object.st.st_mode)) return std::nullopt;
  return object;
}

// The part of an object of `size` bytes that `range` selects, as (offset, length). A range
// that ends before it starts is refused (416) rather than read as the whole object, as HTTP
// would: here it can only be a caller's mistake.
std::pair<std::uint64_t, std::uint64_t> resolve_range(const std::optional<byte_range>& range,
                                                      std::uint64_t size, const std::string& key) {
  if (!range) return {0, size};
  if (range->first >= size) {
    throw error(416, "InvalidRange",
                "the range starts at byte " + std::to_string(range->first) + " of an object of " +
                    std::to_string(size) + " bytes",
                key);
  }
  std::uint64_t last = size - 1;
  if (range->last) {
    if (*range->last < range->first) {
      throw error(416, "InvalidRange",
                  "the range ends (" + std::to_string(*range->last) + ") before it starts (" +
                      std::to_string(range->first) + ")",
                  key);
    }
    last = std::min(last, *range->last);
  }
  return {range->first, last - range->first + 1};
}

// The exclusive lock on the bucket's lock file, held while open.
unique_fd lock_bucket(const std::string& lock_path, const std::string& key) {
  for (int attempt = 0;; ++attempt) {
    unique_fd fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666));
    if (!fd) {
      const int err = errno;
      if (err == ENOENT && attempt < max_commit_attempts) {
        make_directories(parent_of(lock_path), subject::store, key);
        continue;
      }
      throw fs_error(err, "open lock file " + quote_path(lock_path), subject::store, key);
    }
    if (no_eintr([&] { return ::flock(fd.get(), LOCK_EX); }) != 0) {
      throw fs_error(errno, "lock " + quote_path(lock_path), subject::store, key);
    }
    return fd;
  }
}

// Turns any std::system_error that escaped a step into an s3::error, so that callers only
// ever see s3::error from the store.
template <class F>
decltype(auto) translating_errors(F& work) {
  try {
    return work();
  } catch (const error&) {
    throw;
  } catch (const std::system_error& e) {
    throw error(500, "InternalError", e.what());
  }
}

// Runs `work` on the offload worker (or, with `own_thread`, on a thread of its own) and returns
// its result on the awaiting coroutine's executor.
template <class F>
asio::awaitable<std::invoke_result_t<F&>> run_blocking(bool own_thread, F work) {
  using result = std::invoke_result_t<F&>;
  const auto run = own_thread ? &offload_thread : &offload;
  if constexpr (std::is_void_v<result>) {
    co_await run([&] { translating_errors(work); });
  } else {
    std::optional<result> value;
    co_await run([&] { value.emplace(translating_errors(work)); });
    co_return std::move(*value);
  }
}

// ---------------------------------------------------------------------------------------------
// Listing.

struct resume_point {
  std::string entry;       // the last entry of the previous page, relative to key_prefix
  bool is_prefix = false;  // a common prefix: everything under it was returned too
};

std::string encode_token(const resume_point& point) {
  return (point.is_prefix ? "P" : "K") + hex(point.entry);
}

std::optional<resume_point> decode_token(const std::string& token) {
  if (token.empty()) return std::nullopt;
  auto entry = (token[0] == 'K' || token[0] == 'P') ? unhex(std::string_view(token).substr(1))
                                                    : std::nullopt;
  if (!entry || entry->empty()) {
    throw error(400, "InvalidArgument", "the continuation token is not one this store gave");
  }
  return resume_point{std::move(*entry), token[0] == 'P'};
}

struct dir_closer {
  void operator()(DIR* dir) const { ::closedir(dir); }
};
using dir_handle = std::unique_ptr<DIR, dir_closer>;

// The keys (relative to the bucket directory) of the regular files below `bucket_fd` that
// start with `search` and come after `after` (all of a common prefix's keys when
// `after_prefix`), unsorted.
std::vector<std::string> collect_keys(int bucket_fd, const std::string& bucket_dir,
                                      const std::string& search, const std::string* after,
                                      bool after_prefix) {
  auto passed = [&](const std::string& key) {
    if (!after) return false;
    return key <= *after || (after_prefix && key.starts_with(*after));
  };
  // A directory `dir/` can hold a wanted key only if it and the search prefix agree as far as
  // both go, and if some key under it may come after the resume point: it does not when the
  // resume point lies past everything starting with `dir/`.
  auto may_hold = [&](const std::string& dir) {
    if (!(dir.starts_with(search) || search.starts_with(dir))) return false;
    if (!after) return true;
    if (after_prefix && dir.starts_with(*after)) return false;
    return after->starts_with(dir) || *after < dir;
  };

  std::vector<std::string> keys;
  std::vector<std::string> pending{""};  // directories to read, relative, "" the bucket itself
  while (!pending.empty()) {
    const std::string rel = std::move(pending.back());
    pending.pop_back();
    const std::string shown = rel.empty() ? bucket_dir : bucket_dir + "/" + rel;
    unique_fd fd(rel.empty() ? ::dup(bucket_fd)
                             : ::openat(bucket_fd, rel.c_str(),
                                        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
      if (errno == ENOENT || errno == ENOTDIR) continue;  // removed since we saw it
      throw fs_error(errno, "open directory " + quote_path(shown), subject::store);
    }
    dir_handle dir(::fdopendir(fd.get()));
    if (!dir) throw fs_error(errno, "read directory " + quote_path(shown), subject::store);
    fd.release();  // the DIR owns it now
    for (;;) {
      errno = 0;
      const dirent* entry = ::readdir(dir.get());
      if (!entry) {
        if (errno != 0)
          throw fs_error(errno, "read directory " + quote_path(shown), subject::store);
        break;
      }
      const std::string_view name = entry->d_name;
      if (name == "." || name == "..") continue;
      if (rel.empty() && name == private_dir_name) continue;
      unsigned char type = entry->d_type;
      if (type == DT_UNKNOWN) {
        struct stat st {};
        if (::fstatat(::dirfd(dir.get()), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
      }
      std::string child = rel.empty() ? std::string(name) : rel + "/" + std::string(name);
      if (type == DT_DIR) {
        if (may_hold(child + "/")) pending.push_back(std::move(child));
      } else if (type == DT_REG) {
        if (child.starts_with(search) && !passed(child)) keys.push_back(std::move(child));
      }
    }
  }
  return keys;
}

// ---------------------------------------------------------------------------------------------

class file_store final : public object_store {
 public:
  file_store(std::string bucket_dir, std::string key_prefix, bool own_thread)
      : bucket_dir_(std::move(bucket_dir)),
        private_dir_(bucket_dir_ + "/" + std::string(private_dir_name)),
        lock_path_(private_dir_ + "/" + std::string(lock_file_name)),
        key_prefix_(std::move(key_prefix)),
        own_thread_(own_thread) {}

  asio::awaitable<std::string> put(std::string key, std::string body,
                                   put_options options) override {
    const std::string path = object_path(key);
    check_conditions(options, key);
    co_return co_await blocking([&] {
      temporary_file temp = create_temporary(private_dir_, "put-", subject::store, key);
      write_all(temp.fd(), body, temp.path(), key);
      return commit(temp, path, key, options);
    });
  }

  asio::awaitable<std::string> put_file(std::string key, std::filesystem::path file,
                                        put_options options) override {
    const std::string path = object_path(key);
    check_conditions(options, key);
    co_return co_await blocking([&] {
      const std::string source = file.string();
      unique_fd from(::open(source.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
      if (!from) throw fs_error(errno, "open " + quote_path(source), subject::local, key);
      const struct stat st = stat_fd(from.get(), source, subject::local, key);
      if (!S_ISREG(st.st_mode)) {
        throw error(400, "InvalidArgument", quote_path(source) + " is not a regular file", key);
      }
      temporary_file temp = create_temporary(private_dir_, "put-", subject::store, key);
      copy_bytes(from.get(), source, 0, UINT64_MAX, true, temp, subject::local, key);
      return commit(temp, path, key, options);
    });
  }

  asio::awaitable<std::string> get(std::string key, std::optional<byte_range> range) override {
    const std::string path = object_path(key);
    co_return co_await blocking([&] {
      auto object = open_for_reading(path, key);
      if (!object) throw no_such_key(key);
      check_version(range, object->st, key);
      const auto [offset, length] =
          resolve_range(range, static_cast<std::uint64_t>(object->st.st_size), key);
      std::string body(length, '\0');
      for (std::uint64_t done = 0; done < length;) {
        const ssize_t n = no_eintr([&] {
          return ::pread(object->fd.get(), body.data() + done, length - done,
                         static_cast<off_t>(offset + done));
        });
        if (n < 0) throw fs_error(errno, "read " + quote_path(path), subject::object, key);
        if (n == 0) {
          throw error(500, "InternalError", quote_path(path) + " is shorter than its size", key);
        }
        done += static_cast<std::uint64_t>(n);
      }
      return body;
    });
  }

  // The info returned describes the object (its whole size), whatever range was written.
  asio::awaitable<object_info> get_file(std::string key, std::filesystem::path to,
                                        std::optional<byte_range> range) override {
    const std::string path = object_path(key);
    co_return co_await blocking([&] {
      const std::string target = to.string();
      const std::string name = to.filename().string();
      if (name.empty() || name == "." || name == "..") {
        throw error(400, "InvalidArgument", quote_path(target) + " does not name a file", key);
      }
      auto object = open_for_reading(path, key);
      if (!object) throw no_such_key(key);
      check_version(range, object->st, key);
      const auto size = static_cast<std::uint64_t>(object->st.st_size);
      const auto [offset, length] = resolve_range(range, size, key);
      const std::string dir = to.has_parent_path() ? to.parent_path().string() : ".";
      temporary_file temp = create_temporary(dir, "." + name + ".sm-tmp-", subject::local, key);
      const std::uint64_t copied =
          copy_bytes(object->fd.get(), path, offset, length, offset == 0 && length == size, temp,
                     subject::object, key);
      if (copied != length) {
        throw error(500, "InternalError", quote_path(path) + " is shorter than its size", key);
      }
      sync_fd(temp.fd(), temp.path(), subject::local, key);
      if (::rename(temp.path().c_str(), target.c_str()) != 0) {
        throw fs_error(errno, "rename " + quote_path(temp.path()) + " to " + quote_path(target),
                       subject::local, key);
      }
      temp.committed();
      sync_directory(dir, subject::local, key);
      return info_of(key, object->st);
    });
  }

  asio::awaitable<std::optional<object_info>> head(std::string key) override {
    const std::string path = object_path(key);
    co_return co_await blocking([&]() -> std::optional<object_info> {
      struct stat st {};
      if (::lstat(path.c_str(), &st) != 0) {
        const int err = errno;
        if (err == ENOENT || err == ENOTDIR) return std::nullopt;
        throw fs_error(err, "stat " + quote_path(path), subject::object, key);
      }
      if (!S_ISREG(st.st_mode)) return std::nullopt;
      return info_of(key, st);
    });
  }

  asio::awaitable<void> remove(std::string key) override {
    std::vector<std::string> keys;
    keys.push_back(std::move(key));
    co_await remove_many(std::move(keys));
  }

  asio::awaitable<void> remove_many(std::vector<std::string> keys) override {
    if (keys.empty()) co_return;
    std::vector<std::string> paths;
    paths.reserve(keys.size());
    for (const auto& key : keys) paths.push_back(object_path(key));
    co_await blocking([&] {
      std::set<std::string> changed;  // directories to sync once all are removed
      {
        const unique_fd lock = lock_bucket(lock_path_, keys.front());
        for (std::size_t i = 0; i < keys.size(); ++i) {
          if (auto dir = remove_locked(paths[i], keys[i])) changed.insert(std::move(*dir));
        }
      }
      for (const auto& dir : changed) sync_directory(dir, subject::store, {});
    });
  }

  // max_keys is capped at 1000, as S3 caps it; 0 means that default.
  asio::awaitable<list_page> list(std::string prefix, std::string delimiter,
                                  std::string continuation, unsigned max_keys) override {
    const auto resume = decode_token(continuation);
    if (max_keys == 0 || max_keys > max_page_keys) max_keys = max_page_keys;
    co_return co_await blocking([&] {
      list_page page;
      unique_fd bucket(::open(bucket_dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!bucket) {
        if (errno == ENOENT) return page;  // nothing written yet
        throw fs_error(errno, "open directory " + quote_path(bucket_dir_), subject::store);
      }
      const std::string after = resume ? key_prefix_ + resume->entry : std::string();
      std::vector<std::string> keys =
          collect_keys(bucket.get(), bucket_dir_, key_prefix_ + prefix, resume ? &after : nullptr,
                       resume && resume->is_prefix);
      std::sort(keys.begin(), keys.end());

      resume_point last;
      unsigned entries = 0;
      for (const auto& full : keys) {
        const std::string_view key = std::string_view(full).substr(key_prefix_.size());
        std::optional<std::string_view> rolled_up;
        if (!delimiter.empty()) {
          const auto at = key.find(delimiter, prefix.size());
          if (at != std::string_view::npos) rolled_up = key.substr(0, at + delimiter.size());
        }
        // A common prefix's keys are adjacent in order: only its first one makes an entry.
        if (rolled_up && last.is_prefix && *rolled_up == last.entry) continue;
        if (entries == max_keys) {
          page.next_token = encode_token(last);
          break;
        }
        ++entries;
        last = resume_point{std::string(rolled_up ? *rolled_up : key), rolled_up.has_value()};
        if (rolled_up) {
          page.common_prefixes.push_back(last.entry);
        } else {
          struct stat st {};
          if (::fstatat(bucket.get(), full.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT || errno == ENOTDIR) continue;  // removed meanwhile
            throw fs_error(errno, "stat " + quote_path(bucket_dir_ + "/" + full), subject::object,
                           last.entry);
          }
          page.objects.push_back(info_of(last.entry, st));
        }
      }
      return page;
    });
  }

  asio::awaitable<std::string> copy(std::string from, std::string to) override {
    const std::string from_path = object_path(from);
    const std::string to_path = object_path(to);
    co_return co_await blocking([&] {
      auto source = open_for_reading(from_path, from);
      if (!source) throw no_such_key(from);
      temporary_file temp = create_temporary(private_dir_, "copy-", subject::store, to);
      const auto size = static_cast<std::uint64_t>(source->st.st_size);
      if (copy_bytes(source->fd.get(), from_path, 0, size, true, temp, subject::object, from) !=
          size) {
        throw error(500, "InternalError", quote_path(from_path) + " is shorter than its size",
                    from);
      }
      return commit(temp, to_path, to, put_options{});
    });
  }

  asio::awaitable<void> check() override {
    co_await blocking([&] {
      try {
        make_directories(bucket_dir_, subject::store, {});
        make_directories(private_dir_, subject::store, {});
        // Proves that objects can be written, not only that the directories exist.
        create_temporary(private_dir_, "check-", subject::store, {});
      } catch (const error& e) {
        throw error(e.status(), e.code(),
                    "file store " + quote_path(bucket_dir_) + ": " + e.message());
      }
      remove_stale_temporaries();
    });
  }

 private:
  std::string object_path(const std::string& key) const {
    const std::string full = key_prefix_ + key;
    validate_key(key, full);
    return bucket_dir_ + "/" + full;
  }

  static void check_conditions(const put_options& options, const std::string& key) {
    if (options.if_none_match && !options.if_match.empty()) {
      throw error(400, "InvalidArgument", "if_none_match and if_match together can never hold",
                  key);
    }
  }

  // A range read only from the version it names (byte_range::if_match): the inode opened is
  // the one read, so the comparison holds for the whole read.
  static void check_version(const std::optional<byte_range>& range, const struct stat& st,
                            const std::string& key) {
    if (range && !range->if_match.empty() && etag_of(st) != unquote(range->if_match)) {
      throw precondition_failed(key, "the object's ETag is " + etag_of(st) + ", not " +
                                         unquote(range->if_match) + " (if_match)");
    }
  }

  static error no_such_key(const std::string& key) {
    return error(404, "NoSuchKey", "no object under this key", key);
  }

  static error precondition_failed(const std::string& key, const std::string& why) {
    return error(412, "PreconditionFailed", why, key);
  }

  // Puts the written temporary `temp` in place under `path` as the options allow, durably;
  // returns the new object's ETag.
  std::string commit(temporary_file& temp, const std::string& path, const std::string& key,
                     const put_options& options) const {
    stamp_mtime(temp, nullptr, key);
    sync_fd(temp.fd(), temp.path(), subject::store, key);
    if (options.if_none_match) {
      if (auto etag = create_with_link(temp, path, key)) return *etag;
    }
    std::string etag;
    {
      const unique_fd lock = lock_bucket(lock_path_, key);
      struct stat current {};
      bool exists = false;
      if (::lstat(path.c_str(), &current) == 0) {
        exists = S_ISREG(current.st_mode);
      } else if (errno != ENOENT && errno != ENOTDIR) {
        throw fs_error(errno, "stat " + quote_path(path), subject::object, key);
      }
      if (options.if_none_match && exists) {
        throw precondition_failed(key, "the object exists (if_none_match)");
      }
      if (!options.if_match.empty()) {
        if (!exists) throw precondition_failed(key, "no object to match (if_match)");
        if (etag_of(current) != unquote(options.if_match)) {
          throw precondition_failed(key, "the object's ETag is " + etag_of(current) + ", not " +
                                             unquote(options.if_match) + " (if_match)");
        }
      }
      struct stat written = stat_fd(temp.fd(), temp.path(), subject::store, key);
      if (exists && nanoseconds_of(written.st_mtim) <= nanoseconds_of(current.st_mtim)) {
        stamp_mtime(temp, &current.st_mtim, key);
        sync_fd(temp.fd(), temp.path(), subject::store, key);
        written = stat_fd(temp.fd(), temp.path(), subject::store, key);
      }
      etag = etag_of(written);
      rename_into_place(temp.path(), path, key);
      temp.committed();
    }
    sync_directory(parent_of(path), subject::object, key);
    return etag;
  }

  // Create only: link(2) fails with EEXIST when the name is taken, atomically, whatever other
  // process writes. nullopt where the file system has no hard links: the caller then falls
  // back to the lock (every writer on such a file system does the same).
  std::optional<std::string> create_with_link(temporary_file& temp, const std::string& path,
                                              const std::string& key) const {
    const std::string etag = etag_of(stat_fd(temp.fd(), temp.path(), subject::store, key));
    for (int attempt = 0;; ++attempt) {
      if (::link(temp.path().c_str(), path.c_str()) == 0) break;
      const int err = errno;
      if (err == EEXIST) {
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
          throw fs_error(EISDIR, "link to " + quote_path(path), subject::object, key);
        }
        throw precondition_failed(key, "the object exists (if_none_match)");
      }
      if (err == ENOENT && attempt < max_commit_attempts) {
        make_directories(parent_of(path), subject::object, key);
        continue;
      }
      // EPERM is how vfat and some FUSE file systems say "no hard links here". A real
      // permission problem fails the rename of the fallback as well.
      if (err == EPERM || err == EOPNOTSUPP || err == ENOSYS || err == EMLINK) return std::nullopt;
      throw fs_error(err, "link to " + quote_path(path), subject::object, key);
    }
    // The temporary name goes with `temp`; the object keeps the inode.
    sync_directory(parent_of(path), subject::object, key);
    return etag;
  }

  // Renames `from` over `path`, creating missing parent directories and trying again when they
  // are missing (never made, or pruned by a concurrent remove).
  void rename_into_place(const std::string& from, const std::string& path,
                         const std::string& key) const {
    for (int attempt = 0;; ++attempt) {
      if (::rename(from.c_str(), path.c_str()) == 0) return;
      const int err = errno;
      if (err == ENOENT && attempt < max_commit_attempts) {
        make_directories(parent_of(path), subject::object, key);
        continue;
      }
      throw fs_error(err, "rename " + quote_path(from) + " to " + quote_path(path), subject::object,
                     key);
    }
  }

  // Removes the object at `path` and the directories it leaves empty, up to the bucket
  // directory; the caller holds the bucket lock. Returns the directory whose entries changed.
  std::optional<std::string> remove_locked(const std::string& path, const std::string& key) const {
    if (::unlink(path.c_str()) != 0) {
      const int err = errno;
      if (err == ENOENT || err == ENOTDIR || err == EISDIR) return std::nullopt;  // no object
      throw fs_error(err, "remove " + quote_path(path), subject::object, key);
    }
    std::string dir = parent_of(path);
    while (dir.size() > bucket_dir_.size() && ::rmdir(dir.c_str()) == 0) dir = parent_of(dir);
    return dir;
  }

  // Best effort: temporaries that a crash left behind.
  void remove_stale_temporaries() const {
    dir_handle dir(::opendir(private_dir_.c_str()));
    if (!dir) return;
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    const auto limit = std::chrono::duration_cast<std::chrono::seconds>(stale_temporary_age);
    while (const dirent* entry = ::readdir(dir.get())) {
      const std::string_view name = entry->d_name;
      if (name == "." || name == ".." || name == lock_file_name) continue;
      struct stat st {};
      if (::fstatat(::dirfd(dir.get()), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (S_ISREG(st.st_mode) && st.st_mtim.tv_sec + limit.count() < now.tv_sec) {
        ::unlinkat(::dirfd(dir.get()), entry->d_name, 0);
      }
    }
  }

  const std::string bucket_dir_;   // <root>/<bucket>
  const std::string private_dir_;  // <root>/<bucket>/.sm-tmp
  const std::string lock_path_;    // <root>/<bucket>/.sm-tmp/lock
  const std::string key_prefix_;
  const bool own_thread_;  // store_config::own_thread

  // Every call above runs its blocking part through here: on the shared worker, or on a thread
  // of its own for a store that must not queue behind bulk work (the lease's).
  template <class F>
  asio::awaitable<std::invoke_result_t<F&>> blocking(F work) const {
    return run_blocking(own_thread_, std::move(work));
  }
};

// Whole segments of key_prefix must be valid path segments; the last, partial one joins the
// key's first segment and is checked with every key.
void validate_config(const std::filesystem::path& root, const store_config& config) {
  if (!root.is_absolute()) {
    throw std::invalid_argument("file store root must be an absolute path: " + root.string());
  }
  const std::string& bucket = config.bucket;
  if (bucket.empty() || bucket == "." || bucket == ".." ||
      bucket.find_first_of(std::string("/\0", 2)) != std::string::npos ||
      bucket.size() > max_segment_bytes) {
    throw std::invalid_argument("file store bucket must be one directory name: \"" + bucket + "\"");
  }
  const std::string& prefix = config.key_prefix;
  if (prefix.find('\0') != std::string::npos || prefix.size() >= max_key_bytes) {
    throw std::invalid_argument("file store key_prefix is unusable: \"" + prefix + "\"");
  }
  const auto slash = prefix.rfind('/');
  if (slash == 0) {
    throw std::invalid_argument("file store key_prefix must not start with \"/\": \"" + prefix +
                                "\"");
  }
  if (slash != std::string::npos) {
    try {
      validate_key(prefix.substr(0, slash), prefix.substr(0, slash));
    } catch (const error& e) {
      throw std::invalid_argument("file store key_prefix \"" + prefix + "\" " + e.message());
    }
  }
}

}  // namespace

std::unique_ptr<object_store> make_file_store(asio::any_io_executor /*executor*/,
                                              std::filesystem::path root, store_config config) {
  // The executor is not kept: offload() resumes each call on its caller's own executor.
  validate_config(root, config);
  std::string root_dir = root.string();
  while (root_dir.size() > 1 && root_dir.back() == '/') root_dir.pop_back();
  if (root_dir == "/") root_dir.clear();
  return std::make_unique<file_store>(root_dir + "/" + config.bucket, std::move(config.key_prefix),
                                      config.own_thread);
}

}  // namespace sm::s3
