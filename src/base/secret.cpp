#include "base/secret.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

namespace sm {

bool constant_time_equal(std::string_view given, std::string_view expected) {
  // volatile keeps the compiler from turning the loop into an early-exit memcmp.
  volatile unsigned char difference = given.size() == expected.size() ? 0 : 1;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    difference = difference | (g ^ static_cast<unsigned char>(expected[i]));
  }
  return difference == 0;
}

namespace {

// The process's original environment block: what /proc/<pid>/environ shows.
struct environment_block {
  char* start = nullptr;
  char* end = nullptr;
};

// From /proc/self/stat: after the command's name (in parentheses, and it may hold spaces and
// parentheses itself, hence the last ')'), field 3 onwards separated by spaces; env_start and
// env_end are fields 50 and 51 (Linux 3.5).
environment_block read_environment_block() {
  environment_block block;
  const int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return block;
  char text[4096];
  std::size_t size = 0;
  for (;;) {
    const ssize_t n = ::read(fd, text + size, sizeof text - 1 - size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    size += static_cast<std::size_t>(n);
    if (size == sizeof text - 1) break;
  }
  ::close(fd);
  const std::string_view stat(text, size);
  const std::size_t paren = stat.rfind(')');
  if (paren == std::string_view::npos) return block;
  std::vector<std::string_view> fields;  // fields[0] is field 3
  for (std::size_t at = paren + 1; at < stat.size();) {
    while (at < stat.size() && (stat[at] == ' ' || stat[at] == '\n')) ++at;
    const std::size_t next = stat.find_first_of(" \n", at);
    const std::size_t stop = next == std::string_view::npos ? stat.size() : next;
    if (stop > at) fields.push_back(stat.substr(at, stop - at));
    at = stop;
  }
  if (fields.size() < 49) return block;
  const auto number = [](std::string_view field) {
    return std::strtoull(std::string(field).c_str(), nullptr, 10);
  };
  const unsigned long long start = number(fields[50 - 3]), end = number(fields[51 - 3]);
  if (start == 0 || end <= start) return block;
  block.start = reinterpret_cast<char*>(static_cast<std::uintptr_t>(start));
  block.end = reinterpret_cast<char*>(static_cast<std::uintptr_t>(end));
  return block;
}

const environment_block& original_environment_block() {
  static const environment_block block = read_environment_block();
  return block;
}

// Guards the kept values and the environment's changes (the executor's thread and main; the
// lock costs nothing and keeps a stray caller from another thread safe).
std::mutex& lock() {
  static std::mutex m;
  return m;
}
std::map<std::string, std::string, std::less<>>& kept() {
  static std::map<std::string, std::string, std::less<>> values;
  return values;
}

void scrub_locked(const std::string& name) {
  ::unsetenv(name.c_str());
  const environment_block& block = original_environment_block();
  if (!block.start) return;
  for (char* entry = block.start; entry < block.end;) {
    const std::size_t left = static_cast<std::size_t>(block.end - entry);
    char* nul = static_cast<char*>(std::memchr(entry, '\0', left));
    const std::size_t length = nul ? static_cast<std::size_t>(nul - entry) : left;
    const std::string_view text(entry, length);
    if (text.size() > name.size() && text.starts_with(name) && text[name.size()] == '=') {
      // The whole entry, name too: nothing says which secret was there.
      std::memset(entry, 0, length);
      // The compiler must not drop the stores as dead: the kernel reads them, not this program.
      asm volatile("" : : "r"(entry) : "memory");
    }
    entry += length + 1;
  }
}

}  // namespace

void scrub_environment_variable(const std::string& name) {
  const std::lock_guard<std::mutex> hold(lock());
  scrub_locked(name);
}

std::optional<std::string> take_environment_secret(const std::string& name) {
  const std::lock_guard<std::mutex> hold(lock());
  if (auto found = kept().find(name); found != kept().end()) return found->second;
  const char* value = std::getenv(name.c_str());
  if (!value) return std::nullopt;
  std::string copy(value);
  kept().emplace(name, copy);
  scrub_locked(name);
  return copy;
}

std::optional<std::string> environment_value(const std::string& name) {
  const std::lock_guard<std::mutex> hold(lock());
  if (auto found = kept().find(name); found != kept().end()) return found->second;
  const char* value = std::getenv(name.c_str());
  if (!value) return std::nullopt;
  return std::string(value);
}

}  // namespace sm
