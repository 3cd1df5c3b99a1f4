#include "lease/fenced_store.hpp"

namespace sm::lease {

fenced_store::fenced_store(std::unique_ptr<s3::object_store> inner,
                           std::function<std::string()> may_write)
    : inner_(std::move(inner)), may_write_(std::move(may_write)) {}

void fenced_store::allow(const std::string& key) const {
  if (std::string why = may_write_(); !why.empty()) {
    throw s3::error(409, "LeaseNotHeld", "not written: " + why, key);
  }
}

void fenced_store::guard(s3::put_options& options) const {
  // Asked again at every attempt and part (S3): a write that waited for a slot or retried past
  // the lease's margin fails there instead of landing.
  options.may_write = [may = may_write_, also = std::move(options.may_write)]() {
    if (std::string why = may(); !why.empty()) return why;
    return also ? also() : std::string();
  };
}

asio::awaitable<std::string> fenced_store::put(std::string key, std::string body,
                                               s3::put_options options) {
  allow(key);
  guard(options);
  co_return co_await inner_->put(std::move(key), std::move(body), std::move(options));
}

asio::awaitable<std::string> fenced_store::put_file(std::string key, std::filesystem::path file,
                                                    s3::put_options options) {
  allow(key);
  guard(options);
  co_return co_await inner_->put_file(std::move(key), std::move(file), std::move(options));
}

asio::awaitable<std::string> fenced_store::get(std::string key,
                                               std::optional<s3::byte_range> range) {
  co_return co_await inner_->get(std::move(key), std::move(range));
}

asio::awaitable<s3::object_info> fenced_store::get_file(std::string key, std::filesystem::path to,
                                                        std::optional<s3::byte_range> range) {
  co_return co_await inner_->get_file(std::move(key), std::move(to), std::move(range));
}

asio::awaitable<std::optional<s3::object_info>> fenced_store::head(std::string key) {
  co_return co_await inner_->head(std::move(key));
}

asio::awaitable<void> fenced_store::remove(std::string key) {
  allow(key);
  co_await inner_->remove(std::move(key));
}

asio::awaitable<void> fenced_store::remove_many(std::vector<std::string> keys) {
  allow(keys.empty() ? std::string() : keys.front());
  co_await inner_->remove_many(std::move(keys));
}

asio::awaitable<s3::list_page> fenced_store::list(std::string prefix, std::string delimiter,
                                                  std::string continuation, unsigned max_keys) {
  co_return co_await inner_->list(std::move(prefix), std::move(delimiter),
                                  std::move(continuation), max_keys);
}

asio::awaitable<std::string> fenced_store::copy(std::string from, std::string to) {
  allow(to);
  co_return co_await inner_->copy(std::move(from), std::move(to));
}

asio::awaitable<void> fenced_store::check() { co_await inner_->check(); }

}  // namespace sm::lease
