#include "fs/block_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <exception>
#include <list>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "async/gate.hpp"
#include "async/offload.hpp"
#include "base/fd.hpp"
#include "s3/object_store.hpp"
#include "uring/ring.hpp"

namespace sm::fs {

namespace {

using clock = std::chrono::steady_clock;

// Open files kept for reads, so that reading a block piece by piece (FUSE reads are 128 KiB)
// costs one open, not one a piece. Bounded: each holds an fd and, once its file is unlinked,
// the file's space.
constexpr std::size_t open_files_max = 64;

// A failed read of the store is tried again after this, doubling, within read_deadline.
constexpr std::chrono::milliseconds fetch_backoff_first{100};
constexpr std::chrono::milliseconds fetch_backoff_max{2000};

// A file that vanished between looking it up and opening it (an upload moved it from staging to
// the cache, or the cache evicted it) is looked up again, this many times at most.
constexpr int lookup_attempts = 8;

// A cached block's file is read ahead into the page cache at most once in this long.
constexpr std::chrono::seconds warm_interval{2};

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// Bytes a file of `length` bytes takes on disk, before it is written (4 KiB blocks): what the
// cache reserves for a fetch, corrected to st_blocks once the file is there.
std::uint64_t disk_estimate(std::uint64_t length) { return (length + 4095) / 4096 * 4096; }

// Wakes every coroutine waiting on it (a condition variable for one thread). A waiter re-checks
// its condition after every wake-up.
class wakeup {
 public:
  explicit wakeup(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  // Until notify() or `deadline`.
  asio::awaitable<void> wait(clock::time_point deadline) {
    auto timer = std::make_shared<asio::steady_timer>(executor_, deadline);
    timers_.push_back(timer);
    std::error_code ignored;
    co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    std::erase(timers_, timer);
  }
  void notify() {
    for (auto& t : timers_) t->cancel();
  }

 private:
  asio::any_io_executor executor_;
  std::vector<std::shared_ptr<asio::steady_timer>> timers_;
};

clock::time_point deadline_after(std::chrono::milliseconds d) {
  const auto now = clock::now();
  return d >= clock::time_point::max() - now ? clock::time_point::max() : now + d;
}

// What a scan of a folder found: block files with their bytes on disk and modification time.
struct found_file {
  std::string name;
  block_ref block;
  std::uint64_t size = 0, disk_bytes = 0;
  timespec mtime{};
};

// Lists the block files of `dir`, removing leftovers of writes a crash cut short (ours
// "*.tmp", the S3 client's "*.part", the file store's ".<name>.sm-tmp-*.tmp").
std::vector<found_file> scan(const std::filesystem::path& dir) {
  std::vector<found_file> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw_errno(errno, "open " + dir.string());
  const int dfd = ::dirfd(d);
  try {
    errno = 0;
    while (const dirent* e = ::readdir(d)) {
      const std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      if (ends_with(name, ".tmp") || ends_with(name, ".part")) {
        ::unlinkat(dfd, e->d_name, 0);
        continue;
      }
      found_file f;
      if (!parse_block_file_name(name, f.block)) continue;
      struct stat st {};
      if (::fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
        continue;
      }
      f.name = std::string(name);
      f.size = static_cast<std::uint64_t>(st.st_size);
      f.disk_bytes = static_cast<std::uint64_t>(st.st_blocks) * 512;
      f.mtime = st.st_mtim;
      out.push_back(std::move(f));
      errno = 0;
    }
    if (errno != 0) throw_errno(errno, "read " + dir.string());
  } catch (...) {
    ::closedir(d);
    throw;
  }
  ::closedir(d);
  return out;
}

void fsync_path(const std::filesystem::path& path, int flags) {
  unique_fd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return;  // uploaded and moved on since: in the store, durable there
    throw_errno(errno, "open " + path.string());
  }
  if (::fsync(fd.get()) != 0) throw_errno(errno, "fsync " + path.string());
}

}  // namespace

struct block_store::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor executor, s3::object_store& s, uring::ring& r,
       block_store_settings settings)
      : executor_(executor),
        store_(s),
        ring_(r),
        settings_(std::move(settings)),
        work_(executor),
        progress_(executor),
        stopping_(executor),
        sync_done_(executor) {}

  // --- state (executor-only) ---

  asio::any_io_executor executor_;
  s3::object_store& store_;
  uring::ring& ring_;
  const block_store_settings settings_;
  gate work_;       // uploads and fetches in flight
  wakeup progress_;  // an upload ended (well or not), or stop(): stage() and drain() look again
  wakeup stopping_;  // stop(): backoff waits end
  bool stopped_ = false;

  // Staging: blocks in staging/ not yet in the store. An entry exists from the rename of its
  // file into place until its file left staging/ (moved into the cache or removed).
  struct staged_block {
    block_ref block;
  };
  std::unordered_map<std::string, staged_block> staged_;
  std::unordered_set<std::string> being_staged_;  // written now, not renamed into place yet
  std::deque<std::string> upload_queue_;           // names in staged_, not being uploaded
  std::uint64_t staging_bytes_ = 0;               // staged_ and being_staged_
  unsigned uploading_ = 0;
  bool store_failing_ = false;  // the last upload attempt failed (retryably): no progress
  std::unordered_set<std::string> unsynced_;  // staged since the last sync(), still staged
  bool syncing_ = false;
  wakeup sync_done_;

  // The cache: cache/<name>, bytes on disk each, least recently used at the back of lru_. An
  // entry being read is pinned and never evicted.
  struct cached_block {
    std::uint64_t disk_bytes = 0;
    unsigned pins = 0;
    std::list<std::string>::iterator lru;
  };
  std::unordered_map<std::string, std::shared_ptr<cached_block>> cache_;
  std::list<std::string> lru_;
  std::uint64_t cache_bytes_ = 0;
  std::uint64_t reserved_bytes_ = 0;  // promised to fetches in flight

  // A fetch in flight, shared by every reader of the block and a prefetch. `done` once the
  // block's bytes are in `data` (or it failed): readers are served from memory while its cache
  // file is written; the entry leaves fetching_ once that file is in place (or not admitted).
  struct fetch_state {
    explicit fetch_state(asio::any_io_executor e) : done_signal(std::move(e)) {}
    bool done = false;
    std::exception_ptr failure;
    std::shared_ptr<const std::string> data;  // block.length bytes, set when done and fine
    wakeup done_signal;
  };
  std::unordered_map<std::string, std::shared_ptr<fetch_state>> fetching_;
  std::unordered_map<std::string, unsigned> removing_;  // unlinks queued, not done yet
  unsigned prefetches_ = 0;
  std::unordered_map<std::string, clock::time_point> warmed_;  // cached blocks warm() asked for

  // Open files by block name (the same inode in staging/ or cache/: a move keeps it).
  struct open_file {
    std::shared_ptr<unique_fd> fd;
    std::list<std::string>::iterator lru;
  };
  std::unordered_map<std::string, open_file> open_files_;
  std::list<std::string> open_lru_;

  block_store_stats stats_;
  bool failing_ = false;  // last_error is set by a store failure not yet followed by a success

  std::filesystem::path staging_path(const std::string& name) const {
    return settings_.staging_dir / name;
  }
  std::filesystem::path cache_path(const std::string& name) const {
    return settings_.cache_dir / name;
  }

  void record_failure(std::string what) {
    stats_.last_error = std::move(what);
    failing_ = true;
  }
  void record_success() {
    if (failing_) stats_.last_error.clear();
    failing_ = false;
  }

  // --- open files ---

  void forget_open_file(const std::string& name) {
    auto it = open_files_.find(name);
    if (it == open_files_.end()) return;
    open_lru_.erase(it->second.lru);
    open_files_.erase(it);
  }

  void remember_open_file(const std::string& name, std::shared_ptr<unique_fd> fd) {
    forget_open_file(name);
    open_lru_.push_front(name);
    open_files_.emplace(name, open_file{std::move(fd), open_lru_.begin()});
    while (open_files_.size() > open_files_max) {
      open_files_.erase(open_lru_.back());
      open_lru_.pop_back();
    }
  }

  // The open file of block `name` at `path`; nullptr when it is not there.
  asio::awaitable<std::shared_ptr<unique_fd>> open_block(const std::string& name,
                                                         std::filesystem::path path) {
    if (auto it = open_files_.find(name); it != open_files_.end()) {
      open_lru_.splice(open_lru_.begin(), open_lru_, it->second.lru);
      co_return it->second.fd;
    }
    int err = 0;
    auto fd = std::make_shared<unique_fd>();
    co_await offload_files([&] {
      fd->reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!*fd) err = errno;
    });
    if (err == ENOENT) co_return nullptr;
    if (err != 0) throw_errno(err, "open " + path.string());
    remember_open_file(name, fd);
    co_return fd;
  }

  asio::awaitable<void> read_fully(int fd, std::uint64_t offset, std::span<char> out) {
    for (std::size_t done = 0; done < out.size();) {
      const std::size_t n =
          co_await ring_.read(fd, out.data() + done, out.size() - done, offset + done);
      if (n == 0) throw std::system_error(EIO, std::generic_category(), "block file too short");
      done += n;
    }
  }

  // --- the cache's index ---

  void cache_insert(const std::string& name, std::uint64_t disk_bytes) {
    if (auto it = cache_.find(name); it != cache_.end()) {
      cache_bytes_ -= it->second->disk_bytes;
      it->second->disk_bytes = disk_bytes;
      cache_bytes_ += disk_bytes;
      lru_.splice(lru_.begin(), lru_, it->second->lru);
      return;
    }
    lru_.push_front(name);
    auto entry = std::make_shared<cached_block>();
    entry->disk_bytes = disk_bytes;
    entry->lru = lru_.begin();
    cache_.emplace(name, std::move(entry));
    cache_bytes_ += disk_bytes;
  }

  void cache_forget(const std::string& name) {
    auto it = cache_.find(name);
    if (it == cache_.end()) return;
    cache_bytes_ -= it->second->disk_bytes;
    lru_.erase(it->second->lru);
    cache_.erase(it);
    forget_open_file(name);
  }

  // Unlinks `paths` off the executor; `names` are marked as being removed until then, so that
  // no fetch writes a new file under a name whose old one is still to be unlinked.
  void remove_files(std::vector<std::string> names, std::vector<std::filesystem::path> paths) {
    if (paths.empty()) return;
    for (const auto& n : names) ++removing_[n];
    asio::co_spawn(
        executor_,
        [](std::shared_ptr<impl> self, std::vector<std::string> names,
           std::vector<std::filesystem::path> paths) -> asio::awaitable<void> {
          try {
            co_await offload_files([&] {
              for (const auto& p : paths) ::unlink(p.c_str());
            });
          } catch (...) {
          }
          for (const auto& n : names) {
            if (auto it = self->removing_.find(n); it != self->removing_.end() && --it->second == 0) {
              self->removing_.erase(it);
            }
          }
          self->progress_.notify();
        }(shared_from_this(), std::move(names), std::move(paths)),
        asio::detached);
  }

  // Evicts unpinned cached blocks, least recently used first, until `bytes` are freed twice
  // over or none is left, and waits until their files are gone. False when nothing was evicted.
  asio::awaitable<bool> free_disk_from_cache(std::uint64_t bytes) {
    std::vector<std::string> victims;
    std::vector<std::filesystem::path> paths;
    std::uint64_t freed = 0;
    for (auto it = lru_.end(); it != lru_.begin() && freed < 2 * bytes;) {
      --it;
      if (cache_.at(*it)->pins > 0) continue;
      freed += cache_.at(*it)->disk_bytes;
      victims.push_back(*it);
      paths.push_back(cache_path(*it));
      ++it;
      cache_forget(victims.back());
    }
    if (victims.empty()) co_return false;
    remove_files(victims, std::move(paths));
    while (!removing_.empty()) co_await progress_.wait(clock::time_point::max());
    co_return true;
  }

  // Evicts the least recently used unpinned blocks until `need` more bytes fit under
  // cache_size (counting the reservations of fetches in flight). False when they cannot.
  bool make_room(std::uint64_t need) {
    if (need > settings_.cache_size) return false;
    std::vector<std::string> victims;
    std::vector<std::filesystem::path> paths;
    auto it = lru_.end();
    while (cache_bytes_ + reserved_bytes_ + need > settings_.cache_size && it != lru_.begin()) {
      --it;
      if (cache_.at(*it)->pins > 0) continue;
      victims.push_back(*it);
      paths.push_back(cache_path(*it));
      ++it;  // the node goes: continue from its successor
      cache_forget(victims.back());
    }
    remove_files(victims, std::move(paths));
    return cache_bytes_ + reserved_bytes_ + need <= settings_.cache_size;
  }

  // --- uploads ---

  void pump_uploads() {
    while (!stopped_ && uploading_ < std::max(1u, settings_.upload_concurrency) &&
           !upload_queue_.empty()) {
      std::string name = std::move(upload_queue_.front());
      upload_queue_.pop_front();
      if (!staged_.contains(name)) continue;
      ++uploading_;
      stats_.uploads_in_flight = uploading_;
      asio::co_spawn(executor_, upload(shared_from_this(), std::move(name)), asio::detached);
    }
  }

  asio::awaitable<void> sleep_unless_stopped(std::chrono::milliseconds d) {
    if (!stopped_) co_await stopping_.wait(deadline_after(d));
  }

  static asio::awaitable<void> upload(std::shared_ptr<impl> self, std::string name) {
    try {
      co_await self->upload_one(name);
    } catch (const std::exception& e) {
      // Not expected (upload_one handles the store's and the disk's failures); the block stays
      // staged for the next start rather than the slot being lost.
      self->record_failure(std::string("upload ") + name + ": " + e.what());
    }
    --self->uploading_;
    self->stats_.uploads_in_flight = self->uploading_;
    self->progress_.notify();
    self->pump_uploads();
  }

  // Puts one staged block until it is up, the store refuses it for good, or stop().
  asio::awaitable<void> upload_one(const std::string& name) {
    auto pass = work_.enter();
    if (!pass) co_return;
    const block_ref block = staged_.at(name).block;
    const std::string key = block_key(block);
    std::chrono::milliseconds backoff = settings_.upload_backoff_first;
    for (;;) {
      if (work_.cancelled()) {
        upload_queue_.push_front(name);  // stays staged
        co_return;
      }
      std::string failure;
      try {
        co_await store_.put_file(key, staging_path(name));
        break;
      } catch (const std::exception& e) {
        failure = "upload " + key + ": " + e.what();
      }
      // Every failure is tried again, after a backoff of up to upload_backoff_max, even one
      // the store calls final: a refusal for the lease (409 LeaseNotHeld) lasts only until a
      // renewal gets through, and a lost lease stops the component, and this store with it.
      record_failure(std::move(failure));
      store_failing_ = true;
      progress_.notify();
      co_await sleep_unless_stopped(backoff);
      backoff = std::min(backoff * 2, settings_.upload_backoff_max);
    }
    store_failing_ = false;
    record_success();
    ++stats_.uploaded_blocks;
    stats_.uploaded_bytes += block.length;
    co_await move_to_cache(name, block);
  }

  // The uploaded block leaves staging: into the cache when it can be admitted, else removed.
  asio::awaitable<void> move_to_cache(const std::string& name, const block_ref& block) {
    const auto from = staging_path(name), to = cache_path(name);
    std::uint64_t disk_bytes = disk_estimate(block.length);
    try {
      // Not synced here: an fsync a block would queue every upload behind the disk. After a
      // power cut open() drops a cache file whose size is not its block's length (the length
      // is in its name), which is what a rename that outran its data leaves on ext4.
      co_await offload_files([&] {
        struct stat st {};
        if (::stat(from.c_str(), &st) == 0) disk_bytes = std::uint64_t(st.st_blocks) * 512;
      });
      bool moved = false;
      if (!cache_.contains(name) && !removing_.contains(name) && make_room(disk_bytes)) {
        // Counted before the rename so that no other admission takes the room meanwhile.
        reserved_bytes_ += disk_bytes;
        int err = 0;
        co_await offload_files([&] {
          if (::rename(from.c_str(), to.c_str()) != 0) err = errno;
        });
        reserved_bytes_ -= disk_bytes;
        if (err == 0) {
          cache_insert(name, disk_bytes);
          moved = true;
        }
      }
      if (!moved) {
        forget_open_file(name);
        co_await offload_files([&] { ::unlink(from.c_str()); });
      }
    } catch (const std::exception& e) {
      record_failure(std::string("move ") + from.string() + ": " + e.what());
    }
    staged_.erase(name);
    unsynced_.erase(name);
    staging_bytes_ -= block.length;
    stats_.staging_bytes = staging_bytes_;
    stats_.staging_blocks = staged_.size();
  }

  // --- fetches ---

  // Starts fetching `block` whole into the cache, its room reserved; the caller made room.
  std::shared_ptr<fetch_state> start_fetch(const std::string& name, const block_ref& block,
                                           std::uint64_t reserved) {
    auto state = std::make_shared<fetch_state>(executor_);
    fetching_.emplace(name, state);
    reserved_bytes_ += reserved;
    asio::co_spawn(executor_, fetch(shared_from_this(), name, block, reserved, state),
                   asio::detached);
    return state;
  }

  static asio::awaitable<void> fetch(std::shared_ptr<impl> self, std::string name,
                                     block_ref block, std::uint64_t reserved,
                                     std::shared_ptr<fetch_state> state) {
    std::shared_ptr<const std::string> data;
    try {
      data = co_await self->fetch_into_memory(block);
    } catch (...) {
      state->failure = std::current_exception();
    }
    // The waiting readers are served now, from memory; the cache file follows.
    state->data = data;
    state->done = true;
    state->done_signal.notify();
    if (data) {
      try {
        co_await self->write_cache_file(name, block, reserved, *data);
      } catch (const std::exception& e) {
        // Only a copy: the block is read from the store again next time.
        self->record_failure("cache " + name + ": " + e.what());
      }
    }
    self->reserved_bytes_ -= reserved;
    self->fetching_.erase(name);
  }

  // One GET of the whole block (no HEAD: its length is in its name), into memory.
  asio::awaitable<std::shared_ptr<const std::string>> fetch_into_memory(const block_ref& block) {
    auto pass = work_.enter();
    if (!pass) throw std::system_error(EIO, std::generic_category(), "block store stopped");
    const auto deadline = deadline_after(settings_.read_deadline);
    const std::string key = block_key(block);
    std::shared_ptr<const std::string> out;
    co_await with_deadline(deadline, key, [&]() -> asio::awaitable<void> {
      std::string body = co_await store_.get(key);
      if (body.size() != block.length) {
        throw s3::error(500, "InternalError",
                        "the object is " + std::to_string(body.size()) + " bytes, not " +
                            std::to_string(block.length),
                        key);
      }
      out = std::make_shared<const std::string>(std::move(body));
    });
    ++stats_.downloaded_blocks;
    stats_.downloaded_bytes += block.length;
    co_return out;
  }

  // Writes a fetched block to cache/ as "<name>.tmp", renamed into place, on the filesystem's
  // lane. Not synced: a cache file is only a copy, and open() drops one whose size is not its
  // block's length (what a power cut after a rename that outran its data leaves).
  asio::awaitable<void> write_cache_file(const std::string& name, const block_ref& block,
                                         std::uint64_t reserved, const std::string& data) {
    auto pass = work_.enter();
    if (!pass) co_return;
    // An eviction of an older file of this name must land before the new one does.
    while (removing_.contains(name) && !stopped_) co_await progress_.wait(clock::time_point::max());
    if (stopped_ || cache_.contains(name)) co_return;
    const auto path = cache_path(name);
    const std::filesystem::path temp = path.string() + ".tmp";
    std::uint64_t disk_bytes = reserved;
    std::string failure;
    co_await offload_files([&] {
      unique_fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (!fd) {
        failure = "create " + temp.string() + ": " + std::generic_category().message(errno);
        return;
      }
      for (std::size_t done = 0; done < data.size();) {
        const ssize_t n = ::pwrite(fd.get(), data.data() + done, data.size() - done,
                                   static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          failure = "write " + temp.string() + ": " +
                    std::generic_category().message(n < 0 ? errno : EIO);
          ::unlink(temp.c_str());
          return;
        }
        done += static_cast<std::size_t>(n);
      }
      struct stat st {};
      if (::fstat(fd.get(), &st) == 0) disk_bytes = std::uint64_t(st.st_blocks) * 512;
      if (::rename(temp.c_str(), path.c_str()) != 0) {
        failure = "rename " + temp.string() + ": " + std::generic_category().message(errno);
        ::unlink(temp.c_str());
      }
    });
    if (!failure.empty()) throw std::runtime_error(failure);
    (void)block;
    cache_insert(name, disk_bytes);
    // The estimate may have been short: evict down to the limit again (this block is the most
    // recently used, so it goes last).
    reserved_bytes_ -= reserved;
    make_room(0);
    reserved_bytes_ += reserved;  // given back by fetch()
  }

  // Runs `attempt` until it succeeds, retrying store failures until `deadline`; a missing
  // object or the deadline is EIO (recorded in last_error).
  template <typename Attempt>
  asio::awaitable<void> with_deadline(clock::time_point deadline, const std::string& key,
                                      Attempt attempt) {
    std::chrono::milliseconds backoff = fetch_backoff_first;
    for (;;) {
      std::string failure;
      try {
        co_await attempt();
        record_success();
        co_return;
      } catch (const s3::error& e) {
        if (e.code() == "NoSuchKey" || e.status() == 404) {
          record_failure("block missing from the store: " + key);
          throw std::system_error(EIO, std::generic_category(),
                                  "block missing from the store: " + key);
        }
        failure = "read " + key + ": " + e.what();
      } catch (const std::exception& e) {
        failure = "read " + key + ": " + e.what();
      }
      record_failure(failure);
      if (stopped_ || clock::now() >= deadline) {
        throw std::system_error(EIO, std::generic_category(), failure);
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                               clock::now());
      co_await sleep_unless_stopped(std::min(backoff, left));
      backoff = std::min(backoff * 2, fetch_backoff_max);
    }
  }

  // Only the range, into memory: for a block the cache cannot admit.
  asio::awaitable<void> read_range_from_store(const block_ref& block, std::uint64_t offset,
                                              std::span<char> out) {
    auto pass = work_.enter();
    if (!pass) throw std::system_error(EIO, std::generic_category(), "block store stopped");
    const std::string key = block_key(block);
    co_await with_deadline(deadline_after(settings_.read_deadline), key,
                           [&]() -> asio::awaitable<void> {
                             const std::string body = co_await store_.get(
                                 key, s3::byte_range(offset, offset + out.size() - 1));
                             if (body.size() != out.size()) {
                               throw s3::error(500, "InternalError", "short range", key);
                             }
                             std::copy(body.begin(), body.end(), out.begin());
                           });
    ++stats_.downloaded_blocks;
    stats_.downloaded_bytes += out.size();
  }

  // --- reads ---

  // Reads from a local file of the block: true when it was there.
  asio::awaitable<bool> read_local(const std::string& name, const block_ref& block,
                                   std::uint64_t offset, std::span<char> out, bool& counted) {
    if (being_staged_.contains(name)) co_return false;  // not in place yet
    if (staged_.contains(name)) {
      auto fd = co_await open_block(name, staging_path(name));
      if (!fd) co_return false;  // moved on meanwhile: look again
      co_await read_fully(fd->get(), offset, out);
      co_return true;
    }
    auto it = cache_.find(name);
    if (it == cache_.end()) co_return false;
    std::shared_ptr<cached_block> entry = it->second;
    lru_.splice(lru_.begin(), lru_, entry->lru);
    if (!counted) {
      ++stats_.cache_hits;
      counted = true;
    }
    ++entry->pins;
    struct unpin {
      std::shared_ptr<cached_block> e;
      ~unpin() { --e->pins; }
    } unpin_on_exit{entry};
    auto fd = co_await open_block(name, cache_path(name));
    if (!fd) {
      // Gone from the folder (removed behind our back): forget it, fetch it again.
      if (auto again = cache_.find(name); again != cache_.end() && again->second == entry) {
        cache_forget(name);
      }
      co_return false;
    }
    co_await read_fully(fd->get(), offset, out);
    (void)block;
    co_return true;
  }

  asio::awaitable<void> read(block_ref block, std::uint64_t offset, std::span<char> out) {
    if (offset + out.size() > block.length) {
      throw std::invalid_argument("read past the end of block " + block_file_name(block));
    }
    if (out.empty()) co_return;
    const std::string name = block_file_name(block);
    const auto deadline = deadline_after(settings_.read_deadline);
    auto pass = work_.enter();
    if (!pass) throw std::system_error(EIO, std::generic_category(), "block store stopped");
    bool counted = false;  // as a hit or a miss
    for (int attempt = 0;; ++attempt) {
      // Written right now: read once it is in place (stage() wakes progress_ either way).
      while (being_staged_.contains(name) && !stopped_) {
        co_await progress_.wait(clock::time_point::max());
      }
      if (co_await read_local(name, block, offset, out, counted)) co_return;
      if (attempt >= lookup_attempts || stopped_) {
        throw std::system_error(EIO, std::generic_category(),
                                "block " + name + " could not be read");
      }
      if (staged_.contains(name) || cache_.contains(name) || being_staged_.contains(name)) {
        continue;
      }
      if (!counted) {
        ++stats_.cache_misses;
        counted = true;
      }
      std::shared_ptr<fetch_state> state;
      if (auto it = fetching_.find(name); it != fetching_.end()) {
        state = it->second;
      } else {
        const std::uint64_t need = disk_estimate(block.length);
        if (!make_room(need)) {
          co_await read_range_from_store(block, offset, out);
          co_return;
        }
        state = start_fetch(name, block, need);
      }
      while (!state->done && clock::now() < deadline && !stopped_) {
        co_await state->done_signal.wait(deadline);
      }
      if (!state->done) {
        throw std::system_error(EIO, std::generic_category(),
                                "block " + name + " not fetched within the read deadline");
      }
      if (state->failure) std::rethrow_exception(state->failure);
      if (state->data) {
        std::copy_n(state->data->data() + offset, out.size(), out.begin());
        co_return;
      }
    }
  }

  // --- staging ---

  asio::awaitable<void> stage(block_ref block, std::span<const char> data) {
    if (data.size() != block.length) {
      throw std::invalid_argument("stage: " + std::to_string(data.size()) +
                                  " bytes for block " + block_file_name(block));
    }
    auto pass = work_.enter();
    if (!pass) throw std::system_error(EIO, std::generic_category(), "block store stopped");
    const std::string name = block_file_name(block);
    if (staged_.contains(name) || being_staged_.contains(name) || cache_.contains(name)) {
      co_return;
    }
    // Back-pressure: wait for uploads to free room while they make progress. An empty staging
    // area takes any block, so that a staging_size below block_size still moves.
    while (staging_bytes_ > 0 && staging_bytes_ + block.length > settings_.staging_size) {
      if (store_failing_ || stopped_) {
        throw std::system_error(ENOSPC, std::generic_category(),
                                "staging is full and the store is not taking uploads");
      }
      co_await progress_.wait(clock::time_point::max());
    }
    if (staged_.contains(name) || being_staged_.contains(name) || cache_.contains(name)) {
      co_return;
    }
    being_staged_.insert(name);
    staging_bytes_ += block.length;
    stats_.staging_bytes = staging_bytes_;
    bool placed = false;
    std::exception_ptr failure;
    bool disk_full = false;
    try {
      co_await write_staged(name, data);
      placed = true;
    } catch (const std::system_error& e) {
      disk_full = e.code().value() == ENOSPC;
      failure = std::current_exception();
    } catch (...) {
      failure = std::current_exception();
    }
    // The cache is only a copy of what the store has: on a full disk it gives its room to
    // blocks that are nowhere else yet, and the write is tried once more.
    if (!placed && disk_full && co_await free_disk_from_cache(block.length)) {
      try {
        co_await write_staged(name, data);
        placed = true;
        failure = nullptr;
      } catch (...) {
        failure = std::current_exception();
      }
    }
    if (!placed) {
      being_staged_.erase(name);
      staging_bytes_ -= block.length;
      stats_.staging_bytes = staging_bytes_;
      progress_.notify();
      std::rethrow_exception(failure);
    }
    being_staged_.erase(name);
    if (placed) {
      staged_.emplace(name, staged_block{block});
      stats_.staging_blocks = staged_.size();
      unsynced_.insert(name);
      upload_queue_.push_back(name);
      progress_.notify();  // a reader waiting for the file to be in place
      pump_uploads();
    }
  }

  // "<name>.tmp", written whole, then renamed to <name>: a crash never leaves a partial file
  // under a block's name (open() removes the *.tmp leftovers).
  asio::awaitable<void> write_staged(const std::string& name, std::span<const char> data) {
    const auto final_path = staging_path(name);
    const std::filesystem::path temp = final_path.string() + ".tmp";
    auto fd = std::make_shared<unique_fd>();
    int err = 0;
    std::string step;
    // One trip to the filesystem's workers for the whole of it (create, write, rename): a small
    // file's block costs one thread hop, not three.
    co_await offload_files([&] {
      fd->reset(::open(temp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
      if (!*fd) {
        err = errno;
        step = "create " + temp.string();
        return;
      }
      for (std::size_t done = 0; done < data.size();) {
        const ssize_t n = ::pwrite(fd->get(), data.data() + done, data.size() - done,
                                   static_cast<off_t>(done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          err = n < 0 ? errno : EIO;
          step = "write " + temp.string();
          return;
        }
        done += static_cast<std::size_t>(n);
      }
      if (::rename(temp.c_str(), final_path.c_str()) != 0) {
        err = errno;
        step = "rename " + temp.string();
      }
    });
    std::exception_ptr failure;
    if (err != 0 && !*fd) {
      const std::string what = "stage " + name + ": " + step + ": " +
                               std::generic_category().message(err);
      record_failure(what);
      throw std::system_error(err == ENOSPC || err == EDQUOT ? ENOSPC : EIO,
                              std::generic_category(), what);
    }
    if (err != 0) failure = std::make_exception_ptr(std::system_error(err, std::generic_category(), step));
    if (failure) {
      fd.reset();
      co_await offload_files([&] { ::unlink(temp.c_str()); });
      bool full = false;
      std::string what = "stage " + name + ": ";
      try {
        std::rethrow_exception(failure);
      } catch (const std::system_error& e) {
        full = e.code() == std::errc::no_space_on_device ||
               e.code() == std::error_code(EDQUOT, std::generic_category());
        what += e.what();
      } catch (const std::exception& e) {
        what += e.what();
      }
      record_failure(what);
      throw std::system_error(full ? ENOSPC : EIO, std::generic_category(), what);
    }
    // Kept open: the block is often read back soon (by the writer's own reads).
    remember_open_file(name, std::move(fd));
  }

  asio::awaitable<void> sync() {
    // One sync at a time, so that a sync that returns covers every block staged before it
    // began, including those an earlier, still running sync took.
    while (syncing_) co_await sync_done_.wait(clock::time_point::max());
    syncing_ = true;
    std::vector<std::string> names;
    names.assign(unsynced_.begin(), unsynced_.end());
    unsynced_.clear();
    try {
      for (const auto& name : names) {
        if (!staged_.contains(name)) continue;  // up already
        const auto path = staging_path(name);
        co_await offload_files([&] { fsync_path(path, O_RDONLY); });
      }
      co_await offload_files([&] { fsync_path(settings_.staging_dir, O_RDONLY | O_DIRECTORY); });
    } catch (...) {
      // Not synced: the next sync tries them again.
      unsynced_.insert(names.begin(), names.end());
      syncing_ = false;
      sync_done_.notify();
      throw;
    }
    syncing_ = false;
    sync_done_.notify();
  }

  // --- start and stop ---

  asio::awaitable<void> open(std::function<bool(std::uint64_t)> keep) {
    std::vector<found_file> staged, cached;
    co_await offload_files([&] {
      std::filesystem::create_directories(settings_.staging_dir);
      std::filesystem::create_directories(settings_.cache_dir);
      staged = scan(settings_.staging_dir);
      cached = scan(settings_.cache_dir);
    });
    // Staged blocks: resumed, unless no slice refers to them any more or they are not whole (a
    // power cut after the rename but before the data reached the disk: never synced, so never
    // referenced by committed metadata).
    std::vector<std::filesystem::path> drop;
    for (const auto& f : staged) {
      if (f.size != f.block.length || (keep && !keep(f.block.slice))) {
        drop.push_back(staging_path(f.name));
        continue;
      }
      staged_.emplace(f.name, staged_block{f.block});
      staging_bytes_ += f.block.length;
      upload_queue_.push_back(f.name);
      unsynced_.insert(f.name);
    }
    // The cache: oldest modification first is least recently used (the best order a scan can
    // give: atime is not reliable under relatime/noatime).
    std::sort(cached.begin(), cached.end(), [](const found_file& a, const found_file& b) {
      return std::tie(a.mtime.tv_sec, a.mtime.tv_nsec) < std::tie(b.mtime.tv_sec, b.mtime.tv_nsec);
    });
    for (const auto& f : cached) {
      if (f.size != f.block.length || staged_.contains(f.name)) {
        drop.push_back(cache_path(f.name));
        continue;
      }
      cache_insert(f.name, f.disk_bytes);  // to the front: the newest ends most recent
    }
    if (!drop.empty()) {
      co_await offload_files([&] {
        for (const auto& p : drop) ::unlink(p.c_str());
      });
    }
    make_room(0);
    stats_.staging_bytes = staging_bytes_;
    stats_.staging_blocks = staged_.size();
    pump_uploads();
  }

  void prefetch(block_ref block) {
    try {
      if (stopped_) return;
      const std::string name = block_file_name(block);
      if (cache_.contains(name)) {
        warm(name);
        return;
      }
      if (staged_.contains(name) || being_staged_.contains(name) ||
          fetching_.contains(name) || prefetches_ >= std::max(1u, settings_.upload_concurrency)) {
        return;
      }
      const std::uint64_t need = disk_estimate(block.length);
      if (!make_room(need)) return;
      ++prefetches_;
      auto state = start_fetch(name, block, need);
      asio::co_spawn(
          executor_,
          [](std::shared_ptr<impl> self,
             std::shared_ptr<fetch_state> state) -> asio::awaitable<void> {
            while (!state->done) co_await state->done_signal.wait(clock::time_point::max());
            --self->prefetches_;
          }(shared_from_this(), std::move(state)),
          asio::detached);
    } catch (...) {
    }
  }

  // Readahead of a cached block: asks the kernel to read its file into the page cache now, in
  // the background, so that the reads to come find it there rather than each waiting for the
  // disk piece by piece. Once per block in warm_interval (readahead asks for the same blocks
  // again with every read).
  void warm(const std::string& name) {
    const auto now = clock::now();
    if (auto it = warmed_.find(name); it != warmed_.end() && now - it->second < warm_interval) {
      return;
    }
    if (warmed_.size() >= 4 * open_files_max) {
      std::erase_if(warmed_, [&](const auto& e) { return now - e.second >= warm_interval; });
    }
    warmed_[name] = now;
    asio::co_spawn(
        executor_,
        [](std::shared_ptr<impl> self, std::string name) -> asio::awaitable<void> {
          auto pass = self->work_.enter();
          if (!pass || !self->cache_.contains(name)) co_return;
          try {
            auto fd = co_await self->open_block(name, self->cache_path(name));
            if (!fd) co_return;
            co_await offload_files([&] { ::posix_fadvise(fd->get(), 0, 0, POSIX_FADV_WILLNEED); });
          } catch (...) {
            // Only a hint: the read itself reports what is wrong.
          }
        }(shared_from_this(), name),
        asio::detached);
  }

  asio::awaitable<bool> drain(std::chrono::milliseconds timeout) {
    const auto deadline = deadline_after(timeout);
    while (!staged_.empty() || !being_staged_.empty()) {
      if (stopped_ || clock::now() >= deadline) co_return false;
      co_await progress_.wait(deadline);
    }
    co_return true;
  }

  asio::awaitable<void> stop() {
    stopped_ = true;
    work_.cancel("the block store is stopping");
    stopping_.notify();
    progress_.notify();
    co_await work_.wait_idle(clock::duration::max());
    open_files_.clear();
    open_lru_.clear();
  }

  block_store_stats stats() const {
    block_store_stats s = stats_;
    s.staging_bytes = staging_bytes_;
    s.staging_blocks = staged_.size();
    s.cache_bytes = cache_bytes_;
    s.cache_limit = settings_.cache_size;
    s.uploads_in_flight = uploading_;
    s.fetches_in_flight = fetching_.size();
    return s;
  }
};

block_store::block_store(asio::any_io_executor executor, s3::object_store& store,
                         uring::ring& ring, block_store_settings settings)
    : impl_(std::make_shared<impl>(std::move(executor), store, ring, std::move(settings))) {}

block_store::~block_store() {
  // Work still running (stop() not awaited) holds the impl; tell it to end at its next step.
  impl_->stopped_ = true;
  impl_->work_.cancel("the block store is gone");
  impl_->stopping_.notify();
  impl_->progress_.notify();
}

asio::awaitable<void> block_store::open(std::function<bool(std::uint64_t slice)> keep) {
  return impl_->open(std::move(keep));
}

asio::awaitable<void> block_store::stage(block_ref block, std::span<const char> data) {
  return impl_->stage(block, data);
}

asio::awaitable<void> block_store::sync() { return impl_->sync(); }

asio::awaitable<void> block_store::read(block_ref block, std::uint64_t offset,
                                        std::span<char> out) {
  return impl_->read(block, offset, out);
}

void block_store::prefetch(block_ref block) { impl_->prefetch(block); }

asio::awaitable<bool> block_store::drain(std::chrono::milliseconds timeout) {
  return impl_->drain(timeout);
}

asio::awaitable<void> block_store::stop() { return impl_->stop(); }

block_store_stats block_store::stats() const { return impl_->stats(); }

}  // namespace sm::fs
