// `state-manager restore-db`: the environment's database restored from its replica in the
// object store, as of a point in time, without a running server (for an operator undoing a bad
// migration, or copying production's data elsewhere). The store is the one the applied
// configuration (tmp/config.json) names. It only reads the store: it never takes the lease
// and never writes there, so it is safe beside a live state-manager, restoring to another file.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.hpp"
#include "cli/option_table.hpp"

namespace sm::cli {

struct restore_db_options {
  std::filesystem::path to;
  std::optional<wall_time> at;  // nullopt: everything in the store
  std::string generation;       // empty: the newest
  std::filesystem::path tmp_dir = "tmp";
  std::optional<std::filesystem::path> config_file;  // unset: <tmp_dir>/config.json
  bool force = false;                                // replace an existing `to`
};

struct restore_db_command_line {
  using action = cli::action;  // never version: the grammar has no --version
  action what = action::run;
  restore_db_options opts;
  std::string error;  // for action::error: one line saying what is wrong
};

// `args`: the words after "restore-db". --tmp-dir also reads STATE_MANAGER_TMP_DIR, like the
// server's flag. Pure: the environment comes in through `env`.
restore_db_command_line parse_restore_db_command_line(const std::vector<std::string>& args,
                                                      const env_lookup& env);

std::string restore_db_usage_text();

// The whole subcommand: parses `args`, restores, prints a summary on stdout. Returns the exit
// status: 0 restored, 1 failed (no configuration, the store unreachable, nothing to restore,
// the result broken, `to` exists without --force), 2 a bad command line.
int run_restore_db_command(const std::vector<std::string>& args, const env_lookup& env);

}  // namespace sm::cli
