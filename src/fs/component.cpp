#include "fs/component.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "async/offload.hpp"
#include "base/fd.hpp"
#include "base/file.hpp"
#include "base/log.hpp"
#include "fs/block_store.hpp"
#include "fs/filesystem.hpp"
#include "fs/fuse_mount.hpp"
#include "fs/metadata.hpp"
#include "uring/ring.hpp"

namespace sm::fs {

using json = nlohmann::json;
using supervisor::stop_reason;

namespace {

constexpr auto mount_patience = std::chrono::seconds(60);
constexpr auto unmount_grace = std::chrono::seconds(5);
constexpr auto release_drain = std::chrono::seconds(60);
constexpr auto shutdown_drain = std::chrono::seconds(10);
// How long a stop waits for the operations under way to finish.
constexpr auto work_grace = std::chrono::seconds(10);
// A read of a block neither staged nor cached retries the store this long, then fails with EIO.
// A store request under way at the deadline finishes its own retries first (about 20 s at most
// with the store's 10 attempts), so EIO comes within about 40 s of the read.
constexpr auto read_deadline = std::chrono::seconds(20);
// The kernel's readahead for the mount (KiB): its default of 128 KiB cuts sequential reads into
// small requests; 16 MiB lets several blocks be asked for at once.
constexpr int readahead_kb = 16384;

}  // namespace

// What a mounted file system is made of, destroyed in reverse: the mount before the operations,
// the operations before the blocks and the metadata they use, the ring last.
struct component::parts {
  std::unique_ptr<uring::ring> ring;
  std::unique_ptr<metadata> meta;
  std::unique_ptr<block_store> blocks;
  std::unique_ptr<filesystem> operations;
  std::unique_ptr<fuse_mount> mount;

  ~parts() {
    mount.reset();
    operations.reset();
    blocks.reset();
    meta.reset();
    ring.reset();
  }
};

component::component(asio::any_io_executor executor, s3::object_store& store,
                     component_settings settings)
    : executor_(executor),
      store_(store),
      settings_(std::move(settings)),
      stopped_signal_(executor, std::chrono::steady_clock::time_point::max()) {}

component::~component() = default;

void component::move_to(state next) {
  if (next == state_) return;
  const state from = state_;
  state_ = next;
  if (on_transition) on_transition(from, next);
}

std::vector<std::string> component::mount_options(const std::vector<std::string>& configured) {
  // fsname and subtype: `mount` shows "state-manager on <dir> type fuse.juicefs".
  std::vector<std::string> options = {"fsname=state-manager", "subtype=juicefs"};
  if (::geteuid() == 0) {
    options.push_back("allow_other");
    options.push_back("default_permissions");
  } else {
    options.push_back("default_permissions");
  }
  for (const std::string& o : configured) {
    if (std::find(options.begin(), options.end(), o) == options.end()) options.push_back(o);
  }
  return options;
}

asio::awaitable<void> component::start() {
  if (state_ != state::pending && state_ != state::stopped && state_ != state::failed) co_return;
  last_error_.clear();
  move_to(state::starting);
  auto made = std::make_unique<parts>();
  std::string stage = "preparing its folders";
  try {
    const component_settings& s = settings_;
    bool cleared = false;
    co_await offload([&] {
      ensure_directory(s.metadata.parent_path().empty() ? "." : s.metadata.parent_path(), 0700);
      ensure_directory(s.staging_dir, 0700);
      ensure_directory(s.cache_dir, 0700);
      cleared = fuse_mount::clear_stale_mount(s.mountpoint);
      std::filesystem::create_directories(s.mountpoint);
    });
    if (cleared) {
      log::warn("cleared a stale mount a killed state-manager left",
                {{"mountpoint", s.mountpoint.string()}});
    }
    stage = "opening its metadata";
    made->ring = std::make_unique<uring::ring>(executor_);
    format wanted;
    wanted.block_size = s.block_size;
    co_await offload([&] { made->meta = metadata::open(s.metadata, wanted); });
    // Files unlinked while open when the last run ended: nobody holds them now.
    for (inode_id ino : made->meta->orphans()) made->meta->remove_inode(ino);
    made->meta->commit();

    stage = "opening its block store";
    block_store_settings bs;
    bs.staging_dir = s.staging_dir;
    bs.cache_dir = s.cache_dir;
    bs.cache_size = s.cache_size;
    bs.staging_size = s.staging_size;
    bs.upload_concurrency = s.upload_concurrency;
    bs.read_deadline = read_deadline;
    bs.block_size = made->meta->settings().block_size;
    made->blocks = std::make_unique<block_store>(executor_, store_, *made->ring, bs);
    metadata* meta = made->meta.get();
    // Named locals around co_await: g++ 12 mishandles temporaries in expressions there.
    std::function<bool(std::uint64_t)> keep = [meta](std::uint64_t slice) {
      return meta->slice_referenced(slice);
    };
    co_await made->blocks->open(std::move(keep));

    stage = "mounting";
    filesystem_settings fss;
    fss.capacity = s.capacity;
    fss.report_error = [](const std::string& what) {
      log::warn("filesystem error", {{"error", what}});
    };
    made->operations =
        std::make_unique<filesystem>(executor_, *made->meta, *made->blocks, std::move(fss));
    made->mount = std::make_unique<fuse_mount>(executor_, filesystem::operations(),
                                               made->operations.get());
    std::vector<std::string> options = mount_options(s.mount_options);
    std::filesystem::path at = s.mountpoint;
    co_await made->mount->mount(std::move(at), std::move(options));
    const bool up = co_await made->operations->wait_initialized(mount_patience);
    if (!up) {
      throw std::runtime_error("the kernel did not initialise the mount within 60 s");
    }
    const std::string device = made->mount->device();
    if (!device.empty()) {
      co_await offload([&] {
        const std::string knob = "/sys/class/bdi/" + device + "/read_ahead_kb";
        unique_fd fd(::open(knob.c_str(), O_WRONLY | O_CLOEXEC));
        const std::string value = std::to_string(readahead_kb);
        if (fd) (void)!::write(fd.get(), value.data(), value.size());
      });
    }
  } catch (const std::exception& e) {
    last_error_ = stage + ": " + e.what();
  }
  if (!last_error_.empty()) {
    if (made->mount) {
      co_await made->mount->unmount(unmount_grace);
      if (made->operations) co_await made->operations->wait_idle(work_grace);
    }
    if (made->blocks) co_await made->blocks->stop();
    if (made->mount) co_await made->mount->close_session();
    made.reset();
    move_to(state::failed);
    co_return;
  }
  parts_ = std::move(made);
  parts_->mount->on_end([this](const std::string& why) {
    if (state_ == state::running || state_ == state::degraded) {
      last_error_ = "the mount ended: " + why;
      move_to(state::failed);
    }
  });
  move_to(state::running);
}

asio::awaitable<std::string> component::take_down(stop_reason why) {
  std::string problem;
  auto note = [&](const std::string& what) {
    if (!problem.empty()) problem += "; ";
    problem += what;
  };
  parts& p = *parts_;
  // Unmounted first (the kernel writes back what mmaps dirtied while we still serve), then
  // the requests under way finish, then what they buffered is flushed.
  co_await p.mount->unmount(why == stop_reason::fence ? std::chrono::seconds(1) : unmount_grace);
  co_await p.operations->wait_idle(work_grace);
  if (why != stop_reason::fence) {
    try {
      co_await p.operations->flush_all();
    } catch (const std::exception& e) {
      note(std::string("buffered writes could not be flushed: ") + e.what());
    }
  }
  p.operations->close();
  if (why == stop_reason::release || why == stop_reason::shutdown) {
    const bool all_up = co_await p.blocks->drain(why == stop_reason::release ? release_drain
                                                                              : shutdown_drain);
    if (!all_up && why == stop_reason::release) {
      const block_store_stats bs = p.blocks->stats();
      note(std::to_string(bs.staging_blocks) + " blocks (" + std::to_string(bs.staging_bytes) +
           " bytes) are not in the store" + (bs.last_error.empty() ? "" : ": " + bs.last_error));
    }
  }
  co_await p.blocks->stop();
  // Background work (stagings, compactions) ends once the block store refuses it.
  if (!co_await p.operations->wait_idle(work_grace)) {
    note("filesystem work was still under way when it was stopped");
  }
  try {
    p.meta->commit();
  } catch (const std::exception& e) {
    note(std::string("metadata commit: ") + e.what());
  }
  co_await p.mount->close_session();
  parts_.reset();
  co_return problem;
}

asio::awaitable<json> component::stop(stop_reason why) {
  if (!parts_) {
    if (state_ == state::pending || state_ == state::starting) move_to(state::stopped);
    co_return json(nullptr);
  }
  if (why == stop_reason::quiesce || why == stop_reason::restore) {
    // Mounted still: the checkpoint copies from it, the restore swaps its contents inside it.
    // What the processes wrote is flushed so that the copy (through the mount) is whole.
    try {
      co_await parts_->operations->flush_all();
    } catch (const std::exception& e) {
      last_error_ = std::string("flush before a checkpoint: ") + e.what();
    }
    co_return json(nullptr);
  }
  if (stopping_) {
    // One stop at a time (a fence may come while a release drains): the second waits for the
    // first, which stops everything.
    while (stopping_) {
      std::error_code ec;
      co_await stopped_signal_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return json(nullptr);
  }
  stopping_ = true;
  move_to(state::stopping);
  std::string problem = co_await take_down(why);
  stopping_ = false;
  stopped_signal_.cancel();
  if (why == stop_reason::release) {
    // The metadata (which blocks make which file) lives only here until it is replicated.
    if (!problem.empty()) problem += "; ";
    problem +=
        "the filesystem's metadata is kept on this machine only (its replication to the store "
        "is not built yet)";
  }
  if (!problem.empty()) last_error_ = problem;
  move_to(state::stopped);
  if (why == stop_reason::fence) co_return json(nullptr);
  json flushed = {{"component", name_}};
  if (!problem.empty()) flushed["error"] = problem;
  co_return flushed;
}

json component::status() const {
  json s = {{"state", supervisor::name_of(state_)},
            {"mountpoint", settings_.mountpoint.string()},
            {"last_error", last_error_.empty() ? json(nullptr) : json(last_error_)}};
  if (!parts_) return s;
  const statistics st = parts_->meta->stats();
  const block_store_stats bs = parts_->blocks->stats();
  const filesystem_stats fs = parts_->operations->stats();
  s["used_bytes"] = st.used_bytes;
  s["inodes"] = st.inodes;
  s["capacity"] = settings_.capacity;
  s["block_size"] = parts_->meta->settings().block_size;
  s["cache"] = {{"bytes", bs.cache_bytes},
                {"limit", bs.cache_limit},
                {"hits", bs.cache_hits},
                {"misses", bs.cache_misses}};
  s["staging"] = {{"bytes", bs.staging_bytes}, {"blocks", bs.staging_blocks}};
  s["uploads_in_flight"] = bs.uploads_in_flight;
  s["write_buffer_bytes"] = fs.buffered_bytes;
  s["open_files"] = fs.open_files;
  s["metadata"] = {{"file", settings_.metadata.string()}, {"replication", nullptr}};
  std::string err = last_error_;
  if (err.empty()) err = fs.last_error;
  if (err.empty()) err = bs.last_error;
  s["last_error"] = err.empty() ? json(nullptr) : json(err);
  return s;
}

void component::append_metrics(std::string& out) const {
  auto line = [&](std::string_view name, std::string_view type, std::string_view help,
                  std::uint64_t value) {
    out += "# HELP state_manager_filesystem_";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE state_manager_filesystem_";
    out += name;
    out += ' ';
    out += type;
    out += "\nstate_manager_filesystem_";
    out += name;
    out += ' ';
    out += std::to_string(value);
    out += '\n';
  };
  line("up", "gauge", "1 when the filesystem is mounted and running",
       state_ == state::running ? 1 : 0);
  if (!parts_) return;
  const statistics st = parts_->meta->stats();
  const block_store_stats bs = parts_->blocks->stats();
  const filesystem_stats fs = parts_->operations->stats();
  line("used_bytes", "gauge", "Bytes the filesystem's files hold", st.used_bytes);
  line("inodes", "gauge", "Inodes that exist", st.inodes);
  line("capacity_bytes", "gauge", "The size df shows", settings_.capacity);
  line("cache_bytes", "gauge", "Bytes on disk in the block cache", bs.cache_bytes);
  line("cache_limit_bytes", "gauge", "The block cache's bound", bs.cache_limit);
  line("cache_hits_total", "counter", "Block reads served locally", bs.cache_hits);
  line("cache_misses_total", "counter", "Block reads that went to the store", bs.cache_misses);
  line("staging_bytes", "gauge", "Bytes staged and not yet in the store", bs.staging_bytes);
  line("staging_blocks", "gauge", "Blocks staged and not yet in the store", bs.staging_blocks);
  line("uploads_in_flight", "gauge", "Block uploads under way", bs.uploads_in_flight);
  line("uploaded_bytes_total", "counter", "Block bytes uploaded", bs.uploaded_bytes);
  line("downloaded_bytes_total", "counter", "Block bytes downloaded", bs.downloaded_bytes);
  line("write_buffer_bytes", "gauge", "Bytes written and buffered in memory", fs.buffered_bytes);
  line("requests_total", "counter", "FUSE requests handled", fs.requests);
  line("errors_total", "counter", "Operations that failed for a fault", fs.errors);
  line("commits_total", "counter", "Metadata commits", fs.commits);
}

json component::event_fields() const {
  json f = {{"mountpoint", settings_.mountpoint.string()}};
  if (!last_error_.empty()) f["error"] = last_error_;
  return f;
}

}  // namespace sm::fs
