// The command line: flags, their environment variables, their defaults.
// Pure: the environment comes in through a lookup function, so every case is unit-testable.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "base/duration.hpp"
#include "base/log.hpp"
#include "cli/option_table.hpp"

namespace sm::cli {

struct listen_address {
  std::string host;         // numeric IPv4 or IPv6 (without brackets)
  unsigned short port = 0;  // 0: the kernel picks one (it is logged)
};

// "0.0.0.0:8080", "127.0.0.1:0", "[::1]:8080", ":8080" (all IPv4 interfaces), "localhost:8080"
// (127.0.0.1). Host names are not resolved: that would block start-up on DNS.
std::optional<listen_address> parse_listen_address(const std::string& text);

struct server_options {
  std::string listen = "0.0.0.0:8080";
  listen_address address{"0.0.0.0", 8080};
  std::filesystem::path data_dir = "data";
  std::filesystem::path tmp_dir = "tmp";
  duration restart_delay = std::chrono::seconds(1);
  duration timeout_stop = std::chrono::seconds(90);
  // What to do when COMMAND exits on its own: "always" restart it, restart it "on-failure"
  // only, or "never" (state-manager then exits with its status, like tini).
  std::string restart = "always";
  duration restart_backoff_max{0};  // 0: no backoff
  unsigned restart_max = 0;         // 0: no circuit breaker
  duration restart_window = std::chrono::seconds(60);
  bool wait_for_config = false;
  duration lease_ttl = std::chrono::seconds(30);  // the environment's lease, renewed every third
  bool wait_for_lease = false;  // POST /config waits for another owner's lease instead of 409
  bool log_prefix = false;      // prefix COMMAND's and components' output lines with their name
  std::optional<std::filesystem::path> token_file;
  std::optional<std::string> token;  // STATE_MANAGER_TOKEN, when no token file is named
  log::level log_level = log::level::info;
  log::format log_format = log::format::text;
  duration header_timeout = std::chrono::seconds(10);
  duration idle_timeout = std::chrono::seconds(60);
  std::size_t max_connections = 1024;
  std::vector<std::string> command;  // after "--" (or the first non-option word)
};

struct server_command_line {
  using action = cli::action;
  action what = action::run;
  server_options opts;
  std::string error;  // for action::error: one line saying what is wrong
};

// `args` excludes argv[0]. Each flag also reads STATE_MANAGER_<FLAG> (dashes as underscores,
// upper case); a flag given on the command line wins over its variable.
server_command_line parse_server_command_line(const std::vector<std::string>& args,
                                              const env_lookup& env);

std::string server_usage_text();

}  // namespace sm::cli
