#include "s3/s3_client.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <random>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "async/offload.hpp"
#include "base/hex.hpp"
#include "s3/curl_multi.hpp"
#include "s3/dynamic.hpp"
#include "s3/responses.hpp"
#include "s3/sigv4.hpp"

namespace sm::s3 {

namespace {

using clock = std::chrono::steady_clock;

constexpr std::uint64_t part_size = 16u << 20;  // multipart parts and ranged downloads
constexpr std::uint64_t multipart_threshold = 32u << 20;
constexpr unsigned parts_in_flight = 4;
// Downloads: smaller ranges, more at once (measured against Swift: 256 MiB in ~1.0 s against
// ~1.2-1.4 s with 16 MiB x 4; uploads are the other way round, fewer parts cost the server less).
constexpr std::uint64_t range_size = 8u << 20;
constexpr unsigned ranges_in_flight = 8;

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  lib::crypto().digest(data.data(), data.size(), digest, &size, lib::crypto().sha256(), nullptr);
  return hex(std::string_view(reinterpret_cast<const char*>(digest), size));
}

std::string md5_base64(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  lib::crypto().digest(data.data(), data.size(), digest, &size, lib::crypto().md5(), nullptr);
  unsigned char encoded[64];
  const int n = lib::crypto().encode_block(encoded, digest, static_cast<int>(size));
  return std::string(reinterpret_cast<char*>(encoded), static_cast<std::size_t>(n));
}

std::string unquote(std::string etag) {
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
    etag = etag.substr(1, etag.size() - 2);
  }
  return etag;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// "Sun, 22 Nov 2026 13:00:00 GMT" (Last-Modified) to a time point; epoch when unparseable.
std::chrono::system_clock::time_point http_date(const std::string& text) {
  std::tm tm{};
  if (!strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S", &tm)) return {};
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

struct request {
  std::string method = "GET";
  std::string key;  // full key (with the prefix); empty: the bucket
  query_params query;
  std::vector<std::string> headers;
  std::string_view body;  // sent as is (PUT, POST)
  bool has_body = false;
  std::optional<byte_range> range;
  std::string about;          // the key to name in errors
  unsigned max_attempts = 0;  // 0: the store's
  // A write's put_options::may_write, asked before every attempt; null: always.
  const std::function<std::string()>* may_write = nullptr;
};

// Bodies of answers other than 2xx (error documents) are kept up to this size; the rest is
// dropped, so that a misbehaving server cannot fill memory with an error page.
constexpr std::size_t max_error_body = 1u << 20;

struct response {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  // Filled by the callbacks while the transfer runs: the status line's code, the most body a
  // 2xx answer may carry (0: no bound), and what a callback could not do (an exception must
  // never cross curl's C frames: it is kept here, the transfer aborted, and it is rethrown
  // once curl has returned).
  long head_status = 0;
  std::uint64_t body_limit = 0;
  std::exception_ptr failure;
  std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct upload_cursor {
  std::string_view data;
  std::size_t at = 0;
};

// curl's callbacks: noexcept, whatever happens inside (see response::failure).
std::size_t read_body(char* buffer, std::size_t size, std::size_t count, void* user) noexcept {
  auto* cursor = static_cast<upload_cursor*>(user);
  const std::size_t n = std::min(size * count, cursor->data.size() - cursor->at);
  std::memcpy(buffer, cursor->data.data() + cursor->at, n);
  cursor->at += n;
  return n;
}

std::size_t write_body(char* data, std::size_t size, std::size_t count, void* user) noexcept {
  auto* answer = static_cast<response*>(user);
  const std::size_t n = size * count;
  try {
    const bool success = answer->head_status >= 200 && answer->head_status < 300;
    if (!success) {
      if (answer->body.size() < max_error_body) {
        answer->body.append(data, std::min(n, max_error_body - answer->body.size()));
      }
      return n;
    }
    if (answer->body_limit != 0 && answer->body.size() + n > answer->body_limit) {
      throw error(
          static_cast<int>(answer->head_status), "InvalidRangeResponse",
          "more bytes than the range asked for (" + std::to_string(answer->body_limit) + ")");
    }
    answer->body.append(data, n);
    return n;
  } catch (...) {
    answer->failure = std::current_exception();
    return 0;  // curl aborts the transfer (CURLE_WRITE_ERROR)
  }
}

std::size_t write_header(char* data, std::size_t size, std::size_t count, void* user) noexcept {
  auto* answer = static_cast<response*>(user);
  try {
    const std::string_view line(data, size * count);
    const auto colon = line.find(':');
    if (line.starts_with("HTTP/")) {
      answer->headers.clear();  // a 100 Continue's or a redirect's headers
      const auto space = line.find(' ');
      answer->head_status =
          space == std::string_view::npos ? 0 : std::strtol(line.data() + space + 1, nullptr, 10);
    } else if (colon != std::string_view::npos) {
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
        value.remove_prefix(1);
      while (!value.empty() &&
             (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
        value.remove_suffix(1);
      answer->headers[lower(std::string(line.substr(0, colon)))] = std::string(value);
    }
    return size * count;
  } catch (...) {
    answer->failure = std::current_exception();
    return 0;  // curl aborts the transfer
  }
}

// "bytes FIRST-LAST/TOTAL" (TOTAL may be "*"); nullopt when malformed.
std::optional<std::pair<std::uint64_t, std::uint64_t>> parse_content_range(std::string_view text) {
  if (!text.starts_with("bytes ")) return std::nullopt;
  text.remove_prefix(6);
  const auto dash = text.find('-'), slash = text.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) {
    return std::nullopt;
  }
  auto number = [](std::string_view digits) -> std::optional<std::uint64_t> {
    if (digits.empty() || digits.size() > 19) return std::nullopt;
    std::uint64_t value = 0;
    for (const char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      value = value * 10 + std::uint64_t(c - '0');
    }
    return value;
  };
  const auto first = number(text.substr(0, dash));
  const auto last = number(text.substr(dash + 1, slash - dash - 1));
  if (!first || !last || *last < *first) return std::nullopt;
  return std::pair{*first, *last};
}

class s3_client final : public object_store {
 public:
  s3_client(asio::any_io_executor executor, store_config config)
      : executor_(executor),
        config_(std::move(config)),
        multi_(executor, static_cast<long>(std::max(1u, config_.max_parallel))),
        jitter_(std::random_device{}()) {
    if (!split_endpoint(config_.endpoint, endpoint_)) {
      throw std::invalid_argument("invalid S3 endpoint: " + config_.endpoint);
    }
  }

  asio::awaitable<std::string> put(std::string key, std::string body,
                                   put_options options) override {
    request r;
    r.method = "PUT";
    r.key = full(key);
    r.about = key;
    r.body = body;
    r.has_body = true;
    conditions(r, options);
    r.max_attempts = options.max_attempts;
    if (options.may_write) r.may_write = &options.may_write;
    const response answer = co_await send(r);
    co_return unquote(answer.header("etag"));
  }

  asio::awaitable<std::string> put_file(std::string key, std::filesystem::path file,
                                        put_options options) override {
    const std::uint64_t size = co_await file_size(file);
    if (size <= multipart_threshold || !options.if_match.empty() || options.if_none_match) {
      std::string body = co_await read_range(file, 0, size);
      co_return co_await put(std::move(key), std::move(body), std::move(options));
    }
    co_return co_await multipart(key, file, size, options);
  }

  asio::awaitable<std::string> get(std::string key, std::optional<byte_range> range) override {
    request r;
    r.key = full(key);
    r.about = key;
    r.range = range;
    response answer = co_await send(r);
    co_return std::move(answer.body);
  }

  asio::awaitable<object_info> get_file(std::string key, std::filesystem::path to,
                                        std::optional<byte_range> range) override {
    const std::optional<object_info> info = co_await head(key);
    if (!info) throw error(404, "NoSuchKey", "The specified key does not exist.", key);
    std::uint64_t first = range ? range->first : 0;
    std::uint64_t end = info->size;  // exclusive
    if (range && range->last) end = std::min(end, *range->last + 1);
    if (range && first >= info->size) {
      throw error(416, "InvalidRange", "The requested range is not satisfiable", key);
    }
    const std::filesystem::path temporary = to.string() + ".part";
    const int fd = co_await open_for_writing(temporary);
    std::exception_ptr failure;
    try {
      // Parts of part_size, parts_in_flight at a time, each written at its offset.
      std::vector<std::uint64_t> starts;
      for (std::uint64_t at = first; at < end; at += range_size) starts.push_back(at);
      co_await for_each_parallel(
          starts.size(), ranges_in_flight, [&](std::size_t i) -> asio::awaitable<void> {
            const std::uint64_t last = std::min(end, starts[i] + range_size) - 1;
            // One version only: a replaced object fails (412) instead of mixing two.
            const std::string data = co_await get(key, byte_range{starts[i], last, info->etag});
            const std::uint64_t offset = starts[i] - first;
            co_await offload([&] {
              write_at(fd, data, offset);
              // Start the writeback now, overlapping the download: the final fsync then waits
              // for the tail only.
              ::sync_file_range(fd, static_cast<off_t>(offset), static_cast<off_t>(data.size()),
                                SYNC_FILE_RANGE_WRITE);
            });
          });
      co_await offload([&] {
        if (::fsync(fd) != 0) throw_errno("fsync " + temporary.string());
      });
    } catch (...) {
      failure = std::current_exception();
    }
    co_await offload([&] { ::close(fd); });
    if (failure) {
      co_await offload([&] { ::unlink(temporary.c_str()); });
      std::rethrow_exception(failure);
    }
    co_await offload([&] {
      if (::rename(temporary.c_str(), to.c_str()) != 0) throw_errno("rename " + to.string());
    });
    co_return *info;
  }

  asio::awaitable<std::optional<object_info>> head(std::string key) override {
    request r;
    r.method = "HEAD";
    r.key = full(key);
    r.about = key;
    try {
      const response answer = co_await send(r);
      object_info info;
      info.key = key;
      info.size = std::strtoull(answer.header("content-length").c_str(), nullptr, 10);
      info.etag = unquote(answer.header("etag"));
      info.last_modified = http_date(answer.header("last-modified"));
      co_return info;
    } catch (const error& e) {
      if (e.status() == 404) co_return std::nullopt;
      throw;
    }
  }

  asio::awaitable<void> remove(std::string key) override {
    request r;
    r.method = "DELETE";
    r.key = full(key);
    r.about = key;
    try {
      co_await send(r);
    } catch (const error& e) {
      if (e.status() != 404) throw;  // absent: nothing to do
    }
  }

  asio::awaitable<void> remove_many(std::vector<std::string> keys) override {
    // DeleteObjects takes up to 1000 keys a request.
    for (std::size_t begin = 0; begin < keys.size(); begin += 1000) {
      std::vector<std::string> batch;
      for (std::size_t i = begin; i < std::min(keys.size(), begin + 1000); ++i) {
        batch.push_back(full(keys[i]));
      }
      const std::string body = delete_request_body(batch);
      request r;
      r.method = "POST";
      r.query = {{"delete", ""}};
      r.body = body;
      r.has_body = true;
      r.headers = {"Content-MD5: " + md5_base64(body), "Content-Type: application/xml"};
      const response answer = co_await send(r);
      const auto failed = parse_delete_result(answer.body, config_.key_prefix);
      for (const auto& [key, problem] : failed) {
        if (problem.code != "NoSuchKey") throw error(500, problem.code, problem.message, key);
      }
    }
  }

  asio::awaitable<list_page> list(std::string prefix, std::string delimiter,
                                  std::string continuation, unsigned max_keys) override {
    request r;
    r.query = {{"list-type", "2"},
               {"prefix", full(prefix)},
               {"max-keys", std::to_string(std::clamp(max_keys, 1u, 1000u))}};
    if (!delimiter.empty()) r.query.emplace_back("delimiter", delimiter);
    if (!continuation.empty()) r.query.emplace_back("continuation-token", continuation);
    r.about = prefix;
    const response answer = co_await send(r);
    co_return parse_list_objects_v2(answer.body, config_.key_prefix);
  }

  asio::awaitable<std::string> copy(std::string from, std::string to) override {
    request r;
    r.method = "PUT";
    r.key = full(to);
    r.about = to;
    r.has_body = true;  // empty
    r.headers = {"x-amz-copy-source: /" + config_.bucket + "/" + uri_encode(full(from), true)};
    const response answer = co_await send(r);
    co_return parse_copy_result(answer.body);
  }

  asio::awaitable<void> check() override {
    // A listing of one key under our prefix: it needs the bucket, the credentials and the
    // permission to list, and unlike HEAD its errors come with a body that says what is wrong.
    request r;
    r.query = {{"list-type", "2"}, {"max-keys", "1"}, {"prefix", config_.key_prefix}};
    r.about = config_.bucket;
    r.max_attempts = 2;  // POST /config is waiting: an unreachable store is reported quickly
    const response answer = co_await send(r);
    parse_list_objects_v2(answer.body, config_.key_prefix);  // an S3 answer, not some page
  }

 private:
  std::string full(const std::string& key) const { return config_.key_prefix + key; }

  static void conditions(request& r, const put_options& options) {
    if (options.if_none_match) r.headers.push_back("If-None-Match: *");
    if (!options.if_match.empty()) r.headers.push_back("If-Match: \"" + options.if_match + "\"");
    r.headers.push_back("Content-Type: " + options.content_type);
  }

  [[noreturn]] static void throw_errno(const std::string& what) {
    throw error(0, "LocalFileError", what + ": " + std::strerror(errno));
  }

  static void write_at(int fd, std::string_view data, std::uint64_t offset) {
    while (!data.empty()) {
      const ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw_errno("write");
      data.remove_prefix(static_cast<std::size_t>(n));
      offset += static_cast<std::uint64_t>(n);
    }
  }

  asio::awaitable<std::uint64_t> file_size(const std::filesystem::path& file) {
    std::uint64_t size = 0;
    co_await offload([&] {
      struct stat st {};
      if (::stat(file.c_str(), &st) != 0) throw_errno("stat " + file.string());
      size = static_cast<std::uint64_t>(st.st_size);
    });
    co_return size;
  }

  asio::awaitable<std::string> read_range(const std::filesystem::path& file, std::uint64_t offset,
                                          std::uint64_t length) {
    std::string data;
    co_await offload([&] {
      const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) throw_errno("open " + file.string());
      data.resize(length);
      std::size_t got = 0;
      while (got < length) {
        const ssize_t n =
            ::pread(fd, data.data() + got, length - got, static_cast<off_t>(offset + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          const int saved = errno;
          ::close(fd);
          errno = n == 0 ? EIO : saved;
          throw_errno("read " + file.string());
        }
        got += static_cast<std::size_t>(n);
      }
      ::close(fd);
    });
    co_return data;
  }

  asio::awaitable<int> open_for_writing(const std::filesystem::path& file) {
    int fd = -1;
    co_await offload([&] {
      fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) throw_errno("open " + file.string());
    });
    co_return fd;
  }

  // Runs body(0..count-1), at most `width` at once; the first failure is rethrown
  // once all have ended.
  template <typename Body>
  asio::awaitable<void> for_each_parallel(std::size_t count, unsigned width, Body body) {
    std::size_t next = 0, running = 0;
    std::exception_ptr failure;
    asio::steady_timer wake(executor_, clock::time_point::max());
    auto worker = [&]() -> asio::awaitable<void> {
      while (next < count && !failure) {
        const std::size_t i = next++;
        try {
          co_await body(i);
        } catch (...) {
          if (!failure) failure = std::current_exception();
        }
      }
      if (--running == 0) wake.cancel();
    };
    const std::size_t workers = std::min<std::size_t>(width, count);
    running = workers;
    for (std::size_t w = 0; w < workers; ++w) asio::co_spawn(executor_, worker(), asio::detached);
    while (running > 0) {
      std::error_code ec;
      co_await wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (failure) std::rethrow_exception(failure);
  }

  asio::awaitable<std::string> multipart(const std::string& key, const std::filesystem::path& file,
                                         std::uint64_t size, const put_options& options) {
    request start;
    start.method = "POST";
    start.key = full(key);
    start.about = key;
    start.query = {{"uploads", ""}};
    start.has_body = true;
    start.headers = {"Content-Type: " + options.content_type};
    const std::function<std::string()>* may_write = options.may_write ? &options.may_write : nullptr;
    start.may_write = may_write;
    const std::string upload_id = parse_initiate_multipart((co_await send(start)).body);
    const std::size_t parts = static_cast<std::size_t>((size + part_size - 1) / part_size);
    std::vector<std::string> etags(parts);
    try {
      co_await for_each_parallel(
          parts, parts_in_flight, [&](std::size_t i) -> asio::awaitable<void> {
            const std::uint64_t offset = i * part_size;
            const std::string data =
                co_await read_range(file, offset, std::min(part_size, size - offset));
            request part;
            part.method = "PUT";
            part.key = full(key);
            part.about = key;
            part.query = {{"partNumber", std::to_string(i + 1)}, {"uploadId", upload_id}};
            part.body = data;
            part.has_body = true;
            part.may_write = may_write;
            etags[i] = unquote((co_await send(part)).header("etag"));
          });
      co_return co_await complete(key, upload_id, etags, size, may_write);
    } catch (...) {
      // Abort, best effort, so the parts do not linger in the bucket; then the real failure.
      const std::exception_ptr failure = std::current_exception();
      request abort;
      abort.method = "DELETE";
      abort.key = full(key);
      abort.about = key;
      abort.query = {{"uploadId", upload_id}};
      abort_later(std::move(abort));
      std::rethrow_exception(failure);
    }
  }

  // CompleteMultipartUpload. S3 may answer 200 and report a failure in the body (<Error>): that
  // is retried like a 5xx. A Complete whose 200 was lost and that is sent again finds the upload
  // gone (404 NoSuchUpload): the object is then checked with HEAD, and one with the multipart
  // ETag these parts give (or, where the parts' ETags are not MD5s, the file's size) is ours.
  asio::awaitable<std::string> complete(const std::string& key, const std::string& upload_id,
                                        const std::vector<std::string>& etags, std::uint64_t size,
                                        const std::function<std::string()>* may_write) {
    const std::string body = complete_multipart_body(etags);
    request done;
    done.method = "POST";
    done.key = full(key);
    done.about = key;
    done.query = {{"uploadId", upload_id}};
    done.body = body;
    done.has_body = true;
    done.headers = {"Content-Type: application/xml"};
    done.may_write = may_write;
    asio::steady_timer pause(executor_);
    std::chrono::milliseconds backoff(100);
    for (unsigned attempt = 1;; ++attempt) {
      std::optional<error> failed;
      bool in_body = false;  // a 200 whose body says <Error>
      try {
        const response answer = co_await send(done);
        in_body = true;
        co_return parse_complete_multipart(answer.body);
      } catch (const error& e) {
        failed = e;
      }
      if (failed->status() == 404 && failed->code() == "NoSuchUpload") {
        const std::optional<object_info> info = co_await head(key);
        const std::string expected = multipart_etag(etags);
        if (info && (expected.empty() ? info->size == size : info->etag == expected)) {
          co_return info->etag;
        }
        throw *failed;
      }
      const unsigned limit = std::max(1u, config_.max_attempts);
      if (!in_body || !failed->retryable() || attempt >= limit) throw *failed;
      std::uniform_int_distribution<long> spread(0, backoff.count());
      pause.expires_after(std::chrono::milliseconds(spread(jitter_)));
      std::error_code ec;
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
  }

  // The ETag S3 gives a multipart object: the MD5 of the parts' binary MD5s, "-", their count.
  // Empty when a part's ETag is not an MD5 (then it cannot be predicted).
  static std::string multipart_etag(const std::vector<std::string>& etags) {
    std::string digests;
    for (const std::string& etag : etags) {
      const std::optional<std::string> bytes = etag.size() == 32 ? unhex(etag) : std::nullopt;
      if (!bytes) return {};
      digests += *bytes;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    lib::crypto().digest(digests.data(), digests.size(), digest, &length, lib::crypto().md5(),
                         nullptr);
    return hex(std::string_view(reinterpret_cast<const char*>(digest), length)) + "-" +
           std::to_string(etags.size());
  }

  void abort_later(request r) {
    asio::co_spawn(
        executor_,
        [this, r = std::move(r)]() -> asio::awaitable<void> {
          try {
            co_await send(r);
          } catch (const std::exception&) {
          }
        },
        asio::detached);
  }

  // One request with retries (exponential backoff from 100 ms, capped at 5 s, full jitter) of
  // what is retryable; throws error for anything but 2xx (and 206).
  asio::awaitable<response> send(const request& r) {
    asio::steady_timer pause(executor_);
    std::chrono::milliseconds backoff(100);
    for (unsigned attempt = 1;; ++attempt) {
      try {
        co_await gate_enter();
        response answer;
        std::exception_ptr failure;
        try {
          // Asked with the slot in hand: the wait for it may have outlasted the permission.
          if (r.may_write) {
            if (std::string why = (*r.may_write)(); !why.empty()) {
              throw error(409, "LeaseNotHeld", "not written: " + why, r.about);
            }
          }
          answer = co_await attempt_once(r);
        } catch (...) {
          failure = std::current_exception();
        }
        gate_leave();
        if (failure) std::rethrow_exception(failure);
        co_return answer;
      } catch (const error& e) {
        const unsigned limit = r.max_attempts ? r.max_attempts : config_.max_attempts;
        if (!e.retryable() || attempt >= std::max(1u, limit)) throw;
      }
      std::uniform_int_distribution<long> spread(0, backoff.count());
      pause.expires_after(std::chrono::milliseconds(spread(jitter_)));
      std::error_code ec;
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
  }

  asio::awaitable<void> gate_enter() {
    if (in_flight_ < std::max(1u, config_.max_parallel)) {
      ++in_flight_;
      co_return;
    }
    asio::steady_timer turn(executor_, clock::time_point::max());
    waiting_.push_back(&turn);
    std::error_code ec;
    co_await turn.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    // gate_leave handed its place to us (in_flight_ unchanged).
  }

  void gate_leave() {
    if (!waiting_.empty()) {
      asio::steady_timer* next = waiting_.front();
      waiting_.pop_front();
      next->cancel();
      return;
    }
    --in_flight_;
  }

  asio::awaitable<response> attempt_once(const request& r) {
    std::unique_ptr<CURL, void (*)(CURL*)> easy(lib::curl().easy_init(), lib::curl().easy_cleanup);
    if (!easy) throw error(0, "ClientError", "curl_easy_init failed");
    CURL* e = easy.get();
    response answer;
    // A ranged GET's size is known: growing the body 16 MiB at a time cost a quarter of a
    // download's CPU in copies and page faults.
    if (r.range && r.range->last && *r.range->last >= r.range->first) {
      answer.body_limit = *r.range->last - r.range->first + 1;
      // Reserved up to a bound: a range's size says what is asked, not what the object holds.
      answer.body.reserve(
          static_cast<std::size_t>(std::min<std::uint64_t>(answer.body_limit, 64u << 20)));
    }
    upload_cursor cursor{r.body};
    const std::string url =
        object_url(endpoint_, config_.bucket, config_.virtual_host, r.key, r.query);
    lib::curl().easy_setopt(e, CURLOPT_URL, url.c_str());
    lib::curl().easy_setopt(e, CURLOPT_PATH_AS_IS,
                            1L);  // keys with "." or ".." segments stay as they are
    lib::curl().easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    lib::curl().easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    const std::string sigv4 = sigv4_param(config_.region);
    lib::curl().easy_setopt(e, CURLOPT_AWS_SIGV4, sigv4.c_str());
    // Separately: an access key may contain ':' (Swift's "test:tester").
    lib::curl().easy_setopt(e, CURLOPT_USERNAME, config_.access_key.c_str());
    lib::curl().easy_setopt(e, CURLOPT_PASSWORD, config_.secret_key.c_str());
    lib::curl().easy_setopt(
        e, CURLOPT_CONNECTTIMEOUT_MS,
        static_cast<long>(std::min<long long>(5000, config_.total_timeout.count())));
    // A stalled transfer (under 1 byte/s for request_timeout) fails and is retried; a slow but
    // moving one (a 16 MiB part on a thin link) is left alone, up to total_timeout (a 10 minute
    // backstop by default).
    lib::curl().easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    lib::curl().easy_setopt(
        e, CURLOPT_LOW_SPEED_TIME,
        static_cast<long>(std::max<long long>(1, config_.request_timeout.count() / 1000)));
    lib::curl().easy_setopt(e, CURLOPT_TIMEOUT_MS,
                            static_cast<long>(config_.total_timeout.count()));
    lib::curl().easy_setopt(e, CURLOPT_WRITEFUNCTION, &write_body);
    lib::curl().easy_setopt(e, CURLOPT_WRITEDATA, &answer);
    lib::curl().easy_setopt(e, CURLOPT_HEADERFUNCTION, &write_header);
    lib::curl().easy_setopt(e, CURLOPT_HEADERDATA, &answer);

    std::vector<std::string> headers = r.headers;
    // curl 7.88 signs with the empty body's hash unless told.
    // Over https the payload is left unsigned, as the AWS SDKs do: TLS already protects it, and
    // hashing was half of an upload's CPU. Over plain http it is signed.
    headers.push_back(std::string("x-amz-content-sha256: ") +
                      (endpoint_.scheme == "https" && r.body.size() > 0 ? "UNSIGNED-PAYLOAD"
                                                                        : sha256_hex(r.body)));
    if (r.range) {
      headers.push_back("Range: bytes=" + std::to_string(r.range->first) + "-" +
                        (r.range->last ? std::to_string(*r.range->last) : std::string()));
      if (!r.range->if_match.empty()) headers.push_back("If-Match: \"" + r.range->if_match + "\"");
    }
    if (r.method == "HEAD") {
      lib::curl().easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (r.method == "PUT") {
      lib::curl().easy_setopt(e, CURLOPT_UPLOAD, 1L);
      lib::curl().easy_setopt(e, CURLOPT_READFUNCTION, &read_body);
      lib::curl().easy_setopt(e, CURLOPT_READDATA, &cursor);
      lib::curl().easy_setopt(e, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
      // No waiting for "100 Continue" (an empty "Expect:" header would be signed, then dropped
      // from the request by curl: a signature mismatch).
      lib::curl().easy_setopt(e, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
    } else if (r.method == "POST") {
      lib::curl().easy_setopt(e, CURLOPT_POST, 1L);
      lib::curl().easy_setopt(e, CURLOPT_POSTFIELDS, r.body.data());
      lib::curl().easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                              static_cast<curl_off_t>(r.body.size()));
    } else if (r.method != "GET") {
      lib::curl().easy_setopt(e, CURLOPT_CUSTOMREQUEST, r.method.c_str());
    }
    curl_slist* list = nullptr;
    for (const std::string& h : headers) list = lib::curl().slist_append(list, h.c_str());
    std::unique_ptr<curl_slist, void (*)(curl_slist*)> header_list(list,
                                                                   lib::curl().slist_free_all);
    lib::curl().easy_setopt(e, CURLOPT_HTTPHEADER, list);

    const CURLcode result = co_await multi_.perform(e);
    if (answer.failure) std::rethrow_exception(answer.failure);
    if (result != CURLE_OK) {
      const std::string code = result == CURLE_OPERATION_TIMEDOUT ? "Timeout"
                               : result == CURLE_COULDNT_CONNECT  ? "ConnectionFailed"
                                                                  : "RequestFailed";
      throw error(0, code, std::string(lib::curl().easy_strerror(result)) + " (" + url + ")",
                  r.about);
    }
    lib::curl().easy_getinfo(e, CURLINFO_RESPONSE_CODE, &answer.status);
    if (answer.status >= 200 && answer.status < 300) {
      if (r.range) check_range(r, answer);
      co_return answer;
    }
    if (const auto body = parse_error(answer.body)) {
      throw error(static_cast<int>(answer.status), body->code, body->message, r.about);
    }
    // No S3 error body (HEAD, a proxy's page): the status says what it can.
    const std::string code = answer.status == 404   ? "NotFound"
                             : answer.status == 403 ? "Forbidden"
                             : answer.status == 412 ? "PreconditionFailed"
                             : answer.status == 501 ? "NotImplemented"
                                                    : "HTTP" + std::to_string(answer.status);
    throw error(static_cast<int>(answer.status), code, answer.body.substr(0, 200), r.about);
  }

  // A ranged GET's 2xx must be 206 with a Content-Range that starts where asked and ends where
  // asked (or at the object's end) and a body of that length: a 200 (the whole object, the
  // range ignored) or anything else is an error, never data.
  static void check_range(const request& r, const response& answer) {
    auto wrong = [&](const std::string& why) {
      return error(static_cast<int>(answer.status), "InvalidRangeResponse", why, r.about);
    };
    if (answer.status != 206) {
      throw wrong("a ranged GET answered " + std::to_string(answer.status) + ", not 206");
    }
    const std::string header = answer.header("content-range");
    const auto range = parse_content_range(header);
    if (!range) throw wrong("a malformed Content-Range: \"" + header + "\"");
    const std::string_view text = header;
    const auto total_text = text.substr(text.find('/') + 1);
    std::optional<std::uint64_t> total;
    if (total_text != "*") total = std::strtoull(std::string(total_text).c_str(), nullptr, 10);
    std::uint64_t expected_last = r.range->last.value_or(UINT64_MAX);
    if (total && *total > 0) expected_last = std::min(expected_last, *total - 1);
    if (range->first != r.range->first || (total && range->second != expected_last) ||
        (!total && r.range->last && range->second != *r.range->last)) {
      throw wrong("Content-Range \"" + header + "\" is not the range asked for");
    }
    if (answer.body.size() != range->second - range->first + 1) {
      throw wrong("the body has " + std::to_string(answer.body.size()) +
                  " bytes, its Content-Range says " + header);
    }
  }

  asio::any_io_executor executor_;
  store_config config_;
  endpoint_parts endpoint_;
  curl_multi multi_;
  std::mt19937_64 jitter_;
  unsigned in_flight_ = 0;
  std::deque<asio::steady_timer*> waiting_;
};

}  // namespace

std::unique_ptr<object_store> make_s3_client(asio::any_io_executor executor, store_config config) {
  // Loads libcurl and libcrypto now (not at start-up); a missing one is a clear error.
  try {
    lib::curl();
    lib::crypto();
  } catch (const std::exception& e) {
    throw std::invalid_argument(std::string("S3 endpoints need libcurl and libcrypto: ") +
                                e.what());
  }
  return std::make_unique<s3_client>(executor, std::move(config));
}

}  // namespace sm::s3
