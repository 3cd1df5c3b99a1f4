// The program as a table of contents: parse options (main) -> prepare directories -> recover what
// a crash left -> load the configuration -> declare COMMAND -> listen -> start the system ->
// serve -> on a signal, stop in reverse.
#include "app/app.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>

#include "api/environment.hpp"
#include "api/routes.hpp"
#include "app/system.hpp"
#include "async/event_bus.hpp"
#include "async/offload.hpp"
#include "base/file.hpp"
#include "base/log.hpp"
#include "checkpoint/local_store.hpp"
#include "checkpoint/pipeline.hpp"
#include "db/component.hpp"
#include "http/server.hpp"
#include "proc/child.hpp"
#include "proc/freezer.hpp"
#include "proc/signals.hpp"
#include "version.h"

namespace sm {

namespace {

using namespace std::chrono_literals;

// How long in-flight requests may take to finish once shut-down starts.
constexpr auto drain_grace = 5s;

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

// A checkpoint that a crash cut short never counts: its <id>.partial/ goes. Best effort: a
// read-only tmp/ must not keep PID 1 from coming up.
void remove_interrupted_checkpoints(const api::environment& env) {
  try {
    ensure_directory(env.paths().checkpoints_dir(), 0700);
    for (const std::string& id :
         checkpoint::local_store(env.paths().checkpoints_dir()).remove_partials()) {
      log::warn("removed an interrupted checkpoint", {{"id", id}});
    }
  } catch (const std::exception& e) {
    log::warn("cannot prepare tmp/checkpoints; checkpoints will fail", {{"error", e.what()}});
  }
}

// A restore cut short by a crash, by its journal in data/: rolled back before its commit,
// forward after it; the database and env_dir end both as before it or both as the checkpoint.
void recover_interrupted_restore(const cli::server_options& opts, const api::environment& env) {
  const std::filesystem::path database = opts.data_dir / "database.sqlite";
  const std::vector<checkpoint::restore_recovery> components = {
      {"database", [&] { db::component::roll_back_restore(database); },
       [&] { db::component::roll_forward_restore(database); },
       [&] { db::component::remove_restore_garbage(database); }}};
  // The journal names the env_dir it swapped; this one serves when it names none.
  const std::filesystem::path env_dir =
      env.current() ? env.current()->storage.env_dir : config::storage_config{}.env_dir;
  try {
    for (const std::string& what :
         checkpoint::recover_interrupted_restore(opts.data_dir, env_dir, components)) {
      log::warn(what, {{"journal", opts.data_dir.string()}});
    }
  } catch (const std::exception& e) {
    log::error("cannot recover an interrupted restore; retried at the next start",
               {{"error", e.what()}});
  }
}

// Binds the API's socket, last, so that a client never reaches a half-started server.
void listen(std::optional<http::server>& server, asio::io_context& io,
            const cli::server_options& opts, api::environment& env, app::system& system,
            const api::api_options& api_opts) {
  http::server_limits limits;
  limits.header_timeout = opts.header_timeout;
  limits.idle_timeout = opts.idle_timeout;
  // Past the descriptor limit, accept() fails and clients hang unanswered; below it, the extra
  // ones get a clear 503.
  limits.max_connections = std::min(opts.max_connections, connection_capacity());
  if (limits.max_connections < opts.max_connections) {
    log::warn("--max-connections lowered to fit the open-file limit",
              {{"requested", std::to_string(opts.max_connections)},
               {"max_connections", std::to_string(limits.max_connections)}});
  }
  server.emplace(io.get_executor(), limits, api::make_handler(env, system, api_opts),
                 api::make_head_check(api_opts));
  const auto bound = server->listen({asio::ip::make_address(opts.address.host), opts.address.port});
  log::info("listening", {{"address", format_endpoint(bound)},
                          {"version", STATE_MANAGER_VERSION},
                          {"auth", api_opts.token ? "bearer token" : "none"}});
}

// Signals once serving. TERM and INT shut down (a second one exits at once, for the operator
// who really means it); the other catchable ones are forwarded to COMMAND's process group,
// through a signalfd: one wake and one read per signal, tini's path in effect.
class signal_handling {
 public:
  // `stop_signals` was set up first thing, so that none is lost during start-up.
  signal_handling(asio::signal_set& stop_signals, app::system& system)
      : stop_signals_(stop_signals),
        system_(system),
        forwarded_(stop_signals.get_executor(),
                   {SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM, SIGCONT, SIGTSTP, SIGTTIN,
                    SIGTTOU, SIGURG, SIGIO, SIGPWR, SIGVTALRM, SIGPROF, SIGXCPU, SIGXFSZ}) {
    asio::co_spawn(stop_signals.get_executor(), forward(), asio::detached);
    stop_signals_.async_wait([this](std::error_code ec, int signal) {
      if (ec || closed_) return;
      // With --restart never, the exit status is COMMAND's, as with tini; it is filled in once
      // COMMAND has stopped.
      system_.request_shutdown(strsignal(signal), -1);
      stop_signals_.async_wait([this](std::error_code e, int again) {
        if (e || closed_) return;
        log::warn("second signal during shut-down; exiting now", {{"signal", strsignal(again)}});
        std::_Exit(128 + again);
      });
    });
  }
  // The end of shut-down: no handler may wait again.
  void close() {
    closed_ = true;
    stop_signals_.cancel();
    forwarded_.close();
  }

 private:
  asio::awaitable<void> forward() {
    while (!closed_) {  // until shut-down has stopped COMMAND (close() ends next())
      const int signal = co_await forwarded_.next();
      if (signal == 0 || closed_) co_return;
      if (!system_.forward_signal(signal)) {
        log::debug("signal not forwarded: no COMMAND running", {{"signal", strsignal(signal)}});
      }
    }
  }

  asio::signal_set& stop_signals_;
  app::system& system_;
  proc::signal_stream forwarded_;
  bool closed_ = false;
};

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
  event_bus events(io.get_executor());
  api::api_options api_opts;
  api_opts.events = &events;
  proc::reaper reaper(io.get_executor());
  app::system system(io.get_executor(), opts, events, reaper);
  api::environment& env = system.environment();
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
      step("remove interrupted checkpoints", [&] { remove_interrupted_checkpoints(env); }) &&
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
      step("recover an interrupted restore", [&] { recover_interrupted_restore(opts, env); }) &&
      // The supervised process, declared (it starts once serving).
      step("prepare COMMAND", [&] { system.declare_command(); }) &&
      step("listen", [&] { listen(server, io, opts, env, system, api_opts); });
  if (!started) return 1;

  // Serve.
  asio::co_spawn(io, reaper.run(), asio::detached);
  asio::co_spawn(io, server->run(), asio::detached);
  system.attach(*server);

  // Signals: TERM and INT shut down, the others go to COMMAND.
  signal_handling signals(stop_signals, system);

  // Start the system: the configuration's components, then COMMAND.
  system.begin();

  // Shut-down, the reverse of start-up: the system (COMMAND, components, uploads, lease), then
  // the event streams with the news that everything stopped, then the server, the signals and
  // the reaper.
  int exit_status = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await system.shutdown_requested();
        exit_status = co_await system.shut_down();
        system.stopped();
        co_await server->stop(drain_grace);
        signals.close();
        reaper.stop();
        log::info("stopped", {{"exit_status", std::to_string(exit_status)}});
      },
      asio::detached);

  io.run();
  stop_offload_worker();
  return exit_status;
}

}  // namespace sm
