#include "app.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/signal_set.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "api/environment.hpp"
#include "api/routes.hpp"
#include "async/event_bus.hpp"
#include "async/offload.hpp"
#include "base/clock.hpp"
#include "base/file.hpp"
#include "base/log.hpp"
#include "checkpoint/contents_swap.hpp"
#include "checkpoint/copy_tree.hpp"
#include "checkpoint/local_store.hpp"
#include "checkpoint/remote.hpp"
#include "db/backup.hpp"
#include "db/component.hpp"
#include "http/server.hpp"
#include "proc/child.hpp"
#include "proc/freezer.hpp"
#include "proc/signals.hpp"
#include "supervisor/component_group.hpp"
#include "supervisor/supervised_process.hpp"
#include "uring/copy.hpp"
#include "version.h"

namespace sm {

namespace {

using namespace std::chrono_literals;

// How long in-flight requests may take to finish once shut-down starts.
constexpr auto drain_grace = 5s;
// How long shut-down waits for checkpoint uploads once everything else has stopped; what is not
// up by then stops between two objects and goes up again at the next start.
constexpr auto upload_grace = 30s;

// Runs one start-up step; logs and returns false if it throws.
template <class F>
bool step(std::string_view name, F&& f) {
  const auto started = std::chrono::steady_clock::now();
  try {
    f();
  } catch (const std::exception& e) {
    log::error("start-up failed", {{"step", std::string(name)}, {"error", e.what()}});
    return false;
  }
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - started);
  log::debug("step done", {{"step", std::string(name)}, {"us", std::to_string(us.count())}});
  return true;
}

// Raises the soft descriptor limit to the hard one and returns how many connections fit in it,
// leaving room for the files, pipes and child processes the rest of the program needs.
std::size_t connection_capacity() {
  constexpr rlim_t reserve = 64;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return SIZE_MAX;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  if (limit.rlim_cur == RLIM_INFINITY) return SIZE_MAX;
  return limit.rlim_cur > 2 * reserve ? std::size_t(limit.rlim_cur - reserve)
                                      : std::size_t(limit.rlim_cur / 2);
}

std::string format_endpoint(const asio::ip::tcp::endpoint& e) {
  const std::string host = e.address().to_string();
  const std::string port = std::to_string(e.port());
  return e.address().is_v6() ? "[" + host + "]:" + port : host + ":" + port;
}

void log_config_load(const api::environment::load_report& report,
                     const std::filesystem::path& file) {
  using kind = api::environment::load_report::kind;
  switch (report.outcome) {
    case kind::none:
      log::info("no saved configuration; waiting for POST /config", {{"file", file.string()}});
      break;
    case kind::loaded:
      log::info("configuration loaded", {{"file", file.string()}});
      break;
    case kind::set_aside: {
      std::string details;
      for (const auto& p : report.problems) {
        if (!details.empty()) details += "; ";
        details += (p.path.empty() ? "(document)" : p.path) + ": " + p.message;
      }
      log::warn("saved configuration not applied; starting unconfigured",
                {{"file", file.string()},
                 {"reason", report.reason},
                 {"details", details},
                 {"kept_as", report.aside.string()}});
      break;
    }
  }
}

// One line per state change of COMMAND, with what explains it.
void log_process_state(std::string_view who_name, const supervisor::supervised_process& process,
                       supervisor::supervised_process::state to) {
  const std::string who(who_name);
  using state = supervisor::supervised_process::state;
  const nlohmann::json s = process.status();
  const std::string name(supervisor::supervised_process::name_of(to));
  auto exit_text = [&] {
    const auto& last = s["last_exit"];
    if (last.is_null()) return std::string();
    return last["signal"].is_null() ? "exit code " + last["code"].dump()
                                    : "killed by " + last["signal"].get<std::string>();
  };
  switch (to) {
    case state::running:
      log::info(who + " running", {{"pid", s["pid"].dump()}});
      break;
    case state::degraded:
      log::warn(who + " degraded",
                {{"pid", s["pid"].dump()},
                 {"error",
                  s["last_error"].is_null() ? std::string() : s["last_error"].get<std::string>()}});
      break;
    case state::restarting:
    case state::failed:
    case state::stopped:
      if (!s["last_error"].is_null()) {
        log::error(
            who + " cannot start",
            {{"state", name},
             {"error", s["last_error"].get<std::string>()},
             {"status", s["last_exit"].is_null() ? "none" : s["last_exit"]["status"].dump()}});
      } else if (to == state::restarting) {
        log::info(who + " exited", {{"how", exit_text()},
                                    {"restart_in", s["restart_in"].get<std::string>()},
                                    {"restarts", s["restarts"].dump()}});
      } else {
        log::write(to == state::failed ? log::level::warn : log::level::info, who + " exited",
                   {{"state", name}, {"how", exit_text()}});
      }
      if (s["gave_up"].get<bool>()) {
        log::error(who + " failed too often; not restarting it (--restart-max)",
                   {{"restarts", s["restarts"].dump()}});
      }
      break;
    case state::stopping:
      log::info("stopping " + who, {{"pid", s["pid"].dump()}});
      break;
    default:
      break;
  }
}

supervisor::supervised_process::state as_process_state(db::component::state s) {
  using from = db::component::state;
  using to = supervisor::supervised_process::state;
  switch (s) {
    case from::pending:
      return to::pending;
    case from::starting:
      return to::starting;
    case from::running:
      return to::running;
    case from::degraded:
      return to::degraded;
    case from::stopping:
      return to::stopping;
    case from::stopped:
      return to::stopped;
    case from::failed:
      return to::failed;
  }
  return to::failed;
}

}  // namespace

int run_app(const cli::server_options& opts) {
  log::configure(opts.log_level, opts.log_format);
  // A peer that closes early must cost an EPIPE, not the process (PID 1 least of all). Children
  // get every signal back at its default (proc::spawn).
  std::signal(SIGPIPE, SIG_IGN);

  asio::io_context io(1);
  // First of all: from here on SIGTERM and SIGINT are caught (and queued until the shut-down
  // handler below waits for them), so a signal during start-up is not lost, even as PID 1.
  asio::signal_set stop_signals(io, SIGTERM, SIGINT);
  api::environment env({opts.data_dir, opts.tmp_dir},
                       api::storage_settings{opts.lease_ttl, opts.wait_for_lease, {}});
  api::api_options api_opts;
  event_bus events(io.get_executor());
  api_opts.events = &events;
  proc::reaper reaper(io.get_executor());
  // --log-prefix: children's lines reach our stdout and stderr through one writer each,
  // which never blocks the executor.
  std::shared_ptr<proc::line_output> prefixed_output[2];
  if (opts.log_prefix) {
    for (int i = 0; i < 2; ++i) {
      prefixed_output[i] = std::make_shared<proc::line_output>(io.get_executor(), i + 1);
    }
  }
  std::optional<supervisor::supervised_process> process;
  std::unique_ptr<supervisor::component_group> components;  // once configured
  std::unique_ptr<db::component> database;                  // once configured with "database"
  std::optional<http::server> server;

  // Start-up, in order. Shut-down below undoes it in reverse.
  const bool started =
      // data/ holds the environment's state, tmp/ its configuration and checkpoints.
      step("create directories",
           [&] {
             ensure_directory(opts.data_dir, 0755);
             ensure_directory(opts.tmp_dir, 0700);
           }) &&
      // The token comes from its file (or the environment) once, before anything is served.
      step("read API token",
           [&] {
             if (opts.token_file)
               api_opts.token = read_token_file(*opts.token_file);
             else if (opts.token && !opts.token->empty())
               api_opts.token = opts.token;
           }) &&
      // Orphans of the sandbox become ours to reap (we are PID 1, or become a subreaper).
      step("adopt orphans",
           [&] {
             if (!reaper.adopt_orphans()) {
               log::warn("cannot become a child subreaper; orphans go to the real init");
             }
           }) &&
      // A checkpoint that a crash cut short never counts: its <id>.partial/ goes.
      // Best effort: a read-only tmp/ must not keep PID 1 from coming up.
      step("remove interrupted checkpoints",
           [&] {
             try {
               ensure_directory(env.paths().checkpoints_dir(), 0700);
               for (const std::string& id :
                    checkpoint::local_store(env.paths().checkpoints_dir()).remove_partials()) {
                 log::warn("removed an interrupted checkpoint", {{"id", id}});
               }
             } catch (const std::exception& e) {
               log::warn("cannot prepare tmp/checkpoints; checkpoints will fail",
                         {{"error", e.what()}});
             }
           }) &&
      // Processes a killed state-manager left frozen (checkpoint_mode "freeze") would stay
      // paused forever: they are thawed, and the empty groups removed.
      step("thaw what a killed state-manager left frozen",
           [&] {
             if (const std::size_t n = proc::remove_stale_freezers()) {
               log::warn("removed cgroups of a state-manager that is gone",
                         {{"count", std::to_string(n)}});
             }
           }) &&
      // A saved configuration is applied before the first request can see the state.
      step("load configuration",
           [&] { log_config_load(env.load_saved(), env.paths().config_file()); }) &&
      // A restore cut short by a crash: what it had moved aside is the state, put back.
      step("recover an interrupted restore",
           [&] {
             try {
               const std::filesystem::path aside = opts.data_dir / ".restore-aside";
               if (std::filesystem::exists(aside)) {
                 for (const std::string suffix : {"", "-wal", "-shm"}) {
                   const std::filesystem::path saved = aside / ("database.sqlite" + suffix);
                   std::filesystem::path back = opts.data_dir / "database.sqlite";
                   back += suffix;
                   std::error_code ec;
                   if (std::filesystem::exists(saved)) {
                     std::filesystem::rename(saved, back);
                   } else {
                     std::filesystem::remove(back, ec);
                   }
                 }
                 checkpoint::remove_tree(aside);
                 log::warn("an interrupted restore was undone: the database is as before it");
               }
               checkpoint::remove_tree(opts.data_dir / ".restore-trash");
               if (env.current()) {
                 const std::filesystem::path env_dir = env.current()->storage.env_dir;
                 std::filesystem::path env_trash = env_dir;
                 env_trash += ".restore-trash";
                 checkpoint::remove_tree(env_trash);
                 std::filesystem::path env_aside = env_dir;
                 env_aside += ".restore-aside";
                 if (std::filesystem::exists(env_aside)) {
                   checkpoint::remove_tree(env_dir);
                   std::filesystem::rename(env_aside, env_dir);
                   log::warn(
                       "an interrupted restore was undone: the environment directory is "
                       "as before it",
                       {{"dir", env_dir.string()}});
                 }
                 if (checkpoint::undo_contents_swap(env_dir)) {
                   log::warn(
                       "an interrupted restore was undone: the environment directory's "
                       "contents are as before it",
                       {{"dir", env_dir.string()}});
                 }
               }
             } catch (const std::exception& e) {
               log::error("cannot undo an interrupted restore", {{"error", e.what()}});
             }
           }) &&
      // The supervised process, declared (it starts below, once serving).
      step("prepare COMMAND",
           [&] {
             if (opts.command.empty()) return;
             supervisor::process_settings settings;
             settings.command = opts.command;
             settings.restart = *supervisor::parse_restart_policy(opts.restart);
             settings.restart_delay = opts.restart_delay;
             settings.timeout_stop = opts.timeout_stop;
             settings.backoff_max = opts.restart_backoff_max;
             settings.restart_max = opts.restart_max;
             settings.restart_window = opts.restart_window;
             if (opts.log_prefix) {
               // Appended piecewise: GCC 12 warns falsely (-Wrestrict) on "[" + string.
               settings.output_prefix = "[";
               settings.output_prefix +=
                   std::filesystem::path(opts.command.front()).filename().string();
               settings.output_prefix += "] ";
               settings.output_to[0] = prefixed_output[0];
               settings.output_to[1] = prefixed_output[1];
             }
             process.emplace(io.get_executor(), reaper, std::move(settings));
             env.process_view = [&] { return process->status(); };
           }) &&
      // Bind last, so that a client never reaches a half-started server.
      step("listen", [&] {
        http::server_limits limits;
        limits.header_timeout = opts.header_timeout;
        limits.idle_timeout = opts.idle_timeout;
        // Past the descriptor limit, accept() fails and clients hang unanswered; below it,
        // the extra ones get a clear 503.
        limits.max_connections = std::min(opts.max_connections, connection_capacity());
        if (limits.max_connections < opts.max_connections) {
          log::warn("--max-connections lowered to fit the open-file limit",
                    {{"requested", std::to_string(opts.max_connections)},
                     {"max_connections", std::to_string(limits.max_connections)}});
        }
        server.emplace(io.get_executor(), limits, api::make_handler(env, api_opts),
                       api::make_head_check(api_opts));
        const auto bound =
            server->listen({asio::ip::make_address(opts.address.host), opts.address.port});
        log::info("listening", {{"address", format_endpoint(bound)},
                                {"version", STATE_MANAGER_VERSION},
                                {"auth", api_opts.token ? "bearer token" : "none"}});
      });
  if (!started) return 1;

  asio::co_spawn(io, reaper.run(), asio::detached);
  asio::co_spawn(io, server->run(), asio::detached);

  // Shut-down is requested once, by a signal or by COMMAND ending for good; the exit status is
  // fixed when it is requested.
  int exit_status = 0;
  bool shutting_down = false;
  bool shut_down = false;

  // The system's state, derived from what runs (GET / "state"), and the event stream: every
  // change of COMMAND's state and of the system's goes out on GET /events.
  auto system_state = [&]() -> std::string {
    using state = supervisor::supervised_process::state;
    if (shut_down) return "stopped";
    if (shutting_down) return "stopping";
    // Applying a configuration (COMMAND may be stopping for it): the system is starting.
    if (env.applying()) return "starting";
    if (!env.configured()) return "unconfigured";
    // COMMAND and the components, cascaded (a COMMAND held back by --wait-for-config is
    // about to start).
    std::vector<state> parts = components ? components->states() : std::vector<state>{};
    if (database) parts.push_back(as_process_state(database->current()));
    if (process) parts.push_back(process->current());
    return std::string(supervisor::cascade(parts));
  };
  env.state_view = system_state;
  std::uint64_t event_id = 0;
  auto publish = [&](std::string_view type, nlohmann::json data) {
    data["at"] = format_rfc3339(std::chrono::system_clock::now(), true);
    events.publish(
        "id: " + std::to_string(++event_id) + "\nevent: " + std::string(type) +
        "\ndata: " + data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n");
  };
  std::string last_system_state = system_state();
  auto publish_system_state = [&] {
    std::string now = system_state();
    if (now == last_system_state) return;
    publish("system", {{"old", last_system_state}, {"new", now}});
    last_system_state = std::move(now);
  };
  auto on_component = [&](const std::string& name, auto from, auto to) {
    log_process_state("component " + name, *components->find_process(name), to);
    const nlohmann::json s = components->find_process(name)->status();
    publish("component", {{"name", name},
                          {"old", supervisor::supervised_process::name_of(from)},
                          {"new", supervisor::supervised_process::name_of(to)},
                          {"pid", s["pid"]},
                          {"restarts", s["restarts"]},
                          {"last_exit", s["last_exit"]},
                          {"last_error", s["last_error"]}});
    publish_system_state();
  };
  env.components_view = [&] {
    nlohmann::json out = components ? components->status() : nlohmann::json::object();
    if (database) out["database"] = database->status();
    return out;
  };
  // The database component (also made anew by a restore), its events.
  auto make_database = [&](const config::configuration& c) {
    database = std::make_unique<db::component>(io.get_executor(), *env.store(),
                                               opts.data_dir / "database.sqlite", c.database);
    database->on_transition = [&](db::component::state from, db::component::state to) {
      const nlohmann::json s = database->status();
      publish("component",
              {{"name", "database"},
               {"old", db::component::name_of(from)},
               {"new", db::component::name_of(to)},
               {"last_error", to == db::component::state::degraded ? s["replication"]["last_error"]
                                                                   : s["last_error"]}});
      publish_system_state();
    };
  };
  // Configured (at boot or by POST /config): the components start, in dependency order.
  bool process_started = false;  // COMMAND's run() was started (and has not been re-armed)
  env.initialise_components = [&](const config::configuration& c) -> asio::awaitable<void> {
    // COMMAND ran before there was a configuration: it is stopped first, so that it never sees
    // state from before the restore, and starts again once the components are up (DESIGN.md
    // 2.1a). Its history (restarts, last exit) stays.
    if (process && process_started && !shutting_down) {
      log::info("stopping COMMAND to apply the configuration");
      co_await process->stop();
      if (!shutting_down && process->rearm()) process_started = false;
    }
    // The database first: the components and COMMAND never see it before its restore.
    if (std::find(c.stacks.begin(), c.stacks.end(), config::database_stack) != c.stacks.end() &&
        env.store()) {
      make_database(c);
      co_await database->start(env.lease_taken_over());
    }
    components = std::make_unique<supervisor::component_group>(
        io.get_executor(), reaper, c,
        supervisor::component_group::defaults{opts.restart_delay,
                                              opts.timeout_stop,
                                              opts.log_prefix,
                                              {prefixed_output[0], prefixed_output[1]}},
        on_component);
    publish_system_state();
    co_await components->start();
    publish_system_state();
  };
  if (process) {
    process->on_transition = [&](auto from, auto to) {
      log_process_state("COMMAND", *process, to);
      const nlohmann::json s = process->status();
      publish("process", {{"old", supervisor::supervised_process::name_of(from)},
                          {"new", supervisor::supervised_process::name_of(to)},
                          {"pid", s["pid"]},
                          {"restarts", s["restarts"]},
                          {"last_exit", s["last_exit"]}});
      publish_system_state();
    };
  }

  asio::steady_timer shutdown_requested(io, std::chrono::steady_clock::time_point::max());
  auto request_shutdown = [&](std::string_view reason, int status) {
    if (shutting_down) return;
    shutting_down = true;
    exit_status = status;
    log::info("shutting down", {{"reason", std::string(reason)}});
    publish_system_state();
    shutdown_requested.cancel();
  };

  // COMMAND runs from now on, or from the first applied configuration with --wait-for-config.
  auto start_process = [&] {
    if (!process || process_started || shutting_down) return;
    process_started = true;
    log::info("starting COMMAND", {{"command", opts.command.front()}});
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await process->run();
          // Ended for good (--restart never, or on-failure after a clean exit): so do we, with
          // its status, as a drop-in container init.
          if (const auto& status = process->final_status()) {
            request_shutdown("COMMAND ended", status->shell_status());
          }
        },
        asio::detached);
  };
  const auto boot = std::chrono::steady_clock::now();
  env.metrics_view = [&] {
    std::string out =
        "# HELP state_manager_uptime_seconds Time since state-manager started.\n"
        "# TYPE state_manager_uptime_seconds gauge\n"
        "state_manager_uptime_seconds " +
        std::to_string(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - boot).count()) +
        "\n"
        "# HELP state_manager_orphans_reaped_total Orphaned processes reaped.\n"
        "# TYPE state_manager_orphans_reaped_total counter\n"
        "state_manager_orphans_reaped_total " +
        std::to_string(reaper.orphans_reaped()) +
        "\n"
        "# HELP state_manager_http_connections Open connections to the API.\n"
        "# TYPE state_manager_http_connections gauge\n"
        "state_manager_http_connections " +
        std::to_string(server->connection_count()) + "\n";
    if (process) {
      supervisor::append_process_metrics(out, "state_manager_process", "COMMAND",
                                         {{"", &*process}});
    }
    if (components) components->append_metrics(out);
    if (database) database->append_metrics(out);
    return out;
  };
  // Checkpoint uploads to the store, in the background. A checkpoint is usable here at once;
  // release-lease waits for its upload, shut-down for `upload_grace`, and one that did not
  // finish goes up again when a configuration is next applied (resume_uploads). Once this
  // machine lets go of the lease (release, shut-down, loss) no upload starts any more: the
  // prefix may be another owner's by then.
  std::set<std::string> uploading;  // ids whose upload runs
  bool resume_scanning = false;     // resume_uploads is looking for what to upload
  bool uploads_cancelled = false;   // shut-down gave up waiting: stop between two objects
  std::string uploads_closed;       // why no upload may start ("" while they may)
  auto start_upload = [&](const std::string& id) {
    if (!env.store() || uploading.contains(id)) return;
    if (!uploads_closed.empty()) {
      env.set_upload_status(id, {{"state", "failed"}, {"bytes", 0}, {"error", uploads_closed}});
      return;
    }
    uploading.insert(id);
    env.set_upload_status(id, {{"state", "pending"}, {"bytes", 0}, {"error", nullptr}});
    asio::co_spawn(
        io,
        [&, id]() -> asio::awaitable<void> {
          struct done_guard {
            std::set<std::string>& set;
            const std::string& id;
            ~done_guard() { set.erase(id); }
          } guard{uploading, id};
          env.set_upload_status(id, {{"state", "uploading"}, {"bytes", 0}, {"error", nullptr}});
          std::string failure;
          bool cancelled = false;
          std::uint64_t bytes = 0;
          try {
            const checkpoint::local_store local(env.paths().checkpoints_dir());
            auto progress = [&env, id](std::uint64_t n) {
              env.set_upload_status(id, {{"state", "uploading"}, {"bytes", n}, {"error", nullptr}});
            };
            bytes = co_await checkpoint::upload(*env.store(), local, id, progress,
                                                [&] { return uploads_cancelled; });
          } catch (const checkpoint::upload_cancelled& e) {
            failure = e.what();
            cancelled = true;
          } catch (const std::exception& e) {
            failure = e.what();
          }
          const char* state = failure.empty() ? "done" : cancelled ? "stopped" : "failed";
          if (cancelled) {
            log::warn("checkpoint upload stopped; it resumes at the next start", {{"id", id}});
          } else if (!failure.empty()) {
            log::error("checkpoint upload failed", {{"id", id}, {"error", failure}});
          }
          env.set_upload_status(
              id, {{"state", state},
                   {"bytes", bytes},
                   {"error", failure.empty() ? nlohmann::json(nullptr) : nlohmann::json(failure)}});
          publish("operation", {{"kind", "upload"}, {"id", id}, {"step", state}});
        },
        asio::detached);
  };
  // Looks every 20 ms until `done` says so; false when `bound` passed first.
  constexpr auto forever = std::chrono::hours(24 * 365);
  auto poll_until = [&](std::function<bool()> done,
                        std::chrono::steady_clock::duration bound) -> asio::awaitable<bool> {
    const auto deadline = std::chrono::steady_clock::now() + bound;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      asio::steady_timer tick(io, 20ms);
      std::error_code ec;
      co_await tick.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return done();
  };
  // True once no upload runs nor is about to; false when `bound` passed first.
  auto wait_for_uploads = [&](std::chrono::steady_clock::duration bound) {
    return poll_until([&] { return uploading.empty() && !resume_scanning; }, bound);
  };
  // The local checkpoints whose manifest the store lacks (an upload cut short by a crash or a
  // shut-down, a store that was down) go up now, one at a time, in the background.
  auto resume_uploads = [&] {
    if (!env.store() || resume_scanning) return;
    resume_scanning = true;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          struct done_guard {
            bool& flag;
            ~done_guard() { flag = false; }
          } guard{resume_scanning};
          std::vector<checkpoint::manifest> local;
          try {
            co_await offload(
                [&] { local = checkpoint::local_store(env.paths().checkpoints_dir()).list(); });
            for (const auto& m : local) {
              if (uploads_cancelled || !uploads_closed.empty() || !env.store()) co_return;
              if (uploading.contains(m.id)) continue;
              if (co_await checkpoint::exists_remotely(*env.store(), m.id)) {
                // Uploaded by an earlier run (or downloaded from the store): say so.
                if (env.upload_status(m.id).is_null()) {
                  env.set_upload_status(
                      m.id, {{"state", "done"}, {"bytes", nullptr}, {"error", nullptr}});
                }
                continue;
              }
              if (!uploads_closed.empty()) co_return;  // closed while we asked the store
              log::info("checkpoint not in the store; uploading it again", {{"id", m.id}});
              start_upload(m.id);  // nothing when a new checkpoint's upload of it runs already
              co_await poll_until([&] { return !uploading.contains(m.id); }, forever);
            }
          } catch (const std::exception& e) {
            log::warn("could not check which checkpoints the store lacks", {{"error", e.what()}});
          }
        },
        asio::detached);
  };

  if (env.configured()) {
    // Booted with a saved configuration: components first, then COMMAND (DESIGN.md 2.1a).
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          // The store and the lease first, retried until had (GET / says why not yet).
          if (!co_await env.claim_saved([&] { return shutting_down; })) co_return;
          co_await env.initialise_components(*env.current());
          start_process();
          resume_uploads();
        },
        asio::detached);
  } else if (!opts.wait_for_config) {
    start_process();
  }
  // Fencing: once the lease is lost, what writes to the store must stop.
  env.on_lease_lost = [&](std::string why) {
    log::error("lease lost: stopping the components (fenced)", {{"why", why}});
    uploads_closed = "not uploaded: the lease was lost (" + why + ")";
    uploads_cancelled = true;  // those under way stop between two objects
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          if (components) co_await components->stop();
          if (database) co_await database->fence();
        },
        asio::detached);
  };
  // POST /release-lease: COMMAND and the components stop as at shut-down (their state is in the
  // store once they have), then the lease goes; state-manager keeps serving.
  env.before_release = [&]() -> asio::awaitable<nlohmann::json> {
    if (process && process_started) co_await process->stop();
    if (components) co_await components->stop();
    nlohmann::json flushed = nlohmann::json::array();
    if (database) flushed.push_back(co_await database->stop());  // the final sync
    // The checkpoints made here are state too: the next owner restores them from the store.
    co_await wait_for_uploads(forever);  // each ends on its own
    uploads_closed = "not uploaded: this machine released the lease";
    publish_system_state();
    co_return flushed;
  };
  env.on_applied = [&] {
    start_process();
    publish_system_state();
    resume_uploads();
  };

  // POST /checkpoint: quiesce (stop COMMAND and the components) -> snapshot (the database
  // through the backup API, the environment directory, the configuration) into <id>.partial/
  // -> restart what was stopped -> manifest, fsync, rename. Uploading it to the store is not
  // built yet: the answer says so.
  bool operation_running = false;
  nlohmann::json operation = nullptr;
  std::atomic<std::uint64_t> operation_done{0}, operation_total{0};  // set by the copy
  env.operation_view = [&]() -> nlohmann::json {
    if (operation.is_null()) return nullptr;
    nlohmann::json out = operation;
    out["done_bytes"] = operation_done.load();
    out["total_bytes"] = operation_total.load();
    return out;
  };
  auto operation_step = [&](const std::string& step) {
    operation["step"] = step;
    publish("operation", {{"kind", operation["kind"]}, {"id", operation["id"]}, {"step", step}});
  };
  // Why a checkpoint or restore cannot begin now (409, 503); nullopt: it may.
  auto refuse_operation = [&]() -> std::optional<std::pair<int, nlohmann::json>> {
    if (operation_running) {
      return std::make_pair(409,
                            nlohmann::json{{"error", "another checkpoint or restore is running"},
                                           {"operation", operation}});
    }
    if (shutting_down) {
      return std::make_pair(503, nlohmann::json{{"error", "state-manager is shutting down"}});
    }
    return std::nullopt;
  };
  // copy_tree's read/write fallback (file systems that neither reflink nor copy_file_range
  // between them) as io_uring requests awaited here; empty, so copy_tree's own pread/pwrite on
  // its worker thread, where the kernel refuses a ring. Made on the first use, kept until exit.
  std::shared_ptr<uring::ring> copy_ring;
  bool copy_ring_refused = false;
  auto data_mover = [&]() -> uring::data_mover {
    if (!copy_ring && !copy_ring_refused) {
      try {
        copy_ring = std::make_shared<uring::ring>(io.get_executor());
      } catch (const std::system_error& e) {
        copy_ring_refused = true;
        log::warn("no io_uring; copies that need reads and writes make them on a thread",
                  {{"error", e.what()}});
      }
    }
    if (!copy_ring) return {};
    return uring::executor_data_mover(io.get_executor(), copy_ring);
  };
  // What writes to the state is held still, and later let go again unless shut-down began
  // meanwhile. `may_freeze` (a checkpoint with "checkpoint_mode": "freeze"): the cgroup freezer
  // pauses the processes, which keep their PIDs; otherwise, or when freezing is not possible
  // here, they stop (SIGTERM, SIGKILL after the stop timeout) and start again with new PIDs.
  struct quiesced {
    bool process = false, components = false;
    bool frozen = false;
    std::string note;  // why they were stopped although freezing was asked for
    std::string mode() const {
      if (frozen) return "freeze";
      return process || components ? "stop" : "none";
    }
  };
  std::optional<proc::freezer> freezer_group;  // made on the first freeze, removed at exit
  auto quiesce = [&](bool may_freeze) -> asio::awaitable<quiesced> {
    quiesced q;
    q.process = process && process_started;
    q.components = components && !components->empty();
    if (!q.process && !q.components) co_return q;
    if (may_freeze && env.current()->checkpoint == config::checkpoint_mode::freeze) {
      try {
        if (!freezer_group) co_await offload([&] { freezer_group = proc::freezer::open(); });
        q.frozen = co_await proc::freeze(*freezer_group, opts.timeout_stop);
        if (!q.frozen) q.note = "the processes did not freeze within the stop timeout";
      } catch (const std::exception& e) {
        q.note = e.what();
      }
      if (q.frozen) co_return q;
      log::warn("cannot freeze the processes; stopping them instead", {{"reason", q.note}});
    }
    if (q.process) co_await process->stop();
    if (q.components) co_await components->stop();
    co_return q;
  };
  auto resume = [&](const quiesced& q) -> asio::awaitable<void> {
    if (q.frozen) {
      // Thawed even at shut-down: a frozen process would never see its SIGTERM.
      try {
        freezer_group->request(false);
      } catch (const std::exception& e) {
        log::error("cannot thaw the processes", {{"error", e.what()}});
      }
      co_return;
    }
    if (q.components && !shutting_down) {
      components->rearm();
      co_await components->start();
    }
    if (q.process && !shutting_down && process->rearm()) {
      process_started = false;
      start_process();
    }
  };
  env.create_checkpoint = [&](std::string id) -> asio::awaitable<std::pair<int, nlohmann::json>> {
    using json = nlohmann::json;
    if (auto refused = refuse_operation()) co_return *refused;
    operation_running = true;
    const checkpoint::local_store store(env.paths().checkpoints_dir());
    std::optional<std::string> parent;
    bool taken = false;
    co_await offload([&] {
      if (id.empty()) id = store.next_id();
      taken = store.exists(id) || std::filesystem::exists(store.partial_of(id));
      const auto all = store.list();
      if (!all.empty()) parent = all.back().id;
    });
    if (taken) {
      operation_running = false;
      co_return std::make_pair(409,
                               json{{"error", "a checkpoint with this id exists"}, {"id", id}});
    }
    const auto started = std::chrono::steady_clock::now();
    auto since = [](std::chrono::steady_clock::time_point t) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - t)
          .count();
    };
    checkpoint::manifest m;
    m.id = id;
    m.parent = parent.value_or("");
    m.version = STATE_MANAGER_VERSION;
    operation = {{"kind", "checkpoint"}, {"id", id}, {"step", "quiesce"}};
    operation_done = 0;
    operation_total = 0;
    publish_system_state();

    operation_step("quiesce");
    auto t = std::chrono::steady_clock::now();
    const quiesced stopped = co_await quiesce(true);
    m.steps_ms["quiesce"] = since(t);
    m.quiesce = stopped.mode();
    m.quiesce_note = stopped.note;

    // Snapshot, into <id>.partial/.
    operation_step("snapshot");
    t = std::chrono::steady_clock::now();
    const std::filesystem::path partial = store.partial_of(id);
    const std::filesystem::path env_dir = env.current()->storage.env_dir;
    const std::filesystem::path db_file = opts.data_dir / "database.sqlite";
    const bool with_database = database != nullptr;
    std::int64_t database_ms = 0, mount_ms = 0;
    std::string failure;
    int failure_errno = 0;
    const uring::data_mover mover = data_mover();
    co_await offload_bulk([&] {
      try {
        std::filesystem::create_directories(partial);
        // Beside the tree copy, on a thread of its own: the progress total, the configuration
        // and the database. On a reflink file system the tree and the database are both
        // metadata work, and the database's SHA-256 would otherwise come on top of the tree.
        std::exception_ptr side_failure;
        std::thread side([&] {
          try {
            std::error_code ec;
            if (std::filesystem::is_directory(env_dir, ec)) {
              operation_total = checkpoint::tree_size(env_dir);
            }
            if (auto text = read_file(env.paths().config_file())) {
              write_file_atomically(partial / "config.json", *text, 0600);
            }
            if (!with_database) return;
            const auto t0 = std::chrono::steady_clock::now();
            const std::filesystem::path to = partial / "database.sqlite";
            std::optional<db::backup_result> b = db::clone(db_file, to);
            const char* method = b ? "reflink" : "backup API";
            if (!b) b = db::backup(db_file, to);
            m.database = checkpoint::manifest::database_copy{"database.sqlite", b->bytes, b->pages,
                                                             b->sha256, method};
            database_ms = since(t0);
          } catch (...) {
            side_failure = std::current_exception();
          }
        });
        try {
          const auto t0 = std::chrono::steady_clock::now();
          std::error_code ec;
          if (std::filesystem::is_directory(env_dir, ec)) {
            checkpoint::copy_options copy;
            copy.progress = [&](std::uint64_t done) { operation_done = done; };
            copy.move_data = mover;
            copy.sync = false;  // the commit's syncfs makes the whole checkpoint durable
            const checkpoint::copy_stats c =
                checkpoint::copy_tree(env_dir, partial / "mount", copy);
            m.mount = {c.files,           c.dirs,      c.symlinks, c.bytes, c.reflinked,
                       c.copy_file_range, c.read_write};
          } else {
            std::filesystem::create_directories(partial / "mount");
          }
          mount_ms = since(t0);
        } catch (...) {
          side.join();
          throw;
        }
        side.join();
        if (side_failure) std::rethrow_exception(side_failure);
      } catch (const std::system_error& e) {
        failure = e.what();
        failure_errno = e.code().value();
      } catch (const std::exception& e) {
        failure = e.what();
      }
    });
    if (with_database) m.steps_ms["database"] = database_ms;
    m.steps_ms["mount"] = mount_ms;
    m.steps_ms["snapshot"] = since(t);

    // Resume: what was stopped starts again (new PIDs), whatever became of the snapshot.
    operation_step("resume");
    t = std::chrono::steady_clock::now();
    co_await resume(stopped);
    m.steps_ms["resume"] = since(t);

    if (failure.empty()) {
      operation_step("commit");
      m.created_at = std::chrono::system_clock::now();
      m.steps_ms["total"] = since(started);
      co_await offload([&] {
        try {
          store.commit(m);
        } catch (const std::system_error& e) {
          failure = e.what();
          failure_errno = e.code().value();
        }
      });
    }
    if (!failure.empty()) {
      co_await offload([&] {
        try {
          checkpoint::remove_tree(partial);
        } catch (const std::exception&) {
        }
      });
    }
    operation = nullptr;
    operation_running = false;
    publish("operation",
            {{"kind", "checkpoint"}, {"id", id}, {"step", failure.empty() ? "done" : "failed"}});
    publish_system_state();
    if (!failure.empty()) {
      log::error("checkpoint failed", {{"id", id}, {"error", failure}});
      const int status = failure_errno == ENOSPC || failure_errno == EDQUOT ? 507 : 500;
      co_return std::make_pair(status,
                               json{{"error", "checkpoint failed: " + failure}, {"id", id}});
    }
    log::info("checkpoint", {{"id", id},
                             {"ms", std::to_string(m.steps_ms["total"])},
                             {"files", std::to_string(m.mount.files)}});
    json answer = {{"id", id}, {"manifest", checkpoint::to_json(m)}};
    // Usable here already; the copy in the store follows in the background.
    start_upload(id);
    answer["upload"] = env.upload_status(id);
    co_return std::make_pair(200, std::move(answer));
  };

  // POST /restore: verify the checkpoint's database copy -> quiesce -> stop the database
  // component (its final sync) -> move the current database and environment directory aside ->
  // copy the checkpoint's in -> a new database component (a new replication generation) ->
  // restart everything (new PIDs). Anything failing puts the aside state back.
  env.restore_checkpoint = [&](std::string id) -> asio::awaitable<std::pair<int, nlohmann::json>> {
    using json = nlohmann::json;
    if (auto refused = refuse_operation()) co_return *refused;
    operation_running = true;
    const checkpoint::local_store store(env.paths().checkpoints_dir());
    std::optional<checkpoint::manifest> m;
    std::string digest, failure;
    bool here = false;
    co_await offload([&] { here = store.exists(id); });
    if (!here && env.store()) {
      // Made on another machine: downloaded into a local checkpoint first.
      operation = {{"kind", "restore"}, {"id", id}, {"step", "download"}};
      json event = {{"kind", "restore"}, {"id", id}, {"step", "download"}};
      publish("operation", std::move(event));
      std::string download_failure;
      try {
        co_await checkpoint::download(*env.store(), store, id);
      } catch (const std::exception& e) {
        download_failure = e.what();
      }
      operation = nullptr;
      if (!download_failure.empty()) {
        operation_running = false;
        json error = {{"error", "could not download the checkpoint: " + download_failure},
                      {"id", id}};
        co_return std::make_pair(502, std::move(error));
      }
    }
    co_await offload_bulk([&] {
      m = store.read(id);
      if (!m || !m->database) return;
      try {
        digest = db::sha256_file(store.path_of(id) / m->database->file);
      } catch (const std::exception& e) {
        failure = e.what();
      }
    });
    if (!m) {
      operation_running = false;
      co_return std::make_pair(
          404, json{{"error", "no such checkpoint (or its manifest is unreadable)"}, {"id", id}});
    }
    if (m->database && digest != m->database->sha256) {
      operation_running = false;
      co_return std::make_pair(
          500,
          json{{"error", "the checkpoint's database copy fails its checksum; nothing was changed"},
               {"id", id},
               {"detail", failure.empty() ? json(nullptr) : json(failure)}});
    }
    const auto started = std::chrono::steady_clock::now();
    operation = {{"kind", "restore"}, {"id", id}, {"step", "quiesce"}};
    operation_done = 0;
    operation_total = m->mount.bytes;
    publish_system_state();

    operation_step("quiesce");
    const quiesced stopped = co_await quiesce(false);
    const bool had_database = database != nullptr;
    if (had_database) {
      operation_step("final sync");
      co_await database->stop();
      database.reset();  // its connections close: nothing of ours has the old file open
    }

    operation_step("swap");
    const std::filesystem::path db_file = opts.data_dir / "database.sqlite";
    const std::filesystem::path aside = opts.data_dir / ".restore-aside";
    const std::filesystem::path env_dir = env.current()->storage.env_dir;
    std::filesystem::path env_aside = env_dir;
    env_aside += ".restore-aside";
    const std::filesystem::path aside_trash = opts.data_dir / ".restore-trash";
    std::filesystem::path env_trash = env_dir;
    env_trash += ".restore-trash";
    const std::filesystem::path source = store.path_of(id);
    const bool swap_database = m->database.has_value();
    int failure_errno = 0;
    const uring::data_mover mover = data_mover();
    co_await offload_bulk([&] {
      static constexpr const char* suffixes[] = {"", "-wal", "-shm"};
      bool env_moved = false, env_in_place = false;
      try {
        checkpoint::remove_tree(aside);
        std::filesystem::create_directories(aside);
        if (swap_database) {
          for (const char* suffix : suffixes) {
            std::filesystem::path from = db_file;
            from += suffix;
            if (std::filesystem::exists(from)) {
              std::filesystem::rename(from, aside / ("database.sqlite" + std::string(suffix)));
            }
          }
        }
        checkpoint::remove_tree(env_aside);
        if (std::filesystem::exists(env_dir)) {
          std::error_code renamed;
          std::filesystem::rename(env_dir, env_aside, renamed);
          if (!renamed) {
            env_moved = true;
          } else if (renamed == std::errc::device_or_resource_busy ||
                     renamed == std::errc::cross_device_link) {
            // A mount point: its contents are swapped, inside it.
            env_in_place = true;
          } else {
            throw std::filesystem::filesystem_error("cannot rename", env_dir, env_aside, renamed);
          }
        }
        if (swap_database) {
          std::filesystem::path staged = db_file;
          staged += ".restoring";
          // By reflink where the file system can: a restore costs no copy of the data there.
          std::filesystem::remove(staged);
          checkpoint::copy_file(source / m->database->file, staged);
          std::filesystem::rename(staged, db_file);
        }
        if (!env_dir.parent_path().empty())
          std::filesystem::create_directories(env_dir.parent_path());
        checkpoint::copy_options copy;
        copy.progress = [&](std::uint64_t done) { operation_done = done; };
        copy.move_data = mover;
        if (env_in_place) {
          checkpoint::swap_contents(source / "mount", env_dir, copy);
        } else {
          checkpoint::copy_tree(source / "mount", env_dir, copy);
        }
        // Restored. What was moved aside becomes garbage by one rename each (so that a crash
        // from here on is not undone at start), removed once everything runs again (a mount
        // point's old contents at once: they are inside it, where COMMAND would see them).
        checkpoint::remove_tree(aside_trash);
        std::filesystem::rename(aside, aside_trash);
        checkpoint::remove_tree(env_trash);
        if (env_moved) std::filesystem::rename(env_aside, env_trash);
        if (env_in_place) checkpoint::finish_contents_swap(env_dir);
      } catch (const std::exception& e) {
        failure = e.what();
        if (const auto* s = dynamic_cast<const std::system_error*>(&e))
          failure_errno = s->code().value();
        // Put the state from before back, as it was.
        std::error_code ec;
        try {
          if (env_moved) {
            checkpoint::remove_tree(env_dir);
            std::filesystem::rename(env_aside, env_dir, ec);
          }
          if (env_in_place) checkpoint::undo_contents_swap(env_dir);
          if (swap_database) {
            for (const char* suffix : suffixes) {
              const std::filesystem::path saved = aside / ("database.sqlite" + std::string(suffix));
              std::filesystem::path back = db_file;
              back += suffix;
              if (std::filesystem::exists(saved)) {
                std::filesystem::rename(saved, back, ec);
              } else {
                std::filesystem::remove(back, ec);
              }
            }
            std::filesystem::path staged = db_file;
            staged += ".restoring";
            std::filesystem::remove(staged, ec);
          }
          checkpoint::remove_tree(aside);
        } catch (const std::exception& again) {
          failure += std::string("; putting the state back also failed: ") + again.what();
        }
      }
    });

    operation_step("resume");
    if (had_database && env.current()) {
      make_database(*env.current());
      // The restored file begins a new replication generation: its pin is taken at once, so
      // nothing COMMAND writes meanwhile is missed, and the snapshot's upload need not hold
      // COMMAND back (stop() waits for a start under way).
      asio::co_spawn(io, database->start(false), asio::detached);
    }
    co_await resume(stopped);
    operation = nullptr;
    operation_running = false;
    publish("operation",
            {{"kind", "restore"}, {"id", id}, {"step", failure.empty() ? "done" : "failed"}});
    publish_system_state();
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    if (!failure.empty()) {
      log::error("restore failed; the state before it is back", {{"id", id}, {"error", failure}});
      const int status = failure_errno == ENOSPC || failure_errno == EDQUOT ? 507 : 500;
      co_return std::make_pair(
          status,
          json{{"error", "restore failed, the state before it is back: " + failure}, {"id", id}});
    }
    log::info("restored", {{"id", id}, {"ms", std::to_string(took.count())}});
    // The old state's files go in the background (removing 10,000 files takes seconds).
    asio::co_spawn(
        io,
        [aside_trash, env_trash]() -> asio::awaitable<void> {
          co_await offload_bulk([&] {
            try {
              checkpoint::remove_tree(aside_trash);
              checkpoint::remove_tree(env_trash);
            } catch (const std::exception& e) {
              log::warn("cannot remove what a restore replaced", {{"error", e.what()}});
            }
          });
        },
        asio::detached);
    co_return std::make_pair(
        200, json{{"id", id}, {"restored", checkpoint::to_json(*m)}, {"took_ms", took.count()}});
  };

  bool signals_closed = false;  // set at the end of shut-down: no handler may wait again
  // Signals. TERM and INT shut down (a second one exits at once, for the operator who really
  // means it); the other catchable ones are forwarded to COMMAND's process group.
  // Forwarded through a signalfd: one wake and one read per signal, tini's path in effect.
  proc::signal_stream forwarded(
      io.get_executor(),
      {SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM, SIGCONT, SIGTSTP, SIGTTIN, SIGTTOU,
       SIGURG, SIGIO, SIGPWR, SIGVTALRM, SIGPROF, SIGXCPU, SIGXFSZ});
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        // Until shut-down has stopped COMMAND (close() ends next()).
        while (!signals_closed) {
          const int signal = co_await forwarded.next();
          if (signal == 0 || signals_closed) co_return;
          if (!process || !process->forward_signal(signal)) {
            log::debug("signal not forwarded: no COMMAND running", {{"signal", strsignal(signal)}});
          }
        }
      },
      asio::detached);
  stop_signals.async_wait([&](std::error_code ec, int signal) {
    if (ec || signals_closed) return;
    // With --restart never, the exit status is COMMAND's, as with tini; it is filled in once
    // COMMAND has stopped.
    request_shutdown(strsignal(signal), -1);
    stop_signals.async_wait([&](std::error_code e, int again) {
      if (e || signals_closed) return;
      log::warn("second signal during shut-down; exiting now", {{"signal", strsignal(again)}});
      std::_Exit(128 + again);
    });
  });

  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        std::error_code ec;
        // The flag first: a timer keeps no memory of a cancel() that came before the wait
        // (COMMAND may have failed to start before this coroutine first ran).
        if (!shutting_down) {
          co_await shutdown_requested.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        }
        env.shut_down();  // a wait for the lease or a retry pause ends now
        // A checkpoint or restore under way finishes first (it restarts nothing once shut-down
        // has begun): stopping underneath it could leave half a swap.
        co_await poll_until([&] { return !operation_running; }, forever);
        // Shut-down, the reverse of start-up: COMMAND first (SIGTERM, SIGKILL after
        // --timeout-stop), then the server (in-flight requests finish), then the watchers.
        if (process) co_await process->stop();
        if (components) co_await components->stop();  // in reverse dependency order
        if (database) co_await database->stop();      // the final sync
        // Checkpoint uploads went on meanwhile; they get a bound, then stop between two objects
        // (the manifest goes last, so the store never shows half a checkpoint as whole).
        if (!uploading.empty()) {
          log::info("waiting for checkpoint uploads",
                    {{"count", std::to_string(uploading.size())}});
        }
        if (!co_await wait_for_uploads(upload_grace)) {
          uploads_cancelled = true;
          co_await wait_for_uploads(forever);
        }
        uploads_closed = "not uploaded: state-manager is shutting down";
        // All state is in the store now: another machine may take over at once.
        co_await env.release_lease();
        // What they wrote last still reaches our output (--log-prefix), within a bound.
        if (process) co_await process->drain_output(std::chrono::seconds(1));
        if (components) co_await components->drain_output(std::chrono::seconds(1));
        for (const auto& output : prefixed_output) {
          if (output) output->close();  // a reader that stalls does not hold up the exit
        }
        if (exit_status < 0) {
          const auto& last = process ? process->last_exit() : std::nullopt;
          exit_status = opts.restart == "never" && last ? last->shell_status() : 0;
        }
        // The event streams end with the news that everything stopped, then the server.
        shut_down = true;
        publish_system_state();
        events.close();
        co_await server->stop(drain_grace);
        signals_closed = true;
        stop_signals.cancel();
        forwarded.close();
        reaper.stop();
        log::info("stopped", {{"exit_status", std::to_string(exit_status)}});
      },
      asio::detached);

  io.run();
  stop_offload_worker();
  return exit_status;
}

}  // namespace sm
