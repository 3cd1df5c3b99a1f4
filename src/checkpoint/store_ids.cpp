#include "checkpoint/store_ids.hpp"

#include "checkpoint/checkpoint_id.hpp"

namespace sm::checkpoint {

asio::awaitable<std::set<std::string>> ids_in_store(s3::object_store& store) {
  static const std::string root = "checkpoints/";
  std::set<std::string> ids;
  std::string token;
  do {
    const s3::list_page page = co_await store.list(root, "/", token, 1000);
    for (const std::string& prefix : page.common_prefixes) {
      if (!prefix.starts_with(root)) continue;
      std::string id = prefix.substr(root.size());
      if (!id.empty() && id.back() == '/') id.pop_back();
      if (valid_checkpoint_id(id)) ids.insert(std::move(id));
    }
    token = page.next_token;
  } while (!token.empty());
  co_return ids;
}

}  // namespace sm::checkpoint
