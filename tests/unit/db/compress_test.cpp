#define BOOST_TEST_MODULE db_compress
#include <boost/test/unit_test.hpp>

#include <random>
#include <string>

#include "db/compress.hpp"
#include "db/database.hpp"
#include "support/db_helpers.hpp"

using namespace sm::db;

namespace {

// Half random, half repetitive: compressible, and not trivially.
std::string sample(std::size_t size, unsigned seed) {
  std::mt19937 random(seed);
  std::string out(size, '\0');
  for (std::size_t i = 0; i < size; ++i) out[i] = (i / 512) % 2 ? char(random()) : char(i % 7);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(round_trips_at_every_size_around_the_buffers) {
  for (std::size_t size : {std::size_t(1), std::size_t(4096), std::size_t(131072),
                           std::size_t(131073), std::size_t(3 << 20)}) {
    const std::string data = sample(size, unsigned(size));
    const std::string packed = compress(data);
    BOOST_TEST(decompress(packed) == data, "size " << size);
  }
}

BOOST_AUTO_TEST_CASE(truncated_or_corrupt_data_is_an_error) {
  const std::string packed = compress(sample(100000, 1));
  BOOST_CHECK_THROW(decompress(packed.substr(0, packed.size() - 5)), error);
  BOOST_CHECK_THROW(decompress(""), error);
  std::string corrupt = packed;
  corrupt[0] = char(corrupt[0] ^ 0x55);  // the magic number
  BOOST_CHECK_THROW(decompress(corrupt), error);
}

BOOST_AUTO_TEST_CASE(files_round_trip_and_truncation_is_caught) {
  test_support::scratch_dir dir;
  const std::string data = sample(5 << 20, 7);
  {
    std::ofstream out(dir.dir / "in", std::ios::binary);
    out << data;
  }
  compress_file(dir.dir / "in", dir.dir / "in.zst");
  decompress_file(dir.dir / "in.zst", dir.dir / "out");
  BOOST_TEST(test_support::read_all(dir.dir / "out") == data);
  BOOST_TEST(decompress(test_support::read_all(dir.dir / "in.zst")) == data);
  std::filesystem::resize_file(dir.dir / "in.zst",
                               std::filesystem::file_size(dir.dir / "in.zst") - 10);
  BOOST_CHECK_THROW(decompress_file(dir.dir / "in.zst", dir.dir / "out"), error);
}
