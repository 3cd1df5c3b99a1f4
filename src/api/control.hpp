// What the API asks of the system that runs the environment (src/app implements it): its
// state for GET /, the components' start once a configuration is applied, the stop before a
// release, checkpoints and restores. Outcomes come back as values; the routes turn them into
// HTTP answers.
#pragma once

#include <string>

#include <asio/awaitable.hpp>
#include <nlohmann/json_fwd.hpp>

#include "checkpoint/pipeline.hpp"
#include "config/config.hpp"

namespace sm::api {

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
  // POST /release-lease, before the lease goes: COMMAND and the components stop as at
  // shut-down and flush their state to the store; the checkpoint uploads under way end.
  // Returns what was flushed (a JSON array).
  virtual asio::awaitable<nlohmann::json> stop_for_release() = 0;

  // POST /checkpoint (id valid; empty: the next v<N>) and POST /restore (id valid).
  virtual asio::awaitable<checkpoint::create_outcome> create_checkpoint(std::string id) = 0;
  virtual asio::awaitable<checkpoint::restore_outcome> restore_checkpoint(std::string id) = 0;
};

}  // namespace sm::api
