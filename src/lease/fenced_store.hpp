// The object store as every writer of the environment's state sees it: reads go through as they
// are; a write (put, put_file, remove, remove_many, copy) goes through only while `may_write`
// says so, and otherwise fails with s3::error 409 "LeaseNotHeld" without reaching the store.
// DESIGN 3.2: nothing writes under the prefix unless the lease is held and not about to expire.
// The fencing of the components stops the writers; this is the rule kept in one place, for the
// write a fence does not reach in time. A put is asked again before every attempt, part and
// Complete (put_options::may_write), so one that queued or retried past the margin fails then;
// a remove or copy is checked when it is called.
// The lease itself writes through the inner store.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "s3/object_store.hpp"

namespace sm::lease {

class fenced_store final : public s3::object_store {
 public:
  // `may_write` returns why not (empty: it may).
  fenced_store(std::unique_ptr<s3::object_store> inner, std::function<std::string()> may_write);

  s3::object_store& inner() { return *inner_; }

  using s3::object_store::get;
  using s3::object_store::get_file;
  using s3::object_store::list;
  using s3::object_store::put;
  using s3::object_store::put_file;
  asio::awaitable<std::string> put(std::string key, std::string body,
                                   s3::put_options options) override;
  asio::awaitable<std::string> put_file(std::string key, std::filesystem::path file,
                                        s3::put_options options) override;
  asio::awaitable<std::string> get(std::string key,
                                   std::optional<s3::byte_range> range) override;
  asio::awaitable<s3::object_info> get_file(std::string key, std::filesystem::path to,
                                            std::optional<s3::byte_range> range) override;
  asio::awaitable<std::optional<s3::object_info>> head(std::string key) override;
  asio::awaitable<void> remove(std::string key) override;
  asio::awaitable<void> remove_many(std::vector<std::string> keys) override;
  asio::awaitable<s3::list_page> list(std::string prefix, std::string delimiter,
                                      std::string continuation, unsigned max_keys) override;
  asio::awaitable<std::string> copy(std::string from, std::string to) override;
  asio::awaitable<void> check() override;

 private:
  // Throws the 409 when a write may not go.
  void allow(const std::string& key) const;
  // Makes the store ask again before every attempt (put_options::may_write).
  void guard(s3::put_options& options) const;

  std::unique_ptr<s3::object_store> inner_;
  std::function<std::string()> may_write_;
};

}  // namespace sm::lease
