#include "base/log.hpp"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "base/clock.hpp"

namespace sm::log {

namespace {
// Set once at start-up; atomic because the writer thread formats its "dropped" notice too.
std::atomic<level> min_level_ = level::info;
std::atomic<format> format_ = format::text;

// What the writer may hold while stderr is not read: about 10,000 ordinary lines. Beyond it,
// lines are dropped rather than let memory grow or the caller wait.
constexpr std::size_t max_buffered_bytes = 1024 * 1024;
// How long the end of the process waits for buffered lines to go out.
constexpr std::chrono::milliseconds exit_flush_timeout{2000};

constexpr std::string_view level_names[] = {"debug", "info", "warn", "error"};

std::string_view name_of(level l) {
  return level_names[static_cast<int>(l)];
}

bool needs_quotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x20) return true;
  }
  return false;
}

// Blocking, on the writer thread only. stderr's description is shared with the children (a
// pipe, a terminal): it is never switched to O_NONBLOCK, which they would see too. Should
// someone else have done so, EAGAIN waits in poll(2) instead of spinning.
void write_all(std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(STDERR_FILENO, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{STDERR_FILENO, POLLOUT, 0};
      ::poll(&p, 1, -1);
      continue;
    }
    if (n <= 0) return;  // Nowhere left to report a failing stderr.
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Whole lines, packed into writes of at most PIPE_BUF bytes: the kernel writes those to a pipe
// atomically, so a child's output never lands in the middle of a line. A longer line goes out
// alone (as it always did).
void write_lines(const std::deque<std::string>& lines) {
  std::string chunk;
  for (const std::string& line : lines) {
    if (!chunk.empty() && chunk.size() + line.size() > PIPE_BUF) {
      write_all(chunk);
      chunk.clear();
    }
    if (line.size() > PIPE_BUF) {
      write_all(line);
    } else {
      chunk += line;
    }
  }
  if (!chunk.empty()) write_all(chunk);
}

// How a caller writes a line at once, without ever waiting. O_NONBLOCK cannot be set on
// stderr's description: the children share it and would see EAGAIN. So a pipe or terminal is
// reopened (/proc/self/fd/2) as a description of our own with O_NONBLOCK; a socket takes
// MSG_DONTWAIT on each send; a regular file does not stall and is written as it is. Anything
// else (or no /proc) has no direct path: every line goes through the writer thread.
struct direct_path {
  enum class kind { none, file, reopened, socket } how = kind::none;
  int fd = -1;  // the reopened description's (never closed: it lives as long as the process)

  static direct_path of_stderr() {
    struct stat st {};
    if (::fstat(STDERR_FILENO, &st) != 0) return {};
    if (S_ISREG(st.st_mode)) return {kind::file, STDERR_FILENO};
    if (S_ISSOCK(st.st_mode)) return {kind::socket, STDERR_FILENO};
    if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) return {};
    // O_NOCTTY: as PID 1 without a controlling terminal, opening a tty must not acquire one.
    const int own = ::open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (own < 0) return {};
    return {kind::reopened, own};
  }

  // Writes what it can of `data` without waiting, and leaves in it what must wait.
  void write_some(std::string_view& data) const {
    while (!data.empty()) {
      const ssize_t n = how == kind::socket
                            ? ::send(fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL)
                            : ::write(fd, data.data(), data.size());
      if (n > 0) {
        data.remove_prefix(static_cast<std::size_t>(n));
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
      } else {
        data = {};  // the reader is gone: dropped, as the writer thread would
      }
    }
  }
};

// The writer: while stderr keeps up, each caller writes its line itself, at once (so a line is
// out before, say, the response that follows it). Once stderr stops taking lines, what is left
// goes into the bounded buffer, and a thread of its own drains it with ordinary blocking writes:
// a stderr that does not drain blocks that thread and nothing else. While the buffer holds
// anything, later lines queue behind it, so the order stays. (Base stays free of Asio.)
struct writer {
  direct_path direct = direct_path::of_stderr();  // stderr as it was at the first line
  std::mutex mutex;
  std::condition_variable queued;          // a line was pushed
  std::condition_variable drained;         // the buffer is empty and nothing is being written
  line_buffer buffer{max_buffered_bytes};  // guarded by mutex
  bool writing = false;                    // guarded by mutex: a taken batch is being written
  std::atomic<std::uint64_t> dropped_total{0};

  void run() {
    std::unique_lock lock(mutex);
    for (;;) {
      queued.wait(lock, [&] { return !buffer.empty(); });
      line_buffer::batch b = buffer.take();
      writing = true;
      lock.unlock();
      write_lines(b.lines);
      if (b.dropped > 0) {
        write_all(
            format_line(level::warn, "log lines dropped", {{"count", std::to_string(b.dropped)}}));
      }
      lock.lock();
      writing = false;
      if (buffer.empty()) drained.notify_all();
    }
  }
};

// Started on first use, with every signal blocked (they are the executor's to receive, through
// signalfd and signal_set; a default action taken on this thread could end the process), and
// never destroyed: at exit the thread may still be inside a write(2) on a stalled stderr, and
// must not find its mutex gone. The end of the process waits a bounded time for the rest.
writer& the_writer() {
  static writer* const w = [] {
    auto* made = new writer;
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &previous);
    std::thread(&writer::run, made).detach();
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    std::atexit([] { flush(exit_flush_timeout); });
    return made;
  }();
  return *w;
}
}  // namespace

bool line_buffer::push(std::string line) {
  if (line.size() > max_bytes_ - bytes_) {  // bytes_ <= max_bytes_ always
    ++dropped_;
    return false;
  }
  bytes_ += line.size();
  lines_.push_back(std::move(line));
  return true;
}

line_buffer::batch line_buffer::take() {
  batch b;
  b.lines.swap(lines_);
  b.dropped = dropped_;
  bytes_ = 0;
  dropped_ = 0;
  return b;
}

std::uint64_t dropped_lines() {
  return the_writer().dropped_total.load(std::memory_order_relaxed);
}

bool flush(std::chrono::milliseconds timeout) {
  writer& w = the_writer();
  std::unique_lock lock(w.mutex);
  return w.drained.wait_for(lock, timeout, [&] { return !w.writing && w.buffer.empty(); });
}

std::optional<level> parse_level(std::string_view name) {
  for (int i = 0; i < 4; ++i) {
    if (name == level_names[i]) return static_cast<level>(i);
  }
  if (name == "warning") return level::warn;
  return std::nullopt;
}

std::optional<format> parse_format(std::string_view name) {
  if (name == "text") return format::text;
  if (name == "json") return format::json;
  return std::nullopt;
}

void configure(level min_level, format fmt) {
  min_level_ = min_level;
  format_ = fmt;
}

bool enabled(level l) {
  return l >= min_level_;
}

void append_json_escaped(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out += hex[u >> 4];
          out += hex[u & 15];
        } else {
          out += c;
        }
    }
  }
}

void write(level l, std::string_view message, std::initializer_list<field> fields) {
  if (!enabled(l)) return;
  std::string line = format_line(l, message, fields);
  writer& w = the_writer();
  {
    std::lock_guard lock(w.mutex);
    if (w.buffer.empty() && !w.writing && w.direct.how != direct_path::kind::none) {
      std::string_view rest = line;
      w.direct.write_some(rest);
      if (rest.empty()) return;
      line.erase(0, line.size() - rest.size());
    }
    if (!w.buffer.push(std::move(line))) {
      w.dropped_total.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  w.queued.notify_one();
}

std::string format_line(level l, std::string_view message, std::initializer_list<field> fields) {
  const std::string time = format_rfc3339(std::chrono::system_clock::now(), true);
  std::string line;
  line.reserve(128);
  if (format_ == format::json) {
    line += "{\"time\":\"" + time + "\",\"level\":\"";
    line += name_of(l);
    line += "\",\"msg\":\"";
    append_json_escaped(line, message);
    line += '"';
    for (const field& f : fields) {
      line += ",\"";
      append_json_escaped(line, f.key);
      line += "\":\"";
      append_json_escaped(line, f.value);
      line += '"';
    }
    line += "}\n";
  } else {
    line += time;
    line += ' ';
    line += name_of(l);
    line.append(6 - name_of(l).size(), ' ');
    line += message;
    for (const field& f : fields) {
      line += ' ';
      line += f.key;
      line += '=';
      if (needs_quotes(f.value)) {
        line += '"';
        append_json_escaped(line, f.value);
        line += '"';
      } else {
        line += f.value;
      }
    }
    line += '\n';
  }
  return line;
}

}  // namespace sm::log
