// Checkpoint and restore as pipelines over the component interface (docs/architecture.md):
//
//   create:  id -> quiesce -> snapshot (each stateful component, beside the copy of env_dir and
//            the configuration) into <id>.partial/ -> resume -> commit (manifest, fsync, rename)
//   restore: (download) -> read and verify the copies -> quiesce -> stop the stateful
//            components (final sync) -> journal the intent -> swap in each one's copy and
//            env_dir's -> commit the journal -> start them -> resume; anything failing before
//            the commit puts the state from before back (after it, the restore stands: a
//            failure to mark the replaced state as garbage is reported in the outcome's
//            `error`). A crash is recovered at the next start by the journal's phase
//            (restore_journal.hpp): both old or both new, never one of each.
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
#include <set>
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
  // What holding still reached: "cgroup" (every descendant, daemons that left their process
  // group included), "process-group" (no usable cgroup: COMMAND's and the components' process
  // groups only), "" (nothing was running).
  std::string reach;
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
  // Whether what the pipeline stopped may start again: not once shut-down began or the system
  // is fenced (the lease went while a restore ran: nothing writes to the store any more).
  virtual bool may_start() const { return true; }
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
  std::filesystem::path journal_dir;  // data/: the restore journal (restore_journal.hpp)
};

struct create_request {
  std::string id;  // empty: the next v<N>
  // Ids in use elsewhere (the store's, made by other machines): never given, and an explicit
  // one of them is id_taken.
  std::set<std::string> taken_elsewhere;
  std::string version;
  decltype(copy_options::move_data) move_data;  // copy_tree's read/write fallback, or empty
  // The checkpoint's config.json: the configuration as GET /config shows it, secrets redacted.
  // Never tmp/config.json's text, which holds the literal ones: a checkpoint is uploaded.
  std::string config = {};
};

struct create_outcome {
  enum class kind {
    created,
    id_taken,
    busy,           // another checkpoint or restore is running (set by the system)
    shutting_down,  // (set by the system)
    fenced,         // the lease is not held: nothing may be written (set by the system)
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
    fenced,           // the lease is not held: nothing may be written (set by the system)
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

// A stateful component's side of a restore's recovery at start-up, before components exist
// (the database's are db::component's static functions). Each is idempotent: a crash during
// the recovery is recovered again at the next start.
struct restore_recovery {
  std::string name;                      // as the component's name()
  std::function<void()> roll_back;       // what its restore set aside comes back, if anything
  std::function<void()> roll_forward;    // what its restore set aside goes, if anything
  std::function<void()> remove_garbage;  // a finished restore's leftovers, if any
};

// Start-up, before any component exists: finishes a restore that a crash cut short, by the
// journal in `journal_dir`: none, only a finished restore's garbage goes; prepared, env_dir and
// every component it names are rolled back; committed, rolled forward; then the journal goes.
// env_dir is the journal's (`env_dir` when it records none). Returns what it did, one line
// each, for the log. Blocking; throws std::system_error (the journal stays, for the next try).
std::vector<std::string> recover_interrupted_restore(
    const std::filesystem::path& journal_dir, const std::filesystem::path& env_dir,
    const std::vector<restore_recovery>& components);

// The replaced trees a successful restore leaves behind, removed in the background.
asio::awaitable<void> remove_replaced(std::vector<supervisor::component*> stateful,
                                      std::filesystem::path env_dir);

}  // namespace sm::checkpoint
