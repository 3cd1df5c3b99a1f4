// The object store: what every user of durable state (lease, configuration backup, database
// replication, filesystem blocks, checkpoints) writes to and reads from. Two backends implement
// it: S3 over libcurl multi (s3_client) and a local directory (file_store, `file:///...`).
// Keys given to a store are relative to its key_prefix; the store adds it.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

namespace sm::s3 {

// A failed request, typed: the HTTP status (0 when no answer came: connection refused, timeout,
// a malformed answer), the S3 error code ("NoSuchKey", "AccessDenied", "PreconditionFailed",
// "NotImplemented", "NoSuchBucket", ... or ours: "ConnectionFailed", "Timeout",
// "MalformedResponse"), and its message.
class error : public std::runtime_error {
 public:
  error(int status, std::string code, std::string message, std::string key = {});
  int status() const { return status_; }
  const std::string& code() const { return code_; }
  const std::string& message() const { return message_; }
  const std::string& key() const { return key_; }
  // Worth another try: 5xx, 429, no answer at all. Never another 4xx.
  bool retryable() const;

 private:
  int status_;
  std::string code_, message_, key_;
};

struct object_info {
  std::string key;  // relative to the store's key_prefix
  std::uint64_t size = 0;
  std::string etag;  // as the store gives it, quotes removed
  std::chrono::system_clock::time_point last_modified{};
};

struct list_page {
  std::vector<object_info> objects;
  std::vector<std::string> common_prefixes;  // with a delimiter: the "directories"
  std::string next_token;                    // empty: this was the last page
};

struct put_options {
  bool if_none_match = false;  // create only: If-None-Match: *
  std::string if_match;        // replace only this version (ETag); empty: unconditional
  std::string content_type = "application/octet-stream";
  unsigned max_attempts = 0;  // 0: the store's (store_config::max_attempts)
  // Asked again before every attempt of the write (once it has a request slot), before each
  // part of a multipart upload and before its Complete: a non-empty answer (why not) fails the
  // write with 409 "LeaseNotHeld" there, never retried. Empty: always. (DESIGN 3.2: a write
  // that queued or retried past the lease's safety margin must not land.)
  std::function<std::string()> may_write;
};

// Inclusive byte range; `last` unset: to the end. The answer is checked: exactly the bytes
// asked for (those that exist, when `last` is past the end), or an error, never other data.
struct byte_range {
  byte_range() = default;
  byte_range(std::uint64_t first_byte, std::optional<std::uint64_t> last_byte = std::nullopt,
             std::string version = {})
      : first(first_byte), last(last_byte), if_match(std::move(version)) {}

  std::uint64_t first = 0;
  std::optional<std::uint64_t> last;
  // Only from this version of the object (its ETag, as head() or a listing gave it): another
  // version fails with "PreconditionFailed" (412), so that ranges read one after another never
  // mix two versions. Empty: whichever version is there.
  std::string if_match;
};

struct store_config {
  std::string endpoint;  // http(s)://host[:port] or file:///absolute/path
  std::string bucket;
  std::string region = "us-east-1";
  std::string access_key, secret_key;
  std::string key_prefix;
  bool virtual_host = false;  // bucket.host addressing instead of host/bucket
  unsigned max_parallel = 8;  // requests in flight at once (S3)
  // A request moving less than 1 byte/s for this long is failed (and retried).
  std::chrono::milliseconds request_timeout{30000};
  // Tries of a retryable failure (5xx, 429, no answer), with exponential backoff (100 ms
  // doubling to 5 s) and full jitter: 10 rides out a store restart of ~10-20 s.
  unsigned max_attempts = 10;
  // A request that has not finished after this long is failed (and retried): a backstop for
  // bulk transfers, a deadline for a store used for short requests only (the lease's).
  std::chrono::milliseconds total_timeout{600000};
  // file://: every blocking call on a thread of its own (offload_thread) instead of the shared
  // worker, so that it never queues behind a bulk upload's copy there (the lease's store).
  bool own_thread = false;
};

// No default arguments on the coroutines: g++ 12 destroys a defaulted class-type argument of a
// coroutine call twice (a double free). The short forms below are plain functions that pass
// the defaults explicitly.
class object_store {
 public:
  virtual ~object_store() = default;

  asio::awaitable<std::string> put(std::string key, std::string body) {
    return put(std::move(key), std::move(body), put_options{});
  }
  asio::awaitable<std::string> put_file(std::string key, std::filesystem::path file) {
    return put_file(std::move(key), std::move(file), put_options{});
  }
  asio::awaitable<std::string> get(std::string key) { return get(std::move(key), std::nullopt); }
  asio::awaitable<object_info> get_file(std::string key, std::filesystem::path to) {
    return get_file(std::move(key), std::move(to), std::nullopt);
  }
  asio::awaitable<list_page> list(std::string prefix, std::string delimiter = {}) {
    return list(std::move(prefix), std::move(delimiter), std::string(), 1000);
  }

  // Returns the new object's ETag. Conditional puts fail with code "PreconditionFailed" (412)
  // when the condition does not hold, and "NotImplemented" (501) where the store cannot do
  // them (Swift's s3api).
  virtual asio::awaitable<std::string> put(std::string key, std::string body,
                                           put_options options) = 0;
  // Streamed from a file; large files go up as a multipart upload (parts in parallel, aborted
  // on failure).
  virtual asio::awaitable<std::string> put_file(std::string key, std::filesystem::path file,
                                                put_options options) = 0;
  // "NoSuchKey" (404) when absent; a range past the end is "InvalidRange" (416).
  virtual asio::awaitable<std::string> get(std::string key, std::optional<byte_range> range) = 0;
  // Streamed into `to` (written to a temporary file beside it, then renamed).
  virtual asio::awaitable<object_info> get_file(std::string key, std::filesystem::path to,
                                                std::optional<byte_range> range) = 0;
  // nullopt when absent.
  virtual asio::awaitable<std::optional<object_info>> head(std::string key) = 0;
  // Absent keys are no error.
  virtual asio::awaitable<void> remove(std::string key) = 0;
  virtual asio::awaitable<void> remove_many(std::vector<std::string> keys) = 0;
  // One page of keys under `prefix` (relative), in key order; continue with next_token.
  virtual asio::awaitable<list_page> list(std::string prefix, std::string delimiter,
                                          std::string continuation, unsigned max_keys) = 0;
  // Server-side copy; returns the copy's ETag.
  virtual asio::awaitable<std::string> copy(std::string from, std::string to) = 0;
  // The store answers, the credentials are accepted and the bucket exists (or, for file://,
  // can be created). Throws error otherwise.
  virtual asio::awaitable<void> check() = 0;
};

// The backend the endpoint names: file:// or http(s)://. Throws std::invalid_argument for an
// endpoint it cannot use.
std::unique_ptr<object_store> make_store(asio::any_io_executor executor, store_config config);

}  // namespace sm::s3
