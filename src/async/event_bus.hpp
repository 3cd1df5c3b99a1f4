// Publish/subscribe of text events on the executor, for streams such as GET /events. A slow
// subscriber never slows the publisher: each has its own bounded queue, and one that falls too
// far behind is cut off (it sees the end of its stream) rather than buffered without limit.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

namespace sm {

class event_bus {
 public:
  class subscription {
   public:
    struct item {
      enum class kind { event, heartbeat, closed } what;
      std::string text;  // for event
    };
    // The next event; a heartbeat when none came for `heartbeat`; closed when the bus closed
    // or this subscriber fell more than the bus's queue bound behind.
    asio::awaitable<item> next(std::chrono::milliseconds heartbeat);

    explicit subscription(asio::any_io_executor executor) : wake_(executor) {}

   private:
    friend class event_bus;
    std::deque<std::string> queue_;
    asio::steady_timer wake_;  // cancelled when something is queued or the end comes
    bool closed_ = false;
  };

  explicit event_bus(asio::any_io_executor executor, std::size_t queue_bound = 1024)
      : executor_(executor), queue_bound_(queue_bound) {}

  std::shared_ptr<subscription> subscribe();
  void publish(const std::string& text);
  // Ends every subscription; later subscriptions are born closed.
  void close();
  std::size_t subscribers() const { return subscribers_.size(); }

 private:
  asio::any_io_executor executor_;
  std::size_t queue_bound_;
  std::vector<std::weak_ptr<subscription>> subscribers_;
  bool closed_ = false;
};

}  // namespace sm
