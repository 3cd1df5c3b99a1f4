// The restore's intent record, which makes a restore atomic across the database and env_dir:
// after a crash at any point, the next start finds both old or both new, never one of each.
//
//   1. prepare: <dir>/restore-journal (the checkpoint, env_dir, the components whose state is
//      replaced) is written and fsynced, file and directory, before anything is moved;
//   2. each component's state and env_dir are set aside and the checkpoint's copies put in
//      their places; every directory touched is fsynced;
//   3. commit: one rename to <dir>/restore-journal.committed, fsynced. This is the commit
//      point: before it a crash is rolled back, after it rolled forward;
//   4. what was set aside becomes garbage; the journal is removed.
//
// At start (before any component exists): no journal, nothing to do (but garbage); a prepared
// journal, everything set aside is put back; a committed one, what was set aside is dropped.
// Blocking (file system): for offload(), or start-up.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace sm::checkpoint {

struct restore_intent {
  std::string id;                       // the checkpoint restored
  std::filesystem::path env_dir;        // as it was when the restore began
  std::vector<std::string> components;  // whose state it replaces, by name
};

class restore_journal {
 public:
  enum class phase { none, prepared, committed };

  // `dir`: data/, beside the database it protects.
  explicit restore_journal(std::filesystem::path dir);

  // Step 1. Refuses (std::system_error EEXIST) while a journal is there: an earlier restore
  // whose recovery is due at the next start must not be forgotten.
  void prepare(const restore_intent& intent) const;
  // Step 3. Throws only when the rename failed (nothing is committed); a failure to fsync the
  // directory after it is returned as text, for the restore stands then.
  std::string commit() const;
  // Step 4, and the end of a recovery: no journal is left (fsynced).
  void remove() const;

  // What is there. An intent that cannot be read (a record damaged by hand) is returned empty
  // with its phase: the caller then recovers what it knows of.
  std::pair<phase, restore_intent> read() const;

  std::filesystem::path prepared_path() const { return dir_ / "restore-journal"; }
  std::filesystem::path committed_path() const { return dir_ / "restore-journal.committed"; }

 private:
  std::filesystem::path dir_;
};

}  // namespace sm::checkpoint
