// Checkpoint and restore as pipelines over the component interface (docs/architecture.md):
//
//   create:  id -> quiesce -> snapshot (each stateful component, beside the copy of env_dir and
//            the configuration) into <id>.partial/ -> resume -> commit (manifest, fsync, rename)
//   restore: (download) -> read and verify the copies -> quiesce -> stop the stateful
//            components (final sync) -> swap in each one's copy and env_dir's -> start them ->
//            resume; anything failing before every copy is in puts the state from before back
//            (after it, the restore stands: a failure to mark the replaced state as garbage is
//            reported in the outcome's `error`).
//
// The system holds the processes still and lets them go (quiesce, resume) and names the
// stateful components; the pipelines know nothing else of it, so unit tests drive them with
// fakes. They return outcomes; src/api turns them into HTTP answers; the system logs.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "checkpoint/copy_tree.hpp"
#include "checkpoint/local_store.hpp"
#include "supervisor/component.hpp"

namespace sm::s3 {
class object_store;
}

namespace sm::checkpoint {

// How the processes were held still, to be let go again the same way.
struct quiesced {
  bool stopped_any = false;  // something was stopped (and is started again by resume)
  bool frozen = false;       // the cgroup freezer paused them instead
  std::string note;          // why they were stopped although freezing was asked for
  std::vector<supervisor::component*> stopped;  // what resume() starts again
  std::string mode() const { return frozen ? "freeze" : stopped_any ? "stop" : "none"; }
};

// What the pipelines need from the system that runs the environment.
class host {
 public:
  virtual ~host() = default;
  // Holds still whatever writes to the state: frozen when `may_freeze` and the configuration
  // asks for it and the freezer works, else stopped (stop_reason::quiesce). Throws when it
  // cannot; nothing is then held.
  virtual asio::awaitable<quiesced> quiesce(bool may_freeze) = 0;
  // Lets go what quiesce() held (unless shut-down began meanwhile: then it stays stopped).
  virtual asio::awaitable<void> resume(const quiesced& q) = 0;
  // The components that hold state, in start order.
  virtual std::vector<supervisor::component*> stateful_components() = 0;
  // The pipeline for checkpoint `id` reached `step` (quiesce, snapshot, resume, commit,
  // download, final sync, swap).
  virtual void step(const std::string& id, const std::string& step) = 0;
};

// Progress of the copy, read by GET / while it runs (from another thread).
struct progress {
  std::atomic<std::uint64_t> done{0}, total{0};
};

struct paths {
  std::filesystem::path checkpoints;  // tmp/checkpoints
  std::filesystem::path env_dir;      // storage.env_dir
  std::filesystem::path config_file;  // tmp/config.json
};

struct create_request {
  std::string id;  // empty: the next v<N>
  std::string version;
  decltype(copy_options::move_data) move_data;  // copy_tree's read/write fallback, or empty
};

struct create_outcome {
  enum class kind {
    created,
    id_taken,
    busy,           // another checkpoint or restore is running (set by the system)
    shutting_down,  // (set by the system)
    failed,
    no_space,
  } outcome = kind::created;
  std::string id;
  manifest made;      // created
  std::string error;  // failed, no_space
};

asio::awaitable<create_outcome> create(host& h, const paths& where, create_request request,
                                       progress& p);

struct restore_request {
  std::string id;
  s3::object_store* store = nullptr;  // where a checkpoint made elsewhere is downloaded from
  decltype(copy_options::move_data) move_data;
  // A download keeps set-id bits and security.* xattrs (configuration "restore_privileged").
  bool restore_privileged = false;
};

struct restore_outcome {
  enum class kind {
    restored,
    busy,             // another checkpoint or restore is running (set by the system)
    shutting_down,    // (set by the system)
    not_found,        // no such checkpoint (or its manifest is unreadable)
    download_failed,  // in the store, but it could not be downloaded
    damaged,          // a component's copy fails its check: nothing was changed
    failed,           // failed half-way: the state before is back
    no_space,         // the same, for want of space
  } outcome = kind::restored;
  std::string id;
  std::optional<manifest> restored;
  std::string error;  // restored: what it replaced that could not be set aside as garbage
  std::int64_t took_ms = 0;
  // Downloaded: the entries whose set-id bits or security.* xattrs were dropped.
  std::uint64_t dropped_privileged = 0;
};

asio::awaitable<restore_outcome> restore(host& h, const paths& where, restore_request request,
                                         progress& p);

// Start-up, before any component exists: undoes what a restore cut short by a crash left in
// env_dir (renamed aside, or a contents swap), and removes a finished restore's leftovers.
// Returns what it did, one line each, for the log. Blocking.
std::vector<std::string> recover_interrupted_restore(const std::filesystem::path& env_dir);

// The replaced trees a successful restore leaves behind, removed in the background.
asio::awaitable<void> remove_replaced(std::vector<supervisor::component*> stateful,
                                      std::filesystem::path env_dir);

}  // namespace sm::checkpoint
