// Checkpoint ids name directories under tmp/checkpoints/, so they are the first defence
// against a path leaving it.
#pragma once

#include <string_view>

namespace sm::checkpoint {

// 1 to 128 characters of [A-Za-z0-9._-], not starting with '.' (so never "." or "..", never
// hidden, and never a "<id>.partial" look-alike of a dot-file). No '/', no NUL, no spaces.
bool valid_checkpoint_id(std::string_view id);

inline constexpr std::string_view checkpoint_id_rule =
    "1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.'";

}  // namespace sm::checkpoint
