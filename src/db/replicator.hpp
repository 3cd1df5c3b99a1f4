// Continuous replication of the environment's database to the object store, on the executor.
// The pin, a read transaction held on our own connection,
// keeps SQLite from resetting the WAL past what is kept. Each sync copies the WAL's new whole
// transactions (checksums and salts verified) into the shadow, data/database.sqlite-litestream/
// (fsynced, with state.json saying where it stands), then uploads the shadow's segments to
// db/<generation>/wal/... and removes them. Our own checkpoints keep the WAL bounded, also while
// the store is down: the shadow holds the backlog. A new generation (meta.json, a snapshot
// through the backup API, the WAL from its start) whenever continuity is lost; a restart
// continues the saved generation when the WAL still continues it.
// SQLite and file work run through offload(); uploads are coroutines of the store.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include <chrono>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

#include "db/layout.hpp"
#include "db/shipper.hpp"
#include "s3/object_store.hpp"

struct sqlite3;

namespace sm::db {

class replicator {
 public:
  // `store` must outlive the replicator.
  replicator(asio::any_io_executor executor, s3::object_store& store, std::filesystem::path db);
  ~replicator();
  replicator(const replicator&) = delete;
  replicator& operator=(const replicator&) = delete;

  // Pins the WAL and starts a new generation.
  asio::awaitable<void> start();
  // Ships what was committed since the last sync (or a new generation when continuity was
  // lost). Returns the bytes shipped.
  asio::awaitable<std::uint64_t> sync();
  // Our own checkpoint, so that the WAL does not grow
  // without bound while pinned: everything committed is shipped first; then, behind a
  // barrier (a write transaction) that keeps every writer out, the pin lets go, a PASSIVE
  // checkpoint backfills the WAL, and a small write on the barrier's connection makes SQLite
  // restart the log; the pin is taken again. The next sync ships the new WAL index. False when
  // it could not run now (a writer was busy, or commits arrived meanwhile): try again later.
  asio::awaitable<bool> checkpoint();
  // A checkpoint, then a snapshot labelled with the new WAL index. False when the checkpoint
  // could not run now.
  asio::awaitable<bool> snapshot();
  // Deletes generations, snapshots and segments that no restore within `keep` needs. Returns
  // how many objects went.
  asio::awaitable<std::size_t> enforce_retention(std::chrono::milliseconds keep);
  // A final sync, then the pin goes. Ends run() first.
  asio::awaitable<void> stop();
  // Fenced (the lease is another owner's now): run() ends and the pin goes, nothing more is
  // written to the store.
  asio::awaitable<void> abandon();

  // Syncs every `interval` until stop(); checkpoints when the WAL passes `checkpoint_pages`
  // pages. A failure (the store down) is kept in last_error() and retried at the next tick:
  // the pinned WAL holds the backlog, nothing is dropped.
  // A new snapshot (after a checkpoint, as the first state of the next WAL index) every
  // `snapshot_interval`, or once `snapshot_bytes` of WAL were shipped since the last one, so
  // that a restore replays a bounded chain. Then retention: what a restore to any time within
  // `retention` does not need goes from the store (never the current generation's newest
  // snapshot).
  struct schedule {
    std::chrono::milliseconds interval{1000};
    std::uint64_t checkpoint_pages = 1000;
    std::chrono::milliseconds snapshot_interval{std::chrono::hours(1)};
    std::uint64_t snapshot_bytes = 256u << 20;
    std::chrono::milliseconds retention{std::chrono::hours(24)};
  };
  asio::awaitable<void> run(schedule s);

  // Status: bytes committed but not yet in the store, the last error, the last good sync.
  std::uint64_t backlog_bytes() const { return backlog_; }
  const std::string& last_error() const { return last_error_; }
  std::chrono::system_clock::time_point last_sync_at() const { return last_sync_at_; }

  // Commit -> in the store, for the newest commit shipped (from the WAL's modification time to
  // the upload's end); while a backlog waits, at least as long as it has been waiting.
  std::chrono::milliseconds lag() const;
  // Called when last_error() changes (replication failing, or resumed).
  std::function<void()> on_status_change;

  // Where the replica of `db` stood when a replicator last saved its state
  // (<db>-litestream/state.json): its generation and the shadow's end. nullopt when it never
  // did (the database was never replicated here). Blocking: call it through offload().
  static std::optional<layout::replica_point> saved_point(const std::filesystem::path& db);

  const std::string& generation() const { return generation_; }
  std::uint32_t generations_started() const { return generations_; }
  std::uint32_t snapshots_taken() const { return snapshots_; }
  // Where the shadow stands (committed and kept locally).
  const std::optional<replica_position>& position() const { return at_; }
  // The last segment in the store: its WAL index and end offset.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> stored() const {
    if (!stored_ || stored_->generation != generation_) return std::nullopt;
    return std::make_pair(stored_->walidx, stored_->end);
  }

 private:
  asio::awaitable<void> new_generation(std::string why);
  // `fresh`: re-take the pin first (the newest state); else the pin's current read snapshot.
  asio::awaitable<std::filesystem::path> write_snapshot(bool fresh);
  asio::awaitable<void> upload_snapshot(std::string generation, std::uint64_t walidx, bool fresh);
  // sync() = shadow() + upload(): the WAL's new commits into the local shadow (fsynced), then
  // the shadow's segments into the store.
  asio::awaitable<std::uint64_t> shadow();
  struct shadow_pass {
    std::optional<replica_position> at;  // where the shadow stands after the pass
    bool reset_consumed = false;         // the expected reset was seen
    std::uint64_t bytes = 0;             // WAL bytes kept
    std::optional<std::string> lost;     // continuity lost: why (a new generation is needed)
    std::string failure;                 // the shadow could not be written
    std::uint64_t unshadowed = 0;        // then: committed bytes not kept
    std::chrono::system_clock::time_point written{};  // the WAL's mtime
  };
  // Blocking (offload): reads the WAL's new bytes in windows and keeps them in the shadow. Works
  // on copies: the members change only in apply(), on the executor.
  // `first_window`: read at least this much at first (a new generation's first segment).
  shadow_pass shadow_blocking(std::optional<replica_position> at, bool reset_expected,
                              std::uint64_t first_window) const;
  asio::awaitable<std::uint64_t> apply(shadow_pass pass);
  asio::awaitable<bool> checkpoint_within(std::chrono::milliseconds patience);
  asio::awaitable<std::uint64_t> upload();
  std::filesystem::path shadow_dir() const;
  void save_state(const std::optional<replica_position>& at) const;  // blocking
  std::optional<std::pair<std::string, std::optional<replica_position>>> load_state() const;
  asio::awaitable<void> end_run();
  bool open_barrier(std::string& failure);  // blocking
  asio::awaitable<void> unpin();

  asio::any_io_executor executor_;
  s3::object_store& store_;
  std::filesystem::path db_;
  sqlite3* pin_ = nullptr;
  sqlite3* barrier_ = nullptr;
  bool reset_expected_ = false;  // our checkpoint restarted the log: the next header is ours
  bool stopping_ = false, running_ = false;
  asio::steady_timer tick_;
  asio::steady_timer run_done_;
  std::uint64_t backlog_ = 0;
  std::chrono::steady_clock::time_point snapshot_at_{};  // the last snapshot
  std::uint64_t snapshot_walidx_ = 0;
  std::uint64_t first_window_ = 0;
  std::optional<std::string> pending_generation_;  // start() could not begin one: why  // the next
                                                   // shadow pass reads at least this much at first
  std::uint64_t shadowed_since_snapshot_ = 0;
  std::uint64_t pending_bytes_ = 0;  // in the shadow, not yet in the store
  std::uint64_t unshadowed_ = 0;     // committed, but the shadow could not take it
  struct stored_position {
    std::string generation;
    std::uint64_t walidx = 0, end = 0;
  };
  std::optional<stored_position> stored_;  // the last segment the store has
  std::string last_error_;
  std::chrono::system_clock::time_point last_sync_at_{};
  std::chrono::system_clock::time_point wal_written_{};  // the WAL's mtime at the last read
  std::chrono::milliseconds last_lag_{0};
  std::optional<std::chrono::steady_clock::time_point> waiting_since_;  // a backlog waits
  std::string generation_;
  std::uint32_t generations_ = 0;
  std::uint32_t snapshots_ = 0;
  std::optional<replica_position> at_;
};

}  // namespace sm::db
