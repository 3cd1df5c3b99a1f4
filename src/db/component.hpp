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

namespace sm::db {

class replicator;

class component {
 public:
  // pending -> starting -> running <-> degraded (replication failing) -> stopping -> stopped;
  // failed when it cannot start (the file is not a database, the restore failed).
  enum class state { pending, starting, running, degraded, stopping, stopped, failed };
  static std::string_view name_of(state s);

  // `store` must outlive the component. `file`: data/database.sqlite.
  component(asio::any_io_executor executor, s3::object_store& store, std::filesystem::path file,
            config::database_config settings);
  ~component();
  component(const component&) = delete;
  component& operator=(const component&) = delete;

  // Restores when the file is missing or `taken_over` (the lease came from another owner) and
  // the store has a replica, prepares the file, starts replicating. Never throws: a failure
  // leaves the component failed, with the reason in status().
  asio::awaitable<void> start(bool taken_over);
  // A final sync (everything committed reaches the store), then replication stops. Returns
  // what was flushed: {"component": "database", "generation", "bytes", "error"}.
  asio::awaitable<nlohmann::json> stop();
  // The lease was lost: replication ends without writing anything more to the store.
  asio::awaitable<void> fence();

  state current() const { return state_; }
  nlohmann::json status() const;  // components.database in GET /
  // state_manager_database_* families.
  void append_metrics(std::string& out) const;

  std::function<void(state from, state to)> on_transition;

 private:
  void move_to(state next);
  void refresh_health();  // running <-> degraded from the replicator's last error

  asio::any_io_executor executor_;
  s3::object_store& store_;
  std::filesystem::path file_;
  config::database_config settings_;
  state state_ = state::pending;
  std::string last_error_;  // why it failed to start
  std::unique_ptr<replicator> replicator_;
  std::optional<restore_report> restored_;
  bool created_ = false;
  bool stop_requested_ = false, fence_requested_ = false;  // while starting
  asio::steady_timer started_;                             // cancelled once start() is over
  asio::awaitable<void> wait_started();
};

}  // namespace sm::db
