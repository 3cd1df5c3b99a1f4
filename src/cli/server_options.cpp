#include "cli/server_options.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>
#include <map>

namespace sm::cli {

namespace {

// One row per flag: its name, whether it takes a value, and how to apply the value. The
// environment variable is derived from the name, so the two can never drift apart.
struct flag {
  const char* name;
  bool takes_value;
  // Returns an error message, or empty when the value was applied.
  std::string (*apply)(server_options&, const std::string& value);
};

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

const flag flags[] = {
    {"listen", true,
     [](server_options& o, const std::string& v) -> std::string {
       std::optional<listen_address> a = parse_listen_address(v);
       if (!a)
         return "invalid address \"" + v + "\" (use ADDR:PORT, e.g. 0.0.0.0:8080 or [::1]:8080)";
       o.listen = v;
       o.address = *a;
       return {};
     }},
    {"data-dir", true,
     [](server_options& o, const std::string& v) -> std::string {
       if (v.empty()) return "must not be empty";
       o.data_dir = v;
       return {};
     }},
    {"tmp-dir", true,
     [](server_options& o, const std::string& v) -> std::string {
       if (v.empty()) return "must not be empty";
       o.tmp_dir = v;
       return {};
     }},
    {"restart-delay", true,
     [](server_options& o, const std::string& v) { return set_duration(o.restart_delay, v); }},
    {"timeout-stop", true,
     [](server_options& o, const std::string& v) { return set_duration(o.timeout_stop, v); }},
    {"restart", true,
     [](server_options& o, const std::string& v) -> std::string {
       if (v != "always" && v != "on-failure" && v != "never") {
         return "expected always, on-failure or never, got \"" + v + "\"";
       }
       o.restart = v;
       return {};
     }},
    {"restart-backoff-max", true,
     [](server_options& o, const std::string& v) {
       return set_duration(o.restart_backoff_max, v);
     }},
    {"restart-max", true,
     [](server_options& o, const std::string& v) -> std::string {
       unsigned n = 0;
       auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
       if (ec != std::errc() || end != v.data() + v.size() || v.empty()) {
         return "expected a whole number (0: no limit), got \"" + v + "\"";
       }
       o.restart_max = n;
       return {};
     }},
    {"restart-window", true,
     [](server_options& o, const std::string& v) {
       return set_positive_duration(o.restart_window, v);
     }},
    {"wait-for-config", false,
     [](server_options& o, const std::string& v) -> std::string {
       std::optional<bool> b = parse_bool(v);
       if (!b) return "expected true or false, got \"" + v + "\"";
       o.wait_for_config = *b;
       return {};
     }},
    {"lease-ttl", true,
     [](server_options& o, const std::string& v) -> std::string {
       if (std::string e = set_positive_duration(o.lease_ttl, v); !e.empty()) return e;
       if (o.lease_ttl < std::chrono::seconds(1)) return "must be at least 1s";
       return {};
     }},
    {"wait-for-lease", false,
     [](server_options& o, const std::string& v) -> std::string {
       std::optional<bool> b = parse_bool(v);
       if (!b) return "expected true or false, got \"" + v + "\"";
       o.wait_for_lease = *b;
       return {};
     }},
    {"log-prefix", false,
     [](server_options& o, const std::string& v) -> std::string {
       std::optional<bool> b = parse_bool(v);
       if (!b) return "expected true or false, got \"" + v + "\"";
       o.log_prefix = *b;
       return {};
     }},
    {"token-file", true,
     [](server_options& o, const std::string& v) -> std::string {
       if (v.empty()) return "must not be empty";
       o.token_file = v;
       return {};
     }},
    {"log-format", true,
     [](server_options& o, const std::string& v) -> std::string {
       std::optional<log::format> f = log::parse_format(v);
       if (!f) return "expected text or json, got \"" + v + "\"";
       o.log_format = *f;
       return {};
     }},
    {"log-level", true,
     [](server_options& o, const std::string& v) -> std::string {
       std::optional<log::level> l = log::parse_level(v);
       if (!l) return "expected debug, info, warn or error, got \"" + v + "\"";
       o.log_level = *l;
       return {};
     }},
    {"header-timeout", true,
     [](server_options& o, const std::string& v) {
       return set_positive_duration(o.header_timeout, v);
     }},
    {"idle-timeout", true,
     [](server_options& o, const std::string& v) {
       return set_positive_duration(o.idle_timeout, v);
     }},
    {"max-connections", true,
     [](server_options& o, const std::string& v) -> std::string {
       std::size_t n = 0;
       auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
       if (ec != std::errc() || end != v.data() + v.size() || n == 0 || n > 1'000'000) {
         return "expected a number from 1 to 1000000, got \"" + v + "\"";
       }
       o.max_connections = n;
       return {};
     }},
};

std::string environment_name(std::string_view flag_name) {
  std::string out = "STATE_MANAGER_";
  for (char c : flag_name) out += c == '-' ? '_' : char(c - 'a' + 'A');
  return out;
}

const flag* find_flag(std::string_view name) {
  for (const flag& f : flags) {
    if (name == f.name) return &f;
  }
  return nullptr;
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
  auto error = [&](std::string message) {
    out.what = server_command_line::action::error;
    out.error = std::move(message);
    return out;
  };

  // First the words: which flags were given (the last of a repeated flag wins), and the command.
  std::map<std::string, std::string> given;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      if (i + 1 == args.size()) return error("\"--\" must be followed by a command");
      out.opts.command.assign(args.begin() + std::ptrdiff_t(i) + 1, args.end());
      break;
    }
    if (arg == "-h" || arg == "--help") {
      out.what = server_command_line::action::help;
      return out;
    }
    if (arg == "-V" || arg == "--version") {
      out.what = server_command_line::action::version;
      return out;
    }
    if (arg.rfind("--", 0) != 0) {
      if (arg.size() > 1 && arg[0] == '-') return error("unknown option " + arg + " (see --help)");
      // The first word that is not an option starts the command, as with tini and env.
      out.opts.command.assign(args.begin() + std::ptrdiff_t(i), args.end());
      break;
    }
    const std::size_t equals = arg.find('=');
    const std::string name =
        arg.substr(2, equals == std::string::npos ? std::string::npos : equals - 2);
    const flag* f = find_flag(name);
    if (!f) return error("unknown option --" + name + " (see --help)");
    if (equals != std::string::npos) {
      given[name] = arg.substr(equals + 1);
    } else if (!f->takes_value) {
      given[name] = "true";
    } else if (i + 1 < args.size()) {
      given[name] = args[++i];
    } else {
      return error("option --" + name + " needs a value");
    }
  }

  // Then each setting from its flag, or else from its variable: a flag replaces its variable
  // entirely, so a bad value in the environment does not matter once the flag is given.
  for (const flag& f : flags) {
    const auto flag_value = given.find(f.name);
    if (flag_value != given.end()) {
      if (std::string why = f.apply(out.opts, flag_value->second); !why.empty()) {
        return error(std::string("--") + f.name + ": " + why);
      }
      continue;
    }
    const std::string variable = environment_name(f.name);
    if (std::optional<std::string> value = env(variable)) {
      if (std::string why = f.apply(out.opts, *value); !why.empty()) {
        return error(variable + ": " + why);
      }
    }
  }
  // STATE_MANAGER_TOKEN holds the token itself; a token file, from a flag or its variable, wins.
  if (!out.opts.token_file) out.opts.token = env("STATE_MANAGER_TOKEN");
  return out;
}

std::string server_usage_text() {
  return R"(Usage: state-manager [OPTIONS] [-- COMMAND [ARG...]]
       state-manager restore-db --to FILE [--at TIME] [--generation G] [--force]
       state-manager checkpoint create|restore|list|delete [ID] [--url URL] [--json]

The init process of a stateful sandbox: supervises COMMAND (restarting it by policy, reaping
orphans, forwarding signals to its process group), serves an HTTP control API, and keeps the
sandbox's configuration; later versions replicate its database to S3 and checkpoint and
restore its state.

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

HTTP API: GET / (status), GET /config, POST /config, GET /healthz, POST /checkpoint,
POST /restore, POST /release-lease. Example:
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
