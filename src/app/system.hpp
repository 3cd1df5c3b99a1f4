// The system (docs/architecture.md): owns COMMAND and the components the configuration names,
// starts them in dependency order and stops them in reverse, for every reason through one path
// (stop_all); derives the system's state; publishes typed events that GET /events streams; runs
// checkpoints and restores through the pipelines of src/checkpoint, and uploads checkpoints to
// the store in the background. It owns the api::environment (the configuration, the store and
// the lease on it), which tells it through api::control when a configuration is applied and
// when the lease is lost. It logs what the parts do.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "api/control.hpp"
#include "app/events.hpp"
#include "async/gate.hpp"
#include "checkpoint/pipeline.hpp"
#include "cli/server_options.hpp"
#include "supervisor/component.hpp"

namespace sm {
class event_bus;
}
namespace sm::api {
class environment;
}
namespace sm::http {
class server;
}
namespace sm::proc {
class reaper;
class line_output;
class freezer;
}  // namespace sm::proc
namespace sm::uring {
class ring;
}
namespace sm::supervisor {
class process_component;
}

namespace sm::app {

class system final : public api::control, private checkpoint::host {
 public:
  // The environment (configuration, store, lease) is made here, from the command line's
  // directories and lease settings, and attached to this system.
  system(asio::any_io_executor executor, const cli::server_options& opts, event_bus& events,
         proc::reaper& reaper);
  ~system() override;
  system(const system&) = delete;
  system& operator=(const system&) = delete;

  // The configuration, the object store and the lease on it: the system's, and what the routes
  // read and apply configurations through.
  api::environment& environment() { return *env_holder_; }

  // Start-up: COMMAND is declared (it starts in begin()).
  void declare_command();
  // For GET /metrics: the API server's connections.
  void attach(const http::server& server) { server_ = &server; }
  // Serving now: with a saved configuration, the store and the lease, then the components,
  // then COMMAND; unconfigured, COMMAND at once (unless --wait-for-config).
  void begin();
  // SIGTERM, SIGINT, or COMMAND ended for good: shut-down begins (once). `status` is the exit
  // status, or -1 for COMMAND's under --restart never.
  void request_shutdown(std::string_view reason, int status);
  asio::awaitable<void> shutdown_requested();
  // Shut-down, the reverse of start-up: the operation under way finishes, COMMAND and the
  // components stop (final syncs), the uploads get a bound, the lease goes, the output drains.
  // Returns the exit status.
  asio::awaitable<int> shut_down();
  // The end of the event stream: everything stopped.
  void stopped();
  // A signal for COMMAND's process group; false when none runs.
  bool forward_signal(int signal);

  // api::control
  std::string state() const override;
  nlohmann::json process_status() const override;
  nlohmann::json components_status() const override;
  nlohmann::json operation_status() const override;
  std::string metrics() const override;
  asio::awaitable<void> start_components(const config::configuration& config) override;
  void configuration_applied() override;
  void lease_lost(std::string why) override;
  std::string fenced() const override { return fenced_; }
  asio::awaitable<api::release_outcome> release_lease() override;
  asio::awaitable<checkpoint::create_outcome> create_checkpoint(std::string id) override;
  asio::awaitable<checkpoint::restore_outcome> restore_checkpoint(std::string id) override;

 private:
  // checkpoint::host
  asio::awaitable<checkpoint::quiesced> quiesce(bool may_freeze) override;
  asio::awaitable<void> resume(const checkpoint::quiesced& q) override;
  bool may_start() const override { return !shutting_down_ && fenced_.empty(); }
  std::vector<supervisor::component*> stateful_components() override;
  void step(const std::string& id, const std::string& step) override;

  // Every component, in start order, then COMMAND; stop_all goes in reverse.
  std::vector<supervisor::component*> all();
  // Starts the components (those in `only`, when given) in dependency order.
  asio::awaitable<void> start_all(const std::vector<supervisor::component*>* only = nullptr);
  // The one stop path: COMMAND first, then the components in reverse start order, each for
  // `why`. Returns what they flushed; `stopped` (when given) gets those it stopped, in start
  // order.
  asio::awaitable<nlohmann::json> stop_all(supervisor::stop_reason why,
                                           std::vector<supervisor::component*>* stopped = nullptr);
  // From now until exit nothing is written to the store and nothing starts again (DESIGN 3.2).
  void fence(std::string why);
  void start_command();
  void watch(supervisor::component& c, part_changed::source of);
  void publish(const event& e);
  void publish_state();
  // Operations: refused (busy, shutting down) or begun (holding a pass of operations_).
  template <class Outcome>
  std::optional<Outcome> refuse(const std::string& id) const;
  gate::pass begin_operation(const char* kind, const std::string& id);
  void end_operation(bool ok);
  checkpoint::paths checkpoint_paths() const;
  decltype(checkpoint::copy_options::move_data) data_mover();
  // Uploads of checkpoints to the store, in the background.
  void start_upload(const std::string& id);
  // Under a pass of uploads_; returns why it failed (empty: uploaded).
  asio::awaitable<std::string> upload(std::string id);
  void resume_uploads();
  asio::awaitable<void> resume_uploads_now(gate::pass scanning);  // held until it ends
  // Every local checkpoint whose manifest the store lacks goes up, one at a time; returns
  // those that still are not there ({"part": "checkpoint", "id", "error"}).
  asio::awaitable<nlohmann::json> upload_missing();
  // A failed upload is tried again while running: a scan of what the store lacks after a
  // delay that doubles from 2 s to a minute (back to 2 s once one succeeds).
  void schedule_upload_retry();
  void cancel_upload_retry();

  asio::any_io_executor executor_;
  const cli::server_options& opts_;
  std::unique_ptr<api::environment> env_holder_;
  api::environment& env_;  // *env_holder_
  event_bus& events_;
  proc::reaper& reaper_;
  const http::server* server_ = nullptr;
  const std::chrono::steady_clock::time_point boot_ = std::chrono::steady_clock::now();
  // --log-prefix: children's lines reach our stdout and stderr through one writer each.
  std::shared_ptr<proc::line_output> prefixed_output_[2];

  std::unique_ptr<supervisor::process_component> command_;
  std::vector<std::unique_ptr<supervisor::component>> components_;  // in start order
  bool components_made_ = false;  // a configuration was applied (GET /metrics' families)

  // Shut-down is requested once; the exit status is fixed when it is.
  bool shutting_down_ = false, shut_down_ = false;
  int exit_status_ = 0;
  asio::steady_timer shutdown_timer_;

  std::uint64_t event_id_ = 0;
  std::string last_state_;

  // The checkpoint or restore under way: one at a time, each under a pass; shut-down waits for
  // it (stopping underneath it could leave half a swap).
  gate operations_;
  nlohmann::json operation_ = nullptr;
  checkpoint::progress progress_;
  std::unique_ptr<proc::freezer> freezer_;  // made on the first freeze
  // copy_tree's read/write fallback as io_uring requests; made on first use.
  std::shared_ptr<uring::ring> copy_ring_;
  bool copy_ring_refused_ = false;

  // A checkpoint is usable here at once; release-lease waits for its upload, shut-down for a
  // bound, and one that did not finish goes up again when a configuration is next applied.
  // Once this machine lets go of the lease the gate closes (no upload starts: the prefix may be
  // another's), and a loss or shut-down's bound cancels those under way between two objects.
  gate uploads_;
  std::set<std::string> uploading_;  // ids whose upload runs
  // Ids another machine's checkpoint holds in the store: never uploaded, never retried, and not
  // what a release waits for (there is nothing it could do about them).
  std::set<std::string> taken_elsewhere_;
  bool resume_scanning_ = false;
  asio::steady_timer upload_retry_;  // armed while a retry waits (under a pass of uploads_)
  bool upload_retry_armed_ = false;
  std::chrono::seconds upload_retry_delay_{2};

  // Why this machine may no longer write to the store (released, lost); empty while it may.
  std::string fenced_;
  // A release is at work: no upload retry is armed meanwhile (the release tries once more
  // itself), and start_components is not (a release waits for neither).
  bool releasing_ = false;
  bool starting_components_ = false;
};

}  // namespace sm::app
