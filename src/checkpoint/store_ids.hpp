// The checkpoint ids the object store holds: every checkpoints/<id>/ prefix, whole or not (an
// upload under way on another machine has objects but no manifest yet, and its id is taken all
// the same). Ids are unique across the environment's prefix (DESIGN 3.2): the next automatic id
// and the refusal of a taken one consider these as well as this machine's.
#pragma once

#include <set>
#include <string>

#include <asio/awaitable.hpp>

#include "s3/object_store.hpp"

namespace sm::checkpoint {

// One delimited listing of checkpoints/, page by page. Throws what the store throws.
asio::awaitable<std::set<std::string>> ids_in_store(s3::object_store& store);

}  // namespace sm::checkpoint
