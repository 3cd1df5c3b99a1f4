#include "db/component.hpp"

#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "async/offload.hpp"
#include "base/clock.hpp"
#include "base/crash_point.hpp"
#include "base/file.hpp"
#include "base/log.hpp"
#include "checkpoint/copy_tree.hpp"
#include "db/backup.hpp"
#include "db/database.hpp"
#include "db/replicator.hpp"

namespace sm::db {

using json = nlohmann::json;

component::component(asio::any_io_executor executor, s3::object_store& store,
                     std::filesystem::path file, config::database_config settings, bool taken_over)
    : executor_(executor),
      store_(store),
      file_(std::move(file)),
      settings_(settings),
      taken_over_(taken_over),
      started_(executor, std::chrono::steady_clock::time_point::max()) {}

component::~component() = default;

void component::move_to(state next) {
  if (next == state_) return;
  const state from = state_;
  state_ = next;
  if (on_transition) on_transition(from, next);
}

void component::refresh_health() {
  if (state_ != state::running && state_ != state::degraded) return;
  move_to(replicator_->last_error().empty() ? state::running : state::degraded);
}

asio::awaitable<void> component::start() {
  if (state_ != state::pending && state_ != state::stopped) co_return;
  // Started again after a stop: what the last run reported goes with it.
  const bool taken_over = std::exchange(taken_over_, false);
  // Later starts (after a checkpoint's restore, a quiesce) keep what is here: the database
  // restored from a checkpoint is newer than the store's replica on purpose.
  const bool first_start = std::exchange(first_start_, false);
  replicator_.reset();
  restored_.reset();
  last_error_.clear();
  created_ = false;
  stop_requested_ = fence_requested_ = false;
  started_.expires_at(std::chrono::steady_clock::time_point::max());
  move_to(state::starting);
  std::string failure;
  try {
    bool exists = false;
    co_await offload([&] {
      std::error_code ec;
      exists = std::filesystem::exists(file_, ec);
      ensure_directory(file_.parent_path().empty() ? "." : file_.parent_path(), 0755);
    });
    // A new machine has no database, and one may hold an older one than the store's replica
    // (another machine wrote after it): the store's replica is the truth then.
    // (Named locals around co_await: g++ 12 mishandles temporaries in expressions there.)
    std::string because = "no local database";
    if (exists) because.clear();
    if (exists && first_start) because = co_await behind_the_store(taken_over);
    if (!because.empty()) {
      restore_request request;
      request.to = file_;
      restore_report report = co_await db::restore(store_, request);
      if (report.found) {
        restored_ = std::move(report);
        restored_because_ = std::move(because);
      }
    }
    init_result init;
    const std::filesystem::path shadow = file_.string() + "-litestream";
    co_await offload([&] {
      init = initialise(file_);
      ensure_directory(shadow, 0755);
    });
    created_ = init.created;
    replicator_ = std::make_unique<replicator>(executor_, store_, file_);
    replicator_->on_status_change = [this] { refresh_health(); };
    co_await replicator_->start();
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (!failure.empty()) {
    last_error_ = failure;
    replicator_.reset();
    move_to(state::failed);
    started_.cancel();
    co_return;
  }
  if (fence_requested_) {
    // The lease went while we were starting: nothing more goes to the store.
    co_await replicator_->abandon();
    last_error_ = "fenced: the lease is no longer ours, replication stopped";
    move_to(state::stopped);
    started_.cancel();
    co_return;
  }
  replicator::schedule schedule;
  schedule.interval =
      std::chrono::duration_cast<std::chrono::milliseconds>(settings_.sync_interval);
  schedule.checkpoint_pages = settings_.checkpoint_pages;
  schedule.snapshot_interval =
      std::chrono::duration_cast<std::chrono::milliseconds>(settings_.snapshot_interval);
  schedule.retention = std::chrono::duration_cast<std::chrono::milliseconds>(settings_.retention);
  // Stopping already (shut-down during the restore): stop() does the final sync.
  if (!stop_requested_) asio::co_spawn(executor_, replicator_->run(schedule), asio::detached);
  move_to(state::running);
  refresh_health();  // degraded if the store did not answer yet
  started_.cancel();
}

asio::awaitable<std::string> component::behind_the_store(bool taken_over) {
  // Judged by the data, not by the lease's history (which a deleted lease.json, or a store
  // that lost it, would make lie): where the local replica stood against the store's newest.
  std::optional<layout::replica_point> local;
  co_await offload([&] { local = replicator::saved_point(file_); });
  std::vector<std::string> keys;
  try {
    std::string token;
    do {
      s3::list_page page = co_await store_.list("db/", std::string(), token, 1000);
      for (s3::object_info& o : page.objects) keys.push_back(std::move(o.key));
      token = std::move(page.next_token);
    } while (!token.empty());
  } catch (const s3::error&) {
    // The store does not answer: a takeover must restore (the restore reports the failure);
    // otherwise the local database goes on, replicated once the store is back.
    if (taken_over) co_return "the lease was taken over";
    co_return std::string();
  }
  const std::optional<layout::replica_point> newest = layout::newest_point(keys);
  if (!newest) co_return std::string();  // nothing to restore from
  // Never replicated here: the only hint is who held the lease before.
  if (!local) co_return taken_over ? "the lease was taken over" : std::string();
  co_return layout::why_behind(*local, *newest);
}

asio::awaitable<void> component::wait_started() {
  while (state_ == state::starting) {
    std::error_code ec;
    co_await started_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<json> component::stop(supervisor::stop_reason why) {
  using supervisor::stop_reason;
  if (why == stop_reason::quiesce) co_return nullptr;
  if (why == stop_reason::fence) {
    co_await fence();
    co_return nullptr;
  }
  co_return co_await final_sync();
}

asio::awaitable<json> component::final_sync() {
  json flushed = {{"component", "database"}};
  stop_requested_ = true;
  co_await wait_started();
  if (state_ != state::running && state_ != state::degraded) co_return flushed;
  move_to(state::stopping);
  std::string failure;
  const std::uint64_t backlog = replicator_->backlog_bytes();
  try {
    co_await replicator_->stop();  // the final sync
  } catch (const std::exception& e) {
    failure = e.what();
  }
  flushed["generation"] = replicator_->generation();
  flushed["backlog_bytes_before"] = backlog;
  flushed["error"] = failure.empty() ? json(nullptr) : json(failure);
  move_to(state::stopped);
  co_return flushed;
}

asio::awaitable<void> component::fence() {
  fence_requested_ = true;
  co_await wait_started();
  if (state_ != state::running && state_ != state::degraded) co_return;
  move_to(state::stopping);
  co_await replicator_->abandon();
  last_error_ = "fenced: the lease is no longer ours, replication stopped";
  move_to(state::stopped);
}

namespace {

// The database's files, in the order they are set aside: the main file last, so that an aside
// directory holding it holds all of them.
constexpr const char* suffixes[] = {"-wal", "-shm", ""};

std::filesystem::path aside_dir(const std::filesystem::path& file) {
  return file.parent_path() / ".restore-aside";
}
std::filesystem::path trash_dir(const std::filesystem::path& file) {
  return file.parent_path() / ".restore-trash";
}

// Puts back what `aside` holds. Once it holds the main file (everything was set aside), the
// files it lacks did not exist before and are removed; otherwise nothing is removed. Safe to
// run again after a crash cut it short: the removals come first, then the main file (after
// which nothing is removed any more), then the others.
void put_back(const std::filesystem::path& file, const std::filesystem::path& aside) {
  const bool complete = std::filesystem::exists(aside / file.filename());
  if (complete) {
    for (const char* suffix : suffixes) {
      if (!std::filesystem::exists(aside / with_suffix(file.filename(), suffix))) {
        std::filesystem::remove(with_suffix(file, suffix));
      }
    }
  }
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::filesystem::path saved = aside / with_suffix(file.filename(), suffix);
    if (std::filesystem::exists(saved)) {
      std::filesystem::rename(saved, with_suffix(file, suffix));
      crash_point("recovery.db_first_back");
    }
  }
  std::filesystem::remove(with_suffix(file, ".restoring"));
  fsync_directory_of(file);
  checkpoint::remove_tree(aside);
}

}  // namespace

asio::awaitable<supervisor::snapshot_info> component::snapshot(const std::filesystem::path& into) {
  supervisor::snapshot_info info;
  co_await offload_thread([&] {
    const std::filesystem::path to = into / file_.filename();
    std::optional<backup_result> b = clone(file_, to);
    info.method = b ? "reflink" : "backup API";
    if (!b) b = backup(file_, to);
    info.file = file_.filename().string();
    info.bytes = b->bytes;
    info.pages = b->pages;
    info.sha256 = b->sha256;
  });
  co_return info;
}

asio::awaitable<void> component::verify(const std::filesystem::path& from,
                                        const supervisor::snapshot_info& copy) {
  std::string digest;
  co_await offload_bulk([&] { digest = sha256_file(from / copy.file); });
  if (digest != copy.sha256) {
    throw std::runtime_error("the checkpoint's database copy fails its checksum");
  }
}

asio::awaitable<void> component::restore(const std::filesystem::path& from,
                                         const supervisor::snapshot_info& copy) {
  co_await offload_bulk([&] {
    const std::filesystem::path aside = aside_dir(file_);
    checkpoint::remove_tree(aside);
    std::filesystem::create_directories(aside);
    for (const char* suffix : suffixes) {
      const std::filesystem::path current = with_suffix(file_, suffix);
      if (std::filesystem::exists(current)) {
        std::filesystem::rename(current, aside / with_suffix(file_.filename(), suffix));
      }
    }
    fsync_directory_of(aside / file_.filename());
    fsync_directory_of(file_);
    crash_point("restore.db_after_aside");
    // By reflink where the file system can: a restore costs no copy of the data there.
    const std::filesystem::path staged = with_suffix(file_, ".restoring");
    std::filesystem::remove(staged);
    checkpoint::copy_file(from / copy.file, staged);  // fsynced
    std::filesystem::rename(staged, file_);
    fsync_directory_of(file_);
  });
}

asio::awaitable<void> component::keep_restored() {
  co_await offload_bulk([&] {
    checkpoint::remove_tree(trash_dir(file_));
    std::filesystem::rename(aside_dir(file_), trash_dir(file_));
  });
}

asio::awaitable<void> component::undo_restore() {
  co_await offload_bulk([&] {
    if (std::filesystem::exists(aside_dir(file_))) put_back(file_, aside_dir(file_));
  });
}

asio::awaitable<void> component::remove_replaced() {
  co_await offload_bulk([&] { checkpoint::remove_tree(trash_dir(file_)); });
}

void component::roll_back_restore(const std::filesystem::path& file) {
  if (std::filesystem::exists(aside_dir(file))) put_back(file, aside_dir(file));
  std::filesystem::remove(with_suffix(file, ".restoring"));
}

void component::roll_forward_restore(const std::filesystem::path& file) {
  if (std::filesystem::exists(aside_dir(file))) {
    checkpoint::remove_tree(trash_dir(file));
    std::filesystem::rename(aside_dir(file), trash_dir(file));
  }
  checkpoint::remove_tree(trash_dir(file));
}

void component::remove_restore_garbage(const std::filesystem::path& file) {
  checkpoint::remove_tree(trash_dir(file));
}

json component::event_fields() const {
  // Degraded: why replication fails; otherwise why it cannot start (or null).
  const json s = status();
  return {
      {"last_error", state_ == state::degraded ? s["replication"]["last_error"] : s["last_error"]}};
}

json component::status() const {
  json out = {{"state", supervisor::name_of(state_)},
              {"file", file_.string()},
              {"created", created_},
              {"last_error", last_error_.empty() ? json(nullptr) : json(last_error_)}};
  if (restored_) {
    out["restored"] = {
        {"generation", restored_->generation},
        {"segments", restored_->segments},
        {"commits", restored_->commits},
        {"bytes", restored_->bytes},
        {"took_ms", restored_->took.count()},
        {"because", restored_because_},
        {"stopped_early",
         restored_->stopped_early.empty() ? json(nullptr) : json(restored_->stopped_early)}};
  } else {
    out["restored"] = nullptr;
  }
  if (!replicator_) {
    out["replication"] = nullptr;
    return out;
  }
  const replicator& r = *replicator_;
  const auto last_sync = r.last_sync_at();
  // In the store, and kept locally in the shadow (data/database.sqlite-litestream/).
  json position = nullptr, shadowed = nullptr;
  if (const auto stored = r.stored()) {
    position = {{"wal_index", stored->first}, {"offset", stored->second}};
  }
  if (r.position()) {
    shadowed = {{"wal_index", r.position()->walidx}, {"offset", r.position()->durable_end}};
  }
  out["replication"] = {
      {"generation", r.generation().empty() ? json(nullptr) : json(r.generation())},
      {"position", std::move(position)},
      {"shadowed", std::move(shadowed)},
      {"lag_ms", r.lag().count()},
      {"last_sync_at", last_sync.time_since_epoch().count() == 0
                           ? json(nullptr)
                           : json(format_rfc3339(last_sync, true))},
      {"backlog_bytes", r.backlog_bytes()},
      {"last_error", r.last_error().empty() ? json(nullptr) : json(r.last_error())},
      {"generations_started", r.generations_started()},
      {"snapshots", r.snapshots_taken()},
      {"sync_interval", format_duration(settings_.sync_interval)},
  };
  return out;
}

void component::append_metrics(std::string& out) const {
  out +=
      "# HELP state_manager_database_state The database component's state (1 for the current "
      "one).\n"
      "# TYPE state_manager_database_state gauge\n";
  for (state s : {state::pending, state::starting, state::running, state::degraded, state::stopping,
                  state::stopped, state::failed}) {
    out += "state_manager_database_state{state=\"" + std::string(supervisor::name_of(s)) + "\"} " +
           (s == state_ ? "1" : "0") + "\n";
  }
  if (!replicator_) return;
  const replicator& r = *replicator_;
  const auto last_sync = r.last_sync_at();
  out +=
      "# HELP state_manager_database_replication_lag_seconds Commit to object store, for the "
      "newest commit shipped (or the age of a waiting backlog).\n"
      "# TYPE state_manager_database_replication_lag_seconds gauge\n"
      "state_manager_database_replication_lag_seconds " +
      std::to_string(r.lag().count() / 1000.0) +
      "\n"
      "# HELP state_manager_database_replication_backlog_bytes Committed WAL bytes not yet in "
      "the store.\n"
      "# TYPE state_manager_database_replication_backlog_bytes gauge\n"
      "state_manager_database_replication_backlog_bytes " +
      std::to_string(r.backlog_bytes()) +
      "\n"
      "# HELP state_manager_database_replication_failing 1 while syncs to the store fail.\n"
      "# TYPE state_manager_database_replication_failing gauge\n"
      "state_manager_database_replication_failing " +
      (r.last_error().empty() ? "0" : "1") +
      "\n"
      "# HELP state_manager_database_replication_last_sync_timestamp_seconds The last good "
      "sync (Unix time).\n"
      "# TYPE state_manager_database_replication_last_sync_timestamp_seconds gauge\n"
      "state_manager_database_replication_last_sync_timestamp_seconds " +
      std::to_string(std::chrono::duration<double>(last_sync.time_since_epoch()).count()) +
      "\n"
      "# HELP state_manager_database_generations_total Replication generations started.\n"
      "# TYPE state_manager_database_generations_total counter\n"
      "state_manager_database_generations_total " +
      std::to_string(r.generations_started()) + "\n";
}

}  // namespace sm::db
