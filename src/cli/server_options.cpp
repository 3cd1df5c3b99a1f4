#include "cli/server_options.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace sm::cli {

namespace {

std::string set_duration(duration& target, const std::string& value) {
  std::optional<duration> d = parse_duration(value);
  if (!d) return "invalid duration \"" + value + "\" (use e.g. 250ms, 1s, 2m, 1h)";
  target = *d;
  return {};
}

// A duration that must be more than zero (a zero timeout or window would mean "never").
std::string set_positive_duration(duration& target, const std::string& value) {
  std::string e = set_duration(target, value);
  if (e.empty() && target.count() == 0) return "must be more than 0";
  return e;
}

std::optional<bool> parse_bool(const std::string& value) {
  if (value == "1" || value == "true" || value == "yes" || value == "on") return true;
  if (value == "0" || value == "false" || value == "no" || value == "off") return false;
  return std::nullopt;
}

std::string environment_name(std::string_view flag_name) {
  std::string out = "STATE_MANAGER_";
  for (char c : flag_name) out += c == '-' ? '_' : char(c - 'a' + 'A');
  return out;
}

// The server's flags. Each also reads STATE_MANAGER_<FLAG>, derived from the name so that the
// two can never drift apart.
std::vector<option> server_flags(server_options& o) {
  std::vector<option> flags = {
      {"listen", arity::value, "",
       [&o](const std::string& v) -> std::string {
         std::optional<listen_address> a = parse_listen_address(v);
         if (!a)
           return "invalid address \"" + v + "\" (use ADDR:PORT, e.g. 0.0.0.0:8080 or [::1]:8080)";
         o.listen = v;
         o.address = *a;
         return {};
       }},
      {"data-dir", arity::value, "",
       [&o](const std::string& v) -> std::string {
         if (v.empty()) return "must not be empty";
         o.data_dir = v;
         return {};
       }},
      {"tmp-dir", arity::value, "",
       [&o](const std::string& v) -> std::string {
         if (v.empty()) return "must not be empty";
         o.tmp_dir = v;
         return {};
       }},
      {"restart-delay", arity::value, "",
       [&o](const std::string& v) { return set_duration(o.restart_delay, v); }},
      {"timeout-stop", arity::value, "",
       [&o](const std::string& v) { return set_duration(o.timeout_stop, v); }},
      {"restart", arity::value, "",
       [&o](const std::string& v) -> std::string {
         if (v != "always" && v != "on-failure" && v != "never") {
           return "expected always, on-failure or never, got \"" + v + "\"";
         }
         o.restart = v;
         return {};
       }},
      {"restart-backoff-max", arity::value, "",
       [&o](const std::string& v) { return set_duration(o.restart_backoff_max, v); }},
      {"restart-max", arity::value, "",
       [&o](const std::string& v) -> std::string {
         unsigned n = 0;
         auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
         if (ec != std::errc() || end != v.data() + v.size() || v.empty()) {
           return "expected a whole number (0: no limit), got \"" + v + "\"";
         }
         o.restart_max = n;
         return {};
       }},
      {"restart-window", arity::value, "",
       [&o](const std::string& v) { return set_positive_duration(o.restart_window, v); }},
      {"wait-for-config", arity::toggle, "",
       [&o](const std::string& v) -> std::string {
         std::optional<bool> b = parse_bool(v);
         if (!b) return "expected true or false, got \"" + v + "\"";
         o.wait_for_config = *b;
         return {};
       }},
      {"lease-ttl", arity::value, "",
       [&o](const std::string& v) -> std::string {
         if (std::string e = set_positive_duration(o.lease_ttl, v); !e.empty()) return e;
         if (o.lease_ttl < std::chrono::seconds(1)) return "must be at least 1s";
         return {};
       }},
      {"wait-for-lease", arity::toggle, "",
       [&o](const std::string& v) -> std::string {
         std::optional<bool> b = parse_bool(v);
         if (!b) return "expected true or false, got \"" + v + "\"";
         o.wait_for_lease = *b;
         return {};
       }},
      {"log-prefix", arity::toggle, "",
       [&o](const std::string& v) -> std::string {
         std::optional<bool> b = parse_bool(v);
         if (!b) return "expected true or false, got \"" + v + "\"";
         o.log_prefix = *b;
         return {};
       }},
      {"token-file", arity::value, "",
       [&o](const std::string& v) -> std::string {
         if (v.empty()) return "must not be empty";
         o.token_file = v;
         return {};
       }},
      {"log-format", arity::value, "",
       [&o](const std::string& v) -> std::string {
         std::optional<log::format> f = log::parse_format(v);
         if (!f) return "expected text or json, got \"" + v + "\"";
         o.log_format = *f;
         return {};
       }},
      {"log-level", arity::value, "",
       [&o](const std::string& v) -> std::string {
         std::optional<log::level> l = log::parse_level(v);
         if (!l) return "expected debug, info, warn or error, got \"" + v + "\"";
         o.log_level = *l;
         return {};
       }},
      {"header-timeout", arity::value, "",
       [&o](const std::string& v) { return set_positive_duration(o.header_timeout, v); }},
      {"idle-timeout", arity::value, "",
       [&o](const std::string& v) { return set_positive_duration(o.idle_timeout, v); }},
      {"max-connections", arity::value, "",
       [&o](const std::string& v) -> std::string {
         std::size_t n = 0;
         auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
         if (ec != std::errc() || end != v.data() + v.size() || n == 0 || n > 1'000'000) {
           return "expected a number from 1 to 1000000, got \"" + v + "\"";
         }
         o.max_connections = n;
         return {};
       }},
  };
  for (option& f : flags) f.variable = environment_name(f.name);
  return flags;
}

}  // namespace

std::optional<listen_address> parse_listen_address(const std::string& text) {
  std::string host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port_text = std::string_view(text).substr(close + 2);
    in6_addr v6{};
    if (inet_pton(AF_INET6, host.c_str(), &v6) != 1) return std::nullopt;
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    host = text.substr(0, colon);
    port_text = std::string_view(text).substr(colon + 1);
    if (host.empty()) host = "0.0.0.0";
    if (host == "localhost") host = "127.0.0.1";
    in_addr v4{};
    if (inet_pton(AF_INET, host.c_str(), &v4) != 1) return std::nullopt;
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      port > 65535) {
    return std::nullopt;
  }
  return listen_address{host, static_cast<unsigned short>(port)};
}

server_command_line parse_server_command_line(const std::vector<std::string>& args,
                                              const env_lookup& env) {
  server_command_line out;
  grammar rules;
  rules.help_hint = "--help";
  rules.words = words_rule::command;
  rules.version = true;
  rules.take_words = [&](const std::vector<std::string>& words) {
    out.opts.command = words;
    return std::string();
  };
  const parse_outcome parsed = parse_options(args, server_flags(out.opts), rules, env);
  if (parsed.what != action::run) return {parsed.what, {}, parsed.error};
  // STATE_MANAGER_TOKEN holds the token itself; a token file, from a flag or its variable, wins.
  if (!out.opts.token_file) out.opts.token = env("STATE_MANAGER_TOKEN");
  return out;
}

std::string server_usage_text() {
  return R"(Usage: state-manager [OPTIONS] [-- COMMAND [ARG...]]
       state-manager restore-db --to FILE [--at TIME] [--generation G] [--force]
       state-manager checkpoint create|restore|list|delete [ID] [--url URL] [--json]

The init process of a stateful sandbox: supervises COMMAND (restarting it by policy, reaping
orphans, forwarding signals to its process group), serves an HTTP control API, keeps the
sandbox's configuration, replicates its database to the object store the configuration names,
and checkpoints and restores its state.

Options (each also read from the environment variable shown; a flag wins over its variable):
  --listen ADDR:PORT      where the HTTP API listens; port 0 picks a free port, which is
                          logged (STATE_MANAGER_LISTEN, default 0.0.0.0:8080)
  --data-dir DIR          the environment's data, created if missing
                          (STATE_MANAGER_DATA_DIR, default ./data)
  --tmp-dir DIR           configuration and checkpoints, created if missing
                          (STATE_MANAGER_TMP_DIR, default ./tmp)
  --restart-delay DUR     wait before restarting COMMAND after an unexpected exit
                          (STATE_MANAGER_RESTART_DELAY, default 1s)
  --timeout-stop DUR      grace period between SIGTERM and SIGKILL when stopping COMMAND
                          (STATE_MANAGER_TIMEOUT_STOP, default 90s)
  --restart POLICY        when COMMAND exits on its own: always restart it, on-failure
                          (non-zero exit or signal) only, or never; with never (or once
                          COMMAND ends for good), state-manager exits with COMMAND's status:
                          its exit code, or 128+N after signal N (STATE_MANAGER_RESTART,
                          default always)
  --restart-backoff-max DUR
                          double the restart delay after each failure in a row, up to DUR
                          (from --restart-delay, or 100ms if that is 0); a run of at least DUR
                          starts over (STATE_MANAGER_RESTART_BACKOFF_MAX, default: no backoff)
  --restart-max N         give up after N unexpected exits within --restart-window: COMMAND
                          is then "failed" and state-manager exits with its status
                          (STATE_MANAGER_RESTART_MAX, default 0: never give up)
  --restart-window DUR    the circuit breaker's window (STATE_MANAGER_RESTART_WINDOW, default 1m)
  --wait-for-config       start COMMAND only once a configuration is applied
                          (STATE_MANAGER_WAIT_FOR_CONFIG=true)
  --lease-ttl DUR         time to live of the lease on the environment's storage prefix,
                          renewed every third of it; a machine that dies frees its environment
                          within one TTL (STATE_MANAGER_LEASE_TTL, default 30s, at least 1s)
  --wait-for-lease        when another live state-manager holds the lease, wait for it instead
                          of refusing POST /config with 409 (STATE_MANAGER_WAIT_FOR_LEASE=true)
  --log-prefix            prefix each line COMMAND and the components write with its name,
                          "[web] ...", for when several share the container's output
                          (STATE_MANAGER_LOG_PREFIX=true; default: output passes unchanged)
  --token-file FILE       require "Authorization: Bearer <token>" on every endpoint except
                          GET /healthz; the file holds the token (STATE_MANAGER_TOKEN_FILE;
                          or give the token itself in STATE_MANAGER_TOKEN)
  --log-format FORMAT     text or json lines on stderr (STATE_MANAGER_LOG_FORMAT, default text)
  --log-level LEVEL       debug, info, warn or error (STATE_MANAGER_LOG_LEVEL, default info)
  --header-timeout DUR    a client must send a whole request (and read a response) within
                          this time, or gets 408 (STATE_MANAGER_HEADER_TIMEOUT, default 10s)
  --idle-timeout DUR      close kept-alive connections idle this long
                          (STATE_MANAGER_IDLE_TIMEOUT, default 60s)
  --max-connections N     answer 503 to connections beyond N
                          (STATE_MANAGER_MAX_CONNECTIONS, default 1024)
  -h, --help              show this help and exit
  -V, --version           show the version and exit

DUR is a number with a unit: 250ms, 1s, 2m, 1h, 1m30s (0 is allowed where it makes sense).

restore-db restores the environment's database from its replica in the object store into
FILE, as of TIME (RFC 3339) if given, without a running server and without taking the lease;
see `state-manager restore-db --help`.

checkpoint asks a running state-manager, through its HTTP API (--url, default
http://127.0.0.1:8080), to checkpoint the environment, restore a checkpoint, list the
checkpoints or delete one; see `state-manager checkpoint --help`.

HTTP API: GET / (status), GET /healthz, GET /metrics, GET /events, GET /config,
POST /config, POST /checkpoint, POST /restore, GET /checkpoints, GET /checkpoints/ID,
DELETE /checkpoints/ID, POST /release-lease. Example:
  curl -X POST http://localhost:8080/config -d '{"storage": {"bucket": "env-bucket",
       "endpoint": "file:///var/lib/objects"}, "stacks": []}'

Signals: SIGTERM and SIGINT shut down in order (COMMAND first: SIGTERM to its process group,
SIGKILL after --timeout-stop); HUP, QUIT, USR1, USR2, WINCH and the other catchable signals are
forwarded to COMMAND's process group.

Exit status: 0 after an orderly shut-down (SIGTERM, SIGINT); COMMAND's status with
--restart never or when COMMAND ended for good; 1 when start-up fails; 2 for a bad command line.
)";
}

}  // namespace sm::cli
