#include "checkpoint/checkpoint_id.hpp"

namespace sm::checkpoint {

bool valid_checkpoint_id(std::string_view id) {
  if (id.empty() || id.size() > 128 || id.front() == '.') return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  // "<id>.partial" is a checkpoint being built (removed at start): never an id of its own.
  return !id.ends_with(".partial");
}

}  // namespace sm::checkpoint
