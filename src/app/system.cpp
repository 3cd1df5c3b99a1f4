#include "app/system.hpp"

#include <algorithm>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

#include "api/environment.hpp"
#include "app/factory.hpp"
#include "app/log_transitions.hpp"
#include "async/event_bus.hpp"
#include "async/offload.hpp"
#include "base/log.hpp"
#include "checkpoint/local_store.hpp"
#include "checkpoint/remote.hpp"
#include "http/server.hpp"
#include "proc/child.hpp"
#include "proc/freezer.hpp"
#include "proc/output.hpp"
#include "supervisor/process_component.hpp"
#include "uring/copy.hpp"
#include "uring/ring.hpp"
#include "version.h"

namespace sm::app {

namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using supervisor::stop_reason;

// How long shut-down waits for checkpoint uploads once everything else has stopped; what is not
// up by then stops between two objects and goes up again at the next start.
constexpr auto upload_grace = 30s;
constexpr auto forever = std::chrono::hours(24 * 365);

}  // namespace

system::system(asio::any_io_executor executor, const cli::server_options& opts, event_bus& events,
               proc::reaper& reaper)
    : executor_(executor),
      opts_(opts),
      env_holder_(std::make_unique<api::environment>(
          api::environment_paths{opts.data_dir, opts.tmp_dir},
          api::storage_settings{opts.lease_ttl, opts.wait_for_lease, {}})),
      env_(*env_holder_),
      events_(events),
      reaper_(reaper),
      shutdown_timer_(executor, std::chrono::steady_clock::time_point::max()),
      operations_(executor),
      uploads_(executor),
      upload_retry_(executor) {
  if (opts.log_prefix) {
    for (int i = 0; i < 2; ++i) {
      prefixed_output_[i] = std::make_shared<proc::line_output>(executor, i + 1);
    }
  }
  env_.attach(*this);
  last_state_ = state();
}

system::~system() = default;

// --- Start-up ------------------------------------------------------------------------------

void system::declare_command() {
  if (opts_.command.empty()) return;
  command_ = make_command(executor_, reaper_, opts_, prefixed_output_);
  watch(*command_, part_changed::source::process);
  // Ended for good (--restart never, or on-failure after a clean exit): so do we, with its
  // status, as a drop-in container init.
  command_->on_ended = [this](const proc::exit_status& status) {
    request_shutdown("COMMAND ended", status.shell_status());
  };
}

void system::begin() {
  if (env_.configured()) {
    // Booted with a saved configuration: the store and the lease first, retried until had
    // (GET / says why not yet), then the components, then COMMAND.
    asio::co_spawn(
        executor_,
        [this]() -> asio::awaitable<void> {
          // A release before the claim is had (a fenced machine) ends it: the lease, if it came
          // meanwhile, is given back.
          if (!co_await env_.claim_saved([this] { return shutting_down_ || !fenced_.empty(); })) {
            if (!fenced_.empty()) {
              log::info("no longer claiming the environment's storage", {{"why", fenced_}});
            }
            co_return;
          }
          co_await start_components(*env_.current());
          start_command();
          resume_uploads();
        },
        asio::detached);
  } else if (!opts_.wait_for_config) {
    start_command();
  }
}

void system::start_command() {
  if (!command_ || shutting_down_ || !fenced_.empty()) return;
  const auto s = command_->current();
  if (s != supervisor::state::pending && s != supervisor::state::stopped) return;
  log::info("starting COMMAND", {{"command", opts_.command.front()}});
  asio::co_spawn(executor_, command_->start(), asio::detached);
}

asio::awaitable<void> system::start_components(const config::configuration& config) {
  // COMMAND ran before there was a configuration: it is stopped first, so that it never sees
  // state from before the restore, and starts again once the components are up. Its history
  // (restarts, last exit) stays.
  if (command_ && command_->current() != supervisor::state::pending && !shutting_down_) {
    log::info("stopping COMMAND to apply the configuration");
    co_await command_->stop(stop_reason::restore);
  }
  starting_components_ = true;
  struct done_guard {
    bool& flag;
    ~done_guard() { flag = false; }
  } starting{starting_components_};
  components_ = make_components(executor_, reaper_, opts_, config, env_, prefixed_output_);
  components_made_ = true;
  for (auto& c : components_) watch(*c, part_changed::source::component);
  publish_state();
  co_await start_all();
  publish_state();
}

asio::awaitable<void> system::start_all(const std::vector<supervisor::component*>* only) {
  // Each component once what it depends on runs; one whose dependency failed (or was not
  // running within its patience) fails too. A long start (the database's restore) is awaited
  // before the next component starts; the processes' readiness is awaited at the end, each by
  // its own deadline.
  std::vector<std::chrono::steady_clock::time_point> running_by(components_.size());
  auto remaining = [&](std::size_t i) {
    const auto left = running_by[i] - std::chrono::steady_clock::now();
    return std::max(duration{0}, std::chrono::duration_cast<duration>(left));
  };
  for (std::size_t i = 0; i < components_.size(); ++i) {
    supervisor::component& c = *components_[i];
    if (shutting_down_ || !fenced_.empty()) break;
    // A first start takes what is pending: one stopped before its turn (a lost lease during the
    // database's restore) stays stopped. A resume takes what its quiesce stopped.
    const bool startable = only ? std::find(only->begin(), only->end(), &c) != only->end() &&
                                      c.current() == supervisor::state::stopped
                                : c.current() == supervisor::state::pending;
    if (!startable) continue;
    std::string failed_dependency;
    for (const std::string& dep : c.depends_on()) {
      const auto it = std::find_if(components_.begin(), components_.end(),
                                   [&](const auto& d) { return d->name() == dep; });
      if (it == components_.end() ||
          !co_await (*it)->wait_running(remaining(std::size_t(it - components_.begin())))) {
        failed_dependency = dep;
        break;
      }
    }
    if (!failed_dependency.empty()) {
      c.fail_before_start("dependency \"" + failed_dependency + "\" is not running");
      continue;
    }
    running_by[i] = std::chrono::steady_clock::now() + c.patience();
    co_await c.start();
  }
  for (std::size_t i = 0; i < components_.size(); ++i) {
    co_await components_[i]->wait_running(remaining(i));
  }
}

void system::configuration_applied() {
  start_command();
  publish_state();
  resume_uploads();
}

// --- Stopping ------------------------------------------------------------------------------

std::vector<supervisor::component*> system::all() {
  std::vector<supervisor::component*> out;
  for (auto& c : components_) out.push_back(c.get());
  if (command_) out.push_back(command_.get());
  return out;
}

asio::awaitable<json> system::stop_all(stop_reason why,
                                       std::vector<supervisor::component*>* stopped) {
  json flushed = json::array();
  const std::vector<supervisor::component*> parts = all();
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    const supervisor::state before = (*it)->current();
    json f = co_await (*it)->stop(why);
    if (stopped && before != supervisor::state::stopped &&
        (*it)->current() == supervisor::state::stopped) {
      stopped->insert(stopped->begin(), *it);
    }
    if (f.is_null()) continue;
    if (!f.contains("error")) {
      // It had nothing to flush (it was not running).
    } else if (!f["error"].is_null()) {
      const json& error = f["error"];
      log::error("component " + (*it)->name() +
                     ": flushing to the store failed; what was not shipped stays local",
                 {{"reason", std::string(supervisor::name_of(why))},
                  {"error", error.is_string() ? error.get<std::string>() : error.dump()}});
    } else {
      log::info("component " + (*it)->name() + ": everything is in the store",
                {{"reason", std::string(supervisor::name_of(why))}});
    }
    flushed.push_back(std::move(f));
  }
  co_return flushed;
}

void system::fence(std::string why) {
  if (!fenced_.empty()) return;
  fenced_ = why;
  cancel_upload_retry();
  uploads_.cancel("not uploaded: " + why);
  publish_state();
}

void system::lease_lost(std::string why) {
  log::error("lease lost: stopping the components (fenced)", {{"why", why}});
  fence("the lease was lost (" + why + ")");
  asio::co_spawn(
      executor_, [this]() -> asio::awaitable<void> { co_await stop_all(stop_reason::fence); },
      asio::detached);
}

asio::awaitable<api::release_outcome> system::release_lease() {
  using kind = api::release_outcome::kind;
  api::release_outcome out;
  if (shutting_down_) {
    out.outcome = kind::shutting_down;
    co_return out;
  }
  // Already fenced (released before, or lost): there is nothing left to hand over from here;
  // what still runs (COMMAND outlives a loss) stops, writing nothing.
  if (!fenced_.empty()) {
    out.flushed = co_await stop_all(stop_reason::fence);
    co_return out;
  }
  // Starting (a configuration applied, the database restoring): what starts next would outrun
  // the release's stop.
  if (starting_components_ || env_.applying()) {
    out.outcome = kind::starting;
    co_return out;
  }
  releasing_ = true;
  struct done_guard {
    bool& flag;
    ~done_guard() { flag = false; }
  } releasing{releasing_};
  // A checkpoint or restore under way finishes first: stopping underneath it could leave half
  // a swap, and its checkpoint is state to hand over too.
  co_await operations_.wait_idle(forever);
  cancel_upload_retry();  // the retry comes now, awaited
  std::vector<supervisor::component*> stopped;
  out.flushed = co_await stop_all(stop_reason::release, &stopped);
  for (const json& f : out.flushed) {
    if (f.contains("error") && !f["error"].is_null()) {
      out.missing.push_back({{"part", f.value("component", "component")}, {"error", f["error"]}});
    }
  }
  // The checkpoints made here are state too: the next owner restores them from the store. The
  // uploads under way end on their own; what failed before is tried once more now.
  co_await uploads_.wait_idle(forever);
  if (env_.store() && fenced_.empty()) {
    // Under a pass, as every upload: shut-down waits for it.
    if (std::optional<gate::pass> uploading = uploads_.enter()) {
      for (json& m : co_await upload_missing()) out.missing.push_back(std::move(m));
    } else {
      out.missing.push_back(
          {{"part", "checkpoints"}, {"error", "not checked: " + uploads_.closed_why()}});
    }
  }
  if (const std::string backup = env_.config_backup_problem(); !backup.empty()) {
    out.missing.push_back({{"part", "configuration backup"}, {"error", backup}});
  }
  if (!fenced_.empty()) {
    // Lost while releasing: whatever is missing stays missing, and the lease is not ours.
    out.outcome = kind::lost;
    co_return out;
  }
  if (shutting_down_) {
    // Shut-down began meanwhile: it finishes the hand-over (or says what it could not).
    out.outcome = kind::shutting_down;
    co_return out;
  }
  if (!out.missing.empty()) {
    // Not everything is in the store: the lease stays ours, and what stopped for the release
    // starts again, so that the database keeps shipping; the uploads are retried. A later
    // release can succeed.
    log::error("release refused: part of the state is not in the store; keeping the lease",
               {{"missing", out.missing.dump()}});
    out.outcome = kind::incomplete;
    releasing_ = false;  // the retries may be armed again
    co_await start_all(&stopped);
    if (std::find(stopped.begin(), stopped.end(), command_.get()) != stopped.end()) {
      start_command();
    }
    schedule_upload_retry();
    publish_state();
    co_return out;
  }
  // Fenced first: nothing may start or write while the lease goes.
  uploads_.close("not uploaded: this machine released the lease");
  fence("this machine released the lease");
  out.was_held = co_await env_.release_lease();
  co_return out;
}

void system::request_shutdown(std::string_view reason, int status) {
  if (shutting_down_) return;
  shutting_down_ = true;
  exit_status_ = status;
  log::info("shutting down", {{"reason", std::string(reason)}});
  publish_state();
  shutdown_timer_.cancel();
}

asio::awaitable<void> system::shutdown_requested() {
  // The flag first: a timer keeps no memory of a cancel() that came before the wait.
  if (shutting_down_) co_return;
  std::error_code ec;
  co_await shutdown_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<int> system::shut_down() {
  env_.shut_down();  // a wait for the lease or a retry pause ends now
  // A checkpoint or restore under way finishes first (it restarts nothing once shut-down has
  // begun): stopping underneath it could leave half a swap.
  co_await operations_.wait_idle(forever);
  // COMMAND first (SIGTERM, SIGKILL after --timeout-stop), then the components in reverse
  // dependency order (the database's final sync).
  co_await stop_all(stop_reason::shutdown);
  // Checkpoint uploads went on meanwhile; they get a bound, then stop between two objects
  // (the manifest goes last, so the store never shows half a checkpoint as whole).
  if (!uploading_.empty()) {
    log::info("waiting for checkpoint uploads", {{"count", std::to_string(uploading_.size())}});
  }
  const std::string closing = "not uploaded: state-manager is shutting down";
  cancel_upload_retry();
  if (!co_await uploads_.wait_idle(upload_grace)) {
    uploads_.cancel(closing);
    cancel_upload_retry();
    co_await uploads_.wait_idle(forever);
  }
  uploads_.close(closing);
  // All state is in the store now: another machine may take over at once.
  co_await env_.release_lease();
  // What they wrote last still reaches our output (--log-prefix), within a bound.
  for (supervisor::component* c : all()) co_await c->drain_output(std::chrono::seconds(1));
  for (const auto& output : prefixed_output_) {
    if (output) output->close();  // a reader that stalls does not hold up the exit
  }
  if (exit_status_ < 0) {
    const auto& last = command_ ? command_->process().last_exit() : std::nullopt;
    exit_status_ = opts_.restart == "never" && last ? last->shell_status() : 0;
  }
  co_return exit_status_;
}

void system::stopped() {
  shut_down_ = true;
  publish_state();
  events_.close();
}

bool system::forward_signal(int signal) {
  return command_ && command_->process().forward_signal(signal);
}

// --- State and events ----------------------------------------------------------------------

std::string system::state() const {
  if (shut_down_) return "stopped";
  if (shutting_down_) return "stopping";
  // Applying a configuration (COMMAND may be stopping for it): the system is starting.
  if (env_.applying()) return "starting";
  if (!env_.configured()) return "unconfigured";
  // COMMAND and the components, cascaded (a COMMAND held back by --wait-for-config is about
  // to start).
  std::vector<supervisor::state> parts;
  for (const auto& c : components_) parts.push_back(c->current());
  if (command_) parts.push_back(command_->current());
  return std::string(supervisor::cascade(parts));
}

json system::process_status() const {
  return command_ ? command_->status() : json(nullptr);
}

json system::components_status() const {
  json out = json::object();
  for (const auto& c : components_) out[c->name()] = c->status();
  return out;
}

std::string system::metrics() const {
  std::string out =
      "# HELP state_manager_uptime_seconds Time since state-manager started.\n"
      "# TYPE state_manager_uptime_seconds gauge\n"
      "state_manager_uptime_seconds " +
      std::to_string(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - boot_).count()) +
      "\n"
      "# HELP state_manager_orphans_reaped_total Orphaned processes reaped.\n"
      "# TYPE state_manager_orphans_reaped_total counter\n"
      "state_manager_orphans_reaped_total " +
      std::to_string(reaper_.orphans_reaped()) +
      "\n"
      "# HELP state_manager_http_connections Open connections to the API.\n"
      "# TYPE state_manager_http_connections gauge\n"
      "state_manager_http_connections " +
      std::to_string(server_ ? server_->connection_count() : 0) +
      "\n"
      "# HELP state_manager_log_lines_dropped_total Log lines dropped because stderr was not "
      "read fast enough.\n"
      "# TYPE state_manager_log_lines_dropped_total counter\n"
      "state_manager_log_lines_dropped_total " +
      std::to_string(log::dropped_lines()) + "\n";
  if (command_) {
    supervisor::append_process_metrics(out, "state_manager_process", "COMMAND",
                                       {{"", &command_->process()}});
  }
  // The declared processes share their families (one HELP and TYPE each), labelled by name.
  std::vector<supervisor::labelled_process> declared;
  for (const auto& c : components_) {
    if (const auto* p = dynamic_cast<const supervisor::process_component*>(c.get())) {
      declared.emplace_back("component=\"" + p->name() + "\"", &p->process());
    }
  }
  if (components_made_) {
    supervisor::append_process_metrics(out, "state_manager_component", "a component", declared);
  }
  for (const auto& c : components_) c->append_metrics(out);
  return out;
}

void system::watch(supervisor::component& c, part_changed::source of) {
  c.on_transition = [this, &c, of](supervisor::state from, supervisor::state to) {
    log_transition(c, of == part_changed::source::process ? "COMMAND" : "component " + c.name(),
                   to);
    publish(part_changed{of, c.name(), from, to, c.event_fields()});
    publish_state();
  };
}

void system::publish(const event& e) {
  events_.publish(to_sse(++event_id_, e, std::chrono::system_clock::now()));
}

void system::publish_state() {
  std::string now = state();
  if (now == last_state_) return;
  publish(system_changed{last_state_, now});
  last_state_ = std::move(now);
}

}  // namespace sm::app
