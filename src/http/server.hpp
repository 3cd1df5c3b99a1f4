// A generic HTTP/1.1 server on the executor: one coroutine per connection, keep-alive,
// pipelining, 100-continue, limits and timeouts. It knows no route of the product.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <optional>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>

#include "http/request.hpp"
#include "http/request_parser.hpp"
#include "http/response.hpp"
#include "http/router.hpp"

namespace sm::http {

struct server_limits {
  parser_limits parser;
  // From the first byte of a request to its last, and for writing a response: a client slower
  // than this gets 408 and is disconnected.
  std::chrono::milliseconds header_timeout = std::chrono::seconds(10);
  // Between requests on a kept-alive connection.
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(60);
  // With this many open, a new connection takes the place of the one that has waited longest
  // without a request (see server::make_room); only when every one is being answered is the
  // new one answered 503 and closed.
  std::size_t max_connections = 1024;
};

using request_handler = std::function<asio::awaitable<response>(const request&)>;
// Looks at a request whose headers are in and whose body is not: an answer refuses it then and
// there (before "100 Continue", before reading the body), nullopt lets it go on.
using head_check = std::function<std::optional<response>(const request& head)>;

// Routes a request: the handler's answer, or 404, 405 (with Allow) or 400 for a bad path.
asio::awaitable<response> dispatch(const router& routes, const request& req);

class server {
 public:
  server(asio::any_io_executor executor, server_limits limits, request_handler handler,
         head_check check = {});
  ~server();

  // Binds and listens (SO_REUSEADDR); throws std::system_error. Returns the bound endpoint,
  // whose port the kernel chose if `at` asked for port 0.
  asio::ip::tcp::endpoint listen(const asio::ip::tcp::endpoint& at);

  // Accepts until stop(). Run it with co_spawn.
  asio::awaitable<void> run();

  // Stops accepting, closes idle connections, lets requests in flight finish for up to `grace`
  // (their responses carry "Connection: close"), then closes whatever remains.
  asio::awaitable<void> stop(std::chrono::milliseconds grace);

  std::size_t connection_count() const { return connections_.size(); }

 private:
  struct connection;
  asio::awaitable<void> serve(std::shared_ptr<connection> c);
  asio::awaitable<void> watchdog(std::shared_ptr<connection> c);
  asio::awaitable<void> stream_response(connection& c, const response& res, std::string& head);
  void reject(asio::ip::tcp::socket& socket);
  bool make_room();

  asio::any_io_executor executor_;
  server_limits limits_;
  request_handler handler_;
  head_check check_;
  asio::ip::tcp::acceptor acceptor_;
  // Live connections, for stop() and make_room(); each erases itself. Ordered by activity: a
  // connection moves to the front each time it starts waiting for a request, so the back is the
  // one that has waited longest.
  std::list<connection*> connections_;
  std::size_t evicting_ = 0;    // connections of the list closed by make_room(), not yet gone
  asio::steady_timer drained_;  // cancelled when the last connection ends in stop()
  bool stopping_ = false;
  std::chrono::steady_clock::time_point last_accept_warning_{};
};

}  // namespace sm::http
