// The checkpoint and restore pipelines (src/checkpoint/pipeline.hpp) driven through a fake host
// and fake stateful components whose state is a small file: real files in a scratch directory
// for env_dir, the component's state and tmp/checkpoints, so that each case sees what the
// pipeline really left on disk.
#define BOOST_TEST_MODULE checkpoint_pipeline
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <algorithm>

#include <cerrno>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "async/offload.hpp"
#include "base/hex.hpp"
#include "checkpoint/local_store.hpp"
#include "checkpoint/pipeline.hpp"
#include "checkpoint/restore_journal.hpp"
#include "s3/dynamic.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
namespace cp = sm::checkpoint;
namespace sv = sm::supervisor;
using create_kind = cp::create_outcome::kind;
using restore_kind = cp::restore_outcome::kind;
using strings = std::vector<std::string>;

namespace sm::checkpoint {
std::ostream& operator<<(std::ostream& os, create_outcome::kind k) {
  return os << "create_outcome::kind(" << static_cast<int>(k) << ")";
}
std::ostream& operator<<(std::ostream& os, restore_outcome::kind k) {
  return os << "restore_outcome::kind(" << static_cast<int>(k) << ")";
}
}  // namespace sm::checkpoint

namespace {

// The offload workers are process-wide: joined once, after the last case.
struct join_offload_worker {
  ~join_offload_worker() { sm::stop_offload_worker(); }
};

std::string read(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary | std::ios::trunc) << text;
}

std::string sha256(const std::string& data) {
  unsigned char digest[32];
  unsigned int size = 0;
  const auto& crypto = sm::s3::lib::crypto();
  if (crypto.digest(data.data(), data.size(), digest, &size, crypto.sha256(), nullptr) != 1) {
    throw std::runtime_error("sha256 failed");
  }
  return sm::hex(std::string_view(reinterpret_cast<const char*>(digest), size));
}

using tree = std::map<std::string, std::string>;

// A tree as relative path -> content ("<dir>" for a directory, "-> target" for a symlink), to
// compare trees byte for byte.
tree tree_of(const fs::path& dir) {
  tree out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string rel = fs::relative(e.path(), dir).string();
    if (e.is_symlink()) {
      out[rel] = "-> " + fs::read_symlink(e.path()).string();
    } else if (e.is_directory()) {
      out[rel] = "<dir>";
    } else {
      out[rel] = read(e.path());
    }
  }
  return out;
}

std::string show(const tree& t) {
  std::string out = "{";
  for (const auto& [path, content] : t) out += " " + path + ": \"" + content + "\"";
  return out + " }";
}

// The trees are the same, or a message that shows both.
boost::test_tools::predicate_result same(const tree& got, const tree& expected) {
  if (got == expected) return true;
  boost::test_tools::predicate_result r(false);
  r.message() << "got " << show(got) << ", expected " << show(expected);
  return r;
}

// Everything the host and the components did, in order, as "<who>.<what>".
using event_log = std::vector<std::string>;

bool in_order(const event_log& log, const strings& expected) {
  auto it = log.begin();
  for (const auto& e : expected) {
    it = std::find(it, log.end(), e);
    if (it == log.end()) return false;
    ++it;
  }
  return true;
}

std::size_t count(const event_log& log, const std::string& e) {
  return std::size_t(std::count(log.begin(), log.end(), e));
}

std::string join(const event_log& log) {
  std::string out;
  for (const auto& e : log) out += (out.empty() ? "" : ", ") + e;
  return out;
}

class fake_host : public cp::host {
 public:
  explicit fake_host(event_log& log) : log_(log) {}

  bool fail_quiesce = false;
  std::vector<sv::component*> stateful;
  std::vector<std::pair<std::string, std::string>> steps;  // (id, step)
  int quiesces = 0, resumes = 0;
  std::vector<bool> may_freeze;  // each quiesce's
  bool held = false;             // between a quiesce that succeeded and its resume
  bool fenced = false;           // may_start() says no

  asio::awaitable<cp::quiesced> quiesce(bool freeze) override {
    ++quiesces;
    may_freeze.push_back(freeze);
    log_.push_back("host.quiesce");
    if (fail_quiesce) throw std::runtime_error("cannot hold the processes still");
    held = true;
    cp::quiesced q;
    q.stopped_any = true;
    co_return q;
  }
  asio::awaitable<void> resume(const cp::quiesced& q) override {
    ++resumes;
    log_.push_back(q.stopped_any ? "host.resume" : "host.resume(nothing held)");
    held = false;
    co_return;
  }
  bool may_start() const override { return !fenced; }
  std::vector<sv::component*> stateful_components() override { return stateful; }
  void step(const std::string& id, const std::string& step) override {
    steps.emplace_back(id, step);
  }
  strings step_names() const {
    strings out;
    for (const auto& [id, s] : steps) out.push_back(s);
    return out;
  }

 private:
  event_log& log_;
};

// A stateful component whose state is one file. Each step can be told to fail: `fail[step]`
// is called at the step's start (and `fail["restore.after"]` once restore() replaced the file).
class fake_component : public sv::component {
 public:
  fake_component(std::string name, fs::path file, event_log& log)
      : name_(std::move(name)), file_(std::move(file)), log_(log) {}

  std::map<std::string, std::function<void()>> fail;
  sv::state state_now = sv::state::running;

  const fs::path& file() const { return file_; }
  fs::path aside() const { return fs::path(file_.string() + ".aside"); }
  fs::path trash() const { return fs::path(file_.string() + ".trash"); }

  const std::string& name() const override { return name_; }
  asio::awaitable<void> start() override {
    event("start");
    state_now = sv::state::running;
    co_return;
  }
  asio::awaitable<nlohmann::json> stop(sv::stop_reason why) override {
    event("stop:" + std::string(sv::name_of(why)));
    state_now = sv::state::stopped;
    co_return nullptr;
  }
  sv::state current() const override { return state_now; }
  nlohmann::json status() const override { return {{"state", sv::name_of(state_now)}}; }
  bool holds_state() const override { return true; }

  asio::awaitable<sv::snapshot_info> snapshot(const fs::path& into) override {
    event("snapshot");
    maybe_fail("snapshot");
    sv::snapshot_info info;
    info.file = "database.sqlite";
    fs::copy_file(file_, into / info.file);
    const std::string data = read(into / info.file);
    info.bytes = data.size();
    info.pages = 1;
    info.sha256 = sha256(data);
    info.method = "copy";
    co_return info;
  }
  asio::awaitable<void> verify(const fs::path& from, const sv::snapshot_info& copy) override {
    event("verify");
    maybe_fail("verify");
    if (sha256(read(from / copy.file)) != copy.sha256) {
      throw std::runtime_error("the checkpoint's copy fails its checksum");
    }
    co_return;
  }
  asio::awaitable<void> restore(const fs::path& from, const sv::snapshot_info& copy) override {
    event("restore");
    // Only ever while stopped (for the restore).
    if (state_now != sv::state::stopped)
      event("restore while " + std::string(sv::name_of(state_now)));
    maybe_fail("restore");
    fs::rename(file_, aside());
    fs::copy_file(from / copy.file, file_);
    maybe_fail("restore.after");
    co_return;
  }
  asio::awaitable<void> keep_restored() override {
    event("keep_restored");
    maybe_fail("keep_restored");
    fs::rename(aside(), trash());
    co_return;
  }
  asio::awaitable<void> undo_restore() override {
    event("undo_restore");
    maybe_fail("undo_restore");
    if (fs::exists(aside())) {
      fs::remove(file_);
      fs::rename(aside(), file_);
    }
    co_return;
  }
  asio::awaitable<void> remove_replaced() override {
    event("remove_replaced");
    fs::remove(trash());
    co_return;
  }

 private:
  void event(const std::string& what) { log_.push_back(name_ + "." + what); }
  void maybe_fail(const std::string& step) {
    if (auto it = fail.find(step); it != fail.end() && it->second) it->second();
  }

  std::string name_;
  fs::path file_;
  event_log& log_;
};

std::function<void()> throws_runtime(std::string what) {
  return [what] { throw std::runtime_error(what); };
}
std::function<void()> throws_enospc() {
  return [] { throw std::system_error(ENOSPC, std::generic_category(), "writing the copy"); };
}

// Sets or clears a file's immutable flag (which not even root can remove); false where the
// file system or the capabilities do not allow it.
bool set_immutable(const fs::path& file, bool on) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  int flags = 0;
  bool done = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
  if (done) {
    flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
    done = ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
  }
  ::close(fd);
  return done;
}

// Runs one pipeline on a fresh io_context to its end (and whatever it spawned).
template <class T>
T run(asio::awaitable<T> pipeline) {
  asio::io_context io;
  std::optional<T> result;
  std::exception_ptr failure;
  asio::co_spawn(io, std::move(pipeline), [&](std::exception_ptr e, T value) {
    failure = e;
    if (!e) result = std::move(value);
  });
  io.run();
  if (failure) std::rethrow_exception(failure);
  BOOST_TEST_REQUIRE(result.has_value());
  return std::move(*result);
}

// The start-up side of the fake component: its file set aside as <file>.aside, garbage as
// <file>.trash (as fake_component's restore and keep_restored leave them).
cp::restore_recovery recovery_of(const fs::path& file) {
  const fs::path aside = file.string() + ".aside", trash = file.string() + ".trash";
  return {"database",
          [=] {
            if (fs::exists(aside)) fs::rename(aside, file);
          },
          [=] {
            fs::remove(aside);
            fs::remove(trash);
          },
          [=] { fs::remove(trash); }};
}

// A scratch environment: env_dir with a few files, the database component's state file, and
// tmp/checkpoints, with a fake host that names the component.
struct environment {
  test_support::scratch_dir scratch{"sm-pipeline"};
  cp::paths where;
  event_log log;
  fake_host host{log};
  fake_component db;
  cp::progress progress;
  // What the system hands the pipeline: the redacted configuration.
  std::string config = R"({"storage": {"secret_key": "***"}})";

  environment() : db("database", scratch.dir / "state" / "db.file", log) {
    where.checkpoints = scratch.dir / "tmp" / "checkpoints";
    where.env_dir = scratch.dir / "env";
    where.journal_dir = scratch.dir / "state";
    fs::create_directories(where.checkpoints);
    write(where.env_dir / "a.txt", "one");
    write(where.env_dir / "sub" / "b.txt", "two");
    fs::create_symlink("a.txt", where.env_dir / "link");
    write(db.file(), "db-v1");
    host.stateful = {&db};
  }

  cp::local_store store() const { return cp::local_store(where.checkpoints); }
  cp::restore_journal journal() const { return cp::restore_journal(where.journal_dir); }

  cp::create_outcome create(const std::string& id) {
    cp::create_request request;
    request.id = id;
    request.version = "test";
    request.config = config;
    return run(cp::create(host, where, request, progress));
  }
  cp::restore_outcome restore(const std::string& id) {
    cp::restore_request request;
    request.id = id;
    return run(cp::restore(host, where, request, progress));
  }

  // A checkpoint `id` of the state as set up, then the state changed (env_dir and the
  // database), and the records of the checkpoint's making forgotten.
  tree checkpoint_then_change(const std::string& id) {
    const cp::create_outcome made = create(id);
    BOOST_TEST_REQUIRE((made.outcome == create_kind::created), made.error);
    auto at_checkpoint = tree_of(where.env_dir);
    write(where.env_dir / "a.txt", "changed");
    write(where.env_dir / "new.txt", "new");
    fs::remove_all(where.env_dir / "sub");
    write(db.file(), "db-v2");
    log.clear();
    host.steps.clear();
    host.quiesces = host.resumes = 0;
    host.may_freeze.clear();
    return at_checkpoint;
  }
};

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(join_offload_worker);

// --- create ----------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(create_commits_the_tree_and_the_components_copy_between_quiesce_and_resume) {
  environment env;
  const auto original = tree_of(env.where.env_dir);
  const cp::create_outcome out = env.create("");
  BOOST_TEST_REQUIRE((out.outcome == create_kind::created), out.error);
  BOOST_TEST(out.id == "v1");

  const auto m = env.store().read("v1");
  BOOST_TEST_REQUIRE(m.has_value());
  BOOST_TEST(m->id == "v1");
  BOOST_TEST(m->parent == "");
  BOOST_TEST(m->version == "test");
  BOOST_TEST(m->quiesce == "stop");
  BOOST_TEST_REQUIRE(m->database.has_value());
  BOOST_TEST(m->database->file == "database.sqlite");
  BOOST_TEST(m->database->sha256 ==
             "295fac16264469d314372edd8f0136a54210606add42267cdb036d87862f3bce");  // of "db-v1"
  BOOST_TEST(m->database->bytes == 5u);
  BOOST_TEST(m->database->method == "copy");
  BOOST_TEST(read(env.where.checkpoints / "v1" / "database.sqlite") == "db-v1");
  BOOST_TEST(same(tree_of(env.where.checkpoints / "v1" / "mount"), original));
  BOOST_TEST(m->mount.files == 2u);
  BOOST_TEST(m->mount.symlinks == 1u);
  BOOST_TEST(read(env.where.checkpoints / "v1" / "config.json") == env.config);
  BOOST_TEST(!fs::exists(env.store().partial_of("v1")));
  BOOST_TEST(same(tree_of(env.where.env_dir), original));  // the original is untouched

  BOOST_TEST(env.host.quiesces == 1);
  BOOST_TEST(env.host.resumes == 1);
  BOOST_TEST(!env.host.held);
  // A checkpoint may freeze the processes (they keep their PIDs).
  BOOST_TEST(env.host.may_freeze == std::vector<bool>{true}, boost::test_tools::per_element());
  const event_log expected{"host.quiesce", "database.snapshot", "host.resume"};
  BOOST_TEST(env.log == expected, boost::test_tools::per_element());
  const strings steps{"quiesce", "snapshot", "resume", "commit"};
  BOOST_TEST(env.host.step_names() == steps, boost::test_tools::per_element());
  for (const auto& [id, step] : env.host.steps) BOOST_TEST(id == "v1");
  BOOST_TEST((env.db.current() == sv::state::running));

  // The next one names it as its parent.
  const cp::create_outcome next = env.create("");
  BOOST_TEST_REQUIRE((next.outcome == create_kind::created), next.error);
  BOOST_TEST(next.id == "v2");
  BOOST_TEST(env.store().read("v2")->parent == "v1");
}

BOOST_AUTO_TEST_CASE(a_quiesce_that_fails_commits_nothing_and_holds_nothing) {
  environment env;
  env.host.fail_quiesce = true;
  const cp::create_outcome out = env.create("c1");
  BOOST_TEST((out.outcome == create_kind::failed));
  BOOST_TEST(out.error == "cannot hold the processes still");
  BOOST_TEST(!env.store().exists("c1"));
  BOOST_TEST(!fs::exists(env.store().partial_of("c1")));
  BOOST_TEST(!fs::exists(env.where.checkpoints / "c1"));
  // The host promises that a quiesce that throws holds nothing: there is nothing to resume,
  // and no snapshot is taken of a state that was not held still.
  BOOST_TEST(env.host.quiesces == 1);
  BOOST_TEST(env.host.resumes == 0);
  BOOST_TEST(!env.host.held);
  BOOST_TEST(count(env.log, "database.snapshot") == 0u);
  BOOST_TEST((env.db.current() == sv::state::running));
  const strings steps{"quiesce"};
  BOOST_TEST(env.host.step_names() == steps, boost::test_tools::per_element());
  // The id is free again.
  env.host.fail_quiesce = false;
  BOOST_TEST((env.create("c1").outcome == create_kind::created));
}

BOOST_AUTO_TEST_CASE(a_snapshot_that_fails_leaves_no_partial_and_resumes_everything) {
  environment env;
  env.db.fail["snapshot"] = throws_runtime("the database copy failed");
  const cp::create_outcome out = env.create("c1");
  BOOST_TEST((out.outcome == create_kind::failed));
  BOOST_TEST(out.error == "the database copy failed");
  BOOST_TEST(!env.store().exists("c1"));
  BOOST_TEST(!fs::exists(env.store().partial_of("c1")));
  BOOST_TEST(!fs::exists(env.where.checkpoints / "c1"));
  BOOST_TEST(env.store().list().empty());
  BOOST_TEST(env.host.quiesces == 1);
  BOOST_TEST(env.host.resumes == 1);
  BOOST_TEST(!env.host.held);
  const event_log expected{"host.quiesce", "database.snapshot", "host.resume"};
  BOOST_TEST(env.log == expected, boost::test_tools::per_element());
  const strings steps{"quiesce", "snapshot", "resume"};
  BOOST_TEST(env.host.step_names() == steps, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_full_disk_during_the_snapshot_is_no_space) {
  environment env;
  env.db.fail["snapshot"] = throws_enospc();
  const cp::create_outcome out = env.create("c1");
  BOOST_TEST((out.outcome == create_kind::no_space));
  BOOST_TEST(out.error.find("writing the copy") != std::string::npos, out.error);
  BOOST_TEST(!env.store().exists("c1"));
  BOOST_TEST(!fs::exists(env.store().partial_of("c1")));
  BOOST_TEST(env.host.resumes == 1);
  BOOST_TEST(!env.host.held);
}

BOOST_AUTO_TEST_CASE(a_tree_copy_that_fails_leaves_no_partial_and_resumes_everything) {
  environment env;
  // env_dir is a symbolic link to a directory, which the copy refuses to follow: the tree's
  // half of the snapshot fails while the component's succeeds.
  fs::rename(env.where.env_dir, env.scratch.dir / "real-env");
  fs::create_directory_symlink(env.scratch.dir / "real-env", env.where.env_dir);
  const cp::create_outcome out = env.create("c1");
  BOOST_TEST((out.outcome == create_kind::failed), out.error);
  BOOST_TEST(!out.error.empty());
  BOOST_TEST(!env.store().exists("c1"));
  BOOST_TEST(!fs::exists(env.store().partial_of("c1")));
  BOOST_TEST(env.host.resumes == 1);
  BOOST_TEST(!env.host.held);
}

BOOST_AUTO_TEST_CASE(an_existing_id_is_taken_and_nothing_is_quiesced) {
  environment env;
  BOOST_TEST_REQUIRE((env.create("c1").outcome == create_kind::created));
  const std::string before = read(env.where.checkpoints / "c1" / "manifest.json");
  env.log.clear();
  env.host.steps.clear();
  env.host.quiesces = env.host.resumes = 0;
  write(env.db.file(), "db-v2");

  const cp::create_outcome out = env.create("c1");
  BOOST_TEST((out.outcome == create_kind::id_taken));
  BOOST_TEST(out.id == "c1");
  BOOST_TEST(env.host.quiesces == 0);
  BOOST_TEST(env.host.resumes == 0);
  BOOST_TEST(env.host.steps.empty());
  BOOST_TEST(env.log.empty(), join(env.log));
  BOOST_TEST(read(env.where.checkpoints / "c1" / "manifest.json") == before);
  BOOST_TEST(read(env.where.checkpoints / "c1" / "database.sqlite") == "db-v1");

  // A checkpoint still being made (or cut short) holds its id too.
  fs::create_directories(env.store().partial_of("c2"));
  BOOST_TEST((env.create("c2").outcome == create_kind::id_taken));
  BOOST_TEST(env.host.quiesces == 0);
}

// --- restore ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(restore_swaps_in_the_checkpoints_state_and_starts_the_component_again) {
  environment env;
  const auto at_checkpoint = env.checkpoint_then_change("c1");
  BOOST_TEST_REQUIRE(!same(tree_of(env.where.env_dir), at_checkpoint));

  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST_REQUIRE((out.outcome == restore_kind::restored), out.error);
  BOOST_TEST(out.id == "c1");
  BOOST_TEST_REQUIRE(out.restored.has_value());
  BOOST_TEST(out.restored->id == "c1");

  BOOST_TEST(read(env.db.file()) == "db-v1");
  BOOST_TEST(same(tree_of(env.where.env_dir), at_checkpoint));
  BOOST_TEST(!fs::exists(env.where.env_dir / "new.txt"));
  BOOST_TEST(!fs::exists(fs::path(env.where.env_dir.string() + ".restore-aside")));
  // What was replaced is garbage until remove_replaced().
  const fs::path trash = env.where.env_dir.string() + ".restore-trash";
  BOOST_TEST(read(trash / "new.txt") == "new");
  BOOST_TEST(read(env.db.trash()) == "db-v2");
  // The checkpoint itself is left as it was.
  BOOST_TEST(same(tree_of(env.where.checkpoints / "c1" / "mount"), at_checkpoint));

  BOOST_TEST(in_order(env.log, {"database.verify", "host.quiesce", "database.stop:restore",
                                "database.restore", "database.keep_restored", "database.start"}),
             join(env.log));
  BOOST_TEST(in_order(env.log, {"host.quiesce", "database.keep_restored", "host.resume"}),
             join(env.log));
  BOOST_TEST(count(env.log, "database.start") == 1u, join(env.log));
  BOOST_TEST(count(env.log, "database.undo_restore") == 0u, join(env.log));
  BOOST_TEST(count(env.log, "database.restore while running") == 0u, join(env.log));
  BOOST_TEST((env.db.current() == sv::state::running));
  BOOST_TEST(env.host.quiesces == 1);
  BOOST_TEST(env.host.resumes == 1);
  BOOST_TEST(!env.host.held);
  // A restore stops the processes (they start again on the restored state), never freezes.
  BOOST_TEST(env.host.may_freeze == std::vector<bool>{false}, boost::test_tools::per_element());
  const strings steps{"quiesce", "final sync", "swap", "resume"};
  BOOST_TEST(env.host.step_names() == steps, boost::test_tools::per_element());

  asio::io_context io;
  asio::co_spawn(io, cp::remove_replaced(env.host.stateful, env.where.env_dir), asio::detached);
  io.run();
  BOOST_TEST(!fs::exists(trash));
  BOOST_TEST(!fs::exists(env.db.trash()));
  BOOST_TEST(count(env.log, "database.remove_replaced") == 1u);
  BOOST_TEST(same(tree_of(env.where.env_dir), at_checkpoint));
}

BOOST_AUTO_TEST_CASE(a_full_disk_during_the_components_restore_is_no_space_and_undone) {
  environment env;
  env.checkpoint_then_change("c1");
  const auto before = tree_of(env.where.env_dir);
  env.db.fail["restore.after"] = throws_enospc();  // its copy is in; then the disk is full

  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST((out.outcome == restore_kind::no_space), out.error);
  BOOST_TEST(out.error.find("writing the copy") != std::string::npos, out.error);
  BOOST_TEST(!out.restored.has_value());
  BOOST_TEST(read(env.db.file()) == "db-v2");
  BOOST_TEST(!fs::exists(env.db.aside()));
  BOOST_TEST(same(tree_of(env.where.env_dir), before));
  BOOST_TEST(count(env.log, "database.undo_restore") == 1u, join(env.log));
  BOOST_TEST(count(env.log, "database.keep_restored") == 0u, join(env.log));
  BOOST_TEST(in_order(env.log, {"database.restore", "database.undo_restore", "database.start"}),
             join(env.log));
  BOOST_TEST((env.db.current() == sv::state::running));
  BOOST_TEST(env.host.resumes == 1);
  BOOST_TEST(!env.host.held);
}

BOOST_AUTO_TEST_CASE(a_restore_whose_env_dir_copy_fails_puts_everything_back) {
  environment env;
  env.checkpoint_then_change("c1");
  const auto before = tree_of(env.where.env_dir);
  // The checkpoint's mount/ is no directory: the database's restore succeeds, then env_dir's
  // copy fails (after env_dir was moved aside).
  const fs::path mount = env.where.checkpoints / "c1" / "mount";
  fs::remove_all(mount);
  write(mount, "not a directory");

  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST((out.outcome == restore_kind::failed), out.error);
  BOOST_TEST(!out.error.empty());
  BOOST_TEST(read(env.db.file()) == "db-v2");
  BOOST_TEST(!fs::exists(env.db.aside()));
  BOOST_TEST(same(tree_of(env.where.env_dir), before));
  BOOST_TEST(!fs::exists(fs::path(env.where.env_dir.string() + ".restore-aside")));
  BOOST_TEST(!fs::exists(fs::path(env.where.env_dir.string() + ".restore-trash")));
  BOOST_TEST(in_order(env.log, {"host.quiesce", "database.stop:restore", "database.restore",
                                "database.undo_restore", "database.start"}),
             join(env.log));
  BOOST_TEST(count(env.log, "database.keep_restored") == 0u, join(env.log));
  BOOST_TEST((env.db.current() == sv::state::running));
  BOOST_TEST(env.host.quiesces == 1);
  BOOST_TEST(env.host.resumes == 1);
  BOOST_TEST(!env.host.held);
}

BOOST_AUTO_TEST_CASE(a_restore_whose_second_component_fails_puts_the_first_back) {
  environment env;
  env.checkpoint_then_change("c1");
  const auto before = tree_of(env.where.env_dir);
  // A second component recorded under the same name: it takes the same copy, and fails.
  fake_component other("database", env.scratch.dir / "state" / "other.file", env.log);
  write(other.file(), "other-before");
  other.fail["restore"] = throws_runtime("the second restore failed");
  env.host.stateful = {&env.db, &other};

  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST((out.outcome == restore_kind::failed), out.error);
  BOOST_TEST(out.error == "the second restore failed");
  BOOST_TEST(read(env.db.file()) == "db-v2");
  BOOST_TEST(read(other.file()) == "other-before");
  BOOST_TEST(!fs::exists(env.db.aside()));
  BOOST_TEST(same(tree_of(env.where.env_dir), before));
  BOOST_TEST(count(env.log, "database.undo_restore") == 2u, join(env.log));
  BOOST_TEST(count(env.log, "database.keep_restored") == 0u, join(env.log));
  BOOST_TEST(count(env.log, "database.start") == 2u, join(env.log));
  BOOST_TEST((env.db.current() == sv::state::running));
  BOOST_TEST((other.current() == sv::state::running));
  BOOST_TEST(env.host.resumes == 1);
  BOOST_TEST(!env.host.held);
}

// Once every copy is in, the restore is done: what was set aside is then only marked as garbage
// (keep_restored, env_dir's rename to .restore-trash). A failure there must not undo part of the
// restore: a component whose keep_restored() returned cannot undo_restore() any more (its
// contract says exactly one of the two), so the state would be half the checkpoint's while the
// outcome says that the state before is back.
BOOST_AUTO_TEST_CASE(a_second_component_that_cannot_mark_its_replaced_state_undoes_nothing) {
  environment env;
  const auto at_checkpoint = env.checkpoint_then_change("c1");
  fake_component other("database", env.scratch.dir / "state" / "other.file", env.log);
  write(other.file(), "other-before");
  other.fail["keep_restored"] = throws_runtime("cannot mark the replaced copy");
  env.host.stateful = {&env.db, &other};

  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST(count(env.log, "database.keep_restored") == 2u, join(env.log));
  BOOST_TEST(count(env.log, "database.undo_restore") == 0u, join(env.log));
  BOOST_TEST((out.outcome == restore_kind::restored), out.error);
  BOOST_TEST(out.error.find("cannot mark the replaced copy") != std::string::npos, out.error);
  BOOST_TEST(read(env.db.file()) == "db-v1");
  BOOST_TEST(read(other.file()) == "db-v1");
  BOOST_TEST(same(tree_of(env.where.env_dir), at_checkpoint));
  BOOST_TEST(count(env.log, "database.start") == 2u, join(env.log));
  BOOST_TEST(env.host.resumes == 1);
  BOOST_TEST(!env.host.held);
}

BOOST_AUTO_TEST_CASE(an_env_dir_whose_replaced_tree_cannot_be_marked_undoes_nothing) {
  environment env;
  const auto at_checkpoint = env.checkpoint_then_change("c1");
  // A leftover of an earlier restore that cannot be removed: env_dir's old tree cannot be
  // renamed to .restore-trash.
  const fs::path trash = env.where.env_dir.string() + ".restore-trash";
  const fs::path stuck = trash / "stuck";
  write(stuck, "x");
  if (!set_immutable(stuck, true)) {
    BOOST_TEST_MESSAGE("no immutable flag here (file system or capability): skipped");
    return;
  }
  struct unstick {
    fs::path file;
    ~unstick() { set_immutable(file, false); }
  } unstuck{stuck};

  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST(count(env.log, "database.keep_restored") == 1u, join(env.log));
  BOOST_TEST(count(env.log, "database.undo_restore") == 0u, join(env.log));
  BOOST_TEST((out.outcome == restore_kind::restored), out.error);
  BOOST_TEST(read(env.db.file()) == "db-v1");
  BOOST_TEST(same(tree_of(env.where.env_dir), at_checkpoint));
  // Nothing is left that would put the old tree back at the next start.
  BOOST_TEST(!fs::exists(fs::path(env.where.env_dir.string() + ".restore-aside")));
  set_immutable(stuck, false);
  BOOST_TEST(cp::recover_interrupted_restore(env.where.journal_dir, env.where.env_dir,
                                             {recovery_of(env.db.file())})
                 .empty());
  BOOST_TEST(same(tree_of(env.where.env_dir), at_checkpoint));
  BOOST_TEST((env.db.current() == sv::state::running));
  BOOST_TEST(env.host.resumes == 1);
}

BOOST_AUTO_TEST_CASE(a_damaged_copy_changes_nothing_and_quiesces_nothing) {
  environment env;
  env.checkpoint_then_change("c1");
  const auto before = tree_of(env.where.env_dir);
  write(env.where.checkpoints / "c1" / "database.sqlite", "db-v1 with a flipped bit");

  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST((out.outcome == restore_kind::damaged), out.error);
  BOOST_TEST(out.error == "the checkpoint's copy fails its checksum");
  BOOST_TEST(env.host.quiesces == 0);
  BOOST_TEST(env.host.resumes == 0);
  BOOST_TEST(env.host.steps.empty());
  const event_log expected{"database.verify"};
  BOOST_TEST(env.log == expected, boost::test_tools::per_element());
  BOOST_TEST(read(env.db.file()) == "db-v2");
  BOOST_TEST(same(tree_of(env.where.env_dir), before));
  BOOST_TEST((env.db.current() == sv::state::running));

  // The same when verify() itself throws.
  write(env.where.checkpoints / "c1" / "database.sqlite", "db-v1");
  env.db.fail["verify"] = throws_runtime("cannot read the copy");
  env.log.clear();
  const cp::restore_outcome again = env.restore("c1");
  BOOST_TEST((again.outcome == restore_kind::damaged), again.error);
  BOOST_TEST(env.host.quiesces == 0);
  BOOST_TEST(read(env.db.file()) == "db-v2");
  BOOST_TEST(same(tree_of(env.where.env_dir), before));
}

BOOST_AUTO_TEST_CASE(a_restore_whose_quiesce_fails_changes_nothing) {
  environment env;
  env.checkpoint_then_change("c1");
  const auto before = tree_of(env.where.env_dir);
  env.host.fail_quiesce = true;

  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST((out.outcome == restore_kind::failed), out.error);
  BOOST_TEST(out.error == "cannot hold the processes still");
  BOOST_TEST(read(env.db.file()) == "db-v2");
  BOOST_TEST(same(tree_of(env.where.env_dir), before));
  BOOST_TEST(count(env.log, "database.stop:restore") == 0u, join(env.log));
  BOOST_TEST(count(env.log, "database.restore") == 0u, join(env.log));
  BOOST_TEST((env.db.current() == sv::state::running));
  BOOST_TEST(!env.host.held);
}

BOOST_AUTO_TEST_CASE(a_restore_of_an_unknown_id_is_not_found) {
  environment env;
  const auto before = tree_of(env.where.env_dir);
  const cp::restore_outcome out = env.restore("nope");
  BOOST_TEST((out.outcome == restore_kind::not_found));
  BOOST_TEST(env.host.quiesces == 0);
  BOOST_TEST(env.log.empty(), join(env.log));
  BOOST_TEST(same(tree_of(env.where.env_dir), before));
}

BOOST_AUTO_TEST_CASE(a_restore_during_which_the_lease_goes_starts_nothing_again) {
  environment env;
  env.checkpoint_then_change("c1");
  // The lease is lost while the database is being restored: the system is fenced.
  env.db.fail["restore"] = [&] { env.host.fenced = true; };

  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST((out.outcome == restore_kind::restored), out.error);
  BOOST_TEST(count(env.log, "database.stop:restore") == 1u, join(env.log));
  BOOST_TEST(count(env.log, "database.start") == 0u, join(env.log));
  BOOST_TEST((env.db.current() != sv::state::running));
}

// --- the restore journal: what a crash at each step leaves, and what the next start makes of it

namespace {

// The disk as a crash at this moment would leave it: the environment's scratch directory copied
// to `to` (the journal's env_dir pointed at the copy), for recover_interrupted_restore to run
// on while the pipeline itself goes on.
void copy_disk(const environment& env, const fs::path& to) {
  fs::copy(env.scratch.dir, to, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  for (const char* name : {"restore-journal", "restore-journal.committed"}) {
    const fs::path journal = to / "state" / name;
    if (!fs::exists(journal)) continue;
    std::string text = read(journal);
    const std::string from = env.scratch.dir.string();
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + 1)) {
      text.replace(at, from.size(), to.string());
    }
    write(journal, text);
  }
}

// Runs the start-up recovery on a copied disk; its lines for the log.
strings recover(const fs::path& disk) {
  return cp::recover_interrupted_restore(disk / "state", disk / "env",
                                         {recovery_of(disk / "state" / "db.file")});
}

bool nothing_left_aside(const fs::path& disk) {
  for (const char* name :
       {"env.restore-aside", "env.restore-trash", "state/db.file.aside", "state/db.file.trash",
        "state/restore-journal", "state/restore-journal.committed"}) {
    if (fs::exists(disk / name)) return false;
  }
  return true;
}

bool mentions(const strings& lines, const std::string& what) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.find(what) != std::string::npos; });
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_journal_is_prepared_before_anything_moves_and_committed_after_every_copy) {
  environment env;
  const auto at_checkpoint = env.checkpoint_then_change("c1");
  const cp::restore_journal journal = env.journal();
  std::optional<std::pair<cp::restore_journal::phase, cp::restore_intent>> at_restore, at_keep;
  tree env_at_keep;
  env.db.fail["restore"] = [&] { at_restore = journal.read(); };
  env.db.fail["keep_restored"] = [&] {
    at_keep = journal.read();
    env_at_keep = tree_of(env.where.env_dir);
  };

  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST_REQUIRE((out.outcome == restore_kind::restored), out.error);
  // Before the component's state moved: prepared, naming the checkpoint, env_dir and the
  // component.
  BOOST_TEST_REQUIRE(at_restore.has_value());
  BOOST_TEST((at_restore->first == cp::restore_journal::phase::prepared));
  BOOST_TEST(at_restore->second.id == "c1");
  BOOST_TEST(at_restore->second.env_dir == env.where.env_dir);
  BOOST_TEST(at_restore->second.components == strings{"database"},
             boost::test_tools::per_element());
  // Before anything set aside becomes garbage: committed, and env_dir is the checkpoint's.
  BOOST_TEST_REQUIRE(at_keep.has_value());
  BOOST_TEST((at_keep->first == cp::restore_journal::phase::committed));
  BOOST_TEST(same(env_at_keep, at_checkpoint));
  // Done: no journal.
  BOOST_TEST((journal.read().first == cp::restore_journal::phase::none));
  BOOST_TEST(!fs::exists(journal.prepared_path()));
  BOOST_TEST(!fs::exists(journal.committed_path()));
}

BOOST_AUTO_TEST_CASE(a_crash_before_the_commit_is_rolled_back_at_the_next_start) {
  environment env;
  env.checkpoint_then_change("c1");
  const auto before = tree_of(env.where.env_dir);
  test_support::scratch_dir crashes{"sm-pipeline-crash"};
  const fs::path component_done = crashes.dir / "component-done";
  const fs::path all_swapped = crashes.dir / "all-swapped";
  // The component's copy is in, env_dir's not yet.
  env.db.fail["restore.after"] = [&] { copy_disk(env, component_done); };
  // Everything swapped, the commit's rename not made: the copy's journal is still prepared.
  env.db.fail["keep_restored"] = [&] {
    copy_disk(env, all_swapped);
    fs::rename(all_swapped / "state" / "restore-journal.committed",
               all_swapped / "state" / "restore-journal");
  };
  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST_REQUIRE((out.outcome == restore_kind::restored), out.error);

  for (const fs::path& disk : {component_done, all_swapped}) {
    BOOST_TEST_CONTEXT(disk.filename()) {
      BOOST_TEST(read(disk / "state" / "db.file") == "db-v1");  // the crash: replaced
      const strings done = recover(disk);
      BOOST_TEST(mentions(done, "rolled back"), join(done));
      BOOST_TEST(mentions(done, "c1"), join(done));
      // Both as before the restore.
      BOOST_TEST(read(disk / "state" / "db.file") == "db-v2");
      BOOST_TEST(same(tree_of(disk / "env"), before));
      BOOST_TEST(nothing_left_aside(disk));
      // Once recovered, a later start has nothing to do.
      BOOST_TEST(recover(disk).empty());
    }
  }
}

BOOST_AUTO_TEST_CASE(a_crash_after_the_commit_is_rolled_forward_at_the_next_start) {
  environment env;
  const auto at_checkpoint = env.checkpoint_then_change("c1");
  test_support::scratch_dir crashes{"sm-pipeline-crash"};
  const fs::path committed = crashes.dir / "committed";
  env.db.fail["keep_restored"] = [&] { copy_disk(env, committed); };
  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST_REQUIRE((out.outcome == restore_kind::restored), out.error);
  BOOST_TEST_REQUIRE(fs::exists(committed / "state" / "db.file.aside"));
  BOOST_TEST_REQUIRE(fs::exists(committed / "env.restore-aside"));

  const strings done = recover(committed);
  BOOST_TEST(mentions(done, "finished"), join(done));
  // Both the checkpoint's; what was set aside is gone.
  BOOST_TEST(read(committed / "state" / "db.file") == "db-v1");
  BOOST_TEST(same(tree_of(committed / "env"), at_checkpoint));
  BOOST_TEST(nothing_left_aside(committed));
  BOOST_TEST(recover(committed).empty());
}

BOOST_AUTO_TEST_CASE(without_a_journal_the_start_removes_only_garbage) {
  environment env;
  const auto before = tree_of(env.where.env_dir);
  write(env.db.trash(), "garbage");
  write(fs::path(env.where.env_dir.string() + ".restore-trash") / "old.txt", "garbage");
  write(env.db.aside(), "not ours to judge");
  BOOST_TEST(cp::recover_interrupted_restore(env.where.journal_dir, env.where.env_dir,
                                             {recovery_of(env.db.file())})
                 .empty());
  BOOST_TEST(!fs::exists(env.db.trash()));
  BOOST_TEST(!fs::exists(fs::path(env.where.env_dir.string() + ".restore-trash")));
  BOOST_TEST(read(env.db.aside()) == "not ours to judge");
  BOOST_TEST(read(env.db.file()) == "db-v1");
  BOOST_TEST(same(tree_of(env.where.env_dir), before));
}

BOOST_AUTO_TEST_CASE(a_restore_is_refused_while_an_earlier_ones_journal_waits_for_recovery) {
  environment env;
  env.checkpoint_then_change("c1");
  const auto before = tree_of(env.where.env_dir);
  write(env.journal().prepared_path(), R"({"id": "c0", "env_dir": "", "components": []})");

  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST((out.outcome == restore_kind::failed), out.error);
  BOOST_TEST(out.error.find("interrupted restore") != std::string::npos, out.error);
  BOOST_TEST(count(env.log, "database.restore") == 0u, join(env.log));
  BOOST_TEST(count(env.log, "database.undo_restore") == 0u, join(env.log));
  BOOST_TEST(read(env.db.file()) == "db-v2");
  BOOST_TEST(same(tree_of(env.where.env_dir), before));
  // The earlier intent is kept for the next start, and the components run again.
  BOOST_TEST(read(env.journal().prepared_path()).find("c0") != std::string::npos);
  BOOST_TEST((env.db.current() == sv::state::running));
  BOOST_TEST(!env.host.held);
}

BOOST_AUTO_TEST_CASE(a_restore_that_fails_after_its_journal_removes_it_once_everything_is_back) {
  environment env;
  env.checkpoint_then_change("c1");
  env.db.fail["restore.after"] = throws_runtime("the copy failed");
  const cp::restore_outcome out = env.restore("c1");
  BOOST_TEST((out.outcome == restore_kind::failed), out.error);
  BOOST_TEST(read(env.db.file()) == "db-v2");
  BOOST_TEST((env.journal().read().first == cp::restore_journal::phase::none));

  // When putting back fails too, the journal stays: the next start puts back what is left.
  env.log.clear();
  env.db.fail["undo_restore"] = throws_runtime("cannot put it back");
  const cp::restore_outcome again = env.restore("c1");
  BOOST_TEST((again.outcome == restore_kind::failed), again.error);
  BOOST_TEST(again.error.find("cannot put it back") != std::string::npos, again.error);
  BOOST_TEST((env.journal().read().first == cp::restore_journal::phase::prepared));
  const strings done = cp::recover_interrupted_restore(env.where.journal_dir, env.where.env_dir,
                                                       {recovery_of(env.db.file())});
  BOOST_TEST(mentions(done, "rolled back"), join(done));
  BOOST_TEST(read(env.db.file()) == "db-v2");
  BOOST_TEST(!fs::exists(env.db.aside()));
}

BOOST_AUTO_TEST_CASE(a_journal_that_cannot_be_read_rolls_back_everything_it_could_name) {
  environment env;
  const auto before = tree_of(env.where.env_dir);
  // As a restore leaves them before its commit: both set aside, the copies in their places.
  fs::rename(env.db.file(), env.db.aside());
  write(env.db.file(), "db-restored");
  fs::rename(env.where.env_dir, env.where.env_dir.string() + ".restore-aside");
  write(env.where.env_dir / "restored.txt", "restored");
  write(env.journal().prepared_path(), "{ damaged");

  const strings done = cp::recover_interrupted_restore(env.where.journal_dir, env.where.env_dir,
                                                       {recovery_of(env.db.file())});
  BOOST_TEST(mentions(done, "rolled back"), join(done));
  BOOST_TEST(read(env.db.file()) == "db-v1");
  BOOST_TEST(same(tree_of(env.where.env_dir), before));
  BOOST_TEST((env.journal().read().first == cp::restore_journal::phase::none));
}
