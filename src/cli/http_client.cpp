#include "cli/http_client.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <memory>
#include <system_error>

#include "base/fd.hpp"
#include "http/ascii.hpp"

namespace sm::cli {

namespace {

using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

// How often read_until_close wakes while the server is silent: the cadence of while_waiting.
constexpr milliseconds silence_interval{100};
constexpr std::size_t max_answer_bytes = 64 * 1024 * 1024;

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string errno_text(int error) {
  return std::generic_category().message(error);
}

// poll(2) on one descriptor, resumed after signals until `deadline`. Returns whether it is ready.
bool wait_for(int fd, short events, steady::time_point deadline, http_error::kind stage) {
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::max<milliseconds::rep>(0, left.count())));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) throw http_error(stage, "poll: " + errno_text(errno));
  }
}

// Connects to one address, waiting at most until `deadline`; returns the error otherwise.
std::string connect_one(unique_fd& fd, const addrinfo& address, steady::time_point deadline) {
  fd.reset(::socket(address.ai_family, address.ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    address.ai_protocol));
  if (!fd) return errno_text(errno);
  if (::connect(fd.get(), address.ai_addr, address.ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return errno_text(errno);
    if (!wait_for(fd.get(), POLLOUT, deadline, http_error::kind::connect))
      return "no connection within the time allowed";
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

// The first address of `url` that accepts a connection within `timeout`. Throws a connect
// http_error naming the last error.
unique_fd connect_to(const http_url& url, milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(url.host.c_str(), url.port.c_str(), &hints, &found); rc != 0) {
    throw http_error(http_error::kind::connect,
                     std::string("cannot resolve ") + url.host + ": " + ::gai_strerror(rc));
  }
  const std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owner(found, ::freeaddrinfo);
  const steady::time_point deadline = steady::now() + timeout;
  std::string last_error = "no address";
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    unique_fd fd;
    last_error = connect_one(fd, *a, deadline);
    if (last_error.empty()) return fd;
  }
  throw http_error(http_error::kind::connect, last_error);
}

void send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    // MSG_NOSIGNAL: a server that went away is an error to report, not SIGPIPE.
    const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      throw http_error(http_error::kind::transfer, "sending the request: " + errno_text(errno));
    }
    bytes.remove_prefix(std::size_t(sent));
  }
}

// Everything the server sends until it closes the connection. `while_waiting` runs each time
// the server has been silent for silence_interval; with `idle_limit`, a longer silence fails.
std::string read_until_close(int fd, std::optional<milliseconds> idle_limit,
                             const std::function<void()>& while_waiting) {
  std::string raw;
  char buffer[64 * 1024];
  steady::time_point last_byte = steady::now();
  for (;;) {
    if (!wait_for(fd, POLLIN, steady::now() + silence_interval, http_error::kind::transfer)) {
      if (idle_limit && steady::now() - last_byte > *idle_limit) {
        throw http_error(
            http_error::kind::transfer,
            "no answer within " +
                std::to_string(
                    std::chrono::duration_cast<std::chrono::seconds>(*idle_limit).count()) +
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
      if (http::parse_response(raw)) return raw;
      throw http_error(http_error::kind::transfer, "reading the answer: " + errno_text(errno));
    }
    raw.append(buffer, std::size_t(got));
    last_byte = steady::now();
    if (raw.size() > max_answer_bytes) {
      throw http_error(http_error::kind::transfer, "the answer is larger than 64 MiB");
    }
  }
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
    unsigned number = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (!all_digits(port) || ec != std::errc() || end != port.data() + port.size() || number == 0 ||
        number > 65535) {
      return std::nullopt;
    }
    out.port = std::to_string(number);
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  out.base_path = path;
  return out;
}

std::string request_text(const http_url& url, const http_request& request) {
  std::string r;
  r.append(request.method).append(" ").append(url.base_path).append(request.path);
  r.append(" HTTP/1.1\r\n");
  r.append("Host: ").append(url.authority).append("\r\n");
  if (request.token) r.append("Authorization: Bearer ").append(*request.token).append("\r\n");
  r.append("Accept: application/json\r\n");
  if (request.body) {
    r.append("Content-Type: application/json\r\n");
    r.append("Content-Length: ").append(std::to_string(request.body->size())).append("\r\n");
  }
  r.append("Connection: close\r\n\r\n");
  if (request.body) r.append(*request.body);
  return r;
}

http::parsed_response exchange(const http_url& url, const http_request& request,
                               const http_wait& wait) {
  const unique_fd fd = connect_to(url, wait.connect_timeout);
  send_all(fd.get(), request_text(url, request));
  const std::string raw = read_until_close(fd.get(), wait.idle_limit, wait.while_waiting);
  std::optional<http::parsed_response> response = http::parse_response(raw);
  if (!response) {
    if (raw.empty()) {
      throw http_error(http_error::kind::unanswered, "closed the connection unanswered");
    }
    throw http_error(http_error::kind::malformed, "sent a malformed HTTP answer");
  }
  return std::move(*response);
}

}  // namespace sm::cli
