// Checkpoints on this machine: tmp/checkpoints/<id>/ with manifest.json, database.sqlite,
// config.json and mount/. One is built in <id>.partial/ and renamed into place once complete
// and fsynced, so that a crash leaves either no checkpoint or a whole one; leftover partials
// are removed at start. Blocking (file system): for offload() once serving.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace sm::checkpoint {

// What manifest.json says of a checkpoint (its fields are part of the API: GET /checkpoints).
struct manifest {
  std::string id;
  std::chrono::system_clock::time_point created_at{};
  std::string parent;   // the checkpoint before it on this environment ("" for none)
  std::string version;  // state-manager's
  struct database_copy {
    std::string file = "database.sqlite";
    std::uint64_t bytes = 0;
    std::uint32_t pages = 0;
    std::string sha256;
    std::string method;  // how it was made: "reflink" or "backup API" ("" when not known)
  };
  std::optional<database_copy> database;  // none when the database stack is not configured
  struct tree {
    std::uint64_t files = 0, dirs = 0, symlinks = 0, bytes = 0;
    // Files by how their data was copied ("copied_by"): reflink, copy_file_range, or reads and
    // writes (io_uring, else a thread's pread/pwrite). Empty files need none.
    std::uint64_t reflink = 0, copy_file_range = 0, read_write = 0;
  } mount;
  std::map<std::string, std::int64_t> steps_ms;  // quiesce, snapshot, resume, ...
  // How the processes were held still: "stop", "freeze", or "none" (nothing was running).
  std::string quiesce = "none";
  std::string quiesce_note;   // why "stop" when "freeze" was configured ("" otherwise)
  std::string quiesce_reach;  // "cgroup", "process-group" or "" (see checkpoint::quiesced)
};

nlohmann::json to_json(const manifest& m);
// nullopt when the document is not a manifest (missing or mistyped fields).
std::optional<manifest> manifest_from_json(const nlohmann::json& document);

class local_store {
 public:
  explicit local_store(std::filesystem::path dir);  // tmp/checkpoints

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path path_of(const std::string& id) const { return dir_ / id; }
  std::filesystem::path partial_of(const std::string& id) const;

  // Start-up: removes every <id>.partial/ (an interrupted checkpoint) and returns their ids.
  std::vector<std::string> remove_partials() const;
  bool exists(const std::string& id) const;
  // The manifest of a complete checkpoint; nullopt if there is none or it is unreadable.
  std::optional<manifest> read(const std::string& id) const;
  // Every complete checkpoint, oldest first.
  std::vector<manifest> list() const;
  // The next automatic id: v<N+1>, N the largest vN present here or in `elsewhere` (the ids
  // the store holds: v1 when none).
  std::string next_id(const std::set<std::string>& elsewhere = {}) const;
  // Writes `m` as <partial>/manifest.json, fsyncs the partial tree's directories, renames it to
  // <id>/ and fsyncs tmp/checkpoints. Throws std::system_error.
  void commit(const manifest& m) const;
  // Removes a checkpoint (renamed aside first, so that a crash never leaves half of one).
  bool remove(const std::string& id) const;

 private:
  std::filesystem::path dir_;
};

}  // namespace sm::checkpoint
