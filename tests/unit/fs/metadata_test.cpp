#define BOOST_TEST_MODULE fs_metadata
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>

#include <chrono>
#include <csignal>
#include <ctime>
#include <cstdio>
#include <map>
#include <set>
#include <system_error>

#include "fs/metadata.hpp"
#include "support/scratch_dir.hpp"

using namespace sm::fs;

namespace {

const caller root_user{0, 0};
const caller alice{1000, 1000};

bool operator<(time_value a, time_value b) {
  return a.sec != b.sec ? a.sec < b.sec : a.nsec < b.nsec;
}

time_value clock_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return time_value{ts.tv_sec, static_cast<std::uint32_t>(ts.tv_nsec)};
}

// A moment strictly after `t` (the clock is read until it has moved on): whatever a call stamps
// after this is later than `t`, with no sleep and no dependence on the machine's speed.
time_value after(time_value t) {
  for (;;) {
    const time_value now = clock_now();
    if (t < now) return now;
  }
}

struct fixture {
  test_support::scratch_dir scratch{"sm-fs-meta"};
  std::filesystem::path file = scratch.dir / "meta.db";
  std::unique_ptr<metadata> m = metadata::open(file, format{});

  void reopen() {
    m.reset();
    m = metadata::open(file, format{});
  }

  attributes make(inode_id parent, const std::string& name, std::uint32_t mode = S_IFREG | 0644,
                  const caller& who = root_user) {
    attributes a;
    const int e = m->make_node(parent, name, mode, 0, who, a);
    BOOST_REQUIRE_MESSAGE(e == 0, "make_node " << name << ": " << e);
    return a;
  }
  attributes dir(inode_id parent, const std::string& name) {
    return make(parent, name, S_IFDIR | 0755);
  }
  attributes attr(inode_id ino) {
    attributes a;
    BOOST_REQUIRE(m->getattr(ino, a) == 0);
    return a;
  }
  std::set<std::string> names(inode_id d) {
    std::vector<dir_entry> entries;
    BOOST_REQUIRE(m->read_directory(d, 0, 100000, entries) == 0);
    std::set<std::string> out;
    for (const auto& e : entries) out.insert(e.name);
    return out;
  }
  // Sets atime and mtime far in the past, so that a later change of them shows.
  void age(inode_id ino) {
    attribute_change c;
    c.atime = time_value{1000, 1};
    c.mtime = time_value{2000, 2};
    attributes a;
    BOOST_REQUIRE(m->setattr(ino, c, a) == 0);
  }
};

// What a byte of a file reads: a slice's byte, or zero (id 0).
struct byte_source {
  std::uint64_t id = 0;
  std::uint64_t off = 0;
  friend bool operator==(const byte_source&, const byte_source&) = default;
};

byte_source read_byte(metadata& m, inode_id ino, std::uint64_t at) {
  attributes a;
  BOOST_REQUIRE(m.getattr(ino, a) == 0);
  if (at >= a.size) return {};
  const auto index = static_cast<std::uint32_t>(at / chunk_size);
  const auto in_chunk = static_cast<std::uint32_t>(std::min(chunk_size, a.size - index * chunk_size));
  const auto pos = static_cast<std::uint32_t>(at % chunk_size);
  for (const segment& s : paint(m.chunk(ino, index), in_chunk)) {
    if (pos >= s.pos && pos < s.pos + s.len) {
      return s.id == hole_slice ? byte_source{} : byte_source{s.id, s.off + (pos - s.pos)};
    }
  }
  return {};
}

// A slice of `len` bytes written at `pos` of chunk `index`, the file growing to cover it.
std::uint64_t write(metadata& m, inode_id ino, std::uint64_t offset, std::uint32_t len) {
  const std::uint64_t id = m.new_slice_id();
  const slice_record r{static_cast<std::uint32_t>(offset % chunk_size), id, len, 0, len};
  BOOST_REQUIRE(m.append_slices(ino, static_cast<std::uint32_t>(offset / chunk_size), {r},
                                offset + len) == 0);
  return id;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(metadata_tests, fixture)

BOOST_AUTO_TEST_CASE(a_new_filesystem_has_a_root_directory_and_keeps_its_format) {
  const attributes r = attr(root_inode);
  BOOST_TEST(r.mode == (S_IFDIR | 0755u));
  BOOST_TEST(r.nlink == 2u);
  BOOST_TEST(r.uid == 0u);
  BOOST_TEST(r.size == 4096u);
  BOOST_TEST(m->stats().inodes == 1u);
  BOOST_TEST(m->settings().block_size == (4u << 20));
  BOOST_TEST(!m->in_transaction());
  m.reset();
  m = metadata::open(file, format{1u << 20});  // an existing filesystem keeps its block size
  BOOST_TEST(m->settings().block_size == (4u << 20));
  BOOST_TEST(m->file() == file);
  std::vector<dir_entry> entries;
  BOOST_REQUIRE(m->read_directory(root_inode, 0, 10, entries) == 0);
  BOOST_REQUIRE(entries.size() == 2u);
  BOOST_TEST(entries[1].name == "..");
  BOOST_TEST(entries[1].attr.ino == root_inode);  // the root's parent is the root
}

BOOST_AUTO_TEST_CASE(make_node_creates_files_devices_and_directories) {
  const time_value before = clock_now();
  const attributes f = make(root_inode, "f", 0640, alice);  // no type: a regular file
  BOOST_TEST(f.mode == (S_IFREG | 0640u));
  BOOST_TEST(f.nlink == 1u);
  BOOST_TEST(f.uid == 1000u);
  BOOST_TEST(f.gid == 1000u);
  BOOST_TEST(f.size == 0u);
  BOOST_TEST(!(f.ctime < before));
  BOOST_TEST((f.atime == f.ctime && f.mtime == f.ctime));
  attributes fifo;
  BOOST_TEST(m->make_node(root_inode, "p", S_IFIFO | 0600, 0, alice, fifo) == 0);
  BOOST_TEST(S_ISFIFO(fifo.mode));
  attributes dev;
  BOOST_TEST(m->make_node(root_inode, "c", S_IFCHR | 0600, 0x0103, root_user, dev) == 0);
  BOOST_TEST(dev.rdev == 0x0103u);
  const attributes d = dir(root_inode, "d");
  BOOST_TEST(d.nlink == 2u);
  BOOST_TEST(d.size == 4096u);
  BOOST_TEST(attr(root_inode).nlink == 3u);
  BOOST_TEST(f.ino != d.ino);
  attributes looked;
  BOOST_TEST(m->lookup(root_inode, "f", looked) == 0);
  BOOST_TEST(looked.ino == f.ino);
  BOOST_TEST(m->stats().inodes == 5u);
}

BOOST_AUTO_TEST_CASE(a_new_entry_moves_its_directory_s_mtime_and_ctime) {
  const attributes d = dir(root_inode, "d");
  age(d.ino);
  time_value t = after(attr(d.ino).ctime);
  make(d.ino, "f");
  BOOST_TEST(!(attr(d.ino).mtime < t));
  BOOST_TEST(!(attr(d.ino).ctime < t));
  age(d.ino);
  t = after(attr(d.ino).ctime);
  attributes a;
  BOOST_REQUIRE(m->make_symlink(d.ino, "l", "f", root_user, a) == 0);
  BOOST_TEST(!(attr(d.ino).mtime < t));
  BOOST_TEST(!(attr(d.ino).ctime < t));
  age(d.ino);
  t = after(attr(d.ino).ctime);
  make(d.ino, "sub", S_IFDIR | 0700);
  BOOST_TEST(!(attr(d.ino).mtime < t));
  BOOST_TEST(attr(d.ino).nlink == 3u);
  // A failed create leaves the directory alone.
  age(d.ino);
  BOOST_TEST(m->make_node(d.ino, "f", S_IFREG | 0644, 0, root_user, a) == EEXIST);
  BOOST_TEST(attr(d.ino).mtime.sec == 2000);
}

BOOST_AUTO_TEST_CASE(make_node_errors) {
  const attributes f = make(root_inode, "f");
  attributes a;
  BOOST_TEST(m->make_node(root_inode, "f", S_IFREG | 0644, 0, root_user, a) == EEXIST);
  BOOST_TEST(m->make_node(root_inode, "f", S_IFDIR | 0755, 0, root_user, a) == EEXIST);
  BOOST_TEST(m->make_node(999, "x", S_IFREG | 0644, 0, root_user, a) == ENOENT);
  BOOST_TEST(m->make_node(f.ino, "x", S_IFREG | 0644, 0, root_user, a) == ENOTDIR);
  BOOST_TEST(m->make_node(root_inode, std::string(256, 'n'), 0644, 0, root_user, a) ==
             ENAMETOOLONG);
  BOOST_TEST(m->make_node(root_inode, std::string(255, 'n'), 0644, 0, root_user, a) == 0);
  BOOST_TEST(m->stats().inodes == 3u);
  BOOST_TEST(attr(root_inode).nlink == 2u);
}

BOOST_AUTO_TEST_CASE(a_set_group_id_directory_hands_down_its_group) {
  attributes d;
  BOOST_REQUIRE(m->make_node(root_inode, "shared", S_IFDIR | S_ISGID | 0775, 0, caller{0, 50}, d) ==
                0);
  const attributes f = make(d.ino, "f", S_IFREG | 0644, alice);
  BOOST_TEST(f.gid == 50u);
  BOOST_TEST(!(f.mode & S_ISGID));
  const attributes sub = make(d.ino, "sub", S_IFDIR | 0755, alice);
  BOOST_TEST(sub.gid == 50u);
  BOOST_TEST((sub.mode & S_ISGID) != 0u);
  const attributes plain = make(root_inode, "plain", S_IFREG | 0644, alice);
  BOOST_TEST(plain.gid == 1000u);
}

BOOST_AUTO_TEST_CASE(lookup_errors) {
  const attributes f = make(root_inode, "f");
  attributes a;
  BOOST_TEST(m->lookup(root_inode, "nope", a) == ENOENT);
  BOOST_TEST(m->lookup(f.ino, "x", a) == ENOTDIR);
  BOOST_TEST(m->lookup(999, "x", a) == ENOENT);
  BOOST_TEST(m->lookup(root_inode, std::string(256, 'n'), a) == ENAMETOOLONG);
  BOOST_TEST(m->getattr(999, a) == ENOENT);
}

BOOST_AUTO_TEST_CASE(symlinks) {
  attributes s;
  BOOST_REQUIRE(m->make_symlink(root_inode, "l", "../target/x", alice, s) == 0);
  BOOST_TEST(S_ISLNK(s.mode));
  BOOST_TEST(s.size == 11u);
  BOOST_TEST(s.uid == 1000u);
  std::string target;
  BOOST_TEST(m->read_symlink(s.ino, target) == 0);
  BOOST_TEST(target == "../target/x");
  const attributes f = make(root_inode, "f");
  BOOST_TEST(m->read_symlink(f.ino, target) == EINVAL);
  BOOST_TEST(m->read_symlink(999, target) == ENOENT);
  attributes a;
  BOOST_TEST(m->make_symlink(root_inode, "long", std::string(4096, 't'), alice, a) ==
             ENAMETOOLONG);
  BOOST_TEST(m->make_symlink(root_inode, "max", std::string(4095, 't'), alice, a) == 0);
  BOOST_TEST(m->make_symlink(root_inode, "l", "x", alice, a) == EEXIST);
  // A symlink's size cannot be set.
  attribute_change c;
  c.size = 0;
  BOOST_TEST(m->setattr(s.ino, c, a) == EINVAL);
}

BOOST_AUTO_TEST_CASE(hard_links) {
  const attributes d = dir(root_inode, "d");
  const attributes f = make(root_inode, "f");
  age(d.ino);
  const time_value t = after(attr(f.ino).ctime);
  attributes a;
  BOOST_REQUIRE(m->link(f.ino, d.ino, "g", a) == 0);
  BOOST_TEST(a.nlink == 2u);
  BOOST_TEST(!(a.ctime < t));
  BOOST_TEST(!(attr(d.ino).mtime < t));
  BOOST_TEST(!(attr(d.ino).ctime < t));
  attributes g;
  BOOST_TEST(m->lookup(d.ino, "g", g) == 0);
  BOOST_TEST(g.ino == f.ino);
  BOOST_TEST(m->link(d.ino, root_inode, "dd", a) == EPERM);
  BOOST_TEST(m->link(f.ino, root_inode, "d", a) == EEXIST);
  BOOST_TEST(m->link(999, root_inode, "x", a) == ENOENT);
  BOOST_TEST(m->link(f.ino, 999, "x", a) == ENOENT);
  BOOST_TEST(m->link(f.ino, f.ino, "x", a) == ENOTDIR);
  BOOST_TEST(m->link(f.ino, root_inode, std::string(256, 'n'), a) == ENAMETOOLONG);
  BOOST_TEST(attr(f.ino).nlink == 2u);
}

BOOST_AUTO_TEST_CASE(unlink_and_orphans) {
  const attributes f = make(root_inode, "f");
  attributes a;
  BOOST_REQUIRE(m->link(f.ino, root_inode, "g", a) == 0);
  age(root_inode);
  const time_value t = after(attr(f.ino).ctime);
  std::optional<inode_id> unlinked;
  BOOST_TEST(m->unlink(root_inode, "f", unlinked) == 0);
  BOOST_TEST(!unlinked);
  BOOST_TEST(attr(f.ino).nlink == 1u);
  BOOST_TEST(!(attr(f.ino).ctime < t));
  BOOST_TEST(!(attr(root_inode).mtime < t));
  BOOST_TEST(m->lookup(root_inode, "f", a) == ENOENT);
  BOOST_TEST(m->unlink(root_inode, "g", unlinked) == 0);
  BOOST_TEST((unlinked == f.ino));
  // Unlinked but still there (open somewhere) until remove_inode.
  BOOST_TEST(attr(f.ino).nlink == 0u);
  BOOST_TEST((m->orphans() == std::vector<inode_id>{f.ino}));
  BOOST_TEST(m->stats().inodes == 2u);
  m->commit();
  reopen();
  BOOST_TEST((m->orphans() == std::vector<inode_id>{f.ino}));
  m->remove_inode(f.ino);
  BOOST_TEST(m->getattr(f.ino, a) == ENOENT);
  BOOST_TEST(m->orphans().empty());
  BOOST_TEST(m->stats().inodes == 1u);
  m->remove_inode(root_inode);  // linked: no-op
  m->remove_inode(999);         // absent: no-op
  BOOST_TEST(m->getattr(root_inode, a) == 0);

  const attributes d = dir(root_inode, "d");
  BOOST_TEST(m->unlink(root_inode, "d", unlinked) == EISDIR);
  BOOST_TEST(m->unlink(root_inode, "nope", unlinked) == ENOENT);
  BOOST_TEST(m->unlink(999, "x", unlinked) == ENOENT);
  BOOST_TEST(m->unlink(root_inode, std::string(256, 'n'), unlinked) == ENAMETOOLONG);
  BOOST_TEST(attr(d.ino).nlink == 2u);
}

BOOST_AUTO_TEST_CASE(rmdir_keeps_link_counts) {
  const attributes d = dir(root_inode, "d");
  const attributes sub = dir(d.ino, "sub");
  const attributes f = make(d.ino, "f");
  BOOST_TEST(attr(d.ino).nlink == 3u);
  std::optional<inode_id> unlinked;
  BOOST_TEST(m->rmdir(root_inode, "d", unlinked) == ENOTEMPTY);
  BOOST_TEST(m->rmdir(d.ino, "f", unlinked) == ENOTDIR);
  BOOST_TEST(m->rmdir(d.ino, "nope", unlinked) == ENOENT);
  BOOST_TEST(m->rmdir(f.ino, "x", unlinked) == ENOTDIR);
  age(d.ino);
  const time_value t = after(attr(sub.ino).ctime);
  BOOST_TEST(m->rmdir(d.ino, "sub", unlinked) == 0);
  BOOST_TEST((unlinked == sub.ino));
  BOOST_TEST(attr(sub.ino).nlink == 0u);
  BOOST_TEST(attr(d.ino).nlink == 2u);
  BOOST_TEST(!(attr(d.ino).mtime < t));
  BOOST_TEST(!(attr(d.ino).ctime < t));
  // A removed directory that is still open takes no new entries.
  attributes a;
  BOOST_TEST(m->make_node(sub.ino, "x", S_IFREG | 0644, 0, root_user, a) == ENOENT);
  m->remove_inode(sub.ino);
  BOOST_TEST(m->getattr(sub.ino, a) == ENOENT);
}

BOOST_AUTO_TEST_CASE(rename_within_and_across_directories) {
  const attributes a_dir = dir(root_inode, "a");
  const attributes b_dir = dir(root_inode, "b");
  const attributes f = make(a_dir.ino, "f");
  const attributes sub = dir(a_dir.ino, "sub");
  age(a_dir.ino);
  age(b_dir.ino);
  time_value t = after(attr(sub.ino).ctime);
  std::optional<inode_id> unlinked;
  BOOST_REQUIRE(m->rename(a_dir.ino, "f", a_dir.ino, "g", 0, unlinked) == 0);
  BOOST_TEST(!unlinked);
  attributes x;
  BOOST_TEST(m->lookup(a_dir.ino, "f", x) == ENOENT);
  BOOST_TEST(m->lookup(a_dir.ino, "g", x) == 0);
  BOOST_TEST(x.ino == f.ino);
  BOOST_TEST(!(x.ctime < t));
  BOOST_TEST(!(attr(a_dir.ino).mtime < t));
  BOOST_TEST(attr(b_dir.ino).mtime.sec == 2000);  // untouched

  t = after(attr(a_dir.ino).ctime);
  BOOST_REQUIRE(m->rename(a_dir.ino, "sub", b_dir.ino, "moved", 0, unlinked) == 0);
  BOOST_TEST(attr(a_dir.ino).nlink == 2u);
  BOOST_TEST(attr(b_dir.ino).nlink == 3u);
  BOOST_TEST(attr(root_inode).nlink == 4u);
  BOOST_TEST(!(attr(b_dir.ino).mtime < t));
  BOOST_TEST(!(attr(a_dir.ino).ctime < t));
  BOOST_TEST(!(attr(sub.ino).ctime < t));
  std::vector<dir_entry> entries;
  BOOST_REQUIRE(m->read_directory(sub.ino, 0, 2, entries) == 0);
  BOOST_TEST(entries[1].attr.ino == b_dir.ino);  // ".." follows the move
  BOOST_TEST((names(a_dir.ino) == std::set<std::string>{".", "..", "g"}));
  BOOST_TEST((names(b_dir.ino) == std::set<std::string>{".", "..", "moved"}));
}

BOOST_AUTO_TEST_CASE(rename_replaces_targets_of_the_same_kind) {
  const attributes f = make(root_inode, "f");
  const attributes g = make(root_inode, "g");
  std::optional<inode_id> unlinked;
  BOOST_REQUIRE(m->rename(root_inode, "f", root_inode, "g", 0, unlinked) == 0);
  BOOST_TEST((unlinked == g.ino));
  BOOST_TEST(attr(g.ino).nlink == 0u);
  attributes x;
  BOOST_TEST(m->lookup(root_inode, "g", x) == 0);
  BOOST_TEST(x.ino == f.ino);

  // A replaced file with another name left is not unlinked.
  const attributes h = make(root_inode, "h");
  BOOST_REQUIRE(m->link(h.ino, root_inode, "h2", x) == 0);
  BOOST_REQUIRE(m->rename(root_inode, "g", root_inode, "h", 0, unlinked) == 0);
  BOOST_TEST(!unlinked);
  BOOST_TEST(attr(h.ino).nlink == 1u);

  // Directories: over an empty one (link counts of both parents), not over a full one.
  const attributes p = dir(root_inode, "p");
  const attributes q = dir(root_inode, "q");
  const attributes d1 = dir(p.ino, "d1");
  const attributes d2 = dir(q.ino, "d2");
  BOOST_TEST(attr(root_inode).nlink == 4u);
  BOOST_REQUIRE(m->rename(p.ino, "d1", q.ino, "d2", 0, unlinked) == 0);
  BOOST_TEST((unlinked == d2.ino));
  BOOST_TEST(attr(d2.ino).nlink == 0u);
  BOOST_TEST(attr(p.ino).nlink == 2u);
  BOOST_TEST(attr(q.ino).nlink == 3u);
  const attributes full = dir(root_inode, "full");
  make(full.ino, "inside");
  const attributes e = dir(root_inode, "e");
  BOOST_TEST(m->rename(root_inode, "e", root_inode, "full", 0, unlinked) == ENOTEMPTY);
  BOOST_TEST(m->rename(root_inode, "e", root_inode, "h", 0, unlinked) == ENOTDIR);
  BOOST_TEST(m->rename(root_inode, "h", root_inode, "e", 0, unlinked) == EISDIR);
  BOOST_TEST(attr(e.ino).nlink == 2u);
  BOOST_TEST(attr(h.ino).nlink == 1u);
  (void)d1;
}

BOOST_AUTO_TEST_CASE(rename_errors_and_no_ops) {
  const attributes a = dir(root_inode, "a");
  const attributes b = dir(a.ino, "b");
  const attributes c = dir(b.ino, "c");
  const attributes f = make(root_inode, "f");
  std::optional<inode_id> unlinked;
  BOOST_TEST(m->rename(root_inode, "a", c.ino, "x", 0, unlinked) == EINVAL);  // own subtree
  BOOST_TEST(m->rename(root_inode, "a", a.ino, "x", 0, unlinked) == EINVAL);  // into itself
  BOOST_TEST(m->rename(a.ino, "b", b.ino, "x", 0, unlinked) == EINVAL);
  BOOST_TEST(m->rename(root_inode, "nope", root_inode, "x", 0, unlinked) == ENOENT);
  BOOST_TEST(m->rename(root_inode, "f", 999, "x", 0, unlinked) == ENOENT);
  BOOST_TEST(m->rename(root_inode, "f", f.ino, "x", 0, unlinked) == ENOTDIR);
  BOOST_TEST(m->rename(root_inode, "f", root_inode, std::string(256, 'n'), 0, unlinked) ==
             ENAMETOOLONG);
  BOOST_TEST(m->rename(root_inode, "f", root_inode, "a", RENAME_NOREPLACE, unlinked) == EEXIST);
  BOOST_TEST(m->rename(root_inode, "f", root_inode, "x", RENAME_EXCHANGE, unlinked) == ENOENT);
  BOOST_TEST(m->rename(root_inode, "f", root_inode, "x", 4, unlinked) == EINVAL);
  BOOST_TEST(m->rename(root_inode, "f", root_inode, "x", RENAME_EXCHANGE | RENAME_NOREPLACE,
                       unlinked) == EINVAL);
  BOOST_TEST(m->rename(root_inode, "f", root_inode, "g", RENAME_NOREPLACE, unlinked) == 0);
  // The same inode on both sides: nothing happens.
  attributes x;
  BOOST_REQUIRE(m->link(f.ino, a.ino, "hard", x) == 0);
  BOOST_TEST(m->rename(root_inode, "g", a.ino, "hard", 0, unlinked) == 0);
  BOOST_TEST(!unlinked);
  BOOST_TEST(m->lookup(root_inode, "g", x) == 0);
  BOOST_TEST(m->lookup(a.ino, "hard", x) == 0);
  BOOST_TEST(attr(f.ino).nlink == 2u);
  BOOST_TEST(m->rename(root_inode, "g", root_inode, "g", 0, unlinked) == 0);
  BOOST_TEST(m->lookup(root_inode, "g", x) == 0);
  // Nothing moved by the failures.
  BOOST_TEST(attr(root_inode).nlink == 3u);
  BOOST_TEST(attr(a.ino).nlink == 3u);
  BOOST_TEST((names(c.ino) == std::set<std::string>{".", ".."}));
}

BOOST_AUTO_TEST_CASE(rename_exchange_of_a_file_and_a_directory_in_different_parents) {
  const attributes p = dir(root_inode, "p");
  const attributes q = dir(root_inode, "q");
  const attributes f = make(p.ino, "f");
  const attributes d = dir(q.ino, "d");
  BOOST_TEST(attr(p.ino).nlink == 2u);
  BOOST_TEST(attr(q.ino).nlink == 3u);
  const time_value t = after(attr(d.ino).ctime);
  std::optional<inode_id> unlinked;
  BOOST_REQUIRE(m->rename(p.ino, "f", q.ino, "d", RENAME_EXCHANGE, unlinked) == 0);
  BOOST_TEST(!unlinked);
  attributes x;
  BOOST_TEST(m->lookup(p.ino, "f", x) == 0);
  BOOST_TEST(x.ino == d.ino);
  BOOST_TEST(m->lookup(q.ino, "d", x) == 0);
  BOOST_TEST(x.ino == f.ino);
  BOOST_TEST(attr(p.ino).nlink == 3u);
  BOOST_TEST(attr(q.ino).nlink == 2u);
  BOOST_TEST(!(attr(f.ino).ctime < t));
  BOOST_TEST(!(attr(d.ino).ctime < t));
  std::vector<dir_entry> entries;
  BOOST_REQUIRE(m->read_directory(d.ino, 0, 2, entries) == 0);
  BOOST_TEST(entries[1].attr.ino == p.ino);
  // A directory exchanged with something inside it: EINVAL.
  const attributes inner = dir(d.ino, "inner");
  BOOST_TEST(m->rename(root_inode, "p", d.ino, "inner", RENAME_EXCHANGE, unlinked) == EINVAL);
  BOOST_TEST(m->rename(d.ino, "inner", root_inode, "p", RENAME_EXCHANGE, unlinked) == EINVAL);
  (void)inner;
}

BOOST_AUTO_TEST_CASE(read_directory_pages_by_stable_offsets) {
  const attributes d = dir(root_inode, "d");
  for (int i = 0; i < 10; ++i) make(d.ino, "e" + std::to_string(i));
  std::vector<dir_entry> page;
  BOOST_REQUIRE(m->read_directory(d.ino, 0, 4, page) == 0);
  BOOST_REQUIRE(page.size() == 4u);
  BOOST_TEST(page[0].name == ".");
  BOOST_TEST(page[0].attr.ino == d.ino);
  BOOST_TEST(page[1].name == "..");
  BOOST_TEST(page[1].attr.ino == root_inode);
  BOOST_TEST(page[2].name == "e0");
  BOOST_TEST(page[3].name == "e1");
  BOOST_TEST(S_ISREG(page[3].attr.mode));
  std::map<std::string, int> seen;
  for (const auto& e : page) seen[e.name] += 1;
  // Meanwhile: one listed and one not yet listed go, two come.
  std::optional<inode_id> unlinked;
  BOOST_REQUIRE(m->unlink(d.ino, "e0", unlinked) == 0);
  BOOST_REQUIRE(m->unlink(d.ino, "e5", unlinked) == 0);
  make(d.ino, "new1");
  std::uint64_t offset = page.back().next_offset;
  for (;;) {
    BOOST_REQUIRE(m->read_directory(d.ino, offset, 3, page) == 0);
    if (page.empty()) break;
    for (const auto& e : page) seen[e.name] += 1;
    offset = page.back().next_offset;
    if (seen.count("e7") && !seen.count("new2")) make(d.ino, "new2");
  }
  for (const char* name : {".", "..", "e0", "e1", "e2", "e3", "e4", "e6", "e7", "e8", "e9"}) {
    BOOST_TEST(seen[name] == 1, name);
  }
  BOOST_TEST(seen["e5"] == 0);
  BOOST_TEST(seen["new1"] <= 1);
  BOOST_TEST(seen["new2"] <= 1);
  // Offsets 1 and 2 resume after "." and "..".
  BOOST_REQUIRE(m->read_directory(d.ino, 1, 1, page) == 0);
  BOOST_TEST(page.at(0).name == "..");
  BOOST_REQUIRE(m->read_directory(d.ino, 2, 1, page) == 0);
  BOOST_TEST(page.at(0).name == "e1");
  BOOST_TEST(m->read_directory(d.ino, 0, 0, page) == 0);
  BOOST_TEST(page.empty());
  const attributes f = make(root_inode, "f");
  BOOST_TEST(m->read_directory(f.ino, 0, 10, page) == ENOTDIR);
  BOOST_TEST(m->read_directory(999, 0, 10, page) == ENOENT);
}

BOOST_AUTO_TEST_CASE(setattr_changes_what_is_asked_and_ctime_always) {
  const attributes f = make(root_inode, "f", S_IFREG | 0644, alice);
  const time_value t = after(f.ctime);
  attribute_change c;
  c.mode = S_IFDIR | S_ISUID | 0600;  // the type stays
  c.uid = 7;
  c.gid = 8;
  c.atime = time_value{-5, 999999999};
  c.mtime = time_value{1234567890, 5};
  attributes a;
  BOOST_REQUIRE(m->setattr(f.ino, c, a) == 0);
  BOOST_TEST(a.mode == (S_IFREG | S_ISUID | 0600u));
  BOOST_TEST(a.uid == 7u);
  BOOST_TEST(a.gid == 8u);
  BOOST_TEST((a.atime == time_value{-5, 999999999}));
  BOOST_TEST((a.mtime == time_value{1234567890, 5}));
  BOOST_TEST(!(a.ctime < t));
  BOOST_TEST((attr(f.ino).atime == a.atime));
  const time_value t2 = after(a.ctime);
  attribute_change now;
  now.atime_now = now.mtime_now = true;
  BOOST_REQUIRE(m->setattr(f.ino, now, a) == 0);
  BOOST_TEST(!(a.atime < t2));
  BOOST_TEST(!(a.mtime < t2));
  BOOST_TEST(!(a.ctime < t2));
  // Nothing asked: nothing changes.
  const attributes before = attr(f.ino);
  BOOST_REQUIRE(m->setattr(f.ino, attribute_change{}, a) == 0);
  BOOST_TEST((attr(f.ino).ctime == before.ctime));
  BOOST_TEST(m->setattr(999, c, a) == ENOENT);
}

BOOST_AUTO_TEST_CASE(setattr_size_errors_and_times) {
  const attributes d = dir(root_inode, "d");
  const attributes f = make(root_inode, "f");
  attribute_change c;
  c.size = 10;
  attributes a;
  BOOST_TEST(m->setattr(d.ino, c, a) == EISDIR);
  c.size = max_file_size + 1;
  BOOST_TEST(m->setattr(f.ino, c, a) == EFBIG);
  c.size = max_file_size;
  BOOST_TEST(m->setattr(f.ino, c, a) == 0);
  age(f.ino);
  const time_value t = after(attr(f.ino).ctime);
  c.size = 100;
  BOOST_REQUIRE(m->setattr(f.ino, c, a) == 0);
  BOOST_TEST(a.size == 100u);
  BOOST_TEST(!(a.mtime < t));  // a size change moves mtime
  BOOST_TEST(!(a.ctime < t));
  c.mtime = time_value{3000, 0};
  c.size = 50;
  BOOST_REQUIRE(m->setattr(f.ino, c, a) == 0);
  BOOST_TEST((a.mtime == time_value{3000, 0}));  // unless given
}

BOOST_AUTO_TEST_CASE(write_then_truncate_down_then_extend_reads_zeros) {
  const attributes f = make(root_inode, "f");
  const std::uint64_t id = write(*m, f.ino, 0, 1000);
  BOOST_TEST(attr(f.ino).size == 1000u);
  BOOST_TEST((read_byte(*m, f.ino, 500) == byte_source{id, 500}));
  attribute_change c;
  c.size = 100;
  attributes a;
  BOOST_REQUIRE(m->setattr(f.ino, c, a) == 0);
  c.size = 1000;  // truncate up: a hole
  BOOST_REQUIRE(m->setattr(f.ino, c, a) == 0);
  BOOST_TEST((read_byte(*m, f.ino, 99) == byte_source{id, 99}));
  BOOST_TEST((read_byte(*m, f.ino, 100) == byte_source{}));
  BOOST_TEST((read_byte(*m, f.ino, 999) == byte_source{}));
  // A write past the end after a truncate: the gap reads zeros as well.
  c.size = 10;
  BOOST_REQUIRE(m->setattr(f.ino, c, a) == 0);
  const std::uint64_t later = m->new_slice_id();
  BOOST_REQUIRE(m->append_slices(f.ino, 0, {slice_record{900, later, 50, 0, 50}}, 950) == 0);
  BOOST_TEST((read_byte(*m, f.ino, 9) == byte_source{id, 9}));
  BOOST_TEST((read_byte(*m, f.ino, 10) == byte_source{}));
  BOOST_TEST((read_byte(*m, f.ino, 500) == byte_source{}));
  BOOST_TEST((read_byte(*m, f.ino, 920) == byte_source{later, 20}));
  BOOST_TEST(m->slice_referenced(id));  // still shows its first 10 bytes
}

BOOST_AUTO_TEST_CASE(truncation_drops_whole_chunks_and_their_references) {
  const attributes f = make(root_inode, "f");
  const std::uint64_t a0 = write(*m, f.ino, 0, 4096);
  const std::uint64_t a1 = write(*m, f.ino, chunk_size + 10, 4096);
  const std::uint64_t a2 = write(*m, f.ino, 2 * chunk_size, 4096);
  BOOST_TEST(attr(f.ino).size == 2 * chunk_size + 4096);
  BOOST_TEST(m->unreferenced_slice_count() == 0u);
  attribute_change c;
  c.size = chunk_size + 100;
  attributes a;
  BOOST_REQUIRE(m->setattr(f.ino, c, a) == 0);
  BOOST_TEST(m->chunk(f.ino, 2).empty());
  BOOST_TEST(!m->slice_referenced(a2));
  BOOST_TEST(m->slice_referenced(a1));
  BOOST_TEST(m->unreferenced_slice_count() == 1u);
  c.size = chunk_size;  // exactly at a boundary: chunk 1 goes whole
  BOOST_REQUIRE(m->setattr(f.ino, c, a) == 0);
  BOOST_TEST(m->chunk(f.ino, 1).empty());
  BOOST_TEST(!m->slice_referenced(a1));
  c.size = 0;
  BOOST_REQUIRE(m->setattr(f.ino, c, a) == 0);
  BOOST_TEST(m->chunk(f.ino, 0).empty());
  BOOST_TEST(!m->slice_referenced(a0));
  BOOST_TEST(m->unreferenced_slice_count() == 3u);
  c.size = 3 * chunk_size;
  BOOST_REQUIRE(m->setattr(f.ino, c, a) == 0);
  BOOST_TEST((read_byte(*m, f.ino, chunk_size + 20) == byte_source{}));
}

BOOST_AUTO_TEST_CASE(append_slices_counts_references_and_grows_the_file) {
  const attributes f = make(root_inode, "f");
  const std::uint64_t id = m->new_slice_id();
  age(f.ino);
  const time_value t = after(attr(f.ino).ctime);
  // One slice shown by two records counts twice.
  BOOST_REQUIRE(m->append_slices(f.ino, 0,
                                 {slice_record{0, id, 200, 0, 100},
                                  slice_record{300, id, 200, 100, 100}},
                                 400) == 0);
  const attributes a = attr(f.ino);
  BOOST_TEST(a.size == 400u);
  BOOST_TEST(!(a.mtime < t));
  BOOST_TEST(!(a.ctime < t));
  BOOST_TEST(m->chunk(f.ino, 0).size() == 2u);
  BOOST_REQUIRE(m->append_slices(f.ino, 0, {}, 100) == 0);  // never shrinks
  BOOST_TEST(attr(f.ino).size == 400u);
  BOOST_TEST(m->append_slices(999, 0, {}, 1) == ENOENT);
  BOOST_TEST(m->append_slices(f.ino, 0, {slice_record{0, id, 10, 5, 10}}, 1) == EINVAL);
  // Replacing one of the two records leaves one reference: still referenced.
  const auto records = m->chunk(f.ino, 0);
  BOOST_REQUIRE(m->replace_chunk(f.ino, 0, records, {records[0]}));
  BOOST_TEST(m->slice_referenced(id));
  BOOST_TEST(m->unreferenced_slice_count() == 0u);
  BOOST_REQUIRE(m->replace_chunk(f.ino, 0, {records[0]}, {}));
  BOOST_TEST(!m->slice_referenced(id));
  BOOST_TEST(m->unreferenced_slice_count() == 1u);
  BOOST_TEST(m->chunk(f.ino, 0).empty());
}

BOOST_AUTO_TEST_CASE(replace_chunk_swaps_only_what_is_expected) {
  const attributes f = make(root_inode, "f");
  const std::uint64_t a = write(*m, f.ino, 0, 100);
  const std::uint64_t b = write(*m, f.ino, 50, 100);
  const auto records = m->chunk(f.ino, 0);
  BOOST_REQUIRE(records.size() == 2u);
  const auto compact = visible(records, 150);
  BOOST_TEST(!m->replace_chunk(f.ino, 0, {records[0]}, compact));  // changed meanwhile
  BOOST_TEST((m->chunk(f.ino, 0) == records));
  BOOST_REQUIRE(m->replace_chunk(f.ino, 0, records, compact));
  BOOST_TEST((m->chunk(f.ino, 0) == compact));
  BOOST_TEST(m->slice_referenced(a));
  BOOST_TEST(m->slice_referenced(b));
  BOOST_TEST(m->unreferenced_slice_count() == 0u);
  // Compaction into a new slice: the old ones are garbage.
  const std::uint64_t c = m->new_slice_id();
  BOOST_REQUIRE(m->replace_chunk(f.ino, 0, compact, {slice_record{0, c, 150, 0, 150}}));
  BOOST_TEST(!m->slice_referenced(a));
  BOOST_TEST(!m->slice_referenced(b));
  BOOST_TEST(m->slice_referenced(c));
  BOOST_TEST(m->unreferenced_slice_count() == 2u);
  BOOST_TEST(!m->replace_chunk(999, 0, {}, {slice_record{0, c, 150, 0, 150}}));
}

BOOST_AUTO_TEST_CASE(remove_inode_queues_its_slices_for_collection) {
  const attributes f = make(root_inode, "f");
  const attributes g = make(root_inode, "g");
  const std::uint64_t only_f = write(*m, f.ino, 0, 100);
  const std::uint64_t shared = write(*m, f.ino, chunk_size, 100);
  BOOST_REQUIRE(m->copy_range(f.ino, chunk_size, g.ino, 0, 100) == 0);
  std::string value;
  BOOST_REQUIRE(m->set_xattr(f.ino, "user.a", "1", 0) == 0);
  std::optional<inode_id> unlinked;
  BOOST_REQUIRE(m->unlink(root_inode, "f", unlinked) == 0);
  BOOST_TEST(m->slice_referenced(only_f));  // an unlinked inode keeps its data until removed
  m->remove_inode(f.ino);
  BOOST_TEST(!m->slice_referenced(only_f));
  BOOST_TEST(m->slice_referenced(shared));
  BOOST_TEST(m->unreferenced_slice_count() == 1u);
  BOOST_TEST(m->chunk(f.ino, 0).empty());
  BOOST_TEST(m->get_xattr(f.ino, "user.a", value) == ENOENT);
}

BOOST_AUTO_TEST_CASE(punch_hole_zeros_a_range) {
  const attributes f = make(root_inode, "f");
  const std::uint64_t a = write(*m, f.ino, 0, 1000);
  const std::uint64_t b = write(*m, f.ino, chunk_size, 1000);
  age(f.ino);
  const time_value t = after(attr(f.ino).ctime);
  BOOST_REQUIRE(m->punch_hole(f.ino, 100, 200) == 0);
  BOOST_TEST((read_byte(*m, f.ino, 99) == byte_source{a, 99}));
  BOOST_TEST((read_byte(*m, f.ino, 100) == byte_source{}));
  BOOST_TEST((read_byte(*m, f.ino, 299) == byte_source{}));
  BOOST_TEST((read_byte(*m, f.ino, 300) == byte_source{a, 300}));
  BOOST_TEST(!(attr(f.ino).mtime < t));
  BOOST_TEST(attr(f.ino).size == chunk_size + 1000);
  // The whole of chunk 1 (to the end of the file and past it): the chunk goes.
  BOOST_REQUIRE(m->punch_hole(f.ino, chunk_size, 1u << 30) == 0);
  BOOST_TEST(m->chunk(f.ino, 1).empty());
  BOOST_TEST(!m->slice_referenced(b));
  BOOST_TEST(attr(f.ino).size == chunk_size + 1000);  // the size stays
  BOOST_TEST(m->punch_hole(999, 0, 1) == ENOENT);
  const attributes d = dir(root_inode, "d");
  BOOST_TEST(m->punch_hole(d.ino, 0, 1) == EISDIR);
}

BOOST_AUTO_TEST_CASE(copy_range_names_the_source_slices_across_chunk_boundaries) {
  const attributes src = make(root_inode, "src");
  const attributes dst = make(root_inode, "dst");
  // Source: data on both sides of its first chunk boundary with a hole inside.
  const std::uint64_t s0 = write(*m, src.ino, chunk_size - 300, 300);
  const std::uint64_t s1 = write(*m, src.ino, chunk_size, 500);
  BOOST_REQUIRE(m->punch_hole(src.ino, chunk_size - 100, 50) == 0);
  // Destination: old data where the copy lands (its hole must overwrite them).
  const std::uint64_t old = write(*m, dst.ino, 2 * chunk_size - 400, 400);
  write(*m, dst.ino, 2 * chunk_size, 600);
  const std::uint64_t from = chunk_size - 300, to = 2 * chunk_size - 250, length = 700;
  std::vector<byte_source> expected;
  for (std::uint64_t i = 0; i < length; ++i) expected.push_back(read_byte(*m, src.ino, from + i));
  BOOST_REQUIRE(m->copy_range(src.ino, from, dst.ino, to, length) == 0);
  for (std::uint64_t i = 0; i < length; ++i) {
    BOOST_REQUIRE_MESSAGE(read_byte(*m, dst.ino, to + i) == expected[i], "byte " << i);
  }
  BOOST_TEST((read_byte(*m, dst.ino, to + 200) == byte_source{}));  // the hole stays a hole
  BOOST_TEST((read_byte(*m, dst.ino, to - 1) == byte_source{old, 149}));
  BOOST_TEST(attr(dst.ino).size == 2 * chunk_size + 600);  // the old end was further
  // Each destination chunk's records stay inside it.
  for (std::uint32_t index : {1u, 2u}) {
    for (const slice_record& r : m->chunk(dst.ino, index)) {
      BOOST_TEST(std::uint64_t(r.pos) + r.len <= chunk_size);
    }
  }
  BOOST_TEST(!m->chunk(dst.ino, 2).empty());
  // The source's slices are referenced by both files now.
  std::optional<inode_id> unlinked;
  BOOST_REQUIRE(m->unlink(root_inode, "src", unlinked) == 0);
  m->remove_inode(src.ino);
  BOOST_TEST(m->slice_referenced(s0));
  BOOST_TEST(m->slice_referenced(s1));
  BOOST_TEST(m->unreferenced_slice_count() == 0u);
}

BOOST_AUTO_TEST_CASE(copy_range_limits_and_errors) {
  const attributes f = make(root_inode, "f");
  const attributes g = make(root_inode, "g");
  const std::uint64_t id = write(*m, f.ino, 0, 100);
  BOOST_REQUIRE(m->copy_range(f.ino, 50, g.ino, 0, 1000) == 0);  // up to the source's end
  BOOST_TEST(attr(g.ino).size == 50u);
  BOOST_TEST((read_byte(*m, g.ino, 0) == byte_source{id, 50}));
  BOOST_REQUIRE(m->copy_range(f.ino, 100, g.ino, 0, 1000) == 0);  // at the end: nothing
  BOOST_TEST(attr(g.ino).size == 50u);
  BOOST_TEST(m->copy_range(f.ino, 0, f.ino, 50, 60) == EINVAL);  // overlapping
  BOOST_REQUIRE(m->copy_range(f.ino, 0, f.ino, 100, 50) == 0);   // same file, apart
  BOOST_TEST((read_byte(*m, f.ino, 120) == byte_source{id, 20}));
  // Zeros copied over nothing write nothing.
  const attributes sparse = make(root_inode, "sparse");
  attribute_change c;
  c.size = 2 * chunk_size;
  attributes a;
  BOOST_REQUIRE(m->setattr(sparse.ino, c, a) == 0);
  const attributes empty = make(root_inode, "empty");
  BOOST_REQUIRE(m->copy_range(sparse.ino, 10, empty.ino, 0, chunk_size) == 0);
  BOOST_TEST(attr(empty.ino).size == chunk_size);
  BOOST_TEST(m->chunk(empty.ino, 0).empty());
  const attributes d = dir(root_inode, "d");
  BOOST_TEST(m->copy_range(d.ino, 0, g.ino, 0, 1) == EISDIR);
  BOOST_TEST(m->copy_range(f.ino, 0, d.ino, 0, 1) == EISDIR);
  BOOST_TEST(m->copy_range(999, 0, g.ino, 0, 1) == ENOENT);
  BOOST_TEST(m->copy_range(f.ino, 0, 999, 0, 1) == ENOENT);
  BOOST_TEST(m->copy_range(f.ino, 0, g.ino, max_file_size, 10) == EFBIG);
}

BOOST_AUTO_TEST_CASE(xattrs) {
  const attributes f = make(root_inode, "f");
  const time_value t = after(f.ctime);
  BOOST_REQUIRE(m->set_xattr(f.ino, "user.b", "two", 0) == 0);
  BOOST_TEST(!(attr(f.ino).ctime < t));
  BOOST_REQUIRE(m->set_xattr(f.ino, "user.a", std::string("\0x\0", 3), XATTR_CREATE) == 0);
  std::string value;
  BOOST_TEST(m->get_xattr(f.ino, "user.a", value) == 0);
  BOOST_TEST(value == std::string("\0x\0", 3));
  BOOST_TEST(m->set_xattr(f.ino, "user.a", "v", XATTR_CREATE) == EEXIST);
  BOOST_TEST(m->set_xattr(f.ino, "user.c", "v", XATTR_REPLACE) == ENODATA);
  BOOST_REQUIRE(m->set_xattr(f.ino, "user.a", "", XATTR_REPLACE) == 0);
  BOOST_TEST(m->get_xattr(f.ino, "user.a", value) == 0);
  BOOST_TEST(value.empty());
  BOOST_TEST(m->set_xattr(f.ino, "user.big", std::string(max_xattr_value + 1, 'v'), 0) == E2BIG);
  BOOST_TEST(m->set_xattr(f.ino, "user.max", std::string(max_xattr_value, 'v'), 0) == 0);
  BOOST_TEST(m->set_xattr(f.ino, std::string(256, 'n'), "v", 0) == ERANGE);
  BOOST_TEST(m->get_xattr(f.ino, "user.none", value) == ENODATA);
  BOOST_TEST(m->set_xattr(999, "user.a", "v", 0) == ENOENT);
  BOOST_TEST(m->get_xattr(999, "user.a", value) == ENOENT);
  std::vector<std::string> names;
  BOOST_REQUIRE(m->list_xattr(f.ino, names) == 0);
  BOOST_TEST((names == std::vector<std::string>{"user.a", "user.b", "user.max"}));
  BOOST_TEST(m->list_xattr(999, names) == ENOENT);
  const time_value t2 = after(attr(f.ino).ctime);
  BOOST_TEST(m->remove_xattr(f.ino, "user.b") == 0);
  BOOST_TEST(!(attr(f.ino).ctime < t2));
  BOOST_TEST(m->remove_xattr(f.ino, "user.b") == ENODATA);
  BOOST_TEST(m->remove_xattr(999, "user.b") == ENOENT);
  BOOST_REQUIRE(m->list_xattr(f.ino, names) == 0);
  BOOST_TEST(names.size() == 2u);
}

BOOST_AUTO_TEST_CASE(statistics_follow_every_change) {
  const attributes f = make(root_inode, "f");
  BOOST_TEST(m->stats().used_bytes == 0u);
  write(*m, f.ino, 0, 1);
  BOOST_TEST(m->stats().used_bytes == 4096u);
  write(*m, f.ino, 4096, 1);
  BOOST_TEST(m->stats().used_bytes == 8192u);
  const attributes g = make(root_inode, "g");
  BOOST_REQUIRE(m->copy_range(f.ino, 0, g.ino, 0, 4097) == 0);
  BOOST_TEST(m->stats().used_bytes == 16384u);
  attribute_change c;
  c.size = 10;
  attributes a;
  BOOST_REQUIRE(m->setattr(g.ino, c, a) == 0);
  BOOST_TEST(m->stats().used_bytes == 12288u);
  make(root_inode, "dir", S_IFDIR | 0755);  // directories' sizes are not used bytes
  BOOST_TEST(m->stats().used_bytes == 12288u);
  BOOST_TEST(m->stats().inodes == 4u);
  std::optional<inode_id> unlinked;
  BOOST_REQUIRE(m->unlink(root_inode, "f", unlinked) == 0);
  BOOST_TEST(m->stats().inodes == 4u);  // exists until removed
  m->remove_inode(f.ino);
  BOOST_TEST(m->stats().used_bytes == 4096u);
  BOOST_TEST(m->stats().inodes == 3u);
  m->commit();
  reopen();
  BOOST_TEST(m->stats().used_bytes == 4096u);
  BOOST_TEST(m->stats().inodes == 3u);
}

BOOST_AUTO_TEST_CASE(group_commit_keeps_earlier_calls_when_one_fails) {
  BOOST_TEST(!m->in_transaction());
  const attributes f = make(root_inode, "f");
  BOOST_TEST(m->in_transaction());
  attributes a;
  BOOST_TEST(m->make_node(root_inode, "f", S_IFREG | 0644, 0, root_user, a) == EEXIST);
  BOOST_TEST(m->in_transaction());
  const attributes g = make(root_inode, "g");
  BOOST_TEST(g.ino == f.ino + 1);
  attributes looked;
  BOOST_TEST(m->lookup(root_inode, "g", looked) == 0);  // reads see the open transaction
  m->commit();
  BOOST_TEST(!m->in_transaction());
  m->commit();  // nothing open: a no-op
  reopen();
  BOOST_TEST(m->lookup(root_inode, "f", a) == 0);
  BOOST_TEST(m->lookup(root_inode, "g", a) == 0);
  BOOST_TEST(m->stats().inodes == 3u);
}

BOOST_AUTO_TEST_CASE(uncommitted_calls_are_lost_at_a_crash_and_counters_never_go_back) {
  const attributes f = make(root_inode, "f");
  m->commit();
  make(root_inode, "lost");
  reopen();  // closed without a commit: as a crash
  attributes a;
  BOOST_TEST(m->lookup(root_inode, "f", a) == 0);
  BOOST_TEST(m->lookup(root_inode, "lost", a) == ENOENT);
  BOOST_TEST(m->stats().inodes == 2u);
  const attributes g = make(root_inode, "g");
  BOOST_TEST(g.ino > f.ino);
}

BOOST_AUTO_TEST_CASE(a_call_that_throws_undoes_only_itself) {
  const attributes f = make(root_inode, "f");
  write(*m, f.ino, 0, 100);
  write(*m, f.ino, chunk_size, 100);
  m->commit();
  {  // Chunk 1 broken behind the filesystem's back.
    sqlite3* raw = nullptr;
    BOOST_REQUIRE(sqlite3_open(file.c_str(), &raw) == SQLITE_OK);
    BOOST_REQUIRE(sqlite3_exec(raw, "UPDATE chunks SET slices = x'0102' WHERE idx = 1", nullptr,
                               nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(raw);
  }
  const attributes g = make(root_inode, "g");  // opens the group's transaction
  const auto chunk0 = m->chunk(f.ino, 0);
  const statistics before = m->stats();
  // Chunk 0 gets a hole record, then chunk 1 fails to decode: the call throws.
  BOOST_CHECK_THROW(m->punch_hole(f.ino, 50, 2 * chunk_size), std::exception);
  BOOST_TEST(m->in_transaction());
  BOOST_TEST((m->chunk(f.ino, 0) == chunk0));
  BOOST_TEST(m->stats().inodes == before.inodes);
  attributes a;
  BOOST_TEST(m->lookup(root_inode, "g", a) == 0);
  m->commit();
  reopen();
  BOOST_TEST(m->lookup(root_inode, "g", a) == 0);
  BOOST_TEST(a.ino == g.ino);
}

BOOST_AUTO_TEST_CASE(a_failed_commit_undoes_the_whole_group_and_the_store_goes_on) {
  make(root_inode, "kept");
  m->commit();
  const statistics before = m->stats();
  // Writes past the WAL's present size fail (as a full disk would) while the group commits.
  const auto wal = std::filesystem::path(file.string() + "-wal");
  rlimit old_limit{};
  BOOST_REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old_limit;
  small.rlim_cur = std::filesystem::file_size(wal);
  for (int i = 0; i < 3000; ++i) make(root_inode, "lost" + std::to_string(i));
  BOOST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  bool failed = false;
  try {
    m->commit();
  } catch (const std::system_error&) {
    failed = true;
  }
  BOOST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &old_limit) == 0);
  std::signal(SIGXFSZ, old_handler);
  BOOST_REQUIRE(failed);
  BOOST_TEST(!m->in_transaction());
  attributes a;
  BOOST_TEST(m->lookup(root_inode, "lost0", a) == ENOENT);
  BOOST_TEST(m->stats().inodes == before.inodes);
  const attributes next = make(root_inode, "after");
  m->commit();
  reopen();
  BOOST_TEST(m->lookup(root_inode, "kept", a) == 0);
  BOOST_TEST(m->lookup(root_inode, "after", a) == 0);
  BOOST_TEST(a.ino == next.ino);
  BOOST_TEST(m->lookup(root_inode, "lost2999", a) == ENOENT);
  BOOST_TEST(m->stats().inodes == before.inodes + 1);
}

BOOST_AUTO_TEST_CASE(a_call_failing_for_the_disk_fails_its_whole_group) {
  make(root_inode, "kept");
  m->commit();
  const statistics before = m->stats();
  const auto wal = std::filesystem::path(file.string() + "-wal");
  rlimit old_limit{};
  BOOST_REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old_limit;
  small.rlim_cur = std::filesystem::file_size(wal);
  BOOST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  // A group big enough that SQLite spills pages to the WAL before the commit: a call fails.
  int failed_at = -1;
  for (int i = 0; i < 50000 && failed_at < 0; ++i) {
    attributes a;
    try {
      m->make_node(root_inode, "lost" + std::to_string(i), S_IFREG | 0644, 0, root_user, a);
    } catch (const std::system_error&) {
      failed_at = i;
    }
  }
  bool commit_failed = false;
  try {
    m->commit();
  } catch (const std::system_error&) {
    commit_failed = true;
  }
  BOOST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &old_limit) == 0);
  std::signal(SIGXFSZ, old_handler);
  BOOST_TEST_MESSAGE("a call failed at " << failed_at);
  BOOST_TEST(failed_at > 0);
  BOOST_TEST(commit_failed);  // the calls before the failure are gone with it: not reported done
  attributes a;
  BOOST_TEST(m->lookup(root_inode, "lost0", a) == ENOENT);
  BOOST_TEST(m->stats().inodes == before.inodes);
  make(root_inode, "after");
  m->commit();
  reopen();
  BOOST_TEST(m->lookup(root_inode, "kept", a) == 0);
  BOOST_TEST(m->lookup(root_inode, "after", a) == 0);
  BOOST_TEST(m->lookup(root_inode, "lost0", a) == ENOENT);
}

BOOST_AUTO_TEST_CASE(slice_ids_are_never_handed_out_twice_even_across_a_crash) {
  std::uint64_t last = 0;
  for (int i = 0; i < 1500; ++i) {  // past one reserved batch
    const std::uint64_t id = m->new_slice_id();
    BOOST_REQUIRE(id > last);
    last = id;
  }
  BOOST_TEST(last >= 1500u);
  make(root_inode, "f");
  BOOST_TEST(m->in_transaction());
  reopen();  // a crash with an open transaction
  const std::uint64_t next = m->new_slice_id();
  BOOST_TEST(next > last);
  // A reservation commits the open transaction: what came before it is durable.
  reopen();
  make(root_inode, "g");
  for (int i = 0; i < 1100; ++i) m->new_slice_id();
  BOOST_TEST(!m->in_transaction());
  reopen();
  attributes a;
  BOOST_TEST(m->lookup(root_inode, "g", a) == 0);
  BOOST_TEST(m->new_slice_id() > next + 1100);
}

BOOST_AUTO_TEST_CASE(creating_small_files_is_cheap) {
  // Not a pass/fail timing: the per-operation cost, reported for the record.
  constexpr int files = 10000;
  const std::uint64_t id_base = m->new_slice_id();
  const auto start = std::chrono::steady_clock::now();
  const std::clock_t cpu_start = std::clock();
  for (int i = 0; i < files; ++i) {
    attributes a;
    BOOST_REQUIRE(m->make_node(root_inode, "file" + std::to_string(i), S_IFREG | 0644, 0, alice,
                               a) == 0);
    if (i % 10 == 9) m->commit();
  }
  m->commit();
  const auto created = std::chrono::steady_clock::now();
  const std::clock_t cpu_created = std::clock();
  for (int i = 0; i < files; ++i) {
    attributes a;
    BOOST_REQUIRE(m->lookup(root_inode, "file" + std::to_string(i), a) == 0);
    const slice_record r{0, id_base + 1 + std::uint64_t(i), 4096, 0, 4096};
    BOOST_REQUIRE(m->append_slices(a.ino, 0, {r}, 4096) == 0);
    if (i % 10 == 9) m->commit();
  }
  m->commit();
  const auto written = std::chrono::steady_clock::now();
  const std::clock_t cpu_written = std::clock();
  using us = std::chrono::duration<double, std::micro>;
  const auto cpu_us = [](std::clock_t ticks) { return 1e6 * double(ticks) / CLOCKS_PER_SEC; };
  std::printf("fs metadata: create %.1f us/file (cpu %.1f), lookup+append_slices %.1f us/file "
              "(cpu %.1f); a commit every 10 operations\n",
              us(created - start).count() / files, cpu_us(cpu_created - cpu_start) / files,
              us(written - created).count() / files, cpu_us(cpu_written - cpu_created) / files);
  BOOST_TEST(m->stats().inodes == files + 1u);
}

BOOST_AUTO_TEST_SUITE_END()
