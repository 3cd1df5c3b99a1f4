#include "api/environment.hpp"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "async/offload.hpp"
#include "base/file.hpp"
#include "version.h"

namespace sm::api {

using json = nlohmann::json;

namespace {

// Every component named in `stacks` that this build cannot run yet. Each later issue removes
// its component from here; until then, asking for it is an honest 501, never a pretend start.
std::optional<environment::apply_result> not_built_yet(const config::configuration& config) {
  for (const std::string& stack : config.stacks) {
    std::string message;
    if (stack == config::database_stack) {
      message = "the database component (SQLite replicated to object storage) is not built yet";
    } else if (stack == config::filesystem_stack) {
      message = "the filesystem component (FUSE over object storage) is not built yet";
    } else {
      continue;  // a component declared under "components": supervised
    }
    return environment::apply_result(environment::apply_result::kind::not_built, message, stack);
  }
  return std::nullopt;
}

}  // namespace

environment::environment(environment_paths paths, config::environment_lookup env)
    : paths_(std::move(paths)), env_(std::move(env)) {}

environment::load_report environment::load_saved() {
  load_report report;
  const std::filesystem::path file = paths_.config_file();
  // Whatever is wrong with the file, start-up goes on unconfigured: PID 1 must come up and
  // serve, so that the operator can see why. The file is moved aside if it can be; if not
  // (a read-only tmp/, say), it stays where it is and the report says so.
  auto set_aside = [&](std::string reason) {
    report.outcome = load_report::kind::set_aside;
    report.reason = std::move(reason);
    try {
      report.aside = set_file_aside(file, ".invalid");
    } catch (const std::system_error& e) {
      report.reason += std::string("; could not be moved aside, left in place: ") + e.what();
    }
    return report;
  };

  std::optional<std::string> text;
  try {
    text = read_file(file);
  } catch (const std::system_error& e) {
    return set_aside(std::string("unreadable: ") + e.what());
  }
  if (!text) return report;

  json document = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return set_aside("not valid JSON");
  config::parse_result parsed = config::parse(document, env_);
  if (!parsed.config) {
    report.problems = parsed.problems;
    return set_aside("invalid configuration");
  }
  if (auto missing = not_built_yet(*parsed.config)) return set_aside(missing->message);
  config_ = std::move(parsed.config);
  report.outcome = load_report::kind::loaded;
  return report;
}

asio::awaitable<environment::apply_result> environment::apply(const json& document) {
  using kind = apply_result::kind;
  if (config_) co_return apply_result(kind::already_configured);
  if (applying_) co_return apply_result(kind::busy);

  config::parse_result parsed = config::parse(document, env_);
  if (!parsed.config) {
    apply_result invalid(kind::invalid);
    invalid.problems = std::move(parsed.problems);
    co_return invalid;
  }
  if (auto missing = not_built_yet(*parsed.config)) co_return *missing;

  // What is saved is the document as submitted: {"$env": ...} references stay references, so
  // secrets taken from the environment never reach the disk.
  applying_ = true;
  const std::filesystem::path file = paths_.config_file();
  std::string failure;
  try {
    const std::string text = document.dump(2) + "\n";
    co_await offload([&] { write_file_atomically(file, text, 0600); });
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (!failure.empty()) {
    // The write may have failed after its rename (fsync of the directory): take the file
    // back out, so that the next start does not apply what this one refused.
    try {
      co_await offload([&] { ::unlink(file.c_str()); });
    } catch (const std::exception&) {
    }
    applying_ = false;
    co_return apply_result(kind::failed, "could not save the configuration: " + failure);
  }
  config_ = std::move(parsed.config);
  // Configured from here on (a second POST is refused), but the answer waits for the
  // components to be started.
  try {
    if (initialise_components) co_await initialise_components(*config_);
  } catch (...) {
    applying_ = false;  // never leave later requests answered 409 forever
    throw;
  }
  applying_ = false;
  if (on_applied) on_applied();
  co_return apply_result(kind::applied);
}

json environment::status() const {
  return {
      {"configured", configured()},
      {"state", state_view     ? state_view()
                : configured() ? "running"
                               : "unconfigured"},
      {"process", process_view ? process_view() : json(nullptr)},
      {"components", components_view ? components_view() : json::object()},
      {"lease", nullptr},
      {"operation", nullptr},
      // null until checkpoints exist: a count nobody computed would answer as if they did.
      {"checkpoints", nullptr},
      {"version", STATE_MANAGER_VERSION},
  };
}

}  // namespace sm::api
