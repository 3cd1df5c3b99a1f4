// The built-in `filesystem` component (stacks: "filesystem", "juicefs"): storage.env_dir served
// as a FUSE file system by this process (DESIGN 4). Its metadata is a SQLite database
// (data/filesystem/meta.sqlite), its file data immutable blocks in the object store, with a
// staging folder for blocks not up yet and a bounded cache of blocks read.
//
// start(): clears a mount a killed server left, opens the metadata (removing files a crash left
// unlinked but open), resumes uploads of staged blocks, mounts, and is running once the kernel's
// INIT is answered (failed, with the reason, after 60 s). stop(): for a quiesce or a restore it
// flushes what is buffered and stays mounted (the checkpoint copies through the mount); for
// shutdown and release it flushes, unmounts, and waits for the uploads (release: what could not
// go up is named); for fence it unmounts and uploads nothing more.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json_fwd.hpp>

#include "supervisor/component.hpp"

namespace sm::s3 {
class object_store;
}

namespace sm::fs {

struct component_settings {
  std::filesystem::path mountpoint;  // storage.env_dir
  std::filesystem::path metadata;    // data/filesystem/meta.sqlite
  std::filesystem::path staging_dir, cache_dir;
  std::uint64_t cache_size = 1ull << 30;
  std::uint64_t staging_size = 8ull << 30;
  std::uint64_t capacity = 1ull << 40;
  std::uint32_t block_size = 4u << 20;
  unsigned upload_concurrency = 16;
  std::vector<std::string> mount_options;  // validated by the configuration
};

class component final : public supervisor::component {
 public:
  using state = supervisor::state;

  // `store` (the fenced store) must outlive the component.
  component(asio::any_io_executor executor, s3::object_store& store, component_settings settings);
  ~component() override;
  component(const component&) = delete;
  component& operator=(const component&) = delete;

  const std::string& name() const override { return name_; }
  asio::awaitable<void> start() override;
  asio::awaitable<nlohmann::json> stop(supervisor::stop_reason why) override;
  state current() const override { return state_; }
  nlohmann::json status() const override;                // components.filesystem in GET /
  void append_metrics(std::string& out) const override;  // state_manager_filesystem_*
  nlohmann::json event_fields() const override;

  // The mount options state-manager adds to the configured ones.
  static std::vector<std::string> mount_options(const std::vector<std::string>& configured);

 private:
  struct parts;
  void move_to(state next);
  asio::awaitable<void> watch_session();
  asio::awaitable<std::string> take_down(supervisor::stop_reason why);

  asio::any_io_executor executor_;
  s3::object_store& store_;
  component_settings settings_;
  std::string name_ = "filesystem";
  state state_ = state::pending;
  std::string last_error_;
  std::unique_ptr<parts> parts_;
  bool stopping_ = false;               // a stop is under way
  asio::steady_timer stopped_signal_;  // cancelled when it is over
};

}  // namespace sm::fs
