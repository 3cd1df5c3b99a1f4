#include "async/gate.hpp"

#include <algorithm>

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

namespace sm {

asio::awaitable<bool> gate::wait_idle(std::chrono::steady_clock::duration bound) {
  if (held_ == 0) co_return true;
  // The deadline, saturated: `bound` may be "forever".
  const auto now = std::chrono::steady_clock::now();
  const auto deadline = bound >= std::chrono::steady_clock::time_point::max() - now
                            ? std::chrono::steady_clock::time_point::max()
                            : now + bound;
  // Woken whenever the count reaches 0; new work may have entered by the time this runs.
  while (held_ > 0 && std::chrono::steady_clock::now() < deadline) {
    asio::steady_timer timer(executor_, deadline);
    waiters_.push_back(&timer);
    std::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    std::erase(waiters_, &timer);
  }
  co_return held_ == 0;
}

void gate::leave() {
  if (--held_ > 0) return;
  for (asio::steady_timer* t : waiters_) t->cancel();
}

}  // namespace sm
