#include "http/server.hpp"

#include <sys/socket.h>

#include <array>
#include <ctime>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "base/clock.hpp"
#include "base/log.hpp"

namespace sm::http {

namespace {

using clock = std::chrono::steady_clock;
constexpr auto never = clock::time_point::max();
constexpr std::size_t read_buffer_size = 16 * 1024;

// The Date header changes once a second; format it once a second, not once a request.
std::string_view http_date_now() {
  static std::time_t cached_second = 0;
  static std::string cached;
  const auto now = std::chrono::system_clock::now();
  const std::time_t second = std::chrono::system_clock::to_time_t(now);
  if (second != cached_second) {
    cached = format_http_date(now);
    cached_second = second;
  }
  return cached;
}

}  // namespace

struct server::connection {
  explicit connection(asio::ip::tcp::socket s)
      : socket(std::move(s)), timer(socket.get_executor()) {}

  // Moves the deadline; an earlier one wakes the watchdog so that it re-arms. Later ones (the
  // common case, once per request) cost nothing: the watchdog re-arms when it wakes.
  void set_deadline(clock::time_point t) {
    const bool earlier = t < deadline;
    deadline = t;
    if (earlier) timer.cancel();
  }

  asio::ip::tcp::socket socket;
  asio::steady_timer timer;
  clock::time_point deadline = never;
  bool idle = true;        // between requests: no byte of the next one has arrived
  bool closing = false;    // the server is stopping: close after the current response
  bool timed_out = false;  // the watchdog cancelled the socket
  bool finished = false;   // serve() returned; the watchdog exits
  std::list<connection*>::iterator position;
};

asio::awaitable<response> dispatch(const router& routes, const request& req) {
  router::match m = routes.find(req.method, req.path);
  switch (m.outcome) {
    case router::match::kind::found:
      co_return co_await (*m.target)(req, m.params);
    case router::match::kind::method_not_allowed: {
      response r = error_response(405, "method not allowed", "\"allow\":\"" + m.allow + "\"");
      r.with_header("Allow", m.allow);
      co_return r;
    }
    case router::match::kind::bad_path:
      co_return error_response(400, "malformed path");
    case router::match::kind::not_found:
      break;
  }
  co_return error_response(404, "not found");
}

server::server(asio::any_io_executor executor, server_limits limits, request_handler handler)
    : executor_(executor),
      limits_(limits),
      handler_(std::move(handler)),
      acceptor_(executor),
      drained_(executor) {}

server::~server() = default;

asio::ip::tcp::endpoint server::listen(const asio::ip::tcp::endpoint& at) {
  acceptor_.open(at.protocol());
  acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true));
  acceptor_.bind(at);
  acceptor_.listen(asio::socket_base::max_listen_connections);
  return acceptor_.local_endpoint();
}

void server::reject(asio::ip::tcp::socket& socket) {
  // One non-blocking send into an empty socket buffer: it fits, and if it does not, the client
  // still learns from the close. Never waits.
  static constexpr std::string_view busy =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Content-Length: 33\r\nConnection: close\r\n\r\n{\"error\":\"too many connections\"}\n";
  static_assert(busy.size() - busy.find("\r\n\r\n") - 4 == 33);
  ::send(socket.native_handle(), busy.data(), busy.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  std::error_code ignored;
  socket.shutdown(asio::socket_base::shutdown_both, ignored);
  socket.close(ignored);
}

asio::awaitable<void> server::run() {
  while (!stopping_) {
    std::error_code ec;
    asio::ip::tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    if (ec) {
      if (ec == asio::error::operation_aborted) break;
      // Out of descriptors or memory: pause instead of spinning on the same error.
      log::warn("accept failed", {{"error", ec.message()}});
      asio::steady_timer pause(executor_, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (connections_.size() >= limits_.max_connections) {
      reject(socket);
      continue;
    }
    socket.set_option(asio::ip::tcp::no_delay(true), ec);
    auto c = std::make_shared<connection>(std::move(socket));
    connections_.push_front(c.get());
    c->position = connections_.begin();
    asio::co_spawn(executor_, watchdog(c), asio::detached);
    asio::co_spawn(executor_, serve(c), asio::detached);
  }
}

asio::awaitable<void> server::stop(std::chrono::milliseconds grace) {
  stopping_ = true;
  std::error_code ignored;
  acceptor_.close(ignored);
  for (connection* c : connections_) {
    c->closing = true;
    if (c->idle) c->socket.cancel(ignored);
  }
  if (!connections_.empty()) {
    drained_.expires_after(grace);
    co_await drained_.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
  for (connection* c : connections_) c->socket.close(ignored);
}

asio::awaitable<void> server::watchdog(std::shared_ptr<connection> c) {
  while (!c->finished) {
    c->timer.expires_at(c->deadline);
    std::error_code ec;
    co_await c->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (c->finished) break;
    if (c->deadline <= clock::now()) {
      c->timed_out = true;
      c->deadline = never;
      c->socket.cancel(ec);
    }
  }
}

asio::awaitable<void> server::serve(std::shared_ptr<connection> c) {
  request_parser parser(limits_.parser);
  std::array<char, read_buffer_size> buffer;
  std::size_t begin = 0, end = 0;
  std::string head;
  head.reserve(256);
  bool continue_sent = false;
  std::error_code ec;

  // Sends a response; false when the connection must end (error or close).
  auto send = [&](const response& r, bool keep_alive, bool head_only) -> asio::awaitable<bool> {
    keep_alive = keep_alive && !c->closing && !r.close;
    head.clear();
    serialize_head(r, keep_alive, http_date_now(), head);
    c->set_deadline(clock::now() + limits_.header_timeout);
    const std::array<asio::const_buffer, 2> parts{
        asio::buffer(head), head_only ? asio::const_buffer() : asio::buffer(r.body)};
    co_await asio::async_write(c->socket, parts, asio::redirect_error(asio::use_awaitable, ec));
    co_return !ec && keep_alive;
  };

  bool open = true;
  std::size_t partial_bytes = 0;      // bytes of the current request received so far
  bool request_deadline_set = false;  // the current request's header_timeout is armed
  while (open) {
    // Parse everything already buffered: one read may hold several pipelined requests.
    while (open && begin < end) {
      const auto result = parser.feed({buffer.data() + begin, end - begin});
      begin += result.consumed;
      partial_bytes += result.consumed;
      if (result.state == request_parser::status::complete) {
        const request req = parser.take_request();
        parser.reset();
        partial_bytes = 0;
        request_deadline_set = false;
        continue_sent = false;
        c->set_deadline(never);  // the handler is ours; it is not the client being slow
        response res;
        try {
          res = co_await handler_(req);
        } catch (const std::exception& e) {
          log::error("request handler failed",
                     {{"method", req.method}, {"path", req.path}, {"error", e.what()}});
          res = error_response(500, "internal error");
        }
        open = co_await send(res, req.keep_alive, req.method == "HEAD");
      } else if (result.state == request_parser::status::error) {
        response res = error_response(parser.error_status(), parser.error_message());
        res.close = true;
        co_await send(res, false, false);
        open = false;
      }
    }
    if (!open) break;
    begin = end = 0;  // the parser copies what it keeps: the buffer is free again

    if (!continue_sent && parser.headers_complete() && parser.expects_continue()) {
      static constexpr std::string_view go_on = "HTTP/1.1 100 Continue\r\n\r\n";
      co_await asio::async_write(c->socket, asio::buffer(go_on),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      continue_sent = true;
    }

    c->idle = partial_bytes == 0;
    if (c->idle && c->closing) break;
    if (c->idle) {
      c->set_deadline(clock::now() + limits_.idle_timeout);
      request_deadline_set = false;
    } else if (!request_deadline_set) {
      // Armed once, at the request's first byte: a client trickling a byte at a time must not
      // push its deadline on with every read (slowloris).
      c->set_deadline(clock::now() + limits_.header_timeout);
      request_deadline_set = true;
    }
    const std::size_t n = co_await c->socket.async_read_some(
        asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
    c->idle = false;
    if (ec) {
      if (c->timed_out && partial_bytes > 0) {
        c->timed_out = false;
        response res = error_response(408, "request timed out");
        res.close = true;
        co_await send(res, false, false);
      }
      break;
    }
    end = n;
  }

  c->finished = true;
  c->timer.cancel();
  std::error_code ignored;
  c->socket.shutdown(asio::socket_base::shutdown_send, ignored);
  c->socket.close(ignored);
  connections_.erase(c->position);
  if (stopping_ && connections_.empty()) drained_.cancel();
}

}  // namespace sm::http
