// The built-in `database` component (stacks: "database", "sqlite", "litestream"): the
// environment's SQLite database (data/database.sqlite) restored from the store when this machine
// has none or took the lease over from another owner, prepared (WAL mode, state_manager_meta),
// and replicated continuously until stopped, when a final sync ships everything committed.
// Its state and replication status are what GET / shows under components.database.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json_fwd.hpp>

#include "config/config.hpp"
#include "db/restore.hpp"
#include "s3/object_store.hpp"
#include "supervisor/component.hpp"

namespace sm::db {

class replicator;

class component final : public supervisor::component {
 public:
  using state = supervisor::state;

  // `store` must outlive the component. `file`: data/database.sqlite. `taken_over`: the lease
  // came from another owner. The first start restores from the store over a local file that is
  // behind the store's replica, or, never replicated here, when the lease was taken over.
  component(asio::any_io_executor executor, s3::object_store& store, std::filesystem::path file,
            config::database_config settings, bool taken_over);
  ~component() override;
  component(const component&) = delete;
  component& operator=(const component&) = delete;

  const std::string& name() const override { return name_; }
  // Restores when the file is missing or the lease was taken over (first start only) and the
  // store has a replica, prepares the file, starts replicating (a new generation when the file
  // was replaced meanwhile, by a restore). Never throws: a failure leaves the component failed,
  // with the reason in status().
  asio::awaitable<void> start() override;
  // shutdown, release, restore: a final sync (everything committed reaches the store), then
  // replication stops; returns {"component": "database", "generation", "bytes", "error"}.
  // fence: replication ends without writing anything more to the store. quiesce: nothing (a
  // snapshot is consistent while it runs).
  asio::awaitable<nlohmann::json> stop(supervisor::stop_reason why) override;

  state current() const override { return state_; }
  nlohmann::json status() const override;                // components.database in GET /
  void append_metrics(std::string& out) const override;  // state_manager_database_*
  nlohmann::json event_fields() const override;

  // The database copied by reflink under a write lock where the file system can, else through
  // SQLite's backup API; both on a thread of their own.
  bool holds_state() const override { return true; }
  asio::awaitable<supervisor::snapshot_info> snapshot(const std::filesystem::path& into) override;
  asio::awaitable<void> verify(const std::filesystem::path& from,
                               const supervisor::snapshot_info& copy) override;
  // The current file (and its -wal, -shm) goes to <data>/.restore-aside/ until keep_restored()
  // (then .restore-trash/, removed by remove_replaced()) or undo_restore().
  asio::awaitable<void> restore(const std::filesystem::path& from,
                                const supervisor::snapshot_info& copy) override;
  asio::awaitable<void> keep_restored() override;
  asio::awaitable<void> undo_restore() override;
  asio::awaitable<void> remove_replaced() override;

  // Start-up, before any component exists, for checkpoint::recover_interrupted_restore (the
  // restore journal says which): a restore that a crash cut short before its commit is rolled
  // back (the files set aside are put back), one cut short after it rolled forward (they go),
  // and a finished one's garbage removed. Each is idempotent. Blocking.
  static void roll_back_restore(const std::filesystem::path& file);
  static void roll_forward_restore(const std::filesystem::path& file);
  static void remove_restore_garbage(const std::filesystem::path& file);

 private:
  void move_to(state next);
  void refresh_health();  // running <-> degraded from the replicator's last error
  asio::awaitable<nlohmann::json> final_sync();
  asio::awaitable<void> fence();
  // Why the local database is older than the store's replica (its replica's generation or
  // position against the store's newest), or empty when it is not, or the store has none.
  // `taken_over` decides only for a database never replicated here, or a store that does not
  // answer.
  asio::awaitable<std::string> behind_the_store(bool taken_over);

  asio::any_io_executor executor_;
  s3::object_store& store_;
  std::filesystem::path file_;
  config::database_config settings_;
  std::string name_ = "database";
  bool taken_over_;
  bool first_start_ = true;  // the one start that judges the local database against the store
  state state_ = state::pending;
  std::string last_error_;  // why it failed to start
  std::unique_ptr<replicator> replicator_;
  std::optional<restore_report> restored_;
  std::string restored_because_;  // no local database, or why the local one was behind
  bool created_ = false;
  bool stop_requested_ = false, fence_requested_ = false;  // while starting
  asio::steady_timer started_;                             // cancelled once start() is over
  asio::awaitable<void> wait_started();
};

}  // namespace sm::db
