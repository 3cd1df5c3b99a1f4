// Shared by the io_uring tests: a test module needing io_uring skips as a whole (exit 77, which
// Meson reads as SKIP) where the kernel refuses rings (ENOSYS, or EPERM under seccomp or
// kernel.io_uring_disabled), rather than failing; and whole-file helpers.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <system_error>

#include <asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include "uring/ring.hpp"

#include "support/seeded_random.hpp"

namespace test_support {

// Declare with BOOST_TEST_GLOBAL_FIXTURE(require_io_uring).
struct require_io_uring {
  require_io_uring() {
    asio::io_context io;
    try {
      sm::uring::ring probe(io.get_executor());
    } catch (const std::system_error& e) {
      std::cerr << "skipped: no io_uring here: " << e.what() << "\n";
      std::exit(77);
    }
  }
};

inline std::string random_bytes(std::size_t size, std::uint64_t seed) {
  sm::test::seeded_random random{seed};
  std::string bytes(size, '\0');
  std::size_t i = 0;
  for (; i + 4 <= size; i += 4) {
    const std::uint32_t word = random.next();
    bytes[i] = static_cast<char>(word);
    bytes[i + 1] = static_cast<char>(word >> 8);
    bytes[i + 2] = static_cast<char>(word >> 16);
    bytes[i + 3] = static_cast<char>(word >> 24);
  }
  for (; i < size; ++i) bytes[i] = static_cast<char>(random.next());
  return bytes;
}

inline void write_file(const std::filesystem::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  BOOST_REQUIRE(out.good());
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  BOOST_REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace test_support
