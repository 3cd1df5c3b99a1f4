#include "async/event_bus.hpp"

#include <algorithm>

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

namespace sm {

asio::awaitable<event_bus::subscription::item> event_bus::subscription::next(
    std::chrono::milliseconds heartbeat) {
  // Check, then wait: both in one turn of the loop, so a publish cannot slip between them.
  while (queue_.empty() && !closed_) {
    wake_.expires_after(heartbeat);
    std::error_code ec;
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!ec && queue_.empty() && !closed_) co_return item{item::kind::heartbeat, {}};
  }
  if (!queue_.empty()) {
    item out{item::kind::event, std::move(queue_.front())};
    queue_.pop_front();
    co_return out;
  }
  co_return item{item::kind::closed, {}};
}

std::shared_ptr<event_bus::subscription> event_bus::subscribe() {
  auto s = std::make_shared<subscription>(executor_);
  s->closed_ = closed_;
  if (!closed_) subscribers_.push_back(s);
  return s;
}

void event_bus::publish(const std::string& text) {
  std::erase_if(subscribers_, [](const auto& weak) { return weak.expired(); });
  for (const auto& weak : subscribers_) {
    const auto s = weak.lock();
    if (s->closed_) continue;
    if (s->queue_.size() >= queue_bound_) {
      // Too far behind to catch up: end its stream (it may reconnect) rather than grow.
      s->queue_.clear();
      s->closed_ = true;
    } else {
      s->queue_.push_back(text);
    }
    s->wake_.cancel();
  }
}

void event_bus::close() {
  closed_ = true;
  for (const auto& weak : subscribers_) {
    if (const auto s = weak.lock()) {
      s->closed_ = true;
      s->wake_.cancel();
    }
  }
  subscribers_.clear();
}

}  // namespace sm
