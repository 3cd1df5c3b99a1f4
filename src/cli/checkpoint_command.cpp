#include "cli/checkpoint_command.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <system_error>

#include <nlohmann/json.hpp>

#include "base/fd.hpp"
#include "base/file.hpp"
#include "base/percent.hpp"
#include "http/ascii.hpp"

namespace sm::cli {

namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

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
constexpr milliseconds progress_interval{100};
constexpr std::size_t max_answer_bytes = 64 * 1024 * 1024;

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

// One row per flag, as in server_options.cpp: its name, its environment variable (nullptr: none),
// whether it takes a value, and how to apply the value.
struct flag {
  const char* name;
  const char* variable;
  bool takes_value;
  std::string (*apply)(checkpoint_options&, const std::string& value);
};

const flag flags[] = {
    {"url", "STATE_MANAGER_URL", true, set_url},
    {"token-file", "STATE_MANAGER_TOKEN_FILE", true,
     [](checkpoint_options& o, const std::string& v) -> std::string {
       if (v.empty()) return "must not be empty";
       o.token_file = v;
       return {};
     }},
    {"json", nullptr, false,
     [](checkpoint_options& o, const std::string&) -> std::string {
       o.json = true;
       return {};
     }},
};

const flag* find_flag(std::string_view name) {
  for (const flag& f : flags) {
    if (name == f.name) return &f;
  }
  return nullptr;
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
// HTTP, pure parts.

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::optional<std::uint64_t> parse_number(std::string_view s, int base = 10) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n, base);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return n;
}

std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// RFC 9112 section 7.1; trailers are ignored. nullopt when malformed or cut short.
std::optional<std::string> decode_chunked(std::string_view in) {
  std::string out;
  for (;;) {
    const std::size_t line_end = in.find("\r\n");
    if (line_end == std::string_view::npos) return std::nullopt;
    std::string_view size_text = in.substr(0, line_end);
    size_text = trim_spaces(size_text.substr(0, size_text.find(';')));
    const std::optional<std::uint64_t> size = parse_number(size_text, 16);
    if (!size) return std::nullopt;
    in.remove_prefix(line_end + 2);
    if (*size == 0) return out;
    if (in.size() < *size + 2 || in.substr(*size, 2) != "\r\n") return std::nullopt;
    out.append(in.substr(0, *size));
    in.remove_prefix(*size + 2);
  }
}

std::string request_text(std::string_view method, const http_url& url, std::string_view path,
                         const std::optional<std::string>& body,
                         const std::optional<std::string>& token) {
  std::string r;
  r.append(method).append(" ").append(url.base_path).append(path).append(" HTTP/1.1\r\n");
  r.append("Host: ").append(url.authority).append("\r\n");
  if (token) r.append("Authorization: Bearer ").append(*token).append("\r\n");
  r.append("Accept: application/json\r\n");
  if (body) {
    r.append("Content-Type: application/json\r\n");
    r.append("Content-Length: ").append(std::to_string(body->size())).append("\r\n");
  }
  // One request a connection: the answer ends where the server closes it.
  r.append("Connection: close\r\n\r\n");
  if (body) r.append(*body);
  return r;
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
std::string error_line(const http_reply& reply, const json& answer) {
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

// ---------------------------------------------------------------------------------------------
// Blocking I/O.

std::string errno_text(int error) {
  return std::generic_category().message(error);
}

// poll(2) on one descriptor, resumed after signals until `deadline`. Returns whether it is ready.
bool wait_for(int fd, short events, steady::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::max<milliseconds::rep>(0, left.count())));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) throw failed("poll: " + errno_text(errno));
  }
}

// Connects to one address, waiting at most until `deadline`; returns the error otherwise.
std::string connect_one(unique_fd& fd, const addrinfo& address, steady::time_point deadline) {
  fd.reset(::socket(address.ai_family, address.ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    address.ai_protocol));
  if (!fd) return errno_text(errno);
  if (::connect(fd.get(), address.ai_addr, address.ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return errno_text(errno);
    if (!wait_for(fd.get(), POLLOUT, deadline)) return "no connection within the time allowed";
    int error = 0;
    socklen_t length = sizeof error;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
    if (error != 0) return errno_text(error);
  }
  // Blocking from here on; reads wait with poll() where they must be bounded.
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) return errno_text(errno);
  return {};
}

// The first address of `url` that accepts a connection within `timeout`. Throws `failed`
// naming the last error.
unique_fd connect_to(const http_url& url, milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(url.host.c_str(), url.port.c_str(), &hints, &found); rc != 0) {
    throw failed(std::string("cannot resolve ") + url.host + ": " + ::gai_strerror(rc));
  }
  const std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owner(found, ::freeaddrinfo);
  const steady::time_point deadline = steady::now() + timeout;
  std::string last_error = "no address";
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    unique_fd fd;
    last_error = connect_one(fd, *a, deadline);
    if (last_error.empty()) return fd;
  }
  throw failed(last_error);
}

void send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    // MSG_NOSIGNAL: a server that went away is an error to report, not SIGPIPE.
    const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      throw failed("sending the request: " + errno_text(errno));
    }
    bytes.remove_prefix(std::size_t(sent));
  }
}

// Everything the server sends until it closes the connection. `while_waiting` runs each time
// the server has been silent for progress_interval; with `idle_limit`, a longer silence fails.
std::string read_until_close(int fd, std::optional<milliseconds> idle_limit,
                             const std::function<void()>& while_waiting) {
  std::string raw;
  char buffer[64 * 1024];
  steady::time_point last_byte = steady::now();
  for (;;) {
    if (!wait_for(fd, POLLIN, steady::now() + progress_interval)) {
      if (idle_limit && steady::now() - last_byte > *idle_limit) {
        throw failed(
            "no answer within " +
            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(*idle_limit).count()) +
            " s");
      }
      if (while_waiting) while_waiting();
      continue;
    }
    const ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
    if (got == 0) return raw;
    if (got < 0) {
      if (errno == EINTR) continue;
      // A reset after a whole answer (the server closing with bytes unread) loses nothing.
      if (parse_http_response(raw)) return raw;
      throw failed("reading the answer: " + errno_text(errno));
    }
    raw.append(buffer, std::size_t(got));
    last_byte = steady::now();
    if (raw.size() > max_answer_bytes) throw failed("the answer is larger than 64 MiB");
  }
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
    const unique_fd fd = connect_to(o.url, progress_connect_timeout);
    send_all(fd.get(), request_text("GET", o.url, "/", std::nullopt, token));
    const std::optional<http_reply> reply =
        parse_http_response(read_until_close(fd.get(), progress_idle_limit, nullptr));
    if (!reply || reply->status != 200) return std::nullopt;
    json status = json::parse(reply->body, nullptr, false);
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
http_reply exchange(const checkpoint_options& o, const std::optional<std::string>& token) {
  const api_request request = request_for(o);
  unique_fd fd;
  try {
    fd = connect_to(o.url, connect_timeout);
  } catch (const failed& e) {
    throw failed("cannot reach state-manager at " + o.url_text + ": " + e.what());
  }
  send_all(fd.get(), request_text(request.method, o.url, request.path, request.body, token));

  std::optional<progress_line> progress;
  std::function<void()> while_waiting;
  if (request.long_running && ::isatty(STDERR_FILENO)) {
    progress.emplace(o.verb == checkpoint_verb::create ? "checkpoint" : "restore");
    while_waiting = [&] {
      if (std::optional<json> operation = poll_operation(o, token)) progress->show(*operation);
    };
  }
  const std::string raw = read_until_close(
      fd.get(), request.long_running ? std::nullopt : std::optional(short_request_idle_limit),
      while_waiting);
  progress.reset();  // the line is erased before the result is printed
  std::optional<http_reply> reply = parse_http_response(raw);
  if (!reply) {
    throw failed(raw.empty() ? "the server at " + o.url_text + " closed the connection unanswered"
                             : "the server at " + o.url_text + " sent a malformed HTTP answer");
  }
  return *reply;
}

void print_body(const std::string& body) {
  std::cout << body;
  if (!body.empty() && body.back() != '\n') std::cout << '\n';
}

int report(const checkpoint_options& o, const http_reply& reply) {
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

std::optional<http_url> parse_http_url(std::string_view text) {
  constexpr std::string_view scheme = "http://";
  if (text.size() <= scheme.size() || !http::iequals(text.substr(0, scheme.size()), scheme)) {
    return std::nullopt;
  }
  if (std::any_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= ' ' || c == 0x7f; })) {
    return std::nullopt;
  }
  text.remove_prefix(scheme.size());
  const std::size_t slash = text.find('/');
  const std::string_view authority = text.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : text.substr(slash);
  if (authority.empty() || authority.find_first_of("@?#") != std::string_view::npos ||
      path.find_first_of("?#") != std::string_view::npos) {
    return std::nullopt;
  }
  http_url out;
  out.authority = authority;
  std::string_view port;
  if (authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos || close == 1) return std::nullopt;
    out.host = authority.substr(1, close - 1);
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':' || rest.size() == 1) return std::nullopt;
      port = rest.substr(1);
    }
  } else {
    const std::size_t colon = authority.find(':');
    // Two colons: an IPv6 address without its brackets, which is ambiguous.
    if (colon != std::string_view::npos &&
        authority.find(':', colon + 1) != std::string_view::npos) {
      return std::nullopt;
    }
    out.host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return std::nullopt;
    }
    if (out.host.empty()) return std::nullopt;
  }
  if (port.empty()) {
    out.port = "80";
  } else {
    const std::optional<std::uint64_t> number =
        all_digits(port) ? parse_number(port) : std::nullopt;
    if (!number || *number == 0 || *number > 65535) return std::nullopt;
    out.port = std::to_string(*number);
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  out.base_path = path;
  return out;
}

checkpoint_command_line parse_checkpoint_command_line(const std::vector<std::string>& args,
                                                      const env_lookup& env) {
  checkpoint_command_line out;
  auto error = [&](std::string message) {
    out.what = checkpoint_command_line::action::error;
    out.error = std::move(message);
    return out;
  };

  // First the words: the flags given (the last of a repeated flag wins), the verb and the ID.
  std::map<std::string, std::string> given;
  std::vector<std::string> words;
  bool options_ended = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (options_ended || arg == "-" || arg.empty() || arg[0] != '-') {
      words.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_ended = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      out.what = checkpoint_command_line::action::help;
      return out;
    }
    if (arg.rfind("--", 0) != 0) return error("unknown option " + arg + " (see checkpoint --help)");
    const std::size_t equals = arg.find('=');
    const std::string name =
        arg.substr(2, equals == std::string::npos ? std::string::npos : equals - 2);
    const flag* f = find_flag(name);
    if (!f) return error("unknown option --" + name + " (see checkpoint --help)");
    if (equals != std::string::npos) {
      if (!f->takes_value) return error("option --" + name + " takes no value");
      given[name] = arg.substr(equals + 1);
    } else if (!f->takes_value) {
      given[name] = "";
    } else if (i + 1 < args.size()) {
      given[name] = args[++i];
    } else {
      return error("option --" + name + " needs a value");
    }
  }
  if (std::string why = apply_words(out.opts, words); !why.empty()) return error(why);

  // Then each setting from its flag, or else from its variable (a flag replaces its variable).
  for (const flag& f : flags) {
    if (const auto value = given.find(f.name); value != given.end()) {
      if (std::string why = f.apply(out.opts, value->second); !why.empty()) {
        return error(std::string("--") + f.name + ": " + why);
      }
    } else if (f.variable) {
      if (std::optional<std::string> value = env(f.variable)) {
        if (std::string why = f.apply(out.opts, *value); !why.empty()) {
          return error(std::string(f.variable) + ": " + why);
        }
      }
    }
  }
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

std::optional<http_reply> parse_http_response(std::string_view raw) {
  const std::size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string_view::npos) return std::nullopt;
  std::string_view head = raw.substr(0, head_end + 2);
  const std::string_view rest = raw.substr(head_end + 4);

  // "HTTP/1.1 200 OK"
  const std::size_t status_end = head.find("\r\n");
  const std::string_view status_line = head.substr(0, status_end);
  head.remove_prefix(status_end + 2);
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ' ||
      (status_line.size() > 12 && status_line[12] != ' ')) {
    return std::nullopt;
  }
  const std::string_view code = status_line.substr(9, 3);
  if (!all_digits(code)) return std::nullopt;
  http_reply reply;
  reply.status = static_cast<int>(*parse_number(code));

  std::optional<std::uint64_t> content_length;
  bool chunked = false;
  while (!head.empty()) {
    const std::size_t line_end = head.find("\r\n");
    const std::string_view line = head.substr(0, line_end);
    head.remove_prefix(line_end + 2);
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = trim_spaces(line.substr(colon + 1));
    if (http::iequals(name, "content-length")) {
      content_length = parse_number(value);
      if (!content_length) return std::nullopt;
    } else if (http::iequals(name, "transfer-encoding")) {
      chunked = http::iequals(value, "chunked");
      if (!chunked) return std::nullopt;  // no other coding is ever sent to this client
    }
  }
  if (chunked) {
    std::optional<std::string> body = decode_chunked(rest);
    if (!body) return std::nullopt;
    reply.body = std::move(*body);
  } else if (content_length) {
    if (rest.size() < *content_length) return std::nullopt;  // cut short
    reply.body = rest.substr(0, *content_length);
  } else {
    reply.body = rest;
  }
  return reply;
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
    case checkpoint_command_line::action::help:
      std::cout << checkpoint_usage_text();
      return 0;
    case checkpoint_command_line::action::error:
      std::cerr << "state-manager checkpoint: " << cli.error << "\n";
      return 2;
    case checkpoint_command_line::action::run:
      break;
  }
  try {
    const std::optional<std::string> token = token_of(cli.opts);
    return report(cli.opts, exchange(cli.opts, token));
  } catch (const std::exception& e) {
    std::cerr << "state-manager checkpoint: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace sm::cli
