// Named crash points for the crash sweep (tests/integration/crash_sweep_test.sh): in a build
// configured with -Dcrash_points=enabled (the default when the tests are built; never in
// tools/build-and-run's), crash_point("x") ends the process at once, by SIGKILL, when the
// environment variable STATE_MANAGER_CRASH_AT is "x" at start. Elsewhere it does nothing.
//
// Every name is listed once, below; a name that is not listed does not compile, and the sweep
// reads the list from this header (between the markers), so a point that is listed but never
// reached fails the sweep.
#pragma once

#include <string_view>

namespace sm {

// BEGIN crash points
inline constexpr std::string_view crash_points[] = {
    // checkpoint create (src/checkpoint/pipeline.cpp, local_store.cpp)
    "checkpoint.after_quiesce",
    "checkpoint.after_local_copy",
    "checkpoint.after_resume",
    "checkpoint.after_manifest",
    "checkpoint.after_commit",
    // upload of a checkpoint (src/checkpoint/remote.cpp)
    "upload.start",
    "upload.middle",
    "upload.before_manifest",
    "upload.after_manifest",
    // download of a checkpoint made elsewhere (src/checkpoint/remote.cpp)
    "download.start",
    "download.middle",
    "download.before_commit",
    // restore (src/checkpoint/pipeline.cpp, src/db/component.cpp)
    "restore.after_final_sync",
    "restore.after_journal",
    "restore.db_after_aside",
    "restore.after_db_rename",
    "restore.after_env_rename",
    "restore.after_env_copy",
    // ... where env_dir is a mount point, its contents swapped inside it (contents_swap.cpp)
    "restore.contents_after_aside",
    "restore.contents_after_old",
    "restore.contents_after_copy",
    "restore.contents_after_move_up",
    "restore.before_commit",
    "restore.after_commit",
    "restore.after_db_keep",
    "restore.contents_after_trash",
    "restore.after_env_keep",
    "restore.after_journal_removed",
    // start-up's recovery of a restore a crash cut short (src/checkpoint/pipeline.cpp): the
    // sweep crashes a restore first, then the recovery
    "recovery.half_done",
    "recovery.db_first_back",  // the first of the database's files put back (rollback only)
    "recovery.before_journal_removed",
    // configuration apply (src/api/environment.cpp)
    "config.before_write",
    "config.after_write",
    "config.backup_upload",
};
// END crash points

// A name from the list above, checked when the program is compiled.
class crash_point_name {
 public:
  consteval crash_point_name(const char* name) : name_(name) {
    bool listed = false;
    for (std::string_view known : crash_points) listed = listed || known == name_;
    // Not a constant expression, so a name that is not listed is a compile error.
    if (!listed) throw "crash_point: the name is not in crash_points[]";
  }
  std::string_view name() const { return name_; }

 private:
  std::string_view name_;
};

// Ends the process at once (SIGKILL, as a crash would) if this build has crash points and
// STATE_MANAGER_CRASH_AT names `at`; otherwise returns. Any thread may call it.
void crash_point(crash_point_name at);

}  // namespace sm
