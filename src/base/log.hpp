// The process's log: one line per event on stderr, as text for people or JSON lines for
// collectors. Only the orchestrating code (app, api) logs; libraries return errors instead.
//
// Logging never blocks the caller (as PID 1, the caller is the executor that serves the API
// and renews the lease): a line is written at once if stderr takes it without waiting, else it
// goes into a bounded buffer that a writer thread of its own drains. When the reader of stderr
// stalls and the buffer is full, further lines are dropped and counted (dropped_lines()); once
// the writer gets through again, a warning line says how many were lost. stderr is looked at
// once, at the first line.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace sm::log {

enum class level { debug, info, warn, error };
enum class format { text, json };

std::optional<level> parse_level(std::string_view name);
std::optional<format> parse_format(std::string_view name);

// Not thread-safe: called once at start-up, before anything logs.
void configure(level min_level, format fmt);
bool enabled(level l);

struct field {
  std::string_view key;
  std::string value;
};

// Writes one line to stderr, or queues it; never waits for stderr. The writer sends whole lines of
// up to PIPE_BUF bytes (most) in single write(2)s, so they never interleave with a child's output.
// Thread-safe.
void write(level l, std::string_view message, std::initializer_list<field> fields = {});

// The line write() would queue, with its newline. Pure but for the clock.
std::string format_line(level l, std::string_view message, std::initializer_list<field> fields);

// Lines dropped since start because the buffer was full (stderr not read fast enough).
std::uint64_t dropped_lines();

// Waits until what was queued so far is written, for at most `timeout`; false if it is not.
// For the end of the process: a reader that stalls must not keep PID 1 from exiting.
bool flush(std::chrono::milliseconds timeout);

// The writer's buffer, as a plain value: lines in, batches out, bounded by bytes. Not
// thread-safe (the log holds it under its mutex); exposed for its tests.
class line_buffer {
 public:
  explicit line_buffer(std::size_t max_bytes) : max_bytes_(max_bytes) {}
  // Keeps `line` unless that would exceed the bound; then counts it as dropped. A line longer
  // than the whole bound is dropped too.
  bool push(std::string line);
  // Takes everything kept so far, in order, and the number of lines dropped since the last
  // take (all of them after the taken lines: once full, the buffer only drops until taken).
  struct batch {
    std::deque<std::string> lines;
    std::uint64_t dropped = 0;
  };
  batch take();
  bool empty() const { return lines_.empty() && dropped_ == 0; }
  std::size_t bytes() const { return bytes_; }

 private:
  std::size_t max_bytes_;
  std::size_t bytes_ = 0;
  std::deque<std::string> lines_;
  std::uint64_t dropped_ = 0;
};

inline void debug(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::debug, m, f);
}
inline void info(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::info, m, f);
}
inline void warn(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::warn, m, f);
}
inline void error(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::error, m, f);
}

// Appends `text` to `out` as the inside of a JSON string (quotes not included).
void append_json_escaped(std::string& out, std::string_view text);

}  // namespace sm::log
