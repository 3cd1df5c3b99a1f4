// The environment's configuration: its types, its validation and its JSON
// forms. Pure data: no I/O; the environment is read through a lookup function.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/duration.hpp"

namespace sm::config {

// One thing wrong with a submitted configuration, at a JSON path like "storage.bucket",
// "stacks[2]" or "components.web.command".
struct problem {
  std::string path;
  std::string message;
};

struct storage_config {
  std::string bucket;
  std::string endpoint;    // http://..., https://... or file:///absolute/path
  std::string access_key;  // required for http(s), resolved from {"$env": ...}
  std::string secret_key;
  std::string region = "us-east-1";
  std::string key_prefix;  // "" or ending in '/' (one is appended when missing)
  std::string env_dir = "data/env";
  bool virtual_host = false;  // "addressing": "virtual" (bucket.host) or "path" (host/bucket)
  // The environment variables access_key and secret_key came from ({"$env": "NAME"}): secrets,
  // which whoever applies the configuration takes out of the environment (take_environment_secret
  // in base/secret.hpp) so that no child inherits them.
  std::vector<std::string> key_variables;

  bool is_file_store() const { return endpoint.rfind("file://", 0) == 0; }
};

// A supervised process declared under "components" and named in "stacks".
struct component_config {
  std::vector<std::string> command;         // non-empty
  std::vector<std::string> ready_command;   // empty: ready once started
  std::optional<duration> ready_timeout;    // unset: 30s
  std::optional<duration> health_interval;  // unset: no health checks once running
  std::optional<duration> restart_delay;    // unset: the command line's --restart-delay
  std::optional<duration> timeout_stop;     // unset: the command line's --timeout-stop
  std::map<std::string, std::string> env;   // added to the inherited environment
  std::vector<std::string> depends_on;      // other components, started first
};

// The built-in database component's replication (optional "database" object).
struct database_config {
  duration sync_interval = std::chrono::seconds(1);    // 100ms..1h: commit -> store, at most
  duration snapshot_interval = std::chrono::hours(1);  // a fresh snapshot at least this often
  duration retention = std::chrono::hours(24);  // older generations go (the newest always stays)
  std::uint64_t checkpoint_pages = 1000;        // our checkpoint runs past this many WAL pages
};

inline constexpr std::uint64_t kib = 1024;
inline constexpr std::uint64_t mib = 1024 * kib;
inline constexpr std::uint64_t gib = 1024 * mib;
inline constexpr std::uint64_t tib = 1024 * gib;

// The built-in filesystem component's settings (optional "filesystem" object; accepted, and
// then unused, when "filesystem" is not in stacks). Sizes are bytes.
//
// The three paths default to places under --data-dir, which the configuration does not know
// (it is the command line's): an empty path means that default, and the *_in(data_dir)
// functions give the path in effect. A path given is relative to the working directory, like
// storage.env_dir, and never overlaps env_dir (the mount), the other two, --tmp-dir, or
// --data-dir other than inside it (not under the database's names), compared lexically as
// env_dir is.
struct filesystem_config {
  std::filesystem::path cache_dir;     // empty: <data_dir>/filesystem/cache
  std::filesystem::path staging_dir;   // empty: <data_dir>/filesystem/staging
  std::filesystem::path metadata;      // empty: <data_dir>/filesystem/meta.sqlite
  std::uint64_t cache_size = 1 * gib;  // at least 2 × block_size: the cache's bound on disk
  std::uint64_t capacity = 1 * tib;    // at least 1 MiB: the size `df` shows
  // A power of two from 64 KiB to 16 MiB; a filesystem keeps the one it was made with.
  std::uint64_t block_size = 4 * mib;
  // At least 2 × block_size: written bytes not yet in the store; when full, writers get ENOSPC.
  std::uint64_t staging_size = 8 * gib;
  unsigned upload_concurrency = 16;  // 1..256 block uploads at once
  // Each one of filesystem_mount_options, at most once, no two that contradict ("ro", "rw").
  std::vector<std::string> mount_options;

  std::filesystem::path cache_dir_in(const std::filesystem::path& data_dir) const {
    return cache_dir.empty() ? data_dir / "filesystem" / "cache" : cache_dir;
  }
  std::filesystem::path staging_dir_in(const std::filesystem::path& data_dir) const {
    return staging_dir.empty() ? data_dir / "filesystem" / "staging" : staging_dir;
  }
  std::filesystem::path metadata_in(const std::filesystem::path& data_dir) const {
    return metadata.empty() ? data_dir / "filesystem" / "meta.sqlite" : metadata;
  }

  bool operator==(const filesystem_config&) const = default;
};

// The FUSE mount options "filesystem.mount_options" may name.
inline constexpr std::string_view filesystem_mount_options[] = {
    "allow_other", "default_permissions",
    "ro",          "rw",
    "nosuid",      "suid",
    "nodev",       "dev",
    "noexec",      "exec",
    "noatime",     "atime"};

// A size as users write it: digits alone (bytes), or digits and a unit: B, KiB, MiB, GiB, TiB
// (powers of 1024) or KB, MB, GB, TB (powers of 1000): "4096", "512KiB", "4MiB", "1GB". Units
// are case-sensitive; no sign, fraction, exponent or space. Exactly one of `bytes` and
// `problem` (why not, as a sentence's end: "must start with digits") is set.
struct size_parse_result {
  std::optional<std::uint64_t> bytes;
  std::string problem;
};
size_parse_result parse_size(std::string_view text);

// How POST /checkpoint holds the supervised processes still while it copies.
enum class checkpoint_mode {
  stop,    // SIGTERM (SIGKILL after the stop timeout), restarted afterwards with new PIDs
  freeze,  // the cgroup freezer: the same processes, paused and thawed (stop if unavailable)
};

struct configuration {
  storage_config storage;
  checkpoint_mode checkpoint = checkpoint_mode::stop;  // "checkpoint_mode": "stop" | "freeze"
  database_config database;
  filesystem_config filesystem;
  // "restore_privileged": a checkpoint downloaded from the store keeps the set-id bits and
  // security.* xattrs (file capabilities) its index names; off, they are dropped and counted.
  bool restore_privileged = false;
  std::vector<std::string> stacks;  // canonical names, in the order given: "database", "web"
  std::map<std::string, component_config> components;
};

// The built-in components and their aliases.
inline constexpr std::string_view database_stack = "database";      // aliases sqlite, litestream
inline constexpr std::string_view filesystem_stack = "filesystem";  // alias juicefs

// "sqlite" -> "database", "juicefs" -> "filesystem", "database" -> "database"; "" otherwise.
std::string_view builtin_stack(std::string_view name);

using environment_lookup = std::function<std::optional<std::string>(const std::string& name)>;
// Looks names up in the process's environment (getenv), and first among the secrets already
// taken out of it (base/secret.hpp): a configuration applied again resolves them the same.
std::optional<std::string> process_environment(const std::string& name);

// Bounds on what a configuration may hold, so that a document under the HTTP body limit can
// never make validation (or the supervisor after it) take time or memory out of proportion.
inline constexpr std::size_t max_components = 1000;
inline constexpr std::size_t max_dependencies = 1000;    // depends_on entries of one component
inline constexpr std::size_t max_env_dir_length = 4095;  // PATH_MAX less its NUL
// Any size in "filesystem" (1 EiB): sums and doublings of sizes never overflow 64 bits.
inline constexpr std::uint64_t max_size = 1024 * 1024 * tib;
// Problems listed at most; one more entry then says how many were left out.
inline constexpr std::size_t max_problems = 100;
// A name longer than this (an unknown field's, an invalid component's) is cut where it appears
// in a problem's path or message: every problem of a component repeats its name.
inline constexpr std::size_t max_shown_name = 128;

// state-manager's own directories, which `storage.env_dir` must not overlap: a checkpoint of a
// tree that holds tmp/ would copy into itself, a restore would move data/ aside.
struct own_paths {
  // Absolute, without "..": what relative paths here and in env_dir are relative to. Empty:
  // unknown (relative paths are then compared with each other only).
  std::filesystem::path working_dir;
  std::filesystem::path data_dir = "data";  // --data-dir
  std::filesystem::path tmp_dir = "tmp";    // --tmp-dir
};

struct parse_result {
  std::optional<configuration> config;  // set iff problems is empty
  std::vector<problem> problems;        // every problem found (unknown fields first)
};

// Validates a submitted document and resolves {"$env": "VAR"} strings. Unknown fields, unknown
// stack names, wrong types, missing required fields, duplicate stacks, bad durations, unknown
// or cyclic depends_on, a value from the environment that is not UTF-8, an env_dir that is "/",
// relative with "..", or overlaps `own` when given (equal to data_dir or tmp_dir, holding
// either, inside tmp_dir, or inside data_dir under a name of state-manager's own files), a
// limit above exceeded, a "filesystem" size, count, mount option or path out of its bounds
// (see filesystem_config): each is a problem with its path. Never throws on bad input; time and
// memory are linear in the document's size, and nothing recurses on its nesting.
parse_result parse(const nlohmann::json& document, const environment_lookup& env,
                   const std::optional<own_paths>& own = std::nullopt);

// The effective configuration, defaults filled in, secrets ("access_key", "secret_key", and the
// values of component "env") replaced by "***": what GET /config shows. "filesystem" shows
// sizes as integers of bytes and a path left to its default as null (the default is under
// --data-dir, which the configuration does not hold); parse() reads it back the same.
nlohmann::json to_redacted_json(const configuration& config);

// {"error": "invalid configuration", "details": [{"path": ..., "message": ...}, ...]}
nlohmann::json problems_to_json(const std::vector<problem>& problems);

}  // namespace sm::config
