// A restore's swap of the environment directory when the directory itself cannot be renamed:
// it is a mount point (a volume, a bind mount, the filesystem component's mount), where
// rename(2) says EBUSY. Its contents are swapped instead, inside it, through three reserved
// names, so that a crash at any point can be undone (or finished) at the next start:
//
//   1. every entry moves into .state-manager-restore-aside/ (renames within the directory);
//   2. that directory is renamed .state-manager-restore-old/: all of the old state is in it;
//   3. the checkpoint is copied into .state-manager-restore-new/, its entries move up one by
//      one, and the directory takes the checkpoint's mode, owner and times;
//   4. .state-manager-restore-old/ is removed: the swap is done.
//
// Blocking (file system): for offload().
#pragma once

#include <filesystem>

#include "checkpoint/copy_tree.hpp"

namespace sm::checkpoint {

// True for the reserved names above (which a checkpoint never copies).
bool is_contents_swap_name(const std::string& name);

// Steps 1 to 3: `dir` ends holding a copy of `from` (copy_tree's options and stats). An
// earlier swap's leftovers are garbage (finished first). Throws std::system_error or
// copy_cancelled; call undo_contents_swap then.
copy_stats swap_contents(const std::filesystem::path& from, const std::filesystem::path& dir,
                         const copy_options& options);

// Step 4, after swap_contents returned; again after a crash once the restore was committed
// (finishes whatever of step 4 is left).
void finish_contents_swap(const std::filesystem::path& dir);

// Removes only step 4's garbage, if a crash left it (a finished swap's).
void remove_contents_swap_garbage(const std::filesystem::path& dir);

// Puts back what an interrupted or failed swap had moved aside, whichever step it reached; a
// swap that had reached step 4 is finished instead. True if an old state was put back.
// Throws std::system_error.
bool undo_contents_swap(const std::filesystem::path& dir);

}  // namespace sm::checkpoint
