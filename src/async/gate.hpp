// Work in flight under one roof, for shutting down by design rather than by polling (as
// Seastar's gate): enter() admits a piece of work unless the gate is closed, the pass it returns
// is held until the work is done, and wait_idle() waits until no pass is held. cancel() closes
// the gate and asks the work under way to stop at its next safe point (it reads cancelled()).
// Executor-only: no locking.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

namespace sm {

class gate {
 public:
  class pass {
   public:
    explicit pass(gate& g) : gate_(&g) { ++g.held_; }
    pass(pass&& other) noexcept : gate_(std::exchange(other.gate_, nullptr)) {}
    pass& operator=(pass&&) = delete;
    ~pass() {
      if (gate_) gate_->leave();
    }

   private:
    gate* gate_;
  };

  explicit gate(asio::any_io_executor executor) : executor_(executor) {}
  gate(const gate&) = delete;
  gate& operator=(const gate&) = delete;

  // A pass for one piece of work; nullopt once the gate is closed (closed_why() says why).
  std::optional<pass> enter() {
    if (closed()) return std::nullopt;
    return std::optional<pass>(std::in_place, *this);
  }
  // Refuses new work from now on; the first reason given stays.
  void close(std::string why) {
    if (!closed()) closed_why_ = std::move(why);
  }
  // Closes it and asks the work under way to stop between two safe steps.
  void cancel(std::string why) {
    close(std::move(why));
    cancelled_ = true;
  }
  bool closed() const { return !closed_why_.empty(); }
  const std::string& closed_why() const { return closed_why_; }
  bool cancelled() const { return cancelled_; }
  std::size_t held() const { return held_; }

  // Until no pass is held (true), or `bound` passed first (false).
  asio::awaitable<bool> wait_idle(std::chrono::steady_clock::duration bound);

 private:
  void leave();

  asio::any_io_executor executor_;
  std::size_t held_ = 0;
  std::string closed_why_;
  bool cancelled_ = false;
  std::vector<asio::steady_timer*> waiters_;  // wait_idle()s, woken when held_ reaches 0
};

}  // namespace sm
