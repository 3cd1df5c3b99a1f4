#define BOOST_TEST_MODULE base_file
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "base/file.hpp"

namespace fs = std::filesystem;

namespace {

// A fresh directory per test case, removed afterwards whatever happened.
struct scratch {
  fs::path dir;
  scratch() {
    std::string pattern = (fs::temp_directory_path() / "sm-file-test.XXXXXX").string();
    BOOST_REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    dir = pattern;
  }
  ~scratch() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
};

void write_plain(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(read_missing_is_nullopt, scratch) {
  BOOST_TEST(!sm::read_file(dir / "absent").has_value());
}

BOOST_FIXTURE_TEST_CASE(read_regular_file, scratch) {
  write_plain(dir / "f", std::string("a\0b", 3));
  BOOST_TEST(sm::read_file(dir / "f").value() == std::string("a\0b", 3));
}

BOOST_FIXTURE_TEST_CASE(fifo_is_refused_without_waiting, scratch) {
  // Opening a FIFO for reading blocks until a writer comes; start-up must never hang on one.
  BOOST_REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  BOOST_CHECK_THROW(sm::read_file(dir / "fifo"), std::system_error);
}

BOOST_FIXTURE_TEST_CASE(directory_is_refused, scratch) {
  fs::create_directory(dir / "d");
  BOOST_CHECK_THROW(sm::read_file(dir / "d"), std::system_error);
}

BOOST_FIXTURE_TEST_CASE(too_large_is_refused, scratch) {
  write_plain(dir / "big", std::string(100, 'x'));
  BOOST_CHECK_THROW(sm::read_file(dir / "big", 99), std::system_error);
  BOOST_TEST(sm::read_file(dir / "big", 100).value().size() == 100u);
}

BOOST_FIXTURE_TEST_CASE(pipe_allowed_when_asked, scratch) {
  int fds[2];
  BOOST_REQUIRE(::pipe(fds) == 0);
  BOOST_REQUIRE(::write(fds[1], "token\n", 6) == 6);
  ::close(fds[1]);
  const auto text = sm::read_file("/proc/self/fd/" + std::to_string(fds[0]), 64, true);
  ::close(fds[0]);
  BOOST_TEST(text.value() == "token\n");
}

BOOST_FIXTURE_TEST_CASE(atomic_write_sets_mode_and_replaces, scratch) {
  const fs::path target = dir / "config.json";
  const mode_t old_umask = ::umask(0);  // the mode must not depend on the umask
  sm::write_file_atomically(target, "one", 0600);
  ::umask(old_umask);
  struct stat st {};
  BOOST_REQUIRE(::stat(target.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 07777) == 0600u);
  sm::write_file_atomically(target, "two", 0600);
  BOOST_TEST(sm::read_file(target).value() == "two");
  BOOST_TEST(!fs::exists(dir / "config.json.tmp"));
}

BOOST_FIXTURE_TEST_CASE(atomic_write_replaces_stale_temporary_and_never_follows_links, scratch) {
  const fs::path target = dir / "config.json";
  // A symlink where the temporary goes must not redirect the write elsewhere.
  write_plain(dir / "victim", "untouched");
  fs::create_symlink(dir / "victim", dir / "config.json.tmp");
  sm::write_file_atomically(target, "new", 0600);
  BOOST_TEST(sm::read_file(target).value() == "new");
  BOOST_TEST(sm::read_file(dir / "victim").value() == "untouched");
  BOOST_TEST(!fs::is_symlink(target));
}

BOOST_FIXTURE_TEST_CASE(set_aside_never_overwrites, scratch) {
  const fs::path file = dir / "config.json";
  write_plain(file, "first");
  BOOST_TEST(sm::set_file_aside(file, ".invalid") == dir / "config.json.invalid");
  write_plain(file, "second");
  BOOST_TEST(sm::set_file_aside(file, ".invalid") == dir / "config.json.invalid.1");
  BOOST_TEST(sm::read_file(dir / "config.json.invalid").value() == "first");
  BOOST_TEST(sm::read_file(dir / "config.json.invalid.1").value() == "second");
  BOOST_TEST(!fs::exists(file));
}

BOOST_FIXTURE_TEST_CASE(ensure_directory_creates_parents_and_refuses_files, scratch) {
  sm::ensure_directory(dir / "a" / "b", 0755);
  BOOST_TEST(fs::is_directory(dir / "a" / "b"));
  sm::ensure_directory(dir / "a" / "b", 0755);  // existing is fine
  write_plain(dir / "plain", "x");
  BOOST_CHECK_THROW(sm::ensure_directory(dir / "plain", 0755), std::system_error);
}
