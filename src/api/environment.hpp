// The sandbox's environment as the API sees it: its configuration lifecycle (unconfigured ->
// configured, persisted in tmp/config.json) and its status. Later issues hang the lease, the
// supervised process and the components off it.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>
#include <nlohmann/json_fwd.hpp>

#include "config/config.hpp"

namespace sm::api {

struct environment_paths {
  std::filesystem::path data_dir = "data";
  std::filesystem::path tmp_dir = "tmp";

  std::filesystem::path config_file() const { return tmp_dir / "config.json"; }
  std::filesystem::path checkpoints_dir() const { return tmp_dir / "checkpoints"; }
};

class environment {
 public:
  explicit environment(environment_paths paths,
                       config::environment_lookup env = config::process_environment);

  struct load_report {
    enum class kind { none, loaded, set_aside } outcome = kind::none;
    std::string reason;                     // set_aside: why the file could not be applied
    std::vector<config::problem> problems;  // set_aside: validation problems, if any
    std::filesystem::path aside;            // set_aside: where the file went
  };
  // Start-up: applies tmp/config.json if there is one. A file that cannot be read, parsed,
  // validated or applied is renamed to config.json.invalid (never deleted) and the
  // environment stays unconfigured. Blocks: call it before the server starts.
  load_report load_saved();

  struct apply_result {
    enum class kind { applied, already_configured, busy, invalid, not_built, failed } outcome;
    std::vector<config::problem> problems;  // invalid
    std::string message;                    // not_built, failed
    std::string stack;                      // not_built: the component that is not built

    explicit apply_result(kind k, std::string why = {}, std::string component = {})
        : outcome(k), message(std::move(why)), stack(std::move(component)) {}
  };
  // POST /config: validate, save atomically (mode 0600), initialise the components.
  // Nothing is saved unless every step before saving succeeded.
  asio::awaitable<apply_result> apply(const nlohmann::json& document);

  bool configured() const { return config_.has_value(); }
  // A POST /config is at work (saving, restarting COMMAND, starting the components).
  bool applying() const { return applying_; }
  const config::configuration* current() const { return config_ ? &*config_ : nullptr; }
  const environment_paths& paths() const { return paths_; }

  // GET / (DESIGN.md 2.4).
  nlohmann::json status() const;

  // Set by the orchestrator: what GET / shows as "process" (null when unset), and what to do
  // once a POST /config has been applied (start a process that waited for a configuration).
  std::function<nlohmann::json()> process_view;
  // GET / "state": the system's state, derived by the orchestrator from what it runs; unset:
  // "running" once configured, "unconfigured" before.
  std::function<std::string()> state_view;
  // GET /metrics: Prometheus text lines of everything the orchestrator runs.
  std::function<std::string()> metrics_view;
  std::function<void()> on_applied;
  // Starts the configured components (after the configuration is saved, before POST /config
  // answers); what GET / shows as "components".
  std::function<asio::awaitable<void>(const config::configuration&)> initialise_components;
  std::function<nlohmann::json()> components_view;

 private:
  environment_paths paths_;
  config::environment_lookup env_;
  std::optional<config::configuration> config_;
  bool applying_ = false;  // a POST /config is between validation and its answer
};

}  // namespace sm::api
