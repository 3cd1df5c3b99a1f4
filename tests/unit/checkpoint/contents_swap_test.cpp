#define BOOST_TEST_MODULE checkpoint_contents_swap
#include <boost/test/unit_test.hpp>

#include "support/scratch_dir.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "checkpoint/contents_swap.hpp"

namespace fs = std::filesystem;
using test_support::scratch_dir;

namespace {

void write(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
}

std::string read(const fs::path& file) {
  std::ifstream in(file);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Every path under `dir`, relative, sorted.
std::set<std::string> tree(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    out.insert(entry.path().lexically_relative(dir).string());
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_contents_are_swapped_and_nothing_reserved_remains) {
  scratch_dir tmp;
  const fs::path dir = tmp.dir / "env", from = tmp.dir / "checkpoint";
  write(dir / "old.txt", "old");
  write(dir / "sub" / "gone.txt", "gone");
  write(from / "new.txt", "new");
  write(from / "sub" / "kept.txt", "kept");
  ::chmod(from.c_str(), 0750);
  const auto stats = sm::checkpoint::swap_contents(from, dir, {});
  sm::checkpoint::finish_contents_swap(dir);
  BOOST_TEST(stats.files == 2u);
  BOOST_TEST((tree(dir) == std::set<std::string>{"new.txt", "sub", "sub/kept.txt"}));
  BOOST_TEST(read(dir / "sub" / "kept.txt") == "kept");
  struct stat st {};
  ::stat(dir.c_str(), &st);
  BOOST_TEST((st.st_mode & 07777) == 0750u);  // the directory takes the checkpoint's mode
  BOOST_TEST(!sm::checkpoint::undo_contents_swap(dir));
}

BOOST_AUTO_TEST_CASE(a_failed_copy_is_undone_to_the_old_contents) {
  scratch_dir tmp;
  const fs::path dir = tmp.dir / "env";
  write(dir / "old.txt", "old");
  write(dir / "sub" / "b.txt", "b");
  const auto before = tree(dir);
  BOOST_CHECK_THROW(sm::checkpoint::swap_contents(tmp.dir / "missing", dir, {}), std::system_error);
  BOOST_TEST(sm::checkpoint::undo_contents_swap(dir));
  BOOST_TEST((tree(dir) == before));
  BOOST_TEST(read(dir / "old.txt") == "old");
}

// The states a crash can leave, as start-up finds them.
BOOST_AUTO_TEST_CASE(a_crash_while_moving_aside_is_undone) {
  scratch_dir tmp;
  const fs::path dir = tmp.dir / "env";
  write(dir / "not-moved-yet.txt", "x");
  write(dir / ".state-manager-restore-aside" / "moved.txt", "y");
  BOOST_TEST(sm::checkpoint::undo_contents_swap(dir));
  BOOST_TEST((tree(dir) == std::set<std::string>{"moved.txt", "not-moved-yet.txt"}));
}

BOOST_AUTO_TEST_CASE(a_crash_while_filling_in_is_undone) {
  scratch_dir tmp;
  const fs::path dir = tmp.dir / "env";
  write(dir / "restored-half.txt", "new");
  write(dir / ".state-manager-restore-new" / "not-up-yet.txt", "new");
  write(dir / ".state-manager-restore-old" / "old.txt", "old");
  write(dir / ".state-manager-restore-old" / "sub" / "deep.txt", "deep");
  BOOST_TEST(sm::checkpoint::undo_contents_swap(dir));
  BOOST_TEST((tree(dir) == std::set<std::string>{"old.txt", "sub", "sub/deep.txt"}));
}

BOOST_AUTO_TEST_CASE(a_crash_while_removing_the_old_contents_is_finished) {
  scratch_dir tmp;
  const fs::path dir = tmp.dir / "env";
  write(dir / "new.txt", "new");
  write(dir / ".state-manager-restore-trash" / "old.txt", "old");
  BOOST_TEST(!sm::checkpoint::undo_contents_swap(dir));
  BOOST_TEST((tree(dir) == std::set<std::string>{"new.txt"}));
}

BOOST_AUTO_TEST_CASE(only_the_four_names_are_reserved) {
  BOOST_TEST(sm::checkpoint::is_contents_swap_name(".state-manager-restore-old"));
  BOOST_TEST(!sm::checkpoint::is_contents_swap_name(".state-manager-restore-other"));
  BOOST_TEST(!sm::checkpoint::is_contents_swap_name("state-manager-restore-old"));
}

// A committed swap whose old contents could not be marked as garbage leaves them under their
// reserved name. They are garbage: the next swap drops them, and a failure of that swap puts
// back the contents it found, never the older ones.
BOOST_AUTO_TEST_CASE(a_new_swap_drops_what_a_committed_one_left_and_undoes_to_the_current) {
  scratch_dir tmp;
  const fs::path dir = tmp.dir / "env";
  write(dir / "current.txt", "current");
  write(dir / ".state-manager-restore-old" / "older.txt", "older");
  BOOST_CHECK_THROW(sm::checkpoint::swap_contents(tmp.dir / "missing", dir, {}), std::system_error);
  BOOST_TEST(sm::checkpoint::undo_contents_swap(dir));
  BOOST_TEST((tree(dir) == std::set<std::string>{"current.txt"}));
}

BOOST_AUTO_TEST_CASE(finishing_is_idempotent) {
  scratch_dir tmp;
  const fs::path dir = tmp.dir / "env";
  write(dir / "new.txt", "new");
  write(dir / ".state-manager-restore-old" / "old.txt", "old");
  sm::checkpoint::finish_contents_swap(dir);
  sm::checkpoint::finish_contents_swap(dir);  // again, as after a crash during the first
  BOOST_TEST((tree(dir) == std::set<std::string>{"new.txt"}));
}
