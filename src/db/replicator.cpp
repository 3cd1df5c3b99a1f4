#include "db/replicator.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <fstream>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

#include "async/offload.hpp"
#include "base/file.hpp"
#include "base/hex.hpp"
#include "base/log.hpp"
#include "db/compress.hpp"
#include "db/database.hpp"
#include "db/layout.hpp"

namespace sm::db {

namespace {

std::span<const std::byte> bytes_of(const std::string& text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

}  // namespace

replicator::replicator(asio::any_io_executor executor, s3::object_store& store,
                       std::filesystem::path db)
    : executor_(executor),
      store_(store),
      db_(std::move(db)),
      tick_(executor),
      run_done_(executor, std::chrono::steady_clock::time_point::max()) {}

replicator::~replicator() {
  if (pin_) sqlite3_close(pin_);
  if (barrier_) sqlite3_close(barrier_);
}

namespace {

// A window of the WAL: its header, and up to `max_bytes` from `from` on. Blocking. Opening and
// closing the -wal file is safe: SQLite's locks are on the database file and -shm.
struct wal_window {
  std::string header;
  std::string tail;
  std::uint64_t offset = 0;     // where `tail` starts in the file
  std::uint64_t file_size = 0;  // 0: no WAL
  std::chrono::system_clock::time_point written{};
  bool complete() const { return offset + tail.size() >= file_size; }
};

wal_window read_wal_window(const std::string& path, std::uint64_t from, std::uint64_t max_bytes) {
  wal_window w;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return w;
  struct stat st {};
  auto read_into = [&](std::string& into, std::uint64_t offset, std::uint64_t end) {
    into.resize(end - offset);
    std::size_t done = 0;
    while (done < into.size()) {
      const ssize_t n = ::pread(fd, into.data() + done, into.size() - done, off_t(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // shorter than it was a moment ago (truncated meanwhile)
      done += std::size_t(n);
    }
    into.resize(done);
  };
  if (::fstat(fd, &st) == 0 && st.st_size > 0) {
    w.file_size = std::uint64_t(st.st_size);
    w.written = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(st.st_mtim.tv_sec) +
            std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
    read_into(w.header, 0, std::min<std::uint64_t>(wal::header_size, w.file_size));
    w.offset = std::min(from, w.file_size);
    const std::uint64_t end =
        max_bytes >= w.file_size - w.offset ? w.file_size : w.offset + max_bytes;
    read_into(w.tail, w.offset, end);
    // Shorter than asked (truncated meanwhile, or a read error): the file ends there for this
    // pass, so that nobody widens a window forever.
    if (w.offset + w.tail.size() < end) w.file_size = w.offset + w.tail.size();
  }
  ::close(fd);
  return w;
}

// Whether the valid frames in `w` after the shadow's end run to the window's end with no commit
// yet: a transaction larger than the window, worth a wider one. Stale frames of an earlier log
// (a salt or checksum mismatch) are not: the pass is done.
bool runs_past(const std::optional<replica_position>& at, const wal_window& w) {
  const auto h = wal::parse_header(std::as_bytes(std::span(w.header.data(), w.header.size())));
  if (!h) return false;
  const bool shipped = at && at->durable_end > wal::header_size;
  const std::uint64_t from = shipped ? at->durable_end : wal::header_size;
  if (from < w.offset || from > w.offset + w.tail.size()) return false;
  const auto tail = std::as_bytes(std::span(w.tail.data(), w.tail.size()));
  const wal::scan_result r =
      wal::scan(tail.subspan(from - w.offset), *h, from, shipped ? at->sum : h->sum);
  return r.frames > 0 && (r.stopped == "end of data" || r.stopped == "partial frame");
}

// How much of the WAL one shadow step reads at most: a burst of writes is shipped as several
// segments, in bounded memory. A transaction larger than this widens the window.
constexpr std::uint64_t window_bytes = 16u << 20;

// Our own small write, in our own table: restarts a fully backfilled log, stamps a new
// generation's WAL.
constexpr const char* bump_sql =
    "INSERT INTO state_manager_meta(key, value) VALUES ('replica_seq', '1') "
    "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1";

std::string to_hex(std::span<const std::byte> bytes) {
  return hex(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

bool from_hex(std::string_view text, std::span<std::byte> out) {
  const std::optional<std::string> bytes = unhex(text);
  if (!bytes || bytes->size() != out.size()) return false;
  std::memcpy(out.data(), bytes->data(), out.size());
  return true;
}

}  // namespace

std::filesystem::path replicator::shadow_dir() const {
  return db_.string() + "-litestream";
}

void replicator::save_state(const std::optional<replica_position>& at) const {
  // Blocking: called inside offload(). Where the shadow stands, so that a restart continues
  // the generation instead of uploading a new snapshot.
  nlohmann::json state = {{"generation", generation_}};
  if (at) {
    state["wal_index"] = at->walidx;
    state["offset"] = at->durable_end;
    state["header"] = to_hex(at->header);
    state["checksum"] = {at->sum.s0, at->sum.s1};
  }
  write_file_atomically(shadow_dir() / "state.json", state.dump() + "\n", 0644);
}

std::optional<std::pair<std::string, std::optional<replica_position>>> replicator::load_state()
    const {
  std::ifstream in(shadow_dir() / "state.json");
  if (!in) return std::nullopt;
  const nlohmann::json state = nlohmann::json::parse(in, nullptr, false);
  if (!state.is_object() || !state.contains("generation") || !state["generation"].is_string()) {
    return std::nullopt;
  }
  const std::string generation = state["generation"].get<std::string>();
  if (!layout::valid_generation(generation)) return std::nullopt;
  std::optional<replica_position> at;
  if (state.contains("offset")) {
    try {
      replica_position p;
      p.walidx = state.at("wal_index").get<std::uint64_t>();
      p.durable_end = state.at("offset").get<std::uint64_t>();
      p.sum.s0 = state.at("checksum").at(0).get<std::uint32_t>();
      p.sum.s1 = state.at("checksum").at(1).get<std::uint32_t>();
      if (!from_hex(state.at("header").get<std::string>(), p.header)) return std::nullopt;
      at = p;
    } catch (const nlohmann::json::exception&) {
      return std::nullopt;
    }
  }
  return std::make_pair(generation, at);
}

std::optional<layout::replica_point> replicator::saved_point(const std::filesystem::path& db) {
  std::ifstream in(db.string() + "-litestream/state.json");
  if (!in) return std::nullopt;
  const nlohmann::json state = nlohmann::json::parse(in, nullptr, false);
  if (!state.is_object() || !state.contains("generation") || !state["generation"].is_string()) {
    return std::nullopt;
  }
  layout::replica_point point;
  point.generation = state["generation"].get<std::string>();
  if (!layout::valid_generation(point.generation)) return std::nullopt;
  if (state.contains("offset")) {
    if (!state["offset"].is_number_unsigned() || !state.contains("wal_index") ||
        !state["wal_index"].is_number_unsigned()) {
      return std::nullopt;
    }
    point.walidx = state["wal_index"].get<std::uint64_t>();
    point.end = state["offset"].get<std::uint64_t>();
  }
  return point;
}

asio::awaitable<void> replicator::start() {
  std::string failure;
  std::optional<std::pair<std::string, std::optional<replica_position>>> saved;
  co_await offload([&] {
    if (sqlite3_open_v2(db_.c_str(), &pin_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      failure = pin_ ? sqlite3_errmsg(pin_) : "cannot open";
      return;
    }
    // Closing our connections must never checkpoint (and delete) the WAL behind the replica.
    sqlite3_db_config(pin_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    // A reader can meet SQLITE_BUSY for a moment while a writer restarts the log: wait it
    // out (this runs off the executor). The barrier, below, never waits: busy means later.
    sqlite3_busy_timeout(pin_, 5000);
    // The pin: a read transaction that stays open, so that no checkpoint can reset the WAL
    // past what is shipped.
    char* message = nullptr;
    if (sqlite3_exec(pin_, "BEGIN; SELECT count(*) FROM state_manager_meta;", nullptr, nullptr,
                     &message) != SQLITE_OK) {
      failure = message ? message : sqlite3_errmsg(pin_);
      sqlite3_free(message);
      return;
    }
    std::error_code ec;
    std::filesystem::create_directories(shadow_dir(), ec);
    if (ec) failure = "shadow directory " + shadow_dir().string() + ": " + ec.message();
    saved = load_state();
  });
  if (!failure.empty()) throw error("replicating " + db_.string() + ": " + failure);
  // The generation this machine was shipping before a restart goes on, if the WAL still
  // continues exactly where the shadow ends and the store still has that generation.
  if (saved && saved->second) {
    // The window from the shadow's last frame: its checksum must still be there.
    const replica_position& p = *saved->second;
    std::uint64_t known = 0;
    if (const auto h = wal::parse_header(p.header); h && p.durable_end > wal::header_size) {
      known = p.durable_end - h->frame_size();
    }
    wal_window w;
    const std::string path = db_.string() + "-wal";
    co_await offload([&] { w = read_wal_window(path, known, window_bytes); });
    const sync_step step =
        next_sync(saved->second, bytes_of(w.header), bytes_of(w.tail), w.offset, false);
    const std::string meta = layout::meta_key(saved->first);
    bool known_to_store = false;
    if (step.what != sync_step::kind::new_generation) {
      try {
        known_to_store = (co_await store_.head(meta)).has_value();
      } catch (const std::exception& e) {
        last_error_ = e.what();  // cannot tell: a new generation, once the store answers
      }
    }
    if (known_to_store) {
      generation_ = saved->first;
      at_ = saved->second;
      log::info("database: continuing the generation",
                {{"generation", generation_}, {"offset", std::to_string(at_->durable_end)}});
      try {
        co_await sync();
      } catch (const std::exception& e) {
        last_error_ = e.what();  // the run loop retries; the shadow holds the backlog
      }
      co_return;
    }
  }
  // The store failing now (or a snapshot that cannot be written) is no reason to stop: the pin
  // holds the WAL, and the run loop starts the generation once it can.
  try {
    co_await new_generation("start");
  } catch (const std::exception& e) {
    pending_generation_ = "start";
    last_error_ = e.what();
    log::warn("database: cannot start a generation yet; retrying", {{"error", last_error_}});
  }
}

asio::awaitable<void> replicator::new_generation(std::string why) {
  // Nothing changes until the new generation's meta and snapshot are in the store: until then
  // the WAL stays pinned and holds everything, and the next sync tries again.
  const std::string generation = layout::new_generation();
  // Named locally first, with no position: a start after a crash once this generation's
  // snapshot is in the store must see it as ours (component::behind_the_store compares the
  // store's newest generation with this file), never as another machine's newer one. A
  // restart that reads it starts a generation anew, as after at_.reset() below.
  co_await offload([&] {
    write_file_atomically(shadow_dir() / "state.json",
                          nlohmann::json{{"generation", generation}}.dump() + "\n", 0644);
  });
  const std::string meta = "{\"generation\": \"" + generation + "\", \"why\": \"" + why + "\"}\n";
  s3::put_options json_options;
  json_options.content_type = "application/json";
  const std::string meta_key = layout::meta_key(generation);
  co_await store_.put(meta_key, meta, json_options);
  // The snapshot, then the WAL from its start: replaying that whole index over the snapshot
  // gives every commit after it.
  co_await upload_snapshot(generation, 0, true);
  generation_ = generation;
  ++generations_;
  snapshot_walidx_ = 0;
  log::info("database: new generation", {{"generation", generation_}, {"why", why}});
  at_.reset();
  co_await offload([&] { save_state(at_); });
  // The first segment reaches at least as far as the snapshot's state, however long the WAL
  // already is: a restore that stopped inside that stretch would write older pages over the
  // snapshot's newer ones. Whole segments are applied or none.
  first_window_ = std::numeric_limits<std::uint64_t>::max();
  co_await shadow();
  if (!at_) {
    // Nothing committed in the WAL yet: one small commit of ours gives the generation a WAL
    // header and a position, so that a restart can tell whether the WAL still continues it
    // (or was reset, or deleted and written again, while nobody watched).
    std::string failure;
    co_await offload([&] {
      if (!open_barrier(failure)) return;
      sqlite3_busy_timeout(barrier_, 5000);
      if (sqlite3_exec(barrier_, bump_sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
        failure = "stamping the WAL: " + std::string(sqlite3_errmsg(barrier_));
      }
      sqlite3_busy_timeout(barrier_, 0);
    });
    if (!failure.empty()) throw error("replicating " + db_.string() + ": " + failure);
    co_await shadow();
  }
}

asio::awaitable<void> replicator::upload_snapshot(std::string generation, std::uint64_t walidx,
                                                  bool fresh) {
  const std::string key = layout::snapshot_key(generation, walidx, compressed_ext);
  const std::filesystem::path copy = co_await write_snapshot(fresh);
  std::filesystem::path file = copy;
  file += compressed_ext;
  std::exception_ptr failure;
  try {
    co_await offload([&] { compress_file(copy, file); });
    co_await store_.put_file(key, file);
  } catch (...) {
    failure = std::current_exception();
  }
  co_await offload([&] {
    std::error_code ec;
    std::filesystem::remove(copy, ec);
    std::filesystem::remove(file, ec);
  });
  if (failure) std::rethrow_exception(failure);
  snapshot_at_ = std::chrono::steady_clock::now();
  shadowed_since_snapshot_ = 0;
  ++snapshots_;
}

asio::awaitable<bool> replicator::snapshot() {
  // In a WAL index of its own: a key is never written twice, so a point-in-time restore sees
  // each snapshot as it was.
  const std::uint64_t before = at_ ? at_->walidx : 0;
  if (!co_await checkpoint() || !at_ || at_->walidx <= before) co_return false;
  const std::uint64_t walidx = at_->walidx;
  // The pin as our checkpoint left it, just after the log restarted: the snapshot is the state
  // the index's first segment (already in the shadow) reaches at least.
  co_await upload_snapshot(generation_, walidx, false);
  snapshot_walidx_ = walidx;
  log::info("database: snapshot",
            {{"generation", generation_}, {"wal_index", std::to_string(walidx)}});
  co_return true;
}

asio::awaitable<std::size_t> replicator::enforce_retention(std::chrono::milliseconds keep) {
  std::vector<s3::object_info> objects;
  std::string token;
  do {
    s3::list_page page = co_await store_.list("db/", "", token, 1000);
    for (auto& o : page.objects) objects.push_back(std::move(o));
    token = page.next_token;
  } while (!token.empty());
  const auto cutoff = std::chrono::system_clock::now() - keep;
  // A restore to the cutoff (or later) starts from the newest generation begun by then (its
  // meta.json written): older generations are not needed. In the current generation, it starts
  // from the newest snapshot written by then: older WAL indexes are not needed.
  std::string oldest_needed;          // empty: every generation may be needed
  std::optional<std::uint64_t> base;  // current generation: WAL index of that snapshot
  for (const s3::object_info& o : objects) {
    const std::string_view rest = std::string_view(o.key).substr(3);
    const std::string generation(rest.substr(0, rest.find('/')));
    if (o.key == layout::meta_key(generation) && o.last_modified <= cutoff &&
        generation <= generation_) {
      oldest_needed = std::max(oldest_needed, generation);
    }
    if (auto snap = layout::parse_snapshot_key(o.key);
        snap && snap->generation == generation_ && o.last_modified <= cutoff) {
      base = std::max(base.value_or(0), snap->walidx);
    }
  }
  std::vector<std::string> doomed;
  for (const s3::object_info& o : objects) {
    const std::string_view rest = std::string_view(o.key).substr(3);
    const std::string generation(rest.substr(0, rest.find('/')));
    if (generation != generation_) {
      if (generation < oldest_needed) doomed.push_back(o.key);
      continue;
    }
    if (!base) continue;
    if (auto snap = layout::parse_snapshot_key(o.key); snap && snap->walidx < *base) {
      doomed.push_back(o.key);
    } else if (auto seg = layout::parse_segment_key(o.key); seg && seg->walidx < *base) {
      doomed.push_back(o.key);
    }
  }
  if (!doomed.empty()) {
    co_await store_.remove_many(doomed);
    log::info("database: retention removed old objects",
              {{"objects", std::to_string(doomed.size())}});
  }
  co_return doomed.size();
}

asio::awaitable<std::filesystem::path> replicator::write_snapshot(bool fresh) {
  // Through SQLite's backup API on the pin, never by reading the file ourselves: a descriptor
  // of the database file that this process opens and closes drops every POSIX lock the process
  // holds on it, the pin's included, and another process could then checkpoint and delete the
  // WAL behind us. The copy is the pin's read snapshot, consistent by construction.
  const std::filesystem::path shadow = db_.string() + "-litestream";
  const std::filesystem::path to = shadow / "snapshot.tmp";
  std::string failure;
  co_await offload([&] {
    std::error_code ec;
    std::filesystem::create_directories(shadow, ec);
    std::filesystem::remove(to, ec);
    // A fresh read snapshot (the newest state; the WAL it reads stays pinned), or the pin's.
    if (fresh) sqlite3_exec(pin_, "ROLLBACK", nullptr, nullptr, nullptr);
    if (fresh && sqlite3_exec(pin_, "BEGIN; SELECT count(*) FROM state_manager_meta;", nullptr,
                              nullptr, nullptr) != SQLITE_OK) {
      failure = "re-taking the pin: " + std::string(sqlite3_errmsg(pin_));
      return;
    }
    sqlite3* copy = nullptr;
    if (sqlite3_open_v2(to.c_str(), &copy, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK) {
      failure = "snapshot file " + to.string() + ": " + sqlite3_errmsg(copy);
      sqlite3_close(copy);
      return;
    }
    sqlite3_exec(copy, "PRAGMA journal_mode=OFF", nullptr, nullptr, nullptr);
    sqlite3_backup* backup = sqlite3_backup_init(copy, "main", pin_, "main");
    int rc = backup ? sqlite3_backup_step(backup, -1) : sqlite3_errcode(copy);
    if (backup) sqlite3_backup_finish(backup);
    if (rc != SQLITE_DONE) failure = "snapshot: " + std::string(sqlite3_errmsg(copy));
    sqlite3_close(copy);
  });
  if (!failure.empty()) throw error("replicating " + db_.string() + ": " + failure);
  co_return to;
}

asio::awaitable<std::uint64_t> replicator::sync() {
  co_await shadow();
  co_return co_await upload();
}

replicator::shadow_pass replicator::shadow_blocking(std::optional<replica_position> at,
                                                    bool reset_expected,
                                                    std::uint64_t first_window) const {
  // Blocking. Windows of the WAL, each from the last frame in the shadow (its checksum is
  // checked) to at most window_bytes further; the whole log from the start only when its header
  // changed. Each window's whole transactions go into the shadow as one segment (fsynced, then
  // state.json), until the WAL is read to its end.
  shadow_pass pass;
  pass.at = at;
  const std::string path = db_.string() + "-wal";
  std::uint64_t window = std::max(window_bytes, first_window);
  for (;;) {
    std::uint64_t known = 0;
    if (pass.at && pass.at->durable_end > wal::header_size) {
      if (const auto h = wal::parse_header(pass.at->header)) {
        known = pass.at->durable_end - h->frame_size();
      }
    }
    wal_window w = read_wal_window(path, known, window);
    pass.written = w.written;
    const bool expect_reset = pass.at && reset_expected && !pass.reset_consumed;
    sync_step step =
        next_sync(pass.at, bytes_of(w.header), bytes_of(w.tail), w.offset, expect_reset);
    if (step.what == sync_step::kind::new_generation && step.why == need_whole_wal) {
      w = read_wal_window(path, 0, window);
      step = next_sync(pass.at, bytes_of(w.header), bytes_of(w.tail), w.offset, expect_reset);
    }
    if (pass.at && step.what != sync_step::kind::nothing) pass.reset_consumed = true;
    if (step.what == sync_step::kind::new_generation) {
      pass.lost = step.why;
      return pass;
    }
    if (step.what == sync_step::kind::nothing) {
      if (w.complete() || !runs_past(pass.at, w)) return pass;
      window = window > w.file_size ? w.file_size + 1 : window * 2;  // a larger transaction
      continue;
    }
    window = window_bytes;
    const std::uint64_t walidx = pass.at ? step.next.walidx : 0;
    const std::string key =
        layout::segment_key(generation_, walidx, step.start, step.end, compressed_ext);
    const std::string_view body =
        std::string_view(w.tail).substr(step.start - w.offset, step.end - step.start);
    replica_position next = step.next;
    next.walidx = walidx;
    // Mirrors the key: shadow/db/<generation>/wal/<index>/<start>-<end>.wal.zst. A full disk
    // fails here, and the WAL (still pinned, never checkpointed past the shadow) keeps it all.
    const std::filesystem::path file = shadow_dir() / key;
    try {
      std::filesystem::create_directories(file.parent_path());
      write_file_atomically(file, compress(body), 0644);
      try {
        save_state(next);
      } catch (...) {
        std::error_code ec;
        std::filesystem::remove(file, ec);
        throw;
      }
    } catch (const std::exception& e) {
      pass.failure = e.what();
      pass.unshadowed = w.file_size - step.start;
      return pass;
    }
    pass.at = next;
    pass.bytes += body.size();
    if (w.complete() && step.end >= w.offset + w.tail.size()) return pass;
  }
}

asio::awaitable<std::uint64_t> replicator::shadow() {
  // What is committed in the WAL past the shadow's end goes into the shadow, or a new
  // generation starts when the WAL no longer continues it.
  if (pending_generation_) {
    const std::string why = *std::exchange(pending_generation_, std::nullopt);
    try {
      co_await new_generation(why);
    } catch (...) {
      pending_generation_ = why;  // next time
      throw;
    }
    co_return 0;
  }
  shadow_pass pass;
  const std::uint64_t first_window = std::exchange(first_window_, 0);
  co_await offload([&] { pass = shadow_blocking(at_, reset_expected_, first_window); });
  co_return co_await apply(std::move(pass));
}

asio::awaitable<std::uint64_t> replicator::apply(shadow_pass pass) {
  at_ = pass.at;
  if (pass.reset_consumed) reset_expected_ = false;
  if (pass.written != std::chrono::system_clock::time_point{}) wal_written_ = pass.written;
  shadowed_since_snapshot_ += pass.bytes;
  if (!pass.failure.empty()) {
    unshadowed_ = pass.unshadowed;
    if (!waiting_since_) waiting_since_ = std::chrono::steady_clock::now();
    throw error("shadowing the WAL in " + shadow_dir().string() + ": " + pass.failure);
  }
  unshadowed_ = 0;
  if (pass.lost) co_await new_generation(*pass.lost);
  co_return pass.bytes;
}

asio::awaitable<std::uint64_t> replicator::upload() {
  // The shadow's segments, oldest first (generations and offsets sort by key), each removed
  // once the store has it.
  std::vector<std::pair<std::string, std::uint64_t>> pending;  // key, size
  co_await offload([&] {
    const std::filesystem::path root = shadow_dir() / "db";
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      const std::string key = it->path().lexically_relative(shadow_dir()).string();
      // Only finished segments: a crash can leave a write's .tmp behind.
      const bool finished =
          key.ends_with(std::string(".wal") + std::string(compressed_ext)) || key.ends_with(".wal");
      if (finished && layout::parse_segment_key(key)) pending.emplace_back(key, it->file_size(ec));
    }
  });
  std::sort(pending.begin(), pending.end());
  pending_bytes_ = 0;
  for (const auto& p : pending) pending_bytes_ += p.second;
  backlog_ = pending_bytes_ + unshadowed_;
  std::uint64_t shipped = 0;
  std::exception_ptr failure;
  try {
    for (const auto& [key, size] : pending) {
      std::string body;
      bool found = true;
      co_await offload([&] {
        std::optional<std::string> text =
            read_file(shadow_dir() / key, std::numeric_limits<std::size_t>::max());
        found = text.has_value();
        if (text) body = std::move(*text);
      });
      if (!found) throw error("the shadow lost its segment " + key);
      co_await store_.put(key, body);
      co_await offload([&] {
        std::error_code ec;
        std::filesystem::remove(shadow_dir() / key, ec);
        // Its WAL index's folder goes once empty (remove() leaves a folder that is not), so
        // that the listing above stays short over a long life.
        std::filesystem::remove((shadow_dir() / key).parent_path(), ec);
      });
      const auto ref = layout::parse_segment_key(key);
      stored_ = stored_position{ref->generation, ref->walidx, ref->end};
      shipped += size;
      pending_bytes_ -= size;
      backlog_ = pending_bytes_ + unshadowed_;
    }
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure || backlog_ > 0) {
    if (!waiting_since_) waiting_since_ = std::chrono::steady_clock::now();
    if (failure) std::rethrow_exception(failure);
    co_return shipped;
  }
  waiting_since_.reset();
  if (shipped > 0) {
    // The WAL's mtime is the last commit's time.
    const auto age = std::chrono::system_clock::now() - wal_written_;
    last_lag_ = std::max(std::chrono::milliseconds(0),
                         std::chrono::duration_cast<std::chrono::milliseconds>(age));
  }
  co_return shipped;
}

bool replicator::open_barrier(std::string& failure) {
  if (barrier_) return true;
  if (sqlite3_open_v2(db_.c_str(), &barrier_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    failure = "barrier connection: " + std::string(sqlite3_errmsg(barrier_));
    return false;
  }
  sqlite3_db_config(barrier_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  sqlite3_wal_autocheckpoint(barrier_, 0);
  // A log that a burst grew is cut back when our write restarts it.
  sqlite3_exec(barrier_, "PRAGMA journal_size_limit = 67108864", nullptr, nullptr, nullptr);
  return true;
}

asio::awaitable<bool> replicator::checkpoint() {
  co_return co_await checkpoint_within(std::chrono::milliseconds(0));
}

asio::awaitable<bool> replicator::checkpoint_within(std::chrono::milliseconds patience) {
  co_await shadow();  // most of what is committed goes into the shadow before the barrier
  std::string failure;
  bool ran = false, bumped = false;
  shadow_pass pass;
  pass.at = at_;
  const bool reset_expected = reset_expected_;
  co_await offload([&] {
    auto exec = [](sqlite3* db, const char* sql) {
      return sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
    };
    if (!open_barrier(failure)) return;
    // Normally a busy writer means "next time"; a WAL far past its bound waits its turn.
    sqlite3_busy_timeout(barrier_, int(patience.count()));
    const bool barrier = exec(barrier_, "BEGIN IMMEDIATE");
    sqlite3_busy_timeout(barrier_, 0);
    if (!barrier) return;
    // Writers are held off: what they committed since goes into the shadow now, so that the
    // checkpoint backfills nothing the shadow does not hold (the restart would drop it).
    pass = shadow_blocking(pass.at, reset_expected, 0);
    if (!pass.failure.empty() || pass.lost) {
      exec(barrier_, "ROLLBACK");
      return;
    }
    exec(pin_, "ROLLBACK");  // the pin lets go: the checkpoint may backfill everything
    int log = 0, backfilled = 0;
    sqlite3_wal_checkpoint_v2(pin_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &backfilled);
    exec(barrier_, "ROLLBACK");
    ran = log >= 0 && log == backfilled;
    // At once, with no suspension point: a write that finds the WAL fully backfilled and
    // unread restarts it (salt-1 + 1, sequence + 1). Ours, so that it happens now. Also when
    // our checkpoint found the lock busy: the application's own checkpoint may have backfilled
    // everything, and then this restarts the log just the same.
    bumped = exec(barrier_, bump_sql);
    if (!exec(pin_, "BEGIN; SELECT count(*) FROM state_manager_meta;")) {
      failure = "re-taking the pin: " + std::string(sqlite3_errmsg(pin_));
    }
  });
  co_await apply(std::move(pass));
  if (!failure.empty()) throw error("replicating " + db_.string() + ": " + failure);
  // Everything was in the shadow before our write: if it restarted the log, that is ours.
  reset_expected_ = bumped;
  co_await shadow();  // the restarted log's first segment (the bump), or more of the old one
  co_return ran;
}

asio::awaitable<void> replicator::run(schedule s) {
  running_ = true;
  while (!stopping_) {
    tick_.expires_after(s.interval);
    std::error_code ec;
    co_await tick_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    // Shadowing and our checkpoints go on while the store is down (the shadow holds the
    // backlog, the WAL stays bounded); uploads catch up once it answers.
    std::string failure;
    try {
      co_await shadow();
      // The log's valid length, not the file's: a restarted log leaves old frames behind.
      const std::optional<wal::header> h =
          at_ ? wal::parse_header(at_->header) : std::optional<wal::header>();
      const std::uint64_t frame = (h ? h->page_size : 4096u) + wal::frame_header_size;
      const bool snapshot_due =
          std::chrono::steady_clock::now() - snapshot_at_ >= s.snapshot_interval ||
          shadowed_since_snapshot_ >= s.snapshot_bytes;
      if (snapshot_due && co_await snapshot()) {
        co_await enforce_retention(s.retention);
      } else if (at_ && at_->durable_end / frame >= s.checkpoint_pages) {
        // Past four times its bound, the WAL waits for the write lock (up to a second) rather
        // than growing for as long as a writer keeps it busy.
        const bool far = at_->durable_end / frame >= 4 * s.checkpoint_pages;
        co_await checkpoint_within(std::chrono::milliseconds(far ? 1000 : 0));
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
    try {
      co_await upload();
      if (failure.empty()) {
        last_sync_at_ = std::chrono::system_clock::now();
        if (!last_error_.empty()) log::info("database: replication resumed");
      }
    } catch (const std::exception& e) {
      if (failure.empty()) failure = e.what();
    }
    if (!failure.empty() && failure != last_error_) {
      log::warn("database: replication failed; retrying", {{"error", failure}});
    }
    const bool changed = failure != last_error_;
    last_error_ = failure;
    if (changed && on_status_change) on_status_change();
  }
  running_ = false;
  run_done_.cancel();
}

std::chrono::milliseconds replicator::lag() const {
  if (!waiting_since_) return last_lag_;
  const auto waiting = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - *waiting_since_);
  return std::max(last_lag_, waiting);
}

asio::awaitable<void> replicator::end_run() {
  stopping_ = true;
  tick_.cancel();
  while (running_) {
    std::error_code ec;
    co_await run_done_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<void> replicator::unpin() {
  co_await offload([&] {
    if (pin_) {
      sqlite3_exec(pin_, "ROLLBACK", nullptr, nullptr, nullptr);
      sqlite3_close(pin_);
      pin_ = nullptr;
    }
  });
}

asio::awaitable<void> replicator::stop() {
  co_await end_run();
  std::exception_ptr failure;
  try {
    co_await sync();
  } catch (...) {
    failure = std::current_exception();
  }
  co_await unpin();
  if (failure) std::rethrow_exception(failure);
}

asio::awaitable<void> replicator::abandon() {
  co_await end_run();
  co_await unpin();
}

}  // namespace sm::db
