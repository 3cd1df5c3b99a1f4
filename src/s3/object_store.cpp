#include "s3/object_store.hpp"

#include "s3/file_store.hpp"
#include "s3/s3_client.hpp"

namespace sm::s3 {

namespace {
std::string what_of(int status, const std::string& code, const std::string& message,
                    const std::string& key) {
  std::string text = code;
  if (status != 0) text += " (HTTP " + std::to_string(status) + ")";
  if (!key.empty()) text += " for \"" + key + "\"";
  if (!message.empty()) text += ": " + message;
  return text;
}
}  // namespace

error::error(int status, std::string code, std::string message, std::string key)
    : std::runtime_error(what_of(status, code, message, key)),
      status_(status),
      code_(std::move(code)),
      message_(std::move(message)),
      key_(std::move(key)) {}

bool error::retryable() const {
  if (status_ == 0) return true;  // no answer (refused, reset, timed out): try again
  return (status_ >= 500 && status_ != 501) || status_ == 429;
}

std::unique_ptr<object_store> make_store(asio::any_io_executor executor, store_config config) {
  const std::string_view endpoint = config.endpoint;
  if (endpoint.starts_with("file://")) {
    std::filesystem::path root(std::string(endpoint.substr(7)));
    if (!root.is_absolute()) {
      throw std::invalid_argument("file:// endpoint needs an absolute path: " + config.endpoint);
    }
    return make_file_store(executor, std::move(root), std::move(config));
  }
  if (endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
    return make_s3_client(executor, std::move(config));
  }
  throw std::invalid_argument("unsupported endpoint: " + config.endpoint);
}

}  // namespace sm::s3
