// The S3 client's retry policy and error handling against a scripted fake S3 (the project's
// own HTTP server on loopback; it checks no signature): 5xx, 429 and a missing answer are
// retried with backoff; other 4xx and 501 are not; the attempts are bounded; an outage (the
// server gone, then back on the same port) is ridden out; broken answers are errors, not
// crashes.
#define BOOST_TEST_MODULE s3_retry
#include <boost/test/unit_test.hpp>

#include <deque>
#include <functional>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include "async/offload.hpp"
#include "http/server.hpp"
#include "s3/object_store.hpp"

using namespace sm;
using namespace std::chrono_literals;

namespace {

// Answers request n with script(n, request); counts requests.
struct fake_s3 {
  asio::io_context& io;
  std::function<http::response(int, const http::request&)> script;
  int requests = 0;
  std::unique_ptr<http::server> server;
  unsigned short port = 0;

  fake_s3(asio::io_context& context, std::function<http::response(int, const http::request&)> s)
      : io(context), script(std::move(s)) {
    start();
  }
  void start() {
    server = std::make_unique<http::server>(
        io.get_executor(), http::server_limits{},
        [this](const http::request& r) -> asio::awaitable<http::response> {
          co_return script(++requests, r);
        });
    port = server->listen({asio::ip::make_address("127.0.0.1"), port}).port();
    asio::co_spawn(io, server->run(), asio::detached);
  }
};

http::response answer(int status, std::string body = {}, std::string etag = "\"e1\"") {
  http::response r;
  r.status = status;
  r.content_type = "application/xml";
  r.body = std::move(body);
  r.headers.emplace_back("ETag", std::move(etag));
  return r;
}

std::string error_xml(const std::string& code) {
  return "<?xml version=\"1.0\"?><Error><Code>" + code + "</Code><Message>scripted " + code +
         "</Message></Error>";
}

s3::store_config config_for(unsigned short port) {
  s3::store_config c;
  c.endpoint = "http://127.0.0.1:" + std::to_string(port);
  c.bucket = "bkt";
  c.access_key = "key";
  c.secret_key = "secret";
  c.max_attempts = 4;
  return c;
}

// Runs `body` on `io` to the end, then stops the fake server (its connections' coroutines end
// before anything is destroyed); returns the s3::error code it threw, or "ok".
std::string run(asio::io_context& io, fake_s3& fake, std::function<asio::awaitable<void>()> body) {
  std::string outcome = "ok";
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          co_await body();
        } catch (const s3::error& e) {
          outcome = e.code();
        }
        co_await fake.server->stop(0ms);
        io.stop();
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  io.restart();
  sm::stop_offload_worker();
  return outcome;
}

}  // namespace

BOOST_AUTO_TEST_CASE(server_errors_are_retried) {
  asio::io_context io;
  fake_s3 fake(io, [](int n, const http::request&) {
    return n <= 2 ? answer(503, error_xml("SlowDown")) : answer(200);
  });
  auto store = s3::make_store(io.get_executor(), config_for(fake.port));
  std::string etag;
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               const std::string key = "k";
               etag = co_await store->put(key, std::string("v"));
             }) == "ok");
  BOOST_TEST(fake.requests == 3);
  BOOST_TEST(etag == "e1");
}

BOOST_AUTO_TEST_CASE(too_many_requests_is_retried) {
  asio::io_context io;
  fake_s3 fake(io, [](int n, const http::request&) {
    return n == 1 ? answer(429, error_xml("SlowDown")) : answer(200);
  });
  auto store = s3::make_store(io.get_executor(), config_for(fake.port));
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               co_await store->put(std::string("k"), std::string("v"));
             }) == "ok");
  BOOST_TEST(fake.requests == 2);
}

BOOST_AUTO_TEST_CASE(client_errors_are_not_retried) {
  for (const auto& [status, code] : std::vector<std::pair<int, std::string>>{
           {403, "AccessDenied"}, {400, "InvalidArgument"}, {501, "NotImplemented"}}) {
    asio::io_context io;
    const int s = status;
    const std::string c = code;
    fake_s3 fake(io, [s, c](int, const http::request&) { return answer(s, error_xml(c)); });
    auto store = s3::make_store(io.get_executor(), config_for(fake.port));
    BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
                 co_await store->put(std::string("k"), std::string("v"));
               }) == code);
    BOOST_TEST(fake.requests == 1, code << ": " << fake.requests << " requests");
  }
}

BOOST_AUTO_TEST_CASE(attempts_are_bounded) {
  asio::io_context io;
  fake_s3 fake(io,
               [](int, const http::request&) { return answer(500, error_xml("InternalError")); });
  auto store = s3::make_store(io.get_executor(), config_for(fake.port));
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               co_await store->get(std::string("k"));
             }) == "InternalError");
  BOOST_TEST(fake.requests == 4);  // config_for: max_attempts 4
}

BOOST_AUTO_TEST_CASE(an_outage_is_ridden_out) {
  // The server goes away (listener and connections closed), then comes back on the same port
  // 500 ms later; a PUT started during the outage succeeds once it is back.
  asio::io_context io;
  fake_s3 fake(io, [](int, const http::request&) { return answer(200); });
  auto store = s3::make_store(io.get_executor(), config_for(fake.port));
  s3::store_config patient = config_for(fake.port);
  patient.max_attempts = 12;
  auto patient_store = s3::make_store(io.get_executor(), patient);
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               co_await store->put(std::string("before"), std::string("v"));
               co_await fake.server->stop(0ms);
               asio::steady_timer later(io, 500ms);
               asio::co_spawn(
                   io,
                   [&]() -> asio::awaitable<void> {
                     std::error_code ec;
                     co_await later.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                     fake.start();
                   },
                   asio::detached);
               co_await patient_store->put(std::string("during"), std::string("v"));
             }) == "ok");
  BOOST_TEST(fake.requests >= 2);
}

// A TCP relay in front of the fake: the first `cut` connections are dropped after 64 KiB of
// the request (the server died mid-transfer), later ones are relayed both ways.
struct cutting_relay {
  asio::ip::tcp::acceptor acceptor;
  unsigned short to;
  int cut;
  int connections = 0;
  cutting_relay(asio::io_context& io, unsigned short target, int cut_first)
      : acceptor(io, {asio::ip::make_address("127.0.0.1"), 0}), to(target), cut(cut_first) {
    asio::co_spawn(io, accept(), asio::detached);
  }
  unsigned short port() const { return acceptor.local_endpoint().port(); }
  static asio::awaitable<void> pump(asio::ip::tcp::socket& from, asio::ip::tcp::socket& into) {
    char buffer[16384];
    for (;;) {
      std::error_code ec;
      const std::size_t n = co_await from.async_read_some(
          asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      co_await asio::async_write(into, asio::buffer(buffer, n),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
    }
    std::error_code ignored;
    into.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  }
  asio::awaitable<void> serve(asio::ip::tcp::socket client, bool drop) {
    std::error_code ec;
    if (drop) {
      std::string some(64 * 1024, '\0');
      co_await asio::async_read(client, asio::buffer(some),
                                asio::redirect_error(asio::use_awaitable, ec));
      client.set_option(asio::socket_base::linger(true, 0), ec);  // a reset, as a crash gives
      client.close(ec);
      co_return;
    }
    auto server = std::make_shared<asio::ip::tcp::socket>(acceptor.get_executor());
    co_await server->async_connect({asio::ip::make_address("127.0.0.1"), to},
                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
    auto shared_client = std::make_shared<asio::ip::tcp::socket>(std::move(client));
    asio::co_spawn(
        acceptor.get_executor(),
        [server, shared_client]() -> asio::awaitable<void> {
          co_await pump(*server, *shared_client);
        },
        asio::detached);
    co_await pump(*shared_client, *server);
  }
  asio::awaitable<void> accept() {
    for (;;) {
      std::error_code ec;
      asio::ip::tcp::socket client =
          co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      const bool drop = ++connections <= cut;
      asio::co_spawn(acceptor.get_executor(), serve(std::move(client), drop), asio::detached);
    }
  }
};

BOOST_AUTO_TEST_CASE(a_transfer_cut_midway_is_sent_again) {
  // A 1 MiB PUT whose first two connections die after 64 KiB: the third attempt lands, whole.
  asio::io_context io;
  std::size_t received = 0;
  fake_s3 fake(io, [&](int, const http::request& r) {
    received = r.body.size();
    return answer(200);
  });
  cutting_relay relay(io, fake.port, 2);
  auto store = s3::make_store(io.get_executor(), config_for(relay.port()));
  const std::string body(1 << 20, 'x');
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               co_await store->put(std::string("big"), body);
               relay.acceptor.close();
             }) == "ok");
  BOOST_TEST(relay.connections >= 3);
  BOOST_TEST(fake.requests == 1);  // only the whole request reached the server
  BOOST_TEST(received == body.size());
}

BOOST_AUTO_TEST_CASE(broken_answers_are_errors) {
  asio::io_context io;
  fake_s3 fake(io, [](int n, const http::request&) {
    // A listing that is not XML, one cut short, and an HTML error page.
    if (n == 1) return answer(200, "this is not xml");
    if (n == 2) return answer(200, "<ListBucketResult><Contents><Key>a</Key>");
    return answer(403, "<html>forbidden</html>");
  });
  s3::store_config c = config_for(fake.port);
  c.max_attempts = 1;
  auto store = s3::make_store(io.get_executor(), c);
  std::vector<std::string> codes;
  for (int i = 0; i < 3; ++i) {
    if (i > 0) fake.start();  // run() stopped it
    codes.push_back(run(io, fake, [&]() -> asio::awaitable<void> {
      co_await store->list(std::string(), std::string(), std::string(), 1000);
    }));
  }
  BOOST_TEST(codes[0] == "MalformedResponse");
  BOOST_TEST(codes[1] == "MalformedResponse");
  BOOST_TEST(codes[2] == "Forbidden");  // no S3 error body: named from the status
}
