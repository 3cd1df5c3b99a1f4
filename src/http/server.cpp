#include "http/server.hpp"

#include <fcntl.h>
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
  bool answering = false;  // a request is with the handler, or its response being written
  bool evicted = false;    // make_room() closed it for a newer connection
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

server::server(asio::any_io_executor executor, server_limits limits, request_handler handler,
               head_check check)
    : executor_(executor),
      limits_(limits),
      handler_(std::move(handler)),
      check_(std::move(check)),
      acceptor_(executor),
      drained_(executor) {}

server::~server() = default;

namespace {
// Asio 1.22 opens and accepts sockets without SOCK_CLOEXEC. Set it before anything else runs
// on this thread, so no child ever inherits the API's sockets (a child holding the listener
// keeps the port after we die, and could accept our clients).
void close_on_exec(int fd) {
  ::fcntl(fd, F_SETFD, ::fcntl(fd, F_GETFD) | FD_CLOEXEC);
}
}  // namespace

asio::ip::tcp::endpoint server::listen(const asio::ip::tcp::endpoint& at) {
  acceptor_.open(at.protocol());
  close_on_exec(acceptor_.native_handle());
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

// The table is full and a new connection came in. A health check or an operator must get
// through even when idle clients (a thousand kept-alive connections, or someone who opens them
// on purpose) hold every slot, and file descriptors must stay for the lease and the store: so
// the table does not grow, and the connection that has waited longest without a request gives
// way (an HTTP client retries a request on a kept-alive connection that the server closed).
// Failing one, the oldest whose request is still arriving (its client is slow, and the header
// timeout would end it anyway). A connection being answered is never closed for room.
// True if one was closed; it leaves the table once its coroutine ends.
bool server::make_room() {
  for (const bool waiting_only : {true, false}) {
    for (auto it = connections_.rbegin(); it != connections_.rend(); ++it) {
      connection& c = **it;
      if (c.evicted || c.answering || c.closing || (waiting_only && !c.idle)) continue;
      c.evicted = true;
      ++evicting_;
      std::error_code ignored;
      c.socket.cancel(ignored);
      return true;
    }
  }
  return false;
}

asio::awaitable<void> server::run() {
  while (!stopping_) {
    std::error_code ec;
    asio::ip::tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    if (ec) {
      if (ec == asio::error::operation_aborted) break;
      // Out of descriptors or memory: pause instead of spinning on the same error, and say
      // so once every ten seconds rather than ten times a second.
      const auto now = clock::now();
      if (now - last_accept_warning_ >= std::chrono::seconds(10)) {
        log::warn("accept failed; pausing new connections", {{"error", ec.message()}});
        last_accept_warning_ = now;
      }
      asio::steady_timer pause(executor_, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (connections_.size() - evicting_ >= limits_.max_connections && !make_room()) {
      reject(socket);
      continue;
    }
    close_on_exec(socket.native_handle());
    socket.set_option(asio::ip::tcp::no_delay(true), ec);
    auto c = std::make_shared<connection>(std::move(socket));
    connections_.push_front(c.get());
    c->position = connections_.begin();
    asio::co_spawn(executor_, watchdog(c), asio::detached);
    asio::co_spawn(executor_, serve(c), [](std::exception_ptr failure) {
      // serve() handles every expected error itself; anything else is a bug worth a line.
      if (!failure) return;
      try {
        std::rethrow_exception(failure);
      } catch (const std::exception& e) {
        log::error("connection failed", {{"error", e.what()}});
      }
    });
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

// Writes a streamed response: the head, then whatever the stream produces. Each write has the
// header timeout to complete, so a client that stops reading is cut off; between writes the
// stream may wait as long as it likes.
asio::awaitable<void> server::stream_response(connection& c, const response& res,
                                              std::string& head) {
  struct socket_writer final : stream_writer {
    connection& conn;
    std::chrono::milliseconds timeout;
    socket_writer(connection& cn, std::chrono::milliseconds t) : conn(cn), timeout(t) {}
    // Not cut short by stop(): the stream's own source ends it (so that its last words, such
    // as "stopped", still go out), and stop()'s grace period bounds it.
    asio::awaitable<bool> write(std::string_view data) override {
      conn.set_deadline(clock::now() + timeout);
      std::error_code ec;
      co_await asio::async_write(conn.socket, asio::buffer(data),
                                 asio::redirect_error(asio::use_awaitable, ec));
      conn.set_deadline(never);
      co_return !ec && !conn.timed_out;
    }
  } writer(c, limits_.header_timeout);
  head.clear();
  serialize_head(res, false, http_date_now(), head);
  if (co_await writer.write(head)) co_await res.stream(writer);
}

asio::awaitable<void> server::serve(std::shared_ptr<connection> c) {
  // However serve() ends, the connection leaves the server's list, its watchdog stops, and a
  // stop() waiting for the last connection is told.
  struct cleanup {
    server& owner;
    connection& conn;
    ~cleanup() {
      conn.finished = true;
      conn.timer.cancel();
      std::error_code ignored;
      conn.socket.close(ignored);
      owner.connections_.erase(conn.position);
      if (conn.evicted) --owner.evicting_;
      if (owner.stopping_ && owner.connections_.empty()) owner.drained_.cancel();
    }
  } guard{*this, *c};

  request_parser parser(limits_.parser);
  std::array<char, read_buffer_size> buffer;
  std::size_t begin = 0, end = 0;
  std::string head;
  head.reserve(256);
  bool continue_sent = false;
  bool head_checked = false;          // check_ has seen the current request's head
  bool request_deadline_set = false;  // the current request's header_timeout is armed
  std::error_code ec;

  // Sends a response; false when the connection must end (error or close).
  auto send = [&](const response& r, bool keep_alive, bool head_only,
                  int version_minor) -> asio::awaitable<bool> {
    keep_alive = keep_alive && !c->closing && !r.close;
    head.clear();
    serialize_head(r, keep_alive, http_date_now(), head, version_minor);
    c->set_deadline(clock::now() + limits_.header_timeout);
    const std::array<asio::const_buffer, 2> parts{
        asio::buffer(head), head_only ? asio::const_buffer() : asio::buffer(r.body)};
    co_await asio::async_write(c->socket, parts, asio::redirect_error(asio::use_awaitable, ec));
    co_return !ec && keep_alive;
  };

  // An error answer, then a lingering close: stop sending, and read and drop what the client
  // still sends for a moment, because closing with unread input makes the kernel send a reset
  // that can destroy the answer before the client reads it.
  auto fail_and_close = [&](response res) -> asio::awaitable<void> {
    res.close = true;
    if (!co_await send(res, false, false, 1) && ec) co_return;
    c->socket.shutdown(asio::socket_base::shutdown_send, ec);
    c->set_deadline(clock::now() + std::chrono::seconds(2));
    std::size_t drained = 0;
    while (drained < 256 * 1024) {
      const std::size_t n = co_await c->socket.async_read_some(
          asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      drained += n;
    }
  };

  for (;;) {
    // Parse everything already buffered: one read may hold several pipelined requests.
    bool open = true;
    while (open && begin < end) {
      const auto result = parser.feed({buffer.data() + begin, end - begin});
      begin += result.consumed;
      if (result.state == request_parser::status::complete) {
        const request req = parser.take_request();
        parser.reset();
        request_deadline_set = false;
        continue_sent = false;
        head_checked = false;
        c->set_deadline(never);  // the handler is ours; it is not the client being slow
        c->answering = true;
        response res;
        try {
          res = co_await handler_(req);
        } catch (const std::exception& e) {
          log::error("request handler failed",
                     {{"method", req.method}, {"path", req.path}, {"error", e.what()}});
          res = error_response(500, "internal error");
        }
        if (res.stream && req.method != "HEAD") {
          co_await stream_response(*c, res, head);
          co_return;
        }
        open = co_await send(res, req.keep_alive, req.method == "HEAD", req.version_minor);
        c->answering = false;
      } else if (result.state == request_parser::status::error) {
        co_await fail_and_close(error_response(parser.error_status(), parser.error_message()));
        co_return;
      }
    }
    if (!open) co_return;
    begin = end = 0;  // the parser copies what it keeps: the buffer is free again

    // Headers in, body still to come: a request that will be refused anyway (no token, say)
    // is answered now, before the client is invited to send, or sends, its body.
    if (!head_checked && check_ && parser.headers_complete()) {
      head_checked = true;
      if (std::optional<response> refusal = check_(parser.head())) {
        co_await fail_and_close(std::move(*refusal));
        co_return;
      }
    }
    if (!continue_sent && parser.headers_complete() && parser.expects_continue()) {
      static constexpr std::string_view go_on = "HTTP/1.1 100 Continue\r\n\r\n";
      co_await asio::async_write(c->socket, asio::buffer(go_on),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      continue_sent = true;
    }

    c->idle = !parser.request_started();
    if (c->idle && c->closing) co_return;
    // Closed for room before this coroutine first ran (no read for the cancel to end yet).
    if (c->evicted) co_return;
    if (c->idle) {
      c->set_deadline(clock::now() + limits_.idle_timeout);
      request_deadline_set = false;
      // The most recently active first: make_room() takes from the back.
      connections_.splice(connections_.begin(), connections_, c->position);
    } else if (!request_deadline_set) {
      // Armed once, at the request's first byte: a client trickling a byte at a time must not
      // push its deadline on with every read (slowloris).
      c->set_deadline(clock::now() + limits_.header_timeout);
      request_deadline_set = true;
    }
    const std::size_t n = co_await c->socket.async_read_some(
        asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
    const bool was_idle = c->idle;
    c->idle = false;
    if (c->evicted) co_return;  // even if the read completed before the cancel reached it
    // The watchdog may have fired while this read's completion was already queued: its
    // cancel then changed nothing, so the flag, not the error code, is what says "too late".
    if (c->timed_out) {
      c->timed_out = false;
      if (!was_idle) co_await fail_and_close(error_response(408, "request timed out"));
      co_return;
    }
    if (ec) co_return;
    end = n;
  }
}

}  // namespace sm::http
