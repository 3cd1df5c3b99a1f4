// The environment's database file (data/database.sqlite) made ready for replication: created
// if missing, in WAL mode, with state-manager's own small table (state_manager_meta: the
// schema version; nothing that can collide with the application's tables). Blocking SQLite
// calls: run it through offload(), never on the executor.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

namespace sm::db {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr int schema_version = 1;

struct init_result {
  bool created = false;  // the file did not exist before
  int page_size = 0;
  int schema_version = 0;  // as found in (or written to) state_manager_meta
};

// Throws db::error with a message that names the file and says what is wrong: it cannot be
// created (the directory's errno), it is not an SQLite database (left untouched), it is
// read-only, or WAL mode cannot be set. Safe to call again on a prepared database.
init_result initialise(const std::filesystem::path& file);

}  // namespace sm::db
