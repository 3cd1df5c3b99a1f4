#include "cli/checkpoint_command.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <system_error>

#include <nlohmann/json.hpp>

#include "base/file.hpp"
#include "base/percent.hpp"
#include "http/ascii.hpp"

namespace sm::cli {

namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

// A failure the command reports as its one line on stderr (exit status 1).
class failed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Checkpoints of big trees take minutes, so create and restore wait for their answer as long as
// it takes; everything else gives up after this long without a byte from the server.
constexpr milliseconds connect_timeout{10'000};
constexpr milliseconds short_request_idle_limit{60'000};
// The progress poll is cosmetic: it must never hold up the answer it decorates.
constexpr milliseconds progress_connect_timeout{1'000};
constexpr milliseconds progress_idle_limit{2'000};

// ---------------------------------------------------------------------------------------------
// The command line.

std::string set_url(checkpoint_options& o, const std::string& value) {
  if (value.size() >= 8 && http::iequals(std::string_view(value).substr(0, 8), "https://")) {
    return "https is not supported: the API speaks plain HTTP (use http://, through a tunnel "
           "if it crosses a network)";
  }
  std::optional<http_url> url = parse_http_url(value);
  if (!url) return "expected http://HOST[:PORT][/PATH], got \"" + value + "\"";
  o.url_text = value;
  o.url = *url;
  return {};
}

// The subcommand's options (cli/option_table.hpp).
std::vector<option> checkpoint_flags(checkpoint_options& o) {
  return {
      {"url", arity::value, "STATE_MANAGER_URL",
       [&o](const std::string& v) { return set_url(o, v); }},
      {"token-file", arity::value, "STATE_MANAGER_TOKEN_FILE",
       [&o](const std::string& v) -> std::string {
         if (v.empty()) return "must not be empty";
         o.token_file = v;
         return {};
       }},
      {"json", arity::bare, "",
       [&o](const std::string&) -> std::string {
         o.json = true;
         return {};
       }},
  };
}

std::optional<checkpoint_verb> verb_of(std::string_view word) {
  if (word == "create") return checkpoint_verb::create;
  if (word == "restore") return checkpoint_verb::restore;
  if (word == "list") return checkpoint_verb::list;
  if (word == "delete") return checkpoint_verb::remove;
  return std::nullopt;
}

// The verb and its ID from the words that are not options; empty when they fit.
std::string apply_words(checkpoint_options& o, const std::vector<std::string>& words) {
  if (words.empty()) return "expected create, restore, list or delete (see checkpoint --help)";
  const std::optional<checkpoint_verb> verb = verb_of(words[0]);
  if (!verb) {
    return "unknown command \"" + words[0] + "\": expected create, restore, list or delete";
  }
  o.verb = *verb;
  if (words.size() > 2) return "unexpected argument \"" + words[2] + "\" (see checkpoint --help)";
  if (words.size() == 2) {
    if (o.verb == checkpoint_verb::list) return "list takes no ID";
    if (words[1].empty()) return "the ID must not be empty";
    o.id = words[1];
  } else if (o.verb == checkpoint_verb::restore || o.verb == checkpoint_verb::remove) {
    return words[0] + " needs the checkpoint's ID (see checkpoint list)";
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Summaries, pure: they read the answers defensively and never throw.

const json* field(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

std::string text_of(const json& object, const char* key) {
  const json* value = field(object, key);
  return value && value->is_string() ? value->get<std::string>() : "?";
}

std::optional<std::uint64_t> count_of(const json& object, const char* key) {
  const json* value = field(object, key);
  if (!value || !value->is_number()) return std::nullopt;
  if (value->is_number_float()) return static_cast<std::uint64_t>(std::max(0.0, double(*value)));
  return value->is_number_unsigned()
             ? value->get<std::uint64_t>()
             : static_cast<std::uint64_t>(std::max<std::int64_t>(0, *value));
}

std::string number_text(const json& object, const char* key) {
  const std::optional<std::uint64_t> n = count_of(object, key);
  return n ? std::to_string(*n) : "?";
}

std::string size_text(const json& object, const char* key) {
  const std::optional<std::uint64_t> n = count_of(object, key);
  return n ? format_size(*n) : "?";
}

const json& object_or_null(const json& object, const char* key) {
  static const json null_value = nullptr;
  const json* value = field(object, key);
  return value ? *value : null_value;
}

// "database 16 KiB (sha256 7507df69…)", or "no database" when the stack is not configured.
std::string database_summary(const json& manifest) {
  const json* database_field = field(manifest, "database");
  if (!database_field) return "database ?";
  const json& database = *database_field;
  if (!database.is_object()) return "no database";
  std::string out = "database " + size_text(database, "bytes");
  const std::string sha256 = text_of(database, "sha256");
  if (sha256 != "?") out += " (sha256 " + sha256.substr(0, 8) + "…)";
  return out;
}

// steps_ms.total, or the sum of the steps from a server that does not give the total.
std::string duration_summary(const json& manifest) {
  const json& steps = object_or_null(manifest, "steps_ms");
  if (!steps.is_object() || steps.empty()) return "?";
  if (const std::optional<std::uint64_t> total = count_of(steps, "total")) {
    return std::to_string(*total) + " ms";
  }
  std::uint64_t sum = 0;
  for (const auto& [name, ms] : steps.items()) sum += count_of(steps, name.c_str()).value_or(0);
  return std::to_string(sum) + " ms";
}

std::string describe_created(const json& answer) {
  const json& manifest = object_or_null(answer, "manifest");
  const json& mount = object_or_null(manifest, "mount");
  const std::string files = number_text(mount, "files");
  return "checkpoint " + text_of(answer, "id") + ": " + files +
         (files == "1" ? " file, " : " files, ") + size_text(mount, "bytes") + ", " +
         database_summary(manifest) + ", " + duration_summary(manifest);
}

std::string describe_restored(const json& answer) {
  return "restored " + text_of(answer, "id") + " in " + number_text(answer, "took_ms") + " ms";
}

std::string describe_deleted(const json& answer) {
  std::string out = "deleted " + text_of(answer, "deleted");
  const std::uint64_t remote = count_of(answer, "remote_objects").value_or(0);
  if (remote > 0) {
    out += " (and its " + std::to_string(remote) + (remote == 1 ? " object" : " objects") +
           " in the store)";
  }
  return out;
}

// Where a checkpoint of GET /checkpoints is: "local", "local+store" (uploaded), "store".
std::string where_of(const json& manifest) {
  if (text_of(manifest, "location") == "store") return "store";
  const json& upload = object_or_null(manifest, "upload");
  return upload.is_object() && text_of(upload, "state") == "done" ? "local+store" : "local";
}

// A table: ID, CREATED, WHERE, FILES, SIZE, DATABASE; words aligned left, numbers right, no
// trailing spaces.
std::string describe_list(const json& answer) {
  const json& all = object_or_null(answer, "checkpoints");
  std::string note;
  if (const json* error = field(answer, "store_error"); error && error->is_string()) {
    note = "(the object store could not be listed: " + error->get<std::string>() + ")";
  }
  if (!all.is_array() || all.empty())
    return note.empty() ? "no checkpoints" : "no checkpoints\n" + note;
  constexpr std::size_t columns = 6, words = 3;
  std::vector<std::array<std::string, columns>> rows{
      {"ID", "CREATED", "WHERE", "FILES", "SIZE", "DATABASE"}};
  for (const json& manifest : all) {
    const json& mount = object_or_null(manifest, "mount");
    const json& database = object_or_null(manifest, "database");
    rows.push_back({text_of(manifest, "id"), text_of(manifest, "created_at"), where_of(manifest),
                    number_text(mount, "files"), size_text(mount, "bytes"),
                    database.is_object() ? size_text(database, "bytes") : "-"});
  }
  std::array<std::size_t, columns> width{};
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < columns; ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    if (!out.empty()) out += '\n';
    std::string line;
    for (std::size_t c = 0; c < columns; ++c) {
      if (c < words) {
        const std::size_t gap = c + 1 < words ? 2 : 0;  // the numbers bring their own
        line += row[c] + std::string(width[c] - row[c].size() + gap, ' ');
      } else {
        line += std::string(width[c] - row[c].size() + 2, ' ') + row[c];
      }
    }
    out += line;
  }
  if (!note.empty()) out += "\n" + note;
  return out;
}

// The one line for an answer that is not a success.
std::string error_line(const http::parsed_response& reply, const json& answer) {
  std::string line;
  if (const json* error = field(answer, "error"); error && error->is_string()) {
    line = error->get<std::string>() + " (HTTP " + std::to_string(reply.status) + ")";
  } else {
    line = "the server answered HTTP " + std::to_string(reply.status);
    if (!reply.body.empty()) line += ": " + reply.body.substr(0, 200);
  }
  std::replace_if(
      line.begin(), line.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return line;
}

// "checkpoint test1: snapshot [=======>            ]  35%  4.2 MiB / 12 MiB"
std::string progress_text(const json& operation) {
  std::string out = text_of(operation, "kind") + " " + text_of(operation, "id") + ": " +
                    text_of(operation, "step");
  const std::uint64_t done = count_of(operation, "done_bytes").value_or(0);
  const std::uint64_t total = count_of(operation, "total_bytes").value_or(0);
  if (total == 0) return out;
  constexpr int bar_width = 24;
  const double fraction = std::min(1.0, double(done) / double(total));
  const int filled = static_cast<int>(fraction * bar_width);
  std::string bar(std::size_t(filled), '=');
  if (filled < bar_width) bar += '>';
  bar.resize(bar_width, ' ');
  char percent[8];
  std::snprintf(percent, sizeof percent, "%3d%%", static_cast<int>(fraction * 100));
  return out + " [" + bar + "] " + percent + "  " + format_size(done) + " / " + format_size(total);
}

// What to send for the verb.
struct api_request {
  const char* method;
  std::string path;
  std::optional<std::string> body;
  bool long_running;  // create and restore: no limit on the wait, a progress bar
};

api_request request_for(const checkpoint_options& o) {
  switch (o.verb) {
    case checkpoint_verb::create:
      return {"POST", "/checkpoint", (o.id.empty() ? json::object() : json{{"id", o.id}}).dump(),
              true};
    case checkpoint_verb::restore:
      return {"POST", "/restore", json{{"id", o.id}}.dump(), true};
    case checkpoint_verb::list:
      return {"GET", "/checkpoints", std::nullopt, false};
    case checkpoint_verb::remove:
      return {"DELETE", "/checkpoints/" + percent_encode(o.id), std::nullopt, false};
  }
  throw std::logic_error("unknown verb");
}

// The server's operation from GET /, or nullopt when there is none or the poll failed: the
// progress bar then just waits for the next one.
std::optional<json> poll_operation(const checkpoint_options& o,
                                   const std::optional<std::string>& token) {
  try {
    const http::parsed_response reply =
        exchange(o.url, {"GET", "/", std::nullopt, token},
                 {progress_connect_timeout, progress_idle_limit, nullptr});
    if (reply.status != 200) return std::nullopt;
    json status = json::parse(reply.body, nullptr, false);
    const json* operation = field(status, "operation");
    if (!operation || !operation->is_object()) return std::nullopt;
    return *operation;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The progress line on stderr while create or restore runs; only drawn on a terminal, so that
// logs and pipes get nothing but the result.
class progress_line {
 public:
  explicit progress_line(std::string kind) : kind_(std::move(kind)) {}
  progress_line(const progress_line&) = delete;
  progress_line& operator=(const progress_line&) = delete;
  ~progress_line() {
    if (drawn_) std::fputs("\r\033[K", stderr);
  }

  void show(const json& operation) {
    // Someone else's operation (another client's) is not ours to draw.
    if (text_of(operation, "kind") != kind_) return;
    std::fprintf(stderr, "\r\033[K%s", progress_text(operation).c_str());
    std::fflush(stderr);
    drawn_ = true;
  }

 private:
  std::string kind_;  // "checkpoint" or "restore", as GET / names the operation
  bool drawn_ = false;
};

std::optional<std::string> token_of(const checkpoint_options& o) {
  std::optional<std::string> token = o.token;
  if (o.token_file) {
    try {
      token = read_token_file(*o.token_file);  // as the server reads it
    } catch (const std::system_error& e) {
      throw failed("cannot read the token file " + o.token_file->string() + ": " + e.what());
    } catch (const std::runtime_error& e) {
      throw failed(e.what());
    }
  }
  // A line break inside would end the Authorization header and start another.
  if (token && std::any_of(token->begin(), token->end(),
                           [](char c) { return static_cast<unsigned char>(c) < 0x20; })) {
    throw failed("the token holds a control character");
  }
  return token;
}

// Sends the verb's request and returns the server's answer; draws progress meanwhile.
http::parsed_response send_verb(const checkpoint_options& o,
                                const std::optional<std::string>& token) {
  const api_request request = request_for(o);
  // Destroyed before the result or the error is printed, which erases the line.
  std::optional<progress_line> progress;
  std::function<void()> while_waiting;
  if (request.long_running && ::isatty(STDERR_FILENO)) {
    progress.emplace(o.verb == checkpoint_verb::create ? "checkpoint" : "restore");
    while_waiting = [&] {
      if (std::optional<json> operation = poll_operation(o, token)) progress->show(*operation);
    };
  }
  try {
    return exchange(o.url, {request.method, request.path, request.body, token},
                    {connect_timeout,
                     request.long_running ? std::nullopt : std::optional(short_request_idle_limit),
                     while_waiting});
  } catch (const http_error& e) {
    switch (e.failure()) {
      case http_error::kind::connect:
        throw failed("cannot reach state-manager at " + o.url_text + ": " + e.what());
      case http_error::kind::unanswered:
      case http_error::kind::malformed:
        throw failed("the server at " + o.url_text + " " + e.what());
      case http_error::kind::transfer:
        break;
    }
    throw;
  }
}

void print_body(const std::string& body) {
  std::cout << body;
  if (!body.empty() && body.back() != '\n') std::cout << '\n';
}

int report(const checkpoint_options& o, const http::parsed_response& reply) {
  const json answer = json::parse(reply.body, nullptr, false);
  if (reply.status < 200 || reply.status > 299) {
    // A script asking for JSON gets the details too (409's running operation, 400's rule).
    if (o.json) print_body(reply.body);
    std::cerr << "state-manager checkpoint: " << error_line(reply, answer) << "\n";
    return 1;
  }
  if (o.json) {
    print_body(reply.body);
    return 0;
  }
  if (answer.is_discarded()) throw failed("the server's answer is not JSON");
  std::cout << describe_answer(o.verb, answer) << "\n";
  return 0;
}

}  // namespace

checkpoint_command_line parse_checkpoint_command_line(const std::vector<std::string>& args,
                                                      const env_lookup& env) {
  checkpoint_command_line out;
  grammar rules;
  rules.help_hint = "checkpoint --help";
  rules.words = words_rule::anywhere;  // an ID that starts with '-' comes after "--"
  rules.take_words = [&](const std::vector<std::string>& words) {
    return apply_words(out.opts, words);
  };
  const parse_outcome parsed = parse_options(args, checkpoint_flags(out.opts), rules, env);
  if (parsed.what != action::run) return {parsed.what, {}, parsed.error};
  // As the server: STATE_MANAGER_TOKEN holds the token itself, a token file wins, and an empty
  // token is no token.
  if (!out.opts.token_file) {
    std::optional<std::string> token = env("STATE_MANAGER_TOKEN");
    if (token && !token->empty()) out.opts.token = std::move(token);
  }
  return out;
}

std::string checkpoint_usage_text() {
  return R"(Usage: state-manager checkpoint create [ID] [OPTIONS]
       state-manager checkpoint restore ID [OPTIONS]
       state-manager checkpoint list [OPTIONS]
       state-manager checkpoint delete ID [OPTIONS]

Asks a running state-manager, through its HTTP API, to checkpoint the environment (as ID, or
the next of v1, v2, ...), to restore a checkpoint, to list its checkpoints or to delete one.
Create and restore wait for the answer however long it takes, with a progress bar on stderr
when it is a terminal.

Options:
  --url URL          the API: http://HOST[:PORT][/PATH] (STATE_MANAGER_URL, default
                     http://127.0.0.1:8080); plain HTTP only
  --token-file FILE  send "Authorization: Bearer <token>", the token read from FILE
                     (STATE_MANAGER_TOKEN_FILE; or give the token itself in STATE_MANAGER_TOKEN)
  --json             print the server's JSON answer as it is, instead of a summary
  -h, --help         show this help and exit

Exit status: 0 done; 1 when the server answered an error (its message on stderr; with --json,
its answer on stdout too) or could not be reached (no connection within 10 s, or no answer
within 60 s to list or delete); 2 for a bad command line.
)";
}

std::string format_size(std::uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static constexpr const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = double(bytes) / 1024;
  std::size_t unit = 0;
  // 1023.96 KiB would print as "1024.0 KiB": round first, then pick the unit.
  while (std::round(value * 10) / 10 >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", value);
  std::string out = text;
  if (out.size() > 2 && out.compare(out.size() - 2, 2, ".0") == 0) out.resize(out.size() - 2);
  return out + " " + units[unit];
}

std::string describe_answer(checkpoint_verb verb, const nlohmann::json& answer) {
  switch (verb) {
    case checkpoint_verb::create:
      return describe_created(answer);
    case checkpoint_verb::restore:
      return describe_restored(answer);
    case checkpoint_verb::list:
      return describe_list(answer);
    case checkpoint_verb::remove:
      return describe_deleted(answer);
  }
  return {};
}

int run_checkpoint_command(const std::vector<std::string>& args, const env_lookup& env) {
  const checkpoint_command_line cli = parse_checkpoint_command_line(args, env);
  switch (cli.what) {
    case action::help:
    case action::version:  // not in this grammar (parse_options never answers it here)
      std::cout << checkpoint_usage_text();
      return 0;
    case action::error:
      std::cerr << "state-manager checkpoint: " << cli.error << "\n";
      return 2;
    case action::run:
      break;
  }
  try {
    const std::optional<std::string> token = token_of(cli.opts);
    return report(cli.opts, send_verb(cli.opts, token));
  } catch (const std::exception& e) {
    std::cerr << "state-manager checkpoint: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace sm::cli
