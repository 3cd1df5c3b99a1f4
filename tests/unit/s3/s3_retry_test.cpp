// The S3 client's retry policy and error handling against a scripted fake S3 (the project's
// own HTTP server on loopback; it checks no signature): 5xx, 429 and a missing answer are
// retried with backoff; other 4xx and 501 are not; the attempts are bounded; an outage (the
// server gone, then back on the same port) is ridden out; broken answers are errors, not
// crashes.
#define BOOST_TEST_MODULE s3_retry
#include <boost/test/unit_test.hpp>

#include <unistd.h>
#include <cstdio>
#include <deque>
#include <filesystem>
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

  http::server_limits limits;
  fake_s3(asio::io_context& context, std::function<http::response(int, const http::request&)> s,
          std::size_t max_body = 1 << 20)
      : io(context), script(std::move(s)) {
    limits.parser.max_body_bytes = max_body;
    start();
  }
  void start() {
    server = std::make_unique<http::server>(
        io.get_executor(), limits,
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

// --- Ranged GETs: exactly the bytes asked for, of the version asked for, or an error.

http::response partial(std::string body, std::string content_range) {
  http::response r = answer(206, std::move(body));
  r.headers.emplace_back("Content-Range", std::move(content_range));
  return r;
}

BOOST_AUTO_TEST_CASE(a_ranged_get_answered_200_is_an_error) {
  // A server (or proxy) that ignores Range sends the whole object: never taken as the range.
  asio::io_context io;
  fake_s3 fake(io, [](int, const http::request&) { return answer(200, "0123456789"); });
  auto store = s3::make_store(io.get_executor(), config_for(fake.port));
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               co_await store->get(std::string("k"), s3::byte_range(2, 5));
             }) == "InvalidRangeResponse");
  BOOST_TEST(fake.requests == 1);  // not retried: the server would answer the same
}

BOOST_AUTO_TEST_CASE(a_ranged_get_of_another_range_or_length_is_an_error) {
  for (const auto& [body, content_range] : std::vector<std::pair<std::string, std::string>>{
           {"2345", "bytes 0-3/10"},  // another range
           {"234", "bytes 2-5/10"},   // shorter than its Content-Range
           {"2345", "bytes 2-5"},     // malformed
           {"2345", ""}}) {           // none
    asio::io_context io;
    const std::string b = body, cr = content_range;
    fake_s3 fake(io, [b, cr](int, const http::request&) {
      return cr.empty() ? answer(206, b) : partial(b, cr);
    });
    auto store = s3::make_store(io.get_executor(), config_for(fake.port));
    BOOST_TEST(run(io, fake,
                   [&]() -> asio::awaitable<void> {
                     co_await store->get(std::string("k"), s3::byte_range(2, 5));
                   }) == "InvalidRangeResponse",
               content_range);
  }
}

BOOST_AUTO_TEST_CASE(a_ranged_get_is_checked_and_sent_with_if_match) {
  asio::io_context io;
  std::string if_match, range;
  fake_s3 fake(io, [&](int, const http::request& r) {
    if_match = std::string(r.header("If-Match").value_or(""));
    range = std::string(r.header("Range").value_or(""));
    if (if_match != "\"v1\"") return answer(412, error_xml("PreconditionFailed"));
    return partial("2345", "bytes 2-5/10");
  });
  auto store = s3::make_store(io.get_executor(), config_for(fake.port));
  std::string got;
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               got = co_await store->get(std::string("k"), s3::byte_range(2, 5, "v1"));
             }) == "ok");
  BOOST_TEST(got == "2345");
  BOOST_TEST(if_match == "\"v1\"");
  BOOST_TEST(range == "bytes=2-5");
  // A range past the end: the bytes that exist, as Content-Range says.
  fake.start();
  fake.script = [](int, const http::request&) { return partial("89", "bytes 8-9/10"); };
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               got = co_await store->get(std::string("k"), s3::byte_range(8, 20, "v1"));
             }) == "ok");
  BOOST_TEST(got == "89");
  // Another version: 412, an error, not retried.
  fake.start();
  fake.requests = 0;
  fake.script = [](int, const http::request&) {
    return answer(412, error_xml("PreconditionFailed"));
  };
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               co_await store->get(std::string("k"), s3::byte_range(2, 5, "v2"));
             }) == "PreconditionFailed");
  BOOST_TEST(fake.requests == 1);
}

BOOST_AUTO_TEST_CASE(a_ranged_get_longer_than_asked_is_cut_off) {
  // A 206 whose body runs past the range (a server bug, or a hostile one): the transfer is
  // aborted at the bound instead of filling memory.
  asio::io_context io;
  fake_s3 fake(io, [](int, const http::request&) {
    return partial(std::string(4 << 20, 'x'), "bytes 0-3/10");
  });
  auto store = s3::make_store(io.get_executor(), config_for(fake.port));
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               co_await store->get(std::string("k"), s3::byte_range(0, 3));
             }) == "InvalidRangeResponse");
}

// --- CompleteMultipartUpload: a 200 with <Error> is retried; a lost 200 is found by HEAD.

// A 33 MiB file: three parts of a multipart upload (16 MiB parts, above the 32 MiB threshold).
std::filesystem::path multipart_file() {
  const auto path =
      std::filesystem::temp_directory_path() / ("s3_retry_multipart_" + std::to_string(::getpid()));
  std::FILE* f = std::fopen(path.c_str(), "wb");
  const std::string chunk(1 << 20, 'm');
  for (int i = 0; i < 33; ++i) std::fwrite(chunk.data(), 1, chunk.size(), f);
  std::fclose(f);
  return path;
}

// Initiate, parts (ETags 00..01, 00..02, 00..03), and Complete as `complete(n)` says (n counts
// the Completes); HEAD as `head`.
http::response multipart_script(const http::request& r, int& completes,
                                const std::function<http::response(int)>& complete,
                                const std::function<http::response()>& head) {
  if (r.method == "POST" && r.query.starts_with("uploads")) {
    return answer(200,
                  "<InitiateMultipartUploadResult><Bucket>bkt</Bucket><Key>big</Key>"
                  "<UploadId>up1</UploadId></InitiateMultipartUploadResult>");
  }
  if (r.method == "PUT") {
    const auto at = r.query.find("partNumber=");
    const char n = r.query[at + 11];
    return answer(200, {}, "\"0000000000000000000000000000000" + std::string(1, n) + "\"");
  }
  if (r.method == "POST") return complete(++completes);
  if (r.method == "HEAD") return head();
  return answer(400, error_xml("Unexpected"));
}

const std::string completed_xml =
    "<CompleteMultipartUploadResult><Key>big</Key>"
    "<ETag>\"ef2c5f0e74f5f9224fa8cec6c947d732-3\"</ETag></CompleteMultipartUploadResult>";

BOOST_AUTO_TEST_CASE(a_complete_answered_200_with_an_error_is_retried) {
  const auto file = multipart_file();
  asio::io_context io;
  int completes = 0;
  fake_s3 fake(
      io,
      [&](int, const http::request& r) {
        return multipart_script(
            r, completes,
            [](int n) {
              return n == 1 ? answer(200, error_xml("InternalError")) : answer(200, completed_xml);
            },
            [] { return answer(404); });
      },
      32 << 20);
  auto store = s3::make_store(io.get_executor(), config_for(fake.port));
  std::string etag;
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               etag = co_await store->put_file(std::string("big"), file);
             }) == "ok");
  std::filesystem::remove(file);
  BOOST_TEST(completes == 2);
  BOOST_TEST(etag == "ef2c5f0e74f5f9224fa8cec6c947d732-3");
}

BOOST_AUTO_TEST_CASE(a_complete_whose_answer_was_lost_is_checked_with_head) {
  // The first Complete succeeds on the server but its answer is lost (here: a 503, so that it
  // is sent again); the second finds the upload gone. HEAD shows the object with the ETag these
  // parts give: the upload succeeded.
  const auto file = multipart_file();
  for (const bool ours : {true, false}) {
    asio::io_context io;
    int completes = 0;
    fake_s3 fake(
        io,
        [&](int, const http::request& r) {
          return multipart_script(
              r, completes,
              [](int n) {
                return n == 1 ? answer(503, error_xml("SlowDown"))
                              : answer(404, error_xml("NoSuchUpload"));
              },
              [ours] {
                http::response h =
                    answer(200, std::string((33 << 20), 'm'),
                           ours ? "\"ef2c5f0e74f5f9224fa8cec6c947d732-3\"" : "\"someone-else-3\"");
                return h;
              });
        },
        32 << 20);
    auto store = s3::make_store(io.get_executor(), config_for(fake.port));
    std::string etag;
    const std::string outcome = run(io, fake, [&]() -> asio::awaitable<void> {
      etag = co_await store->put_file(std::string("big"), file);
    });
    if (ours) {
      BOOST_TEST(outcome == "ok");
      BOOST_TEST(etag == "ef2c5f0e74f5f9224fa8cec6c947d732-3");
    } else {
      BOOST_TEST(outcome == "NoSuchUpload");  // another object: the failure stands
    }
    BOOST_TEST(completes == 2);
  }
  std::filesystem::remove(file);
}

// DESIGN 3.2: a write is asked again before every attempt, so a retry that comes after the lease
// went (or entered its safety margin) fails instead of landing.
BOOST_AUTO_TEST_CASE(a_write_whose_permission_ends_is_not_retried) {
  asio::io_context io;
  fake_s3 fake(io, [](int, const http::request&) { return answer(503, error_xml("SlowDown")); });
  auto store = s3::make_store(io.get_executor(), config_for(fake.port));
  int asked = 0;
  BOOST_TEST(run(io, fake, [&]() -> asio::awaitable<void> {
               s3::put_options options;
               options.may_write = [&asked] {
                 return ++asked == 1 ? std::string() : std::string("the lease is not held");
               };
               co_await store->put(std::string("k"), std::string("v"), options);
             }) == "LeaseNotHeld");
  BOOST_TEST(fake.requests == 1);  // the first attempt went; the retry was refused
  BOOST_TEST(asked == 2);
}
