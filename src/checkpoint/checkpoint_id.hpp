// Checkpoint ids name directories under tmp/checkpoints/, so they are the first defence
// against a path leaving it.
#pragma once

#include <string_view>

namespace sm::checkpoint {

// 1 to 128 characters of [A-Za-z0-9._-], not starting with '.' (so never "." or "..", never
// hidden) and not ending in ".partial" (the name of a checkpoint being built). No '/', no NUL,
// no spaces.
bool valid_checkpoint_id(std::string_view id);

inline constexpr std::string_view checkpoint_id_rule =
    "1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.' nor ending in '.partial'";

}  // namespace sm::checkpoint
