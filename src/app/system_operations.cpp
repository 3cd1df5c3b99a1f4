// The system's checkpoints, restores and checkpoint uploads (see system.hpp).
#include <algorithm>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "api/environment.hpp"
#include "app/system.hpp"
#include "async/offload.hpp"
#include "base/log.hpp"
#include "checkpoint/local_store.hpp"
#include "checkpoint/remote.hpp"
#include "checkpoint/store_ids.hpp"
#include "config/config.hpp"
#include "proc/freezer.hpp"
#include "supervisor/process_component.hpp"
#include "uring/copy.hpp"
#include "uring/ring.hpp"
#include "version.h"

namespace sm::app {

namespace {
using json = nlohmann::json;
using namespace std::chrono_literals;
}  // namespace

// --- Holding still -------------------------------------------------------------------------

asio::awaitable<checkpoint::quiesced> system::quiesce(bool may_freeze) {
  checkpoint::quiesced q;
  // Processes are what writes to the state; the stateful components hold still on their own
  // (their snapshots are consistent while they run).
  const bool command_runs = command_ && command_->current() != supervisor::state::pending;
  const bool declared = std::any_of(components_.begin(), components_.end(),
                                    [](const auto& c) { return !c->holds_state(); });
  if (!command_runs && !declared) co_return q;
  // COMMAND, the components' processes and whatever they started are gathered into a cgroup
  // of our own (orphans are ours to find: we are PID 1 or a subreaper), so that holding still
  // reaches a daemon that left its process group (setsid). Without a usable cgroup only the
  // process groups are reached, and the manifest says so.
  std::string no_cgroup;
  try {
    co_await offload([&] {
      if (!freezer_) freezer_ = std::make_unique<proc::freezer>(proc::freezer::open());
      freezer_->adopt_descendants();
    });
  } catch (const std::exception& e) {
    no_cgroup = e.what();
  }
  // The cgroup freezer pauses the processes, which keep their PIDs; otherwise, or when
  // freezing is not possible here, they stop and start again with new PIDs.
  if (may_freeze && env_.current()->checkpoint == config::checkpoint_mode::freeze) {
    try {
      if (!no_cgroup.empty()) throw std::runtime_error(no_cgroup);
      q.frozen = co_await proc::freeze(*freezer_, opts_.timeout_stop);
      if (!q.frozen) q.note = "the processes did not freeze within the stop timeout";
    } catch (const std::exception& e) {
      q.note = e.what();
    }
    if (q.frozen) {
      q.reach = "cgroup";
      co_return q;
    }
    log::warn("cannot freeze the processes; stopping them instead", {{"reason", q.note}});
  }
  q.stopped_any = true;
  std::vector<supervisor::component*> parts = all();
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    const supervisor::state before = (*it)->current();
    co_await (*it)->stop(supervisor::stop_reason::quiesce);
    if ((*it)->current() == supervisor::state::stopped && before != supervisor::state::stopped) {
      q.stopped.insert(q.stopped.begin(), *it);
    }
  }
  // What outlived its process group's stop is stopped the same way (SIGTERM, then SIGKILL
  // after the stop timeout): "stop" means the whole tree, and what COMMAND started again on
  // resume must not find its predecessor still running.
  if (no_cgroup.empty()) {
    q.reach = "cgroup";
    if (const std::size_t n = co_await proc::stop_members(*freezer_, opts_.timeout_stop)) {
      log::info("stopped processes that had left their process group",
                {{"count", std::to_string(n)}});
    }
  } else {
    q.reach = "process-group";
    if (q.note.empty()) q.note = no_cgroup;
  }
  co_return q;
}

asio::awaitable<void> system::resume(const checkpoint::quiesced& q) {
  if (q.frozen) {
    // Thawed even at shut-down: a frozen process would never see its SIGTERM.
    try {
      freezer_->request(false);
    } catch (const std::exception& e) {
      log::error("cannot thaw the processes", {{"error", e.what()}});
    }
    co_return;
  }
  // Nothing starts again once fenced (the lease went while the processes were stopped).
  if (shutting_down_ || !fenced_.empty()) co_return;
  // The components first, in dependency order, then COMMAND: as at start-up.
  co_await start_all(&q.stopped);
  if (std::find(q.stopped.begin(), q.stopped.end(), command_.get()) != q.stopped.end()) {
    start_command();
  }
}

std::vector<supervisor::component*> system::stateful_components() {
  std::vector<supervisor::component*> out;
  for (auto& c : components_) {
    if (c->holds_state()) out.push_back(c.get());
  }
  return out;
}

// --- Operations ----------------------------------------------------------------------------

json system::operation_status() const {
  if (operation_.is_null()) return nullptr;
  json out = operation_;
  out["done_bytes"] = progress_.done.load();
  out["total_bytes"] = progress_.total.load();
  return out;
}

void system::step(const std::string& id, const std::string& step) {
  if (operation_.is_null()) return;
  operation_["id"] = id;
  operation_["step"] = step;
  publish(operation_step{operation_["kind"], operation_["id"], step});
}

template <class Outcome>
std::optional<Outcome> system::refuse(const std::string& id) const {
  Outcome refused;
  refused.id = id;
  if (!fenced_.empty()) {
    refused.outcome = Outcome::kind::fenced;
    refused.error = fenced_;
    return refused;
  }
  if (operations_.held() > 0) {
    refused.outcome = Outcome::kind::busy;
    return refused;
  }
  if (shutting_down_) {
    refused.outcome = Outcome::kind::shutting_down;
    return refused;
  }
  return std::nullopt;
}

gate::pass system::begin_operation(const char* kind, const std::string& id) {
  operation_ = {{"kind", kind}, {"id", id}, {"step", "prepare"}};
  publish_state();
  return *operations_.enter();  // never closed: shut-down waits for it instead
}

void system::end_operation(bool ok) {
  const std::string kind = operation_["kind"], id = operation_["id"];
  operation_ = nullptr;
  publish(operation_step{kind, id, ok ? "done" : "failed"});
  publish_state();
}

checkpoint::paths system::checkpoint_paths() const {
  return {env_.paths().checkpoints_dir(), env_.current()->storage.env_dir,
          env_.paths().data_dir};
}

decltype(checkpoint::copy_options::move_data) system::data_mover() {
  // copy_tree's read/write fallback (file systems that neither reflink nor copy_file_range
  // between them) as io_uring requests awaited here; empty, so copy_tree's own pread/pwrite on
  // its worker thread, where the kernel refuses a ring. Made on the first use, kept until exit.
  if (!copy_ring_ && !copy_ring_refused_) {
    try {
      copy_ring_ = std::make_shared<uring::ring>(executor_);
    } catch (const std::system_error& e) {
      copy_ring_refused_ = true;
      log::warn("no io_uring; copies that need reads and writes make them on a thread",
                {{"error", e.what()}});
    }
  }
  if (!copy_ring_) return {};
  return uring::executor_data_mover(executor_, copy_ring_);
}

asio::awaitable<checkpoint::create_outcome> system::create_checkpoint(std::string id) {
  if (auto refused = refuse<checkpoint::create_outcome>(id)) co_return *refused;
  // Ids are unique across the prefix: those in the store (other machines' too) are taken. A
  // store that cannot be listed now leaves the choice to this machine's ids; the manifest's
  // create-only write still refuses to replace another's.
  std::set<std::string> in_store;
  if (env_.store()) {
    try {
      in_store = co_await checkpoint::ids_in_store(*env_.store());
    } catch (const std::exception& e) {
      log::warn("cannot list the store's checkpoints; choosing the id from this machine's",
                {{"error", e.what()}});
    }
    // The listing took a while: the lease may have gone, or another operation begun.
    if (auto refused = refuse<checkpoint::create_outcome>(id)) co_return *refused;
  }
  const gate::pass running = begin_operation("checkpoint", id);
  checkpoint::create_request request{id, std::move(in_store), STATE_MANAGER_VERSION,
                                     data_mover()};
  request.config = config::to_redacted_json(*env_.current()).dump(2) + "\n";
  checkpoint::create_outcome made;
  try {
    made = co_await checkpoint::create(*this, checkpoint_paths(), std::move(request), progress_);
  } catch (const std::exception& e) {
    made.outcome = checkpoint::create_outcome::kind::failed;
    made.error = e.what();
  }
  if (made.outcome == checkpoint::create_outcome::kind::id_taken) {
    operation_ = nullptr;
    publish_state();
    co_return made;
  }
  operation_["id"] = made.id;
  const bool ok = made.outcome == checkpoint::create_outcome::kind::created;
  end_operation(ok);
  if (!ok) {
    log::error("checkpoint failed", {{"id", made.id}, {"error", made.error}});
    co_return made;
  }
  log::info("checkpoint", {{"id", made.id},
                           {"ms", std::to_string(made.made.steps_ms["total"])},
                           {"files", std::to_string(made.made.mount.files)}});
  // Usable here already; the copy in the store follows in the background.
  start_upload(made.id);
  co_return made;
}

asio::awaitable<checkpoint::restore_outcome> system::restore_checkpoint(std::string id) {
  if (auto refused = refuse<checkpoint::restore_outcome>(id)) co_return *refused;
  const gate::pass running = begin_operation("restore", id);
  checkpoint::restore_request request{id, env_.store(), data_mover()};
  request.restore_privileged = env_.current() && env_.current()->restore_privileged;
  checkpoint::restore_outcome r;
  try {
    r = co_await checkpoint::restore(*this, checkpoint_paths(), std::move(request), progress_);
  } catch (const std::exception& e) {
    r.outcome = checkpoint::restore_outcome::kind::failed;
    r.error = e.what();
  }
  using kind = checkpoint::restore_outcome::kind;
  end_operation(r.outcome == kind::restored);
  if (r.outcome == kind::failed || r.outcome == kind::no_space) {
    log::error("restore failed; the state before it is back", {{"id", id}, {"error", r.error}});
  }
  if (r.outcome != kind::restored) co_return r;
  log::info("restored", {{"id", id}, {"ms", std::to_string(r.took_ms)}});
  if (r.dropped_privileged > 0) {
    log::warn(
        "restored without the privileged bits of the store's copy (restore_privileged is off)",
        {{"id", id}, {"entries", std::to_string(r.dropped_privileged)}});
  }
  if (!r.error.empty()) log::warn("restored, with a problem", {{"id", id}, {"error", r.error}});
  // The old state's files go in the background (removing 10,000 files takes seconds).
  asio::co_spawn(
      executor_,
      [stateful = stateful_components(),
       env_dir = env_.current()->storage.env_dir]() -> asio::awaitable<void> {
        try {
          co_await checkpoint::remove_replaced(stateful, env_dir);
        } catch (const std::exception& e) {
          log::warn("cannot remove what a restore replaced", {{"error", e.what()}});
        }
      },
      asio::detached);
  co_return r;
}

// --- Uploads -------------------------------------------------------------------------------

void system::start_upload(const std::string& id) {
  if (!env_.store() || uploading_.contains(id)) return;
  std::optional<gate::pass> pass = uploads_.enter();
  if (!pass) {
    env_.set_upload_status(id,
                           {{"state", "failed"}, {"bytes", 0}, {"error", uploads_.closed_why()}});
    return;
  }
  env_.set_upload_status(id, {{"state", "pending"}, {"bytes", 0}, {"error", nullptr}});
  asio::co_spawn(
      executor_,
      [this, id, pass = std::move(*pass)]() -> asio::awaitable<void> { co_await upload(id); },
      asio::detached);
}

asio::awaitable<std::string> system::upload(std::string id) {
  uploading_.insert(id);
  struct done_guard {
    std::set<std::string>& set;
    const std::string& id;
    ~done_guard() { set.erase(id); }
  } guard{uploading_, id};
  env_.set_upload_status(id, {{"state", "uploading"}, {"bytes", 0}, {"error", nullptr}});
  std::string failure;
  bool cancelled = false, taken = false;
  std::uint64_t bytes = 0;
  try {
    const checkpoint::local_store local(env_.paths().checkpoints_dir());
    auto progress = [this, id](std::uint64_t n) {
      env_.set_upload_status(id, {{"state", "uploading"}, {"bytes", n}, {"error", nullptr}});
    };
    bytes = co_await checkpoint::upload(*env_.store(), local, id, progress,
                                        [this] { return uploads_.cancelled(); });
  } catch (const checkpoint::upload_cancelled& e) {
    failure = e.what();
    cancelled = true;
  } catch (const checkpoint::id_taken_remotely& e) {
    // Another machine's checkpoint has this id in the store: never overwritten, and no retry
    // would change that.
    failure = e.what();
    taken = true;
  } catch (const std::exception& e) {
    failure = e.what();
  }
  const char* state = failure.empty() ? "done" : cancelled ? "stopped" : "failed";
  if (cancelled) {
    log::warn("checkpoint upload stopped; it resumes at the next start", {{"id", id}});
  } else if (taken) {
    taken_elsewhere_.insert(id);
    log::error("checkpoint not uploaded", {{"id", id}, {"error", failure}});
  } else if (!failure.empty()) {
    log::error("checkpoint upload failed; it is tried again", {{"id", id}, {"error", failure}});
    schedule_upload_retry();
  } else {
    upload_retry_delay_ = std::chrono::seconds(2);
  }
  env_.set_upload_status(id, {{"state", state},
                              {"bytes", bytes},
                              {"error", failure.empty() ? json(nullptr) : json(failure)}});
  publish(operation_step{"upload", id, state});
  co_return failure;
}

void system::resume_uploads() {
  if (!env_.store() || resume_scanning_ || releasing_) return;
  std::optional<gate::pass> pass = uploads_.enter();
  if (!pass) return;
  resume_scanning_ = true;
  asio::co_spawn(executor_, resume_uploads_now(std::move(*pass)), asio::detached);
}

asio::awaitable<void> system::resume_uploads_now(gate::pass) {
  // The local checkpoints whose manifest the store lacks (an upload cut short by a crash or a
  // shut-down, a store that was down) go up now, one at a time, under this scan's pass.
  struct done_guard {
    bool& flag;
    ~done_guard() { flag = false; }
  } guard{resume_scanning_};
  co_await upload_missing();
}

asio::awaitable<json> system::upload_missing() {
  json missing = json::array();
  std::vector<checkpoint::manifest> local;
  try {
    co_await offload(
        [&] { local = checkpoint::local_store(env_.paths().checkpoints_dir()).list(); });
    for (const auto& m : local) {
      if (uploads_.closed() || !env_.store()) {
        // Not checked: a release must not take this for "everything is in the store".
        missing.push_back({{"part", "checkpoints"},
                           {"error", "not checked: " + (uploads_.closed() ? uploads_.closed_why()
                                                                        : "no store")}});
        break;
      }
      if (uploading_.contains(m.id)) continue;  // a new checkpoint's upload of it runs already
      const checkpoint::remote_copy copy = co_await checkpoint::remote_copy_of(*env_.store(), m);
      if (copy == checkpoint::remote_copy::same) {
        // Uploaded by an earlier run (or downloaded from the store): say so.
        const json status = env_.upload_status(m.id);
        if (status.is_null() || status.value("state", "") != "done") {
          env_.set_upload_status(m.id, {{"state", "done"}, {"bytes", nullptr}, {"error", nullptr}});
        }
        continue;
      }
      if (copy == checkpoint::remote_copy::other) {
        // Another machine's checkpoint has this id in the store: never overwritten.
        const std::string why = checkpoint::id_taken_remotely(m.id).what();
        log::warn("checkpoint not uploaded", {{"id", m.id}, {"error", why}});
        env_.set_upload_status(m.id, {{"state", "failed"}, {"bytes", 0}, {"error", why}});
        continue;
      }
      if (uploads_.closed() || uploading_.contains(m.id)) continue;  // changed while we asked
      log::info("checkpoint not in the store; uploading it again", {{"id", m.id}});
      env_.set_upload_status(m.id, {{"state", "pending"}, {"bytes", 0}, {"error", nullptr}});
      if (std::string failure = co_await upload(m.id);
          !failure.empty() && !taken_elsewhere_.contains(m.id)) {
        missing.push_back({{"part", "checkpoint"}, {"id", m.id}, {"error", failure}});
      }
    }
  } catch (const std::exception& e) {
    log::warn("could not check which checkpoints the store lacks", {{"error", e.what()}});
    missing.push_back({{"part", "checkpoints"}, {"error", e.what()}});
    schedule_upload_retry();
  }
  co_return missing;
}

void system::schedule_upload_retry() {
  if (upload_retry_armed_ || !env_.store() || shutting_down_ || !fenced_.empty() || releasing_) {
    return;
  }
  std::optional<gate::pass> pass = uploads_.enter();
  if (!pass) return;
  upload_retry_armed_ = true;
  const auto delay = upload_retry_delay_;
  upload_retry_delay_ = std::min(upload_retry_delay_ * 2, std::chrono::seconds(60));
  upload_retry_.expires_after(delay);
  asio::co_spawn(
      executor_,
      [this, pass = std::move(*pass)]() -> asio::awaitable<void> {
        std::error_code ec;
        co_await upload_retry_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        // Cancelled: shut-down, a release or a fence is under way, and says what comes next.
        const bool cancelled = !upload_retry_armed_;
        upload_retry_armed_ = false;
        if (!cancelled) resume_uploads();
      },
      asio::detached);
}

void system::cancel_upload_retry() {
  if (!upload_retry_armed_) return;
  upload_retry_armed_ = false;
  upload_retry_.cancel();
}

}  // namespace sm::app
