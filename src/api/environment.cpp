#include "api/environment.hpp"

#include "api/control.hpp"

#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "async/offload.hpp"
#include "base/crash_point.hpp"
#include "base/file.hpp"
#include "base/duration.hpp"
#include "base/log.hpp"
#include "base/secret.hpp"
#include "lease/fenced_store.hpp"
#include "lease/lease.hpp"
#include "s3/object_store.hpp"
#include "version.h"

namespace sm::api {

using json = nlohmann::json;

namespace {

// Where env_dir may not go: our own directories, relative ones as the working directory makes
// them (taken once: state-manager never changes it).
config::own_paths own_paths_of(const environment_paths& paths) {
  config::own_paths own;
  std::error_code ec;
  own.working_dir = std::filesystem::current_path(ec);  // empty if unknown
  own.data_dir = paths.data_dir;
  own.tmp_dir = paths.tmp_dir;
  return own;
}

// The store's keys that came from the environment leave it now, kept in memory for a later read
// (config::process_environment looks there first): COMMAND and the components, started after
// this, never inherit them, and /proc/<pid>/environ no longer shows them.
void take_key_variables(const config::configuration& config) {
  for (const std::string& name : config.storage.key_variables) take_environment_secret(name);
}

}  // namespace

environment::environment(environment_paths paths, storage_settings storage,
                         config::environment_lookup env)
    : paths_(std::move(paths)),
      own_(own_paths_of(paths_)),
      env_(std::move(env)),
      storage_(std::move(storage)) {}

environment::~environment() {
  *alive_ = false;
  lease_.reset();  // before the store it uses
}

std::string environment::config_backup_problem() const {
  if (!store_ || backup_.state == "done" || backup_.state == "none") return {};
  return backup_.last_error.empty() ? "not written yet" : backup_.last_error;
}

bool environment::lease_held() const {
  return lease_ && lease_->held();
}

bool environment::lease_taken_over() const {
  return lease_ && !lease_->previous_owner().empty() && lease_->previous_owner() != lease_->owner();
}

void environment::shut_down() {
  stopping_ = true;
  for (asio::steady_timer* t : pauses_) t->cancel();
}

asio::awaitable<void> environment::pause(duration d) {
  if (stopping_) co_return;
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  pauses_.push_back(&timer);
  std::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  std::erase(pauses_, &timer);
}

asio::awaitable<std::optional<environment::apply_result>> environment::claim(
    const config::configuration& config, std::function<bool()> stop) {
  using kind = apply_result::kind;
  const auto executor = co_await asio::this_coro::executor;
  s3::store_config sc;
  sc.endpoint = config.storage.endpoint;
  sc.bucket = config.storage.bucket;
  sc.region = config.storage.region;
  sc.access_key = config.storage.access_key;
  sc.secret_key = config.storage.secret_key;
  sc.key_prefix = config.storage.key_prefix;
  sc.virtual_host = config.storage.virtual_host;
  std::unique_ptr<s3::object_store> store, lease_store;
  try {
    store = s3::make_store(executor, sc);
    // Renewals never queue behind bulk traffic: the lease has a store of its own.
    lease_store = lease::make_store(executor, sc, storage_.lease_ttl);
  } catch (const std::exception& e) {
    apply_result failed(kind::storage_failed, e.what());
    failed.store = apply_result::store_problem::refused;
    failed.code = "InvalidEndpoint";
    co_return failed;
  }
  if (storage_.owner.empty()) {
    co_await offload([&] { storage_.owner = lease::owner_id(paths_.owner_file().string()); });
  }
  auto held =
      std::make_unique<lease::lease>(executor, *lease_store, storage_.owner, storage_.lease_ttl);
  bool logged_wait = false;
  for (;;) {
    std::optional<apply_result> failure;
    if (stopping_ || (stop && stop())) {
      failure.emplace(kind::storage_failed, "state-manager is shutting down");
      failure->store = apply_result::store_problem::shutting_down;
      failure->code = "ShuttingDown";
      co_return failure;
    }
    bool wait = false;
    try {
      co_await store->check();
      co_await held->acquire();
    } catch (const lease::held_elsewhere& h) {
      if (storage_.wait_for_lease) {
        wait = true;
        if (!logged_wait) log::info("waiting for the lease", {{"held_by", h.holder().owner}});
        logged_wait = true;
      } else {
        failure.emplace(kind::lease_held, h.what());
        failure->holder = h.holder().owner;
        failure->holder_until = format_rfc3339(h.holder().expires_at, true);
      }
    } catch (const s3::error& e) {
      // No answer at all: unreachable; an answer refusing us: refused.
      failure.emplace(kind::storage_failed, e.message().empty() ? e.what() : e.message());
      failure->store = e.status() == 0 ? apply_result::store_problem::unreachable
                                       : apply_result::store_problem::refused;
      failure->code = e.code();
    } catch (const std::exception& e) {
      failure.emplace(kind::storage_failed, e.what());
      failure->store = apply_result::store_problem::unreachable;
      failure->code = "InternalError";
    }
    if (failure) co_return failure;
    if (!wait) break;
    co_await pause(std::chrono::seconds(1));
  }
  if (stopping_) {
    // Had while shut-down began: given back, nothing applied.
    co_await held->release();
    apply_result late(kind::storage_failed, "state-manager is shutting down");
    late.store = apply_result::store_problem::shutting_down;
    late.code = "ShuttingDown";
    co_return late;
  }
  // Every writer of the state writes through the fence; the lease writes through a store of
  // its own (lease_store_: its own lane, short timeouts), never fenced.
  // Writes stop at the lease's expiry minus its safety margin when no renewal came, and go on
  // once one does (DESIGN 3.2): the writers see a refused write and retry, as for a store that
  // is down.
  store_ = std::make_unique<lease::fenced_store>(std::move(store), [this]() -> std::string {
    if (!lease_held()) return "the lease is not held";
    if (!lease_->writable()) return "the lease is within its safety margin of expiry, not renewed";
    return {};
  });
  lease_ = std::move(held);  // before the store it uses goes (a re-claim)
  lease_store_ = std::move(lease_store);
  const auto alive = alive_;
  lease_->on_expiry_near([this, alive] {
    if (!*alive) return;
    log::warn("lease not renewed and about to expire: nothing is written to the store until a "
              "renewal succeeds",
              {{"margin", format_duration(lease_->safety_margin())}});
  });
  lease_->keep([this, alive](std::string why) {
    if (*alive && system_) system_->lease_lost(std::move(why));
  });
  co_return std::nullopt;
}

asio::awaitable<void> environment::back_up_config(std::string document) {
  // Retried with backoff for as long as it fails: the configuration is already applied, and
  // GET / says how the copy in the store is doing.
  const auto alive = alive_;
  std::chrono::seconds backoff(1);
  backup_.state = "pending";
  while (*alive && store_ && !stopping_) {
    // Nothing is written under the prefix without the lease (DESIGN 3.2).
    if (!lease_held()) {
      backup_.state = "failed";
      backup_.last_error = "not written: the lease is not held";
      co_return;
    }
    ++backup_.attempts;
    std::string failure;
    try {
      s3::put_options options;
      options.content_type = "application/json";
      crash_point("config.backup_upload");
      co_await store_->put("config.json", document, options);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (!*alive) co_return;
    if (failure.empty()) {
      backup_.state = "done";
      backup_.last_error.clear();
      co_return;
    }
    backup_.state = "failed";
    backup_.last_error = failure;
    log::warn("configuration backup to the store failed; retrying",
              {{"error", failure}, {"retry_in", std::to_string(backoff.count()) + "s"}});
    co_await pause(backoff);
    if (!*alive) co_return;
    backoff = std::min(backoff * 2, std::chrono::seconds(60));
  }
}

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
  config::parse_result parsed = config::parse(document, env_, own_);
  if (!parsed.config) {
    report.problems = parsed.problems;
    return set_aside("invalid configuration");
  }
  take_key_variables(*parsed.config);
  config_ = std::move(parsed.config);
  report.outcome = load_report::kind::loaded;
  return report;
}

asio::awaitable<environment::apply_result> environment::apply(const json& document) {
  using kind = apply_result::kind;
  if (config_) co_return apply_result(kind::already_configured);
  if (applying_) co_return apply_result(kind::busy);

  config::parse_result parsed = config::parse(document, env_, own_);
  if (!parsed.config) {
    apply_result invalid(kind::invalid);
    invalid.problems = std::move(parsed.problems);
    co_return invalid;
  }
  take_key_variables(*parsed.config);

  // The store must answer and the lease be ours before anything is saved.
  applying_ = true;
  std::optional<apply_result> refused;
  try {
    refused = co_await claim(*parsed.config, {});
  } catch (...) {
    applying_ = false;
    throw;
  }
  if (refused) {
    applying_ = false;
    co_return *refused;
  }

  // What is saved is the document as submitted: {"$env": ...} references stay references, so
  // secrets taken from the environment never reach the disk.
  applying_ = true;
  const std::filesystem::path file = paths_.config_file();
  std::string failure;
  try {
    const std::string text = document.dump(2) + "\n";
    crash_point("config.before_write");
    co_await offload([&] { write_file_atomically(file, text, 0600); });
    crash_point("config.after_write");
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
    co_await release_lease();  // not configured after all: the lease goes back
    co_return apply_result(kind::failed, "could not save the configuration: " + failure);
  }
  config_ = std::move(parsed.config);
  {
    const auto executor = co_await asio::this_coro::executor;
    std::string backup = config::to_redacted_json(*config_).dump(2) + "\n";
    asio::co_spawn(executor, back_up_config(std::move(backup)), asio::detached);
  }
  // Configured from here on (a second POST is refused), but the answer waits for the
  // components to be started.
  try {
    if (system_) co_await system_->start_components(*config_);
  } catch (...) {
    applying_ = false;  // never leave later requests answered 409 forever
    throw;
  }
  applying_ = false;
  if (system_) system_->configuration_applied();
  co_return apply_result(kind::applied);
}

json environment::storage_status() const {
  if (!configured()) return nullptr;
  return {
      {"claimed", store_ != nullptr},
      {"error", claim_error_.empty() ? json(nullptr) : json(claim_error_)},
      {"config_backup",
       {{"state", backup_.state},
        {"attempts", backup_.attempts},
        {"last_error", backup_.last_error.empty() ? json(nullptr) : json(backup_.last_error)}}}};
}

asio::awaitable<bool> environment::claim_saved(std::function<bool()> stop) {
  if (!config_ || store_) co_return store_ != nullptr;
  std::chrono::seconds backoff(1);
  while (!stop() && !stopping_) {
    const std::optional<apply_result> refused = co_await claim(*config_, stop);
    if (!refused && stop()) {
      // Told to stop while claiming (a release or a shut-down came meanwhile): given back.
      co_await release_lease();
      co_return false;
    }
    if (!refused) {
      claim_error_.clear();
      if (backup_.state == "none") {
        const auto executor = co_await asio::this_coro::executor;
        std::string backup = config::to_redacted_json(*config_).dump(2) + "\n";
        asio::co_spawn(executor, back_up_config(std::move(backup)), asio::detached);
      }
      co_return true;
    }
    if (stop()) break;  // told to stop while claiming: not a problem to report
    if (refused->message != claim_error_) {
      log::warn("cannot claim the environment's storage yet; retrying",
                {{"error", refused->message}, {"code", refused->code}});
    }
    claim_error_ = refused->message;
    co_await pause(backoff);
    backoff = std::min(backoff * 2, std::chrono::seconds(10));
  }
  co_return false;
}

asio::awaitable<bool> environment::release_lease() {
  if (!lease_ || !lease_->held()) co_return false;
  co_await lease_->release();
  co_return true;
}

void environment::set_upload_status(const std::string& id, json status) {
  if (!uploads_) uploads_ = std::make_unique<json>(json::object());
  (*uploads_)[id] = std::move(status);
}

json environment::upload_status(const std::string& id) const {
  if (!uploads_ || !uploads_->contains(id)) return nullptr;
  return (*uploads_)[id];
}

void environment::set_checkpoints_summary(json summary) {
  checkpoints_summary_ = std::make_unique<json>(std::move(summary));
}

json environment::status() const {
  return {
      {"configured", configured()},
      {"state", system_        ? system_->state()
                : configured() ? "running"
                               : "unconfigured"},
      {"process", system_ ? system_->process_status() : json(nullptr)},
      {"components", system_ ? system_->components_status() : json::object()},
      {"lease", lease_ ? lease_->status() : json(nullptr)},
      // Why this machine writes nothing to the store any more (released, lost); null while it
      // may.
      {"fenced", system_ && !system_->fenced().empty() ? json(system_->fenced()) : json(nullptr)},
      {"storage", storage_status()},
      {"operation", system_ ? system_->operation_status() : json(nullptr)},
      {"checkpoints", checkpoints_summary_ ? *checkpoints_summary_ : json(nullptr)},
      {"version", STATE_MANAGER_VERSION},
  };
}

}  // namespace sm::api
