#include "db/restore.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "async/offload.hpp"
#include "base/fd.hpp"
#include "base/file.hpp"
#include "base/log.hpp"
#include "db/compress.hpp"
#include "db/database.hpp"
#include "db/layout.hpp"
#include "db/replay.hpp"
#include "db/wal.hpp"

namespace sm::db {

namespace {

namespace fs = std::filesystem;
using namespace std::string_view_literals;
using wall_clock = std::chrono::system_clock;

// Segments of one WAL index in flight at once: the S3 client's default parallelism
// (store_config::max_parallel). One index at a time is held in memory, never a generation.
constexpr std::size_t fetch_window = 8;

// How many of integrity_check's complaints an error message quotes.
constexpr int integrity_problems_quoted = 5;

std::string hex16(std::uint64_t v) {
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(v));
  return buffer;
}

std::span<const std::byte> bytes_of(const std::string& text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

[[noreturn]] void fail(const fs::path& to, const std::string& what) {
  throw error("restoring " + to.string() + ": " + what);
}

// Everything under db/, all pages. With `at`, only what the store held by then: objects are
// never overwritten, so Last-Modified is when each one arrived.
asio::awaitable<std::vector<s3::object_info>> list_replica(
    s3::object_store& store, std::optional<wall_clock::time_point> at) {
  std::vector<s3::object_info> objects;
  std::string token;
  do {
    s3::list_page page = co_await store.list("db/", "", token, 1000);
    for (s3::object_info& o : page.objects) {
      if (!at || o.last_modified <= *at) objects.push_back(std::move(o));
    }
    token = std::move(page.next_token);
  } while (!token.empty());
  co_return objects;
}

// The generation asked for, or else the newest one with a snapshot (generations begin with
// their creation time, so the newest sorts last); empty when there is none.
std::string choose_generation(const std::vector<s3::object_info>& objects,
                              const std::string& wanted) {
  if (!wanted.empty()) return wanted;
  std::string newest;
  for (const s3::object_info& o : objects) {
    if (auto s = layout::parse_snapshot_key(o.key); s && s->generation > newest) {
      newest = s->generation;
    }
  }
  return newest;
}

// Whether an object is compressed: what follows ".db" in a snapshot's name or ".wal" in a
// segment's. Anything but none or zstd is refused: a replica written by a newer version must
// not be replayed as if it were raw bytes.
bool is_compressed(const fs::path& to, const std::string& key, std::string_view marker) {
  const std::string name = key.substr(key.rfind('/') + 1);
  const std::string ext = name.substr(name.find(marker) + marker.size());
  if (ext.empty()) return false;
  if (ext == compressed_ext) return true;
  fail(to, key + " is stored as \"" + ext +
               "\", a compression this version cannot read (restore with a newer one)");
}

// The bodies of `keys` in their order, with up to fetch_window requests in flight; nullopt for
// a key that is gone (listed, then removed). On a failure the requests already running finish
// first (they write into this frame), then the first failure is rethrown.
asio::awaitable<std::vector<std::optional<std::string>>> fetch_in_order(
    s3::object_store& store, const std::vector<std::string>& keys) {
  const auto executor = co_await asio::this_coro::executor;
  std::vector<std::optional<std::string>> bodies(keys.size());
  std::size_t next = 0, running = 0;
  std::exception_ptr failure;
  asio::steady_timer all_done(executor, std::chrono::steady_clock::time_point::max());
  auto worker = [&]() -> asio::awaitable<void> {
    while (!failure && next < keys.size()) {
      const std::size_t i = next++;
      try {
        bodies[i] = co_await store.get(keys[i]);
      } catch (const s3::error& e) {
        if (e.code() != "NoSuchKey") throw;
      }
    }
  };
  const std::size_t workers = std::min(fetch_window, keys.size());
  for (std::size_t w = 0; w < workers; ++w) {
    ++running;
    asio::co_spawn(executor, worker(), [&](std::exception_ptr e) {
      if (e && !failure) failure = e;
      if (--running == 0) all_done.cancel();
    });
  }
  while (running > 0) {
    std::error_code ec;
    co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (failure) std::rethrow_exception(failure);
  co_return bodies;
}

// Removes `file` if it is there.
void remove_if_present(const fs::path& file) {
  if (::unlink(file.c_str()) != 0 && errno != ENOENT) {
    fail(file, std::string("remove: ") + std::strerror(errno));
  }
}

fs::path beside(const fs::path& file, std::string_view suffix) {
  return fs::path(file.string() + std::string(suffix));
}

// A database file's companions: a -wal left there would be replayed onto whatever file takes
// the name next, whichever database it came from.
void remove_companions(const fs::path& file) {
  remove_if_present(beside(file, "-wal"));
  remove_if_present(beside(file, "-shm"));
}

void fsync_path(const fs::path& path, int flags) {
  unique_fd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd || ::fsync(fd.get()) != 0) fail(path, "fsync: " + std::string(std::strerror(errno)));
}

struct sqlite_closer {
  void operator()(sqlite3* db) const { sqlite3_close(db); }
};

// PRAGMA integrity_check on the restored file; returns its size in pages. Throws db::error
// with what SQLite found, naming `to`.
std::uint32_t verify(const fs::path& file, const fs::path& to) {
  sqlite3* raw = nullptr;
  const int opened = sqlite3_open_v2(file.c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr);
  std::unique_ptr<sqlite3, sqlite_closer> db(raw);
  if (opened != SQLITE_OK) {
    fail(to, std::string("cannot open the result: ") + (raw ? sqlite3_errmsg(raw) : "no memory"));
  }
  auto rows = [&](const char* sql, int limit) {
    std::vector<std::string> out;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db.get(), sql, -1, &stmt, nullptr) != SQLITE_OK) {
      fail(to, std::string(sql) + ": " + sqlite3_errmsg(db.get()));
    }
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW && int(out.size()) < limit) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      out.emplace_back(text ? reinterpret_cast<const char*>(text) : "");
    }
    const std::string why = rc == SQLITE_ROW || rc == SQLITE_DONE ? "" : sqlite3_errmsg(db.get());
    sqlite3_finalize(stmt);
    if (!why.empty()) fail(to, std::string(sql) + ": " + why);
    return out;
  };
  const std::vector<std::string> problems =
      rows("PRAGMA integrity_check", integrity_problems_quoted);
  if (problems.size() != 1 || problems.front() != "ok") {
    std::string text;
    for (const std::string& p : problems) text += (text.empty() ? "" : "; ") + p;
    fail(to, "the result fails PRAGMA integrity_check: " + text);
  }
  const std::vector<std::string> pages = rows("PRAGMA page_count", 1);
  return pages.empty() ? 0 : std::uint32_t(std::stoul(pages.front()));
}

// The restored file takes `to`'s place: durable first, the old database's -wal and -shm gone
// before the new file has the name, then the rename made durable.
void put_in_place(const fs::path& temp, const fs::path& to) {
  remove_companions(temp);  // verify()'s connection leaves none, normally
  fsync_path(temp, O_RDONLY);
  remove_companions(to);
  if (::rename(temp.c_str(), to.c_str()) != 0) {
    fail(to, "rename " + temp.string() + ": " + std::strerror(errno));
  }
  const fs::path dir = to.has_parent_path() ? to.parent_path() : fs::path(".");
  fsync_path(dir, O_RDONLY | O_DIRECTORY);
}

// One WAL index's bytes from offset 0, joined from its segments (decompressed), up to the
// first one that is gone, does not decompress or is not the size its name says (damaged in
// the store): what follows it would not continue the log. Blocking: CPU.
struct joined_wal {
  std::string bytes;
  std::string broken;  // why the join ended early ("" if it did not)
};
joined_wal join_segments(const fs::path& to, std::span<const layout::segment_ref> segments,
                         const std::vector<std::optional<std::string>>& bodies) {
  joined_wal out;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    const layout::segment_ref& s = segments[i];
    if (!bodies[i]) {
      out.broken = s.key + " was listed but is gone";
      break;
    }
    std::string body;
    try {
      body = is_compressed(to, s.key, ".wal") ? decompress(*bodies[i]) : *bodies[i];
    } catch (const error& e) {
      out.broken = s.key + ": " + e.what();
      break;
    }
    const std::uint64_t expected = s.end - s.start;
    out.bytes.append(body, 0, std::min<std::uint64_t>(body.size(), expected));
    if (body.size() != expected) {
      out.broken = s.key + " holds " + std::to_string(body.size()) + " bytes, its name says " +
                   std::to_string(expected);
      break;
    }
  }
  return out;
}

// Replays one WAL index's segments (all of that index in the plan, in order) onto `temp`.
// Returns why the replay stopped before their end, or "" when all of it was applied.
asio::awaitable<std::string> replay_index(
    s3::object_store& store, std::span<const layout::segment_ref> segments,
    const std::map<std::string, wall_clock::time_point>& times, const fs::path& to,
    const fs::path& temp, restore_report& report) {
  const std::string index = "WAL index " + hex16(segments.front().walidx);
  std::vector<std::string> keys;
  for (const auto& s : segments) keys.push_back(s.key);
  const std::vector<std::optional<std::string>> bodies = co_await fetch_in_order(store, keys);
  for (const auto& body : bodies) report.bytes += body ? body->size() : 0;

  joined_wal wal;
  std::string header_problem;
  replay_result replayed;
  co_await offload([&] {
    wal = join_segments(to, segments, bodies);
    if (!wal::parse_header(bytes_of(wal.bytes), &header_problem)) return;
    header_problem.clear();
    replayed = apply_wal(temp, bytes_of(wal.bytes));
  });
  const std::string broken = wal.broken.empty() ? "" : "; " + wal.broken;
  if (!header_problem.empty())
    co_return index + ": the header is unusable (" + header_problem + ")" + broken;
  report.commits += replayed.commits;
  for (const auto& s : segments) {
    if (s.end > replayed.wal_end) break;
    ++report.segments;
    report.as_of = std::max(report.as_of, times.at(s.key));
  }
  const std::uint64_t chain_end = segments.back().end;
  if (replayed.wal_end >= chain_end && broken.empty()) co_return "";
  std::string stopped = index + ": the replay stopped at offset " +
                        std::to_string(replayed.wal_end) + " of " + std::to_string(chain_end);
  if (!replayed.stopped.empty() && replayed.stopped != "end of data") {
    stopped += " (" + replayed.stopped + ")";
  }
  co_return stopped + broken;
}

// The snapshot into `temp`, then each WAL index in turn, until the plan ends or a replay stops
// early (a later index would not continue from where it stopped).
asio::awaitable<void> replay_plan(s3::object_store& store, const layout::restore_plan& plan,
                                  const std::map<std::string, wall_clock::time_point>& times,
                                  const fs::path& to, const fs::path& temp,
                                  restore_report& report) {
  const bool compressed_snapshot = is_compressed(to, plan.snapshot->key, ".db");
  for (const auto& s : plan.segments) is_compressed(to, s.key, ".wal");

  co_await offload([&] {
    try {
      if (to.has_parent_path()) ensure_directory(to.parent_path(), 0755);
    } catch (const std::system_error& e) {
      fail(to, e.what());
    }
    remove_if_present(temp);
    remove_companions(temp);  // a crashed restore's: SQLite would replay them onto ours
  });
  const fs::path download = compressed_snapshot ? beside(temp, compressed_ext) : temp;
  const s3::object_info snapshot = co_await store.get_file(plan.snapshot->key, download);
  report.bytes += snapshot.size;
  if (compressed_snapshot) {
    co_await offload([&] {
      try {
        decompress_file(download, temp);
      } catch (const error& e) {
        fail(to, "snapshot " + plan.snapshot->key + ": " + e.what());
      }
      remove_if_present(download);
    });
  }
  report.as_of = times.at(plan.snapshot->key);

  std::size_t first = 0;
  while (first < plan.segments.size()) {
    std::size_t last = first;
    while (last < plan.segments.size() &&
           plan.segments[last].walidx == plan.segments[first].walidx) {
      ++last;
    }
    const std::span<const layout::segment_ref> index(plan.segments.data() + first, last - first);
    report.stopped_early = co_await replay_index(store, index, times, to, temp, report);
    if (!report.stopped_early.empty()) co_return;
    first = last;
  }
  report.stopped_early = plan.gap;
}

}  // namespace

asio::awaitable<restore_report> restore(s3::object_store& store, restore_request request) {
  const auto started = std::chrono::steady_clock::now();
  if (!request.generation.empty() && !layout::valid_generation(request.generation)) {
    fail(request.to, "\"" + request.generation + "\" is not a generation (32 hex digits)");
  }
  restore_report report;
  const std::vector<s3::object_info> objects = co_await list_replica(store, request.at);
  report.generation = choose_generation(objects, request.generation);
  std::vector<std::string> keys;
  std::map<std::string, wall_clock::time_point> times;
  for (const s3::object_info& o : objects) {
    keys.push_back(o.key);
    times[o.key] = o.last_modified;
  }
  const layout::restore_plan plan = layout::plan_restore(report.generation, keys);
  if (report.generation.empty() || !plan.snapshot) {
    report.took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    co_return report;
  }
  report.found = true;
  report.snapshot_walidx = plan.snapshot->walidx;

  // Built beside `to` under another name, so that `to` changes only by the final rename.
  const fs::path temp = beside(request.to, ".restoring");
  std::exception_ptr failure;
  try {
    co_await replay_plan(store, plan, times, request.to, temp, report);
    co_await offload([&] {
      report.db_pages = verify(temp, request.to);
      put_in_place(temp, request.to);
    });
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure) {
    co_await offload([&] {
      std::error_code ignored;
      for (const std::string_view suffix :
           {std::string_view(), "-wal"sv, "-shm"sv, compressed_ext}) {
        fs::remove(beside(temp, suffix), ignored);
      }
    });
    std::rethrow_exception(failure);
  }
  report.took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  log::info("database: restore done", {{"to", request.to.string()},
                                       {"generation", report.generation},
                                       {"segments", std::to_string(report.segments)},
                                       {"commits", std::to_string(report.commits)},
                                       {"pages", std::to_string(report.db_pages)},
                                       {"bytes", std::to_string(report.bytes)},
                                       {"took_ms", std::to_string(report.took.count())},
                                       {"stopped_early", report.stopped_early}});
  co_return report;
}

}  // namespace sm::db
