#define FUSE_USE_VERSION 34
#include "fs/filesystem.hpp"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>
#include <optional>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "async/gate.hpp"
#include "async/offload.hpp"
#include "base/fd.hpp"
#include "fs/block_store.hpp"
#include "fs/metadata.hpp"
#include "fs/slices.hpp"

namespace sm::fs {

namespace {

using clock = std::chrono::steady_clock;

// A first-come, first-served lock for coroutines on one executor (a file's writes, flushes and
// truncates run one at a time).
class async_lock {
 public:
  explicit async_lock(asio::any_io_executor ex) : wake_(ex) {
    wake_.expires_at(asio::steady_timer::time_point::max());
  }
  asio::awaitable<void> acquire() {
    ++waiting_;
    while (held_) {
      std::error_code ec;
      co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    --waiting_;
    held_ = true;
  }
  void release() {
    held_ = false;
    if (waiting_ > 0) wake_.cancel_one();
  }
  bool idle() const { return !held_ && waiting_ == 0; }
  bool held() const { return held_; }

 private:
  asio::steady_timer wake_;
  bool held_ = false;
  unsigned waiting_ = 0;
};

struct lock_guard {
  async_lock* lock;
  explicit lock_guard(async_lock& l) : lock(&l) {}
  lock_guard(lock_guard&& o) noexcept : lock(std::exchange(o.lock, nullptr)) {}
  ~lock_guard() {
    if (lock) lock->release();
  }
};

asio::awaitable<lock_guard> locked(async_lock& l) {
  co_await l.acquire();
  co_return lock_guard(l);
}

// A signal many coroutines can wait for; notify() wakes them all.
class signal {
 public:
  explicit signal(asio::any_io_executor ex) : timer_(ex) {
    timer_.expires_at(asio::steady_timer::time_point::max());
  }
  asio::awaitable<void> wait() {
    std::error_code ec;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  void notify() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

time_value now_time() {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return time_value{ts.tv_sec, static_cast<std::uint32_t>(ts.tv_nsec)};
}

int errno_of(const std::exception& e) {
  if (const auto* s = dynamic_cast<const std::system_error*>(&e)) {
    const int v = s->code().value();
    if (s->code().category() == std::generic_category() ||
        s->code().category() == std::system_category()) {
      return v == ENOSPC || v == EDQUOT ? ENOSPC : (v == EROFS ? EROFS : EIO);
    }
  }
  return EIO;
}

}  // namespace

// ---- the writer of one file ---------------------------------------------------------------

// One slice being written: a contiguous range of one chunk, buffered block by block. Shared with
// the background stagings of its full blocks.
// A block's bytes while they are written. Large writes get a whole block at once (from the pool
// of recycled ones: a fresh one costs a page fault and a zeroed page every 4 KiB); a small file
// grows a small buffer.
struct block_buffer {
  std::unique_ptr<char[]> data;
  std::size_t size = 0, capacity = 0;
  bool staging = false;  // its staging is under way: not to be staged again meanwhile
  bool empty() const { return size == 0; }
};

struct open_slice {
  std::uint64_t id = 0;
  std::uint32_t chunk = 0;
  std::uint32_t pos = 0;  // in the chunk
  std::uint32_t len = 0;
  std::vector<block_buffer> blocks;  // block i's bytes; emptied once staged
  unsigned staging = 0;             // block stagings in flight
  std::exception_ptr failed;        // the first staging failure
  clock::time_point touched;
  std::unique_ptr<signal> staged;   // notified when a staging ends
};

struct inode_state {
  explicit inode_state(asio::any_io_executor ex) : lock(ex) {}
  std::uint64_t lookups = 0;
  std::uint32_t opens = 0;
  bool unlinked = false;  // nlink 0: removed once neither open nor known to the kernel
  async_lock lock;
  std::vector<std::shared_ptr<open_slice>> slices;  // open ones, at most one a chunk
  std::uint64_t written_end = 0;     // the end of buffered writes (the size getattr shows)
  std::optional<time_value> written_at;  // the last buffered write (mtime getattr shows)
  bool dirty() const { return !slices.empty(); }
};

struct open_handle {
  inode_id ino = 0;
  std::uint64_t next_read = 0;  // where a sequential read continues
  std::uint32_t window = 0;     // readahead, in blocks
};

struct filesystem::impl : std::enable_shared_from_this<impl> {
  asio::any_io_executor executor;
  metadata& meta;
  block_store& blocks;
  filesystem_settings settings;
  std::uint32_t block_size;

  std::unordered_map<inode_id, std::unique_ptr<inode_state>> inodes;
  std::unordered_map<std::uint64_t, open_handle> handles;
  std::uint64_t next_handle = 1;

  std::uint64_t buffered = 0;  // bytes in open slices' blocks
  signal buffer_freed;
  // Whole-block buffers given back, for the next large write; emptied when writes go idle.
  static constexpr std::size_t pool_keep = 8;
  std::vector<std::unique_ptr<char[]>> free_blocks;
  clock::time_point last_write{};

  // Group commit: replies waiting for the commit of this turn.
  std::vector<std::function<void(int)>> after_commit;
  bool commit_posted = false;

  // Coroutines under way (requests and background work) each hold a pass: the session and what
  // they use are destroyed only once none is left. Never closed: a request after close() still
  // runs (and answers EROFS where it would write).
  gate work;
  gate::pass activity() { return std::move(*work.enter()); }

  bool initialized = false;
  signal initialized_signal;
  bool closed = false;
  asio::steady_timer idle_timer;
  filesystem_stats counters;

  impl(asio::any_io_executor ex, metadata& m, block_store& b, filesystem_settings s)
      : executor(ex),
        meta(m),
        blocks(b),
        settings(s),
        block_size(m.settings().block_size),
        buffer_freed(ex),
        work(ex),
        initialized_signal(ex),
        idle_timer(ex) {}

  template <auto Op>
  struct answering;

  static impl& of(fuse_req_t req) {
    return *static_cast<filesystem*>(fuse_req_userdata(req))->impl_;
  }

  // ---- bookkeeping --------------------------------------------------------------------------

  inode_state& state(inode_id ino) {
    auto it = inodes.find(ino);
    if (it == inodes.end()) {
      it = inodes.emplace(ino, std::make_unique<inode_state>(executor)).first;
    }
    return *it->second;
  }
  inode_state* find_state(inode_id ino) {
    auto it = inodes.find(ino);
    return it == inodes.end() ? nullptr : it->second.get();
  }

  // Forgets what we keep of an inode nobody uses, and removes it once unlinked.
  void maybe_drop(inode_id ino) {
    inode_state* s = find_state(ino);
    if (!s || s->lookups > 0 || s->opens > 0 || !s->lock.idle() || s->dirty()) return;
    if (s->unlinked) {
      try {
        meta.remove_inode(ino);
        schedule_commit();
      } catch (const std::exception& e) {
        note_error("remove inode", ino, errno_of(e));
      }
    }
    inodes.erase(ino);
  }

  void note_error(std::string_view op, std::uint64_t ino, int err) {
    ++counters.errors;
    counters.last_error = std::string(op) + " inode " + std::to_string(ino) + ": " +
                          std::error_code(err, std::generic_category()).message();
    if (settings.report_error) settings.report_error(counters.last_error);
  }

  // Replies once this turn's commit is done: `reply(0)`, or `reply(errno)` when it failed.
  void when_committed(std::function<void(int)> reply) {
    after_commit.push_back(std::move(reply));
    schedule_commit();
  }
  void schedule_commit() {
    if (commit_posted) return;
    commit_posted = true;
    asio::post(executor, [self = shared_from_this()] { self->run_commit(); });
  }
  void run_commit() {
    commit_posted = false;
    int err = 0;
    try {
      if (meta.in_transaction()) {
        meta.commit();
        ++counters.commits;
      }
    } catch (const std::exception& e) {
      err = errno_of(e);
      note_error("commit", 0, err);
    }
    auto replies = std::move(after_commit);
    after_commit.clear();
    for (auto& r : replies) r(err);
  }
  asio::awaitable<int> committed() {
    int result = -1;
    signal done(executor);
    when_committed([&](int err) {
      result = err;
      done.notify();
    });
    while (result < 0) co_await done.wait();
    co_return result;
  }

  // ---- attributes ---------------------------------------------------------------------------

  struct stat to_stat(const attributes& a) const {
    struct stat st{};
    st.st_ino = a.ino;
    st.st_mode = a.mode;
    st.st_nlink = a.nlink;
    st.st_uid = a.uid;
    st.st_gid = a.gid;
    st.st_rdev = a.rdev;
    st.st_size = static_cast<off_t>(a.size);
    st.st_blksize = S_ISREG(a.mode) ? 1 << 20 : 4096;
    st.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
    st.st_atim = {a.atime.sec, a.atime.nsec};
    st.st_mtim = {a.mtime.sec, a.mtime.nsec};
    st.st_ctim = {a.ctime.sec, a.ctime.nsec};
    return st;
  }
  // What the kernel should see: buffered writes count before they are committed.
  void overlay_writes(attributes& a) {
    if (const inode_state* s = find_state(a.ino)) {
      a.size = std::max(a.size, s->written_end);
      if (s->written_at) {
        a.mtime = *s->written_at;
        a.ctime = std::max(a.ctime, *s->written_at, [](const time_value& x, const time_value& y) {
          return x.sec < y.sec || (x.sec == y.sec && x.nsec < y.nsec);
        });
      }
    }
  }
  fuse_entry_param entry_of(const attributes& a) const {
    fuse_entry_param e{};
    e.ino = a.ino;
    e.generation = 1;
    e.attr = to_stat(a);
    e.attr_timeout = settings.attr_timeout;
    e.entry_timeout = settings.entry_timeout;
    return e;
  }
  // Replies with an entry, counting the kernel's new reference to it.
  void reply_entry(fuse_req_t req, const attributes& a) {
    fuse_entry_param e = entry_of(a);
    if (fuse_reply_entry(req, &e) == 0) ++state(a.ino).lookups;
  }
  void reply_error(fuse_req_t req, int err) {
    fuse_reply_err(req, err);
  }

  // ---- the write path -----------------------------------------------------------------------

  // Waits for room in the write buffer pool.
  asio::awaitable<void> room_for(std::size_t bytes) {
    while (buffered > 0 && buffered + bytes > settings.write_buffer) {
      co_await buffer_freed.wait();
    }
  }

  void give_back(block_buffer b) {
    if (b.capacity == block_size && free_blocks.size() < pool_keep) {
      free_blocks.push_back(std::move(b.data));
    }
  }
  std::unique_ptr<char[]> whole_block() {
    if (!free_blocks.empty()) {
      auto b = std::move(free_blocks.back());
      free_blocks.pop_back();
      return b;
    }
    return std::unique_ptr<char[]>(new char[block_size]);
  }
  // Room for `more` bytes after b.size (at most a block).
  void grow(block_buffer& b, std::size_t more) {
    const std::size_t need = b.size + more;
    if (need <= b.capacity) return;
    std::size_t capacity;
    std::unique_ptr<char[]> bigger;
    if (more >= (128u << 10) || need > block_size / 2) {
      capacity = block_size;
      bigger = whole_block();
    } else {
      capacity = std::min<std::size_t>(block_size, std::max<std::size_t>({need, b.capacity * 2,
                                                                          std::size_t(16) << 10}));
      bigger = capacity == block_size ? whole_block() : std::unique_ptr<char[]>(new char[capacity]);
    }
    if (b.size > 0) std::memcpy(bigger.get(), b.data.get(), b.size);
    give_back(std::move(b));
    b.data = std::move(bigger);
    b.capacity = capacity;
  }

  // Copies `data` onto the end of `slice` block by block; a block that fills is staged at once.
  void append_to_slice(const std::shared_ptr<open_slice>& slice, std::string_view data) {
    slice->touched = clock::now();
    last_write = slice->touched;
    std::size_t done = 0;
    while (done < data.size()) {
      const std::uint32_t at = slice->len;  // in the slice
      const std::uint32_t index = at / block_size;
      const std::uint32_t in_block = at % block_size;
      const std::size_t take = std::min<std::size_t>(data.size() - done, block_size - in_block);
      if (slice->blocks.size() <= index) slice->blocks.resize(index + 1);
      block_buffer& b = slice->blocks[index];
      grow(b, take);
      std::memcpy(b.data.get() + b.size, data.data() + done, take);
      b.size += take;
      buffered += take;
      slice->len += static_cast<std::uint32_t>(take);
      done += take;
      if (b.size == block_size) stage_in_background(slice, index);
    }
  }

  std::shared_ptr<open_slice> new_slice(inode_state& s, std::uint32_t chunk,
                                        std::uint32_t in_chunk) {
    auto slice = std::make_shared<open_slice>();
    slice->id = meta.new_slice_id();
    slice->chunk = chunk;
    slice->pos = in_chunk;
    slice->staged = std::make_unique<signal>(executor);
    s.slices.push_back(slice);
    return slice;
  }
  std::shared_ptr<open_slice> slice_of(inode_state& s, std::uint32_t chunk) {
    for (auto& sl : s.slices) {
      if (sl->chunk == chunk) return sl;
    }
    return nullptr;
  }

  // A write that needs no waiting (it continues its slice or starts one, fits the pool, stays in
  // one chunk, and nothing failed): done at once, with no copy of the request's bytes and no
  // coroutine. False: take the general path.
  bool write_now(inode_id ino, inode_state& s, std::uint64_t offset, std::string_view data) {
    if (!s.lock.idle() || data.empty()) return false;
    const auto chunk = static_cast<std::uint32_t>(offset / chunk_size);
    const auto in_chunk = static_cast<std::uint32_t>(offset % chunk_size);
    if (std::uint64_t(in_chunk) + data.size() > chunk_size) return false;
    if (buffered > 0 && buffered + data.size() > settings.write_buffer) return false;
    std::shared_ptr<open_slice> slice = slice_of(s, chunk);
    if (slice && (slice->failed || slice->pos + slice->len != in_chunk)) return false;
    if (!slice) slice = new_slice(s, chunk, in_chunk);
    (void)ino;
    append_to_slice(slice, data);
    s.written_end = std::max(s.written_end, offset + data.size());
    s.written_at = now_time();
    return true;
  }

  // Stages block `index` of `slice` in the background; its buffer is freed when done.
  void stage_in_background(const std::shared_ptr<open_slice>& slice, std::uint32_t index) {
    ++slice->staging;
    slice->blocks[index].staging = true;
    asio::co_spawn(
        executor,
        [self = shared_from_this(), slice, index]() -> asio::awaitable<void> {
          const auto busy = self->activity();
          block_buffer& data = slice->blocks[index];
          const block_ref ref{slice->id, index, static_cast<std::uint32_t>(data.size)};
          bool staged = false;
          try {
            co_await self->blocks.stage(ref, std::span<const char>(data.data.get(), data.size));
            staged = true;
          } catch (...) {
            if (!slice->failed) slice->failed = std::current_exception();
          }
          // The bytes stay until they are staged: a failed staging loses nothing, the next
          // finish tries again.
          block_buffer& done = slice->blocks[index];
          done.staging = false;
          if (staged) {
            self->buffered -= done.size;
            self->give_back(std::move(done));
            done = block_buffer{};
            self->buffer_freed.notify();
          }
          --slice->staging;
          slice->staged->notify();
        },
        asio::detached);
  }

  // Finishes one open slice: stages what is not staged yet, waits for every staging, appends
  // its record. Under the inode's lock.
  asio::awaitable<void> finish(inode_id ino, inode_state& s, std::shared_ptr<open_slice> slice) {
    s.slices.erase(std::remove(s.slices.begin(), s.slices.end(), slice), s.slices.end());
    slice->failed = nullptr;
    for (std::uint32_t i = 0; i < slice->blocks.size(); ++i) {
      if (!slice->blocks[i].empty() && !slice->blocks[i].staging) stage_in_background(slice, i);
    }
    while (slice->staging > 0) co_await slice->staged->wait();
    if (slice->failed) {
      // Back on the file, its bytes with it: every later flush, fsync and close tries again
      // and reports the error until the blocks are staged.
      s.slices.insert(s.slices.begin(), slice);
      std::rethrow_exception(slice->failed);
    }
    if (slice->len == 0) co_return;
    const slice_record record{slice->pos, slice->id, slice->len, 0, slice->len};
    const std::uint64_t end = std::uint64_t(slice->chunk) * chunk_size + slice->pos + slice->len;
    const int err = meta.append_slices(ino, slice->chunk, {record}, end);
    if (err != 0) throw std::system_error(err, std::generic_category(), "append slices");
    // Many small writes make many records, and every read paints them all: past a threshold
    // the chunk is compacted in the background.
    const std::size_t records = meta.chunk(ino, slice->chunk).size();
    if (records >= compact_threshold && records % compact_threshold == 0) {
      asio::co_spawn(executor, compact(ino, slice->chunk), asio::detached);
    }
  }

  // Rewrites a fragmented chunk: each run of adjacent visible records becomes one new slice
  // (holes stay holes), swapped in only if the chunk did not change meanwhile (it cannot: the
  // file's lock is held throughout). The old slices lose their references.
  static constexpr std::size_t compact_threshold = 100;
  asio::awaitable<void> compact(inode_id ino, std::uint32_t chunk) {
    auto self = shared_from_this();
    const auto busy = activity();
    try {
      inode_state& s = state(ino);
      auto guard = co_await locked(s.lock);
      co_await finish_all(ino, s);
      attributes a;
      if (meta.getattr(ino, a) != 0) co_return;
      const std::uint64_t chunk_start = std::uint64_t(chunk) * chunk_size;
      if (a.size <= chunk_start) co_return;
      const auto chunk_len =
          static_cast<std::uint32_t>(std::min<std::uint64_t>(chunk_size, a.size - chunk_start));
      const std::vector<slice_record> before = meta.chunk(ino, chunk);
      const std::vector<slice_record> shown = visible(before, chunk_len);
      std::vector<slice_record> after;
      for (std::size_t i = 0; i < shown.size();) {
        std::size_t j = i + 1;
        while (j < shown.size() && shown[j].pos == shown[j - 1].pos + shown[j - 1].len) ++j;
        if (j - i == 1) {
          after.push_back(shown[i]);
        } else {
          const std::uint32_t pos = shown[i].pos;
          const std::uint32_t len = shown[j - 1].pos + shown[j - 1].len - pos;
          std::string data;
          co_await read_range(ino, chunk_start + pos, len, data);
          data.resize(len, '\0');
          const std::uint64_t id = meta.new_slice_id();
          for (const block_ref& b : blocks_of(id, len, block_size)) {
            co_await blocks.stage(
                b, std::span<const char>(data.data() + std::uint64_t(b.index) * block_size,
                                         b.length));
          }
          after.push_back(slice_record{pos, id, len, 0, len});
        }
        i = j;
      }
      // The old slices may have been fsynced: the new blocks are made as durable before
      // the records that drop the old ones can be committed (and synced by anyone).
      if (after.size() < before.size()) {
        co_await blocks.sync();
        meta.replace_chunk(ino, chunk, before, after);
      }
      schedule_commit();
    } catch (const std::exception& e) {
      note_error("compact", ino, errno_of(e));
    }
    maybe_drop(ino);
  }

  asio::awaitable<void> finish_all(inode_id ino, inode_state& s) {
    std::exception_ptr first;
    std::vector<std::shared_ptr<open_slice>> pending = s.slices;
    for (auto& slice : pending) {
      try {
        co_await finish(ino, s, slice);
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first) std::rethrow_exception(first);
    s.written_end = 0;
    s.written_at.reset();
  }

  // Appends `data` at `offset`, under the inode's lock.
  asio::awaitable<void> write_locked(inode_id ino, inode_state& s, std::uint64_t offset,
                                     std::string_view data) {
    while (!data.empty()) {
      const auto chunk = static_cast<std::uint32_t>(offset / chunk_size);
      const auto in_chunk = static_cast<std::uint32_t>(offset % chunk_size);
      const std::size_t n = std::min<std::uint64_t>(data.size(), chunk_size - in_chunk);
      if (buffered > 0 && buffered + n > settings.write_buffer) {
        // The pool is full: this file's partial blocks go to staging first, so that writers
        // that all wait for room never hold it all in blocks nobody finishes.
        co_await finish_all(ino, s);
        co_await room_for(n);
      }
      std::shared_ptr<open_slice> slice = slice_of(s, chunk);
      if (slice && slice->pos + slice->len != in_chunk) {
        co_await finish(ino, s, slice);  // not a continuation: a new slice
        slice.reset();
      }
      if (!slice) slice = new_slice(s, chunk, in_chunk);
      append_to_slice(slice, data.substr(0, n));
      if (slice->failed) {
        auto failure = slice->failed;
        std::rethrow_exception(failure);
      }
      data.remove_prefix(n);
      offset += n;
      s.written_end = std::max(s.written_end, offset);
    }
    s.written_at = now_time();
  }

  // Finishes the inode's buffered slices (if any) under its lock; a read, truncate or copy then
  // sees everything written before it.
  asio::awaitable<void> settle(inode_id ino) {
    inode_state* s = find_state(ino);
    // A finish under way has taken its slices off the list before their records are in:
    // waiting for the lock is waiting for it (a read must not see the size from before).
    if (!s || (!s->dirty() && s->lock.idle())) co_return;
    auto guard = co_await locked(s->lock);
    co_await finish_all(ino, *s);
  }

  // ---- the read path ------------------------------------------------------------------------

  // Reads [offset, offset + size) of the file (clipped to its size) into `out`.
  asio::awaitable<void> read_range(inode_id ino, std::uint64_t offset, std::size_t size,
                                   std::string& out) {
    attributes a;
    if (const int err = meta.getattr(ino, a); err != 0) {
      throw std::system_error(err, std::generic_category(), "getattr");
    }
    if (offset >= a.size) co_return;
    size = static_cast<std::size_t>(std::min<std::uint64_t>(size, a.size - offset));
    out.resize(size);
    std::uint64_t at = offset;
    const std::uint64_t end = offset + size;
    while (at < end) {
      const auto chunk = static_cast<std::uint32_t>(at / chunk_size);
      const std::uint64_t chunk_start = std::uint64_t(chunk) * chunk_size;
      const auto chunk_len =
          static_cast<std::uint32_t>(std::min<std::uint64_t>(chunk_size, a.size - chunk_start));
      const std::vector<segment> map = paint(meta.chunk(ino, chunk), chunk_len);
      for (const segment& seg : map) {
        const std::uint64_t seg_start = chunk_start + seg.pos;
        const std::uint64_t seg_end = seg_start + seg.len;
        if (seg_end <= at || seg_start >= end) continue;
        const std::uint64_t from = std::max(seg_start, at);
        const std::uint64_t to = std::min(seg_end, end);
        char* dest = out.data() + (from - offset);
        if (seg.id == hole_slice) {
          std::memset(dest, 0, to - from);
          continue;
        }
        // Bytes [s_from, s_to) of the slice, block by block.
        std::uint64_t s_from = seg.off + (from - seg_start);
        const std::uint64_t s_to = s_from + (to - from);
        while (s_from < s_to) {
          const auto index = static_cast<std::uint32_t>(s_from / block_size);
          const std::uint64_t block_start = std::uint64_t(index) * block_size;
          const auto length = static_cast<std::uint32_t>(
              std::min<std::uint64_t>(block_size, seg.size - block_start));
          const std::uint64_t take = std::min<std::uint64_t>(s_to, block_start + length) - s_from;
          co_await blocks.read(block_ref{seg.id, index, length}, s_from - block_start,
                               std::span<char>(dest, take));
          dest += take;
          s_from += take;
        }
      }
      at = chunk_start + chunk_len;
      if (chunk_len == 0) break;
    }
  }

  // Starts fetching the blocks of [offset, offset + length) that are not local.
  void read_ahead(inode_id ino, std::uint64_t offset, std::uint64_t length) {
    attributes a;
    if (meta.getattr(ino, a) != 0 || offset >= a.size) return;
    const std::uint64_t end = std::min(a.size, offset + length);
    std::uint64_t at = offset;
    while (at < end) {
      const auto chunk = static_cast<std::uint32_t>(at / chunk_size);
      const std::uint64_t chunk_start = std::uint64_t(chunk) * chunk_size;
      const auto chunk_len =
          static_cast<std::uint32_t>(std::min<std::uint64_t>(chunk_size, a.size - chunk_start));
      for (const segment& seg : paint(meta.chunk(ino, chunk), chunk_len)) {
        const std::uint64_t seg_start = chunk_start + seg.pos;
        const std::uint64_t seg_end = seg_start + seg.len;
        if (seg.id == hole_slice || seg_end <= at || seg_start >= end) continue;
        const std::uint64_t s_from = seg.off + (std::max(seg_start, at) - seg_start);
        const std::uint64_t s_to = seg.off + (std::min(seg_end, end) - seg_start);
        for (std::uint64_t b = s_from / block_size; b * block_size < s_to; ++b) {
          const auto length = static_cast<std::uint32_t>(
              std::min<std::uint64_t>(block_size, seg.size - b * block_size));
          blocks.prefetch(block_ref{seg.id, static_cast<std::uint32_t>(b), length});
        }
      }
      at = chunk_start + chunk_len;
    }
  }

  // ---- the idle flusher ---------------------------------------------------------------------

  void arm_idle_flusher() {
    idle_timer.expires_after(std::chrono::seconds(1));
    idle_timer.async_wait([w = weak_from_this()](std::error_code ec) {
      auto self = w.lock();
      if (ec || !self || self->closed) return;
      asio::co_spawn(self->executor, self->flush_idle(), asio::detached);
    });
  }
  asio::awaitable<void> flush_idle() {
    auto self = shared_from_this();
    const auto busy = activity();
    const auto cutoff = clock::now() - std::chrono::seconds(1);
    if (last_write < cutoff) free_blocks.clear();  // idle: the memory goes back
    std::vector<inode_id> idle;
    for (auto& [ino, s] : inodes) {
      if (!s->dirty() || !s->lock.idle()) continue;
      bool old = true;
      for (auto& sl : s->slices) old = old && sl->touched < cutoff;
      if (old) idle.push_back(ino);
    }
    for (inode_id ino : idle) {
      inode_state* s = find_state(ino);
      if (!s || !s->dirty()) continue;
      try {
        auto guard = co_await locked(s->lock);
        co_await finish_all(ino, *s);
      } catch (const std::exception& e) {
        note_error("background flush", ino, errno_of(e));
      }
      maybe_drop(ino);
    }
    if (!idle.empty()) co_await committed();
    if (!closed) arm_idle_flusher();
  }

  // ---- operations ---------------------------------------------------------------------------

  static void op_init(void* userdata, fuse_conn_info* conn) {
    impl& self = *static_cast<filesystem*>(userdata)->impl_;
    // Large requests (max_pages lets 1 MiB through), readdirplus, parallel reads. No writeback
    // cache: the kernel then holds no dirty pages we cannot see (checkpoints, restores).
    conn->max_write = 1u << 20;
    conn->max_read = 0;
    conn->max_background = 64;
    conn->congestion_threshold = 48;
    if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
    if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
    if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO) conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA) conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    // O_TRUNC as a truncate (a setattr) before the open, not a flag of the open: one path for
    // every truncate, with the times POSIX asks for.
    conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
    conn->want &= ~FUSE_CAP_SPLICE_READ;
    conn->want &= ~FUSE_CAP_SPLICE_WRITE;
    conn->want &= ~FUSE_CAP_SPLICE_MOVE;
    conn->time_gran = 1;
    self.initialized = true;
    self.initialized_signal.notify();
    self.arm_idle_flusher();
  }

  static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    impl& self = of(req);
    ++self.counters.requests;
    attributes a;
    if (const int err = self.meta.lookup(parent, name, a); err != 0) {
      return self.reply_error(req, err);
    }
    self.overlay_writes(a);
    self.reply_entry(req, a);
  }

  static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    impl& self = of(req);
    self.forget(ino, nlookup);
    fuse_reply_none(req);
  }
  static void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    impl& self = of(req);
    for (size_t i = 0; i < count; ++i) self.forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
  }
  void forget(inode_id ino, std::uint64_t n) {
    if (ino == root_inode) return;
    inode_state* s = find_state(ino);
    if (!s) return;
    s->lookups = n >= s->lookups ? 0 : s->lookups - n;
    maybe_drop(ino);
  }

  static void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    impl& self = of(req);
    ++self.counters.requests;
    attributes a;
    if (const int err = self.meta.getattr(ino, a); err != 0) return self.reply_error(req, err);
    self.overlay_writes(a);
    const struct stat st = self.to_stat(a);
    fuse_reply_attr(req, &st, self.settings.attr_timeout);
  }

  static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                         fuse_file_info*) {
    impl& self = of(req);
    ++self.counters.requests;
    attribute_change change;
    if (to_set & FUSE_SET_ATTR_MODE) change.mode = attr->st_mode & 07777;
    if (to_set & FUSE_SET_ATTR_UID) change.uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID) change.gid = attr->st_gid;
    if (to_set & FUSE_SET_ATTR_SIZE) change.size = static_cast<std::uint64_t>(attr->st_size);
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
      change.atime_now = true;
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
      change.atime = time_value{attr->st_atim.tv_sec,
                                static_cast<std::uint32_t>(attr->st_atim.tv_nsec)};
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
      change.mtime_now = true;
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
      change.mtime = time_value{attr->st_mtim.tv_sec,
                                static_cast<std::uint32_t>(attr->st_mtim.tv_nsec)};
    }
    asio::co_spawn(self.executor, self.setattr(req, ino, change), asio::detached);
  }
  asio::awaitable<void> setattr(fuse_req_t req, inode_id ino, attribute_change change) {
    auto self = shared_from_this();
    const auto busy = activity();
    attributes a;
    int err = 0;
    try {
      if (change.size || change.mtime || change.mtime_now) {
        // Buffered writes land first, so that a truncate cuts them too and times set now
        // are not overtaken by a later flush.
        inode_state& s = state(ino);
        auto guard = co_await locked(s.lock);
        co_await finish_all(ino, s);
        err = meta.setattr(ino, change, a);
      } else {
        err = meta.setattr(ino, change, a);
      }
    } catch (const std::exception& e) {
      err = errno_of(e);
      note_error("setattr", ino, err);
    }
    maybe_drop(ino);
    if (err != 0) co_return reply_error(req, err);
    err = co_await committed();
    if (err != 0) co_return reply_error(req, err);
    overlay_writes(a);
    const struct stat st = to_stat(a);
    fuse_reply_attr(req, &st, settings.attr_timeout);
  }
  // Creation and removal: the change now, the reply after the commit.
  void reply_entry_after_commit(fuse_req_t req, const attributes& a) {
    when_committed([this, req, a](int err) {
      if (err != 0) return reply_error(req, err);
      reply_entry(req, a);
    });
  }
  void reply_ok_after_commit(fuse_req_t req) {
    when_committed([this, req](int err) { reply_error(req, err); });
  }
  static caller caller_of(fuse_req_t req) {
    const fuse_ctx* ctx = fuse_req_ctx(req);
    return caller{ctx->uid, ctx->gid};
  }
  // Runs a metadata change, turning SQLite failures into an errno.
  template <typename F>
  int guarded(std::string_view op, inode_id ino, F&& f) {
    try {
      return f();
    } catch (const std::exception& e) {
      const int err = errno_of(e);
      note_error(op, ino, err);
      return err;
    }
  }

  static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                       dev_t rdev) {
    impl& self = of(req);
    ++self.counters.requests;
    attributes a;
    const int err = self.guarded("mknod", parent, [&] {
      return self.meta.make_node(parent, name, mode, rdev, caller_of(req), a);
    });
    if (err != 0) return self.reply_error(req, err);
    self.reply_entry_after_commit(req, a);
  }
  static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    impl& self = of(req);
    ++self.counters.requests;
    attributes a;
    const int err = self.guarded("mkdir", parent, [&] {
      return self.meta.make_node(parent, name, (mode & 07777) | S_IFDIR, 0, caller_of(req), a);
    });
    if (err != 0) return self.reply_error(req, err);
    self.reply_entry_after_commit(req, a);
  }
  static void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent,
                         const char* name) {
    impl& self = of(req);
    ++self.counters.requests;
    attributes a;
    const int err = self.guarded("symlink", parent, [&] {
      return self.meta.make_symlink(parent, name, target, caller_of(req), a);
    });
    if (err != 0) return self.reply_error(req, err);
    self.reply_entry_after_commit(req, a);
  }
  static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent,
                      const char* new_name) {
    impl& self = of(req);
    ++self.counters.requests;
    attributes a;
    const int err = self.guarded(
        "link", ino, [&] { return self.meta.link(ino, new_parent, new_name, a); });
    if (err != 0) return self.reply_error(req, err);
    self.overlay_writes(a);
    self.reply_entry_after_commit(req, a);
  }
  static void op_readlink(fuse_req_t req, fuse_ino_t ino) {
    impl& self = of(req);
    ++self.counters.requests;
    std::string target;
    if (const int err = self.meta.read_symlink(ino, target); err != 0) {
      return self.reply_error(req, err);
    }
    fuse_reply_readlink(req, target.c_str());
  }

  void unlinked(std::optional<inode_id> ino) {
    if (!ino) return;
    state(*ino).unlinked = true;
    maybe_drop(*ino);
  }
  // A change that may take an inode's last link: made now, the inode forgotten once nothing
  // holds it, the reply after the commit.
  template <typename Change>
  void remove_name(fuse_req_t req, std::string_view op, inode_id parent, Change&& change) {
    ++counters.requests;
    std::optional<inode_id> gone;
    const int err = guarded(op, parent, [&] { return change(gone); });
    if (err != 0) return reply_error(req, err);
    unlinked(gone);
    reply_ok_after_commit(req);
  }
  static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
    impl& self = of(req);
    self.remove_name(req, "unlink", parent,
                     [&](std::optional<inode_id>& gone) { return self.meta.unlink(parent, name, gone); });
  }
  static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
    impl& self = of(req);
    self.remove_name(req, "rmdir", parent,
                     [&](std::optional<inode_id>& gone) { return self.meta.rmdir(parent, name, gone); });
  }
  static void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name,
                        fuse_ino_t new_parent, const char* new_name, unsigned int flags) {
    impl& self = of(req);
    self.remove_name(req, "rename", parent, [&](std::optional<inode_id>& gone) {
      return self.meta.rename(parent, name, new_parent, new_name, flags, gone);
    });
  }

  // ---- open files ---------------------------------------------------------------------------

  std::uint64_t open_handle_for(inode_id ino) {
    const std::uint64_t fh = next_handle++;
    handles.emplace(fh, open_handle{ino, 0, 0});
    ++state(ino).opens;
    ++counters.open_files;
    return fh;
  }

  static void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    impl& self = of(req);
    ++self.counters.requests;
    if (self.closed && (fi->flags & O_ACCMODE) != O_RDONLY) return self.reply_error(req, EROFS);
    attributes a;
    if (const int err = self.meta.getattr(ino, a); err != 0) return self.reply_error(req, err);
    fi->fh = self.open_handle_for(ino);
    // The kernel keeps the pages it cached: every change goes through this mount, and a
    // change of mtime drops them (AUTO_INVAL_DATA).
    fi->keep_cache = 1;
    if (fuse_reply_open(req, fi) != 0) self.release_handle(fi->fh);
  }

  static void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                        fuse_file_info* fi) {
    impl& self = of(req);
    ++self.counters.requests;
    if (self.closed) return self.reply_error(req, EROFS);
    attributes a;
    const int err = self.guarded("create", parent, [&] {
      return self.meta.make_node(parent, name, (mode & 07777) | S_IFREG, 0, caller_of(req), a);
    });
    if (err != 0) return self.reply_error(req, err);
    const std::uint64_t fh = self.open_handle_for(a.ino);
    fuse_file_info info = *fi;
    self.when_committed([&self, req, a, fh, info](int err) mutable {
      if (err != 0) {
        self.release_handle(fh);
        return self.reply_error(req, err);
      }
      fuse_entry_param e = self.entry_of(a);
      info.fh = fh;
      info.keep_cache = 1;
      if (fuse_reply_create(req, &e, &info) == 0) {
        ++self.state(a.ino).lookups;
      } else {
        self.release_handle(fh);
      }
    });
  }

  void release_handle(std::uint64_t fh) {
    auto it = handles.find(fh);
    if (it == handles.end()) return;
    const inode_id ino = it->second.ino;
    handles.erase(it);
    --counters.open_files;
    if (inode_state* s = find_state(ino)) {
      if (s->opens > 0) --s->opens;
    }
    maybe_drop(ino);
  }

  static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      fuse_file_info* fi) {
    impl& self = of(req);
    ++self.counters.requests;
    asio::co_spawn(self.executor, self.read(req, ino, size, static_cast<std::uint64_t>(off), fi->fh),
                   asio::detached);
  }
  asio::awaitable<void> read(fuse_req_t req, inode_id ino, std::size_t size, std::uint64_t off,
                             std::uint64_t fh) {
    auto self = shared_from_this();
    const auto busy = activity();
    std::string out = take_read_buffer();
    try {
      co_await settle(ino);
      // Readahead, decided when the request arrives (not when its data came), so that the
      // blocks ahead are fetched while this one is. A read near where the last ones ended
      // doubles the window (from one block to 8): the kernel's own readahead keeps several
      // requests in flight, answered in any order, so "near" spans its window, not one offset.
      if (auto it = handles.find(fh); it != handles.end()) {
        open_handle& h = it->second;
        constexpr std::uint64_t near = 32u << 20;
        if (off + near >= h.next_read && off <= h.next_read + near) {
          h.window = std::min<std::uint32_t>(std::max<std::uint32_t>(h.window * 2, 1), 8);
          h.next_read = std::max(h.next_read, off + size);
        } else {
          h.window = 0;
          h.next_read = off + size;
        }
        if (h.window > 0 && size > 0) {
          read_ahead(ino, off + size, std::uint64_t(h.window) * block_size);
        }
      }
      co_await read_range(ino, off, size, out);
    } catch (const std::exception& e) {
      const int err = errno_of(e);
      note_error("read", ino, err);
      give_back_read_buffer(std::move(out));
      co_return reply_error(req, err);
    }
    fuse_reply_buf(req, out.data(), out.size());
    give_back_read_buffer(std::move(out));
  }

  // Reads' buffers (1 MiB each), reused while reads follow each other: a new one each read
  // cost more than the read itself (the kernel mapping, zeroing and unmapping its pages). Freed
  // once no read came for a second, so that an idle mount holds none.
  std::vector<std::string> spare_read_buffers;
  std::optional<asio::steady_timer> spare_read_buffers_timer;
  std::string take_read_buffer() {
    if (spare_read_buffers.empty()) return {};
    std::string b = std::move(spare_read_buffers.back());
    spare_read_buffers.pop_back();
    b.clear();
    return b;
  }
  void give_back_read_buffer(std::string b) {
    if (spare_read_buffers.size() >= 16 || b.capacity() > (2u << 20) || closed) return;
    spare_read_buffers.push_back(std::move(b));
    if (!spare_read_buffers_timer) spare_read_buffers_timer.emplace(executor);
    spare_read_buffers_timer->expires_after(std::chrono::seconds(1));
    spare_read_buffers_timer->async_wait([w = weak_from_this()](std::error_code ec) {
      auto self = w.lock();
      if (!ec && self) self->spare_read_buffers.clear();
    });
  }

  static void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                       fuse_file_info*) {
    impl& self = of(req);
    ++self.counters.requests;
    if (self.closed) return self.reply_error(req, EROFS);
    if (off >= 0 && std::uint64_t(off) + size <= max_file_size &&
        self.write_now(ino, self.state(ino), static_cast<std::uint64_t>(off),
                       std::string_view(buf, size))) {
      ++self.counters.fast_writes;
      fuse_reply_write(req, size);
      return;
    }
    // The request's buffer is reused for the next request: the bytes are copied now.
    asio::co_spawn(self.executor,
                   self.write(req, ino, std::string(buf, size), static_cast<std::uint64_t>(off)),
                   asio::detached);
  }
  asio::awaitable<void> write(fuse_req_t req, inode_id ino, std::string data, std::uint64_t off) {
    auto self = shared_from_this();
    const auto busy = activity();
    if (off + data.size() > max_file_size) co_return reply_error(req, EFBIG);
    inode_state& s = state(ino);
    try {
      auto guard = co_await locked(s.lock);
      co_await write_locked(ino, s, off, data);
    } catch (const std::exception& e) {
      const int err = errno_of(e);
      note_error("write", ino, err);
      co_return reply_error(req, err);
    }
    fuse_reply_write(req, data.size());
  }

  static void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    impl& self = of(req);
    ++self.counters.requests;
    asio::co_spawn(self.executor, self.flush(req, ino, false), asio::detached);
  }
  static void op_fsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
    impl& self = of(req);
    ++self.counters.requests;
    asio::co_spawn(self.executor, self.flush(req, ino, true), asio::detached);
  }
  // flush (close): buffered data staged, its slices committed: a kill -9 loses nothing of it.
  // fsync: also durable against a power cut (staging fsynced, the metadata's WAL synced).
  asio::awaitable<void> flush(fuse_req_t req, inode_id ino, bool durable) {
    auto self = shared_from_this();
    const auto busy = activity();
    int err = 0;
    try {
      co_await settle(ino);
      err = co_await committed();
      if (err == 0 && durable) co_await sync_durably();
    } catch (const std::exception& e) {
      err = errno_of(e);
      note_error(durable ? "fsync" : "flush", ino, err);
    }
    reply_error(req, err);
  }
  asio::awaitable<void> sync_durably() {
    co_await blocks.sync();
    const std::string wal = meta.file().string() + "-wal";
    co_await offload([&] {
      unique_fd fd(::open(wal.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd && errno != ENOENT) {  // no WAL: nothing was written since the last checkpoint
        throw std::system_error(errno, std::generic_category(), "open " + wal);
      }
      if (fd && ::fdatasync(fd.get()) != 0) {
        throw std::system_error(errno, std::generic_category(), "fdatasync " + wal);
      }
    });
  }

  static void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    impl& self = of(req);
    self.release_handle(fi->fh);
    fuse_reply_err(req, 0);
  }

  // ---- directories --------------------------------------------------------------------------

  static void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    impl& self = of(req);
    ++self.counters.requests;
    attributes a;
    if (const int err = self.meta.getattr(ino, a); err != 0) return self.reply_error(req, err);
    if (!S_ISDIR(a.mode)) return self.reply_error(req, ENOTDIR);
    fi->fh = 0;
    fuse_reply_open(req, fi);
  }
  static void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
    fuse_reply_err(req, 0);
  }
  static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
    impl& self = of(req);
    asio::co_spawn(self.executor, self.flush(req, ino, true), asio::detached);
  }

  static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                         fuse_file_info*) {
    of(req).readdir(req, ino, size, off, false);
  }
  static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                             fuse_file_info*) {
    of(req).readdir(req, ino, size, off, true);
  }
  void readdir(fuse_req_t req, inode_id ino, std::size_t size, off_t off, bool plus) {
    ++counters.requests;
    std::vector<dir_entry> entries;
    // An entry is at least ~32 bytes (plus: ~150): ask for no more than fit.
    const std::size_t max = std::max<std::size_t>(1, size / (plus ? 150 : 32));
    if (const int err =
            meta.read_directory(ino, static_cast<std::uint64_t>(off), max, entries);
        err != 0) {
      return reply_error(req, err);
    }
    std::string buf(size, '\0');
    std::size_t used = 0;
    for (dir_entry& e : entries) {
      overlay_writes(e.attr);
      std::size_t need;
      if (plus) {
        fuse_entry_param p = entry_of(e.attr);
        const bool dots = e.name == "." || e.name == "..";
        if (dots) {
          // The kernel takes no reference for these.
          p = fuse_entry_param{};
          p.attr = to_stat(e.attr);
        }
        need = fuse_add_direntry_plus(req, buf.data() + used, size - used, e.name.c_str(), &p,
                                      static_cast<off_t>(e.next_offset));
        if (need > size - used) break;
        if (!dots) ++state(e.attr.ino).lookups;
      } else {
        struct stat st{};
        st.st_ino = e.attr.ino;
        st.st_mode = e.attr.mode;
        need = fuse_add_direntry(req, buf.data() + used, size - used, e.name.c_str(), &st,
                                 static_cast<off_t>(e.next_offset));
        if (need > size - used) break;
      }
      used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
  }

  // ---- the rest -----------------------------------------------------------------------------

  static void op_statfs(fuse_req_t req, fuse_ino_t) {
    impl& self = of(req);
    ++self.counters.requests;
    const statistics s = self.meta.stats();
    struct statvfs st{};
    st.f_bsize = 4096;
    st.f_frsize = 4096;
    st.f_blocks = self.settings.capacity / 4096;
    const std::uint64_t used = std::min(s.used_bytes, self.settings.capacity) / 4096;
    st.f_bfree = st.f_blocks - used;
    st.f_bavail = st.f_bfree;
    st.f_files = std::max<std::uint64_t>(s.inodes + (1ull << 20), 1ull << 31);
    st.f_ffree = st.f_files - s.inodes;
    st.f_favail = st.f_ffree;
    st.f_namemax = max_name_length;
    fuse_reply_statfs(req, &st);
  }

  static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                          size_t size, int flags) {
    impl& self = of(req);
    ++self.counters.requests;
    const int err = self.guarded("setxattr", ino, [&] {
      return self.meta.set_xattr(ino, name, std::string_view(value, size), flags);
    });
    if (err != 0) return self.reply_error(req, err);
    self.reply_ok_after_commit(req);
  }
  static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    impl& self = of(req);
    ++self.counters.requests;
    std::string value;
    if (const int err = self.meta.get_xattr(ino, name, value); err != 0) {
      return self.reply_error(req, err);
    }
    if (size == 0) return (void)fuse_reply_xattr(req, value.size());
    if (value.size() > size) return self.reply_error(req, ERANGE);
    fuse_reply_buf(req, value.data(), value.size());
  }
  static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
    impl& self = of(req);
    ++self.counters.requests;
    std::vector<std::string> names;
    if (const int err = self.meta.list_xattr(ino, names); err != 0) {
      return self.reply_error(req, err);
    }
    std::string all;
    for (const std::string& n : names) {
      all += n;
      all.push_back('\0');
    }
    if (size == 0) return (void)fuse_reply_xattr(req, all.size());
    if (all.size() > size) return self.reply_error(req, ERANGE);
    fuse_reply_buf(req, all.data(), all.size());
  }
  static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
    impl& self = of(req);
    ++self.counters.requests;
    const int err =
        self.guarded("removexattr", ino, [&] { return self.meta.remove_xattr(ino, name); });
    if (err != 0) return self.reply_error(req, err);
    self.reply_ok_after_commit(req);
  }

  static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                           fuse_file_info*) {
    impl& self = of(req);
    ++self.counters.requests;
    asio::co_spawn(self.executor,
                   self.fallocate(req, ino, mode, static_cast<std::uint64_t>(offset),
                                  static_cast<std::uint64_t>(length)),
                   asio::detached);
  }
  asio::awaitable<void> fallocate(fuse_req_t req, inode_id ino, int mode, std::uint64_t offset,
                                  std::uint64_t length) {
    auto self = shared_from_this();
    const auto busy = activity();
    constexpr int punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    if (mode != 0 && mode != FALLOC_FL_KEEP_SIZE && mode != punch &&
        mode != FALLOC_FL_ZERO_RANGE && mode != (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)) {
      co_return reply_error(req, EOPNOTSUPP);
    }
    if (offset + length > max_file_size || offset + length < offset) {
      co_return reply_error(req, EFBIG);
    }
    int err = 0;
    try {
      inode_state& s = state(ino);
      auto guard = co_await locked(s.lock);
      co_await finish_all(ino, s);
      attributes a;
      err = meta.getattr(ino, a);
      if (err == 0 && !S_ISREG(a.mode)) err = S_ISDIR(a.mode) ? EISDIR : ENODEV;
      if (err == 0 && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
        err = meta.punch_hole(ino, offset, length);
      }
      if (err == 0 && !(mode & FALLOC_FL_KEEP_SIZE) && offset + length > a.size) {
        attribute_change grow;
        grow.size = offset + length;
        err = meta.setattr(ino, grow, a);
      }
    } catch (const std::exception& e) {
      err = errno_of(e);
      note_error("fallocate", ino, err);
    }
    maybe_drop(ino);
    if (err == 0) err = co_await committed();
    reply_error(req, err);
  }

  static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info*) {
    impl& self = of(req);
    ++self.counters.requests;
    asio::co_spawn(self.executor, self.lseek(req, ino, off, whence), asio::detached);
  }
  asio::awaitable<void> lseek(fuse_req_t req, inode_id ino, off_t off, int whence) {
    auto self = shared_from_this();
    const auto busy = activity();
    if (whence != SEEK_DATA && whence != SEEK_HOLE) co_return reply_error(req, EINVAL);
    try {
      co_await settle(ino);
    } catch (const std::exception& e) {
      co_return reply_error(req, errno_of(e));
    }
    attributes a;
    if (const int err = meta.getattr(ino, a); err != 0) co_return reply_error(req, err);
    if (off < 0 || static_cast<std::uint64_t>(off) >= a.size) co_return reply_error(req, ENXIO);
    std::uint64_t at = static_cast<std::uint64_t>(off);
    while (at < a.size) {
      // Chunks that do not exist are holes: skip to the next one that does.
      const std::optional<std::uint32_t> next =
          meta.next_chunk(ino, static_cast<std::uint32_t>(at / chunk_size));
      const std::uint64_t next_start = next ? std::uint64_t(*next) * chunk_size : a.size;
      if (next_start >= a.size) {
        if (whence == SEEK_HOLE) co_return (void)fuse_reply_lseek(req, static_cast<off_t>(at));
        break;
      }
      if (next_start > at) {
        if (whence == SEEK_HOLE) co_return (void)fuse_reply_lseek(req, static_cast<off_t>(at));
        at = next_start;
      }
      const auto chunk = *next;
      const std::uint64_t chunk_start = next_start;
      const auto chunk_len =
          static_cast<std::uint32_t>(std::min<std::uint64_t>(chunk_size, a.size - chunk_start));
      for (const segment& seg : paint(meta.chunk(ino, chunk), chunk_len)) {
        const std::uint64_t seg_end = chunk_start + seg.pos + seg.len;
        if (seg_end <= at) continue;
        const bool data = seg.id != hole_slice;
        if (data == (whence == SEEK_DATA)) {
          co_return (void)fuse_reply_lseek(req, static_cast<off_t>(
                                                     std::max(at, chunk_start + seg.pos)));
        }
      }
      at = chunk_start + chunk_len;
    }
    // Past the last data: no more data; the end of the file is a hole.
    if (whence == SEEK_DATA) co_return reply_error(req, ENXIO);
    fuse_reply_lseek(req, static_cast<off_t>(a.size));
  }

  static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                                 fuse_file_info*, fuse_ino_t ino_out, off_t off_out,
                                 fuse_file_info*, size_t len, int flags) {
    impl& self = of(req);
    ++self.counters.requests;
    if (flags != 0) return self.reply_error(req, EINVAL);
    // A short count is a valid answer (callers loop): it bounds the metadata work one request
    // does on the executor.
    len = std::min<size_t>(len, size_t(1) << 30);
    asio::co_spawn(self.executor,
                   self.copy_range(req, ino_in, static_cast<std::uint64_t>(off_in), ino_out,
                                   static_cast<std::uint64_t>(off_out), len),
                   asio::detached);
  }
  asio::awaitable<void> copy_range(fuse_req_t req, inode_id from, std::uint64_t from_off,
                                   inode_id to, std::uint64_t to_off, std::size_t len) {
    auto self = shared_from_this();
    const auto busy = activity();
    int err = 0;
    std::uint64_t copied = 0;
    try {
      co_await settle(from);
      inode_state& s = state(to);
      auto guard = co_await locked(s.lock);
      co_await finish_all(to, s);
      attributes a;
      err = meta.getattr(from, a);
      if (err == 0) {
        copied = from_off >= a.size ? 0 : std::min<std::uint64_t>(len, a.size - from_off);
        if (copied > 0) err = meta.copy_range(from, from_off, to, to_off, copied);
      }
    } catch (const std::exception& e) {
      err = errno_of(e);
      note_error("copy_file_range", to, err);
    }
    maybe_drop(to);
    if (err == 0) err = co_await committed();
    if (err != 0) co_return reply_error(req, err);
    fuse_reply_write(req, copied);
  }
};

// An operation that throws (SQLite failing on a full disk, a damaged chunk) answers the request
// with the errno instead of unwinding through libfuse, which would leave it unanswered and its
// caller hung.
template <typename... A, void (*Op)(fuse_req_t, A...)>
struct filesystem::impl::answering<Op> {
  static void call(fuse_req_t req, A... args) {
    try {
      Op(req, args...);
    } catch (const std::exception& e) {
      const int err = errno_of(e);
      impl::of(req).note_error("request", 0, err);
      fuse_reply_err(req, err);
    }
  }
};

// ---- filesystem -----------------------------------------------------------------------------

filesystem::filesystem(asio::any_io_executor executor, metadata& meta, block_store& blocks,
                       filesystem_settings settings)
    : impl_(std::make_shared<impl>(executor, meta, blocks, settings)) {}

filesystem::~filesystem() {
  impl_->closed = true;
  impl_->idle_timer.cancel();
}

const fuse_lowlevel_ops& filesystem::operations() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = &impl::op_init;
    o.lookup = &impl::answering<&impl::op_lookup>::call;
    o.forget = &impl::op_forget;
    o.forget_multi = &impl::op_forget_multi;
    o.getattr = &impl::answering<&impl::op_getattr>::call;
    o.setattr = &impl::answering<&impl::op_setattr>::call;
    o.readlink = &impl::answering<&impl::op_readlink>::call;
    o.mknod = &impl::answering<&impl::op_mknod>::call;
    o.mkdir = &impl::answering<&impl::op_mkdir>::call;
    o.unlink = &impl::answering<&impl::op_unlink>::call;
    o.rmdir = &impl::answering<&impl::op_rmdir>::call;
    o.symlink = &impl::answering<&impl::op_symlink>::call;
    o.rename = &impl::answering<&impl::op_rename>::call;
    o.link = &impl::answering<&impl::op_link>::call;
    o.open = &impl::answering<&impl::op_open>::call;
    o.read = &impl::answering<&impl::op_read>::call;
    o.write = &impl::answering<&impl::op_write>::call;
    o.flush = &impl::answering<&impl::op_flush>::call;
    o.release = &impl::answering<&impl::op_release>::call;
    o.fsync = &impl::answering<&impl::op_fsync>::call;
    o.opendir = &impl::answering<&impl::op_opendir>::call;
    o.readdir = &impl::answering<&impl::op_readdir>::call;
    o.readdirplus = &impl::answering<&impl::op_readdirplus>::call;
    o.releasedir = &impl::answering<&impl::op_releasedir>::call;
    o.fsyncdir = &impl::answering<&impl::op_fsyncdir>::call;
    o.statfs = &impl::answering<&impl::op_statfs>::call;
    o.setxattr = &impl::answering<&impl::op_setxattr>::call;
    o.getxattr = &impl::answering<&impl::op_getxattr>::call;
    o.listxattr = &impl::answering<&impl::op_listxattr>::call;
    o.removexattr = &impl::answering<&impl::op_removexattr>::call;
    o.create = &impl::answering<&impl::op_create>::call;
    o.fallocate = &impl::answering<&impl::op_fallocate>::call;
    o.lseek = &impl::answering<&impl::op_lseek>::call;
    o.copy_file_range = &impl::answering<&impl::op_copy_file_range>::call;
    return o;
  }();
  return ops;
}

namespace {

// Until `done()` holds (true) or `timeout` passed (false), woken by `woken` (whose owner
// notifies it when `done()` may have changed).
template <typename Done>
asio::awaitable<bool> wait_until(const asio::any_io_executor& executor, signal& woken, Done done,
                                 std::chrono::milliseconds timeout) {
  asio::steady_timer deadline(executor);
  deadline.expires_after(timeout);
  bool timed_out = false;
  deadline.async_wait([&](std::error_code ec) {
    if (ec) return;
    timed_out = true;
    woken.notify();
  });
  while (!done() && !timed_out) co_await woken.wait();
  deadline.cancel();
  co_return done();
}

}  // namespace

asio::awaitable<bool> filesystem::wait_initialized(std::chrono::milliseconds timeout) {
  auto self = impl_;
  co_return co_await wait_until(
      self->executor, self->initialized_signal, [&] { return self->initialized; }, timeout);
}

asio::awaitable<void> filesystem::flush_all() {
  auto self = impl_;
  std::vector<inode_id> dirty;
  for (auto& [ino, s] : self->inodes) {
    if (s->dirty() || !s->lock.idle()) dirty.push_back(ino);  // a finish under way too
  }
  std::exception_ptr first;
  for (inode_id ino : dirty) {
    try {
      co_await self->settle(ino);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
  const int err = co_await self->committed();
  if (err != 0) throw std::system_error(err, std::generic_category(), "metadata commit");
}

asio::awaitable<bool> filesystem::wait_idle(std::chrono::milliseconds timeout) {
  auto self = impl_;
  co_return co_await self->work.wait_idle(timeout);
}

void filesystem::close() {
  impl_->closed = true;
  impl_->idle_timer.cancel();
}

filesystem_stats filesystem::stats() const {
  filesystem_stats s = impl_->counters;
  s.buffered_bytes = impl_->buffered;
  s.known_inodes = impl_->inodes.size();
  return s;
}

}  // namespace sm::fs
