// The product's HTTP API (DESIGN.md 2.4): routes, authentication, JSON bodies.
#pragma once

#include <optional>
#include <string>

#include "http/server.hpp"

namespace sm::api {

class environment;

struct api_options {
  // When set, every endpoint but GET /healthz needs "Authorization: Bearer <token>".
  std::optional<std::string> token;
};

// The request handler for http::server. `env` must outlive it.
http::request_handler make_handler(environment& env, api_options options);

}  // namespace sm::api
