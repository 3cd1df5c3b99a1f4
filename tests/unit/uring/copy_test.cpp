// copy_range (io_uring reads then writes, a few buffers in flight) and its bridge into
// checkpoint::copy_tree, executor_data_mover, used the way the checkpoint pipeline does: the
// ring on the executor, copy_tree on the offload worker.
#define BOOST_TEST_MODULE uring_copy
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include "async/offload.hpp"
#include "base/fd.hpp"
#include "checkpoint/copy_tree.hpp"
#include "uring/copy.hpp"
#include "uring/ring.hpp"

#include "support/io_uring.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using sm::unique_fd;
using sm::uring::copy_buffer_size;
using sm::uring::copy_buffers_in_flight;
using sm::uring::copy_range;
using sm::uring::ring;
using test_support::random_bytes;
using test_support::read_file;
using test_support::write_file;

using test_support::require_io_uring;
BOOST_TEST_GLOBAL_FIXTURE(require_io_uring);

namespace {

constexpr std::uint64_t mib = 1024 * 1024;

struct join_offload_worker {
  ~join_offload_worker() { sm::stop_offload_worker(); }
};
BOOST_TEST_GLOBAL_FIXTURE(join_offload_worker);

unique_fd open_file(const fs::path& path, int flags) {
  unique_fd fd(::open(path.c_str(), flags | O_CLOEXEC, 0644));
  BOOST_REQUIRE_MESSAGE(fd, "open " << path);
  return fd;
}

// copy_range of [offset, offset + length) from `from` to `to` on a fresh executor and ring.
std::uint64_t copy_with_ring(const fs::path& from, const fs::path& to, std::uint64_t offset,
                             std::uint64_t length) {
  const unique_fd source = open_file(from, O_RDONLY);
  const unique_fd target = open_file(to, O_WRONLY | O_CREAT);
  asio::io_context io;
  ring r(io.get_executor());
  std::future<std::uint64_t> copied = asio::co_spawn(
      io, copy_range(r, source.get(), target.get(), offset, length), asio::use_future);
  io.run();
  BOOST_TEST(r.in_flight() == 0u);
  return copied.get();
}

struct stat lstat_of(const fs::path& path) {
  struct stat st {};
  BOOST_REQUIRE_MESSAGE(::lstat(path.c_str(), &st) == 0, "lstat " << path);
  return st;
}

// A file of `apparent` bytes with data only at `data_at` (4 KiB each); the rest is holes.
void write_sparse_file(const fs::path& path, std::uint64_t apparent,
                       const std::vector<std::uint64_t>& data_at) {
  const unique_fd fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC);
  BOOST_REQUIRE_EQUAL(::ftruncate(fd.get(), static_cast<off_t>(apparent)), 0);
  std::uint64_t seed = 7;
  for (std::uint64_t offset : data_at) {
    const std::string block = random_bytes(4096, seed++);
    BOOST_REQUIRE_EQUAL(::pwrite(fd.get(), block.data(), block.size(), static_cast<off_t>(offset)),
                        static_cast<ssize_t>(block.size()));
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(copies_whole_files_of_every_size) {
  test_support::scratch_dir scratch("sm-uring-copy");
  const std::vector<std::uint64_t> sizes = {
      0,
      1,
      4095,
      copy_buffer_size,
      3 * copy_buffer_size + 12345,                             // several buffers and a remainder
      (2 * copy_buffers_in_flight + 1) * copy_buffer_size + 7,  // lanes claim more than once
  };
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const fs::path from = scratch.dir / ("from" + std::to_string(i));
    const fs::path to = scratch.dir / ("to" + std::to_string(i));
    const std::string content = random_bytes(sizes[i], i + 1);
    write_file(from, content);
    BOOST_TEST_INFO("size " << sizes[i]);
    BOOST_TEST(copy_with_ring(from, to, 0, sizes[i]) == sizes[i]);
    BOOST_TEST_INFO("size " << sizes[i]);
    BOOST_TEST((read_file(to) == content));
  }
}

BOOST_AUTO_TEST_CASE(copies_a_range_in_the_middle_to_the_same_offsets) {
  test_support::scratch_dir scratch("sm-uring-copy");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  const std::string source = random_bytes(5 * mib + 100, 3);
  const std::string before(source.size(), 'x');
  write_file(from, source);
  write_file(to, before);

  const std::uint64_t offset = mib + 3, length = 2 * mib + 5;
  BOOST_TEST(copy_with_ring(from, to, offset, length) == length);
  std::string expected = before;
  expected.replace(offset, length, source, offset, length);
  const std::string copied = read_file(to);
  BOOST_TEST(copied.size() == expected.size());
  BOOST_TEST((copied == expected));
}

BOOST_AUTO_TEST_CASE(a_source_shorter_than_the_range_ends_the_copy_early) {
  test_support::scratch_dir scratch("sm-uring-copy");
  const fs::path from = scratch.dir / "from";
  const std::string source = random_bytes(2 * mib + mib / 2, 4);
  write_file(from, source);

  // Ends in the third buffer, while other lanes read past the end.
  BOOST_TEST(copy_with_ring(from, scratch.dir / "a", 0, 8 * mib) == source.size());
  BOOST_TEST((read_file(scratch.dir / "a") == source));
  // Ends inside the first and only buffer.
  write_file(scratch.dir / "small", "tiny");
  BOOST_TEST(copy_with_ring(scratch.dir / "small", scratch.dir / "b", 0, mib) == 4u);
  BOOST_TEST(read_file(scratch.dir / "b") == "tiny");
  // Starts at the end.
  BOOST_TEST(copy_with_ring(from, scratch.dir / "c", source.size(), mib) == 0u);
  BOOST_TEST(fs::file_size(scratch.dir / "c") == 0u);
}

BOOST_AUTO_TEST_CASE(a_target_open_read_only_fails_with_ebadf) {
  test_support::scratch_dir scratch("sm-uring-copy");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  write_file(from, random_bytes(3 * mib, 5));
  write_file(to, "");
  const unique_fd source = open_file(from, O_RDONLY);
  const unique_fd target = open_file(to, O_RDONLY);
  asio::io_context io;
  ring r(io.get_executor());

  std::future<std::uint64_t> copied =
      asio::co_spawn(io, copy_range(r, source.get(), target.get(), 0, 3 * mib), asio::use_future);
  io.run();
  int error = 0;
  try {
    copied.get();
  } catch (const std::system_error& e) {
    BOOST_TEST_MESSAGE("expected failure: " << e.what());
    error = e.code().value();
    BOOST_TEST(std::string(e.what()).find("io_uring write") != std::string::npos);
  }
  BOOST_TEST(error == EBADF);
  BOOST_TEST(r.in_flight() == 0u);  // every request of the failed copy completed first
}

// Not a latency bound (tests must not depend on the machine's speed): the executor must have
// run a repeating timer many times while one large copy was in flight, which it could not if
// the copy held its thread.
BOOST_AUTO_TEST_CASE(the_executor_keeps_running_timers_during_a_large_copy) {
  test_support::scratch_dir scratch("sm-uring-copy");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  const std::string content = random_bytes(64 * mib, 6);
  write_file(from, content);
  const unique_fd source = open_file(from, O_RDONLY);
  const unique_fd target = open_file(to, O_WRONLY | O_CREAT);
  asio::io_context io;
  ring r(io.get_executor());

  bool copy_done = false;
  std::uint64_t ticks = 0;
  std::chrono::steady_clock::duration latest{};
  std::future<std::uint64_t> copied = asio::co_spawn(
      io,
      [&]() -> asio::awaitable<std::uint64_t> {
        const std::uint64_t n =
            co_await copy_range(r, source.get(), target.get(), 0, content.size());
        copy_done = true;
        co_return n;
      },
      asio::use_future);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        constexpr auto period = std::chrono::microseconds(200);
        while (!copy_done) {
          timer.expires_after(period);
          co_await timer.async_wait(asio::use_awaitable);
          latest = std::max(latest, std::chrono::steady_clock::now() - timer.expiry());
          if (!copy_done) ++ticks;
        }
      },
      asio::detached);
  io.run();
  BOOST_TEST(copied.get() == content.size());
  BOOST_TEST_MESSAGE("timer ticks during a 64 MiB copy: "
                     << ticks << ", latest by at most "
                     << std::chrono::duration_cast<std::chrono::microseconds>(latest).count()
                     << " us");
  BOOST_TEST(ticks >= 10u);
  BOOST_TEST((read_file(to) == content));
}

BOOST_AUTO_TEST_CASE(destroying_the_ring_mid_copy_abandons_the_copy) {
  test_support::scratch_dir scratch("sm-uring-copy");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  write_file(from, random_bytes(64 * mib, 8));
  const unique_fd source = open_file(from, O_RDONLY);
  const unique_fd target = open_file(to, O_WRONLY | O_CREAT);
  asio::io_context io;
  auto r = std::make_unique<ring>(io.get_executor());

  bool completed = false;
  asio::co_spawn(io, copy_range(*r, source.get(), target.get(), 0, 64 * mib),
                 [&](std::exception_ptr, std::uint64_t) { completed = true; });
  // Some requests completed and others in flight: well into the copy, far from its end.
  std::size_t handlers = 0;
  while (handlers < 40 && !completed && io.run_one() > 0) ++handlers;
  BOOST_REQUIRE(!completed);
  BOOST_TEST_MESSAGE("destroyed after " << handlers << " handlers, " << r->in_flight()
                                        << " entries in flight");

  // Waits for the requests in the kernel, then destroys the copy's coroutines (and buffers)
  // without resuming them; the executor then has nothing left to run.
  r.reset();
  io.restart();
  io.run();
  BOOST_TEST(!completed);
}

BOOST_AUTO_TEST_CASE(copy_tree_moves_data_through_the_executor_ring) {
  test_support::scratch_dir scratch("sm-uring-copy");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  fs::create_directories(from / "sub");
  const std::vector<std::uint64_t> sizes = {0, 1, 4095, mib, 3 * mib + 5, 20 * mib + 3};
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    write_file((i % 2 ? from : from / "sub") / ("file" + std::to_string(i)),
               random_bytes(sizes[i], 10 + i));
  }
  // Data in the middle and at the end; holes at the start, between, and after.
  write_sparse_file(from / "sparse", 64 * mib, {8 * mib, 32 * mib + 4096});
  write_sparse_file(from / "all-hole", 8 * mib, {});

  asio::io_context io;
  std::exception_ptr failure;
  sm::checkpoint::copy_stats stats;
  std::uint64_t calls = 0, largest_call = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        const auto executor = co_await asio::this_coro::executor;
        auto mover = sm::uring::executor_data_mover(executor, std::make_shared<ring>(executor));
        // On the executor's own thread it would wait for itself: refused instead.
        BOOST_CHECK_THROW(mover(0, 0, 0, 1), std::logic_error);
        sm::checkpoint::copy_options options;
        options.kernel_copy = false;
        options.move_data = [&](int source, int target, std::uint64_t offset,
                                std::uint64_t length) {
          ++calls;  // on the worker, while the executor's thread waits in offload
          largest_call = std::max(largest_call, length);
          return mover(source, target, offset, length);
        };
        co_await sm::offload([&] { stats = sm::checkpoint::copy_tree(from, to, options); });
      },
      [&](std::exception_ptr e) { failure = e; });
  io.run();
  if (failure) std::rethrow_exception(failure);

  BOOST_TEST(stats.files == sizes.size() + 2);
  BOOST_TEST(stats.reflinked == 0u);
  BOOST_TEST(stats.copy_file_range == 0u);
  BOOST_TEST(stats.read_write == sizes.size() + 1);  // every file but the empty one
  BOOST_TEST(calls > 0u);
  BOOST_TEST(largest_call <= 16 * mib);  // the 20 MiB file went in more than one call
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const fs::path relative = fs::path(i % 2 ? "" : "sub") / ("file" + std::to_string(i));
    BOOST_TEST_INFO("file " << relative);
    BOOST_TEST((read_file(to / relative) == read_file(from / relative)));
  }
  BOOST_TEST((read_file(to / "sparse") == read_file(from / "sparse")));
  const struct stat sparse = lstat_of(to / "sparse");
  BOOST_TEST(sparse.st_size == static_cast<off_t>(64 * mib));
  BOOST_TEST(static_cast<std::uint64_t>(sparse.st_blocks) * 512 < mib);  // holes stayed holes
  BOOST_TEST(lstat_of(to / "all-hole").st_blocks == 0);
  BOOST_TEST(lstat_of(to / "all-hole").st_size == static_cast<off_t>(8 * mib));
}
