#define BOOST_TEST_MODULE checkpoint_copy_tree
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include "base/fd.hpp"
#include "checkpoint/copy_tree.hpp"
#include "support/scratch_dir.hpp"
#include "support/seeded_random.hpp"

namespace fs = std::filesystem;
using sm::checkpoint::copy_cancelled;
using sm::checkpoint::copy_options;
using sm::checkpoint::copy_stats;
using sm::checkpoint::copy_tree;
using sm::checkpoint::remove_tree;
using sm::checkpoint::tree_size;

namespace {

constexpr std::uint64_t mib = 1024 * 1024;

// scratch_dir's cleanup cannot empty read-only subdirectories as non-root; remove_tree can, and
// running it on every case's directory exercises it too.
struct scratch_dir : test_support::scratch_dir {
  using test_support::scratch_dir::scratch_dir;
  ~scratch_dir() {
    try {
      remove_tree(dir);
    } catch (const std::system_error& e) {
      BOOST_TEST_MESSAGE("cleanup: " << e.what());
    }
  }
};

std::string random_bytes(std::size_t size, std::uint64_t seed) {
  sm::test::seeded_random random{seed};
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(random.next());
  return bytes;
}

void write_file(const fs::path& path, const std::string& content, mode_t mode = 0644) {
  {
    std::ofstream out(path, std::ios::binary);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    BOOST_REQUIRE(out.good());
  }
  BOOST_REQUIRE_EQUAL(::chmod(path.c_str(), mode), 0);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  BOOST_REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct stat lstat_of(const fs::path& path) {
  struct stat st {};
  BOOST_REQUIRE_MESSAGE(::lstat(path.c_str(), &st) == 0, "lstat " << path);
  return st;
}

void set_times(const fs::path& path, time_t seconds, long nanoseconds) {
  const struct timespec times[2] = {{seconds - 1000, nanoseconds / 2}, {seconds, nanoseconds}};
  BOOST_REQUIRE_EQUAL(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
}

// Compares the copy's times with the source's as they were before anything read it: reading moves
// the atime (relatime does so when it is older than the mtime), so check before reading the copy.
void check_times_equal(const struct stat& a, const fs::path& copy) {
  const struct stat b = lstat_of(copy);
  BOOST_TEST_INFO("times of " << copy);
  BOOST_TEST(a.st_mtim.tv_sec == b.st_mtim.tv_sec);
  BOOST_TEST_INFO("times of " << copy);
  BOOST_TEST(a.st_mtim.tv_nsec == b.st_mtim.tv_nsec);
  BOOST_TEST_INFO("times of " << copy);
  BOOST_TEST(a.st_atim.tv_sec == b.st_atim.tv_sec);
  BOOST_TEST_INFO("times of " << copy);
  BOOST_TEST(a.st_atim.tv_nsec == b.st_atim.tv_nsec);
}

void report_methods(const char* test, const copy_stats& stats) {
  BOOST_TEST_MESSAGE(test << ": files " << stats.files << ", reflinked " << stats.reflinked
                          << ", copy_file_range " << stats.copy_file_range << ", read_write "
                          << stats.read_write);
}

// A tmpfs of `size` at `dir`, unmounted on scope exit whatever the test did. Tests needing one
// skip when mounting is not allowed (not root, or no CAP_SYS_ADMIN in this namespace).
struct tmpfs_mount {
  fs::path dir;
  bool mounted = false;
  tmpfs_mount(fs::path where, const std::string& size) : dir(std::move(where)) {
    fs::create_directories(dir);
    const std::string options = "size=" + size;
    mounted = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) == 0;
    if (!mounted) BOOST_TEST_MESSAGE("cannot mount tmpfs: " << std::strerror(errno));
  }
  ~tmpfs_mount() {
    if (mounted && ::umount2(dir.c_str(), 0) != 0) ::umount2(dir.c_str(), MNT_DETACH);
  }
  tmpfs_mount(const tmpfs_mount&) = delete;
  tmpfs_mount& operator=(const tmpfs_mount&) = delete;
};

// A file of `apparent` bytes with data only at `data_at` (4 KiB each); the rest is holes.
void write_sparse_file(const fs::path& path, std::uint64_t apparent,
                       const std::vector<std::uint64_t>& data_at) {
  sm::unique_fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  BOOST_REQUIRE(fd);
  BOOST_REQUIRE_EQUAL(::ftruncate(fd.get(), static_cast<off_t>(apparent)), 0);
  std::uint64_t seed = 7;
  for (std::uint64_t offset : data_at) {
    const std::string block = random_bytes(4096, seed++);
    BOOST_REQUIRE_EQUAL(::pwrite(fd.get(), block.data(), block.size(), static_cast<off_t>(offset)),
                        static_cast<ssize_t>(block.size()));
  }
}

void check_sparse_copy(const fs::path& source, const fs::path& copy) {
  const struct stat a = lstat_of(source), b = lstat_of(copy);
  BOOST_TEST(a.st_size == b.st_size);
  const auto allocated = static_cast<std::uint64_t>(b.st_blocks) * 512;
  BOOST_TEST_MESSAGE("sparse copy " << copy.filename() << ": apparent " << b.st_size
                                    << ", allocated " << allocated);
  BOOST_TEST(allocated < mib);
  BOOST_TEST(allocated * 16 < static_cast<std::uint64_t>(b.st_size));
  BOOST_TEST((read_file(source) == read_file(copy)));
}

}  // namespace

BOOST_AUTO_TEST_CASE(contents_modes_and_times_are_preserved) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  fs::create_directories(from / "a" / "b" / "c");
  fs::create_directories(from / "empty");
  fs::create_directories(from / "read-only");

  const std::vector<std::size_t> sizes = {0, 1, 4095, 4096, 65537, mib, mib + 17, 3 * mib + 5};
  const std::vector<mode_t> modes = {0644, 0600, 0755, 0444, 0640, 0700, 04755, 0400};
  std::vector<fs::path> files;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const fs::path dir = i % 3 == 0 ? from : i % 3 == 1 ? from / "a" : from / "a" / "b" / "c";
    const fs::path file = dir / ("file" + std::to_string(i));
    write_file(file, random_bytes(sizes[i], i + 1), modes[i]);
    set_times(file, 1600000000 + static_cast<time_t>(i), 123456789 + static_cast<long>(i));
    files.push_back(file);
    total += sizes[i];
  }
  write_file(from / "read-only" / "inside", "kept", 0644);
  BOOST_REQUIRE_EQUAL(::chmod((from / "read-only").c_str(), 0555), 0);
  BOOST_REQUIRE_EQUAL(::chmod((from / "a" / "b").c_str(), 0750), 0);
  // Directory times last, as a copy must reproduce them after filling the directory.
  for (const fs::path& dir : {from / "a" / "b" / "c", from / "a" / "b", from / "a", from / "empty",
                              from / "read-only", from}) {
    set_times(dir, 1500000000, 987654321);
  }

  std::vector<struct stat> file_stats;
  for (const fs::path& file : files) file_stats.push_back(lstat_of(file));
  const std::vector<std::string> dirs = {"a/b/c", "a/b", "a", "empty", "read-only", ""};
  std::vector<struct stat> dir_stats;
  for (const std::string& dir : dirs) dir_stats.push_back(lstat_of(from / dir));

  std::vector<std::uint64_t> progress;
  copy_options options;
  options.progress = [&](std::uint64_t done) { progress.push_back(done); };
  const copy_stats stats = copy_tree(from, to, options);
  report_methods("plain tree", stats);

  BOOST_TEST(stats.files == sizes.size() + 1);
  BOOST_TEST(stats.dirs == 6u);  // to, a, a/b, a/b/c, empty, read-only
  BOOST_TEST(stats.bytes == total + 4);
  BOOST_TEST(stats.reflinked + stats.copy_file_range + stats.read_write == stats.files - 1);
  BOOST_TEST(stats.hardlinks == 0u);
  BOOST_TEST(stats.skipped == 0u);
  BOOST_REQUIRE(progress.size() == stats.files);
  BOOST_TEST(std::is_sorted(progress.begin(), progress.end()));
  BOOST_TEST(progress.back() == stats.bytes);

  for (std::size_t i = 0; i < dirs.size(); ++i) check_times_equal(dir_stats[i], to / dirs[i]);
  for (std::size_t i = 0; i < files.size(); ++i) {
    const fs::path copy = to / fs::relative(files[i], from);
    check_times_equal(file_stats[i], copy);
    BOOST_TEST_INFO("file " << copy);
    BOOST_TEST((read_file(copy) == read_file(files[i])));
    BOOST_TEST_INFO("file " << copy);
    BOOST_TEST((lstat_of(copy).st_mode & 07777) == modes[i]);
  }
  BOOST_TEST(read_file(to / "read-only" / "inside") == "kept");
  // After the time checks: listing a directory moves its atime.
  BOOST_TEST(tree_size(from) == total + 4);
  BOOST_TEST(tree_size(to) == total + 4);
  BOOST_TEST(fs::is_empty(to / "empty"));
  BOOST_TEST((lstat_of(to / "read-only").st_mode & 07777) == 0555u);
  BOOST_TEST((lstat_of(to / "a" / "b").st_mode & 07777) == 0750u);
}

BOOST_AUTO_TEST_CASE(symlinks_are_copied_as_links_never_followed) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  const fs::path outside = scratch.dir / "outside";
  fs::create_directories(from / "sub");
  fs::create_directories(outside);
  write_file(outside / "secret", "not to be copied");
  write_file(from / "target", "inside");
  fs::create_symlink("target", from / "inner");
  fs::create_symlink((outside / "secret").string(), from / "to-outside-file");
  fs::create_symlink("../../outside", from / "sub" / "to-outside-dir");
  fs::create_symlink("does-not-exist", from / "dangling");
  set_times(from / "inner", 1400000000, 111111111);
  const struct stat inner = lstat_of(from / "inner");

  const copy_stats stats = copy_tree(from, to, {});
  check_times_equal(inner, to / "inner");  // before readlink moves the atime
  BOOST_TEST(stats.symlinks == 4u);
  BOOST_TEST(stats.files == 1u);
  for (const char* link : {"inner", "to-outside-file", "sub/to-outside-dir", "dangling"}) {
    BOOST_TEST_INFO("link " << link);
    BOOST_TEST(fs::is_symlink(to / link));
    BOOST_TEST_INFO("link " << link);
    BOOST_TEST(fs::read_symlink(to / link) == fs::read_symlink(from / link));
  }
  // Nothing outside the tree came in through the links.
  BOOST_TEST(tree_size(to) == 6u);
}

BOOST_AUTO_TEST_CASE(hard_links_stay_one_inode) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  fs::create_directories(from / "sub");
  write_file(from / "a", random_bytes(10000, 3), 0640);
  fs::create_hard_link(from / "a", from / "sub" / "b");
  fs::create_hard_link(from / "a", from / "sub" / "c");
  // Its other name is outside the tree, so inside it is one ordinary file.
  write_file(from / "half", "half");
  fs::create_hard_link(from / "half", scratch.dir / "half-outside");

  BOOST_TEST(tree_size(from) == 10004u);
  const copy_stats stats = copy_tree(from, to, {});
  BOOST_TEST(stats.files == 2u);
  BOOST_TEST(stats.hardlinks == 2u);
  BOOST_TEST(stats.bytes == 10004u);
  const struct stat a = lstat_of(to / "a");
  BOOST_TEST(a.st_nlink == 3u);
  BOOST_TEST(lstat_of(to / "sub" / "b").st_ino == a.st_ino);
  BOOST_TEST(lstat_of(to / "sub" / "c").st_ino == a.st_ino);
  BOOST_TEST(a.st_ino != lstat_of(from / "a").st_ino);
  BOOST_TEST(lstat_of(to / "half").st_nlink == 1u);
  BOOST_TEST((read_file(to / "sub" / "c") == read_file(from / "a")));
}

// The walk and the filler thread against one thread doing everything: the same copy, with
// hard links whose names are spread over directories and far apart in the walk, so that a
// second name is linked while the first's data may still be on its way.
BOOST_AUTO_TEST_CASE(the_filler_thread_copies_what_one_thread_does) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from";
  for (int d = 0; d < 8; ++d) {
    fs::create_directories(from / ("d" + std::to_string(d)) / "inner");
    for (int f = 0; f < 40; ++f) {
      const fs::path file = from / ("d" + std::to_string(d)) / ("f" + std::to_string(f));
      write_file(file, random_bytes(std::size_t(f) * 977 + d, std::uint64_t(d * 100 + f)),
                 f % 2 ? 0640 : 0604);
    }
  }
  for (int d = 1; d < 8; ++d) {
    fs::create_hard_link(from / "d0" / "f7", from / ("d" + std::to_string(d)) / "inner" / "link");
  }
  copy_options sequential, parallel;
  sequential.parallel = copy_options::filler::off;
  parallel.parallel = copy_options::filler::always;
  std::uint64_t progress_last = 0;
  parallel.progress = [&](std::uint64_t done) { progress_last = done; };
  const copy_stats one = copy_tree(from, scratch.dir / "one", sequential);
  const copy_stats two = copy_tree(from, scratch.dir / "two", parallel);
  BOOST_TEST(one.files == two.files);
  BOOST_TEST(one.files == 320u);
  BOOST_TEST(one.hardlinks == 7u);
  BOOST_TEST(two.hardlinks == 7u);
  BOOST_TEST(one.bytes == two.bytes);
  BOOST_TEST(one.dirs == two.dirs);
  BOOST_TEST(progress_last == two.bytes);
  for (const auto& entry : fs::recursive_directory_iterator(from)) {
    const fs::path relative = entry.path().lexically_relative(from);
    const struct stat a = lstat_of(scratch.dir / "one" / relative);
    const struct stat b = lstat_of(scratch.dir / "two" / relative);
    BOOST_TEST(a.st_mode == b.st_mode, relative);
    BOOST_TEST(a.st_nlink == b.st_nlink, relative);
    BOOST_TEST(a.st_mtim.tv_nsec == b.st_mtim.tv_nsec, relative);
    if (entry.is_regular_file()) {
      BOOST_TEST((read_file(scratch.dir / "two" / relative) == read_file(entry.path())), relative);
    }
  }
  BOOST_TEST(lstat_of(scratch.dir / "two" / "d5" / "inner" / "link").st_ino ==
             lstat_of(scratch.dir / "two" / "d0" / "f7").st_ino);
}

BOOST_AUTO_TEST_CASE(sparse_files_keep_their_holes) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  fs::create_directories(from);
  // Data in the middle and at the end; holes at the start, between, and after.
  write_sparse_file(from / "sparse", 64 * mib, {8 * mib, 32 * mib + 4096});
  write_sparse_file(from / "ends-in-data", 16 * mib, {16 * mib - 4096});
  write_sparse_file(from / "all-hole", 8 * mib, {});

  const copy_stats stats = copy_tree(from, to, {});
  report_methods("sparse", stats);
  BOOST_TEST(stats.bytes == 88 * mib);
  check_sparse_copy(from / "sparse", to / "sparse");
  check_sparse_copy(from / "ends-in-data", to / "ends-in-data");
  BOOST_TEST(lstat_of(to / "all-hole").st_blocks == 0);
  BOOST_TEST(lstat_of(to / "all-hole").st_size == static_cast<off_t>(8 * mib));
}

BOOST_AUTO_TEST_CASE(extended_attributes_round_trip) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  fs::create_directories(from / "dir");
  write_file(from / "file", "x", 0644);
  const std::string value("value\0with nul", 14);
  if (::setxattr((from / "file").c_str(), "user.test", value.data(), value.size(), 0) != 0) {
    BOOST_TEST_MESSAGE("skipped: user xattrs refused here: " << std::strerror(errno));
    return;
  }
  BOOST_REQUIRE_EQUAL(::chmod((from / "file").c_str(), 0444), 0);
  BOOST_REQUIRE_EQUAL(::setxattr((from / "dir").c_str(), "user.test", "d", 1, 0), 0);

  copy_tree(from, to, {});
  char buffer[64];
  const ssize_t n = ::getxattr((to / "file").c_str(), "user.test", buffer, sizeof buffer);
  BOOST_REQUIRE(n >= 0);
  BOOST_TEST(std::string(buffer, static_cast<std::size_t>(n)) == value);
  BOOST_TEST(::getxattr((to / "dir").c_str(), "user.test", buffer, sizeof buffer) == 1);
  // Set before the read-only mode, which would have refused it to a non-root copier.
  BOOST_TEST((lstat_of(to / "file").st_mode & 07777) == 0444u);
}

BOOST_AUTO_TEST_CASE(fifos_are_copied_and_sockets_skipped) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  fs::create_directories(from);
  BOOST_REQUIRE_EQUAL(::mkfifo((from / "fifo").c_str(), 0640), 0);
  BOOST_REQUIRE_EQUAL(::chmod((from / "fifo").c_str(), 0640), 0);
  set_times(from / "fifo", 1300000000, 5);
  const struct stat source_fifo = lstat_of(from / "fifo");

  sm::unique_fd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  BOOST_REQUIRE(socket);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string socket_path = (from / "sock").string();
  BOOST_REQUIRE(socket_path.size() < sizeof address.sun_path);
  std::memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);
  BOOST_REQUIRE_EQUAL(
      ::bind(socket.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address), 0);

  const copy_stats stats = copy_tree(from, to, {});
  BOOST_TEST(stats.fifos == 1u);
  BOOST_TEST(stats.skipped == 1u);
  const struct stat fifo = lstat_of(to / "fifo");
  BOOST_TEST(S_ISFIFO(fifo.st_mode));
  BOOST_TEST((fifo.st_mode & 07777) == 0640u);
  check_times_equal(source_fifo, to / "fifo");
  BOOST_TEST(!fs::exists(fs::symlink_status(to / "sock")));
}

BOOST_AUTO_TEST_CASE(ownership_is_preserved_as_root) {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("skipped: not root");
    return;
  }
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  fs::create_directories(from / "dir");
  write_file(from / "file", "owned", 04750);
  fs::create_symlink("file", from / "link");
  BOOST_REQUIRE_EQUAL(::lchown((from / "file").c_str(), 1234, 5678), 0);
  BOOST_REQUIRE_EQUAL(::chmod((from / "file").c_str(), 04750), 0);  // chown cleared set-uid
  BOOST_REQUIRE_EQUAL(::lchown((from / "link").c_str(), 4321, 8765), 0);
  BOOST_REQUIRE_EQUAL(::lchown((from / "dir").c_str(), 1111, 2222), 0);

  copy_tree(from, to, {});
  const struct stat file = lstat_of(to / "file"), link = lstat_of(to / "link"),
                    dir = lstat_of(to / "dir");
  BOOST_TEST(file.st_uid == 1234u);
  BOOST_TEST(file.st_gid == 5678u);
  BOOST_TEST((file.st_mode & 07777) == 04750u);
  BOOST_TEST(link.st_uid == 4321u);
  BOOST_TEST(link.st_gid == 8765u);
  BOOST_TEST(dir.st_uid == 1111u);
  BOOST_TEST(dir.st_gid == 2222u);
}

// Files owned by us are not chowned (a syscall saved per file), unless the copy is made under
// a set-group-ID directory, whose group new inodes would take instead of ours.
BOOST_AUTO_TEST_CASE(our_own_files_keep_our_group_under_a_set_group_id_parent) {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("skipped: not root");
    return;
  }
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from", parent = scratch.dir / "shared";
  fs::create_directories(from / "dir");
  write_file(from / "dir" / "file", "ours", 0644);
  BOOST_REQUIRE_EQUAL(::lchown((from / "dir" / "file").c_str(), 0, 0), 0);
  BOOST_REQUIRE_EQUAL(::lchown((from / "dir").c_str(), 0, 0), 0);
  fs::create_directories(parent);
  BOOST_REQUIRE_EQUAL(::chown(parent.c_str(), 0, 4242), 0);
  BOOST_REQUIRE_EQUAL(::chmod(parent.c_str(), 02775), 0);

  copy_tree(from, parent / "to", {});
  BOOST_TEST(lstat_of(parent / "to" / "dir").st_gid == 0u);
  BOOST_TEST(lstat_of(parent / "to" / "dir" / "file").st_gid == 0u);
  BOOST_TEST(lstat_of(parent / "to" / "dir" / "file").st_uid == 0u);
}

BOOST_AUTO_TEST_CASE(bad_source_or_existing_target_fails) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  fs::create_directories(from);
  write_file(from / "file", "x");
  fs::create_directories(to);

  const auto fails_with = [](const fs::path& source, const fs::path& target, int error) {
    try {
      copy_tree(source, target, {});
    } catch (const std::system_error& e) {
      BOOST_TEST_MESSAGE("expected failure: " << e.what());
      return e.code().value() == error;
    }
    return false;
  };
  BOOST_TEST(fails_with(from, to, EEXIST));
  BOOST_TEST(fs::is_empty(to));  // an existing target is not written into
  BOOST_TEST(fails_with(scratch.dir / "missing", scratch.dir / "to2", ENOENT));
  fs::create_symlink(from, scratch.dir / "link-to-from");
  // O_DIRECTORY | O_NOFOLLOW on a symlink: ENOTDIR (ELOOP without O_DIRECTORY).
  BOOST_TEST(fails_with(scratch.dir / "link-to-from", scratch.dir / "to3", ENOTDIR));
  BOOST_TEST(fails_with(from / "file", scratch.dir / "to4", ENOTDIR));
  BOOST_TEST(!fs::exists(scratch.dir / "to2"));
  BOOST_TEST(!fs::exists(scratch.dir / "to3"));
  BOOST_TEST(!fs::exists(scratch.dir / "to4"));
}

BOOST_AUTO_TEST_CASE(cancel_flag_stops_the_copy) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from";
  fs::create_directories(from);
  for (int i = 0; i < 10; ++i) write_file(from / std::to_string(i), random_bytes(1000, i));

  std::atomic<bool> cancel{true};
  copy_options options;
  options.cancel = &cancel;
  BOOST_CHECK_THROW(copy_tree(from, scratch.dir / "before", options), copy_cancelled);
  BOOST_TEST(!fs::exists(scratch.dir / "before"));

  // Cancelled from the progress callback after the first file: the rest is not copied.
  cancel = false;
  int calls = 0;
  options.progress = [&](std::uint64_t) {
    ++calls;
    cancel = true;
  };
  BOOST_CHECK_THROW(copy_tree(from, scratch.dir / "during", options), copy_cancelled);
  BOOST_TEST(calls == 1);
  // The walk may have created a few more files ahead of their data; one has data.
  int with_data = 0;
  for (const auto& entry : fs::directory_iterator(scratch.dir / "during")) {
    if (fs::file_size(entry.path()) > 0) ++with_data;
  }
  BOOST_TEST(with_data == 1);
  remove_tree(scratch.dir / "during");
  BOOST_TEST(!fs::exists(scratch.dir / "during"));
}

BOOST_AUTO_TEST_CASE(full_filesystem_throws_enospc) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from";
  fs::create_directories(from);
  write_file(from / "big", random_bytes(4 * mib, 11));
  tmpfs_mount tiny(scratch.dir / "tiny", "1m");
  if (!tiny.mounted) return;

  const fs::path to = tiny.dir / "copy";
  int error = 0;
  try {
    copy_tree(from, to, {});
  } catch (const std::system_error& e) {
    BOOST_TEST_MESSAGE("expected failure: " << e.what());
    error = e.code().value();
  }
  BOOST_TEST(error == ENOSPC);
  remove_tree(to);
  BOOST_TEST(!fs::exists(to));
}

BOOST_AUTO_TEST_CASE(read_write_fallback_across_filesystems) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from";
  fs::create_directories(from / "sub");
  const std::string big = random_bytes(2 * mib + 3, 21), small = random_bytes(100, 22);
  write_file(from / "big", big);
  write_file(from / "sub" / "small", small);
  write_sparse_file(from / "sparse", 32 * mib, {4 * mib});
  tmpfs_mount other(scratch.dir / "other", "64m");
  if (!other.mounted) return;

  // The copy goes to another filesystem, where copy_file_range may refuse (EXDEV) or not,
  // depending on the kernel; either way the data must arrive whole and holes stay holes.
  const copy_stats stats = copy_tree(from, other.dir / "copy", {});
  report_methods("to tmpfs", stats);
  BOOST_TEST(stats.files == 3u);
  BOOST_TEST(stats.copy_file_range + stats.read_write + stats.reflinked == 3u);
  BOOST_TEST((read_file(other.dir / "copy" / "big") == big));
  BOOST_TEST((read_file(other.dir / "copy" / "sub" / "small") == small));
  check_sparse_copy(from / "sparse", other.dir / "copy" / "sparse");
}

BOOST_AUTO_TEST_CASE(without_kernel_copy_data_goes_by_read_and_write) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  fs::create_directories(from / "sub");
  const std::string big = random_bytes(3 * mib + 5, 31), small = random_bytes(100, 32);
  write_file(from / "big", big);
  write_file(from / "sub" / "small", small);
  write_file(from / "empty", "");
  write_sparse_file(from / "sparse", 32 * mib, {4 * mib});

  copy_options options;
  options.kernel_copy = false;
  const copy_stats stats = copy_tree(from, to, options);
  report_methods("kernel_copy off", stats);
  BOOST_TEST(stats.files == 4u);
  BOOST_TEST(stats.reflinked == 0u);
  BOOST_TEST(stats.copy_file_range == 0u);
  BOOST_TEST(stats.read_write == 3u);  // all but the empty file
  BOOST_TEST((read_file(to / "big") == big));
  BOOST_TEST((read_file(to / "sub" / "small") == small));
  BOOST_TEST(fs::file_size(to / "empty") == 0u);
  check_sparse_copy(from / "sparse", to / "sparse");
}

BOOST_AUTO_TEST_CASE(move_data_gets_data_extents_in_bounded_chunks) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from", to = scratch.dir / "to";
  fs::create_directories(from);
  const std::string dense = random_bytes(40 * mib + 1, 33);
  write_file(from / "dense", dense);
  write_sparse_file(from / "sparse", 64 * mib, {8 * mib, 32 * mib + 4096});

  // A mover by pread/pwrite that copies at most half of what it is asked each time, as one
  // whose writes come back short: the rest must be asked for again.
  struct call {
    bool sparse;  // of the sparse file, told apart by its size
    std::uint64_t offset, length;
  };
  std::vector<call> calls;
  copy_options options;
  options.kernel_copy = false;
  options.move_data = [&](int source, int target, std::uint64_t offset, std::uint64_t length) {
    struct stat st {};
    BOOST_REQUIRE_EQUAL(::fstat(source, &st), 0);
    calls.push_back({st.st_size == static_cast<off_t>(64 * mib), offset, length});
    const auto size = static_cast<std::size_t>(std::max<std::uint64_t>(length / 2, 1));
    std::string buffer(size, '\0');
    const ssize_t n = ::pread(source, buffer.data(), size, static_cast<off_t>(offset));
    BOOST_REQUIRE(n >= 0);
    BOOST_REQUIRE(::pwrite(target, buffer.data(), static_cast<std::size_t>(n),
                           static_cast<off_t>(offset)) == n);
    return static_cast<std::uint64_t>(n);
  };
  const copy_stats stats = copy_tree(from, to, options);
  BOOST_TEST(stats.read_write == 2u);
  BOOST_TEST((read_file(to / "dense") == dense));
  check_sparse_copy(from / "sparse", to / "sparse");
  std::uint64_t largest = 0, sparse_bytes_asked = 0;
  for (const call& c : calls) {
    largest = std::max(largest, c.length);
    if (c.sparse) sparse_bytes_asked += c.length;
  }
  BOOST_TEST_MESSAGE("move_data calls: " << calls.size());
  BOOST_TEST(largest == 16 * mib);  // the 40 MiB file was asked for 16 MiB at a time at most
  // Holes are never asked for: only the sparse file's two data blocks (and what is left of
  // them after each short return).
  BOOST_TEST(sparse_bytes_asked > 0u);
  BOOST_TEST(sparse_bytes_asked < mib);
}

BOOST_AUTO_TEST_CASE(a_move_data_failure_names_the_step_and_the_paths) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path from = scratch.dir / "from";
  fs::create_directories(from);
  write_file(from / "file", random_bytes(10000, 34));

  copy_options options;
  options.kernel_copy = false;
  options.move_data = [](int, int, std::uint64_t, std::uint64_t) -> std::uint64_t {
    throw std::system_error(EIO, std::generic_category(), "io_uring write");
  };
  std::string what;
  int error = 0;
  try {
    copy_tree(from, scratch.dir / "to", options);
  } catch (const std::system_error& e) {
    BOOST_TEST_MESSAGE("expected failure: " << e.what());
    what = e.what();
    error = e.code().value();
  }
  BOOST_TEST(error == EIO);
  BOOST_TEST(what.find("io_uring write") != std::string::npos);
  BOOST_TEST(what.find((from / "file").string()) != std::string::npos);
  BOOST_TEST(what.find((scratch.dir / "to" / "file").string()) != std::string::npos);
}

BOOST_AUTO_TEST_CASE(remove_tree_removes_everything_and_follows_nothing) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path tree = scratch.dir / "tree", outside = scratch.dir / "outside";
  fs::create_directories(tree / "a" / "locked");
  fs::create_directories(outside);
  write_file(outside / "keep", "keep");
  write_file(tree / "a" / "locked" / "file", "x", 0400);
  fs::create_symlink(outside, tree / "a" / "link-to-outside");
  fs::create_symlink(outside / "keep", tree / "link-to-keep");
  BOOST_REQUIRE_EQUAL(::mkfifo((tree / "fifo").c_str(), 0600), 0);
  BOOST_REQUIRE_EQUAL(::chmod((tree / "a" / "locked").c_str(), 0), 0);

  remove_tree(tree);
  BOOST_TEST(!fs::exists(fs::symlink_status(tree)));
  BOOST_TEST(read_file(outside / "keep") == "keep");
  remove_tree(tree);  // missing: nothing to do

  // A symlink given as the path is removed itself, not what it points to.
  fs::create_symlink(outside, scratch.dir / "link");
  remove_tree(scratch.dir / "link");
  BOOST_TEST(!fs::exists(fs::symlink_status(scratch.dir / "link")));
  BOOST_TEST(fs::exists(outside / "keep"));
}

namespace {

// `depth` directories nested under `root`, each named "d" (a path too long to name whole:
// made and read a directory at a time). Every `every` levels a directory has a mode, a time
// and a sibling file of its own; the deepest holds a file with two names.
constexpr int deep_levels = 15'000, deep_every = 997;

void make_deep_tree(const fs::path& root) {
  BOOST_REQUIRE_EQUAL(::mkdir(root.c_str(), 0755), 0);
  sm::unique_fd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  BOOST_REQUIRE(dir);
  for (int level = 1; level <= deep_levels; ++level) {
    BOOST_REQUIRE_EQUAL(::mkdirat(dir.get(), "d", 0755), 0);
    if (level % deep_every == 0) {
      const std::string name = "f" + std::to_string(level);
      sm::unique_fd file(::openat(dir.get(), name.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
      BOOST_REQUIRE(file);
      BOOST_REQUIRE_EQUAL(::write(file.get(), name.data(), name.size()),
                          static_cast<ssize_t>(name.size()));
    }
    sm::unique_fd child(::openat(dir.get(), "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    BOOST_REQUIRE(child);
    dir = std::move(child);
  }
  sm::unique_fd file(::openat(dir.get(), "bottom", O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  BOOST_REQUIRE(file);
  BOOST_REQUIRE_EQUAL(::write(file.get(), "deep", 4), 4);
  BOOST_REQUIRE_EQUAL(::linkat(dir.get(), "bottom", dir.get(), "bottom-link", 0), 0);
}

// Modes and times set from the bottom up (setting them top down, the children's creation
// would not move them, but their reading later must not either: they are checked first).
struct deep_marks {
  std::vector<struct stat> at;  // every deep_every levels, from level deep_every
};

deep_marks mark_deep_tree(const fs::path& root) {
  deep_marks marks;
  sm::unique_fd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  for (int level = 1; level <= deep_levels; ++level) {
    dir = sm::unique_fd(::openat(dir.get(), "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    BOOST_REQUIRE(dir);
    if (level % deep_every == 0) {
      BOOST_REQUIRE_EQUAL(::fchmod(dir.get(), 0750), 0);
      const struct timespec times[2] = {{1'600'000'000 + level, 5}, {1'700'000'000 + level, 7}};
      BOOST_REQUIRE_EQUAL(::futimens(dir.get(), times), 0);
      struct stat st {};
      BOOST_REQUIRE_EQUAL(::fstat(dir.get(), &st), 0);
      marks.at.push_back(st);
    }
  }
  return marks;
}

// Walks the copy down, checking what mark_deep_tree set and make_deep_tree wrote.
void check_deep_copy(const fs::path& root, const deep_marks& marks) {
  sm::unique_fd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  std::size_t mark = 0;
  int levels = 0;
  for (;;) {
    sm::unique_fd child(::openat(dir.get(), "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!child) break;
    dir = std::move(child);
    ++levels;
    if (levels % deep_every == 0) {
      struct stat st {};
      BOOST_REQUIRE_EQUAL(::fstat(dir.get(), &st), 0);
      BOOST_REQUIRE(mark < marks.at.size());
      BOOST_TEST((st.st_mode & 07777) == 0750u, "mode at level " << levels);
      BOOST_TEST(st.st_mtim.tv_sec == marks.at[mark].st_mtim.tv_sec, "mtime at level " << levels);
      BOOST_TEST(st.st_mtim.tv_nsec == marks.at[mark].st_mtim.tv_nsec);
      ++mark;
    }
  }
  BOOST_TEST(levels == deep_levels);
  BOOST_TEST(mark == marks.at.size());
  struct stat a {
  }, b{};
  BOOST_REQUIRE_EQUAL(::fstatat(dir.get(), "bottom", &a, AT_SYMLINK_NOFOLLOW), 0);
  BOOST_REQUIRE_EQUAL(::fstatat(dir.get(), "bottom-link", &b, AT_SYMLINK_NOFOLLOW), 0);
  BOOST_TEST(a.st_ino == b.st_ino);  // still one inode, linked by a path longer than PATH_MAX
  BOOST_TEST(a.st_nlink == 2u);
  BOOST_TEST(a.st_size == 4);
}

std::size_t open_descriptors() {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator("/proc/self/fd"), {}));
}

}  // namespace

// Walks on a stack of their own: 15,000 levels crashed the recursive walk (or ran out of
// descriptors, two a level). Every level's mode and times, sibling files and a hard link at the
// bottom come through; the descriptors held stay bounded.
BOOST_AUTO_TEST_CASE(a_tree_deeper_than_any_stack_is_copied_measured_and_removed) {
  scratch_dir scratch("sm-copy-tree");
  // On a tmpfs where we may mount one: 50,000 rmdir()s took 2 ms each on a loaded ext4.
  const tmpfs_mount fast(scratch.dir / "fast", "64m");
  const fs::path where = fast.mounted ? fast.dir : scratch.dir;
  const fs::path source = where / "deep", copy = where / "copy";
  make_deep_tree(source);
  const deep_marks marks = mark_deep_tree(source);
  const std::uint64_t files = deep_levels / deep_every + 1;

  const std::size_t before = open_descriptors();
  std::size_t most = 0;
  copy_options options;
  options.parallel = copy_options::filler::off;
  options.progress = [&](std::uint64_t) { most = std::max(most, open_descriptors()); };
  options.sync = false;  // a syncfs() of a loaded machine's disk proves nothing here
  const copy_stats stats = copy_tree(source, copy, options);
  BOOST_TEST(stats.dirs == static_cast<std::uint64_t>(deep_levels) + 1);
  BOOST_TEST(stats.files == files);
  BOOST_TEST(stats.hardlinks == 1u);
  BOOST_TEST_MESSAGE("descriptors: " << before << " before, at most " << most << " during");
  BOOST_TEST(most < before + 200);
  BOOST_TEST(open_descriptors() == before);
  check_deep_copy(copy, marks);

  std::uint64_t expected_size = 4;  // "bottom", once for its two names
  for (int level = deep_every; level <= deep_levels; level += deep_every) {
    expected_size += ("f" + std::to_string(level)).size();
  }
  BOOST_TEST(tree_size(source) == expected_size);
  BOOST_TEST(tree_size(copy) == expected_size);

  remove_tree(copy);
  BOOST_TEST(!fs::exists(fs::symlink_status(copy)));
  remove_tree(source);
  BOOST_TEST(!fs::exists(fs::symlink_status(source)));
  BOOST_TEST(open_descriptors() == before);
}

// A directory moved out from under a walk that closed its descriptor is not followed to where
// it went: coming back up by "..", the walk finds another directory and stops.
BOOST_AUTO_TEST_CASE(a_walk_coming_back_up_checks_where_it_is) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path source = scratch.dir / "tree", elsewhere = scratch.dir / "elsewhere";
  fs::create_directories(elsewhere);
  fs::path deep = source;
  for (int level = 0; level < 200; ++level) deep /= "d";
  fs::create_directories(deep);
  // Moves level 120 away once the walk is at the bottom (the deepest file's progress), where
  // level 119 is one it closed: its parent is not 119 any more.
  write_file(deep / "file", "x");
  fs::path moved = source;
  for (int level = 0; level < 120; ++level) moved /= "d";
  copy_options options;
  options.parallel = copy_options::filler::off;
  options.progress = [&](std::uint64_t) { fs::rename(moved, elsewhere / "d"); };
  BOOST_CHECK_EXCEPTION(copy_tree(source, scratch.dir / "copy", options), std::system_error,
                        [](const std::system_error& e) {
                          BOOST_TEST_MESSAGE(e.what());
                          return std::string(e.what()).find("moved during the walk") !=
                                 std::string::npos;
                        });
}

// Back up from one deep branch and down another: the levels between were closed on the way
// down and only those passed through on the way up were reopened, so going down again finds
// closed levels at the edge of the open ones (the copy once tried to stat one: EBADF).
BOOST_AUTO_TEST_CASE(deep_branches_side_by_side) {
  scratch_dir scratch("sm-copy-tree");
  const fs::path source = scratch.dir / "tree", copy = scratch.dir / "copy";
  fs::path fork = source;
  for (int level = 0; level < 100; ++level) fork /= "d";
  std::vector<fs::path> leaves;
  for (const char* branch : {"a", "b", "c"}) {
    fs::path leaf = fork / branch;
    for (int level = 0; level < 150; ++level) leaf /= "d";
    fs::create_directories(leaf);
    write_file(leaf / "file", branch);
    leaves.push_back(leaf.lexically_relative(source));
  }
  write_file(fork / "beside", "beside");
  copy_options options;
  options.parallel = copy_options::filler::off;
  const copy_stats stats = copy_tree(source, copy, options);
  BOOST_TEST(stats.dirs == 1u + 100u + 3u * 151u);
  BOOST_TEST(stats.files == 4u);
  for (std::size_t i = 0; i < leaves.size(); ++i) {
    BOOST_TEST(read_file(copy / leaves[i] / "file") == std::string(1, char('a' + i)));
  }
  BOOST_TEST(tree_size(copy) == 3u + 6u);
  remove_tree(copy);
  BOOST_TEST(!fs::exists(fs::symlink_status(copy)));
}

namespace {

// A random tree of deep and branching directories (up to ~250 levels, past the 64 the walks
// keep open), files, hard links and directory modes and times; returns the apparent size of its
// files, each inode once.
std::uint64_t make_random_tree(const fs::path& root, std::uint64_t seed) {
  sm::test::seeded_random random{seed};
  fs::create_directories(root);
  std::vector<fs::path> dirs{root};
  std::vector<fs::path> files;
  std::uint64_t size = 0;
  for (int step = 0; step < 60; ++step) {
    const fs::path from = dirs[random.below(dirs.size())];
    switch (random.below(4)) {
      case 0: {  // a chain going deep
        fs::path dir = from / ("c" + std::to_string(step));
        const std::size_t length = 1 + random.below(120);
        for (std::size_t i = 1; i < length; ++i) dir /= "d";
        fs::create_directories(dir);
        dirs.push_back(dir);
        break;
      }
      case 1: {
        const fs::path file = from / ("f" + std::to_string(step));
        const std::string content(random.below(300), char('a' + step % 26));
        write_file(file, content);
        files.push_back(file);
        size += content.size();
        break;
      }
      case 2:
        if (!files.empty()) {
          fs::create_hard_link(files[random.below(files.size())],
                               from / ("h" + std::to_string(step)));
        }
        break;
      default:
        fs::create_directory(from / ("e" + std::to_string(step)));
        break;
    }
  }
  // Modes and times last, deepest first: nothing made afterwards moves them.
  std::sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) {
    return a.native().size() > b.native().size();
  });
  for (std::size_t i = 0; i + 1 < dirs.size(); ++i) {
    BOOST_REQUIRE_EQUAL(::chmod(dirs[i].c_str(), 0750), 0);
    set_times(dirs[i], 1'600'000'000 + static_cast<time_t>(i), 1234);
  }
  return size;
}

}  // namespace

// The walks against std::filesystem's (which holds a descriptor a level, fine at this depth):
// the same names, types, contents, links, modes and times, for trees that go down, back up and
// down again past the levels the walks keep open.
BOOST_AUTO_TEST_CASE(random_deep_trees_copy_measure_and_remove_like_a_recursion) {
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    scratch_dir scratch("sm-copy-tree");
    const tmpfs_mount fast(scratch.dir / "fast", "64m");  // a loaded disk took 30 s
    const fs::path where = fast.mounted ? fast.dir : scratch.dir;
    const fs::path source = where / "tree", copy = where / "copy";
    const std::uint64_t size = make_random_tree(source, seed);
    std::vector<std::pair<fs::path, struct stat>> before;
    for (auto it = fs::recursive_directory_iterator(source);
         it != fs::recursive_directory_iterator(); ++it) {
      before.emplace_back(it->path().lexically_relative(source), lstat_of(it->path()));
    }
    copy_options options;
    options.parallel = seed % 2 ? copy_options::filler::off : copy_options::filler::always;
    copy_tree(source, copy, options);
    BOOST_TEST_INFO("seed " << seed);
    BOOST_TEST(tree_size(source) == size);
    BOOST_TEST_INFO("seed " << seed);
    BOOST_TEST(tree_size(copy) == size);
    std::size_t copied = 0;
    for (auto it = fs::recursive_directory_iterator(copy); it != fs::recursive_directory_iterator();
         ++it) {
      ++copied;
    }
    BOOST_TEST(copied == before.size());
    for (const auto& [relative, a] : before) {
      const struct stat b = lstat_of(copy / relative);
      BOOST_TEST_INFO("seed " << seed << ": " << relative);
      BOOST_TEST((a.st_mode == b.st_mode && a.st_nlink == b.st_nlink &&
                  a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec));
      if (S_ISREG(a.st_mode)) {
        BOOST_TEST_INFO("seed " << seed << ": " << relative);
        BOOST_TEST((read_file(source / relative) == read_file(copy / relative)));
      }
    }
    remove_tree(copy);
    remove_tree(source);
    BOOST_TEST(!fs::exists(fs::symlink_status(copy)));
    BOOST_TEST(!fs::exists(fs::symlink_status(source)));
  }
}
