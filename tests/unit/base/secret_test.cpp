#define BOOST_TEST_MODULE secret
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "base/secret.hpp"

using sm::constant_time_equal;
using namespace std::string_view_literals;

BOOST_AUTO_TEST_CASE(equal_strings) {
  BOOST_TEST(constant_time_equal("s3cret-token", "s3cret-token"));
  BOOST_TEST(constant_time_equal("a", "a"));
}

BOOST_AUTO_TEST_CASE(different_same_length) {
  BOOST_TEST(!constant_time_equal("s3cret-tokeN", "s3cret-token"));
  BOOST_TEST(!constant_time_equal("X3cret-token", "s3cret-token"));
  BOOST_TEST(!constant_time_equal("b", "a"));
}

BOOST_AUTO_TEST_CASE(different_lengths) {
  BOOST_TEST(!constant_time_equal("short", "much-longer-secret"));
  BOOST_TEST(!constant_time_equal("much-longer-secret", "short"));
}

BOOST_AUTO_TEST_CASE(prefixes_are_not_equal) {
  BOOST_TEST(!constant_time_equal("abc", "abcd"));
  BOOST_TEST(!constant_time_equal("abcd", "abc"));
  // A given value that is the expected one plus trailing NULs is still different.
  BOOST_TEST(!constant_time_equal("abc\0"sv, "abc"sv));
  BOOST_TEST(!constant_time_equal("abc"sv, "abc\0"sv));
}

BOOST_AUTO_TEST_CASE(empty) {
  BOOST_TEST(constant_time_equal("", ""));
  BOOST_TEST(!constant_time_equal("", "x"));
  BOOST_TEST(!constant_time_equal("x", ""));
}

BOOST_AUTO_TEST_CASE(embedded_nul_and_high_bytes) {
  BOOST_TEST(constant_time_equal("a\0b"sv, "a\0b"sv));
  BOOST_TEST(!constant_time_equal("a\0b"sv, "a\0c"sv));
  BOOST_TEST(constant_time_equal("\xff\x80"sv, "\xff\x80"sv));
  BOOST_TEST(!constant_time_equal("\xff\x80"sv, "\xff\x81"sv));
}

BOOST_AUTO_TEST_CASE(every_single_byte_difference_detected) {
  const std::string expected = "0123456789abcdef0123456789abcdef";
  for (std::size_t i = 0; i < expected.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string given = expected;
      given[i] = static_cast<char>(given[i] ^ (1 << bit));
      BOOST_TEST_INFO("byte " << i << " bit " << bit);
      BOOST_TEST(!constant_time_equal(given, expected));
    }
  }
}

namespace {

std::string own_environ_block() {
  std::ifstream in("/proc/self/environ", std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

constexpr const char* child_variable = "SM_SECRET_TEST_TOKEN";
constexpr const char* child_value = "s3cret-in-the-original-block";

}  // namespace

// Run in a child started by the case below, with the variable in its original environment block
// (what the kernel shows in /proc/<pid>/environ): on its own, it has nothing to check.
BOOST_AUTO_TEST_CASE(scrub_child) {
  if (!std::getenv("SM_SECRET_TEST_CHILD")) return;
  BOOST_TEST_REQUIRE(own_environ_block().find(child_value) != std::string::npos);
  sm::scrub_environment_variable(child_variable);
  BOOST_TEST(std::getenv(child_variable) == nullptr);
  const std::string block = own_environ_block();
  BOOST_TEST(block.find(child_value) == std::string::npos);
  BOOST_TEST(block.find(child_variable) == std::string::npos);
  // The others are left as they were.
  BOOST_TEST(block.find("SM_SECRET_TEST_CHILD=1") != std::string::npos);
  BOOST_TEST(std::getenv("SM_SECRET_TEST_CHILD") != nullptr);
}

BOOST_AUTO_TEST_CASE(scrub_overwrites_the_original_environment_block) {
  if (std::getenv("SM_SECRET_TEST_CHILD")) return;
  const pid_t pid = ::fork();
  BOOST_TEST_REQUIRE(pid >= 0);
  if (pid == 0) {
    const std::string variable = std::string(child_variable) + "=" + child_value;
    char* argv[] = {const_cast<char*>("secret_test"), const_cast<char*>("--run_test=scrub_child"),
                    nullptr};
    char* envp[] = {const_cast<char*>("SM_SECRET_TEST_CHILD=1"),
                    const_cast<char*>(variable.c_str()), nullptr};
    ::execve("/proc/self/exe", argv, envp);
    ::_exit(127);
  }
  int status = 0;
  BOOST_TEST_REQUIRE(::waitpid(pid, &status, 0) == pid);
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 0);
}

BOOST_AUTO_TEST_CASE(a_taken_secret_leaves_the_environment_and_stays_in_memory) {
  ::setenv("SM_SECRET_TEST_TAKEN", "kept-value", 1);
  BOOST_TEST(sm::environment_value("SM_SECRET_TEST_TAKEN").value_or("") == "kept-value");
  BOOST_TEST(sm::take_environment_secret("SM_SECRET_TEST_TAKEN").value_or("") == "kept-value");
  BOOST_TEST(std::getenv("SM_SECRET_TEST_TAKEN") == nullptr);
  // Read again (a configuration applied anew): the same value, from memory.
  BOOST_TEST(sm::environment_value("SM_SECRET_TEST_TAKEN").value_or("") == "kept-value");
  BOOST_TEST(sm::take_environment_secret("SM_SECRET_TEST_TAKEN").value_or("") == "kept-value");
  BOOST_TEST(!sm::take_environment_secret("SM_SECRET_TEST_NEVER_SET"));
  BOOST_TEST(!sm::environment_value("SM_SECRET_TEST_NEVER_SET"));
}
