// A libfuse low-level session served on the executor (DESIGN 3, 4, 5): /dev/fuse in non-blocking
// mode, awaited for readability; each request decoded and dispatched to the operations table on
// the executor's thread, whose handlers reply when they are done (now or later). Mounting and
// unmounting run on a worker thread, since the kernel may send requests meanwhile; notifications
// to the kernel go through a thread of their own (libfuse: never from a request handler).
//
// The header names no libfuse type, so that coroutine translation units that use it do not parse
// libfuse (and its FUSE_USE_VERSION) too.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

struct fuse_lowlevel_ops;
struct fuse_session;

namespace sm::fs {

class fuse_mount {
 public:
  // `ops` and `userdata` (handed to every operation) outlive this.
  fuse_mount(asio::any_io_executor executor, const fuse_lowlevel_ops& ops, void* userdata);
  // Unmounts (lazily) if still mounted and ends the session. Blocking: call unmount() first.
  ~fuse_mount();
  fuse_mount(const fuse_mount&) = delete;
  fuse_mount& operator=(const fuse_mount&) = delete;

  // Mounts at `mountpoint` ("-o" options: fsname, subtype, allow_other, ...) and starts serving
  // requests. Returns once the mount exists (the kernel's INIT may still be in flight). Throws
  // std::system_error with the reason.
  asio::awaitable<void> mount(std::filesystem::path mountpoint, std::vector<std::string> options);

  // Unmounts (or, while processes still hold files on it, detaches the mount and serves them
  // until the kernel ends the session, at most `grace`); then requests are no longer read. The
  // session stays, so that replies of operations still under way go nowhere harmlessly. Safe
  // when not mounted.
  asio::awaitable<void> unmount(std::chrono::milliseconds grace);
  // Ends the session and closes its descriptor: once no operation is under way any more.
  asio::awaitable<void> close_session();

  bool mounted() const;
  // Called once when the session ends, with why (also when unmount() ends it).
  void on_end(std::function<void(const std::string&)> tell);
  // The session ended by itself (unmounted from outside, `umount -l`, a killed connection).
  bool ended() const;
  std::string end_reason() const;

  // Asks the kernel to drop what it caches of an inode (attributes and pages) or of one name
  // in a directory: queued to the notifier thread, never blocking the executor.
  void invalidate_inode(std::uint64_t ino);
  void invalidate_entry(std::uint64_t parent, std::string name);

  // A mount left at `dir` by a killed server ("Transport endpoint is not connected") is
  // detached; true when there was one. Blocking (stat, umount2): call it through offload().
  static bool clear_stale_mount(const std::filesystem::path& dir);

  // The mount's device number as the kernel's backing-device folder names it ("0:57"), for
  // raising its readahead; empty before mount().
  const std::string& device() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace sm::fs
