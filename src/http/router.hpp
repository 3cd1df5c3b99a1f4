// Maps (method, path) to a handler. Knows nothing of the product's routes.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <asio/awaitable.hpp>

#include "http/request.hpp"
#include "http/response.hpp"

namespace sm::http {

// Path parameters in the order of the pattern's {placeholders}, percent-decoded.
using path_params = std::vector<std::string>;
using handler = std::function<asio::awaitable<response>(const request&, const path_params&)>;

class router {
 public:
  // `pattern` is a path whose segments are literals or "{name}" (one whole, non-empty segment):
  // "/checkpoints/{id}". A GET route also answers HEAD.
  void add(std::string method, std::string_view pattern, handler h);

  struct match {
    enum class kind { found, not_found, method_not_allowed, bad_path } outcome;
    const handler* target = nullptr;  // when found
    path_params params;               // when found
    std::string allow;                // when method_not_allowed: "GET, HEAD, POST"
  };

  // Pure: looks up a path (percent-encoded, as in request::path). Segments are split on '/'
  // first and decoded after, so "%2F" inside a parameter reaches the handler as '/' (which must
  // validate it) and never matches a literal. A path not starting with '/', with a malformed
  // escape, or with an escape decoding to NUL is bad_path. "/x/" and "/x" are different paths.
  match find(std::string_view method, std::string_view path) const;

 private:
  struct route {
    std::string method;
    std::vector<std::string> segments;  // "{...}" marks a parameter
    handler target;
  };
  std::vector<route> routes_;
};

// Decodes %XX escapes; false on a malformed escape or a decoded NUL. '+' is left alone (it is
// only a space in form bodies, not in paths).
bool percent_decode(std::string_view in, std::string& out);

}  // namespace sm::http
