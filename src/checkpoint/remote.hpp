// Checkpoints in the object store, so that another machine can restore them. Under
// <key_prefix>checkpoints/<id>/: files/<path> for each regular file of the checkpoint (its
// database copy, configuration and mount/ tree; an inode with several names goes up once, under
// its first), index.json (every entry: path, type, mode, owner, mtime, size, extended
// attributes, holes, the target of a symlink or of another name of a file), and manifest.json last,
// whose presence says the upload is whole. A download rebuilds all of that, hard links and
// the holes of sparse files included (the objects hold zeros there; the index lists the holes);
// owners need root (without it the files are ours).
// Uploads run 8 objects at a time on the executor; the file system work goes through offload().
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
// Throws what the store throws (after its retries), and upload_cancelled once `cancelled`
// (asked before each object; may be empty) says so: the objects in flight finish first, the
// manifest is not written.
asio::awaitable<std::uint64_t> upload(s3::object_store& store, const local_store& local,
                                      std::string id, std::function<void(std::uint64_t)> progress,
                                      std::function<bool()> cancelled);

class upload_cancelled : public std::runtime_error {
 public:
  upload_cancelled() : std::runtime_error("upload cancelled") {}
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

// Downloads checkpoint `id` into <id>.partial/ and commits it as a local checkpoint. False when
// the store has no whole checkpoint of that id. Throws on failure (the partial is removed).
asio::awaitable<bool> download(s3::object_store& store, const local_store& local, std::string id);

}  // namespace sm::checkpoint
