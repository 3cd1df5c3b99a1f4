#define BOOST_TEST_MODULE s3_file_store
#include <boost/test/unit_test.hpp>

#include "support/seeded_random.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "async/offload.hpp"
#include "s3/file_store.hpp"

namespace s3 = sm::s3;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// The offload worker is process-wide: joined after every case (and once more at exit), so that
// no case leaves a thread behind and a fork starts from a single-threaded process.
struct join_offload_worker {
  ~join_offload_worker() { sm::stop_offload_worker(); }
};
BOOST_TEST_GLOBAL_FIXTURE(join_offload_worker);

// A directory of the case's own, removed with whatever the case left in it, pass or fail.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "sm-file-store-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      throw std::system_error(errno, std::generic_category(), "mkdtemp");
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ignored;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ignored);
    fs::remove_all(path, ignored);
  }
};

std::string read_whole(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_whole(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
}

std::string random_bytes(std::size_t size, std::uint64_t seed) {
  sm::test::seeded_random random{seed};
  std::string out(size, '\0');
  for (auto& c : out) c = static_cast<char>(random.next() & 0xff);
  return out;
}

// The s3::error an operation fails with; nullopt when it succeeds.
template <class T>
asio::awaitable<std::optional<s3::error>> failure_of(asio::awaitable<T> operation) {
  try {
    co_await std::move(operation);
  } catch (const s3::error& e) {
    co_return e;
  }
  co_return std::nullopt;
}

// Requires `operation` to fail with `status` and `code`. (No default arguments on coroutines:
// g++ 12 destroys a defaulted class-type argument twice.)
template <class T>
asio::awaitable<void> expect_failure(asio::awaitable<T> operation, int status, std::string code,
                                     std::string what) {
  const auto e = co_await failure_of(std::move(operation));
  BOOST_TEST_REQUIRE(e.has_value(), "expected " << code << ", got success " << what);
  BOOST_TEST(e->status() == status, what << ": " << e->what());
  BOOST_TEST(e->code() == code, what << ": " << e->what());
}

// A valid key of `size` bytes: segments of 200 bytes.
std::string long_key(std::size_t size) {
  std::string key;
  while (key.size() < size) key += (key.size() % 201 == 200) ? '/' : 'k';
  return key;
}

template <class T>
asio::awaitable<void> expect_failure(asio::awaitable<T> operation, int status, std::string code) {
  return expect_failure(std::move(operation), status, std::move(code), std::string());
}

std::vector<std::string> keys_of(const s3::list_page& page) {
  std::vector<std::string> keys;
  for (const auto& object : page.objects) keys.push_back(object.key);
  return keys;
}

// Items joined by spaces: what a listing gave, in one comparable line.
std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : " ") + item;
  return out;
}

// The keys of the first page under `prefix`, joined.
asio::awaitable<std::string> listed_keys(s3::object_store& store, std::string prefix) {
  co_return joined(keys_of(co_await store.list(prefix)));
}

// Every page of a listing, followed to the end.
asio::awaitable<std::vector<s3::list_page>> all_pages(s3::object_store& store, std::string prefix,
                                                      std::string delimiter, unsigned max_keys) {
  std::vector<s3::list_page> pages;
  std::string token;
  do {
    pages.push_back(co_await store.list(prefix, delimiter, token, max_keys));
    token = pages.back().next_token;
    BOOST_TEST_REQUIRE(pages.size() < 10000u);  // a token that never ends is a bug
  } while (!token.empty());
  co_return pages;
}

// A store under a fresh directory, and the coroutine runner.
struct store_case {
  temp_dir dir;
  fs::path root = dir.path / "objects";
  asio::io_context io;

  s3::store_config config(const std::string& key_prefix = {}) const {
    s3::store_config c;
    c.endpoint = "file://" + root.string();
    c.bucket = "bucket";
    c.key_prefix = key_prefix;
    return c;
  }
  fs::path bucket_dir() const { return root / "bucket"; }
  std::unique_ptr<s3::object_store> open(const std::string& key_prefix = {}) {
    return s3::make_file_store(io.get_executor(), root, config(key_prefix));
  }
  // Names in the store's private directory other than its lock file: leftovers.
  std::vector<std::string> temporaries() const {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(bucket_dir() / ".sm-tmp", ec)) {
      if (entry.path().filename() != "lock") names.push_back(entry.path().filename().string());
    }
    return names;
  }

  // Runs `body` as a coroutine until it finishes; its exceptions (failed requirements too)
  // come out of here.
  template <class F>
  void run(F body) {
    join_offload_worker join;
    asio::co_spawn(io, body(), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
    });
    io.run();
    io.restart();
  }
};

// A forked process with its own executor and store on `root`, started when `go` closes; what
// its body returns comes back through a pipe ("exception: ..." when it threw).
struct child_process {
  pid_t pid = -1;
  int output = -1;
};

using child_body = std::function<asio::awaitable<std::string>(s3::object_store&)>;

child_process fork_child(const fs::path& root, const s3::store_config& config, int go_read,
                         int go_write, child_body body) {
  int out[2];
  BOOST_TEST_REQUIRE(::pipe(out) == 0);
  const pid_t pid = ::fork();
  BOOST_TEST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(out[0]);
    ::close(go_write);
    char c;
    while (::read(go_read, &c, 1) > 0) {
    }
    std::string result;
    try {
      asio::io_context io;
      auto store = s3::make_file_store(io.get_executor(), root, config);
      asio::co_spawn(io, body(*store), [&](std::exception_ptr e, std::string r) {
        if (!e) {
          result = std::move(r);
          return;
        }
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          result = std::string("exception: ") + x.what();
        }
      });
      io.run();
      sm::stop_offload_worker();
    } catch (const std::exception& x) {
      result = std::string("exception: ") + x.what();
    }
    for (std::size_t done = 0; done < result.size();) {
      const ssize_t n = ::write(out[1], result.data() + done, result.size() - done);
      if (n <= 0) ::_exit(2);
      done += static_cast<std::size_t>(n);
    }
    ::_exit(0);
  }
  ::close(out[1]);
  return {pid, out[0]};
}

std::string wait_for(const child_process& child) {
  std::string result;
  char buffer[4096];
  for (ssize_t n; (n = ::read(child.output, buffer, sizeof buffer)) > 0;) result.append(buffer, n);
  ::close(child.output);
  int status = 0;
  ::waitpid(child.pid, &status, 0);
  BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  return result;
}

// Runs the bodies in forked processes at once; returns what each returned.
std::vector<std::string> race(const fs::path& root, const s3::store_config& config,
                              const std::vector<child_body>& bodies) {
  sm::stop_offload_worker();  // fork from a process with one thread
  int go[2];
  BOOST_TEST_REQUIRE(::pipe(go) == 0);
  std::vector<child_process> children;
  for (const auto& body : bodies) children.push_back(fork_child(root, config, go[0], go[1], body));
  ::close(go[0]);
  ::close(go[1]);  // and they are off
  std::vector<std::string> results;
  for (const auto& child : children) results.push_back(wait_for(child));
  return results;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(objects)

BOOST_FIXTURE_TEST_CASE(put_and_get_round_trip_odd_keys, store_case) {
  const std::vector<std::string> keys = {
      "plain",
      "dir/sub/leaf.json",
      "with space/and+plus=equals&amp",
      "ünïcödé/日本語/ключ",
      "quotes'\"and\\backslash",
      "...",
      "a..b/.hidden/-dash/~tilde",
      "percent%20star*question?colon:semi;comma,",
      std::string(255, 'x'),
      ".sm-tmpx",
      "nested/.sm-tmp/allowed-below-the-top",
  };
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    for (const auto& key : keys) {
      const std::string etag = co_await store->put(key, "content of " + key);
      BOOST_TEST(!etag.empty());
      BOOST_TEST(etag.find('"') == std::string::npos);
      BOOST_TEST(co_await store->get(key) == "content of " + key);
      // The documented layout: <root>/<bucket>/<key>.
      BOOST_TEST(read_whole(bucket_dir() / key) == "content of " + key);
    }
    co_await store->put("plain", "replaced");
    BOOST_TEST(co_await store->get("plain") == "replaced");
  });
  BOOST_TEST(temporaries().empty());
}

BOOST_FIXTURE_TEST_CASE(binary_content_and_empty_objects, store_case) {
  std::string body;
  for (int round = 0; round < 4; ++round) {
    for (int c = 0; c < 256; ++c) body += static_cast<char>(c);
  }
  body += std::string(3, '\0');
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    co_await store->put("bin", body);
    const std::string back = co_await store->get("bin");
    BOOST_TEST(back.size() == body.size());
    BOOST_TEST((back == body));
    BOOST_TEST((co_await store->head("bin"))->size == body.size());

    co_await store->put("empty", "");
    BOOST_TEST((co_await store->get("empty")).empty());
    BOOST_TEST((co_await store->head("empty"))->size == 0u);
  });
}

BOOST_FIXTURE_TEST_CASE(ranges, store_case) {
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    co_await store->put("digits", "0123456789");
    BOOST_TEST(co_await store->get("digits", s3::byte_range{0, {}}) == "0123456789");
    BOOST_TEST(co_await store->get("digits", s3::byte_range{3, {}}) == "3456789");
    BOOST_TEST(co_await store->get("digits", s3::byte_range{2, 5}) == "2345");
    BOOST_TEST(co_await store->get("digits", s3::byte_range{9, 9}) == "9");
    BOOST_TEST(co_await store->get("digits", s3::byte_range{7, 100}) == "789");  // clamped
    co_await expect_failure(store->get("digits", s3::byte_range{10, {}}), 416, "InvalidRange");
    co_await expect_failure(store->get("digits", s3::byte_range{20, 30}), 416, "InvalidRange");
    co_await expect_failure(store->get("digits", s3::byte_range{5, 3}), 416, "InvalidRange");
    co_await store->put("empty", "");
    co_await expect_failure(store->get("empty", s3::byte_range{0, {}}), 416, "InvalidRange");
    co_await expect_failure(store->get("absent", s3::byte_range{0, 1}), 404, "NoSuchKey");
  });
}

BOOST_FIXTURE_TEST_CASE(get_of_an_absent_key_is_no_such_key, store_case) {
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    co_await expect_failure(store->get("absent"), 404, "NoSuchKey", "before anything exists");
    co_await store->put("dir/present", "x");
    co_await expect_failure(store->get("dir/absent"), 404, "NoSuchKey");
    co_await expect_failure(store->get("dir"), 404, "NoSuchKey", "a directory is no object");
    co_await expect_failure(store->get("dir/present/below"), 404, "NoSuchKey");
  });
}

BOOST_FIXTURE_TEST_CASE(head_reports_size_etag_and_time, store_case) {
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    BOOST_TEST(!(co_await store->head("k")).has_value());
    const auto before = std::chrono::system_clock::now();
    const std::string etag = co_await store->put("k", "12345");
    const auto after = std::chrono::system_clock::now();
    const auto info = co_await store->head("k");
    BOOST_TEST_REQUIRE(info.has_value());
    BOOST_TEST(info->key == "k");
    BOOST_TEST(info->size == 5u);
    BOOST_TEST(info->etag == etag);
    BOOST_TEST((info->last_modified >= before - 1s && info->last_modified <= after + 1s));
    // Stable while the content stays; new when it is replaced, even by the same bytes.
    BOOST_TEST((co_await store->head("k"))->etag == etag);
    BOOST_TEST(co_await store->get("k") == "12345");
    BOOST_TEST((co_await store->head("k"))->etag == etag);
    const std::string again = co_await store->put("k", "12345");
    BOOST_TEST(again != etag);
    BOOST_TEST((co_await store->head("k"))->etag == again);
  });
}

BOOST_FIXTURE_TEST_CASE(etag_differs_for_every_replacement, store_case) {
  // Same size every time, one put right after the other: the inode and the coarse clock may
  // repeat, the ETag must not.
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    std::set<std::string> seen;
    std::string etag = co_await store->put("counter", "000");
    seen.insert(etag);
    for (int i = 1; i < 100; ++i) {
      char body[16];
      std::snprintf(body, sizeof body, "%03d", i);
      s3::put_options options;
      options.if_match = etag;
      etag = co_await store->put("counter", body, options);
      BOOST_TEST(seen.insert(etag).second, "ETag " << etag << " came back at round " << i);
    }
    BOOST_TEST(co_await store->get("counter") == "099");
  });
}

BOOST_FIXTURE_TEST_CASE(replacements_move_last_modified_forward_even_past_the_clock, store_case) {
  // The ETag leans on the mtime: a replacement must get a later one than the file it replaces,
  // even when that file's mtime is ahead of the clock (clock stepped back, coarse clocks).
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    co_await store->put("k", "old");
    timespec future[2] = {{0, UTIME_OMIT}, {::time(nullptr) + 3600, 5}};
    BOOST_TEST_REQUIRE(::utimensat(AT_FDCWD, (bucket_dir() / "k").c_str(), future, 0) == 0);
    const auto old = co_await store->head("k");
    const std::string etag = co_await store->put("k", "new");
    const auto replaced = co_await store->head("k");
    BOOST_TEST(etag != old->etag);
    BOOST_TEST((replaced->last_modified > old->last_modified));
    s3::put_options replace;
    replace.if_match = etag;
    co_await store->put("k", "newer", replace);
    BOOST_TEST(((co_await store->head("k"))->last_modified > replaced->last_modified));
  });
}

BOOST_FIXTURE_TEST_CASE(remove_deletes_and_prunes_empty_directories, store_case) {
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    co_await store->put("a/b/c/d", "1");
    co_await store->put("a/x", "2");
    co_await store->remove("a/b/c/d");
    BOOST_TEST(!(co_await store->head("a/b/c/d")).has_value());
    BOOST_TEST(!fs::exists(bucket_dir() / "a/b"));
    BOOST_TEST(fs::exists(bucket_dir() / "a/x"));
    co_await store->remove("a/x");
    BOOST_TEST(!fs::exists(bucket_dir() / "a"));
    BOOST_TEST(fs::is_directory(bucket_dir()));
    // Absent keys are no error, nor are keys under a file or naming a directory.
    co_await store->remove("a/x");
    co_await store->remove("never/was");
    co_await store->put("file", "f");
    co_await store->put("dir/inside", "i");
    co_await store->remove("file/below");
    co_await store->remove("dir");
    BOOST_TEST(co_await store->get("file") == "f");
    BOOST_TEST(co_await store->get("dir/inside") == "i");
  });
}

BOOST_FIXTURE_TEST_CASE(remove_many_removes_each_key, store_case) {
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    const std::vector<std::string> written1 = {"k1", "k2", "d/k3", "d/k4", "d/e/k5"};
    for (const auto& key : written1) co_await store->put(key, key);
    const std::vector<std::string> doomed = {"k1", "d/k3", "d/e/k5", "absent", "d/absent"};
    co_await store->remove_many(doomed);
    const auto page = co_await store->list("");
    BOOST_TEST((keys_of(page) == std::vector<std::string>{"d/k4", "k2"}));
    BOOST_TEST(!fs::exists(bucket_dir() / "d/e"));
    co_await store->remove_many({});
    const std::vector<std::string> with_invalid = {"k2", "bad//key"};
    co_await expect_failure(store->remove_many(with_invalid), 400, "InvalidKey");
    BOOST_TEST(co_await store->get("k2") == "k2", "an invalid key refuses the whole batch");
  });
}

BOOST_FIXTURE_TEST_CASE(copy_is_a_new_object_with_the_same_content, store_case) {
  const std::string body = random_bytes(3 * 1024 * 1024 + 17, 7);
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    const std::string source_etag = co_await store->put("source", body);
    const std::string copy_etag = co_await store->copy("source", "copies/one");
    BOOST_TEST(copy_etag != source_etag);
    BOOST_TEST((co_await store->head("copies/one"))->etag == copy_etag);
    BOOST_TEST((co_await store->get("copies/one") == body));
    BOOST_TEST((co_await store->head("source"))->etag == source_etag);
    // Onto an existing key: replaced.
    co_await store->put("small", "small");
    const std::string replaced = co_await store->copy("small", "copies/one");
    BOOST_TEST(replaced != copy_etag);
    BOOST_TEST(co_await store->get("copies/one") == "small");
    co_await expect_failure(store->copy("absent", "copies/two"), 404, "NoSuchKey");
    BOOST_TEST(!(co_await store->head("copies/two")).has_value());
    co_await expect_failure(store->copy("source", "../escape"), 400, "InvalidKey");
  });
  BOOST_TEST(temporaries().empty());
}

BOOST_FIXTURE_TEST_CASE(put_file_and_get_file_are_byte_exact, store_case) {
  const std::string body = random_bytes(20 * 1024 * 1024, 20);
  const fs::path local = dir.path / "local";
  fs::create_directories(local);
  write_whole(local / "upload.bin", body);
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    const std::string etag = co_await store->put_file("big/blob", local / "upload.bin");
    const auto info = co_await store->head("big/blob");
    BOOST_TEST_REQUIRE(info.has_value());
    BOOST_TEST(info->size == body.size());
    BOOST_TEST(info->etag == etag);
    BOOST_TEST((co_await store->get("big/blob") == body));

    const auto got = co_await store->get_file("big/blob", local / "download.bin");
    BOOST_TEST(got.key == "big/blob");
    BOOST_TEST(got.etag == etag);
    BOOST_TEST(got.size == body.size());
    BOOST_TEST((read_whole(local / "download.bin") == body));

    // A range, over an existing file: replaced.
    co_await store->get_file("big/blob", local / "download.bin",
                             s3::byte_range{1024 * 1024, 2 * 1024 * 1024 - 1});
    BOOST_TEST((read_whole(local / "download.bin") == body.substr(1024 * 1024, 1024 * 1024)));

    // Create only, from a file as from memory.
    s3::put_options create;
    create.if_none_match = true;
    co_await expect_failure(store->put_file("big/blob", local / "upload.bin", create), 412,
                            "PreconditionFailed");

    // Failures leave nothing behind.
    co_await expect_failure(store->get_file("absent", local / "absent.bin"), 404, "NoSuchKey");
    BOOST_TEST(!fs::exists(local / "absent.bin"));
    co_await expect_failure(store->get_file("big/blob", local / "no/such/dir/file"), 400,
                            "InvalidArgument");
    co_await expect_failure(store->put_file("other", local / "no-such-file"), 400,
                            "InvalidArgument");
    co_await expect_failure(store->put_file("other", local), 400, "InvalidArgument", "a directory");
    BOOST_TEST(!(co_await store->head("other")).has_value());
  });
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(local)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  BOOST_TEST((names == std::vector<std::string>{"download.bin", "upload.bin"}));
  BOOST_TEST(temporaries().empty());
}

BOOST_FIXTURE_TEST_CASE(keys_and_directories_cannot_share_a_name, store_case) {
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    co_await store->put("a/b/c", "deep");
    co_await expect_failure(store->put("a/b", "x"), 400, "InvalidKey", "over a directory");
    s3::put_options create;
    create.if_none_match = true;
    co_await expect_failure(store->put("a/b", "x", create), 400, "InvalidKey", "created over one");
    co_await expect_failure(store->put("a/b/c/d", "x"), 400, "InvalidKey", "below a file");
    BOOST_TEST(!(co_await store->head("a/b")).has_value());
    BOOST_TEST(co_await store->get("a/b/c") == "deep");
  });
  BOOST_TEST(temporaries().empty());
}

BOOST_FIXTURE_TEST_CASE(invalid_keys_are_refused, store_case) {
  const std::vector<std::string> invalid = {
      "",
      "/leading",
      "trailing/",
      "a//b",
      ".",
      "..",
      "../escape",
      "a/../../escape",
      "a/./b",
      "a/..",
      ".sm-tmp",
      ".sm-tmp/lock",
      std::string("nul\0byte", 8),
      std::string(256, 'x'),
      "ok/" + std::string(256, 'y'),
      long_key(1025),
  };
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    for (const auto& key : invalid) {
      co_await expect_failure(store->put(key, "x"), 400, "InvalidKey", "put \"" + key + "\"");
      co_await expect_failure(store->get(key), 400, "InvalidKey", "get");
      co_await expect_failure(store->head(key), 400, "InvalidKey", "head");
      co_await expect_failure(store->remove(key), 400, "InvalidKey", "remove");
      co_await expect_failure(store->copy(key, "fine"), 400, "InvalidKey", "copy from");
      co_await expect_failure(store->copy("fine", key), 400, "InvalidKey", "copy to");
      co_await expect_failure(store->put_file(key, "/dev/null"), 400, "InvalidKey", "put_file");
      co_await expect_failure(store->get_file(key, dir.path / "out"), 400, "InvalidKey",
                              "get_file");
    }
    // The key prefix counts too: "..." below is fine alone, not after a prefix that ends in a
    // whole segment and leaves it empty.
    auto prefixed = open("env/");
    co_await prefixed->put("...", "fine");
    co_await expect_failure(prefixed->put("/x", "x"), 400, "InvalidKey", "env//x");
    co_await prefixed->put(long_key(1020), "exactly 1024 bytes with the prefix");
    co_await expect_failure(prefixed->put(long_key(1021), "x"), 400, "InvalidKey",
                            "over 1024 bytes with the prefix");
  });
  BOOST_TEST(!fs::exists(bucket_dir() / "escape"));
  BOOST_TEST(!fs::exists(root / "escape"));
  BOOST_TEST(!fs::exists(dir.path / "out"));
}

BOOST_FIXTURE_TEST_CASE(bad_configurations_are_refused, store_case) {
  auto with = [&](auto change) {
    s3::store_config c = config();
    change(c);
    return c;
  };
  auto exec = io.get_executor();
  BOOST_CHECK_THROW(s3::make_file_store(exec, "relative/root", config()), std::invalid_argument);
  for (const char* bucket : {"", ".", "..", "a/b"}) {
    BOOST_CHECK_THROW(s3::make_file_store(exec, root, with([&](auto& c) { c.bucket = bucket; })),
                      std::invalid_argument);
  }
  for (const char* prefix : {"/env/", "a//b/", ".sm-tmp/", "../up/"}) {
    BOOST_CHECK_THROW(
        s3::make_file_store(exec, root, with([&](auto& c) { c.key_prefix = prefix; })),
        std::invalid_argument);
  }
  BOOST_CHECK_THROW(s3::make_store(exec, with([](auto& c) { c.endpoint = "file://relative"; })),
                    std::invalid_argument);
  // make_store hands file:// endpoints to this store.
  run([&]() -> asio::awaitable<void> {
    auto store = s3::make_store(exec, config());
    co_await store->put("through/make_store", "yes");
    BOOST_TEST(read_whole(bucket_dir() / "through/make_store") == "yes");
  });
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(conditional)

BOOST_FIXTURE_TEST_CASE(create_only_and_replace_only, store_case) {
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    s3::put_options create;
    create.if_none_match = true;
    const std::string first = co_await store->put("lease.json", "v1", create);
    co_await expect_failure(store->put("lease.json", "v2", create), 412, "PreconditionFailed");
    BOOST_TEST(co_await store->get("lease.json") == "v1");

    s3::put_options replace;
    replace.if_match = first;
    const std::string second = co_await store->put("lease.json", "v2", replace);
    BOOST_TEST(second != first);
    BOOST_TEST(co_await store->get("lease.json") == "v2");
    BOOST_TEST((co_await store->head("lease.json"))->etag == second);

    // Stale: refused, nothing changed.
    co_await expect_failure(store->put("lease.json", "v3", replace), 412, "PreconditionFailed");
    BOOST_TEST(co_await store->get("lease.json") == "v2");

    // Quoted, as an HTTP client might pass it.
    replace.if_match = "\"" + second + "\"";
    const std::string third = co_await store->put("lease.json", "v3", replace);
    BOOST_TEST(co_await store->get("lease.json") == "v3");

    // A plain put in between makes the ETag stale too.
    co_await store->put("lease.json", "plain");
    replace.if_match = third;
    co_await expect_failure(store->put("lease.json", "v4", replace), 412, "PreconditionFailed");

    // Replace-only of nothing fails; create after a remove succeeds.
    co_await expect_failure(store->put("absent", "x", replace), 412, "PreconditionFailed");
    BOOST_TEST(!(co_await store->head("absent")).has_value());
    co_await store->remove("lease.json");
    co_await store->put("lease.json", "again", create);
    BOOST_TEST(co_await store->get("lease.json") == "again");
    co_await store->put("deep/new/dirs/created", "x", create);

    s3::put_options both;
    both.if_none_match = true;
    both.if_match = third;
    co_await expect_failure(store->put("lease.json", "x", both), 400, "InvalidArgument");
  });
  BOOST_TEST(temporaries().empty());
}

BOOST_FIXTURE_TEST_CASE(create_race_between_processes_has_one_winner, store_case) {
  constexpr int rounds = 200;
  auto contender = [](std::string name) -> child_body {
    return [name](s3::object_store& store) -> asio::awaitable<std::string> {
      std::string outcome;
      s3::put_options create;
      create.if_none_match = true;
      for (int i = 0; i < rounds; ++i) {
        try {
          co_await store.put("race/" + std::to_string(i), name, create);
          outcome += '1';
        } catch (const s3::error& e) {
          outcome += e.code() == "PreconditionFailed" ? '0' : 'E';
        }
      }
      co_return outcome;
    };
  };
  const auto results = race(root, config(), {contender("first"), contender("second")});
  BOOST_TEST_REQUIRE(results[0].size() == std::size_t(rounds), results[0]);
  BOOST_TEST_REQUIRE(results[1].size() == std::size_t(rounds), results[1]);
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    for (int i = 0; i < rounds; ++i) {
      const char a = results[0][i], b = results[1][i];
      BOOST_TEST(((a == '1' && b == '0') || (a == '0' && b == '1')),
                 "round " << i << ": " << a << b);
      const std::string winner = a == '1' ? "first" : "second";
      BOOST_TEST(co_await store->get("race/" + std::to_string(i)) == winner, "round " << i);
    }
  });
  BOOST_TEST(temporaries().empty());
}

BOOST_FIXTURE_TEST_CASE(replace_only_increments_lose_nothing_across_processes, store_case) {
  constexpr int increments = 40;
  auto incrementer = [](s3::object_store& store) -> asio::awaitable<std::string> {
    int conflicts = 0;
    for (int done = 0; done < increments;) {
      // The ETag first: content read after it is at least as new, so a stale pair fails the
      // condition instead of losing an update.
      const auto info = co_await store.head("counter");
      const int value = std::stoi(co_await store.get("counter"));
      s3::put_options replace;
      replace.if_match = info->etag;
      try {
        co_await store.put("counter", std::to_string(value + 1), replace);
        ++done;
      } catch (const s3::error& e) {
        if (e.code() != "PreconditionFailed") throw;
        ++conflicts;
      }
    }
    co_return "ok " + std::to_string(conflicts);
  };
  run([&]() -> asio::awaitable<void> { co_await open()->put("counter", "0"); });
  const auto results = race(root, config(), {incrementer, incrementer});
  for (const auto& result : results) BOOST_TEST(result.starts_with("ok "), result);
  run([&]() -> asio::awaitable<void> {
    BOOST_TEST(co_await open()->get("counter") == std::to_string(2 * increments));
  });
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(listing)

BOOST_FIXTURE_TEST_CASE(keys_come_in_byte_order_with_their_metadata, store_case) {
  // '-' (0x2d) sorts before '/' (0x2f): a directory walk in name order would get this wrong.
  const std::vector<std::string> keys = {"b", "a/c/d", "ab", "a-c", "z/ü", "a/b", "A"};
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    for (const auto& key : keys) co_await store->put(key, key + key);
    const auto page = co_await store->list("");
    BOOST_TEST(
        (keys_of(page) == std::vector<std::string>{"A", "a-c", "a/b", "a/c/d", "ab", "b", "z/ü"}));
    BOOST_TEST(page.common_prefixes.empty());
    BOOST_TEST(page.next_token.empty());
    for (const auto& object : page.objects) {
      const auto info = co_await store->head(object.key);
      BOOST_TEST(object.size == 2 * object.key.size());
      BOOST_TEST(object.etag == info->etag);
      BOOST_TEST((object.last_modified == info->last_modified));
    }
  });
}

BOOST_FIXTURE_TEST_CASE(delimiter_rolls_up_like_s3, store_case) {
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    const std::vector<std::string> written2 = {"top.txt",         "db/1/wal/0001", "db/1/wal/0002",
                                               "db/1/snapshot/s", "db/2/wal/0001", "dbx",
                                               "fs/blocks/1"};
    for (const auto& key : written2) {
      co_await store->put(key, "x");
    }
    using strings = std::vector<std::string>;
    auto root_page = co_await store->list("", "/", "", 1000);
    BOOST_TEST((keys_of(root_page) == strings{"dbx", "top.txt"}));
    BOOST_TEST((root_page.common_prefixes == strings{"db/", "fs/"}));

    auto db = co_await store->list("db/", "/", "", 1000);
    BOOST_TEST(db.objects.empty());
    BOOST_TEST((db.common_prefixes == strings{"db/1/", "db/2/"}));
    auto one = co_await store->list("db/1/", "/", "", 1000);
    BOOST_TEST((one.common_prefixes == strings{"db/1/snapshot/", "db/1/wal/"}));
    auto wal = co_await store->list("db/1/wal/", "/", "", 1000);
    BOOST_TEST((keys_of(wal) == strings{"db/1/wal/0001", "db/1/wal/0002"}));
    BOOST_TEST(wal.common_prefixes.empty());
    auto partial = co_await store->list("db", "/", "", 1000);
    BOOST_TEST((partial.common_prefixes == strings{"db/"}));
    BOOST_TEST((keys_of(partial) == strings{"dbx"}));
    // Any delimiter, not only "/".
    auto by_one = co_await store->list("db/", "1", "", 1000);
    BOOST_TEST((by_one.common_prefixes == strings{"db/1", "db/2/wal/0001"}));

    // A common prefix is one entry of a page: four entries, one a page.
    strings entries;
    for (const auto& page : co_await all_pages(*store, "", "/", 1)) {
      BOOST_TEST(page.objects.size() + page.common_prefixes.size() == 1u);
      for (const auto& p : page.common_prefixes) entries.push_back("prefix " + p);
      for (const auto& k : keys_of(page)) entries.push_back("key " + k);
    }
    BOOST_TEST((entries == strings{"prefix db/", "key dbx", "prefix fs/", "key top.txt"}));
    const auto three = co_await all_pages(*store, "", "/", 3);
    BOOST_TEST(three.size() == 2u);
    BOOST_TEST((three[0].common_prefixes == strings{"db/", "fs/"}));
    BOOST_TEST((keys_of(three[0]) == strings{"dbx"}));
    BOOST_TEST((keys_of(three[1]) == strings{"top.txt"}));
    BOOST_TEST(three[1].next_token.empty());
  });
}

BOOST_FIXTURE_TEST_CASE(pages_over_2500_keys_return_each_key_once_in_order, store_case) {
  std::vector<std::string> expected;
  for (int i = 0; i < 2500; ++i) {
    char key[64];
    // Flat and nested keys, interleaved in order: "n/<group>/<i>" and "n-<i>" and "n<i>".
    if (i % 3 == 0) {
      std::snprintf(key, sizeof key, "n/%02d/%05d", i % 17, i);
    } else if (i % 3 == 1) {
      std::snprintf(key, sizeof key, "n-%05d", i);
    } else {
      std::snprintf(key, sizeof key, "n%05d", i);
    }
    expected.push_back(key);
  }
  run([&]() -> asio::awaitable<void> {
    auto store = open("env/");
    for (const auto& key : expected) co_await store->put(key, "v");
  });
  std::sort(expected.begin(), expected.end());
  run([&]() -> asio::awaitable<void> {
    auto store = open("env/");
    const auto pages = co_await all_pages(*store, "", "", 1000);
    BOOST_TEST_REQUIRE(pages.size() == 3u);
    BOOST_TEST(pages[0].objects.size() == 1000u);
    BOOST_TEST(pages[1].objects.size() == 1000u);
    BOOST_TEST(pages[2].objects.size() == 500u);
    BOOST_TEST(!pages[0].next_token.empty());
    BOOST_TEST(pages[2].next_token.empty());
    std::vector<std::string> listed;
    for (const auto& page : pages) {
      for (const auto& key : keys_of(page)) listed.push_back(key);
    }
    BOOST_TEST((listed == expected));

    // More than 1000 asked: S3 gives 1000, so does this store.
    const auto capped = co_await store->list("", "", "", 5000);
    BOOST_TEST(capped.objects.size() == 1000u);
    // Within one nested directory.
    std::vector<std::string> nested;
    std::copy_if(expected.begin(), expected.end(), std::back_inserter(nested),
                 [](const std::string& k) { return k.starts_with("n/"); });
    listed.clear();
    for (const auto& page : co_await all_pages(*store, "n/", "", 100)) {
      for (const auto& key : keys_of(page)) listed.push_back(key);
    }
    BOOST_TEST((listed == nested));
    // The groups of the nested keys, paged one at a time.
    std::vector<std::string> groups;
    for (const auto& page : co_await all_pages(*store, "n/", "/", 1)) {
      for (const auto& p : page.common_prefixes) groups.push_back(p);
    }
    BOOST_TEST(groups.size() == 17u);
    BOOST_TEST(std::is_sorted(groups.begin(), groups.end()));
  });
}

BOOST_FIXTURE_TEST_CASE(prefix_filters_and_key_prefix_is_stripped, store_case) {
  run([&]() -> asio::awaitable<void> {
    auto env = open("envs/42/");
    auto other = open("envs/43/");
    auto whole = open();
    auto partial = open("envs/4");
    const std::vector<std::string> written3 = {"db/10/x", "db/1/y", "lease.json"};
    for (const auto& key : written3) co_await env->put(key, key);
    co_await other->put("lease.json", "other");
    BOOST_TEST(read_whole(bucket_dir() / "envs/42/lease.json") == "lease.json");

    BOOST_TEST(co_await listed_keys(*env, "") == "db/1/y db/10/x lease.json");
    BOOST_TEST(co_await listed_keys(*env, "db/1") == "db/1/y db/10/x");
    BOOST_TEST(co_await listed_keys(*env, "db/1/") == "db/1/y");
    BOOST_TEST(co_await listed_keys(*env, "lease") == "lease.json");
    BOOST_TEST(co_await listed_keys(*env, "nothing") == "");
    BOOST_TEST(co_await listed_keys(*other, "") == "lease.json");
    BOOST_TEST(co_await listed_keys(*whole, "envs/") ==
               "envs/42/db/1/y envs/42/db/10/x envs/42/lease.json envs/43/lease.json");
    BOOST_TEST(co_await listed_keys(*partial, "") ==
               "2/db/1/y 2/db/10/x 2/lease.json 3/lease.json");
    BOOST_TEST(joined((co_await partial->list("", "/", "", 1000)).common_prefixes) == "2/ 3/");
    BOOST_TEST(co_await partial->get("3/lease.json") == "other");
  });
}

BOOST_FIXTURE_TEST_CASE(the_private_directory_never_appears, store_case) {
  using strings = std::vector<std::string>;
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    co_await store->check();
    co_await store->put(".sm-tmpx", "1");
    co_await store->put("sub/.sm-tmp/y", "2");
    s3::put_options create;
    create.if_none_match = true;
    co_await store->put("z", "3", create);
    BOOST_TEST(fs::is_regular_file(bucket_dir() / ".sm-tmp/lock"));
    BOOST_TEST(co_await listed_keys(*store, "") == ".sm-tmpx sub/.sm-tmp/y z");
    const auto rolled = co_await store->list("", "/", "", 1000);
    BOOST_TEST((rolled.common_prefixes == strings{"sub/"}));
    BOOST_TEST(co_await listed_keys(*store, ".sm-tmp") == ".sm-tmpx");
    BOOST_TEST(keys_of(co_await store->list(".sm-tmp/")).empty());
    BOOST_TEST((co_await store->list(".sm-tmp/", "/", "", 1000)).common_prefixes.empty());
  });
}

BOOST_FIXTURE_TEST_CASE(listing_edge_cases, store_case) {
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    // Nothing written yet: the bucket directory does not even exist.
    const auto empty = co_await store->list("");
    BOOST_TEST(empty.objects.empty());
    BOOST_TEST(empty.next_token.empty());
    co_await expect_failure(store->list("", "", "not a token", 1000), 400, "InvalidArgument");
    co_await expect_failure(store->list("", "", "Kzz", 1000), 400, "InvalidArgument");
    // A key removed between pages is skipped; one added after the resume point shows up.
    const std::vector<std::string> written4 = {"a", "b", "c", "d"};
    for (const auto& key : written4) co_await store->put(key, key);
    const auto first = co_await store->list("", "", "", 2);
    BOOST_TEST((keys_of(first) == std::vector<std::string>{"a", "b"}));
    co_await store->remove("c");
    co_await store->put("e", "e");
    const auto second = co_await store->list("", "", first.next_token, 2);
    BOOST_TEST((keys_of(second) == std::vector<std::string>{"d", "e"}));
    // Objects are regular files: other things in the tree are not listed.
    BOOST_TEST(::mkfifo((bucket_dir() / "fifo").c_str(), 0600) == 0);
    fs::create_symlink(bucket_dir() / "a", bucket_dir() / "link");
    fs::create_directories(bucket_dir() / "empty/dir");
    BOOST_TEST(co_await listed_keys(*store, "") == "a b d e");
    BOOST_TEST(!(co_await store->head("fifo")).has_value());
    co_await expect_failure(store->get("fifo"), 404, "NoSuchKey");
  });
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(bucket)

BOOST_FIXTURE_TEST_CASE(check_and_first_use_create_the_directories, store_case) {
  root = dir.path / "not/yet/there";
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    co_await store->check();
    BOOST_TEST(fs::is_directory(bucket_dir()));
    co_await store->check();  // again: fine
    BOOST_TEST(temporaries().empty());
  });
  root = dir.path / "first/use";
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    co_await store->put("k", "v");
    BOOST_TEST(read_whole(bucket_dir() / "k") == "v");
  });
}

BOOST_FIXTURE_TEST_CASE(unusable_roots_are_clear_errors, store_case) {
  write_whole(dir.path / "a-file", "not a directory");
  root = dir.path / "a-file";
  run([&]() -> asio::awaitable<void> {
    auto store = open();
    const auto e = co_await failure_of(store->check());
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(e->status() == 400);
    BOOST_TEST(e->code() == "InvalidBucket");
    BOOST_TEST(std::string(e->what()).find(root.string()) != std::string::npos, e->what());
    BOOST_TEST(std::string(e->what()).find("Not a directory") != std::string::npos, e->what());
    // Every operation fails as cleanly: an s3::error, never a std::system_error.
    BOOST_TEST((co_await failure_of(store->put("k", "v"))).has_value());
    BOOST_TEST((co_await failure_of(store->put_file("k", "/dev/null"))).has_value());
    BOOST_TEST((co_await failure_of(store->remove("k"))).has_value());
    BOOST_TEST((co_await failure_of(store->list(""))).has_value());
    BOOST_TEST(!(co_await store->head("k")).has_value());
  });
}

BOOST_FIXTURE_TEST_CASE(permission_denied_is_access_denied, store_case) {
  // Root passes permission checks: the check runs in a child that has dropped to nobody.
  const fs::path locked = dir.path / "locked";
  fs::create_directories(locked);
  fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
  root = locked / "root";
  auto body = [](s3::object_store& store) -> asio::awaitable<std::string> {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) co_return "no setuid";
    try {
      co_await store.check();
    } catch (const s3::error& e) {
      co_return std::to_string(e.status()) + " " + e.code() + " " + e.what();
    }
    co_return "succeeded";
  };
  const auto results = race(root, config(), {body});
  BOOST_TEST(results[0].starts_with("403 AccessDenied "), results[0]);
  BOOST_TEST(results[0].find(root.string()) != std::string::npos, results[0]);
  BOOST_TEST(results[0].find("Permission denied") != std::string::npos, results[0]);
}

BOOST_FIXTURE_TEST_CASE(the_executor_keeps_running_during_file_work, store_case) {
  // A large put takes many milliseconds of writing and fsync; a timer on the same executor
  // must keep firing meanwhile.
  const std::string body = random_bytes(32 * 1024 * 1024, 32);
  auto store = open();
  bool finished = false;
  int ticks_before_finish = 0, done = 0;
  run([&]() -> asio::awaitable<void> {
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          asio::steady_timer timer(io);
          while (!finished) {
            timer.expires_after(1ms);
            co_await timer.async_wait(asio::use_awaitable);
            if (!finished) ++ticks_before_finish;
          }
        },
        asio::detached);
    co_await store->put("big", body);
    finished = true;
    // Many coroutines at once: each gets its own answer.
    for (int i = 0; i < 50; ++i) {
      asio::co_spawn(
          io,
          [&, i]() -> asio::awaitable<void> {
            const std::string key = "many/" + std::to_string(i);
            co_await store->put(key, key);
            if (co_await store->get(key) == key) ++done;
          },
          asio::detached);
    }
  });
  BOOST_TEST(ticks_before_finish > 0);
  BOOST_TEST(done == 50);
}

BOOST_AUTO_TEST_SUITE_END()
