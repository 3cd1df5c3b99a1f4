#define BOOST_TEST_MODULE checkpoint_local_store
#include <boost/test/unit_test.hpp>

#include <fstream>

#include <nlohmann/json.hpp>

#include "checkpoint/local_store.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using sm::checkpoint::local_store;
using sm::checkpoint::manifest;

namespace {

manifest sample(const std::string& id, int minute) {
  manifest m;
  m.id = id;
  m.created_at = std::chrono::system_clock::time_point(std::chrono::minutes(minute));
  m.version = "0.1.0";
  m.database = manifest::database_copy{"database.sqlite", 8192, 2, std::string(64, 'a'), ""};
  m.mount = {3, 2, 1, 12345, 1, 1, 1};
  m.steps_ms = {{"quiesce", 4}, {"snapshot", 20}};
  m.quiesce = "stop";
  m.quiesce_note = "no usable cgroup freezer";
  m.quiesce_reach = "process-group";
  return m;
}

// As a checkpoint pipeline leaves it before commit(): files in <id>.partial/.
void build(const local_store& store, const manifest& m) {
  fs::create_directories(store.partial_of(m.id) / "mount" / "sub");
  std::ofstream(store.partial_of(m.id) / "mount" / "sub" / "test.txt") << "hello";
  std::ofstream(store.partial_of(m.id) / "database.sqlite") << "db";
  store.commit(m);
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_manifest_round_trips_through_json) {
  const manifest m = sample("test1", 5);
  const auto back = sm::checkpoint::manifest_from_json(to_json(m));
  BOOST_TEST_REQUIRE(back.has_value());
  BOOST_TEST(back->id == "test1");
  BOOST_TEST((back->created_at == m.created_at));
  BOOST_TEST(back->database->sha256 == m.database->sha256);
  BOOST_TEST(back->mount.bytes == 12345u);
  BOOST_TEST(back->steps_ms.at("snapshot") == 20);
  BOOST_TEST(back->quiesce == "stop");
  BOOST_TEST(back->mount.read_write == 1u);
  BOOST_TEST(to_json(m)["mount"]["copied_by"]["reflink"] == 1);
  BOOST_TEST(back->quiesce_note == "no usable cgroup freezer");
  BOOST_TEST(to_json(m)["quiesce"]["mode"] == "stop");
  BOOST_TEST(back->quiesce_reach == "process-group");
  BOOST_TEST(to_json(m)["quiesce"]["reach"] == "process-group");
  BOOST_TEST(to_json(m)["created_at"] == "1970-01-01T00:05:00.000Z");
}

BOOST_AUTO_TEST_CASE(a_manifest_that_names_a_path_out_is_refused) {
  nlohmann::json doc = to_json(sample("test1", 1));
  doc["database"]["file"] = "../../etc/passwd";
  BOOST_TEST(!sm::checkpoint::manifest_from_json(doc).has_value());
  doc = to_json(sample("test1", 1));
  doc["id"] = "../x";
  BOOST_TEST(!sm::checkpoint::manifest_from_json(doc).has_value());
  doc = to_json(sample("test1", 1));
  doc.erase("mount");
  BOOST_TEST(!sm::checkpoint::manifest_from_json(doc).has_value());
}

BOOST_AUTO_TEST_CASE(commit_list_read_and_remove) {
  test_support::scratch_dir tmp;
  const local_store store(tmp.dir);
  BOOST_TEST(store.next_id() == "v1");
  build(store, sample("v1", 2));
  build(store, sample("test1", 1));
  BOOST_TEST(!fs::exists(store.partial_of("v1")));
  BOOST_TEST(fs::exists(tmp.dir / "v1" / "mount" / "sub" / "test.txt"));
  BOOST_TEST(store.exists("test1"));
  BOOST_TEST(store.next_id() == "v2");
  const auto all = store.list();
  BOOST_TEST_REQUIRE(all.size() == 2u);
  BOOST_TEST(all[0].id == "test1");  // oldest first
  BOOST_TEST(all[1].id == "v1");
  BOOST_TEST(store.read("v1")->database->pages == 2u);
  BOOST_TEST(!store.read("../v1").has_value());
  BOOST_TEST(!store.read("nosuch").has_value());
  BOOST_TEST(store.remove("v1"));
  BOOST_TEST(!store.remove("v1"));
  BOOST_TEST(!fs::exists(tmp.dir / "v1"));
  BOOST_TEST(store.list().size() == 1u);
}

BOOST_AUTO_TEST_CASE(partials_are_removed_at_start_and_never_listed) {
  test_support::scratch_dir tmp;
  const local_store store(tmp.dir);
  build(store, sample("done", 1));
  fs::create_directories(store.partial_of("v7") / "mount");  // a checkpoint cut short
  std::ofstream(store.partial_of("v7") / "mount" / "half") << "half";
  BOOST_TEST(store.list().size() == 1u);
  BOOST_TEST(store.next_id() == "v8");  // never reuses an id a crash left half-built
  const auto removed = store.remove_partials();
  BOOST_TEST_REQUIRE(removed.size() == 1u);
  BOOST_TEST(removed[0] == "v7");
  BOOST_TEST(!fs::exists(store.partial_of("v7")));
  BOOST_TEST(store.exists("done"));
  // A directory whose manifest names another id (renamed by hand) is not listed as it.
  fs::rename(tmp.dir / "done", tmp.dir / "renamed");
  BOOST_TEST(store.list().empty());
}
