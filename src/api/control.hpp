// What the API asks of the system that runs the environment (src/app implements it): its
// state for GET /, the components' start once a configuration is applied, the stop before a
// release, checkpoints and restores. Outcomes come back as values; the routes turn them into
// HTTP answers.
#pragma once

#include <string>

#include <asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "checkpoint/pipeline.hpp"
#include "config/config.hpp"

namespace sm::api {

// POST /release-lease: the lease goes only once the whole state is in the store (DESIGN 3.2).
struct release_outcome {
  enum class kind {
    released,     // everything is in the store and the lease is free (or was not held)
    incomplete,   // `missing` is not in the store: the lease is kept, everything runs again
    lost,         // the lease was lost while releasing: `missing` may not be in the store
    starting,     // a configuration is being applied or the components are starting
    shutting_down,
  } outcome = kind::released;
  bool was_held = false;                              // released: this call freed it
  nlohmann::json flushed = nlohmann::json::array();   // what the components flushed
  nlohmann::json missing = nlohmann::json::array();   // incomplete: {"part", "id"?, "error"}
};

class control {
 public:
  virtual ~control() = default;

  // GET /: the system's state (unconfigured, starting, running, degraded, error, stopping,
  // stopped), COMMAND's status (null without one), the components' ({} before any), the
  // checkpoint or restore under way (null when none).
  virtual std::string state() const = 0;
  virtual nlohmann::json process_status() const = 0;
  virtual nlohmann::json components_status() const = 0;
  virtual nlohmann::json operation_status() const = 0;
  // GET /metrics: Prometheus text of everything the system runs.
  virtual std::string metrics() const = 0;

  // A configuration was saved (POST /config, or boot with a saved one): the components start
  // (COMMAND stopped first if it ran) and the call returns once they are up or failed.
  virtual asio::awaitable<void> start_components(const config::configuration& config) = 0;
  // POST /config answered its 200: COMMAND starts if it waited for a configuration.
  virtual void configuration_applied() = 0;
  // The lease was lost while running: what writes to the store stops (fenced).
  virtual void lease_lost(std::string why) = 0;
  // Why this machine may no longer write to the store (the lease was released or lost), until
  // it restarts; empty while it may. Checkpoint, restore and delete answer 409 then.
  virtual std::string fenced() const = 0;
  // POST /release-lease: COMMAND and the components stop as at shut-down and flush their state
  // to the store, the checkpoints made here go up, and only then the lease goes (the system is
  // fenced from then on). When part of the state could not reach the store, the lease is kept
  // and what stopped starts again (the database keeps shipping, uploads are retried).
  virtual asio::awaitable<release_outcome> release_lease() = 0;

  // POST /checkpoint (id valid; empty: the next v<N>) and POST /restore (id valid).
  virtual asio::awaitable<checkpoint::create_outcome> create_checkpoint(std::string id) = 0;
  virtual asio::awaitable<checkpoint::restore_outcome> restore_checkpoint(std::string id) = 0;
};

}  // namespace sm::api
