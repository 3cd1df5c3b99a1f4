// The product's HTTP API: routes, authentication, JSON bodies.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "http/server.hpp"

namespace sm {
class event_bus;
}

namespace sm::api {

class control;
class environment;

struct api_options {
  // When set, every endpoint but GET /healthz needs "Authorization: Bearer <token>".
  std::optional<std::string> token;
  // What GET /events streams (Server-Sent Event frames); null: 501.
  event_bus* events = nullptr;
  // How often GET /events sends a comment when nothing happens, so that dead clients and
  // proxies' idle timeouts are found out.
  std::chrono::milliseconds events_heartbeat = std::chrono::seconds(15);
};

// The request handler for http::server. `env` and `system` must outlive it.
http::request_handler make_handler(environment& env, control& system, api_options options);
// The head check for http::server: refuses a request without the token before its body.
http::head_check make_head_check(api_options options);

}  // namespace sm::api
