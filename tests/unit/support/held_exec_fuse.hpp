// A one-file FUSE filesystem, served by a thread of its own, whose file `prog` (a script) cannot
// be opened until the test says so: an exec of it stays blocked in the kernel, which is what an
// exec of a program on state-manager's own mount does while the executor does not answer. The
// test releases the open once it has seen what it wants (the executor still running, a stop
// requested meanwhile); on code that blocks the executor for the exec the test never gets that
// far, and the open goes on by itself after `hold_limit`, which the test then sees (held_too_long).
//
// `why_not` is non-empty where no FUSE mount can be had (not root, no /dev/fuse): the test then
// says so and checks nothing.
#pragma once

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

#include "support/scratch_dir.hpp"

namespace test_support {

class held_exec_fuse {
 public:
  explicit held_exec_fuse(std::string script,
                          std::chrono::seconds hold_limit = std::chrono::seconds(20))
      : script_(std::move(script)), hold_limit_(hold_limit) {
    if (::geteuid() != 0) {
      why_not = "not root";
      return;
    }
    if (::access("/dev/fuse", R_OK | W_OK) != 0) {
      why_not = "no /dev/fuse";
      return;
    }
    mount_point_ = base_.dir / "mnt";
    std::filesystem::create_directory(mount_point_);
    static const fuse_lowlevel_ops ops = make_ops();
    char name[] = "held_exec_fuse";
    char* argv[] = {name, nullptr};
    fuse_args args = FUSE_ARGS_INIT(1, argv);
    session_ = fuse_session_new(&args, &ops, sizeof ops, this);
    if (!session_ || fuse_session_mount(session_, mount_point_.c_str()) != 0) {
      why_not = "cannot mount a FUSE filesystem here";
      if (session_) fuse_session_destroy(session_);
      session_ = nullptr;
      return;
    }
    server_ = std::thread([this] { fuse_session_loop(session_); });
  }

  ~held_exec_fuse() {
    if (!session_) return;
    release();
    fuse_session_exit(session_);
    fuse_session_unmount(session_);  // the loop's read ends with the connection
    server_.join();
    fuse_session_destroy(session_);
  }

  held_exec_fuse(const held_exec_fuse&) = delete;
  held_exec_fuse& operator=(const held_exec_fuse&) = delete;

  std::string why_not;

  // The script's path on the mount.
  std::string program() const { return (mount_point_ / "prog").string(); }

  // The kernel asked to open the program (an exec of it is under way, held).
  bool open_requested() {
    std::lock_guard lock(mutex_);
    return open_requested_;
  }

  // Lets the held open (and every later one) go on.
  void release() {
    std::lock_guard lock(mutex_);
    released_ = true;
    changed_.notify_all();
  }

  // The open went on by itself after hold_limit: nobody released it in time.
  bool held_too_long() {
    std::lock_guard lock(mutex_);
    return held_too_long_;
  }

 private:
  static constexpr fuse_ino_t prog_ino = 2;

  static held_exec_fuse& self(fuse_req_t req) {
    return *static_cast<held_exec_fuse*>(fuse_req_userdata(req));
  }

  struct stat attributes(fuse_ino_t ino) const {
    struct stat st{};
    st.st_ino = ino;
    st.st_uid = ::getuid();
    st.st_gid = ::getgid();
    if (ino == FUSE_ROOT_ID) {
      st.st_mode = S_IFDIR | 0755;
      st.st_nlink = 2;
    } else {
      st.st_mode = S_IFREG | 0755;
      st.st_nlink = 1;
      st.st_size = static_cast<off_t>(script_.size());
    }
    return st;
  }

  static fuse_lowlevel_ops make_ops() {
    fuse_lowlevel_ops ops{};
    ops.lookup = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
      if (parent != FUSE_ROOT_ID || std::strcmp(name, "prog") != 0) {
        fuse_reply_err(req, ENOENT);
        return;
      }
      fuse_entry_param entry{};
      entry.ino = prog_ino;
      entry.attr = self(req).attributes(prog_ino);
      entry.attr_timeout = 60;
      entry.entry_timeout = 60;
      fuse_reply_entry(req, &entry);
    };
    ops.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
      if (ino != FUSE_ROOT_ID && ino != prog_ino) {
        fuse_reply_err(req, ENOENT);
        return;
      }
      const struct stat st = self(req).attributes(ino);
      fuse_reply_attr(req, &st, 60);
    };
    ops.open = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
      if (ino != prog_ino) {
        fuse_reply_err(req, EISDIR);
        return;
      }
      held_exec_fuse& fs = self(req);
      {
        std::unique_lock lock(fs.mutex_);
        fs.open_requested_ = true;
        if (!fs.changed_.wait_for(lock, fs.hold_limit_, [&] { return fs.released_; })) {
          fs.held_too_long_ = true;
          fs.released_ = true;
        }
      }
      fuse_reply_open(req, fi);
    };
    ops.read = [](fuse_req_t req, fuse_ino_t, size_t size, off_t offset, fuse_file_info*) {
      const std::string& text = self(req).script_;
      const std::size_t from = std::min(static_cast<std::size_t>(offset), text.size());
      const std::size_t n = std::min(size, text.size() - from);
      fuse_reply_buf(req, text.data() + from, n);
    };
    return ops;
  }

  const std::string script_;
  const std::chrono::seconds hold_limit_;
  scratch_dir base_{"sm-fuse"};
  std::filesystem::path mount_point_;
  fuse_session* session_ = nullptr;
  std::thread server_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_requested_ = false;  // guarded by mutex_, like the two below
  bool released_ = false;
  bool held_too_long_ = false;
};

}  // namespace test_support
