#include "proc/child.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include <asio/redirect_error.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "async/offload.hpp"

extern char** environ;

namespace sm::proc {

namespace {

// glibc 2.36 has no pidfd_open wrapper that C++ can include cleanly.
int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

exit_status status_of(const siginfo_t& info) {
  exit_status s;
  if (info.si_code == CLD_EXITED) {
    s.code = info.si_status;
  } else {
    s.signal = info.si_status;
    s.core_dumped = info.si_code == CLD_DUMPED;
  }
  return s;
}

// The environment the child gets: ours, with the request's additions and removals.
std::vector<std::string> child_environment(const spawn_request& request) {
  std::vector<std::string> out;
  for (char** entry = environ; *entry; ++entry) {
    const std::string_view text(*entry);
    const std::string_view name = text.substr(0, text.find('='));
    bool drop = request.extra_env.count(std::string(name)) > 0;
    for (const std::string& unset : request.unset_env) drop = drop || name == unset;
    if (!drop) out.emplace_back(text);
  }
  for (const auto& [name, value] : request.extra_env) out.push_back(name + "=" + value);
  return out;
}

struct spawn_attributes {
  posix_spawnattr_t attr;
  spawn_attributes() {
    posix_spawnattr_init(&attr);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    // POSIX_SPAWN_SETSIGDEF resets every signal we catch or ignore (SIGPIPE, SIGTERM...) to its
    // default in the child; SETSIGMASK unblocks everything; SETPGROUP with 0 makes a new group.
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(
        &attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
  }
  ~spawn_attributes() { posix_spawnattr_destroy(&attr); }
};

}  // namespace

int exec_failure_status(int error) {
  return error == ENOENT || error == ENOTDIR ? 127 : 126;
}

asio::awaitable<child> spawn(reaper& reaper, spawn_request request) {
  if (request.argv.empty() || request.argv.front().empty()) {
    throw std::system_error(ENOENT, std::generic_category(), "no command");
  }
  const asio::any_io_executor executor = co_await asio::this_coro::executor;
  std::vector<char*> argv;
  for (const std::string& arg : request.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  // Our environment is read here, on the executor, where it is changed if ever.
  const std::vector<std::string> env_strings = child_environment(request);
  std::vector<char*> envp;
  for (const std::string& entry : env_strings) envp.push_back(const_cast<char*>(entry.c_str()));
  envp.push_back(nullptr);

  static const spawn_attributes attributes;
  // Pipes for a captured stdout and stderr: the child's ends become its fds 1 and 2 (dup2
  // clears O_CLOEXEC there); every pipe fd itself is O_CLOEXEC, so nothing else inherits them.
  int pipes[2][2] = {{-1, -1}, {-1, -1}};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  struct cleanup {
    posix_spawn_file_actions_t& actions;
    int (&pipes)[2][2];
    ~cleanup() {
      posix_spawn_file_actions_destroy(&actions);
      for (auto& p : pipes) {
        for (int fd : p) {
          if (fd >= 0) ::close(fd);
        }
      }
    }
  } guard{actions, pipes};
  if (request.capture_output) {
    for (int i = 0; i < 2; ++i) {
      if (::pipe2(pipes[i], O_CLOEXEC) != 0) {
        throw std::system_error(errno, std::generic_category(), "pipe");
      }
      posix_spawn_file_actions_adddup2(&actions, pipes[i][1], i + 1);
    }
  }
  pid_t pid = 0;
  int pidfd = -1;
  reaper.start_began();
  try {
    // Its own worker: never the executor's thread (posix_spawnp blocks until the exec is done),
    // never queued behind file work.
    co_await sm::offload_spawn([&] {
      // glibc's posix_spawnp uses clone(CLONE_VM|CLONE_VFORK): no page-table copy, whatever
      // our size, and a failed exec comes back here as the error code.
      const int error =
          ::posix_spawnp(&pid, argv[0], &actions, &attributes.attr, argv.data(), envp.data());
      if (error != 0) {
        throw std::system_error(error, std::generic_category(),
                                "cannot execute " + request.argv[0]);
      }
      // The child cannot have been reaped yet: the reaper puts reaping off while a start is
      // in flight, and owners reap only their own children, through their pidfds.
      pidfd = pidfd_open(pid);
      if (pidfd < 0) {
        const int e = errno;
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        throw std::system_error(e, std::generic_category(), "pidfd_open");
      }
    });
  } catch (...) {
    reaper.start_ended(0);
    throw;
  }
  reaper.start_ended(pid);
  child started(pid, asio::posix::stream_descriptor(executor, pidfd));
  if (request.capture_output) {
    for (int i = 0; i < 2; ++i) {
      ::close(pipes[i][1]);  // the child's end: ours would keep the pipe open after it exits
      pipes[i][1] = -1;
      started.output[i].emplace(executor, pipes[i][0]);
      pipes[i][0] = -1;  // owned by the descriptor now
    }
  }
  co_return started;
}

reaper::reaper(asio::any_io_executor executor) : sigchld_(executor, {SIGCHLD}) {}

bool reaper::adopt_orphans() {
  if (::getpid() == 1) return true;
  return ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0;
}

asio::awaitable<void> reaper::run() {
  while (!stopped_) {
    const int signal = co_await sigchld_.next();
    if (signal == 0 || stopped_) co_return;
    reap_orphans();
  }
}

void reaper::start_ended(pid_t pid) {
  if (pid > 0) {
    // A status kept under this pid belongs to an earlier child, never awaited, whose pid was
    // reused: this one cannot have been reaped yet.
    handed_over_.erase(pid);
    awaited_.insert(pid);
  }
  if (--starts_in_flight_ == 0 && reap_put_off_) {
    reap_put_off_ = false;
    reap_orphans();
  }
}

void reaper::reap_orphans() {
  if (starts_in_flight_ > 0) {
    reap_put_off_ = true;
    return;
  }
  for (;;) {
    siginfo_t info{};
    if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG) != 0 || info.si_pid == 0) return;
    if (awaited_.count(info.si_pid)) {
      // Its owner's: kept for wait(), which its pidfd (readable now) wakes.
      handed_over_[info.si_pid] = status_of(info);
    } else {
      ++orphans_reaped_;
    }
  }
}

asio::awaitable<exit_status> reaper::wait(child& c) {
  awaited_.insert(c.pid_);
  exit_status status;
  for (;;) {
    // Reaped already by reap_orphans() (SIGCHLD came first)?
    if (const auto it = handed_over_.find(c.pid_); it != handed_over_.end()) {
      status = it->second;
      handed_over_.erase(it);
      break;
    }
    std::error_code ec;
    co_await c.pidfd_.async_wait(asio::posix::stream_descriptor::wait_read,
                                 asio::redirect_error(asio::use_awaitable, ec));
    if (handed_over_.count(c.pid_)) continue;
    siginfo_t info{};
    const int r = ::waitid(static_cast<idtype_t>(P_PIDFD),
                           static_cast<id_t>(c.pidfd_.native_handle()), &info, WEXITED | WNOHANG);
    if (r == 0 && info.si_pid != 0) {
      status = status_of(info);
      break;
    }
    if (r != 0 && !handed_over_.count(c.pid_)) {
      // Neither we nor the reaper have its status: it cannot be had (never expected).
      status.code = 255;
      break;
    }
  }
  awaited_.erase(c.pid_);
  std::error_code ignored;
  c.pidfd_.close(ignored);
  co_return status;
}

}  // namespace sm::proc
