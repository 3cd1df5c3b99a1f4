// Checkpoints in the object store, so that another machine can restore them. Under
// <key_prefix>checkpoints/<id>/ (the layout and its formats: checkpoint/index.hpp): each regular
// file's content under files/<sha256>, the index (every entry: path, type, mode, owner, mtime,
// size, xattrs, holes, the target of a symlink or of another name of a file, the content's
// sha256) under index-<sha256>.json, and manifest.json last, created only if absent, whose
// presence says the upload is whole and which carries the index's sha256. A download rebuilds
// all of that, hard links and the holes of sparse files included, and trusts nothing: the
// manifest and index are read with a size bound, every object is checked against its sha256,
// and privileged bits are dropped unless asked for; anything wrong and nothing is applied.
// Owners need root (without it the files are ours).
// Uploads run 8 objects at a time on the executor; the file system work and the hashing go
// through offload().
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "checkpoint/local_store.hpp"
#include "s3/object_store.hpp"

namespace sm::checkpoint {

std::string remote_prefix(const std::string& id);  // "checkpoints/<id>/"

// Uploads the complete local checkpoint `id`. `progress` gets the bytes uploaded so far.
// Throws what the store throws (after its retries), upload_cancelled once `cancelled`
// (asked before each object; may be empty) says so (the objects in flight finish first, the
// manifest is not written), and id_taken_remotely when the store holds another checkpoint of
// that id (checked before anything is written, and again by the create-only manifest). A
// checkpoint already whole in the store with the same manifest is not uploaded again.
asio::awaitable<std::uint64_t> upload(s3::object_store& store, const local_store& local,
                                      std::string id, std::function<void(std::uint64_t)> progress,
                                      std::function<bool()> cancelled);

class upload_cancelled : public std::runtime_error {
 public:
  upload_cancelled() : std::runtime_error("upload cancelled") {}
};

// The store holds a checkpoint of this id made elsewhere (another machine, or another checkpoint
// of this one before a restore); it is never overwritten.
class id_taken_remotely : public std::runtime_error {
 public:
  explicit id_taken_remotely(const std::string& id)
      : std::runtime_error("checkpoint " + id + " exists in the store with other content"),
        id_(id) {}
  const std::string& id() const { return id_; }

 private:
  std::string id_;
};

// The manifest of checkpoint `id` in the store; nullopt when the store has no whole checkpoint
// of that id (no manifest.json, or one that does not describe `id`).
asio::awaitable<std::optional<manifest>> read_remote(s3::object_store& store, std::string id);

// The whole checkpoints in the store, oldest first, except those named in `skip` (the ones
// here already). One listing of checkpoints/ and a GET of each manifest, 8 at a time.
asio::awaitable<std::vector<manifest>> list_remote(s3::object_store& store,
                                                   std::set<std::string> skip);

// Whether the store holds a whole checkpoint `id` (its manifest.json).
asio::awaitable<bool> exists_remotely(s3::object_store& store, std::string id);

// What the store holds under the id of the local checkpoint `local`: nothing whole, this very
// checkpoint (uploaded, or the one it was downloaded from), or another checkpoint of that id
// (another machine's; unreadable ones count as another's). One HEAD and one bounded GET.
enum class remote_copy { absent, same, other };
asio::awaitable<remote_copy> remote_copy_of(s3::object_store& store, manifest local);

struct download_options {
  // Restore set-user-ID and set-group-ID bits of files and security.* extended attributes
  // (file capabilities) as the index says. Off: they are dropped and counted.
  bool restore_privileged = false;
};

struct download_result {
  bool found = false;                    // the store has a whole checkpoint of that id
  std::uint64_t dropped_privileged = 0;  // entries that lost set-id bits or security.* xattrs
};

// Downloads checkpoint `id` into <id>.partial/ and commits it as a local checkpoint. Not found
// when the store has no whole checkpoint of that id. Throws on failure, with nothing committed
// and the partial removed: index_error for a manifest or index that is too large, malformed or
// does not match its hash, damaged_object for an object whose content is not what the index
// says, and what the store throws.
asio::awaitable<download_result> download(s3::object_store& store, const local_store& local,
                                          std::string id, download_options options);

class damaged_object : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace sm::checkpoint
