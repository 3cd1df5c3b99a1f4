#include "api/routes.hpp"

#include <sys/stat.h>

#include <memory>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "api/control.hpp"
#include "api/environment.hpp"
#include "async/event_bus.hpp"
#include "async/offload.hpp"
#include "base/secret.hpp"
#include "checkpoint/checkpoint_id.hpp"
#include "checkpoint/local_store.hpp"
#include "checkpoint/remote.hpp"
#include "s3/object_store.hpp"

namespace sm::api {

using json = nlohmann::json;
using http::error_response;
using http::request;
using http::response;

namespace {

response json_response(int status, const json& body) {
  response r;
  r.status = status;
  // Replace, never throw, should a non-UTF-8 byte ever reach an answer.
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  r.body += '\n';
  return r;
}

response json_error(int status, std::string message, json extra = json::object()) {
  extra["error"] = std::move(message);
  return json_response(status, extra);
}

// No request body nests deeper: the parser and the destructor of nlohmann::json 3.11 do not
// recurse (a 1 MiB "[[[[..." parses to a 400 without harm), but copying, comparing and dumping a
// document do, once per level.
constexpr int max_json_depth = 64;

// Whether `text` opens more than `limit` arrays or objects at once, strings skipped: a scan
// rather than a parser callback, whose parser (nlohmann 3.11's callback parser) looks through
// every member of an object at each member's end: 14 s for a 1 MB object of 28,000 members.
bool nested_deeper_than(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // whatever is escaped, it does not end the string
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return true;
    } else if (c == ']' || c == '}') {
      --depth;  // unbalanced text is the parser's to refuse
    }
  }
  return false;
}

// The body as JSON. curl -d sends "application/x-www-form-urlencoded", and the specification's
// own examples use it, so the content type is not checked: the body must simply be JSON.
// An empty body is `empty_as` when given, an error otherwise.
std::optional<json> parse_body(const request& req, response& error,
                               std::optional<json> empty_as = std::nullopt) {
  if (req.body.find_first_not_of(" \t\r\n") == std::string::npos) {
    if (empty_as) return empty_as;
    error = json_error(400, "the request body is empty; expected a JSON object");
    return std::nullopt;
  }
  if (nested_deeper_than(req.body, max_json_depth)) {
    error = json_error(
        400, "invalid JSON: nested deeper than " + std::to_string(max_json_depth) + " levels");
    return std::nullopt;
  }
  try {
    json body = json::parse(req.body);
    if (!body.is_object()) {
      error = json_error(400, "the request body must be a JSON object");
      return std::nullopt;
    }
    return body;
  } catch (const json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at ...": keep the readable part.
    std::string what = e.what();
    const std::size_t bracket = what.find("] ");
    if (bracket != std::string::npos) what.erase(0, bracket + 2);
    error = json_error(400, "invalid JSON: " + what);
    return std::nullopt;
  }
}

response not_configured() {
  return json_error(400, "not configured: apply a configuration with POST /config first");
}

response not_built(std::string what) {
  return json_error(501, std::move(what) + " not built yet in this version of state-manager");
}

// Reads {"id": ...}: the id, or nullopt with `error` set. A missing id is "" when allowed.
std::optional<std::string> checkpoint_id_of(const json& body, bool required, response& error) {
  if (!body.contains("id")) {
    if (!required) return std::string();
    error = json_error(400, "\"id\" is required");
    return std::nullopt;
  }
  const json& id = body["id"];
  if (!id.is_string()) {
    error = json_error(400, "invalid checkpoint id: must be a string",
                       {{"rule", checkpoint::checkpoint_id_rule}});
    return std::nullopt;
  }
  const std::string& text = id.get_ref<const std::string&>();
  if (!checkpoint::valid_checkpoint_id(text)) {
    error = json_error(400, "invalid checkpoint id",
                       {{"id", text}, {"rule", checkpoint::checkpoint_id_rule}});
    return std::nullopt;
  }
  return text;
}

bool authorized(const request& req, const std::string& token) {
  std::optional<std::string_view> header = req.header("authorization");
  if (!header || header->size() < 7 || !http::iequals(header->substr(0, 7), "bearer ")) {
    return false;
  }
  std::string_view given = header->substr(7);
  while (!given.empty() && given.front() == ' ') given.remove_prefix(1);
  return constant_time_equal(given, token);
}

// 401 for a request that needs the token and lacks it; nullopt otherwise. GET and HEAD
// /healthz never need it.
std::optional<response> refuse_unauthorized(const request& req, const api_options& options) {
  const bool health = req.path == "/healthz" && (req.method == "GET" || req.method == "HEAD");
  if (!options.token || health || authorized(req, *options.token)) return std::nullopt;
  response r = json_error(401, "unauthorized: send \"Authorization: Bearer <token>\"");
  r.with_header("WWW-Authenticate", "Bearer realm=\"state-manager\"");
  return r;
}

// GET / "checkpoints".
json summary_of(const std::vector<checkpoint::manifest>& all) {
  return {{"count", all.size()}, {"latest", all.empty() ? json(nullptr) : json(all.back().id)}};
}

class api {
 public:
  api(environment& env, control& system, api_options options)
      : env_(env), system_(system), options_(std::move(options)) {
    // Once, before anything is served (start-up may block); kept current by the routes.
    env_.set_checkpoints_summary(
        summary_of(checkpoint::local_store(env_.paths().checkpoints_dir()).list()));
    using http::path_params;
    auto route = [this](const char* method, const char* path, auto member) {
      routes_.add(method, path, [this, member](const request& req, const path_params& params) {
        return (this->*member)(req, params);
      });
    };
    route("GET", "/", &api::get_status);
    route("GET", "/healthz", &api::get_health);
    route("GET", "/config", &api::get_config);
    route("POST", "/config", &api::post_config);
    route("POST", "/checkpoint", &api::post_checkpoint);
    route("POST", "/restore", &api::post_restore);
    route("POST", "/release-lease", &api::post_release_lease);
    route("GET", "/checkpoints", &api::get_checkpoints);
    route("GET", "/checkpoints/{id}", &api::get_checkpoint);
    route("DELETE", "/checkpoints/{id}", &api::delete_checkpoint);
    route("GET", "/events", &api::get_events);
    route("GET", "/metrics", &api::get_metrics);
  }

  asio::awaitable<response> handle(const request& req) {
    if (std::optional<response> refusal = refuse_unauthorized(req, options_)) co_return *refusal;
    co_return co_await http::dispatch(routes_, req);
  }

 private:
  using params = http::path_params;

  asio::awaitable<response> get_status(const request&, const params&) {
    co_return json_response(200, env_.status());
  }

  asio::awaitable<response> get_health(const request&, const params&) {
    // Answering at all proves the executor turns; nothing here may block or fail.
    response r;
    r.body = "{\"status\":\"ok\"}\n";
    co_return r;
  }

  asio::awaitable<response> get_config(const request&, const params&) {
    const config::configuration* current = env_.current();
    if (!current) co_return json_error(404, "not configured");
    co_return json_response(200, config::to_redacted_json(*current));
  }

  asio::awaitable<response> post_config(const request& req, const params&) {
    if (env_.configured()) co_return already_configured();
    response error;
    std::optional<json> body = parse_body(req, error);
    if (!body) co_return error;
    environment::apply_result result = co_await env_.apply(*body);
    using kind = environment::apply_result::kind;
    switch (result.outcome) {
      case kind::applied: {
        // Applied and saved; what came of starting the components (a database that could not
        // be restored or is not a database, say) is told at once, as GET / would.
        const json status = env_.status();
        co_return json_response(200, {{"configured", true},
                                      {"config", config::to_redacted_json(*env_.current())},
                                      {"state", status["state"]},
                                      {"components", status["components"]}});
      }
      case kind::already_configured:
        co_return already_configured();
      case kind::busy:
        co_return json_error(409, "a configuration is being applied");
      case kind::invalid:
        co_return json_response(400, config::problems_to_json(result.problems));
      case kind::failed:
        co_return json_error(500, result.message);
      case kind::storage_failed: {
        // The store's own code and message, where the operator can act on them; nothing saved.
        using problem = environment::apply_result::store_problem;
        const auto [status, error] = result.store == problem::shutting_down
                                         ? std::pair(503, "state-manager is shutting down")
                                     : result.store == problem::unreachable
                                         ? std::pair(502, "object store unreachable")
                                         : std::pair(400, "object store refused the configuration");
        co_return json_response(
            status,
            {{"error", error},
             {"details",
              json::array(
                  {{{"path", "storage"}, {"code", result.code}, {"message", result.message}}})}});
      }
      case kind::lease_held:
        co_return json_error(409, "the environment is held by another state-manager",
                             {{"holder", result.holder},
                              {"expires_at", result.holder_until},
                              {"message", result.message}});
    }
    co_return json_error(500, "unexpected outcome");
  }

  static response already_configured() {
    return json_error(400,
                      "already configured: a configuration cannot be changed once applied; "
                      "to change it, stop state-manager, remove tmp/config.json and start again");
  }

  asio::awaitable<response> post_checkpoint(const request& req, const params&) {
    if (!env_.configured()) co_return not_configured();
    response error;
    std::optional<json> body = parse_body(req, error, json::object());
    if (!body) co_return error;
    std::optional<std::string> id = checkpoint_id_of(*body, /*required=*/false, error);
    if (!id) co_return error;
    if (releasing_) co_return json_error(409, "the lease is being released");
    if (const std::string why = system_.fenced(); !why.empty()) co_return lease_not_held(why);
    const checkpoint::create_outcome made = co_await system_.create_checkpoint(*id);
    using kind = checkpoint::create_outcome::kind;
    switch (made.outcome) {
      case kind::created: {
        std::vector<checkpoint::manifest> all;
        const checkpoint::local_store store(env_.paths().checkpoints_dir());
        co_await offload([&] { all = store.list(); });
        env_.set_checkpoints_summary(summary_of(all));
        co_return json_response(200, {{"id", made.id},
                                      {"manifest", checkpoint::to_json(made.made)},
                                      {"upload", env_.upload_status(made.id)}});
      }
      case kind::id_taken:
        co_return json_error(409, "a checkpoint with this id exists", {{"id", made.id}});
      case kind::busy:
        co_return busy();
      case kind::shutting_down:
        co_return shutting_down();
      case kind::fenced:
        co_return lease_not_held(made.error);
      case kind::failed:
      case kind::no_space:
        co_return json_error(made.outcome == kind::no_space ? 507 : 500,
                             "checkpoint failed: " + made.error, {{"id", made.id}});
    }
    co_return json_error(500, "unexpected outcome");
  }

  response busy() const {
    return json_error(409, "another checkpoint or restore is running",
                      {{"operation", system_.operation_status()}});
  }
  static response shutting_down() { return json_error(503, "state-manager is shutting down"); }
  // DESIGN 3.2: after a release or a loss nothing is written to the store until a restart.
  static response lease_not_held(const std::string& why) {
    return json_error(409, "lease not held", {{"reason", why}});
  }

  asio::awaitable<response> post_restore(const request& req, const params&) {
    if (!env_.configured()) co_return not_configured();
    response error;
    std::optional<json> body = parse_body(req, error);
    if (!body) co_return error;
    std::optional<std::string> id = checkpoint_id_of(*body, /*required=*/true, error);
    if (!id) co_return error;
    if (const std::string why = system_.fenced(); !why.empty()) co_return lease_not_held(why);
    // Whether it exists is known before anything is stopped for it.
    const std::filesystem::path dir = env_.paths().checkpoints_dir() / *id;
    bool exists = false;
    co_await offload([&] {
      struct stat st {};
      exists = ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    });
    // Not here: perhaps in the store (made on another machine); the restore downloads it.
    if (!exists && env_.store()) {
      exists = co_await checkpoint::exists_remotely(*env_.store(), *id);
    }
    if (!exists) co_return json_error(404, "no such checkpoint", {{"id", *id}});
    if (releasing_) co_return json_error(409, "the lease is being released");
    const checkpoint::restore_outcome r = co_await system_.restore_checkpoint(*id);
    using kind = checkpoint::restore_outcome::kind;
    switch (r.outcome) {
      case kind::restored:
        co_return json_response(200, {{"id", r.id},
                                      {"restored", checkpoint::to_json(*r.restored)},
                                      {"took_ms", r.took_ms},
                                      {"dropped_privileged", r.dropped_privileged}});
      case kind::busy:
        co_return busy();
      case kind::shutting_down:
        co_return shutting_down();
      case kind::fenced:
        co_return lease_not_held(r.error);
      case kind::not_found:
        co_return json_error(404, "no such checkpoint (or its manifest is unreadable)",
                             {{"id", r.id}});
      case kind::download_failed:
        co_return json_error(502, "could not download the checkpoint: " + r.error, {{"id", r.id}});
      case kind::damaged:
        co_return json_error(500, r.error + "; nothing was changed", {{"id", r.id}});
      case kind::failed:
      case kind::no_space:
        co_return json_error(r.outcome == kind::no_space ? 507 : 500,
                             "restore failed, the state before it is back: " + r.error,
                             {{"id", r.id}});
    }
    co_return json_error(500, "unexpected outcome");
  }

  asio::awaitable<response> post_release_lease(const request&, const params&) {
    if (!env_.configured()) co_return not_configured();
    if (releasing_) co_return json_error(409, "the lease is being released");
    releasing_ = true;
    release_outcome out;
    std::string failure;
    try {
      out = co_await system_.release_lease();
    } catch (const std::exception& e) {
      failure = e.what();
    }
    releasing_ = false;
    if (!failure.empty()) co_return json_error(500, "release failed: " + failure);
    using kind = release_outcome::kind;
    switch (out.outcome) {
      case kind::released:
        // Released now, or not held to begin with (already released, or lost): either way
        // nobody here holds it any more.
        co_return json_response(200, {{"released", out.was_held},
                                      {"flushed", std::move(out.flushed)},
                                      {"lease", env_.status()["lease"]}});
      case kind::incomplete:
        co_return json_error(503,
                             "not released: part of the state is not in the store; the lease "
                             "is kept and everything runs again, try again later",
                             {{"released", false},
                              {"missing", std::move(out.missing)},
                              {"flushed", std::move(out.flushed)},
                              {"lease", env_.status()["lease"]}});
      case kind::lost:
        co_return json_error(409, "lease not held",
                             {{"reason", system_.fenced()},
                              {"released", false},
                              {"missing", std::move(out.missing)},
                              {"flushed", std::move(out.flushed)}});
      case kind::starting:
        co_return json_error(409,
                             "the components are starting; release once they are up (GET / says)");
      case kind::shutting_down:
        co_return shutting_down();
    }
    co_return json_error(500, "unexpected outcome");
  }

  // The checkpoints on this machine (tmp/checkpoints/), oldest first, then those only in the
  // object store (made on another machine; a restore downloads them), each with its
  // "location". A store that cannot be listed leaves its part out and says why.
  asio::awaitable<response> get_checkpoints(const request&, const params&) {
    std::vector<checkpoint::manifest> all;
    const checkpoint::local_store store(env_.paths().checkpoints_dir());
    co_await offload([&] { all = store.list(); });
    json list = json::array();
    std::set<std::string> here;
    for (const auto& m : all) {
      json item = checkpoint::to_json(m);
      item["location"] = "local";
      item["upload"] = env_.upload_status(m.id);
      list.push_back(std::move(item));
      here.insert(m.id);
    }
    env_.set_checkpoints_summary(summary_of(all));
    json out = json::object();
    if (s3::object_store* objects = env_.store()) {
      try {
        for (const auto& m : co_await checkpoint::list_remote(*objects, here)) {
          json item = checkpoint::to_json(m);
          item["location"] = "store";
          item["upload"] = nullptr;
          list.push_back(std::move(item));
        }
        out["store_error"] = nullptr;
      } catch (const std::exception& e) {
        out["store_error"] = e.what();
      }
    }
    out["count"] = list.size();
    out["checkpoints"] = std::move(list);
    co_return json_response(200, std::move(out));
  }

  asio::awaitable<response> get_checkpoint(const request&, const params& ids) {
    const std::string& id = ids.front();
    if (!checkpoint::valid_checkpoint_id(id)) co_return invalid_id(id);
    std::optional<checkpoint::manifest> m;
    const checkpoint::local_store store(env_.paths().checkpoints_dir());
    co_await offload([&] { m = store.read(id); });
    const char* location = "local";
    if (!m && env_.store()) {
      try {
        m = co_await checkpoint::read_remote(*env_.store(), id);
      } catch (const std::exception& e) {
        co_return json_error(502, std::string("cannot read the object store: ") + e.what(),
                             {{"id", id}});
      }
      location = "store";
    }
    if (!m) co_return json_error(404, "no such checkpoint", {{"id", id}});
    json out = checkpoint::to_json(*m);
    out["location"] = location;
    out["upload"] = env_.upload_status(id);
    co_return json_response(200, std::move(out));
  }

  // Removes a checkpoint here, and its copy in the object store if there is one.
  asio::awaitable<response> delete_checkpoint(const request&, const params& ids) {
    const std::string& id = ids.front();
    if (!checkpoint::valid_checkpoint_id(id)) co_return invalid_id(id);
    // The store's copy may be the next owner's to use now; the local one goes with it.
    if (const std::string why = system_.fenced(); !why.empty()) co_return lease_not_held(why);
    // In use: being uploaded (deleting under the upload would leave half of it in the store),
    // or being made or restored.
    const json upload = env_.upload_status(id);
    if (upload.is_object() && (upload["state"] == "pending" || upload["state"] == "uploading")) {
      co_return json_error(409, "the checkpoint is being uploaded; try again once it is done",
                           {{"id", id}, {"upload", upload}});
    }
    const json operation = system_.operation_status();
    if (operation.is_object() && operation.value("id", "") == id) {
      co_return json_error(409, "the checkpoint is in use", {{"id", id}, {"operation", operation}});
    }
    const checkpoint::local_store store(env_.paths().checkpoints_dir());
    bool removed = false;
    std::vector<checkpoint::manifest> left;
    std::string failure;
    co_await offload_bulk([&] {  // 10,000 files take a while to remove
      try {
        removed = store.remove(id);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      left = store.list();
    });
    if (!failure.empty()) co_return json_error(500, "could not delete the checkpoint: " + failure);
    std::size_t remote = 0;
    if (s3::object_store* objects = env_.store()) {
      const std::string prefix = "checkpoints/" + id + "/";
      std::vector<std::string> keys;
      std::string token;
      do {
        s3::list_page page = co_await objects->list(prefix, std::string(), token, 1000);
        for (const auto& o : page.objects) keys.push_back(o.key);
        token = page.next_token;
      } while (!token.empty());
      // The manifest first: once it is gone no one takes the rest for a whole checkpoint, even
      // if the removal stops half-way.
      remote = keys.size();
      const std::string manifest = prefix + "manifest.json";
      if (std::erase(keys, manifest) > 0) co_await objects->remove(manifest);
      if (!keys.empty()) co_await objects->remove_many(keys);
    }
    env_.set_checkpoints_summary(summary_of(left));
    if (!removed && remote == 0) co_return json_error(404, "no such checkpoint", {{"id", id}});
    co_return json_response(200, {{"deleted", id}, {"local", removed}, {"remote_objects", remote}});
  }

  static response invalid_id(const std::string& id) {
    return json_error(400, "invalid checkpoint id",
                      {{"id", id}, {"rule", checkpoint::checkpoint_id_rule}});
  }
  // Server-Sent Events: every state change, as it happens, until the client leaves or
  // state-manager stops.
  asio::awaitable<response> get_events(const request&, const params&) {
    if (!options_.events) co_return not_built("the event stream is");
    response r;
    r.content_type = "text/event-stream";
    r.with_header("Cache-Control", "no-cache");
    auto subscription = options_.events->subscribe();
    const auto heartbeat = options_.events_heartbeat;
    r.stream = [subscription, heartbeat](http::stream_writer& out) -> asio::awaitable<void> {
      // A first line at once, so that the client knows the stream is open.
      if (!co_await out.write(": state-manager events\n\n")) co_return;
      for (;;) {
        const auto item = co_await subscription->next(heartbeat);
        using kind = event_bus::subscription::item::kind;
        if (item.what == kind::closed) co_return;
        const std::string_view text =
            item.what == kind::event ? std::string_view(item.text) : ": keep-alive\n\n";
        if (!co_await out.write(text)) co_return;
      }
    };
    co_return r;
  }
  asio::awaitable<response> get_metrics(const request&, const params&) {
    response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body =
        "# HELP state_manager_configured 1 once a configuration is applied.\n"
        "# TYPE state_manager_configured gauge\n"
        "state_manager_configured ";
    r.body += env_.configured() ? "1\n" : "0\n";
    r.body += system_.metrics();
    co_return r;
  }

  environment& env_;
  control& system_;
  bool releasing_ = false;  // a POST /release-lease is at work
  api_options options_;
  http::router routes_;
};

}  // namespace

http::head_check make_head_check(api_options options) {
  return [options = std::move(options)](const request& head) {
    return refuse_unauthorized(head, options);
  };
}

http::request_handler make_handler(environment& env, control& system, api_options options) {
  auto shared = std::make_shared<api>(env, system, std::move(options));
  return [shared](const request& req) { return shared->handle(req); };
}

}  // namespace sm::api
