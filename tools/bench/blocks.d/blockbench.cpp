// The block store's local throughput: staging (written, not uploaded: the store's writes are
// held off), staging then sync(), uploading to a file:// store, and reads from the cache in
// FUSE-sized (128 KiB) and whole-block pieces. Usage: blockbench DIR [MiB] (DIR on the disk to
// measure; it is left with the files in it).
#include <fcntl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include "async/offload.hpp"
#include "base/fd.hpp"
#include "fs/block_store.hpp"
#include "s3/object_store.hpp"
#include "uring/ring.hpp"

namespace s3 = sm::s3;
using namespace std::chrono_literals;

namespace {

// Delegates to a file:// store; put_file fails retryably while `hold` is set.
class held_store : public s3::object_store {
 public:
  explicit held_store(std::unique_ptr<s3::object_store> inner) : inner_(std::move(inner)) {}
  bool hold = false;
  asio::awaitable<std::string> put(std::string k, std::string b, s3::put_options o) override {
    co_return co_await inner_->put(k, b, o);
  }
  asio::awaitable<std::string> put_file(std::string k, std::filesystem::path f,
                                        s3::put_options o) override {
    if (hold) throw s3::error(503, "SlowDown", "held", k);
    co_return co_await inner_->put_file(k, f, o);
  }
  asio::awaitable<std::string> get(std::string k, std::optional<s3::byte_range> r) override {
    co_return co_await inner_->get(k, r);
  }
  asio::awaitable<s3::object_info> get_file(std::string k, std::filesystem::path t,
                                            std::optional<s3::byte_range> r) override {
    co_return co_await inner_->get_file(k, t, r);
  }
  asio::awaitable<std::optional<s3::object_info>> head(std::string k) override {
    co_return co_await inner_->head(k);
  }
  asio::awaitable<void> remove(std::string k) override { co_await inner_->remove(k); }
  asio::awaitable<void> remove_many(std::vector<std::string> k) override {
    co_await inner_->remove_many(k);
  }
  asio::awaitable<s3::list_page> list(std::string p, std::string d, std::string c,
                                      unsigned m) override {
    co_return co_await inner_->list(p, d, c, m);
  }
  asio::awaitable<std::string> copy(std::string f, std::string t) override {
    co_return co_await inner_->copy(f, t);
  }
  asio::awaitable<void> check() override { co_await inner_->check(); }

 private:
  std::unique_ptr<s3::object_store> inner_;
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: blockbench DIR [MiB]\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  const std::uint64_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 256;
  const std::uint32_t block_size = 4u << 20;
  const std::uint64_t blocks = mib * (1u << 20) / block_size;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  asio::io_context io;
  s3::store_config config;
  config.endpoint = "file://" + (dir / "objects").string();
  config.bucket = "bench";
  held_store store(s3::make_store(io.get_executor(), config));
  auto ring = std::make_unique<sm::uring::ring>(io.get_executor());
  sm::fs::block_store_settings settings;
  settings.staging_dir = dir / "staging";
  settings.cache_dir = dir / "cache";
  settings.cache_size = 2 * mib << 20;
  settings.staging_size = 2 * mib << 20;
  settings.block_size = block_size;
  settings.upload_backoff_first = 3600s;  // held uploads wait until released by a restart
  auto blocks_store = std::make_unique<sm::fs::block_store>(io.get_executor(), store, *ring,
                                                            settings);
  std::string data(block_size, 'x');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + i / 4099);

  auto report = [&](const char* what, double s, std::uint64_t bytes) {
    std::printf("%-40s %8.1f MB/s (%.3f s)\n", what, bytes / s / 1e6, s);
  };
  auto run = [&](auto step) {
    bool done = false;
    asio::co_spawn(io, step(), [&](std::exception_ptr e) {
      done = true;
      if (e) std::rethrow_exception(e);
    });
    io.restart();
    while (!done) io.run_one();
  };
  const std::uint64_t bytes = blocks * block_size;

  run([&]() -> asio::awaitable<void> { co_await blocks_store->open({}); });
  store.hold = true;
  auto t = std::chrono::steady_clock::now();
  run([&]() -> asio::awaitable<void> {
    for (std::uint64_t i = 0; i < blocks; ++i) {
      co_await blocks_store->stage(sm::fs::block_ref{1, std::uint32_t(i), block_size}, data);
    }
  });
  report("stage (not synced, uploads held)", seconds_since(t), bytes);
  t = std::chrono::steady_clock::now();
  run([&]() -> asio::awaitable<void> { co_await blocks_store->sync(); });
  report("then sync()", seconds_since(t), bytes);

  // A restart releases the held uploads.
  run([&]() -> asio::awaitable<void> { co_await blocks_store->stop(); });
  settings.upload_backoff_first = 1s;
  blocks_store = std::make_unique<sm::fs::block_store>(io.get_executor(), store, *ring, settings);
  store.hold = false;
  t = std::chrono::steady_clock::now();
  run([&]() -> asio::awaitable<void> {
    co_await blocks_store->open({});
    if (!co_await blocks_store->drain(600s)) throw std::runtime_error("drain failed");
  });
  report("upload to file:// and move to cache", seconds_since(t), bytes);

  t = std::chrono::steady_clock::now();
  run([&]() -> asio::awaitable<void> {
    for (std::uint64_t i = 0; i < blocks; ++i) {
      co_await blocks_store->stage(sm::fs::block_ref{2, std::uint32_t(i), block_size}, data);
    }
    co_await blocks_store->sync();
    if (!co_await blocks_store->drain(600s)) throw std::runtime_error("drain failed");
  });
  report("stage + sync + upload (end to end)", seconds_since(t), bytes);

  // Warm (the page cache holds the files), then cold: each cache file dropped from the page
  // cache first (POSIX_FADV_DONTNEED on its clean pages: only this benchmark's files).
  auto drop_cache_pages = [&] {
    for (const auto& e : std::filesystem::directory_iterator(settings.cache_dir)) {
      sm::unique_fd fd(::open(e.path().c_str(), O_RDONLY | O_CLOEXEC));
      if (fd) ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
    }
  };
  for (int cold = 0; cold < 2; ++cold)
  for (std::size_t piece : {std::size_t(128) << 10, std::size_t(block_size)}) {
    if (cold) drop_cache_pages();
    std::string out(piece, '\0');
    t = std::chrono::steady_clock::now();
    run([&]() -> asio::awaitable<void> {
      for (std::uint64_t i = 0; i < blocks; ++i) {
        for (std::uint64_t at = 0; at < block_size; at += piece) {
          co_await blocks_store->read(sm::fs::block_ref{1, std::uint32_t(i), block_size}, at,
                                      std::span<char>(out));
        }
      }
    });
    const std::string what = std::string(cold ? "cold" : "warm") + " read from cache, " +
                             std::to_string(piece >> 10) + " KiB reads";
    report(what.c_str(), seconds_since(t), bytes);
  }
  const auto s = blocks_store->stats();
  std::printf("cache %llu bytes, hits %llu, misses %llu\n", (unsigned long long)s.cache_bytes,
              (unsigned long long)s.cache_hits, (unsigned long long)s.cache_misses);
  run([&]() -> asio::awaitable<void> { co_await blocks_store->stop(); });
  blocks_store.reset();
  io.restart();
  io.run();  // what is left (an offload's worker letting go of the executor) ends first
  ring.reset();
  sm::stop_offload_worker();
  return 0;
}
