#define FUSE_USE_VERSION 34
#include "fs/fuse_mount.hpp"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>
#include <system_error>
#include <thread>
#include <variant>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "async/offload.hpp"

namespace sm::fs {

namespace {

// Requests handled each time the descriptor is readable before the executor runs anything else:
// enough that operations arriving together share one metadata commit (posted after them), few
// enough that timers and HTTP clients are not kept waiting.
constexpr int requests_per_wake = 64;

// The mount's "major:minor" from /proc/self/mountinfo, read without touching the mount.
std::string device_of(const std::filesystem::path& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::string found;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, device, root, point;
    fields >> id >> parent >> device >> root >> point;
    if (point == mountpoint.string()) found = device;  // the last one is on top
  }
  return found;
}

}  // namespace

struct fuse_mount::impl : std::enable_shared_from_this<impl> {
  asio::any_io_executor executor;
  const fuse_lowlevel_ops& ops;
  void* userdata;
  fuse_session* session = nullptr;
  std::filesystem::path mountpoint;
  std::string device;
  bool is_mounted = false, has_ended = false;
  std::string why_ended;
  std::unique_ptr<asio::posix::stream_descriptor> fd;
  fuse_buf buffer{};
  std::unique_ptr<asio::steady_timer> ended_signal;
  std::function<void(const std::string&)> tell_end;

  // The notifier thread and its queue.
  struct inval_inode {
    std::uint64_t ino;
  };
  struct inval_entry {
    std::uint64_t parent;
    std::string name;
  };
  std::mutex notify_mutex;
  std::condition_variable notify_ready;
  std::deque<std::variant<inval_inode, inval_entry>> notifications;
  bool notifier_stop = false;
  std::thread notifier;

  impl(asio::any_io_executor ex, const fuse_lowlevel_ops& o, void* u)
      : executor(ex), ops(o), userdata(u) {}

  ~impl() {
    stop_notifier();
    if (fd) fd->release();  // libfuse owns the descriptor
    if (session) {
      if (is_mounted) ::umount2(mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
      fuse_session_destroy(session);
    }
    std::free(buffer.mem);
  }

  void stop_notifier() {
    {
      std::lock_guard lock(notify_mutex);
      notifier_stop = true;
    }
    notify_ready.notify_all();
    if (notifier.joinable()) notifier.join();
  }

  void notify(std::variant<inval_inode, inval_entry> what) {
    std::lock_guard lock(notify_mutex);
    if (notifier_stop || !session) return;
    notifications.push_back(std::move(what));
    if (!notifier.joinable()) {
      notifier = std::thread([this] { run_notifier(); });
    }
    notify_ready.notify_one();
  }

  void run_notifier() {
    std::unique_lock lock(notify_mutex);
    while (true) {
      notify_ready.wait(lock, [&] { return notifier_stop || !notifications.empty(); });
      if (notifier_stop) return;
      auto next = std::move(notifications.front());
      notifications.pop_front();
      lock.unlock();
      // -ENOENT: the kernel no longer caches it, which is what was wanted.
      if (const auto* i = std::get_if<inval_inode>(&next)) {
        fuse_lowlevel_notify_inval_inode(session, i->ino, 0, 0);
      } else if (const auto* e = std::get_if<inval_entry>(&next)) {
        fuse_lowlevel_notify_inval_entry(session, e->parent, e->name.data(), e->name.size());
      }
      lock.lock();
    }
  }

  void end(std::string why) {
    if (has_ended) return;
    has_ended = true;
    why_ended = std::move(why);
    if (ended_signal) ended_signal->cancel();
    if (auto tell = std::move(tell_end)) tell(why_ended);
  }

  // Reads and dispatches requests until the session ends.
  asio::awaitable<void> serve() {
    auto self = shared_from_this();  // the loop keeps the session's state alive
    while (!has_ended) {
      std::error_code ec;
      co_await fd->async_wait(asio::posix::stream_descriptor::wait_read,
                              asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        end("the session's wait failed: " + ec.message());
        break;
      }
      for (int i = 0; i < requests_per_wake && !has_ended; ++i) {
        const int got = fuse_session_receive_buf(session, &buffer);
        if (got == -EINTR) continue;
        if (got == -EAGAIN) break;
        if (got <= 0 || fuse_session_exited(session)) {
          end(got < 0 ? std::error_code(-got, std::generic_category()).message()
                      : "unmounted");
          break;
        }
        try {
          fuse_session_process_buf(session, &buffer);
        } catch (...) {
          // The operations answer their own failures; nothing may end the loop that serves
          // every other request.
        }
      }
    }
  }
};

fuse_mount::fuse_mount(asio::any_io_executor executor, const fuse_lowlevel_ops& ops,
                       void* userdata)
    : impl_(std::make_shared<impl>(executor, ops, userdata)) {}

fuse_mount::~fuse_mount() = default;

asio::awaitable<void> fuse_mount::mount(std::filesystem::path mountpoint,
                                        std::vector<std::string> options) {
  auto m = impl_;
  std::string joined;
  for (const std::string& o : options) joined += (joined.empty() ? "" : ",") + o;
  std::vector<std::string> argv_text = {"state-manager"};
  if (!joined.empty()) {
    argv_text.push_back("-o");
    argv_text.push_back(joined);
  }
  std::vector<char*> argv;
  for (std::string& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv_text.size()), argv.data());
  m->session = fuse_session_new(&args, &m->ops, sizeof(fuse_lowlevel_ops), m->userdata);
  fuse_opt_free_args(&args);
  if (!m->session) {
    throw std::system_error(EINVAL, std::generic_category(),
                            "libfuse refused the session's options (" + joined + ")");
  }
  int mounted = -1;
  co_await offload([&] { mounted = fuse_session_mount(m->session, mountpoint.c_str()); });
  if (mounted != 0) {
    fuse_session_destroy(m->session);
    m->session = nullptr;
    throw std::system_error(EIO, std::generic_category(),
                            "cannot mount a FUSE file system at " + mountpoint.string() +
                                " (is /dev/fuse there, and may this process mount?)");
  }
  m->is_mounted = true;
  m->mountpoint = mountpoint;
  const int fd = fuse_session_fd(m->session);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  m->fd = std::make_unique<asio::posix::stream_descriptor>(m->executor, fd);
  m->ended_signal = std::make_unique<asio::steady_timer>(m->executor);
  m->ended_signal->expires_at(asio::steady_timer::time_point::max());
  asio::co_spawn(m->executor, m->serve(), asio::detached);
  co_await offload([&] { m->device = device_of(mountpoint); });
}

asio::awaitable<void> fuse_mount::unmount(std::chrono::milliseconds grace) {
  auto m = impl_;
  if (!m->session || !m->is_mounted) co_return;
  if (!m->has_ended) {
    // A plain unmount first: it succeeds when nobody uses the file system, and the session
    // ends at once. Busy, it is detached instead, and served until its last user goes.
    const std::filesystem::path at = m->mountpoint;
    co_await offload([&] {
      if (::umount2(at.c_str(), UMOUNT_NOFOLLOW) != 0 && errno == EBUSY) {
        ::umount2(at.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
      }
    });
    if (!m->has_ended && m->ended_signal) {
      m->ended_signal->expires_after(grace);
      std::error_code ec;
      co_await m->ended_signal->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }
  m->end("unmounted");
  m->stop_notifier();
  if (m->fd) m->fd->cancel();
  m->is_mounted = false;
}

asio::awaitable<void> fuse_mount::close_session() {
  auto m = impl_;
  if (!m->session) co_return;
  m->end("closed");
  m->stop_notifier();
  if (m->fd) {
    m->fd->cancel();
    m->fd->release();
    m->fd.reset();
  }
  // Closes the descriptor: a mount still in use (detached, its grace over) is cut off, and its
  // users see ENOTCONN. The mount itself is gone already (unmount()): libfuse's own unmount
  // would only complain that there is none.
  co_await offload([&] {
    fuse_session_destroy(m->session);
    m->session = nullptr;
  });
}

bool fuse_mount::mounted() const { return impl_->is_mounted && !impl_->has_ended; }
void fuse_mount::on_end(std::function<void(const std::string&)> tell) {
  impl_->tell_end = std::move(tell);
}
bool fuse_mount::ended() const { return impl_->has_ended; }
std::string fuse_mount::end_reason() const { return impl_->why_ended; }
const std::string& fuse_mount::device() const { return impl_->device; }

void fuse_mount::invalidate_inode(std::uint64_t ino) { impl_->notify(impl::inval_inode{ino}); }
void fuse_mount::invalidate_entry(std::uint64_t parent, std::string name) {
  impl_->notify(impl::inval_entry{parent, std::move(name)});
}

bool fuse_mount::clear_stale_mount(const std::filesystem::path& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0 || errno != ENOTCONN) return false;
  if (::umount2(dir.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
    throw std::system_error(errno, std::generic_category(),
                            "cannot clear the stale mount at " + dir.string());
  }
  return true;
}

}  // namespace sm::fs
