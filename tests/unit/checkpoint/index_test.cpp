// The store's index and manifest of a checkpoint, parsed without trusting them: names of any
// bytes and length round-trip; anything malformed, too deep, leading out of the checkpoint or
// missing its hash is index_error (never another exception, never a crash); privileged bits are
// dropped and counted.
#define BOOST_TEST_MODULE checkpoint_index
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint/index.hpp"

using namespace sm::checkpoint;
using json = nlohmann::json;

namespace {

const std::string sum_a(64, 'a');

index_entry dir(std::string path) {
  index_entry e;
  e.path = std::move(path);
  e.type = 'd';
  e.mode = 0755;
  return e;
}

index_entry file(std::string path, std::string sha256 = sum_a) {
  index_entry e;
  e.path = std::move(path);
  e.type = 'f';
  e.mode = 0644;
  e.size = 10;
  e.sha256 = std::move(sha256);
  return e;
}

bool refused(const std::string& text, unsigned format = 2) {
  try {
    parse_index(text, format);
    return false;
  } catch (const index_error&) {
    return true;
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(names_of_any_bytes_and_length_round_trip) {
  std::string long_path = "mount";
  std::vector<index_entry> entries{dir("mount")};
  for (int i = 0; i < 10; ++i) {
    long_path += "/" + std::string(200, 'd');
    entries.push_back(dir(long_path));
  }
  entries.push_back(file(long_path + "/file"));
  entries.push_back(file("mount/name\xff\xfe", std::string(64, 'b')));
  index_entry link;
  link.path = "mount/link\xc3";
  link.type = 'l';
  link.target = "target\xff";
  link.uid = 0;
  link.gid = 4294967295u;
  link.xattrs = {{"user.\xff", std::string("\0\xff", 2)}};
  entries.push_back(link);
  index_entry hard;
  hard.path = "mount/hard";
  hard.type = 'h';
  hard.target = "mount/name\xff\xfe";
  entries.push_back(hard);
  entries.back().mtime_ns = -5;
  const std::string text = index_to_text(entries);
  BOOST_TEST(text.find("path_hex") != std::string::npos);
  BOOST_TEST((parse_index(text, 2) == entries));
  // Each file's object is named by its content: a key of 70 bytes whatever the path.
  BOOST_TEST(file_key(entries[11], 2) == "files/" + sum_a);
  BOOST_TEST(file_key(entries[11], 1) == "files/" + long_path + "/file");
}

BOOST_AUTO_TEST_CASE(malformed_indexes_are_refused) {
  const std::string ok = R"([{"path": "mount", "type": "d"}, )";
  for (const std::string& text : std::vector<std::string>{
           "",
           "{}",
           "[1]",
           "not json",
           R"([{"path": "/etc", "type": "d"}])",
           R"([{"path": "a/../b", "type": "d"}])",
           R"([{"path": "a//b", "type": "d"}])",
           R"([{"path": "x/y", "type": "d"}])",                            // no parent
           R"([{"path": "a", "type": "d"}, {"path": "a", "type": "d"}])",  // twice
           R"([{"path": "a", "type": "c"}])",                              // a device node
           R"([{"path": "a", "type": 5}])",
           R"([{"path": 5, "type": "d"}])",
           R"([{"path": "a", "type": "h", "target": "b"}])",
           ok + R"({"path": "mount/f", "type": "f", "size": 1e300, "sha256": ")" + sum_a + "\"}]",
           ok + R"({"path": "mount/f", "type": "f", "mode": -1, "sha256": ")" + sum_a + "\"}]",
           ok + R"({"path": "mount/f", "type": "f", "uid": 1, "gid": 4294967296, "sha256": ")" +
               sum_a + "\"}]",
           ok + R"({"path": "mount/f", "type": "f", "mtime_ns": 1.5, "sha256": ")" + sum_a + "\"}]",
           ok + R"({"path": "mount/f", "type": "f", "size": 4, "holes": [[2, 3]], "sha256": ")" +
               sum_a + "\"}]",
           ok + R"({"path": "mount/f", "type": "f", "holes": [[1]], "sha256": ")" + sum_a + "\"}]",
           ok + R"({"path": "mount/f", "type": "f", "xattrs": [{"name": "user.a"}], "sha256": ")" +
               sum_a + "\"}]",
           ok + R"({"path": "mount/f", "type": "f", "path_hex": "zz", "sha256": ")" + sum_a +
               "\"}]",
           ok + R"({"path": "mount/f", "type": "f"}])",                   // no sha256
           ok + R"({"path": "mount/f", "type": "f", "sha256": "ABC"}])",  // not a sha256
       }) {
    BOOST_TEST_INFO("index: " << text);
    BOOST_TEST(refused(text));
  }
  // Format 1 (before hashes) needs none.
  BOOST_TEST(!refused(ok + R"({"path": "mount/f", "type": "f"}])", 1));
}

BOOST_AUTO_TEST_CASE(deep_nesting_is_refused_without_recursion) {
  // A million brackets would overflow a recursive parser's stack: the depth is refused first.
  BOOST_TEST(refused(std::string(1'000'000, '[') + std::string(1'000'000, ']')));
  BOOST_TEST(refused(R"([{"path": "a", "type": "d", "x": [[[[[[[[1]]]]]]]]}])"));
  // Brackets inside strings do not count.
  BOOST_TEST(!refused(R"([{"path": "[[[[[[[[[[[[", "type": "d"}])"));
}

BOOST_AUTO_TEST_CASE(privileged_bits_are_dropped_and_counted) {
  std::vector<index_entry> entries{dir("mount"), file("mount/suid"), file("mount/cap"),
                                   file("mount/plain")};
  entries[0].mode = 02775;  // a set-group-ID directory: new files inherit its group; kept
  entries[1].mode = 04755;
  entries[2].xattrs = {{"security.capability", "caps"}, {"user.note", "kept"}};
  entries[3].mode = 0600;
  BOOST_TEST(drop_privileged(entries) == 2u);
  BOOST_TEST(entries[0].mode == 02775u);
  BOOST_TEST(entries[1].mode == 0755u);
  BOOST_TEST(entries[2].xattrs.size() == 1u);
  BOOST_TEST(entries[2].xattrs[0].first == "user.note");
  BOOST_TEST(drop_privileged(entries) == 0u);
}

BOOST_AUTO_TEST_CASE(remote_manifests) {
  const std::string local = R"({"id": "v1", "created_at_unix_ms": 1, "mount": {"files": 0,
    "dirs": 0, "symlinks": 0, "bytes": 0}})";
  const std::string text = remote_manifest_text(local, sum_a, 123);
  const auto m = parse_remote_manifest(text, "v1");
  BOOST_TEST_REQUIRE(m.has_value());
  BOOST_TEST(m->format == 2u);
  BOOST_TEST(m->index_sha256 == sum_a);
  BOOST_TEST(m->index_bytes == 123u);
  BOOST_TEST(index_key(2, sum_a) == "index-" + sum_a + ".json");
  BOOST_TEST(!parse_remote_manifest(text, "v2").has_value());  // another id
  const auto old = parse_remote_manifest(local, "v1");         // format 1
  BOOST_TEST_REQUIRE(old.has_value());
  BOOST_TEST(old->format == 1u);
  BOOST_TEST(index_key(1, "") == "index.json");
  json bad = json::parse(text);
  bad["store"]["index_sha256"] = "short";
  BOOST_TEST(!parse_remote_manifest(bad.dump(), "v1").has_value());
  bad = json::parse(text);
  bad["store"]["index_bytes"] = (65u << 20);
  BOOST_TEST(!parse_remote_manifest(bad.dump(), "v1").has_value());
  bad = json::parse(text);
  bad["store"]["format"] = 3;
  BOOST_CHECK_THROW(parse_remote_manifest(bad.dump(), "v1"), index_error);
  BOOST_TEST(!parse_remote_manifest(std::string(100000, '{'), "v1").has_value());
  BOOST_TEST(!parse_remote_manifest("[]", "v1").has_value());
  // Numbers that a cast would make undefined behaviour (found by the fuzz target).
  for (const char* created : {"1.3e92", "-9223372036854775808", "18446744073709551615", "1.5"}) {
    std::string doc = local;
    doc.replace(doc.find("\"created_at_unix_ms\": 1"), 23,
                std::string("\"created_at_unix_ms\": ") + created);
    BOOST_TEST(!parse_remote_manifest(doc, "v1").has_value(), created);
  }
  json pages = json::parse(text);
  pages["database"] = {
      {"file", "database.sqlite"}, {"bytes", 1}, {"pages", 4294967296}, {"sha256", ""}};
  BOOST_TEST(!parse_remote_manifest(pages.dump(), "v1").has_value());
  pages["database"]["pages"] = 1e300;
  BOOST_TEST(!parse_remote_manifest(pages.dump(), "v1").has_value());
}
