// The sandbox's environment as the API sees it: its configuration lifecycle (unconfigured ->
// configured, persisted in tmp/config.json), the object store and the lease on it, and its
// status (GET /), with the system's part asked of the attached control.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json_fwd.hpp>

#include "base/duration.hpp"
#include "config/config.hpp"

namespace sm::s3 {
class object_store;
}
namespace sm::lease {
class lease;
}

namespace sm::api {

class control;

struct environment_paths {
  std::filesystem::path data_dir = "data";
  std::filesystem::path tmp_dir = "tmp";

  std::filesystem::path config_file() const { return tmp_dir / "config.json"; }
  std::filesystem::path checkpoints_dir() const { return tmp_dir / "checkpoints"; }
  std::filesystem::path owner_file() const { return tmp_dir / "lease-owner"; }
};

// The object store and the lease on it.
struct storage_settings {
  duration lease_ttl = std::chrono::seconds(30);
  bool wait_for_lease = false;  // else another live owner's lease answers 409
  std::string owner;            // empty: lease::owner_id(paths.owner_file())
};

class environment {
 public:
  explicit environment(environment_paths paths, storage_settings storage = {},
                       config::environment_lookup env = config::process_environment);
  ~environment();

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
    enum class kind {
      applied,
      already_configured,
      busy,
      invalid,
      failed,
      storage_failed,  // the store refused, did not answer, or shut-down began: `store`, code
      lease_held,      // another live owner (409): details name it
    } outcome;
    std::vector<config::problem> problems;  // invalid
    std::string message;                    // failed, storage_failed, lease_held
    // storage_failed: why the store could not be claimed.
    enum class store_problem { refused, unreachable, shutting_down } store = store_problem::refused;
    std::string code;                  // storage_failed: the S3 error code
    std::string holder, holder_until;  // lease_held

    explicit apply_result(kind k, std::string why = {}) : outcome(k), message(std::move(why)) {}
  };
  // POST /config: validate, reach the store and take the lease, save atomically (mode 0600),
  // back the configuration up to the store, initialise the components. Nothing is saved
  // unless every step before saving succeeded.
  asio::awaitable<apply_result> apply(const nlohmann::json& document);

  bool configured() const { return config_.has_value(); }
  // A POST /config is at work (saving, restarting COMMAND, starting the components).
  bool applying() const { return applying_; }
  const config::configuration* current() const { return config_ ? &*config_ : nullptr; }
  const environment_paths& paths() const { return paths_; }

  // GET /.
  nlohmann::json status() const;

  // Boot with a saved configuration: the store and the lease, retried (with the reason in
  // GET /) until they are had or `stop` says to give up. True once claimed.
  asio::awaitable<bool> claim_saved(std::function<bool()> stop);
  // Shut-down has begun: waits for the lease or for a retry end now (a waiting POST /config
  // answers 503), and the configuration backup stops retrying.
  void shut_down();
  // Stops renewing and frees the lease (POST /release-lease, shut-down). True if it was held.
  asio::awaitable<bool> release_lease();
  s3::object_store* store() const { return store_.get(); }
  // Why the configuration's backup is not in the store yet (pending, or failing); empty when
  // it is, or when there is no store.
  std::string config_backup_problem() const;
  bool lease_held() const;
  // The lease was last acquired from another owner (expired or released by them): what this
  // machine holds locally may be older than the store's state.
  bool lease_taken_over() const;
  // The system that runs what the configuration names: told when a configuration is saved
  // and applied and when the lease is lost, asked for its part of GET /. Must outlive this.
  void attach(control& system) { system_ = &system; }
  // GET / "checkpoints": {"count", "latest"}, kept up to date by whoever changes them (no file
  // system walk on the executor for a status request).
  void set_checkpoints_summary(nlohmann::json summary);
  // The upload of each checkpoint to the store: {"state": pending|uploading|done|failed,
  // "bytes", "error"}; null when this process did not upload it.
  void set_upload_status(const std::string& id, nlohmann::json status);
  nlohmann::json upload_status(const std::string& id) const;

 private:
  control* system_ = nullptr;
  environment_paths paths_;
  config::own_paths own_;  // paths_ for the validator
  config::environment_lookup env_;
  std::optional<config::configuration> config_;
  bool applying_ = false;  // a POST /config is between validation and its answer
  // `stop` (may be empty) ends a wait for the lease as shut-down does.
  asio::awaitable<std::optional<apply_result>> claim(const config::configuration& config,
                                                     std::function<bool()> stop);
  asio::awaitable<void> back_up_config(std::string document);
  // Waits `d`, or less if shut_down() is called meanwhile.
  asio::awaitable<void> pause(duration d);
  bool stopping_ = false;
  std::vector<asio::steady_timer*> pauses_;
  nlohmann::json storage_status() const;
  std::unique_ptr<nlohmann::json> checkpoints_summary_;
  std::unique_ptr<nlohmann::json> uploads_;  // {"<id>": status}

  storage_settings storage_;
  std::unique_ptr<s3::object_store> store_;
  std::unique_ptr<s3::object_store> lease_store_;  // the lease's own lane (lease::make_store)
  std::unique_ptr<lease::lease> lease_;
  std::string claim_error_;  // boot: why the store or the lease is not had yet
  struct backup_state {
    std::string state = "none";  // none, pending, done, failed (retrying)
    std::string last_error;
    unsigned attempts = 0;
  } backup_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace sm::api
