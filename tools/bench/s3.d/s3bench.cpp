// s3bench: state-manager's object store client driven from the command line, one operation a
// run, so that tools/bench/s3 can time it side by side with aws, rclone and curl against the
// same server.
//
//   s3bench put-file KEY FILE         FILE as one object (multipart above 32 MiB)
//   s3bench get-file KEY FILE         one object into FILE (ranged parts in parallel)
//   s3bench put-many PREFIX DIR [N]   every regular file in DIR as PREFIX + its name, N
//                                     requests in flight (default 32)
//
// The store comes from the environment: S3_ENDPOINT, S3_BUCKET, S3_REGION (default us-east-1),
// S3_ACCESS_KEY, S3_SECRET_KEY. On success it prints one line on stdout,
// "elapsed_ms=... objects=... bytes=...", timed from before the first request (and, for
// put-many, before the directory is read) to the end of the last; on failure, the error on
// stderr and exit status 1. Usage errors exit 2.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include "async/offload.hpp"
#include "s3/object_store.hpp"

namespace fs = std::filesystem;

namespace {

constexpr unsigned default_in_flight = 32;

struct totals {
  std::size_t objects = 0;
  std::uint64_t bytes = 0;
};

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::string(value) : fallback;
}

std::string required_env(const char* name) {
  const std::string value = env_or(name, std::string());
  if (value.empty()) throw std::runtime_error(std::string(name) + " is not set");
  return value;
}

// in_flight: put-many's workers; 0 keeps the store's default (one large transfer has at most 4
// parts in flight anyway).
sm::s3::store_config config_from_env(unsigned in_flight) {
  sm::s3::store_config config;
  config.endpoint = required_env("S3_ENDPOINT");
  config.bucket = required_env("S3_BUCKET");
  config.region = env_or("S3_REGION", "us-east-1");
  config.access_key = required_env("S3_ACCESS_KEY");
  config.secret_key = required_env("S3_SECRET_KEY");
  // max_parallel bounds both the client's requests in flight and curl's connections to the
  // host: as many as there are workers, or the workers would queue at the client's gate.
  if (in_flight > 0) config.max_parallel = in_flight;
  return config;
}

// The sizes of what went up are added after the clock stopped (stat is not the client's work).
asio::awaitable<void> put_one_file(sm::s3::object_store& store, std::string key, fs::path file,
                                   totals& done) {
  co_await store.put_file(std::move(key), std::move(file));
  done.objects += 1;
}

asio::awaitable<void> get_one_file(sm::s3::object_store& store, std::string key, fs::path file,
                                   totals& done) {
  const sm::s3::object_info info = co_await store.get_file(std::move(key), std::move(file));
  done.objects += 1;
  done.bytes += info.size;
}

// One of put-many's workers: takes the next file until none is left. All workers run on the
// one thread of the io_context, so `next` needs no lock.
asio::awaitable<void> put_worker(sm::s3::object_store& store, const std::string& prefix,
                                 const std::vector<fs::path>& files, std::size_t& next,
                                 totals& done) {
  while (next < files.size()) {
    const fs::path& file = files[next++];
    std::string key = prefix + file.filename().string();
    co_await store.put_file(std::move(key), file);
    done.objects += 1;
  }
}

std::vector<fs::path> regular_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  return files;
}

int usage() {
  std::fputs(
      "usage: s3bench put-file KEY FILE\n"
      "       s3bench get-file KEY FILE\n"
      "       s3bench put-many PREFIX DIR [IN_FLIGHT]\n"
      "The store: S3_ENDPOINT, S3_BUCKET, S3_REGION, S3_ACCESS_KEY, S3_SECRET_KEY.\n",
      stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 3) return usage();
  const std::string& command = args[0];
  const bool many = command == "put-many";
  if (command != "put-file" && command != "get-file" && !many) return usage();
  if (args.size() > (many ? 4u : 3u)) return usage();
  unsigned in_flight = many ? default_in_flight : 0;
  if (args.size() == 4) {
    in_flight = static_cast<unsigned>(std::strtoul(args[3].c_str(), nullptr, 10));
    if (in_flight == 0) return usage();
  }

  std::exception_ptr failure;
  totals done;
  double elapsed_ms = 0;
  try {
    // The io_context outlives the store: the store's timers and sockets belong to it.
    asio::io_context io;
    const auto store = sm::s3::make_store(io.get_executor(), config_from_env(in_flight));
    auto on_end = [&](std::exception_ptr e) {
      if (e && !failure) failure = e;
    };

    const auto start = std::chrono::steady_clock::now();
    std::vector<fs::path> files;
    std::size_t next = 0;
    if (command == "put-file") {
      asio::co_spawn(io, put_one_file(*store, args[1], args[2], done), on_end);
    } else if (command == "get-file") {
      asio::co_spawn(io, get_one_file(*store, args[1], args[2], done), on_end);
    } else {
      files = regular_files(args[2]);
      const std::size_t workers = std::min<std::size_t>(in_flight, files.size());
      for (std::size_t w = 0; w < workers; ++w) {
        asio::co_spawn(io, put_worker(*store, args[1], files, next, done), on_end);
      }
    }
    io.run();
    elapsed_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (command == "put-file") done.bytes = fs::file_size(args[2]);
    for (const fs::path& file : files) done.bytes += fs::file_size(file);
  } catch (...) {
    if (!failure) failure = std::current_exception();
  }
  // After the io_context is gone: nothing can hand the worker more work.
  sm::stop_offload_worker();

  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const sm::s3::error& e) {
      std::fprintf(stderr, "s3bench: %s %s: %d %s: %s\n", command.c_str(), e.key().c_str(),
                   e.status(), e.code().c_str(), e.message().c_str());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "s3bench: %s: %s\n", command.c_str(), e.what());
    }
    return 1;
  }
  std::printf("elapsed_ms=%.1f objects=%zu bytes=%llu\n", elapsed_ms, done.objects,
              static_cast<unsigned long long>(done.bytes));
  return 0;
}
