#include "app.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <optional>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/signal_set.hpp>
#include <asio/use_awaitable.hpp>

#include "api/environment.hpp"
#include "api/routes.hpp"
#include "async/offload.hpp"
#include "base/file.hpp"
#include "base/log.hpp"
#include "http/server.hpp"
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

std::string read_token(const std::filesystem::path& file) {
  std::optional<std::string> text = read_file(file, 64 * 1024, /*allow_pipes=*/true);
  if (!text) throw std::runtime_error("token file " + file.string() + " does not exist");
  // Editors add a final newline, and copy-paste adds spaces: the token is what lies between.
  const auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  while (!text->empty() && space(text->back())) text->pop_back();
  const auto first = std::find_if_not(text->begin(), text->end(), space);
  text->erase(text->begin(), first);
  if (text->empty()) throw std::runtime_error("token file " + file.string() + " is empty");
  return *text;
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

}  // namespace

int run_app(const options& opts) {
  log::configure(opts.log_level, opts.log_format);
  // A peer that closes early must cost an EPIPE, not the process (PID 1 least of all).
  std::signal(SIGPIPE, SIG_IGN);

  asio::io_context io(1);
  api::environment env({opts.data_dir, opts.tmp_dir});
  api::api_options api_opts;
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
               api_opts.token = read_token(*opts.token_file);
             else if (opts.token && !opts.token->empty())
               api_opts.token = opts.token;
           }) &&
      // A saved configuration is applied before the first request can see the state.
      step("load configuration",
           [&] { log_config_load(env.load_saved(), env.paths().config_file()); }) &&
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
        server.emplace(io.get_executor(), limits, api::make_handler(env, api_opts));
        const auto bound =
            server->listen({asio::ip::make_address(opts.address.host), opts.address.port});
        log::info("listening", {{"address", format_endpoint(bound)},
                                {"version", STATE_MANAGER_VERSION},
                                {"auth", api_opts.token ? "bearer token" : "none"}});
      });
  if (!started) return 1;

  asio::co_spawn(io, server->run(), asio::detached);

  // SIGTERM and SIGINT start the orderly shut-down; a second one while it runs exits at once,
  // for the operator who really means it.
  asio::signal_set signals(io, SIGTERM, SIGINT);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        std::error_code ec;
        const int signal =
            co_await signals.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return;
        log::info("shutting down", {{"signal", strsignal(signal)}});
        signals.async_wait([](std::error_code e, int again) {
          if (e) return;
          log::warn("second signal during shut-down; exiting now", {{"signal", strsignal(again)}});
          std::_Exit(128 + again);
        });
        // Shut-down, the reverse of start-up: stop serving (in-flight requests finish).
        co_await server->stop(drain_grace);
        signals.cancel();
        log::info("stopped");
      },
      asio::detached);

  io.run();
  stop_offload_worker();
  return 0;
}

}  // namespace sm
