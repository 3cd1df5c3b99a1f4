// Checkpoints in a file:// store, driven through upload() and download(): a manifest is created
// only if absent (another checkpoint of the same id fails with id_taken_remotely and is left as
// it was, and our own is not uploaded twice); a download checks what it reads.
#define BOOST_TEST_MODULE checkpoint_remote
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <sstream>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include "async/offload.hpp"
#include "checkpoint/remote.hpp"
#include "s3/object_store.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace sm::checkpoint;

namespace {

manifest sample(const std::string& id, int minute) {
  manifest m;
  m.id = id;
  m.created_at = std::chrono::system_clock::time_point(std::chrono::minutes(minute));
  m.version = "test";
  m.mount = {1, 1, 0, 5, 0, 0, 1};
  return m;
}

void build(const local_store& store, const manifest& m, const std::string& content) {
  fs::create_directories(store.partial_of(m.id) / "mount");
  std::ofstream(store.partial_of(m.id) / "mount" / "file") << content;
  store.commit(m);
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `body` to its end on a fresh io_context; returns what it threw, or "ok".
template <class Body>
std::string run(Body body) {
  asio::io_context io;
  std::string outcome = "ok";
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          co_await body(io.get_executor());
        } catch (const id_taken_remotely&) {
          outcome = "id_taken_remotely";
        } catch (const std::exception& e) {
          outcome = e.what();
        }
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  sm::stop_offload_worker();
  return outcome;
}

struct machines {
  test_support::scratch_dir dir{"sm-remote-test"};
  sm::s3::store_config config() const {
    sm::s3::store_config c;
    c.endpoint = "file://" + (dir.dir / "objects").string();
    c.bucket = "bkt";
    return c;
  }
  local_store a{dir.dir / "a"}, b{dir.dir / "b"};
  machines() {
    fs::create_directories(dir.dir / "a");
    fs::create_directories(dir.dir / "b");
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(another_machines_checkpoint_of_the_same_id_is_never_overwritten) {
  machines m;
  build(m.a, sample("v1", 1), "from a");
  // A set-user-ID bit, which a download drops: the downloaded copy's index differs from a's.
  fs::permissions(m.a.path_of("v1") / "mount" / "file", fs::perms(04755));
  build(m.b, sample("v1", 2), "from b");  // the same id, made elsewhere
  const fs::path manifest_path =
      m.dir.dir / "objects" / "bkt" / "checkpoints" / "v1" / "manifest.json";
  BOOST_TEST(run([&](auto executor) -> asio::awaitable<void> {
               auto store = sm::s3::make_store(executor, m.config());
               co_await upload(*store, m.a, "v1", {}, {});
             }) == "ok");
  const std::string first = read(manifest_path);
  BOOST_TEST(run([&](auto executor) -> asio::awaitable<void> {
               auto store = sm::s3::make_store(executor, m.config());
               co_await upload(*store, m.b, "v1", {}, {});
             }) == "id_taken_remotely");
  BOOST_TEST(read(manifest_path) == first);
  // a's own checkpoint again (a resumed upload): already there, nothing written.
  std::uint64_t bytes = 99;
  BOOST_TEST(run([&](auto executor) -> asio::awaitable<void> {
               auto store = sm::s3::make_store(executor, m.config());
               bytes = co_await upload(*store, m.a, "v1", {}, {});
             }) == "ok");
  BOOST_TEST(bytes == 0u);
  // And what the store holds is a's, whole: a third machine downloads it.
  local_store c{m.dir.dir / "c"};
  fs::create_directories(m.dir.dir / "c");
  download_result got;
  BOOST_TEST(run([&](auto executor) -> asio::awaitable<void> {
               auto store = sm::s3::make_store(executor, m.config());
               got = co_await download(*store, c, "v1", download_options{});
             }) == "ok");
  BOOST_TEST(got.found);
  BOOST_TEST(read(c.path_of("v1") / "mount" / "file") == "from a");
  // The downloaded copy is the same checkpoint (its manifest.json rewritten): uploading it, as a
  // resumed upload at the next start would, writes nothing and is no conflict.
  BOOST_TEST(run([&](auto executor) -> asio::awaitable<void> {
               auto store = sm::s3::make_store(executor, m.config());
               bytes = co_await upload(*store, c, "v1", {}, {});
             }) == "ok");
  BOOST_TEST(bytes == 0u);
  BOOST_TEST(read(manifest_path) == first);
  // What a resumed upload asks first: a's and c's copies are the store's, b's is another.
  std::vector<remote_copy> copies;
  BOOST_TEST(run([&](auto executor) -> asio::awaitable<void> {
               auto store = sm::s3::make_store(executor, m.config());
               for (const local_store* here : {&m.a, &c, &m.b}) {
                 copies.push_back(co_await remote_copy_of(*store, *here->read("v1")));
               }
               copies.push_back(co_await remote_copy_of(*store, sample("v9", 1)));
             }) == "ok");
  BOOST_TEST((copies == std::vector<remote_copy>{remote_copy::same, remote_copy::same,
                                                 remote_copy::other, remote_copy::absent}));
}

BOOST_AUTO_TEST_CASE(a_download_with_a_damaged_object_commits_nothing) {
  machines m;
  build(m.a, sample("v1", 1), "12345");
  BOOST_TEST(run([&](auto executor) -> asio::awaitable<void> {
               auto store = sm::s3::make_store(executor, m.config());
               co_await upload(*store, m.a, "v1", {}, {});
             }) == "ok");
  for (const auto& e : fs::recursive_directory_iterator(m.dir.dir / "objects" / "bkt" /
                                                        "checkpoints" / "v1" / "files")) {
    if (e.is_regular_file() && read(e.path()) == "12345") std::ofstream(e.path()) << "12346";
  }
  const std::string outcome = run([&](auto executor) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(executor, m.config());
    co_await download(*store, m.b, "v1", download_options{});
  });
  BOOST_TEST(outcome.find("damaged") != std::string::npos, outcome);
  BOOST_TEST(!fs::exists(m.b.path_of("v1")));
  BOOST_TEST(!fs::exists(m.b.partial_of("v1")));
}

// A download reads at most the size the index names: an object swapped for a far larger one is
// never written whole to the disk (and what is read is still checked); an empty file needs no
// object at all.
BOOST_AUTO_TEST_CASE(a_download_reads_no_more_than_the_index_names) {
  machines m;
  build(m.a, sample("v1", 1), "12345");
  std::ofstream(m.a.path_of("v1") / "mount" / "empty");  // after the commit: a plain file there
  BOOST_TEST(run([&](auto executor) -> asio::awaitable<void> {
               auto store = sm::s3::make_store(executor, m.config());
               co_await upload(*store, m.a, "v1", {}, {});
             }) == "ok");
  const fs::path files = m.dir.dir / "objects" / "bkt" / "checkpoints" / "v1" / "files";
  for (const auto& e : fs::recursive_directory_iterator(files)) {
    if (!e.is_regular_file()) continue;
    if (read(e.path()) == "12345") {
      // The right bytes first, then 64 MiB more: only the first five are read.
      std::ofstream out(e.path(), std::ios::app);
      out << std::string(64u << 20, 'x');
    } else if (e.file_size() == 0) {
      fs::remove(e.path());  // the empty file's object: not needed
    }
  }
  const std::string outcome = run([&](auto executor) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(executor, m.config());
    co_await download(*store, m.b, "v1", download_options{});
  });
  BOOST_TEST(outcome == "ok");
  BOOST_TEST(read(m.b.path_of("v1") / "mount" / "file") == "12345");
  BOOST_TEST(fs::exists(m.b.path_of("v1") / "mount" / "empty"));
  BOOST_TEST(fs::file_size(m.b.path_of("v1") / "mount" / "empty") == 0u);
}
